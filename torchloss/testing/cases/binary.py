"""Case-table entries of the binary losses: BCE, BCEWithLogits, SoftMargin."""

from __future__ import annotations

import torch

from ._base import ErrorCase, LossCase, Maker, Sample

# ============================================================================================
# Binary: BCE, BCEWithLogits, SoftMargin
#
# Case-table entries of the binary losses: BCE, BCEWithLogits, SoftMargin.
#
# Samples stay where both implementations are smooth and agree:
#
# * BCE: inputs in [0.05, 0.95] (the -100 log clamp and the 1e-12 gradient clamp are far away;
#   they are compared with torch in ``tests/test_binary_specific.py``); targets soft or hard.
# * BCEWithLogits: logits up to ±50 in the "large" sample, where the loss is linear or flat but
#   finite differences still work in float64.
# * SoftMargin: |y x| up to 50, where torch does not overflow yet (torchloss never does; the
#   overflow region is tested separately). The target is not differentiable (torch raises if it
#   requires grad), so only the input is in ``wrt``. A bool target is accepted by torch's forward
#   but breaks its backward, so it is tested separately.
#
# Value-range errors (BCE input/target outside [0, 1]) are listed for the CPU only: on CUDA both
# torch and torchloss turn them into device-side asserts, which poison the CUDA context.


# --------------------------------------------------------------------------------------------
# BCE


def _probs(make: Maker, *shape, dtype=None):
    return make.uniform(*shape, low=0.05, high=0.95, dtype=dtype)


def _hard(make: Maker, *shape, dtype=None):
    return (make.signs(*shape, dtype=dtype) + 1) / 2


def _bce_samples(make: Maker) -> list[Sample]:
    return [
        Sample("matrix", (_probs(make, 3, 4), make.uniform(3, 4, low=0.0, high=1.0))),
        Sample("scalar", (_probs(make), make.uniform(low=0.0, high=1.0))),
        # hard targets: finite differences would leave [0, 1], so only the input is differentiated
        Sample("vector-hard", (_probs(make, 5), _hard(make, 5)), wrt=(0,)),
        Sample("3d", (_probs(make, 2, 3, 4), make.uniform(2, 3, 4, low=0.0, high=1.0))),
        Sample("weight-full", (_probs(make, 3, 4), _hard(make, 3, 4)), {"weight": make.uniform(3, 4, low=0.2, high=2.0)}, wrt=(0,)),
        Sample("weight-row", (_probs(make, 3, 4), make.uniform(3, 4, low=0.0, high=1.0)), {"weight": make.uniform(4, low=0.2, high=2.0)}),
        Sample("weight-col", (_probs(make, 3, 4), make.uniform(3, 4, low=0.0, high=1.0)), {"weight": make.uniform(3, 1, low=0.2, high=2.0)}),
        Sample("weight-0d", (_probs(make, 3, 4), make.uniform(3, 4, low=0.0, high=1.0)), {"weight": make.uniform(low=0.2, high=2.0)}),
        Sample("scalar-weight", (_probs(make), make.uniform(low=0.0, high=1.0)), {"weight": make.uniform(low=0.2, high=2.0)}),
    ]


