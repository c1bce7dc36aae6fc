"""Case-table entries of the likelihoods: PoissonNLL, GaussianNLL, KLDiv."""

from __future__ import annotations

import torch

from ._base import ErrorCase, LossCase, Maker, Sample

# ============================================================================================
# Likelihoods: PoissonNLL, GaussianNLL, KLDiv
#
# Case-table entries of the likelihood-based losses: PoissonNLL, GaussianNLL, KLDiv.
#
# Samples stay away from the points where torchloss deliberately differs from torch or where the
# loss is not differentiable:
#
# * Poisson ``full=True``: targets stay off y = 1 (the Stirling term jumps there) and above 0
#   (torch's target gradient is NaN at y <= 0; torchloss's is finite, tested separately);
# * Gaussian: a var below eps is straight-through for autograd (the gradient is not the derivative
#   of the clamped value), so that sample differentiates input and target only; the var gradient
#   there is compared with torch in ``tests/test_probabilistic_specific.py``;
# * KL without ``log_target``: targets > 0 (the target gradient is NaN at 0, in both).


def _positive(make: Maker, *shape, low=0.1, high=3.0, avoid=()):
    return make.magnitude(*shape, low=low, high=high, avoid=avoid, margin=0.1).abs()


# --------------------------------------------------------------------------------------------
# Poisson


def _poisson_samples(make: Maker) -> list[Sample]:
    def targets(*shape):
        # both sides of the Stirling threshold y = 1, off it by at least 0.1
        return _positive(make, *shape, low=0.1, high=4.0, avoid=(1.0,))

    def rates(*shape):
        return make.uniform(*shape, low=0.2, high=3.0)

    return [
        Sample("log-input", (make.normal(4, 5), targets(4, 5))),
        Sample("log-input-full", (make.normal(4, 5), targets(4, 5)), {"full": True}),
        Sample("rate", (rates(4, 5), targets(4, 5)), {"log_input": False}),
        Sample(
            "rate-full-eps",
            (rates(4, 5), targets(4, 5)),
            {"log_input": False, "full": True, "eps": 0.1},
        ),
        Sample("negative-target", (make.normal(3, 4), make.uniform(3, 4, low=-2.0, high=3.0))),
        Sample("scalar-full", (make.normal(), targets()), {"full": True}),
        Sample("3d-rate-full", (rates(2, 3, 4), targets(2, 3, 4)), {"log_input": False, "full": True}),
        Sample("target-broadcast-full", (make.normal(3, 4), targets(4)), {"full": True}),
        Sample("both-broadcast-full", (rates(3, 1), targets(1, 4)), {"log_input": False, "full": True}),
        # mixed dtypes: a 0-d float64 target does not promote (ATen's 0-d rule)
        Sample("float64-0d-target-full", (make.normal(3, 4), make.uniform(low=1.5, high=3.0, dtype=torch.float64)), {"full": True}),
    ]


def _poisson_errors(make: Maker) -> list[ErrorCase]:
    x, y = make.normal(3, 4), make.uniform(3, 4, low=0.0, high=3.0)
    return [
        ErrorCase("bad-reduction", (x, y), {"reduction": "batchmean"}, ValueError, "reduction"),
        ErrorCase(
            "elementwise-mean", (x, y), {"reduction": "elementwise_mean"}, ValueError, "reduction"
        ),
        ErrorCase("bad-broadcast", (x, make.uniform(3, 5)), {}, RuntimeError, "shape"),
        # found by the differential fuzzer (torchloss/testing/fuzz.py)
        ErrorCase("log-input-none", (x, y), {"log_input": None}, TypeError, "log_input"),
        ErrorCase("full-float", (x, y), {"full": 0.0}, TypeError, "full"),
        ErrorCase("eps-1-element-tensor", (x, y), {"eps": torch.tensor([2.0])}, TypeError, "eps"),
    ]


def _poisson_empty(make: Maker) -> list[Sample]:
    x, rate = make.normal(0, 4), make.uniform(0, 4, low=0.2, high=3.0)
    y = make.uniform(0, 4, low=0.1, high=3.0)
    return [
        Sample("empty", (x, y)),
        Sample("empty-rate-full", (rate, y), {"log_input": False, "full": True}),
    ]


# --------------------------------------------------------------------------------------------
# Gaussian


