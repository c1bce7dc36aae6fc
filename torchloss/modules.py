"""Loss modules, mirroring ``torch.nn``'s: thin wrappers whose ``forward`` is one functional call.

``_Loss`` stores ``reduction`` (translated from the legacy ``size_average``/``reduce`` pair, with
torch's warning, once at construction); ``_WeightedLoss`` adds a ``weight`` buffer, so it moves
with ``.to()`` and appears in ``state_dict`` only when given. Neither validates ``reduction`` at
construction: like torch, a bad value fails at ``forward``, and ``reduction`` may be changed later.
"""

from __future__ import annotations

from torch import Tensor
from torch.nn import Module

from . import _reduction as R
from . import functional as F

__all__ = [
    "L1Loss",
    "MSELoss",
    "SmoothL1Loss",
    "HuberLoss",
]


class _Loss(Module):
    reduction: str

    def __init__(self, size_average=None, reduce=None, reduction: str = "mean") -> None:
        super().__init__()
        if size_average is not None or reduce is not None:
            self.reduction = R.legacy_get_string(size_average, reduce)
        else:
            self.reduction = reduction


class _WeightedLoss(_Loss):
    def __init__(
        self, weight: Tensor | None = None, size_average=None, reduce=None, reduction: str = "mean"
    ) -> None:
        super().__init__(size_average, reduce, reduction)
        self.register_buffer("weight", weight)
        self.weight: Tensor | None


class L1Loss(_Loss):
    r"""Mean absolute error between each element of ``input`` and ``target``.

    :math:`\ell_n = |x_n - y_n|`, reduced by ``'mean'`` (default), ``'sum'`` or ``'none'``.
    Shapes: any; ``target`` broadcasts with a warning when its size differs. Drop-in for
    :class:`torch.nn.L1Loss`.
    """

    __constants__ = ["reduction"]

    def __init__(self, size_average=None, reduce=None, reduction: str = "mean") -> None:
        super().__init__(size_average, reduce, reduction)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.l1_loss(input, target, reduction=self.reduction)


class MSELoss(_Loss):
    r"""Mean squared error :math:`\ell_n = (x_n - y_n)^2`. Drop-in for :class:`torch.nn.MSELoss`."""

    __constants__ = ["reduction"]

    def __init__(self, size_average=None, reduce=None, reduction: str = "mean") -> None:
        super().__init__(size_average, reduce, reduction)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.mse_loss(input, target, reduction=self.reduction)


class SmoothL1Loss(_Loss):
    r"""Smooth L1 loss: quadratic below ``beta``, linear above. Drop-in for
    :class:`torch.nn.SmoothL1Loss`; ``beta = 0`` is exactly :class:`L1Loss`.
    """

    __constants__ = ["reduction"]

    def __init__(self, size_average=None, reduce=None, reduction: str = "mean", beta: float = 1.0) -> None:
        super().__init__(size_average, reduce, reduction)
        self.beta = beta

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.smooth_l1_loss(input, target, reduction=self.reduction, beta=self.beta)


class HuberLoss(_Loss):
    r"""Huber loss: quadratic below ``delta``, linear (slope ``delta``) above. Drop-in for
    :class:`torch.nn.HuberLoss` (no legacy arguments).
    """

    __constants__ = ["reduction", "delta"]

    def __init__(self, reduction: str = "mean", delta: float = 1.0) -> None:
        if not isinstance(delta, (float, int)):
            raise TypeError(f"delta must be a float or int, got: {type(delta)}")
        super().__init__(reduction=reduction)
        self.delta = delta

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.huber_loss(input, target, reduction=self.reduction, delta=self.delta)


# Staged families (each adds its names to __all__).
from ._modules_binary import *  # noqa: E402,F401,F403
from ._modules_binary import __all__ as _binary_all  # noqa: E402
from ._modules_probabilistic import *  # noqa: E402,F401,F403
from ._modules_probabilistic import __all__ as _probabilistic_all  # noqa: E402

__all__ += _binary_all + _probabilistic_all