def _bce_errors(make: Maker) -> list[ErrorCase]:
    x, y = _probs(make, 3, 4), make.uniform(3, 4, low=0.0, high=1.0)
    other = torch.float32 if make.dtype == torch.float64 else torch.float64
    errors = [
        ErrorCase("bad-reduction", (x, y), {"reduction": "batchmean"}, ValueError, "reduction"),
        ErrorCase("target-size", (x, y[0]), {}, ValueError, "target size"),
        ErrorCase("reduction-checked-before-size", (x, y[0]), {"reduction": "batchmean"}, ValueError, "reduction"),
        ErrorCase("target-dtype", (x, y.to(other)), {}, RuntimeError, "dtype"),
        ErrorCase("integer-target", (x, y.long()), {}, RuntimeError, "dtype"),
        ErrorCase("integer-both", (x.long(), y.long()), {}, NotImplementedError, "floating"),
        ErrorCase("complex-both", (x.to(torch.complex128), y.to(torch.complex128)), {}, NotImplementedError, "floating"),
        ErrorCase("weight-mismatch", (x, y), {"weight": make.uniform(5)}, RuntimeError, "weight"),
        ErrorCase("weight-enlarges", (x, y), {"weight": make.uniform(2, 3, 4)}, RuntimeError, "weight"),
        ErrorCase("weight-1-for-0d", (x[0, 0], y[0, 0]), {"weight": make.uniform(1)}, RuntimeError, "weight"),
        ErrorCase(
            "weight-requires-grad",
            (x, y),
            {"weight": make.uniform(4).requires_grad_()},
            RuntimeError,
            "not differentiable with respect to argument 'weight'",
        ),
        ErrorCase(
            "weight-requires-grad-before-dtype",
            (x, y.to(other)),
            {"weight": make.uniform(4).requires_grad_()},
            RuntimeError,
            "argument 'weight'",
        ),
        ErrorCase("complex-weight", (x, y), {"weight": make.uniform(4).to(torch.complex128)}, RuntimeError, "weight"),
    ]
    if make.device.type == "cpu":
        errors += [
            ErrorCase("input-above-1", (x + 1, y), {}, RuntimeError, "input should be between 0 and 1"),
            ErrorCase("input-negative", (x - 1, y), {"reduction": "none"}, RuntimeError, "input should be between 0 and 1"),
            ErrorCase("input-nan", (x * float("nan"), y), {}, RuntimeError, "input should be between 0 and 1"),
            ErrorCase("target-above-1", (x, y + 1), {}, RuntimeError, "target should be between 0 and 1"),
            ErrorCase("target-nan", (x, y * float("nan")), {"reduction": "sum"}, RuntimeError, "target should be between 0 and 1"),
        ]
    return errors


def _bce_empty(make: Maker) -> list[Sample]:
    return [
        Sample("empty", (_probs(make, 0, 4), make.uniform(0, 4, low=0.0, high=1.0))),
        Sample("empty-weight", (_probs(make, 0, 4), make.uniform(0, 4, low=0.0, high=1.0)), {"weight": make.uniform(4)}),
    ]


# --------------------------------------------------------------------------------------------
# BCE with logits


def _soft(make: Maker, *shape, dtype=None):
    return make.uniform(*shape, low=0.0, high=1.0, dtype=dtype)


def _bcel_samples(make: Maker) -> list[Sample]:
    pw = lambda *s: make.uniform(*s, low=0.3, high=3.0)  # noqa: E731
    w = lambda *s: make.uniform(*s, low=0.2, high=2.0)  # noqa: E731
    large = make.magnitude(4, 5, low=20.0, high=50.0)
    # The large logits meet hard targets (loss ~0 or ~|x|) and soft ones. Not y = 0 with x << 0:
    # torch's formula cancels there even in float64 (x = -37.5 gives 0, not 5e-17), which would
    # make the float64 reference of the low-precision test wrong (tested separately).
    hard = _hard(make, 2, 5)
    hard = torch.where(large[:2] < 0, torch.ones_like(hard), hard)
    large_target = torch.cat([hard, _soft(make, 2, 5)])
    return [
        Sample("matrix", (make.normal(3, 4, scale=2.0), _soft(make, 3, 4))),
        Sample("scalar", (make.normal(scale=2.0), _soft(make))),
        Sample("vector-hard", (make.normal(6, scale=3.0), _hard(make, 6))),
        Sample("4d", (make.normal(2, 3, 2, 2), _soft(make, 2, 3, 2, 2))),
        Sample("large-logits", (large, large_target)),
        Sample("weight-row", (make.normal(3, 4), _soft(make, 3, 4)), {"weight": w(4)}),
        Sample("weight-col", (make.normal(3, 4), _soft(make, 3, 4)), {"weight": w(3, 1)}),
        Sample("weight-full", (make.normal(3, 4), _hard(make, 3, 4)), {"weight": w(3, 4)}),
        Sample("pos-weight-class", (make.normal(3, 4), _soft(make, 3, 4)), {"pos_weight": pw(4)}),
        Sample("pos-weight-full", (make.normal(3, 4), _hard(make, 3, 4)), {"pos_weight": pw(3, 4)}),
        Sample("pos-weight-0d", (make.normal(3, 4), _soft(make, 3, 4)), {"pos_weight": pw()}),
        # weights of another dtype: torch's result keeps the target's dtype
        Sample(
            "float64-weights",
            (make.normal(3, 4), _soft(make, 3, 4)),
            {"pos_weight": make.uniform(4, low=0.3, high=3.0, dtype=torch.float64), "weight": make.uniform(3, 1, low=0.2, high=2.0, dtype=torch.float64)},
        ),
        Sample("pos-weight-C11", (make.normal(2, 3, 2, 2), _soft(make, 2, 3, 2, 2)), {"pos_weight": pw(3, 1, 1)}),
        Sample(
            "weight-and-pos-weight",
            (make.normal(3, 4, scale=2.0), _soft(make, 3, 4)),
            {"weight": w(3, 1), "pos_weight": pw(4)},
        ),
        Sample("scalar-pos-weight", (make.normal(), _soft(make)), {"pos_weight": pw(), "weight": w()}),
        # The result has the dtype of the target (a float32 target with a float64 input, whose
        # result cannot be gradchecked, is in tests/test_binary_specific.py).
        Sample("float64-target", (make.normal(3, 4), _soft(make, 3, 4, dtype=torch.float64))),
        Sample(
            "float64-weights",
            (make.normal(3, 4), _soft(make, 3, 4)),
            {"weight": w(4).double(), "pos_weight": pw(4).double()},
        ),
    ]