def _gaussian_samples(make: Maker) -> list[Sample]:
    def var(*shape):
        return make.uniform(*shape, low=0.2, high=2.0)

    x, y = make.normal(4, 3), make.normal(4, 3)
    # var straddling eps = 0.01: entries below are clamped (straight-through for autograd)
    small = make.uniform(4, 3, low=0.002, high=0.03)
    def sample(name, in_shape, var_, target_shape=None, wrt=(0, 1, 2), **kwargs):
        input, target = make.normal(*in_shape), make.normal(*(target_shape or in_shape))
        return Sample(name, (input, target, var_), kwargs, wrt=wrt)

    return [
        Sample("same-shape", (x, y, var(4, 3)), wrt=(0, 1, 2)),
        sample("full", (4, 5), var(4, 5), full=True),
        sample("homoscedastic-fewer-dims", (4, 3), var(4)),
        sample("trailing-size-1", (4, 3), var(4, 1)),
        sample("leading-size-1", (4, 3), var(1, 3), eps=1e-3),
        sample("3d-middle-size-1", (2, 3, 4), var(2, 1, 4), full=True),
        sample("1d-scalar-var", (5,), var()),
        sample("0d", (), var()),
        sample("float-var", (4, 3), 0.7, wrt=(0, 1)),
        sample("float-var-below-eps-full", (4, 3), 1e-3, wrt=(0, 1), eps=0.05, full=True),
        sample("target-broadcast", (4, 3), var(4, 3), target_shape=(1, 3)),
        sample("target-enlarges", (4, 1), var(4), target_shape=(4, 3)),
        # mixed dtypes: a float64 var promotes the loss (computed in float64: torch computes parts
        # in the input's dtype; see docs/differences.md); a 0-d float64 target does not promote
        sample("float64-var", (4, 3), make.uniform(4, 3, low=0.2, high=2.0, dtype=torch.float64)),
        Sample("float64-0d-target", (make.normal(4, 3), make.normal(dtype=torch.float64), var(4, 3)), wrt=(0, 1, 2)),
        # straight-through below eps: not the derivative of the value, so no var gradient here
        Sample("var-below-eps", (x, y, small), {"eps": 0.01}, wrt=(0, 1)),
    ]


def _gaussian_errors(make: Maker) -> list[ErrorCase]:
    x, y, v = make.normal(4, 3), make.normal(4, 3), make.uniform(4, 3, low=0.2, high=2.0)
    negative = v.clone()
    negative[1, 2] = -0.5
    errors = [
        ErrorCase("negative-var", (x, y, negative), {}, ValueError, "var has negative"),
        ErrorCase("negative-float-var", (x, y, -1.0), {}, ValueError, "var has negative"),
        ErrorCase("int-var", (x, y, 1), {}, TypeError, "var"),
        ErrorCase("bad-reduction", (x, y, v), {"reduction": "batchmean"}, ValueError, "reduction"),
        ErrorCase(
            "elementwise-mean", (x, y, v), {"reduction": "elementwise_mean"}, ValueError, "reduction"
        ),
        ErrorCase("bad-target", (x, make.normal(4, 2), v), {}, RuntimeError, "shape"),
        ErrorCase("integer-var-tensor", (x, y, make.randint(1, 3, 4, 3)), {}, RuntimeError, "var"),
        # a negative var is reported before a bad shape, and both before a bad reduction
        ErrorCase(
            "negative-before-size", (x, y, -make.uniform(3, low=0.1)), {"reduction": "bad"},
            ValueError, "negative",
        ),
        ErrorCase(
            "size-before-reduction", (x, y, make.uniform(3, low=0.1)), {"reduction": "bad"},
            ValueError, "incorrect size",
        ),
    ]
    for shape in [(3,), (1,), (), (1, 1), (4, 3, 1), (2, 4, 3), (4, 5)]:
        bad = make.uniform(*shape, low=0.2, high=2.0)
        name = "var-size-" + ("x".join(map(str, shape)) or "0d")
        errors.append(ErrorCase(name, (x, y, bad), {}, ValueError, "var is of incorrect size"))
    return errors


