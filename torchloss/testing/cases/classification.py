"""Case-table entries of NLL and cross entropy."""

from __future__ import annotations

import torch
from torch import Tensor

from ._base import ErrorCase, LossCase, Maker, Sample
from .probabilistic import _log_probs

# ============================================================================================
# Classification: NLL, cross entropy
#
# Samples cover every shape torch accepts ((C) with a () or (1,) target, (N, C), 3-D, 4-D (torch's
# 2-D kernel) and 5-D), weights, ignore_index inside and outside [0, C) (including -1),
# label smoothing (also 1 and a negative value, which counts as 0), uint8 targets and class-
# probability targets (target of the input's shape), whose target and weight are
# differentiable. These losses are smooth, so there are no kinks to avoid. All-ignored targets
# (NaN 'mean', zero gradient), extreme logits and an unbatched input with a (1,) target (whose
# backward torch cannot run) are in tests/test_classification_specific.py.


def _labels(make: Maker, C: int, *shape, ignore=None, dtype=torch.int64) -> Tensor:
    t = make.randint(0, C, *shape)
    if ignore is not None and t.numel() > 1:
        flat = t.view(-1)
        flat[:: 3] = ignore  # every third position ignored
    return t.to(dtype)


def _index_samples(make: Maker, smoothing: bool) -> list[Sample]:
    C = 5
    def w():
        return make.uniform(C, low=0.2, high=2.0)

    def x(*shape):
        return _log_probs(make, *shape) if not smoothing else make.normal(*shape, scale=2.0)

    ls = {"label_smoothing": 0.2} if smoothing else {}
    samples = [
        Sample("matrix", (x(4, C), _labels(make, C, 4)), dict(ls), wrt=(0,)),
        Sample("unbatched", (x(C), _labels(make, C)), dict(ls), wrt=(0,)),
        Sample("weight", (x(6, C), _labels(make, C, 6)), dict(ls, weight=w()), wrt=(0,)),
        Sample("ignore-in-range", (x(6, C), _labels(make, C, 6, ignore=1)), dict(ls, ignore_index=1), wrt=(0,)),
        Sample("ignore-minus-1-weight", (x(6, C), _labels(make, C, 6, ignore=-1)), dict(ls, ignore_index=-1, weight=w()), wrt=(0,)),
        Sample("ignore-above-C", (x(6, C), _labels(make, C, 6, ignore=7)), dict(ls, ignore_index=7), wrt=(0,)),
        Sample("3d", (x(2, C, 3), _labels(make, C, 2, 3)), dict(ls), wrt=(0,)),
        Sample("4d-weight-ignore", (x(2, C, 2, 3), _labels(make, C, 2, 2, 3, ignore=0)), dict(ls, weight=w(), ignore_index=0), wrt=(0,)),
        Sample("5d", (x(2, C, 2, 1, 2), _labels(make, C, 2, 2, 1, 2)), dict(ls), wrt=(0,)),
        Sample("uint8-target", (x(4, C), _labels(make, C, 4, dtype=torch.uint8)), dict(ls), wrt=(0,)),
    ]
    return samples


def _nll_samples(make: Maker) -> list[Sample]:
    return _index_samples(make, smoothing=False)


def _ce_samples(make: Maker) -> list[Sample]:
    C = 5

    def probs(*shape):
        return make.normal(*shape, dtype=torch.float64).softmax(1 if len(shape) > 1 else 0).to(make.dtype)

    def w():
        return make.uniform(C, low=0.2, high=2.0)

    plain = [Sample(s.name, (make.normal(*s.args[0].shape, scale=2.0), s.args[1]), s.kwargs, wrt=(0,))
             for s in _index_samples(make, smoothing=False)]
    smoothed = [Sample(s.name + "-smoothing", s.args, s.kwargs, wrt=(0,)) for s in _index_samples(make, smoothing=True)]
    x = make.normal(4, C, scale=2.0)
    y = _labels(make, C, 4)
    return plain + smoothed + [
        Sample("smoothing-1-weight", (x, y), {"label_smoothing": 1.0, "weight": w()}, wrt=(0,)),
        Sample("negative-smoothing", (x, y), {"label_smoothing": -0.5}, wrt=(0,)),
        Sample("large-logits", (make.normal(4, C, scale=1e4), y), {"label_smoothing": 0.1}, wrt=(0,)),
        Sample("probs", (make.normal(4, C), probs(4, C)), wrt=(0, 1)),
        Sample("probs-weight", (make.normal(4, C), probs(4, C)), {"weight": w()}, wrt=(0, 1, "weight")),
        Sample("probs-smoothing", (make.normal(4, C), probs(4, C)), {"label_smoothing": 0.3}, wrt=(0, 1)),
        Sample(
            "probs-weight-smoothing-3d",
            (make.normal(2, C, 3), probs(2, C, 3)),
            {"label_smoothing": 0.1, "weight": w()},
            wrt=(0, 1, "weight"),
        ),
        Sample("probs-unbatched", (make.normal(C), probs(C)), {"weight": w()}, wrt=(0, 1, "weight")),
        Sample("probs-4d", (make.normal(2, C, 2, 2), probs(2, C, 2, 2)), wrt=(0, 1)),
        Sample("probs-unnormalised", (make.normal(3, C), make.uniform(3, C, low=-1.0, high=2.0)), wrt=(0, 1)),
        # a float64 probability target promotes the loss (computed in float64; torch's
        # log-softmax in the input's dtype, see docs/differences.md)
        Sample("probs-float64-target", (make.normal(4, C), probs(4, C).double()), wrt=(0, 1)),
    ]