def _bcel_errors(make: Maker) -> list[ErrorCase]:
    x, y = make.normal(3, 4), _soft(make, 3, 4)
    return [
        ErrorCase("bad-reduction", (x, y), {"reduction": "batchmean"}, ValueError, "reduction"),
        ErrorCase("target-size", (x, y[0]), {}, ValueError, "Target size"),
        # found by the differential fuzzer (torchloss/testing/fuzz.py)
        ErrorCase("weight-list", (x, y), {"weight": [1.0, 2.0]}, TypeError, "weight"),
        ErrorCase("pos-weight-float", (x, y), {"pos_weight": 1.5}, TypeError, "pos_weight"),
        ErrorCase("target-broadcast-refused", (x, y[:1]), {}, ValueError, "input size"),
        ErrorCase("integer-target", (x, y.long()), {}, RuntimeError, "target"),
        ErrorCase("bool-target", (x, y.bool()), {}, RuntimeError, "target"),
        ErrorCase("integer-input", (x.long(), y), {}, NotImplementedError, "input"),
        ErrorCase("complex-input", (x.to(torch.complex128), y), {}, NotImplementedError, "input"),
        ErrorCase("weight-mismatch", (x, y), {"weight": make.uniform(5)}, RuntimeError, "weight"),
        ErrorCase("weight-enlarges", (x, y), {"weight": make.uniform(2, 3, 4)}, RuntimeError, "weight"),
        ErrorCase("pos-weight-mismatch", (x, y), {"pos_weight": make.uniform(5)}, RuntimeError, "pos_weight"),
        ErrorCase("pos-weight-enlarges", (x, y), {"pos_weight": make.uniform(2, 3, 4)}, RuntimeError, "pos_weight"),
        ErrorCase("pos-weight-1-for-0d", (x[0, 0], y[0, 0]), {"pos_weight": make.uniform(1)}, RuntimeError, "pos_weight"),
        ErrorCase("bool-pos-weight", (x, y), {"pos_weight": make.uniform(4).bool()}, RuntimeError, "pos_weight"),
        ErrorCase(
            "weight-requires-grad",
            (x, y),
            {"weight": make.uniform(4).requires_grad_()},
            RuntimeError,
            "not differentiable with respect to argument 'weight'",
        ),
        ErrorCase(
            "pos-weight-requires-grad",
            (x, y),
            {"pos_weight": make.uniform(4).requires_grad_()},
            RuntimeError,
            "not differentiable with respect to argument 'pos_weight'",
        ),
        ErrorCase(
            "weight-requires-grad-before-shape",
            (x, y),
            {"weight": make.uniform(2, 3, 4).requires_grad_()},
            RuntimeError,
            "argument 'weight'",
        ),
        ErrorCase(
            "pos-weight-before-weight",
            (x, y),
            {"weight": make.uniform(2, 3, 4), "pos_weight": make.uniform(5)},
            RuntimeError,
            "pos_weight",
        ),
    ]