def _gaussian_empty(make: Maker) -> list[Sample]:
    def e(*shape):
        return make.normal(*shape)

    return [
        Sample("empty", (e(0, 3), e(0, 3), make.uniform(0, 3, low=0.2, high=2.0)), wrt=(0, 1, 2)),
        Sample("empty-homoscedastic", (e(0, 3), e(0, 3), make.uniform(0, low=0.2, high=2.0)), wrt=(0, 1, 2)),
        Sample("empty-float-var", (e(0, 3), e(0, 3), 0.5), {"full": True}, wrt=(0, 1)),
    ]


# --------------------------------------------------------------------------------------------
# KL divergence


def _log_probs(make: Maker, *shape):
    # computed in float64 and rounded once, so low-precision samples are exact distributions
    return make.normal(*shape, dtype=torch.float64).log_softmax(-1).to(make.dtype)


def _probability_targets(make: Maker, *shape):
    return make.normal(*shape, dtype=torch.float64).softmax(-1).to(make.dtype)


def _kl_samples(make: Maker) -> list[Sample]:
    return [
        Sample("probabilities", (_log_probs(make, 4, 5), _probability_targets(make, 4, 5))),
        Sample("log-target", (_log_probs(make, 4, 5), _log_probs(make, 4, 5)), {"log_target": True}),
        Sample("0d", (make.normal(), make.uniform(low=0.1, high=2.0))),
        Sample("0d-log-target", (make.normal(), make.normal()), {"log_target": True}),
        Sample("3d-log-target", (_log_probs(make, 2, 3, 4), _log_probs(make, 2, 3, 4)), {"log_target": True}),
        Sample("target-broadcast", (_log_probs(make, 3, 4), _probability_targets(make, 4))),
        Sample("target-enlarges", (_log_probs(make, 1, 4), _probability_targets(make, 3, 4))),
        Sample("unnormalised", (make.normal(3, 4), make.uniform(3, 4, low=0.05, high=3.0))),
        # mixed dtypes: a 0-d float64 target does not promote
        Sample("float64-0d-target", (_log_probs(make, 3, 4), make.uniform(low=0.1, high=1.0, dtype=torch.float64))),
    ]


def _kl_errors(make: Maker) -> list[ErrorCase]:
    x, y = _log_probs(make, 3, 4), _probability_targets(make, 3, 4)
    i = make.randint(0, 5, 3, 4)
    return [
        ErrorCase("bad-reduction", (x, y), {"reduction": "bad"}, ValueError, "reduction"),
        ErrorCase("integer", (i, i.clone()), {}, RuntimeError, "Integral"),
        ErrorCase("integer-target", (x, i), {}, RuntimeError, "Integral"),
        ErrorCase("complex", (x.to(torch.complex128), y), {}, RuntimeError, "Complex"),
        ErrorCase("bad-broadcast", (x, _probability_targets(make, 3, 5)), {}, RuntimeError, "shape"),
        # the reduction is validated before the dtypes
        ErrorCase("reduction-before-dtype", (i, i.clone()), {"reduction": "bad"}, ValueError, "reduction"),
        # found by the differential fuzzer (torchloss/testing/fuzz.py)
        ErrorCase("log-target-none", (x, y), {"log_target": None}, TypeError, "log_target"),
        ErrorCase("log-target-float", (x, y), {"log_target": 0.0}, TypeError, "log_target"),
    ]


def _kl_empty(make: Maker) -> list[Sample]:
    return [
        Sample("empty", (make.normal(0, 4), make.uniform(0, 4, low=0.1, high=1.0))),
        Sample("empty-log-target", (make.normal(0, 4), make.normal(0, 4)), {"log_target": True}),
    ]


_PROBABILISTIC_CASES: list[LossCase] = [
    LossCase(
        "poisson_nll_loss",
        "PoissonNLLLoss",
        samples=_poisson_samples,
        errors=_poisson_errors,
        empty=_poisson_empty,
        notes="full=True: finite target gradient at y <= 0 (torch: NaN).",
    ),
    LossCase(
        "gaussian_nll_loss",
        "GaussianNLLLoss",
        samples=_gaussian_samples,
        errors=_gaussian_errors,
        empty=_gaussian_empty,
        legacy=False,
        forward_arity=3,
        notes="vmap over a batched var works (torch raises).",
    ),
    LossCase(
        "kl_div",
        "KLDivLoss",
        samples=_kl_samples,
        errors=_kl_errors,
        empty=_kl_empty,
        reductions=("none", "mean", "sum", "batchmean"),
    ),
]
