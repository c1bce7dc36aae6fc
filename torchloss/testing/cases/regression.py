"""Case-table entries of the regression losses: L1, MSE, SmoothL1, Huber."""

from __future__ import annotations

import torch

from ._base import ErrorCase, LossCase, Maker, Sample

# --------------------------------------------------------------------------------------------
# Regression: L1, MSE, SmoothL1, Huber
#
# The shapes every difference loss is run on: equal shapes, 0-d, K-dimensional, a target that
# broadcasts into the input (warns, as torch), and one that broadcasts both to a larger shape.


def _difference_samples(make: Maker, kinks=(0.0,), module=True, mixed_dtypes=True, **kwargs) -> list[Sample]:
    def pair(in_shape, tgt_shape, name):
        target = make.normal(*tgt_shape)
        shape = torch.broadcast_shapes(in_shape, tgt_shape)
        d = make.magnitude(*shape, low=0.05, high=2.5, avoid=kinks)
        input = (target.expand(shape) + d).sum_to_size(in_shape) if shape == in_shape else None
        if input is None:
            # Enlarging broadcast: the input is not a function of d, so only keep |x - y| off
            # the kinks statistically; the chosen shapes are tiny and the offsets coarse.
            input = make.normal(*in_shape) + 3.0
        return Sample(name, (input, target), dict(kwargs), module=module)

    def mixed(name, input_0d: bool):
        # one operand is 0-d float64: torch broadcasts the pair first, so it promotes like any
        # other operand (L1/MSE/SmoothL1 give float64, Huber the input's dtype) and the difference
        # is taken in float64 (issue 17)
        d = make.magnitude(4, 5, low=0.05, high=2.5, avoid=kinks, dtype=torch.float64)
        if input_0d:  # a 0-d float64 input against a target in the dtype under test
            input = make.normal(dtype=torch.float64)
            target = (input - d).to(make.dtype)
        else:  # an input in the dtype under test against a 0-d float64 target
            target = make.normal(dtype=torch.float64)
            input = (target + d).to(make.dtype)
        return Sample(name, (input, target), dict(kwargs), module=module)

    samples = [
        pair((4, 5), (4, 5), "matrix"),
        pair((), (), "scalar"),
        pair((2, 3, 4), (2, 3, 4), "3d"),
        pair((3, 4), (4,), "target-broadcast"),
        pair((3, 1), (1, 4), "both-broadcast"),
    ]
    if mixed_dtypes:
        samples += [mixed("float64-0d-target", False), mixed("float64-0d-input", True)]
    return samples


def _regression_errors(name: str, make: Maker) -> list[ErrorCase]:
    x, y = make.normal(3, 4), make.normal(3, 4)
    errors = [
        ErrorCase("bad-reduction", (x, y), {"reduction": "batchmean"}, ValueError, "reduction"),
        ErrorCase("bad-broadcast", (x, make.normal(3, 5)), {}, RuntimeError),
    ]
    # found by the differential fuzzer (torchloss/testing/fuzz.py)
    if name == "l1_loss":
        errors.append(ErrorCase("bool-input", (x > 0, y), {}, RuntimeError, "bool"))
    if name in ("smooth_l1_loss", "huber_loss"):
        arg = "beta" if name == "smooth_l1_loss" else "delta"
        errors += [
            ErrorCase(f"nan-{arg}", (x, y), {arg: float("nan")}, RuntimeError, arg),
            ErrorCase(f"{arg}-1-element-tensor", (x, y), {arg: torch.tensor([2.0])}, TypeError, arg),
        ]
    return errors