def _bcel_empty(make: Maker) -> list[Sample]:
    return [
        Sample("empty", (make.normal(0, 4), _soft(make, 0, 4))),
        Sample("empty-weights", (make.normal(0, 4), _soft(make, 0, 4)), {"weight": make.uniform(4), "pos_weight": make.uniform(4)}),
    ]


# --------------------------------------------------------------------------------------------
# Soft margin


def _sm_samples(make: Maker) -> list[Sample]:
    def x(*shape):
        return make.normal(*shape, scale=2.0)

    return [
        Sample("matrix", (x(3, 4), make.signs(3, 4)), wrt=(0,)),
        Sample("scalar", (x(), make.signs()), wrt=(0,)),
        Sample("3d", (x(2, 3, 4), make.signs(2, 3, 4)), wrt=(0,)),
        Sample("target-row", (x(3, 4), make.signs(4)), wrt=(0,)),
        Sample("target-col", (x(3, 4), make.signs(3, 1)), wrt=(0,)),
        Sample("target-0d", (x(3, 4), make.signs()), wrt=(0,)),
        Sample("real-targets", (x(3, 4), make.normal(3, 4)), wrt=(0,)),
        Sample("integer-target", (x(3, 4), make.signs(3, 4, dtype=torch.int64)), wrt=(0,)),
        Sample("float64-target", (x(3, 4), make.signs(3, 4, dtype=torch.float64)), wrt=(0,)),
        Sample("large-margins", (make.magnitude(4, 5, low=20.0, high=50.0), make.signs(4, 5)), wrt=(0,)),
    ]


def _sm_errors(make: Maker) -> list[ErrorCase]:
    x, y = make.normal(3, 4), make.signs(3, 4)
    return [
        ErrorCase("bad-reduction", (x, y), {"reduction": "batchmean"}, ValueError, "reduction"),
        # found by the differential fuzzer (torchloss/testing/fuzz.py)
        ErrorCase("target-none", (x, None), {}, TypeError, "target"),
        ErrorCase("input-list", ([1.0, 2.0], y), {}, TypeError, "input"),
        ErrorCase(
            "target-requires-grad",
            (x, y.clone().requires_grad_()),
            {},
            RuntimeError,
            "not differentiable with respect to argument 'target'",
        ),
        ErrorCase("target-mismatch", (x, make.signs(5)), {}, RuntimeError, "target"),
        ErrorCase("target-enlarges", (x, make.signs(2, 3, 4)), {"reduction": "none"}, RuntimeError, "target"),
        ErrorCase("input-broadcast-refused", (x[0], y), {}, RuntimeError, "target"),
        ErrorCase("integer-input", (x.long(), y), {}, RuntimeError, "input"),
        ErrorCase("bool-input", (x > 0, y), {}, RuntimeError, "input"),
        ErrorCase("complex-target", (x, y.to(torch.complex128)), {}, RuntimeError, "target"),
    ]


def _sm_empty(make: Maker) -> list[Sample]:
    return [
        Sample("empty", (make.normal(0, 4), make.signs(0, 4)), wrt=(0,)),
        Sample("empty-target-row", (make.normal(0, 4), make.signs(4)), wrt=(0,)),
    ]


_BINARY_CASES: list[LossCase] = [
    LossCase(
        "binary_cross_entropy",
        "BCELoss",
        samples=_bce_samples,
        errors=_bce_errors,
        empty=_bce_empty,
    ),
    LossCase(
        "binary_cross_entropy_with_logits",
        "BCEWithLogitsLoss",
        samples=_bcel_samples,
        errors=_bcel_errors,
        empty=_bcel_empty,
    ),
    LossCase(
        "soft_margin_loss",
        "SoftMarginLoss",
        samples=_sm_samples,
        errors=_sm_errors,
        empty=_sm_empty,
        notes="target not differentiable (as torch); torchloss does not overflow for large -y*x",
    ),
]
