"""Case-table entries of MultiMargin, MultiLabelMargin, MultiLabelSoftMargin."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as TF

from ._base import ErrorCase, LossCase, Maker, Sample

# ============================================================================================
# Multi-class margin: MultiMargin, MultiLabelMargin, MultiLabelSoftMargin
#
# Case-table entries of the multi-class margin losses: MultiMargin, MultiLabelMargin and
# MultiLabelSoftMargin.
#
# The two hinge losses have a kink wherever a hinge argument ``z = margin - x[j] + x[i]`` is 0,
# for *some* pair of classes of a row; the samples keep every pair away from it, whatever the
# target, by drawing scores on a lattice: ``x = 0.3·a + u`` with integer ``a`` and ``|u| <= 0.02``,
# so that every difference ``x[j] - x[i]`` lies within 0.04 of a multiple of 0.3. A margin whose
# distance to the nearest multiple of 0.3 is at least 0.1 (1.0, the default, and 0.45, 2.25,
# -0.45, 2 below) then leaves ``|z| >= 0.06``: finite differences (gradcheck, gradgradcheck) never
# cross a kink, and the vmap test, which combines the inputs of several seeds with one seed's
# target, stays off the kinks too. The subgradient *at* a kink is compared with torch in
# ``tests/test_margin_specific.py``.
#
# For an empty batch torch returns uninitialised memory for ``'mean'`` and ``'sum'`` of the two
# hinge losses, so their empty samples are compared with torch's ``'none'`` reduced by the
# reference itself (``empty_reference``): NaN for 'mean', 0 for 'sum', as torchloss gives.
#
# Target-value errors (out-of-range class indices) are listed for the CPU only: on CUDA both torch
# and torchloss turn them into device-side asserts, which poison the CUDA context.

# --------------------------------------------------------------------------------------------
# Shared


def _scores(make: Maker, *shape) -> torch.Tensor:
    """Scores on the kink-avoiding lattice described at the head of this section."""
    a = make.randint(-6, 7, *shape, dtype=torch.float64)
    u = make.uniform(*shape, low=-0.02, high=0.02, dtype=torch.float64)
    return (0.3 * a + u).to(make.dtype)


def _long(make: Maker, rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.int64, device=make.device)


# --------------------------------------------------------------------------------------------
# MultiMargin


def _mm_weight(make: Maker, c: int) -> torch.Tensor:
    return make.uniform(c, low=0.2, high=2.0)


def _mm_samples(make: Maker) -> list[Sample]:
    def batch(n=5, c=6):
        x = _scores(make, n, c)
        # the first and last classes are always among the targets
        y = torch.cat([_long(make, [0, c - 1]), make.randint(0, c, n - 2)])
        return x, y

    def one(c=6):
        return _scores(make, c), make.randint(0, c)

    return [
        Sample("matrix", batch(), wrt=(0,)),
        Sample("p2", batch(), {"p": 2}, wrt=(0,)),
        Sample("margin", batch(), {"margin": 0.45}, wrt=(0,)),
        Sample("p2-margin", batch(), {"p": 2, "margin": 2.25}, wrt=(0,)),
        Sample("negative-margin", batch(), {"margin": -0.45}, wrt=(0,)),
        Sample("weight", batch(), {"weight": _mm_weight(make, 6)}, wrt=(0,)),
        Sample("p2-weight-margin", batch(), {"p": 2, "margin": 0.45, "weight": _mm_weight(make, 6)}, wrt=(0,)),
        Sample("float-p-int-margin", batch(), {"p": 2.0, "margin": 2}, wrt=(0,)),
        Sample("two-classes", batch(4, 2), {"p": 2}, wrt=(0,)),
        # unbatched (C) input with a 0-d target: a 0-d loss
        Sample("unbatched", one(), wrt=(0,)),
        Sample("unbatched-weight", one(), {"p": 2, "weight": _mm_weight(make, 6)}, wrt=(0,)),
        # (C) input with a (1,) target: 'none' gives (1,); (1, C) with a 0-d target gives ()
        Sample("unbatched-1d-target", (_scores(make, 6), make.randint(0, 6, 1)), wrt=(0,)),
        Sample("row-0d-target", (_scores(make, 1, 6), make.randint(0, 6)), wrt=(0,)),
        # a 0-d input is one class of one sample: the loss is 0
        Sample("scalar", (_scores(make), make.randint(0, 1)), wrt=(0,)),
    ]


def _mm_errors(make: Maker) -> list[ErrorCase]:
    x, y = _scores(make, 3, 4), _long(make, [0, 2, 3])
    other = torch.float32 if make.dtype == torch.float64 else torch.float64
    w = _mm_weight(make, 4)
    errors = [
        ErrorCase("bad-reduction", (x, y), {"reduction": "batchmean"}, ValueError, "reduction"),
        ErrorCase("reduction-before-p", (x, y), {"p": 3, "reduction": "bad"}, ValueError, "reduction"),
        # found by the differential fuzzer (torchloss/testing/fuzz.py)
        ErrorCase("input-not-tensor", (7, y), {}, TypeError, "input"),
        ErrorCase("target-none", (x, None), {}, TypeError, "target"),
        ErrorCase("p-1-element-tensor", (x, y), {"p": torch.tensor([2])}, TypeError, "'p'"),
        ErrorCase("p-3", (x, y), {"p": 3}, ValueError, "p == 1 and p == 2"),
        ErrorCase("p-1.5", (x, y), {"p": 1.5}, ValueError, "p == 1 and p == 2"),
        ErrorCase("weight-2d", (x, y), {"weight": w[None]}, ValueError, "weight must be one-dimensional"),
        ErrorCase("weight-0d", (x, y), {"weight": w[0]}, ValueError, "weight must be one-dimensional"),
        ErrorCase(
            "weight-requires-grad",
            (x, y),
            {"weight": w.clone().requires_grad_()},
            RuntimeError,
            "not differentiable with respect to argument 'weight'",
        ),
        ErrorCase(
            "weight-requires-grad-before-shape",
            (x[None], y),
            {"weight": w.clone().requires_grad_()},
            RuntimeError,
            "argument 'weight'",
        ),
        ErrorCase("input-3d", (x[None], y), {}, RuntimeError, "input"),
        ErrorCase("input-no-classes", (x[:, :0], y), {}, RuntimeError, "input"),
        ErrorCase("input-empty-vector", (x[0, :0], y[0]), {}, RuntimeError, "input"),
        ErrorCase("target-length", (x, y[:2]), {}, RuntimeError, "target"),
        ErrorCase("target-2d", (x, y[:, None]), {}, RuntimeError, "target"),
        ErrorCase("target-shape-before-dtype", (x.long(), y[:2]), {}, RuntimeError, "target"),
        ErrorCase("weight-size", (x, y), {"weight": _mm_weight(make, 5)}, RuntimeError, "weight"),
        ErrorCase("integer-input", (x.long(), y), {}, NotImplementedError, "input"),
        ErrorCase("bool-input", (x > 0, y), {}, NotImplementedError, "input"),
        ErrorCase("complex-input", (x.to(torch.complex128), y), {}, NotImplementedError, "input"),
        ErrorCase("input-dtype-before-target-dtype", (x.long(), y.float()), {}, NotImplementedError, "input"),
        ErrorCase("float-target", (x, y.to(make.dtype)), {}, RuntimeError, "target"),
        ErrorCase("int32-target", (x, y.int()), {}, RuntimeError, "target"),
        ErrorCase("weight-dtype", (x, y), {"weight": w.to(other)}, RuntimeError, "weight"),
        ErrorCase("integer-weight", (x, y), {"weight": w.long()}, RuntimeError, "weight"),
        ErrorCase(
            "target-dtype-before-weight-dtype", (x, y.float()), {"weight": w.to(other)}, RuntimeError, "target"
        ),
    ]
    if make.device.type == "cpu":
        errors += [
            ErrorCase("target-too-large", (x, _long(make, [0, 4, 1])), {}, RuntimeError, "target out of range"),
            ErrorCase("target-negative", (x, _long(make, [0, -1, 1])), {}, RuntimeError, "target out of range"),
            ErrorCase("unbatched-target-range", (x[0], _long(make, 7)), {}, RuntimeError, "target out of range"),
            ErrorCase(
                "weight-dtype-before-range",
                (x, _long(make, [0, 9, 1])),
                {"weight": w.to(other)},
                RuntimeError,
                "weight",
            ),
        ]
    return errors


# --------------------------------------------------------------------------------------------
# MultiLabelMargin


def _label_rows(make: Maker, n: int, c: int) -> torch.Tensor:
    """``n`` random target rows: a random number of distinct labels, a -1 when fewer than ``c``,
    then random entries in [-1, c-1] (ignored by the loss, but range-checked)."""
    rows = []
    for _ in range(n):
        perm = torch.randperm(c, generator=make.gen).tolist()
        k = int(torch.randint(0, c + 1, (), generator=make.gen))
        tail = torch.randint(-1, c, (c,), generator=make.gen).tolist()
        rows.append((perm[:k] + [-1] + tail)[:c])
    return _long(make, rows)


def _ml_samples(make: Maker) -> list[Sample]:
    structured = _long(
        make,
        [
            [2, 0, -1, 3, 1],  # labels {2, 0}; the entries after the -1 are ignored
            [-1, 4, 4, 0, 2],  # no labels: loss 0
            [1, 1, 3, -1, -1],  # a duplicated label, counted twice
            [4, 3, 2, 1, 0],  # every class a label, no terminator: no non-labels, loss 0
            [0, 1, 2, 3, -1],  # the terminator in the last position
            [3, -1, -1, -1, -1],  # one label
        ],
    )
    return [
        Sample("structured", (_scores(make, 6, 5), structured), wrt=(0,)),
        Sample("random", (_scores(make, 6, 7), _label_rows(make, 6, 7)), wrt=(0,)),
        Sample("unbatched", (_scores(make, 6), _long(make, [3, 5, -1, 0, 0, 1])), wrt=(0,)),
        Sample("unbatched-all-labels", (_scores(make, 3), _long(make, [2, 0, 1])), wrt=(0,)),
        Sample("one-row", (_scores(make, 1, 4), _long(make, [[1, 3, -1, 2]])), wrt=(0,)),
        Sample("two-classes", (_scores(make, 4, 2), _long(make, [[0, -1], [1, 0], [-1, 1], [1, -1]])), wrt=(0,)),
        Sample("wide", (_scores(make, 3, 12), _label_rows(make, 3, 12)), wrt=(0,)),
        # a 0-d input is one class; its target is 0 (a label: no non-labels) or -1 (none)
        Sample("scalar", (_scores(make), _long(make, 0)), wrt=(0,)),
        Sample("scalar-1d-target", (_scores(make), _long(make, [-1])), wrt=(0,)),
    ]


def _ml_errors(make: Maker) -> list[ErrorCase]:
    x = _scores(make, 3, 4)
    y = _long(make, [[0, 1, -1, 2], [3, -1, 1, 2], [-1, 0, 0, 0]])
    errors = [
        ErrorCase("bad-reduction", (x, y), {"reduction": "batchmean"}, ValueError, "reduction"),
        ErrorCase("reduction-before-shape", (x[None], y), {"reduction": "bad"}, ValueError, "reduction"),
        ErrorCase("input-3d", (x[None], y[None]), {}, RuntimeError, "input"),
        ErrorCase("input-no-classes", (x[:, :0], y[:, :0]), {}, RuntimeError, "input"),
        ErrorCase("target-size", (x, torch.cat([y, y[:, :1]], 1)), {}, RuntimeError, "target"),
        ErrorCase("target-rows", (x, y[:2]), {}, RuntimeError, "target"),
        ErrorCase("unbatched-2d-target", (x[0], y[:1]), {}, RuntimeError, "target"),
        ErrorCase("row-1d-target", (x[:1], y[0]), {}, RuntimeError, "target"),
        ErrorCase("float-target", (x, y.to(make.dtype)), {}, RuntimeError, "target"),
        ErrorCase("int32-target", (x, y.int()), {}, RuntimeError, "target"),
        ErrorCase("bool-target", (x, y > 0), {}, RuntimeError, "target"),
        ErrorCase("complex-target", (x, y.to(torch.complex64)), {}, NotImplementedError, "target"),
        ErrorCase("integer-input", (x.long(), y), {}, NotImplementedError, "input"),
        ErrorCase("bool-input", (x > 0, y), {}, NotImplementedError, "input"),
        ErrorCase("complex-input", (x.to(torch.complex128), y), {}, NotImplementedError, "input"),
        ErrorCase("input-dtype-before-target-dtype", (x.long(), y.float()), {}, NotImplementedError, "input"),
        ErrorCase("shape-before-dtype", (x.long(), y[:2].float()), {}, RuntimeError, "target"),
    ]
    if make.device.type == "cpu":
        out_of_range = y.clone()
        out_of_range[0, 3] = 4  # after the terminator: still checked
        below = y.clone()
        below[1, 0] = -2
        errors += [
            ErrorCase("target-too-large-after-terminator", (x, out_of_range), {}, RuntimeError, "target' is out of range"),
            ErrorCase("target-below-minus-one", (x, below), {}, RuntimeError, "target' is out of range"),
            ErrorCase("unbatched-target-range", (x[0], _long(make, [4, -1, 0, 0])), {}, RuntimeError, "out of range"),
            ErrorCase("scalar-target-range", (x[0, 0], _long(make, 1)), {}, RuntimeError, "out of range"),
            # torch checks the values before the dtypes
            ErrorCase("range-before-input-dtype", (x.long(), out_of_range), {}, RuntimeError, "out of range"),
            ErrorCase("float-target-range", (x, out_of_range.to(make.dtype)), {}, RuntimeError, "out of range"),
        ]
    return errors


# --------------------------------------------------------------------------------------------
# MultiLabelSoftMargin


def _logits(make: Maker, *shape) -> torch.Tensor:
    return make.normal(*shape, scale=2.0)


def _soft_targets(make: Maker, *shape, dtype=None) -> torch.Tensor:
    return make.uniform(*shape, low=0.0, high=1.0, dtype=dtype)


def _hard_targets(make: Maker, *shape, dtype=None) -> torch.Tensor:
    return (make.signs(*shape, dtype=dtype) + 1) / 2


def _mlsm_weight(make: Maker, *shape) -> torch.Tensor:
    return make.uniform(*shape, low=0.2, high=2.0)


def _mlsm_samples(make: Maker) -> list[Sample]:
    every = (0, 1, "weight")
    return [
        Sample("matrix", (_logits(make, 4, 5), _soft_targets(make, 4, 5))),
        Sample("hard-targets", (_logits(make, 4, 5), _hard_targets(make, 4, 5))),
        Sample("integer-target", (_logits(make, 4, 5), make.randint(0, 2, 4, 5)), wrt=(0,)),
        Sample("unbatched", (_logits(make, 6), _soft_targets(make, 6))),
        Sample("3d", (_logits(make, 2, 3, 4), _soft_targets(make, 2, 3, 4))),
        Sample("weight-class", (_logits(make, 4, 5), _soft_targets(make, 4, 5)), {"weight": _mlsm_weight(make, 5)}, wrt=every),
        Sample("weight-sample", (_logits(make, 4, 5), _hard_targets(make, 4, 5)), {"weight": _mlsm_weight(make, 4, 1)}, wrt=every),
        Sample("weight-full-3d", (_logits(make, 2, 3, 4), _soft_targets(make, 2, 3, 4)), {"weight": _mlsm_weight(make, 2, 3, 4)}, wrt=every),
        Sample("weight-0d", (_logits(make, 3, 4), _soft_targets(make, 3, 4)), {"weight": _mlsm_weight(make)}, wrt=every),
        Sample(
            "integer-target-weight",
            (_logits(make, 3, 4), make.randint(0, 2, 3, 4)),
            {"weight": _mlsm_weight(make, 4)},
            wrt=(0, "weight"),
        ),
        Sample("target-row", (_logits(make, 4, 5), _soft_targets(make, 5))),
        Sample("target-0d", (_logits(make, 4, 5), _soft_targets(make))),
        Sample("float64-target", (_logits(make, 3, 4), _soft_targets(make, 3, 4, dtype=torch.float64))),
        # a float64 weight promotes the loss (computed in float64; torch's parts in float32)
        Sample("float64-weight", (_logits(make, 4, 5), _soft_targets(make, 4, 5)), {"weight": make.uniform(5, low=0.2, high=2.0, dtype=torch.float64)}, wrt=every),
        Sample("large-logits", (make.magnitude(4, 5, low=20.0, high=50.0), _hard_targets(make, 4, 5))),
        # torch's quirk, reproduced: a target (or weight) with more dimensions than the input
        # makes the loss bigger than the input, and the "class" dimension summed over is then
        # input.dim() - 1 of the loss (here its first dimension, of size 3), divided by C = 4.
        Sample("target-enlarges", (_logits(make, 4), _soft_targets(make, 3, 4))),
        Sample("weight-enlarges", (_logits(make, 3, 4), _soft_targets(make, 3, 4)), {"weight": _mlsm_weight(make, 2, 1, 4)}, wrt=every),
    ]


def _mlsm_errors(make: Maker) -> list[ErrorCase]:
    x, y = _logits(make, 3, 4), _soft_targets(make, 3, 4)
    return [
        ErrorCase("bad-reduction", (x, y), {"reduction": "batchmean"}, ValueError, "reduction"),
        ErrorCase("elementwise-mean", (x, y), {"reduction": "elementwise_mean"}, ValueError, "reduction"),
        ErrorCase("reduction-none-object", (x, y), {"reduction": None}, TypeError, "reduction"),
        ErrorCase("shape-before-reduction", (x, _soft_targets(make, 5)), {"reduction": "bad"}, RuntimeError, "target"),
        ErrorCase("0d-input", (x[0, 0], y[0, 0]), {}, IndexError, "input"),
        ErrorCase("0d-input-before-reduction", (x[0, 0], y[0, 0]), {"reduction": "bad"}, IndexError, "input"),
        ErrorCase("target-mismatch", (x, _soft_targets(make, 5)), {}, RuntimeError, "target"),
        ErrorCase("weight-mismatch", (x, y), {"weight": _mlsm_weight(make, 5)}, RuntimeError, "weight"),
        ErrorCase("weight-mismatch-enlarged", (x[0], _soft_targets(make, 3, 4)), {"weight": _mlsm_weight(make, 2, 4)}, RuntimeError, "weight"),
        ErrorCase("bool-target", (x, y > 0.5), {}, RuntimeError, "target"),
        ErrorCase("bool-target-shape-first", (x, _soft_targets(make, 5) > 0.5), {}, RuntimeError, "broadcastable"),
        ErrorCase("integer-input", (x.long(), y), {}, NotImplementedError, "input"),
        ErrorCase("bool-input", (x > 0, y), {}, NotImplementedError, "input"),
        ErrorCase("complex-input", (x.to(torch.complex128), y), {}, NotImplementedError, "input"),
        ErrorCase("input-dtype-before-shape", (x.long(), _soft_targets(make, 5)), {}, NotImplementedError, "input"),
    ]


def _mlsm_empty(make: Maker) -> list[Sample]:
    return [
        Sample("empty", (_logits(make, 0, 5), _soft_targets(make, 0, 5))),
        Sample("empty-3d", (_logits(make, 0, 3, 5), _soft_targets(make, 0, 3, 5))),
        Sample("empty-weight", (_logits(make, 0, 5), _soft_targets(make, 0, 5)), {"weight": _mlsm_weight(make, 5)}, wrt=(0, 1, "weight")),
        # C = 0: each sample is 0/0 = NaN, as in torch
        Sample("no-classes", (_logits(make, 3, 0), _soft_targets(make, 3, 0))),
    ]


def _reduced_torch_none(name: str) -> Callable:
    """A reference that reduces torch's ``'none'`` result itself: the mean of nothing is
    0/0 = NaN and the sum 0. For losses whose torch ``'mean'``/``'sum'`` of an empty batch is
    uninitialised memory."""
    def reference(*args, reduction="mean", **kwargs):
        out = getattr(TF, name)(*args, reduction="none", **kwargs)
        if reduction == "mean":
            return out.mean()
        return out.sum() if reduction == "sum" else out

    return reference


def _mm_empty(make: Maker) -> list[Sample]:
    x, y = _scores(make, 0, 4), make.randint(0, 4, 0)
    return [
        Sample("empty", (x, y), wrt=(0,)),
        Sample("empty-p2-weight", (x, y), {"p": 2, "margin": 0.45, "weight": make.uniform(4, low=0.2, high=2.0)}, wrt=(0,)),
    ]


def _ml_empty(make: Maker) -> list[Sample]:
    return [Sample("empty", (_scores(make, 0, 4), make.randint(-1, 4, 0, 4)), wrt=(0,))]


_MARGIN_CASES: list[LossCase] = [
    LossCase(
        "multi_margin_loss",
        "MultiMarginLoss",
        samples=_mm_samples,
        errors=_mm_errors,
        empty=_mm_empty,
        empty_reference=_reduced_torch_none("multi_margin_loss"),
        torch_forward_ad=False,
        notes="torch has no forward AD or double backward here (torchloss has both); half precision "
        "works on the CPU too; an empty batch gives NaN/0 (torch: uninitialised memory)",
    ),
    LossCase(
        "multilabel_margin_loss",
        "MultiLabelMarginLoss",
        samples=_ml_samples,
        errors=_ml_errors,
        empty=_ml_empty,
        empty_reference=_reduced_torch_none("multilabel_margin_loss"),
        torch_forward_ad=False,
        notes="torch has no forward AD or double backward here (torchloss has both); half precision "
        "works on the CPU too; an empty batch gives NaN/0 (torch: uninitialised memory)",
    ),
    LossCase(
        "multilabel_soft_margin_loss",
        "MultiLabelSoftMarginLoss",
        samples=_mlsm_samples,
        errors=_mlsm_errors,
        empty=_mlsm_empty,
        notes="complex targets/weights refused (torch returns a complex loss)",
    ),
]
