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

from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import Tensor

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


CASES: list[LossCase] = [
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


def get(name: str) -> LossCase:
    for case in CASES:
        if case.name == name or case.module == name:
            return case
    raise KeyError(name)


# Staged families.
from ._cases_binary import CASES as _binary  # noqa: E402
from ._cases_probabilistic import CASES as _probabilistic  # noqa: E402

CASES += _binary + _probabilistic
