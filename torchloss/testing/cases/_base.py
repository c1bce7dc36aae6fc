"""What every family's case-table entries are made of: Sample, ErrorCase, LossCase, Maker."""

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
    # what torchloss is compared with: ``reference()`` returns torch's functional (default
    # ``torch.nn.functional.<name>``) and ``reference_module()`` torch's module class (default
    # ``torch.nn.<module>``); either may raise ``LookupError`` (a torch too old to have the loss:
    # the generic tests then skip the case's comparisons, never torchloss's own checks)
    reference: Callable[[], Callable] | None = None
    reference_module: Callable[[], type] | None = None
    # torchloss's side of the comparison (default ``torchloss.functional.<name>``): a loss whose
    # functional takes nested arguments (AdaptiveLogSoftmaxWithLoss's tail weight pairs) gives a
    # flat wrapper here, so that every differentiable tensor is a slot of ``args``
    functional: Callable[[], Callable] | None = None
    notes: str = ""

    def torch_functional(self) -> Callable:
        """torch's function for this loss, or ``LookupError`` naming what is missing."""
        if self.reference is not None:
            return self.reference()
        import torch.nn.functional as TF

        ref = getattr(TF, self.name, None)
        if ref is None:
            raise LookupError(f"torch.nn.functional has no {self.name!r} (torch {torch.__version__})")
        return ref

    def torchloss_functional(self) -> Callable:
        """torchloss's function for this loss (``functional()`` or ``torchloss.functional.<name>``),
        or ``LookupError``."""
        if self.functional is not None:
            return self.functional()
        import torchloss.functional as F

        ours = getattr(F, self.name, None)
        if ours is None:
            raise LookupError(f"torchloss.functional has no {self.name!r}")
        return ours

    def torch_module(self) -> type:
        """torch's module class for this loss, or ``LookupError``."""
        if self.reference_module is not None:
            return self.reference_module()
        cls = getattr(torch.nn, self.module, None)
        if cls is None:
            raise LookupError(f"torch.nn has no {self.module!r} (torch {torch.__version__})")
        return cls

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