def _index_errors(make: Maker, fn: str) -> list[ErrorCase]:
    x, y = make.normal(4, 5), make.randint(0, 5, 4)
    other = torch.float32 if make.dtype == torch.float64 else torch.float64
    errors = [
        ErrorCase("bad-reduction", (x, y), {"reduction": "batchmean"}, ValueError, "reduction"),
        ErrorCase("batch-mismatch", (x, y[:3]), {}, ValueError, "batch_size"),
        ErrorCase("0d-target-for-batch", (x, y[0]), {}, ValueError, "batch_size"),
        ErrorCase("1d-input-long-target", (x[0], y[:2]), {}, ValueError, "1D target must have size 1"),
        ErrorCase("2d-target", (x, make.randint(0, 5, 4, 3)), {}, RuntimeError, "target"),
        ErrorCase("3d-spatial-mismatch", (make.normal(2, 5, 4), make.randint(0, 5, 2, 3)), {}, RuntimeError, "target size"),
        ErrorCase("3d-target-rank", (make.normal(2, 5, 4), make.randint(0, 5, 2)), {}, RuntimeError, "target size"),
        ErrorCase("4d-target-rank", (make.normal(2, 5, 4, 3), make.randint(0, 5, 2, 4)), {}, RuntimeError, "targets of dimension"),
        ErrorCase("4d-spatial-mismatch", (make.normal(2, 5, 4, 3), make.randint(0, 5, 2, 4, 4)), {}, RuntimeError, "target size"),
        ErrorCase("5d-spatial-mismatch", (make.normal(2, 5, 4, 3, 2), make.randint(0, 5, 2, 4, 2, 2)), {}, RuntimeError, "target size"),
        ErrorCase("int32-target", (x, y.int()), {}, RuntimeError, "target dtype"),
        ErrorCase("bool-target", (x, y.bool()), {}, RuntimeError, "target dtype"),
        ErrorCase("target-dtype-before-weight", (x, y.int()), {"weight": make.uniform(4)}, RuntimeError, "target dtype"),
        ErrorCase("weight-size", (x, y), {"weight": make.uniform(4)}, RuntimeError, "weight"),
        ErrorCase("weight-2d", (x, y), {"weight": make.uniform(1, 5)}, RuntimeError, "weight"),
        ErrorCase("weight-dtype", (x, y), {"weight": make.uniform(5, dtype=other)}, RuntimeError, "weight"),
        ErrorCase("integer-input", (x.long(), y), {}, NotImplementedError, "input"),
        ErrorCase("complex-input", (x.to(torch.complex128), y), {}, NotImplementedError, "input"),
        ErrorCase(
            "weight-requires-grad",
            (x, y),
            {"weight": make.uniform(5).requires_grad_()},
            RuntimeError,
            "not differentiable with respect to argument 'weight'",
        ),
        ErrorCase("ignore-index-float", (x, y), {"ignore_index": 1.5}, TypeError, "ignore_index"),
        ErrorCase("ignore-index-bool", (x, y), {"ignore_index": True}, TypeError, "ignore_index"),
        ErrorCase("reduction-before-shape", (x, y[:3]), {"reduction": "bad"}, ValueError, "reduction"),
        # found by the differential fuzzer (torchloss/testing/fuzz.py)
        ErrorCase("input-not-tensor", (7, y), {}, TypeError, "input"),
        ErrorCase("target-not-tensor", (x, 1.5), {}, TypeError, "target"),
        ErrorCase("weight-list", (x, y), {"weight": [1.0] * 5}, TypeError, "weight"),
        ErrorCase("uint8-target-3d", (make.normal(3, 4, 3), make.randint(0, 4, 3, 3, dtype=torch.uint8)), {}, RuntimeError, "Long"),
        ErrorCase("uint8-target-4d", (make.normal(2, 4, 2, 2), make.randint(0, 4, 2, 2, 2, dtype=torch.uint8)), {}, RuntimeError, "Long"),
    ]
    if fn == "nll_loss":
        errors.append(ErrorCase("0d-input", (x[0, 0], y[0]), {}, ValueError, "dimensions"))
    if make.device.type == "cpu":
        errors += [
            ErrorCase("target-above-C", (x, torch.tensor([1, 0, 5, 2])), {}, IndexError, "out of bounds"),
            ErrorCase("target-minus-1", (x, torch.tensor([1, 0, -1, 2])), {"reduction": "none"}, IndexError, "out of bounds"),
            ErrorCase("uint8-not-ignored", (x, torch.tensor([1, 156, 2, 0], dtype=torch.uint8)), {}, IndexError, "Target 156"),
            ErrorCase("C-0", (make.normal(3, 0), torch.zeros(3, dtype=torch.long)), {}, IndexError, "out of bounds"),
            ErrorCase("weight-size-before-range", (x, torch.tensor([1, 0, 5, 2])), {"weight": make.uniform(4)}, RuntimeError, "weight"),
        ]
    return errors