def _weighted(make: Maker, name: str) -> list[Sample]:
    x, y = make.normal(3, 4), make.normal(3, 4)
    x = y + make.magnitude(3, 4, low=0.1, high=2.5, avoid=(1.0, 0.5) if name == "huber" else (0.0,))
    w = make.uniform(3, 4, low=0.2, high=2.0)
    w64 = make.uniform(3, 4, low=0.2, high=2.0, dtype=torch.float64)
    return [
        Sample("weight", (x, y), {"weight": w}, wrt=(0, 1, "weight"), module=False),
        # a float64 weight promotes the result (Huber's too: torch multiplies by the weight)
        Sample("float64-weight", (x, y), {"weight": w64}, wrt=(0, 1, "weight"), module=False),
    ]


def _weight_errors(make: Maker) -> list[ErrorCase]:
    x, y = make.normal(3, 4), make.normal(3, 4)
    return [
        ErrorCase("weight-size", (x, y), {"weight": make.uniform(4)}, ValueError, "[Ww]eight"),
        ErrorCase(
            "weighted-elementwise-mean",
            (x, y),
            {"weight": make.uniform(3, 4), "reduction": "elementwise_mean"},
            ValueError,
            "reduction",
        ),
    ]


def _empty_pair(make: Maker, **kwargs) -> list[Sample]:
    return [Sample("empty", (make.normal(0, 4), make.normal(0, 4)), dict(kwargs))]


def _int_errors(exc):
    def errors(make: Maker):
        i = make.randint(0, 5, 3, 4)
        return [ErrorCase("integer", (i, i.clone()), {}, exc, "floating")]

    return errors


_REGRESSION_CASES: list[LossCase] = [
    LossCase(
        "l1_loss",
        "L1Loss",
        samples=lambda make: _difference_samples(make) + _weighted(make, "l1"),
        errors=lambda make: _regression_errors("l1_loss", make) + _weight_errors(make),
        empty=_empty_pair,
    ),
    LossCase(
        "mse_loss",
        "MSELoss",
        samples=lambda make: _difference_samples(make, kinks=()) + _weighted(make, "mse"),
        errors=lambda make: _regression_errors("mse_loss", make)
        + _weight_errors(make)
        + _int_errors(NotImplementedError)(make),
        empty=_empty_pair,
    ),
    LossCase(
        "smooth_l1_loss",
        "SmoothL1Loss",
        samples=lambda make: _difference_samples(make, kinks=(1.0,))
        + _difference_samples(make, kinks=(0.5,), beta=0.5)[:2]
        + [
            Sample(s.name + "-beta0", s.args, {"beta": 0.0})
            for s in _difference_samples(make, kinks=(0.0,))[:2]
        ]
        + [Sample("beta-inf", _difference_samples(make)[0].args, {"beta": float("inf")})],
        errors=lambda make: _regression_errors("smooth_l1_loss", make)
        + [
            ErrorCase(
                "negative-beta", (make.normal(3), make.normal(3)), {"beta": -1.0}, RuntimeError, "beta"
            )
        ]
        + _int_errors(NotImplementedError)(make),
        empty=_empty_pair,
    ),
    LossCase(
        "huber_loss",
        "HuberLoss",
        # (no mixed-dtype pair: torch's huber_loss backward raises "Found dtype Float but
        # expected Double" there; tests/test_regression_specific.py checks torchloss's against a
        # float64 evaluation)
        samples=lambda make: _difference_samples(make, kinks=(1.0,), mixed_dtypes=False)
        + _difference_samples(make, kinks=(0.5,), delta=0.5)[:2]
        + _weighted(make, "huber"),
        errors=lambda make: _regression_errors("huber_loss", make)
        + _weight_errors(make)
        + [
            ErrorCase("zero-delta", (make.normal(3), make.normal(3)), {"delta": 0.0}, RuntimeError, "delta"),
            ErrorCase(
                "int-input-float-target",
                (make.randint(0, 5, 3), make.normal(3, dtype=torch.float32)),
                {},
                RuntimeError,
                "dtype",
            ),
        ]
        + _int_errors(NotImplementedError)(make),
        empty=_empty_pair,
        legacy=False,
    ),
]
