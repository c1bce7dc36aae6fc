"""Likelihood-based loss modules: PoissonNLLLoss, GaussianNLLLoss, KLDivLoss."""

from __future__ import annotations

from torch import Tensor

from . import functional as F
from .modules import _Loss

__all__ = ["PoissonNLLLoss", "GaussianNLLLoss", "KLDivLoss"]


class PoissonNLLLoss(_Loss):
    r"""Negative log-likelihood of a Poisson-distributed target.

    :math:`\ell_n = e^{x_n} - y_n x_n` (``log_input=True``, the input is the log-rate) or
    :math:`\ell_n = x_n - y_n\log(x_n + \text{eps})` (``log_input=False``, the input is the rate);
    ``full=True`` adds the Stirling approximation of :math:`\log(y_n!)` for targets above 1.
    Reduced by ``'mean'`` (default), ``'sum'`` or ``'none'``; input and target broadcast.
    Drop-in for :class:`torch.nn.PoissonNLLLoss` (whose ``forward`` names its first argument
    ``log_input`` too).
    """

    __constants__ = ["log_input", "full", "eps", "reduction"]
    log_input: bool
    full: bool
    eps: float

    def __init__(
        self,
        log_input: bool = True,
        full: bool = False,
        size_average=None,
        eps: float = 1e-8,
        reduce=None,
        reduction: str = "mean",
    ) -> None:
        super().__init__(size_average, reduce, reduction)
        self.log_input = log_input
        self.full = full
        self.eps = eps

    def forward(self, log_input: Tensor, target: Tensor) -> Tensor:
        return F.poisson_nll_loss(
            log_input,
            target,
            log_input=self.log_input,
            full=self.full,
            eps=self.eps,
            reduction=self.reduction,
        )


class GaussianNLLLoss(_Loss):
    r"""Negative log-likelihood of a target under :math:`\mathcal N(\text{input}, \text{var})`.

    :math:`\ell_n = \tfrac12\big(\log v_n + (x_n - y_n)^2 / v_n\big)` with
    :math:`v_n = \max(\text{var}_n, \text{eps})` (the clamp is invisible to autograd), plus
    :math:`\tfrac12\log 2\pi` if ``full``. ``var`` has the input's shape, or lacks its last
    dimension, or has one dimension of size 1, or is a Python float. Keyword-only constructor and
    no legacy arguments, as :class:`torch.nn.GaussianNLLLoss`.
    """

    __constants__ = ["full", "eps", "reduction"]
    full: bool
    eps: float

    def __init__(self, *, full: bool = False, eps: float = 1e-6, reduction: str = "mean") -> None:
        super().__init__(None, None, reduction)
        self.full = full
        self.eps = eps

    def forward(self, input: Tensor, target: Tensor, var: Tensor | float) -> Tensor:
        return F.gaussian_nll_loss(input, target, var, full=self.full, eps=self.eps, reduction=self.reduction)


class KLDivLoss(_Loss):
    r"""Kullback-Leibler divergence of ``target`` from ``input`` (given as log-probabilities).

    :math:`\ell_n = y_n(\log y_n - x_n)`, or :math:`e^{y_n}(y_n - x_n)` with ``log_target=True``.
    ``reduction='batchmean'`` (sum / batch size) is the true KL divergence; ``'mean'`` (default)
    divides by the number of elements and warns, as torch. Drop-in for :class:`torch.nn.KLDivLoss`.
    """

    __constants__ = ["reduction"]

    def __init__(
        self, size_average=None, reduce=None, reduction: str = "mean", log_target: bool = False
    ) -> None:
        super().__init__(size_average, reduce, reduction)
        self.log_target = log_target

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.kl_div(input, target, reduction=self.reduction, log_target=self.log_target)
