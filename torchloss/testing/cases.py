"""The declarative case table: for every loss, sample inputs covering its arguments.

One :class:`LossCase` per loss. The generic tests (``tests/``) and ``python -m torchloss check``
run every sample of every case through the same checks, so adding a loss means adding an entry
here. A case says:

* ``name``: the functional's name in both ``torchloss.functional`` and ``torch.nn.functional``;
  ``module``: the class name in both ``torchloss`` and ``torch.nn``;
* ``samples(make)``: a list of :class:`Sample`; ``make`` draws seeded random tensors on the test's
  device and dtype (see :class:`Maker`). Samples stay away from the loss's kinks, where finite
  differences and the two implementations' subgradients may legitimately disagree;
* ``reductions`` and whether the legacy ``size_average``/``reduce`` pair is accepted;
* ``errors(make)``: bad calls, as :class:`ErrorCase`, that must raise torch's exception type;
* ``empty(make)``: zero-size samples (N = 0);
* tolerances per dtype.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn.functional as TF
from torch import Tensor

from ..modules import PairwiseDistance

REDUCTIONS = ("none", "mean", "sum")

# (rtol, atol) for comparing against torch, per dtype of the inputs.
DEFAULT_TOL = {
    torch.float64: (1e-7, 1e-10),
    torch.float32: (2e-5, 1e-6),
    torch.float16: (2e-2, 2e-3),
    torch.bfloat16: (5e-2, 1e-2),
}


@dataclass
class Sample:
    """One call: ``fn(*args, reduction=r, **kwargs)``.

    ``wrt`` names the inputs whose gradients are compared (positions of ``args`` or keys of
    ``kwargs``). ``module_kwargs`` says which ``kwargs`` are constructor arguments of the module
    (``None``: all of them; a sample that uses a functional-only argument sets ``module=False``).
    """

    name: str
    args: tuple
    kwargs: dict = field(default_factory=dict)
    wrt: tuple = (0, 1)
    module: bool = True
    # the reference differentiates only these (default: all of ``wrt``)
    torch_wrt: tuple | None = None
    # the call runs user code (a distance function) whose own autograd nodes sit below the one
    # torchloss node: graph purity then means "exactly one torchloss node, at the top"
    user_graph: bool = False


@dataclass
class ErrorCase:
    """A bad call and the exception torch raises for it; ``match`` is a regex that torchloss's
    message must contain (it should name the argument and what was expected)."""

    name: str
    args: tuple
    kwargs: dict
    exc: type
    match: str | None = None


@dataclass
class LossCase:
    name: str
    module: str
    samples: Callable[["Maker"], list[Sample]]
    errors: Callable[["Maker"], list[ErrorCase]] = lambda make: []
    empty: Callable[["Maker"], list[Sample]] = lambda make: []
    reductions: Sequence[str] = REDUCTIONS
    legacy: bool = True
    tol: dict = field(default_factory=lambda: dict(DEFAULT_TOL))
    # torch's own support, used to decide what to compare against torch and what only against
    # finite differences / torchloss's reverse mode.
    torch_forward_ad: bool = True
    # positional-argument names of the module's forward, in order (for module tests)
    forward_arity: int = 2
    # what the empty samples are compared with, where torch's own result there is wrong
    # (default: torch.nn.functional's function of the same name)
    empty_reference: Callable | None = None
    # applied to the first argument before both losses, in every generic test that compares or
    # differentiates (CTC: ``log_softmax`` over the classes, since torch's gradient is the
    # derivative of the loss only on log-softmax outputs); the samples then hold its input
    compose: Callable | None = None
    notes: str = ""

    def tolerance(self, dtype: torch.dtype) -> tuple[float, float]:
        return self.tol.get(dtype, DEFAULT_TOL[torch.float32])


class Maker:
    """Seeded random tensors on one device and dtype (the floating dtype under test)."""

    def __init__(self, device="cpu", dtype=torch.float64, seed: int = 0):
        self.device = torch.device(device)
        self.dtype = dtype
        self.gen = torch.Generator().manual_seed(seed)

    def _out(self, t: Tensor, dtype=None) -> Tensor:
        return t.to(device=self.device, dtype=dtype or self.dtype)

    def uniform(self, *shape, low=-1.0, high=1.0, dtype=None) -> Tensor:
        t = torch.rand(shape, generator=self.gen, dtype=torch.float64) * (high - low) + low
        return self._out(t, dtype)

    def normal(self, *shape, scale=1.0, dtype=None) -> Tensor:
        return self._out(torch.randn(shape, generator=self.gen, dtype=torch.float64) * scale, dtype)

    def signs(self, *shape, dtype=None) -> Tensor:
        t = torch.randint(0, 2, shape, generator=self.gen).to(torch.float64) * 2 - 1
        return self._out(t, dtype)

    def magnitude(self, *shape, low, high, avoid: Sequence[float] = (), margin=0.05, dtype=None):
        """Values of random sign with ``low <= |v| <= high`` and ``|v|`` at least ``margin`` away
        from each point in ``avoid`` (a kink of the loss)."""
        t = torch.rand(shape, generator=self.gen, dtype=torch.float64) * (high - low) + low
        for k in avoid:
            near = (t - k).abs() < margin
            t = torch.where(near, k + margin * torch.where(t >= k, 1.0, -1.0) * 1.5, t)
        s = torch.randint(0, 2, shape, generator=self.gen).to(torch.float64) * 2 - 1
        return self._out(t * s, dtype)

    def randint(self, low, high, *shape, dtype=torch.int64) -> Tensor:
        return torch.randint(low, high, shape, generator=self.gen).to(self.device, dtype)


# --------------------------------------------------------------------------------------------
# Regression: L1, MSE, SmoothL1, Huber
#
# The shapes every difference loss is run on: equal shapes, 0-d, K-dimensional, a target that
# broadcasts into the input (warns, as torch), and one that broadcasts both to a larger shape.


def _difference_samples(make: Maker, kinks=(0.0,), module=True, **kwargs) -> list[Sample]:
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

    return [
        pair((4, 5), (4, 5), "matrix"),
        pair((), (), "scalar"),
        pair((2, 3, 4), (2, 3, 4), "3d"),
        pair((3, 4), (4,), "target-broadcast"),
        pair((3, 1), (1, 4), "both-broadcast"),
    ]


def _regression_errors(name: str, make: Maker) -> list[ErrorCase]:
    x, y = make.normal(3, 4), make.normal(3, 4)
    return [
        ErrorCase("bad-reduction", (x, y), {"reduction": "batchmean"}, ValueError, "reduction"),
        ErrorCase("bad-broadcast", (x, make.normal(3, 5)), {}, RuntimeError),
    ]


def _weighted(make: Maker, name: str) -> list[Sample]:
    x, y = make.normal(3, 4), make.normal(3, 4)
    x = y + make.magnitude(3, 4, low=0.1, high=2.5, avoid=(1.0, 0.5) if name == "huber" else (0.0,))
    w = make.uniform(3, 4, low=0.2, high=2.0)
    return [Sample("weight", (x, y), {"weight": w}, wrt=(0, 1, "weight"), module=False)]


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
        samples=lambda make: _difference_samples(make, kinks=(1.0,))
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
    ]


def _poisson_errors(make: Maker) -> list[ErrorCase]:
    x, y = make.normal(3, 4), make.uniform(3, 4, low=0.0, high=3.0)
    return [
        ErrorCase("bad-reduction", (x, y), {"reduction": "batchmean"}, ValueError, "reduction"),
        ErrorCase(
            "elementwise-mean", (x, y), {"reduction": "elementwise_mean"}, ValueError, "reduction"
        ),
        ErrorCase("bad-broadcast", (x, make.uniform(3, 5)), {}, RuntimeError, "shape"),
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


# ============================================================================================
# Pair: MarginRanking, HingeEmbedding, CosineEmbedding
#
# Case-table entries of the pair losses: MarginRanking, HingeEmbedding, CosineEmbedding.
#
# Samples stay away from the kinks, where finite differences cross the hinge and the two
# implementations' subgradients are compared separately (``tests/test_pair_specific.py``):
#
# * MarginRanking: each element's hinge argument ``z = -y (x1 - x2) + margin`` is drawn first,
#   with ``|z| >= 0.1``, and one input is solved for; the sample where both inputs broadcast uses a
#   lattice (``x1`` on multiples of 0.3, ``x2`` on multiples of 0.3 shifted by 0.15, each within
#   0.02, margin 0.6), which keeps ``|z| >= 0.11`` for any draw. The vmap test combines every
#   differentiable input of one seed (all three are), so each combination is drawn as a whole.
# * HingeEmbedding: inputs at least 0.1 from the margin.
# * CosineEmbedding: each pair is built with a chosen cosine at least 0.08 from the margin (and at
#   most 0.95 in magnitude), whatever the seed, so the combination of one seed's target with
#   another seed's inputs in the vmap test stays off the kink as well. The ``(N, 1)`` against
#   ``(N, D)`` sample (torch's per-input norms, a cosine that is not bounded by 1) has no ``-1``
#   targets, whose kink it could not avoid.
#
# Targets other than +-1 are included: margin ranking uses them as numbers, hinge embedding
# applies both branches, cosine embedding gives 0. Zero vectors (whose float16 result torch
# computes as NaN) and integer inputs (nothing to differentiate) are tested separately.

# --------------------------------------------------------------------------------------------
# MarginRanking


def _mr_solved(make: Maker, shape1, shape2, y: torch.Tensor, margin: float = 0.0):
    """``(x1, x2)`` with every hinge argument ``y (x2 - x1) + margin`` of magnitude in
    [0.1, 2.0]: one input is drawn and the other, which must have the full shape, solved for.
    Elements with ``y == 0`` have ``z = margin`` whatever the inputs (use a non-zero margin)."""
    shape = torch.broadcast_shapes(shape1, shape2, y.shape)
    z = make.magnitude(*shape, low=0.1, high=2.0)
    safe = torch.where(y == 0, torch.ones_like(y), y)
    step = torch.where(y == 0, make.normal(*shape), (z - margin) / safe)  # x2 - x1
    if tuple(shape1) == tuple(shape):
        x2 = make.normal(*shape2)
        return (x2 - step).to(make.dtype), x2
    x1 = make.normal(*shape1)
    return x1, (x1 + step).to(make.dtype)


def _mr_lattice(make: Maker, shape1, shape2):
    a = make.randint(-5, 6, *shape1, dtype=torch.float64)
    b = make.randint(-5, 6, *shape2, dtype=torch.float64)
    x1 = 0.3 * a + make.uniform(*shape1, low=-0.02, high=0.02, dtype=torch.float64)
    x2 = 0.3 * b + 0.15 + make.uniform(*shape2, low=-0.02, high=0.02, dtype=torch.float64)
    return x1.to(make.dtype), x2.to(make.dtype)


def _mr_samples(make: Maker) -> list[Sample]:
    every = (0, 1, 2)

    def sample(name, shape1, shape2, y, margin=None, wrt=every):
        x1, x2 = _mr_solved(make, shape1, shape2, y, 0.0 if margin is None else margin)
        kwargs = {} if margin is None else {"margin": margin}
        return Sample(name, (x1, x2, y), kwargs, wrt=wrt)

    soft = torch.tensor([0.5, -2.0, 1.5, -0.25, 3.0, 0.0], dtype=make.dtype, device=make.device)
    lattice = _mr_lattice(make, (4, 1), (1, 5))
    return [
        sample("vector", (6,), (6,), make.signs(6)),
        sample("margin", (6,), (6,), make.signs(6), 0.5),
        sample("negative-margin", (6,), (6,), make.signs(6), -0.3),
        sample("int-margin", (6,), (6,), make.signs(6), 1),
        # targets used as numbers (y = 0 leaves z = margin, away from 0)
        sample("soft-targets", (6,), (6,), soft, 0.2),
        sample("matrix", (3, 4), (3, 4), make.signs(3, 4), 0.25),
        sample("3d", (2, 3, 2), (2, 3, 2), make.signs(2, 3, 2)),
        sample("scalar", (), (), make.signs(), 0.5),
        sample("input2-broadcast", (5,), (1,), make.signs(5), 0.1),
        sample("input1-broadcast", (1,), (5,), make.signs(5), -0.2),
        sample("target-broadcast", (5,), (5,), make.signs(1), 0.3),
        sample("target-row", (3, 4), (3, 4), make.signs(1, 4)),
        Sample("both-broadcast", (*lattice, make.signs(4, 1)), {"margin": 0.6}, wrt=every),
        sample("integer-target", (6,), (6,), make.signs(6, dtype=torch.int64), 0.4, wrt=(0, 1)),
        sample("float64-target", (3, 4), (3, 4), make.signs(3, 4, dtype=torch.float64), 0.1),
    ]


def _mr_errors(make: Maker) -> list[ErrorCase]:
    x1, x2, y = make.normal(4), make.normal(4), make.signs(4)
    return [
        ErrorCase("bad-reduction", (x1, x2, y), {"reduction": "batchmean"}, ValueError, "reduction"),
        ErrorCase("target-dims", (x1, x2, y[0]), {}, RuntimeError, "same number of dimensions"),
        ErrorCase("input-dims", (x1, x2[None], y), {}, RuntimeError, "same number of dimensions"),
        ErrorCase("reduction-before-dims", (x1, x2, y[0]), {"reduction": "bad"}, ValueError, "reduction"),
        ErrorCase("not-a-tensor", (x1.tolist(), x2, y), {}, AttributeError, "input1"),
        ErrorCase("margin-none", (x1, x2, y), {"margin": None}, TypeError, "margin"),
        ErrorCase("margin-str", (x1, x2, y), {"margin": "0.5"}, TypeError, "margin"),
        ErrorCase("margin-complex", (x1, x2, y), {"margin": 1j}, TypeError, "margin"),
        ErrorCase("margin-1d-tensor", (x1, x2, y), {"margin": make.normal(1)}, TypeError, "margin"),
        ErrorCase(
            "margin-requires-grad", (x1, x2, y), {"margin": make.normal().requires_grad_()}, TypeError, "margin"
        ),
        ErrorCase(
            "margin-complex-tensor", (x1, x2, y), {"margin": make.normal().to(torch.complex128) + 1j}, RuntimeError, "margin"
        ),
        ErrorCase("dims-before-margin", (x1, x2, y[0]), {"margin": None}, RuntimeError, "dimensions"),
        ErrorCase("bool-target", (x1, x2, y > 0), {}, RuntimeError, "target"),
        ErrorCase("bool-input1", (x1 > 0, x2, y), {}, RuntimeError, "input1"),
        ErrorCase("bool-input2", (x1, x2 > 0, y), {}, RuntimeError, "input2"),
        ErrorCase("bool-target-before-shape", (x1, make.normal(3), y > 0), {}, RuntimeError, "target"),
        ErrorCase("input-broadcast", (x1, make.normal(3), y), {}, RuntimeError, "input2.*broadcastable"),
        ErrorCase("target-broadcast", (x1, x2, make.signs(3)), {}, RuntimeError, "target.*broadcastable"),
        ErrorCase("complex-input", (x1.to(torch.complex128), x2, y), {}, NotImplementedError, "complex"),
        ErrorCase("complex-target", (x1, x2, y.to(torch.complex128)), {}, NotImplementedError, "complex"),
        ErrorCase(
            "broadcast-before-complex", (x1.to(torch.complex128), make.normal(3), y), {}, RuntimeError, "broadcastable"
        ),
    ]


def _mr_empty(make: Maker) -> list[Sample]:
    return [
        Sample("empty", (make.normal(0), make.normal(0), make.signs(0)), wrt=(0, 1, 2)),
        Sample("empty-2d", (make.normal(0, 3), make.normal(0, 3), make.signs(0, 3)), {"margin": 0.5}, wrt=(0, 1, 2)),
    ]


# --------------------------------------------------------------------------------------------
# HingeEmbedding


def _he_input(make: Maker, *shape, margin: float = 1.0) -> torch.Tensor:
    """Inputs at least 0.1 from the kink at ``margin`` (on either side)."""
    return margin + make.magnitude(*shape, low=0.1, high=2.5)


def _he_samples(make: Maker) -> list[Sample]:
    mixed = torch.tensor([1.0, -1.0, 0.0, 2.0, 0.5, -0.5, 1.0, -1.0], dtype=make.dtype, device=make.device)
    return [
        Sample("vector", (_he_input(make, 8), make.signs(8)), wrt=(0,)),
        Sample("matrix", (_he_input(make, 3, 4), make.signs(3, 4)), wrt=(0,)),
        # any target other than +-1 applies both branches
        Sample("other-targets", (_he_input(make, 8), mixed), wrt=(0,)),
        Sample("other-targets-margin", (_he_input(make, 8, margin=0.4), mixed), {"margin": 0.4}, wrt=(0,)),
        Sample("margin-0", (_he_input(make, 3, 4, margin=0.0), make.signs(3, 4)), {"margin": 0.0}, wrt=(0,)),
        Sample("negative-margin", (_he_input(make, 8, margin=-0.5), mixed), {"margin": -0.5}, wrt=(0,)),
        Sample("large-margin", (_he_input(make, 3, 4, margin=2.5), make.signs(3, 4)), {"margin": 2.5}, wrt=(0,)),
        Sample("int-margin", (_he_input(make, 6, margin=2.0), make.signs(6)), {"margin": 2}, wrt=(0,)),
        Sample("scalar", (_he_input(make), make.signs()), wrt=(0,)),
        Sample("scalar-other-target", (_he_input(make), make.signs() * 0), wrt=(0,)),
        Sample("3d", (_he_input(make, 2, 3, 2), make.signs(2, 3, 2)), wrt=(0,)),
        Sample("target-row", (_he_input(make, 3, 4), make.signs(4)), wrt=(0,)),
        Sample("target-0d", (_he_input(make, 3, 4), make.signs()), wrt=(0,)),
        # torch broadcasts silently, also to a shape larger than the input's
        Sample("enlarging", (_he_input(make, 3, 1), mixed[:4].reshape(1, 4)), wrt=(0,)),
        Sample("scalar-input-vector-target", (_he_input(make), mixed), wrt=(0,)),
        Sample("integer-target", (_he_input(make, 6), make.signs(6, dtype=torch.int64)), wrt=(0,)),
        Sample("bool-target", (_he_input(make, 6), make.signs(6) > 0), wrt=(0,)),
        Sample("float64-target", (_he_input(make, 3, 4), make.signs(3, 4, dtype=torch.float64)), wrt=(0,)),
        # compared as numbers, whatever their dtype (uint8 255 is -1 in torch's comparison)
        Sample("complex-target", (_he_input(make, 8), mixed.to(torch.complex128)), wrt=(0,)),
        Sample("uint8-target", (_he_input(make, 4), torch.tensor([1, 255, 0, 2], dtype=torch.uint8, device=make.device)), wrt=(0,)),
    ]


def _he_errors(make: Maker) -> list[ErrorCase]:
    x, y = _he_input(make, 3, 4), make.signs(3, 4)
    return [
        ErrorCase("bad-reduction", (x, y), {"reduction": "batchmean"}, ValueError, "reduction"),
        ErrorCase("reduction-before-type", (x.tolist(), y), {"reduction": "bad"}, ValueError, "reduction"),
        ErrorCase("input-not-a-tensor", (x.tolist(), y), {}, TypeError, "input"),
        ErrorCase("target-not-a-tensor", (x, 1.0), {}, TypeError, "target"),
        ErrorCase("margin-none", (x, y), {"margin": None}, TypeError, "margin"),
        ErrorCase("margin-1d-tensor", (x, y), {"margin": make.normal(1)}, TypeError, "margin"),
        ErrorCase("bool-input", (x > 0, y), {}, RuntimeError, "input"),
        ErrorCase("complex-input", (x.to(torch.complex128), y), {}, NotImplementedError, "input"),
        ErrorCase("bad-broadcast", (x, make.signs(3)), {}, RuntimeError, "target.*broadcastable"),
        ErrorCase("complex-before-broadcast", (x.to(torch.complex128), make.signs(3)), {}, NotImplementedError, "input"),
        ErrorCase("integer-mean", (x.long(), y), {}, RuntimeError, "mean"),
        ErrorCase("uint8-negative-margin", (x.abs().to(torch.uint8), y), {"margin": -0.5}, RuntimeError, "margin"),
        ErrorCase("int8-margin-overflow", (x.to(torch.int8), y), {"margin": 200.0}, RuntimeError, "margin"),
    ]


def _he_empty(make: Maker) -> list[Sample]:
    return [
        Sample("empty", (_he_input(make, 0), make.signs(0)), wrt=(0,)),
        Sample("empty-2d", (_he_input(make, 0, 4), make.signs(4)), {"margin": 0.5}, wrt=(0,)),
    ]


# --------------------------------------------------------------------------------------------
# CosineEmbedding


def _unit(t: torch.Tensor) -> torch.Tensor:
    return t / t.norm(dim=-1, keepdim=True)


def _cos_partner(make: Maker, base: torch.Tensor, margin: float, n: int) -> torch.Tensor:
    """``n`` vectors (one per row) whose cosine with the rows of ``base`` (``(n, D)`` or
    ``(1, D)``, in float64) lies at least 0.08 from ``margin`` and at most 0.95 in magnitude."""
    d = base.shape[-1]
    side = make.signs(n, dtype=torch.float64)
    gap = make.uniform(n, low=0.08, high=0.6, dtype=torch.float64)
    c = margin + side * gap
    c = torch.where(c.abs() > 0.95, margin - side * gap, c)
    u = _unit(base).expand(n, d)
    w = make.normal(n, d, dtype=torch.float64)
    w = _unit(w - (w * u).sum(-1, keepdim=True) * u)  # orthogonal to the base row
    scale = make.uniform(n, 1, low=0.5, high=2.0, dtype=torch.float64)
    return scale * (c[:, None] * u + (1 - c * c).sqrt()[:, None] * w)


def _cos_pair(make: Maker, n: int, d: int, margin: float = 0.0, base_rows: int | None = None):
    """``(x1, x2)`` of shape ``(n, D)``; ``base_rows=1`` makes ``x2`` a single ``(1, D)`` row."""
    rows = n if base_rows is None else base_rows
    base = make.normal(rows, d, dtype=torch.float64) * make.uniform(rows, 1, low=0.5, high=2.0, dtype=torch.float64)
    partner = _cos_partner(make, base, margin, n)
    return partner.to(make.dtype), base.to(make.dtype)


def _cos_targets(make: Maker, values, dtype=None) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype or make.dtype, device=make.device)


def _cos_samples(make: Maker) -> list[Sample]:
    def batch(name, n=5, d=6, margin=None, y=None, base_rows=None):
        x1, x2 = _cos_pair(make, n, d, 0.0 if margin is None else margin, base_rows)
        y = make.signs(n) if y is None else y
        kwargs = {} if margin is None else {"margin": margin}
        return Sample(name, (x1, x2, y), kwargs)

    def single(name, margin=None, y=1.0):
        x1, x2 = _cos_pair(make, 1, 7, 0.0 if margin is None else margin)
        kwargs = {} if margin is None else {"margin": margin}
        return Sample(name, (x1[0], x2[0], _cos_targets(make, y)), kwargs)

    mixed = [1.0, -1.0, 0.0, 2.0, 0.5, -1.0]
    x1q, x2q = make.normal(4, 1), make.normal(4, 5)
    y_pos = _cos_targets(make, [1.0, -1.0, 1.0, -1.0, 1.0])
    return [
        batch("matrix"),
        batch("margin", margin=0.3),
        batch("negative-margin", margin=-0.4),
        batch("large-margin", margin=0.8),
        batch("int-margin", margin=0),
        # targets other than +-1 give 0
        batch("other-targets", n=6, margin=0.2, y=_cos_targets(make, mixed)),
        batch("wide", n=3, d=64, margin=-0.1),
        batch("one-feature-pair", n=4, d=2),
        single("unbatched-positive"),
        single("unbatched-negative", margin=-0.2, y=-1.0),
        single("unbatched-other", y=0.0),
        # input2 broadcast along the batch
        batch("input2-row", margin=0.1, base_rows=1),
        # the target broadcast to the batch, and a batch broadcast to the target
        batch("target-1", margin=-0.3, y=make.signs(1)),
        Sample("target-enlarges", (*_cos_pair(make, 1, 6, 0.25), _cos_targets(make, [1.0, -1.0, 0.0, -1.0])), {"margin": 0.25}),
        # torch's per-input norms: an (N, 1) input against (N, D) (no -1 targets, see above)
        Sample("feature-broadcast", (x1q, x2q, _cos_targets(make, [1.0, 0.0, 1.0, 2.0])), {"margin": 0.5}),
        Sample("feature-broadcast-other", (x2q, x1q, _cos_targets(make, [1.0, 1.0, 0.5, 1.0]))),
        batch("integer-target", y=make.signs(5, dtype=torch.int64), margin=0.1),
        batch("float64-target", y=make.signs(5, dtype=torch.float64), margin=-0.2),
        batch("bool-target", y=make.signs(5) > 0),
        batch("complex-target", n=6, y=_cos_targets(make, mixed, dtype=torch.complex128)),
        Sample("positive-targets", (*_cos_pair(make, 5, 6), y_pos), {"margin": 0.6}),
    ]


def _cos_errors(make: Maker) -> list[ErrorCase]:
    a, b, y = make.normal(4, 5), make.normal(4, 5), make.signs(4)
    return [
        ErrorCase("bad-reduction", (a, b, y), {"reduction": "batchmean"}, ValueError, "reduction"),
        ErrorCase("reduction-before-shape", (a, b, y[None]), {"reduction": "bad"}, ValueError, "reduction"),
        ErrorCase("input-not-a-tensor", (a.tolist(), b, y), {}, TypeError, "input1"),
        ErrorCase("target-not-a-tensor", (a, b, 1), {}, TypeError, "target"),
        ErrorCase("margin-none", (a, b, y), {"margin": None}, TypeError, "margin"),
        ErrorCase("margin-before-shape", (a, b, y[None]), {"margin": "x"}, TypeError, "margin"),
        ErrorCase("target-2d", (a, b, y[None]), {}, RuntimeError, "0D or 1D target"),
        ErrorCase("1d-target-1d-inputs", (a[0], b[0], y), {}, RuntimeError, "input"),
        ErrorCase("0d-target-2d-inputs", (a, b, y[0]), {}, RuntimeError, "input"),
        ErrorCase("1d-target-3d-inputs", (a[None], b[None], y), {}, RuntimeError, "input"),
        ErrorCase("mixed-input-dims", (a[0], b, y), {}, RuntimeError, "input"),
        ErrorCase("0d-inputs", (a[0, 0], b[0, 0], y[0]), {}, RuntimeError, "input"),
        ErrorCase("batch-mismatch", (a, make.normal(3, 5), y), {}, RuntimeError, "input2.*broadcastable"),
        ErrorCase("feature-mismatch", (a, make.normal(4, 3), y), {}, RuntimeError, "input2.*broadcastable"),
        ErrorCase("target-length", (a, b, make.signs(3)), {}, RuntimeError, "target.*broadcastable"),
        ErrorCase("complex-inputs", (a.to(torch.complex128), b, y), {}, NotImplementedError, "complex"),
        ErrorCase(
            "complex-before-target-length", (a.to(torch.complex128), b, make.signs(3)), {}, NotImplementedError, "complex"
        ),
        ErrorCase(
            "broadcast-before-complex", (a.to(torch.complex128), make.normal(3, 5), y), {}, RuntimeError, "broadcastable"
        ),
    ]


def _cos_empty(make: Maker) -> list[Sample]:
    return [
        Sample("empty", (make.normal(0, 5), make.normal(0, 5), make.signs(0))),
        Sample("empty-target-broadcast", (make.normal(0, 5), make.normal(1, 5), make.signs(1)), {"margin": 0.5}),
        # no features: the cosine is 0/sqrt(eps^2) = 0, so the loss is 1 for y = 1
        Sample("no-features", (make.normal(3, 0), make.normal(3, 0), _cos_targets(make, [1.0, -1.0, 0.0]))),
    ]


_PAIR_CASES: list[LossCase] = [
    LossCase(
        "margin_ranking_loss",
        "MarginRankingLoss",
        samples=_mr_samples,
        errors=_mr_errors,
        empty=_mr_empty,
        forward_arity=3,
        notes="all three arguments differentiable; the gradient passes at the kink, as torch's",
    ),
    LossCase(
        "hinge_embedding_loss",
        "HingeEmbeddingLoss",
        samples=_he_samples,
        errors=_he_errors,
        empty=_he_empty,
        notes="float16/bfloat16 computed in float32 with the margin unrounded (torch rounds it to "
        "the input's dtype)",
    ),
    LossCase(
        "cosine_embedding_loss",
        "CosineEmbeddingLoss",
        samples=_cos_samples,
        errors=_cos_errors,
        empty=_cos_empty,
        forward_arity=3,
        notes="float16/bfloat16 in float32 (torch: NaN for a zero vector in float16); no overflow "
        "of the squared-norm product; keeps O(N) statistics instead of torch's intermediates",
    ),
]


# ============================================================================================
# Triplet: TripletMargin, TripletMarginWithDistance
#
# Case-table entries of the triplet losses: TripletMarginLoss and TripletMarginWithDistanceLoss.
#
# Samples stay away from every kink, so that finite differences and the two implementations'
# subgradients agree (the kinks themselves are compared with torch in
# ``tests/test_triplet_specific.py``): the hinge :math:`z = m + d_+ - \\delta` and, with swap, the
# choice :math:`d(a, n)` vs :math:`d(p, n)` are at least ``GAP`` from 0 in every row; the
# components of the difference vectors are at least ``GAP`` from 0 (where :math:`|u|^q` has a kink
# or an infinite second derivative) and, for the infinity norms, the extremal component of each row
# is ``GAP`` clear of the next. Samples are drawn until they qualify (deterministically, from the
# Maker's generator), and batched samples have both active and inactive rows.
#
# ``TripletMarginWithDistanceLoss`` samples whose name starts with ``user-`` call a user's distance
# function (``Sample.user_graph = True``): by design their autograd graph holds the user's
# distance ops below the one torchloss node (margin, swap, hinge and reduction), so the generic
# graph-purity check, which expects a single node, does not apply to them. The user functions are
# module-level functions (the generic module test only constructs modules with them: nothing needs
# pickling).

GAP = 0.05
_TRIES = 2000


# --------------------------------------------------------------------------------------------
# Distance functions of the samples (user functions: torch ops, called as given)


def cosine_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """1 - cos(x, y) over the last dimension (torch's documented example)."""
    return 1.0 - TF.cosine_similarity(x, y, dim=-1)


def squared_euclidean(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return ((x - y) ** 2).sum(-1)


def chebyshev(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The l-infinity distance of torch's documented example."""
    return torch.max(torch.abs(x - y), dim=-1).values


def elementwise_gap(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """|x - y| per element: a "distance" of the inputs' shape (the loss reduces over whatever
    shape the distance function returns)."""
    return (x - y).abs()


def _user(sample: Sample) -> Sample:
    """Mark a sample that calls a user's distance function (see the module notes)."""
    sample.user_graph = True
    return sample


# --------------------------------------------------------------------------------------------
# Drawing triplets away from the kinks


def _pairwise(q: float, eps: float):
    def distance(x, y):
        return TF.pairwise_distance(x, y, q, eps)

    return distance


def _components_clear(u: torch.Tensor, q: float | None) -> bool:
    """No component near 0 (for norms other than q = 2) and, for the infinity norms, a clear
    extremum in every row."""
    if q is None or q == 2:
        return True
    au = u.abs().reshape(-1, u.shape[-1] if u.dim() else 1)
    if bool((au < GAP).any()):
        return False
    if math.isinf(q) and au.shape[-1] > 1:
        top = au.sort(-1, descending=q > 0).values
        return bool(((top[:, 0] - top[:, 1]).abs() >= GAP).all())
    return True


def _triplet(
    make: Maker, shapes, *, q=2.0, eps=1e-6, margin=1.0, swap=False, distance=None, dtypes=(None,) * 3, scale=1.0
):
    """``(anchor, positive, negative)`` of the given shapes, drawn until every row is clear of
    the kinks (module notes). ``distance`` is the distance function (default: torch's pairwise
    distance of norm ``q``); ``q`` also decides which component checks apply (``None``: none).
    ``scale`` is the inputs' standard deviation."""
    distance = distance or _pairwise(q, eps)
    for _ in range(_TRIES):
        a, p, n = (make.normal(*s, scale=scale, dtype=dt) for s, dt in zip(shapes, dtypes))
        a64, p64, n64 = a.double().cpu(), p.double().cpu(), n.double().cpu()
        pairs = [(a64, p64), (a64, n64)] + ([(p64, n64)] if swap else [])
        if not all(_components_clear((x - y) + eps, q) for x, y in pairs):
            continue
        d_pos, d_neg = distance(a64, p64), distance(a64, n64)
        delta = d_neg
        if swap:
            d_swap = distance(p64, n64)
            if bool(((d_neg - d_swap).abs() < GAP).any()):
                continue
            delta = torch.minimum(d_neg, d_swap)
        z = (margin + d_pos) - delta
        if bool((z.abs() < GAP).any()) or not bool((z > 0).any()):
            continue
        if z.numel() > 2 and not bool((z < 0).any()):
            continue  # batched: want inactive rows too
        if swap and z.numel() > 2 and not bool(((d_swap < d_neg) & (z > 0)).any()):
            continue  # batched swap: want a row where the swapped distance is used
        return a, p, n
    raise RuntimeError(f"could not draw a triplet clear of the kinks for shapes {shapes}")


def _same(*shape):
    return (shape, shape, shape)


# --------------------------------------------------------------------------------------------
# TripletMarginLoss


def _tm(make: Maker, name: str, shapes, wrt=(0, 1, 2), dtypes=(None,) * 3, scale=1.0, **kwargs) -> Sample:
    q = kwargs.get("p", 2.0)
    draw = {
        "q": q,
        "eps": kwargs.get("eps", 1e-6),
        "margin": kwargs.get("margin", 1.0),
        "swap": kwargs.get("swap", False),
        "dtypes": dtypes,
        "scale": scale,
    }
    return Sample(name, _triplet(make, shapes, **draw), kwargs, wrt=wrt)


def _tm_samples(make: Maker) -> list[Sample]:
    batch = _same(6, 5)
    return [
        _tm(make, "batch", batch),
        _tm(make, "p1", batch, p=1),
        _tm(make, "p3", batch, p=3),
        _tm(make, "p1.5", batch, p=1.5),
        _tm(make, "p0.5", batch, p=0.5),
        # negative norms are dominated by the smallest component: larger inputs spread the rows
        _tm(make, "p-1", batch, p=-1.0, scale=10.0),
        _tm(make, "p-inf", batch, p=math.inf),
        _tm(make, "p-minus-inf", batch, p=-math.inf, scale=3.0),
        _tm(make, "margin-eps", batch, margin=0.5, eps=1e-3),
        _tm(make, "margin2-eps0", batch, margin=2.0, eps=0.0),
        _tm(make, "swap", batch, swap=True),
        _tm(make, "swap-p1", batch, p=1, swap=True),
        _tm(make, "swap-p3-margin", batch, p=3, margin=0.5, swap=True),
        _tm(make, "swap-p1.5-eps", batch, p=1.5, eps=1e-2, swap=True),
        _tm(make, "unbatched", _same(5)),
        _tm(make, "unbatched-swap-p1", _same(5), p=1, swap=True),
        _tm(make, "scalar", _same(), margin=0.5),
        _tm(make, "3d", _same(2, 3, 4)),
        _tm(make, "3d-swap-p1.5", _same(2, 3, 4), p=1.5, swap=True),
        # same rank, broadcasting sizes: one positive for every anchor; one feature per anchor
        _tm(make, "broadcast-positive-swap", ((5, 4), (1, 4), (5, 4)), swap=True),
        _tm(make, "broadcast-anchor-features", ((5, 1), (5, 4), (5, 4)), p=1),
        _tm(make, "broadcast-batches", ((3, 1, 4), (1, 2, 4), (3, 2, 4)), swap=True),
        # torch promotes the distances: a float64 negative makes the loss float64
        _tm(make, "float64-negative", batch, dtypes=(None, None, torch.float64)),
    ]


def _tm_errors(make: Maker) -> list[ErrorCase]:
    a, p, n = make.normal(3, 4), make.normal(3, 4), make.normal(3, 4)
    return [
        ErrorCase("bad-reduction", (a, p, n), {"reduction": "batchmean"}, ValueError, "reduction"),
        ErrorCase("reduction-before-margin", (a, p, n), {"reduction": "bad", "margin": -1.0}, ValueError, "reduction"),
        ErrorCase("margin-zero", (a, p, n), {"margin": 0.0}, ValueError, "margin"),
        ErrorCase("margin-negative", (a, p, n), {"margin": -1}, ValueError, "margin"),
        ErrorCase("margin-before-rank", (a, p[0], n), {"margin": -1.0}, ValueError, "margin"),
        ErrorCase("margin-before-type", ([1.0], p, n), {"margin": 0}, ValueError, "margin"),
        ErrorCase("anchor-not-tensor", ([1.0, 2.0], p, n), {}, TypeError, "anchor"),
        ErrorCase("negative-not-tensor", (a, p, 3.0), {}, TypeError, "negative"),
        ErrorCase("swap-not-bool", (a, p, n), {"swap": 1}, TypeError, "swap"),
        ErrorCase("p-not-float", (a, p, n), {"p": "2"}, TypeError, "'p'"),
        ErrorCase("eps-not-float", (a, p, n), {"eps": None}, TypeError, "eps"),
        ErrorCase("rank", (a, p[0], n), {}, RuntimeError, "same number of dimensions"),
        ErrorCase("rank-negative", (a[0], p[0], n), {}, RuntimeError, "negative 2D"),
        ErrorCase("positive-batch", (a, make.normal(2, 4), n), {}, RuntimeError, "positive"),
        ErrorCase("negative-batch", (a, p, make.normal(2, 4)), {}, RuntimeError, "negative"),
        ErrorCase("positive-features", (a, make.normal(3, 5), n), {}, RuntimeError, "positive"),
        ErrorCase(
            "swap-positive-negative",
            (a[:1], make.normal(3, 4), make.normal(2, 4)),
            {"swap": True},
            RuntimeError,
            "negative of shape",
        ),
        ErrorCase(
            "distances-do-not-broadcast", (a[:1], make.normal(3, 4), make.normal(2, 4)), {}, RuntimeError, "distances"
        ),
        ErrorCase("bool-anchor-positive", (a > 0, p > 0, n), {}, RuntimeError, "bool"),
        ErrorCase("bool-negative", (a, p, n > 0), {}, RuntimeError, "bool"),
        ErrorCase("empty-features-negative-p", (a[:, :0], p[:, :0], n[:, :0]), {"p": -1.0}, RuntimeError, "norm"),
        ErrorCase("empty-features-inf", (a[:, :0], p[:, :0], n[:, :0]), {"p": math.inf}, RuntimeError, "norm"),
        ErrorCase("empty-features-broadcast", (a[:, :1], p[:, :0], n[:, :0]), {"p": -2.0}, RuntimeError, "norm"),
    ]


def _tm_empty(make: Maker) -> list[Sample]:
    return [
        Sample("empty", (make.normal(0, 5), make.normal(0, 5), make.normal(0, 5)), wrt=(0, 1, 2)),
        Sample("empty-swap-p1", (make.normal(0, 5), make.normal(0, 5), make.normal(0, 5)), {"p": 1, "swap": True}, wrt=(0, 1, 2)),
        Sample("empty-3d", (make.normal(2, 0, 5), make.normal(2, 0, 5), make.normal(2, 0, 5)), wrt=(0, 1, 2)),
        # no features: every distance is 0 and the loss is the margin
        Sample("no-features", (make.normal(3, 0), make.normal(3, 0), make.normal(3, 0)), {"margin": 0.5}, wrt=(0, 1, 2)),
        Sample("no-features-p0.5-swap", (make.normal(3, 0), make.normal(3, 0), make.normal(3, 0)), {"p": 0.5, "swap": True}, wrt=(0, 1, 2)),
    ]


# --------------------------------------------------------------------------------------------
# TripletMarginWithDistanceLoss


def _td(make: Maker, name: str, shapes, q: float | None = 2.0, **kwargs) -> Sample:
    fn = kwargs.get("distance_function")
    distance = None
    if isinstance(fn, torch.nn.PairwiseDistance):
        q, distance = fn.norm, _pairwise(fn.norm, fn.eps)
    elif fn is not None:
        distance = fn
    draw = {"q": q, "margin": kwargs.get("margin", 1.0), "swap": kwargs.get("swap", False), "distance": distance}
    if distance is None:
        draw["eps"] = 1e-6
    sample = Sample(name, _triplet(make, shapes, **draw), kwargs, wrt=(0, 1, 2))
    # a user's function (torchloss's own PairwiseDistance is fused, not called)
    if fn is not None and type(fn) is not PairwiseDistance:
        sample = _user(sample)
    return sample


def _td_samples(make: Maker) -> list[Sample]:
    batch = _same(6, 5)
    return [
        _td(make, "default", batch),
        _td(make, "default-swap-margin", batch, margin=0.5, swap=True),
        _td(make, "unbatched", _same(5)),
        _td(make, "3d-swap", _same(2, 3, 4), swap=True),
        _td(make, "broadcast-positive", ((5, 4), (1, 4), (5, 4))),
        # torchloss's PairwiseDistance (what the module creates by default), any p and eps: fused
        _td(make, "pairwise-module-p3", batch, distance_function=PairwiseDistance(p=3, eps=1e-4)),
        _td(make, "pairwise-module-p1-swap", batch, distance_function=PairwiseDistance(p=1), swap=True),
        # user distance functions, called as given
        _td(make, "user-cosine", batch, q=None, distance_function=cosine_distance, margin=0.3),
        _td(make, "user-cosine-swap", batch, q=None, distance_function=cosine_distance, margin=0.2, swap=True),
        _td(make, "user-squared-euclidean", batch, q=None, distance_function=squared_euclidean, margin=2.0),
        _td(make, "user-chebyshev-swap", batch, q=math.inf, distance_function=chebyshev, margin=0.5, swap=True),
        _td(make, "user-torch-pairwise-p1", batch, distance_function=torch.nn.PairwiseDistance(p=1)),
        _td(make, "user-unbatched-cosine", _same(5), q=None, distance_function=cosine_distance, margin=0.4),
    ] + [_elementwise_sample(make)]


def _elementwise_sample(make: Maker) -> Sample:
    # a distance of the inputs' shape: the loss is element-wise over (N, D), every element away
    # from the hinge's kink and |x - y| away from 0
    for _ in range(_TRIES):
        a, p, n = make.normal(4, 3), make.normal(4, 3), make.normal(4, 3)
        a64, p64, n64 = a.double().cpu(), p.double().cpu(), n.double().cpu()
        ap, an = (a64 - p64).abs(), (a64 - n64).abs()
        z = 0.5 + ap - an
        if bool((ap < GAP).any() or (an < GAP).any() or (z.abs() < GAP).any()):
            continue
        if bool((z > 0).any()) and bool((z < 0).any()):
            kwargs = {"distance_function": elementwise_gap, "margin": 0.5}
            return _user(Sample("user-elementwise-distance", (a, p, n), kwargs, wrt=(0, 1, 2)))
    raise RuntimeError("could not draw the element-wise sample")


def _complex_distance(x, y):
    return (x - y).sum(-1).to(torch.complex64)


def _number_distance(x, y):
    return 1.0


def _bool_distance(x, y):
    return (x - y > 0).any(-1)


def _second_rows(x, y):
    # one distance per row of the second argument: with 3 positives and 2 negatives the two
    # distances do not broadcast
    return (y**2).sum(-1) + x.sum()


def _td_errors(make: Maker) -> list[ErrorCase]:
    a, p, n = make.normal(3, 4), make.normal(3, 4), make.normal(3, 4)
    return [
        ErrorCase("bad-reduction", (a, p, n), {"reduction": "batchmean"}, ValueError, "reduction"),
        ErrorCase("elementwise-mean", (a, p, n), {"reduction": "elementwise_mean"}, ValueError, "reduction"),
        ErrorCase("reduction-none-object", (a, p, n), {"reduction": None}, ValueError, "reduction"),
        ErrorCase("reduction-before-margin", (a, p, n), {"reduction": "bad", "margin": 0}, ValueError, "reduction"),
        ErrorCase("legacy-size-average", (a, p, n), {"size_average": True}, TypeError, "size_average"),
        ErrorCase("legacy-reduce", (a, p, n), {"reduce": False}, TypeError, "reduce"),
        ErrorCase("positional-distance", (a, p, n, cosine_distance), {}, TypeError, "positional"),
        ErrorCase("margin-zero", (a, p, n), {"margin": 0}, ValueError, "margin"),
        ErrorCase("margin-before-rank", (a, p[0], n), {"margin": -1.0}, ValueError, "margin"),
        ErrorCase("rank", (a, p[0], n), {}, RuntimeError, "same number of dimensions"),
        ErrorCase("rank-user-distance", (a, p, n[0]), {"distance_function": cosine_distance}, RuntimeError, "same number"),
        ErrorCase("anchor-without-ndim", ([1.0], p, n), {}, AttributeError, "ndim"),
        ErrorCase("positive-batch", (a, make.normal(2, 4), n), {}, RuntimeError, "positive"),
        ErrorCase("negative-features", (a, p, make.normal(3, 5)), {}, RuntimeError, "negative"),
        ErrorCase("bool-inputs", (a > 0, p > 0, n > 0), {}, RuntimeError, "bool"),
        ErrorCase("complex-distance", (a, p, n), {"distance_function": _complex_distance}, NotImplementedError, "real"),
        ErrorCase(
            "complex-distance-swap", (a, p, n), {"distance_function": _complex_distance, "swap": True}, RuntimeError, "real"
        ),
        ErrorCase("number-distance", (a, p, n), {"distance_function": _number_distance}, TypeError, "distance_function"),
        ErrorCase("bool-distance", (a, p, n), {"distance_function": _bool_distance}, RuntimeError, "bool"),
        ErrorCase(
            "distances-do-not-broadcast",
            (a, p, make.normal(2, 4)),
            {"distance_function": _second_rows},
            RuntimeError,
            "distance",
        ),
    ]


def _td_empty(make: Maker) -> list[Sample]:
    return [
        Sample("empty", (make.normal(0, 5), make.normal(0, 5), make.normal(0, 5)), wrt=(0, 1, 2)),
        Sample("empty-swap", (make.normal(0, 5), make.normal(0, 5), make.normal(0, 5)), {"swap": True}, wrt=(0, 1, 2)),
        Sample("no-features", (make.normal(3, 0), make.normal(3, 0), make.normal(3, 0)), wrt=(0, 1, 2)),
        _user(
            Sample(
                "user-empty-squared-euclidean",
                (make.normal(0, 5), make.normal(0, 5), make.normal(0, 5)),
                {"distance_function": squared_euclidean, "swap": True},
                wrt=(0, 1, 2),
            )
        ),
    ]


_TRIPLET_CASES: list[LossCase] = [
    LossCase(
        "triplet_margin_loss",
        "TripletMarginLoss",
        samples=_tm_samples,
        errors=_tm_errors,
        empty=_tm_empty,
        forward_arity=3,
        notes="one node keeping the inputs and O(N) distances (torch keeps every difference "
        "vector); float16/bfloat16 computed in float32 and rounded once",
    ),
    LossCase(
        "triplet_margin_with_distance_loss",
        "TripletMarginWithDistanceLoss",
        samples=_td_samples,
        errors=_td_errors,
        empty=_td_empty,
        legacy=False,
        forward_arity=3,
        notes="the default distance is the fused hand-written Function; a user's distance "
        "function is called as given, its ops below one torchloss node (samples named user-*)",
    ),
]


# --------------------------------------------------------------------------------------------
# Connectionist temporal classification
#
# The samples hold logits; the generic tests call ``ctc_loss(log_softmax(z), ...)`` on both sides
# (LossCase.compose), the composition on which torch's gradient is the true one, so gradcheck,
# gradgradcheck, jvp and vmap(grad) see exact derivatives. Lengths come as tensors (int64,
# int32), lists and tuples; targets padded (int64, int32) and concatenated.


def _ctc_log_softmax(z: Tensor) -> Tensor:
    return z.log_softmax(-1)


def _ctc_samples(make: Maker) -> list[Sample]:
    T, N, C = 7, 3, 5

    def z(*shape):
        return make.normal(*shape, scale=1.5)

    padded = make.randint(1, C, N, 3)
    il, tl = torch.tensor([7, 5, 6]), torch.tensor([3, 2, 1])
    dev = make.device
    concat = torch.cat([padded[n, : int(tl[n])] for n in range(N)])
    repeated = torch.tensor([[2, 2, 3], [4, 4, 4], [1, 3, 1]], device=dev)
    impossible = torch.tensor([[1, 1, 1], [2, 3, 4], [1, 2, 0]], device=dev)
    blank_last = make.randint(0, C - 1, N, 3)
    return [
        Sample("padded", (z(T, N, C), padded, il.to(dev), tl.to(dev)), wrt=(0,)),
        Sample("concatenated", (z(T, N, C), concat, il.to(dev), tl.to(dev)), wrt=(0,)),
        Sample("lists", (z(T, N, C), padded, [7, 5, 6], [3, 2, 1]), wrt=(0,)),
        Sample("tuples-concatenated", (z(T, N, C), concat, (7, 5, 6), (3, 2, 1)), wrt=(0,)),
        Sample("int32", (z(T, N, C), padded.int(), il.int().to(dev), tl.int().to(dev)), wrt=(0,)),
        Sample("blank-last", (z(T, N, C), blank_last, il.to(dev), tl.to(dev)), {"blank": C - 1}, wrt=(0,)),
        Sample("blank-middle", (z(T, N, C), torch.where(padded == 2, 1, padded), il.to(dev), tl.to(dev)),
               {"blank": 2}, wrt=(0,)),
        Sample("repeated-labels", (z(T, N, C), repeated, il.to(dev), torch.tensor([3, 3, 3], device=dev)), wrt=(0,)),
        Sample("empty-targets", (z(T, N, C), padded, il.to(dev), torch.tensor([0, 2, 0], device=dev)), wrt=(0,)),
        Sample("zero-input-length", (z(T, N, C), padded, torch.tensor([7, 0, 0], device=dev),
                                     torch.tensor([3, 0, 0], device=dev)), wrt=(0,)),
        Sample("zero-infinity", (z(T, N, C), impossible, torch.tensor([4, 2, 7], device=dev),
                                 torch.tensor([3, 3, 2], device=dev)), {"zero_infinity": True}, wrt=(0,)),
        Sample("unbatched", (z(T, C), padded[0], torch.tensor(6, device=dev), torch.tensor(3, device=dev)), wrt=(0,)),
        Sample("unbatched-concatenated", (z(T, C), padded[0, :2], torch.tensor([7], device=dev),
                                          torch.tensor([2], device=dev)), wrt=(0,)),
        Sample("long-time", (z(24, 2, 4), make.randint(1, 4, 2, 6), torch.tensor([24, 19], device=dev),
                             torch.tensor([6, 4], device=dev)), wrt=(0,)),
    ]


def _ctc_errors(make: Maker) -> list[ErrorCase]:
    T, N, C = 5, 3, 4
    x = make.normal(T, N, C).log_softmax(-1)
    targets = make.randint(1, C, N, 4)
    il, tl = torch.tensor([5, 4, 5], device=make.device), torch.tensor([3, 2, 0], device=make.device)
    errors = [
        ErrorCase("bad-reduction", (x, targets, il, tl), {"reduction": "batchmean"}, ValueError, "reduction"),
        ErrorCase("integer-log-probs", (x.long(), targets, il, tl), {}, RuntimeError, "log_probs"),
        ErrorCase("float-lengths", (x, targets, il.double(), tl), {}, RuntimeError, "input_lengths"),
        ErrorCase("list-and-tensor-lengths", (x, targets, [5, 4, 5], tl), {}, TypeError, "input_lengths"),
        ErrorCase("float-blank", (x, targets, il, tl), {"blank": 1.0}, TypeError, "blank"),
        ErrorCase("blank-too-large", (x, targets, il, tl), {"blank": C}, RuntimeError, "blank"),
        ErrorCase("negative-blank", (x, targets, il, tl), {"blank": -1}, RuntimeError, "blank"),
        ErrorCase("input-lengths-size", (x, targets, il[:2], tl), {}, RuntimeError, "input_lengths"),
        ErrorCase("target-lengths-size", (x, targets, il, tl[:2]), {}, RuntimeError, "target_lengths"),
        ErrorCase("targets-batch", (x, targets[:2], il, tl), {}, RuntimeError, "targets"),
        ErrorCase("targets-rank-3", (x, targets.unsqueeze(0), il, tl), {}, RuntimeError, "targets"),
        ErrorCase("log-probs-rank-4", (x.unsqueeze(0), targets, il, tl), {}, RuntimeError, "log_probs"),
        ErrorCase("empty-batch", (x[:, :0], targets[:0], il[:0], tl[:0]), {}, RuntimeError, "log_probs"),
    ]
    if make.device.type == "cpu":
        errors += [
            ErrorCase("input-length-above-T", (x, targets, il + 1, tl), {}, RuntimeError, "input_lengths"),
            ErrorCase("negative-target-length", (x, targets, il, tl - 3), {}, RuntimeError, "target_lengths"),
            ErrorCase("target-length-above-S", (x, targets, il, torch.tensor([5, 0, 0])), {}, RuntimeError, "targets"),
            ErrorCase("concatenated-total", (x, targets.flatten()[:3], il, tl), {}, RuntimeError, "targets"),
        ]
    return errors


_CTC_CASES: list[LossCase] = [
    LossCase(
        "ctc_loss",
        "CTCLoss",
        samples=_ctc_samples,
        errors=_ctc_errors,
        legacy=False,
        torch_forward_ad=False,
        forward_arity=4,
        compose=_ctc_log_softmax,
        notes="log-space alpha/beta in one batched recursion; torch's gradient exp(x) - posterior, "
        "exact after log_softmax, with double backward and jvp (torch has neither); "
        "float16/bfloat16 computed in float32 (torch's CPU refuses them)",
    ),
]


CASES: list[LossCase] = (
    _REGRESSION_CASES
    + _BINARY_CASES
    + _PROBABILISTIC_CASES
    + _CLASSIFICATION_CASES
    + _MARGIN_CASES
    + _PAIR_CASES
    + _TRIPLET_CASES
    + _CTC_CASES
)

def get(name: str) -> LossCase:
    for case in CASES:
        if case.name == name or case.module == name:
            return case
    raise KeyError(name)