def _ce_errors(make: Maker) -> list[ErrorCase]:
    x, y, p = make.normal(4, 5), make.randint(0, 5, 4), make.uniform(4, 5, low=0.0, high=1.0)
    return _index_errors(make, "cross_entropy") + [
        ErrorCase("0d-input", (x[0, 0], y[:1]), {}, IndexError, "class dimension"),
        ErrorCase("0d-input-0d-long-target", (x[0, 0], y[0]), {}, RuntimeError, "floating point type for target"),
        ErrorCase("0d-input-0d-float-target", (x[0, 0], p[0, 0]), {}, IndexError, "class dimension"),
        ErrorCase("probs-long-target", (x, y.new_zeros(4, 5)), {}, RuntimeError, "floating point type for target"),
        ErrorCase("probs-complex-target", (x, p.to(torch.complex128)), {}, RuntimeError, "floating point type for target"),
        ErrorCase("probs-ignore-index", (x, p), {"ignore_index": 0}, RuntimeError, "ignore_index"),
        ErrorCase("probs-smoothing-above-1", (x, p), {"label_smoothing": 1.5}, RuntimeError, "label_smoothing"),
        ErrorCase("smoothing-above-1", (x, y), {"label_smoothing": 1.5}, RuntimeError, "label_smoothing"),
        ErrorCase("smoothing-before-target-dtype", (x, y.int()), {"label_smoothing": 1.5}, RuntimeError, "label_smoothing"),
        ErrorCase("probs-weight-size", (x, p), {"weight": make.uniform(4)}, RuntimeError, "cross_entropy: weight"),
        ErrorCase("probs-integer-input", (x.long(), p), {}, NotImplementedError, "input"),
        ErrorCase("integer-input-before-target", (x.long(), y.int()), {}, NotImplementedError, "input"),
        ErrorCase("probs-bad-reduction", (x, p), {"reduction": "bad"}, ValueError, "reduction"),
    ]


def _index_empty(make: Maker, smoothing: bool = False) -> list[Sample]:
    ls = {"label_smoothing": 0.1} if smoothing else {}
    w = make.uniform(5, low=0.2, high=2.0)
    return [
        Sample("empty", (make.normal(0, 5), make.randint(0, 5, 0)), dict(ls), wrt=(0,)),
        Sample("empty-weight", (make.normal(0, 5), make.randint(0, 5, 0)), dict(ls, weight=w), wrt=(0,)),
        Sample("empty-spatial", (make.normal(2, 5, 0), make.randint(0, 5, 2, 0)), dict(ls), wrt=(0,)),
    ]


def _ce_empty(make: Maker) -> list[Sample]:
    return _index_empty(make) + _index_empty(make, smoothing=True) + [
        Sample("empty-probs", (make.normal(0, 5), make.uniform(0, 5)), {"weight": make.uniform(5)}, wrt=(0, 1)),
    ]


_CLASSIFICATION_CASES: list[LossCase] = [
    LossCase(
        "nll_loss",
        "NLLLoss",
        samples=_nll_samples,
        errors=lambda make: _index_errors(make, "nll_loss"),
        empty=_index_empty,
        notes="saves only target and weight (the gradient does not depend on the input)",
    ),
    LossCase(
        "cross_entropy",
        "CrossEntropyLoss",
        samples=_ce_samples,
        errors=_ce_errors,
        empty=_ce_empty,
        notes="keeps the logits and one logsumexp per position for backward (torch: the log-softmax)",
    ),
]
