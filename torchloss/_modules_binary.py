"""The binary losses' modules: ``BCELoss``, ``BCEWithLogitsLoss``, ``SoftMarginLoss``
(re-exported by :mod:`torchloss.modules`)."""

from __future__ import annotations

from torch import Tensor

from ._functional_binary import (
    binary_cross_entropy,
    binary_cross_entropy_with_logits,
    soft_margin_loss,
)
from .modules import _Loss, _WeightedLoss

__all__ = ["BCELoss", "BCEWithLogitsLoss", "SoftMarginLoss"]


class BCELoss(_WeightedLoss):
    r"""Binary cross entropy between probabilities ``input`` and ``target``, both in [0, 1].

    :math:`\ell_n = -w_n[y_n\max(\log x_n, -100) + (1-y_n)\max(\log(1-x_n), -100)]`, reduced by
    ``'mean'`` (over all elements; the weights do not enter the denominator), ``'sum'`` or
    ``'none'``. ``target`` must have the size and dtype of ``input``; ``weight`` (a buffer)
    broadcasts into that shape. Prefer :class:`BCEWithLogitsLoss` on logits. Drop-in for
    :class:`torch.nn.BCELoss`.
    """

    __constants__ = ["reduction"]

    def __init__(
        self, weight: Tensor | None = None, size_average=None, reduce=None, reduction: str = "mean"
    ) -> None:
        super().__init__(weight, size_average, reduce, reduction)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return binary_cross_entropy(input, target, weight=self.weight, reduction=self.reduction)


class BCEWithLogitsLoss(_Loss):
    r"""Binary cross entropy on logits, a numerically stable sigmoid + :class:`BCELoss`.

    :math:`\ell_n = -w_n[p\,y_n\log\sigma(x_n) + (1-y_n)\log\sigma(-x_n)]`, with ``weight``
    :math:`w` and ``pos_weight`` :math:`p` registered as buffers (in that order, as torch) and
    broadcast into the input shape; ``pos_weight`` of shape ``(C,)`` (or ``(C, 1, 1)`` for
    ``(N, C, H, W)``) weighs each class's positives. The result has the dtype of ``target``.
    Drop-in for :class:`torch.nn.BCEWithLogitsLoss`.
    """

    def __init__(
        self,
        weight: Tensor | None = None,
        size_average=None,
        reduce=None,
        reduction: str = "mean",
        pos_weight: Tensor | None = None,
    ) -> None:
        super().__init__(size_average, reduce, reduction)
        self.register_buffer("weight", weight)
        self.register_buffer("pos_weight", pos_weight)
        self.weight: Tensor | None
        self.pos_weight: Tensor | None

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return binary_cross_entropy_with_logits(
            input, target, self.weight, pos_weight=self.pos_weight, reduction=self.reduction
        )


class SoftMarginLoss(_Loss):
    r"""Two-class logistic loss :math:`\ell_n = \log(1 + e^{-y_n x_n})` for targets
    :math:`y_n \in \{-1, 1\}`; ``target`` broadcasts into the shape of ``input``. Computed
    without overflow (torch's gives ``inf`` once :math:`-yx \gtrsim 89` in float32). Drop-in for
    :class:`torch.nn.SoftMarginLoss`.
    """

    __constants__ = ["reduction"]

    def __init__(self, size_average=None, reduce=None, reduction: str = "mean") -> None:
        super().__init__(size_average, reduce, reduction)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return soft_margin_loss(input, target, reduction=self.reduction)
