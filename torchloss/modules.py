"""Loss modules, mirroring ``torch.nn``'s: thin wrappers whose ``forward`` is one functional call.

``_Loss`` stores ``reduction`` (translated from the legacy ``size_average``/``reduce`` pair, with
torch's warning, once at construction); ``_WeightedLoss`` adds a ``weight`` buffer, so it moves
with ``.to()`` and appears in ``state_dict`` only when given. Neither validates ``reduction`` at
construction: like torch, a bad value fails at ``forward``, and ``reduction`` may be changed later.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch
from torch import Tensor
from torch.nn import Module
from torch.nn.modules import module as _module
from typing_extensions import deprecated

from . import _reduction as R
from . import functional as F

__all__ = [
    "L1Loss",
    "MSELoss",
    "SmoothL1Loss",
    "HuberLoss",
    "SoftMarginLoss",
    "BCELoss",
    "BCEWithLogitsLoss",
    "PoissonNLLLoss",
    "GaussianNLLLoss",
    "KLDivLoss",
    "NLLLoss",
    "NLLLoss2d",
    "CrossEntropyLoss",
    "MultiMarginLoss",
    "MultiLabelMarginLoss",
    "MultiLabelSoftMarginLoss",
    "MarginRankingLoss",
    "HingeEmbeddingLoss",
    "CosineEmbeddingLoss",
    "TripletMarginLoss",
    "TripletMarginWithDistanceLoss",
    "CTCLoss",
    "LinearCrossEntropyLoss",
    "LinearCrossEntropyOptions",
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

# ============================================================================================
# Binary: BCE, BCEWithLogits, SoftMargin


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
        return F.binary_cross_entropy(input, target, weight=self.weight, reduction=self.reduction)


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
        return F.binary_cross_entropy_with_logits(
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
        return F.soft_margin_loss(input, target, reduction=self.reduction)

# ============================================================================================
# Likelihoods: PoissonNLL, GaussianNLL, KLDiv


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


# --------------------------------------------------------------------------------------------
# Classification


class NLLLoss(_WeightedLoss):
    r"""Negative log-likelihood of log-probabilities and class indices.

    :math:`\ell_n = -w_{y_n} x_{n,y_n}`, 0 where :math:`y_n` equals ``ignore_index``; ``'mean'``
    divides by the total weight of the non-ignored targets. Input ``(C)``, ``(N, C)`` or
    ``(N, C, d1, ..., dK)``; target ``()``, ``(N)`` or ``(N, d1, ..., dK)`` of int64 or uint8.
    ``weight``: a ``(C)`` buffer. Drop-in for :class:`torch.nn.NLLLoss`.
    """

    __constants__ = ["ignore_index", "reduction"]
    ignore_index: int

    def __init__(
        self,
        weight: Tensor | None = None,
        size_average=None,
        ignore_index: int = -100,
        reduce=None,
        reduction: str = "mean",
    ) -> None:
        super().__init__(weight, size_average, reduce, reduction)
        self.ignore_index = ignore_index

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.nll_loss(
            input, target, weight=self.weight, ignore_index=self.ignore_index, reduction=self.reduction
        )


@deprecated(
    "`NLLLoss2d` has been deprecated. "
    "Please use `NLLLoss` instead as a drop-in replacement and see "
    "https://pytorch.org/docs/main/nn.html#torch.nn.NLLLoss for more details.",
    category=FutureWarning,
)
class NLLLoss2d(NLLLoss):
    """Deprecated alias of :class:`NLLLoss` (constructing it warns, as torch's)."""

    def __init__(
        self,
        weight: Tensor | None = None,
        size_average=None,
        ignore_index: int = -100,
        reduce=None,
        reduction: str = "mean",
    ) -> None:
        super().__init__(weight, size_average, ignore_index, reduce, reduction)


class CrossEntropyLoss(_WeightedLoss):
    r"""Cross entropy of unnormalised logits and class indices or class probabilities.

    A target of the input's shape holds probabilities, any other holds class indices (torch's
    rule). Index targets: :math:`\ell = (1-\varepsilon) w_y(\mathrm{lse}(x) - x_y) +
    \frac{\varepsilon}{C}\sum_c w_c(\mathrm{lse}(x) - x_c)`, 0 at ``ignore_index``, ``'mean'``
    over the total target weight. Probabilities: :math:`\ell = \sum_c w_c t'_c (\mathrm{lse}(x) -
    x_c)` with :math:`t' = (1-\varepsilon)t + \varepsilon/C`, ``'mean'`` over positions. Shapes as
    :class:`NLLLoss`. Drop-in for :class:`torch.nn.CrossEntropyLoss`.
    """

    __constants__ = ["ignore_index", "reduction", "label_smoothing"]
    ignore_index: int
    label_smoothing: float

    def __init__(
        self,
        weight: Tensor | None = None,
        size_average=None,
        ignore_index: int = -100,
        reduce=None,
        reduction: str = "mean",
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__(weight, size_average, reduce, reduction)
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(
            input,
            target,
            weight=self.weight,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            label_smoothing=self.label_smoothing,
        )


# --------------------------------------------------------------------------------------------
# Multi-class margin


class MultiMarginLoss(_WeightedLoss):
    r"""Multi-class hinge loss between scores ``input`` ``(N, C)`` (or ``(C)``) and class indices
    ``target`` ``(N,)`` (or ``()``).

    :math:`\ell_n = \frac1C\sum_{i \ne y_n} w_{y_n}\max(0, \text{margin} - x_{n,y_n} + x_{n,i})^p`
    with ``p`` 1 or 2 and an optional 1-D ``weight`` buffer (one weight per class, applied by the
    target class), reduced by ``'mean'`` (over samples, default), ``'sum'`` or ``'none'``.
    Drop-in for :class:`torch.nn.MultiMarginLoss`; also supports half precision on the CPU,
    double backward and forward AD, and gives NaN/0 for an empty batch (torch: garbage).
    """

    __constants__ = ["p", "margin", "reduction"]
    margin: float
    p: int

    def __init__(
        self,
        p: int = 1,
        margin: float = 1.0,
        weight: Tensor | None = None,
        size_average=None,
        reduce=None,
        reduction: str = "mean",
    ) -> None:
        super().__init__(weight, size_average, reduce, reduction)
        if p != 1 and p != 2:
            raise ValueError("only p == 1 and p == 2 supported")
        if weight is not None and weight.dim() != 1:
            raise ValueError(
                f"MultiMarginLoss: expected weight to be None or 1D tensor, got {weight.dim()}D instead"
            )
        self.p = p
        self.margin = margin

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.multi_margin_loss(
            input, target, p=self.p, margin=self.margin, weight=self.weight, reduction=self.reduction
        )


class MultiLabelMarginLoss(_Loss):
    r"""Multi-label hinge loss: each row of ``target`` (int64, the shape of ``input``, ``(N, C)``
    or ``(C)``) lists the label classes up to the first ``-1``.

    :math:`\ell_n = \frac1C\sum_{j \in J_n}\sum_{i \notin J_n}\max(0, 1 - x_{n,j} + x_{n,i})`,
    reduced by ``'mean'`` (over samples, default), ``'sum'`` or ``'none'``. Drop-in for
    :class:`torch.nn.MultiLabelMarginLoss`; also supports half precision on the CPU, double
    backward and forward AD, and gives NaN/0 for an empty batch (torch: garbage).
    """

    __constants__ = ["reduction"]

    def __init__(self, size_average=None, reduce=None, reduction: str = "mean") -> None:
        super().__init__(size_average, reduce, reduction)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.multilabel_margin_loss(input, target, reduction=self.reduction)


class MultiLabelSoftMarginLoss(_WeightedLoss):
    r"""Multi-label one-versus-all logistic loss over the classes (last dimension) of ``input``.

    :math:`\ell_n = -\frac1C\sum_c w_c[y_{n,c}\log\sigma(x_{n,c}) + (1-y_{n,c})\log\sigma(-x_{n,c})]`,
    computed without overflow, with ``target`` and the ``weight`` buffer broadcast against
    ``input``; reduced by ``'mean'`` (default), ``'sum'`` or ``'none'``. Drop-in for
    :class:`torch.nn.MultiLabelSoftMarginLoss`.
    """

    __constants__ = ["reduction"]

    def __init__(
        self, weight: Tensor | None = None, size_average=None, reduce=None, reduction: str = "mean"
    ) -> None:
        super().__init__(weight, size_average, reduce, reduction)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.multilabel_soft_margin_loss(input, target, weight=self.weight, reduction=self.reduction)


# --------------------------------------------------------------------------------------------
# Pair


class MarginRankingLoss(_Loss):
    r"""Ranking loss of two scores ``input1``, ``input2`` and a target :math:`y \in \{1, -1\}`
    saying which should rank higher.

    :math:`\ell_n = \max(0, -y_n(x_{1,n} - x_{2,n}) + \text{margin})`, reduced by ``'mean'``
    (default), ``'sum'`` or ``'none'``. The three tensors have the same number of dimensions
    (``(N)`` or ``()``, any rank works) and broadcast together; all three are differentiable.
    Drop-in for :class:`torch.nn.MarginRankingLoss`.
    """

    __constants__: ClassVar[list[str]] = ["margin", "reduction"]
    margin: float

    def __init__(self, margin: float = 0.0, size_average=None, reduce=None, reduction: str = "mean") -> None:
        super().__init__(size_average, reduce, reduction)
        self.margin = margin

    def forward(self, input1: Tensor, input2: Tensor, target: Tensor) -> Tensor:
        return F.margin_ranking_loss(input1, input2, target, margin=self.margin, reduction=self.reduction)


class HingeEmbeddingLoss(_Loss):
    r"""Hinge embedding loss of an input :math:`x` (typically a distance between a pair) and a
    target :math:`y \in \{1, -1\}` (similar or dissimilar pair).

    :math:`\ell_n = x_n` for :math:`y_n = 1`, :math:`\max(0, \text{margin} - x_n)` for
    :math:`y_n = -1` (both for any other target value, as torch), reduced by ``'mean'``
    (default), ``'sum'`` or ``'none'``; the target broadcasts with the input. Drop-in for
    :class:`torch.nn.HingeEmbeddingLoss`.
    """

    __constants__: ClassVar[list[str]] = ["margin", "reduction"]
    margin: float

    def __init__(self, margin: float = 1.0, size_average=None, reduce=None, reduction: str = "mean") -> None:
        super().__init__(size_average, reduce, reduction)
        self.margin = margin

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.hinge_embedding_loss(input, target, margin=self.margin, reduction=self.reduction)


class CosineEmbeddingLoss(_Loss):
    r"""Cosine embedding loss of two batches of vectors ``(N, D)`` (or ``(D)``) and targets
    :math:`y \in \{1, -1\}` (``(N)`` or ``()``).

    :math:`\ell_n = 1 - \cos(x_{1,n}, x_{2,n})` for :math:`y_n = 1`,
    :math:`\max(0, \cos(x_{1,n}, x_{2,n}) - \text{margin})` for :math:`y_n = -1` (0 for any other
    target value), with :math:`10^{-12}` added to each squared norm, reduced by ``'mean'``
    (default), ``'sum'`` or ``'none'``. Drop-in for :class:`torch.nn.CosineEmbeddingLoss`; its
    graph is one node that keeps the inputs and three numbers per sample.
    """

    __constants__: ClassVar[list[str]] = ["margin", "reduction"]
    margin: float

    def __init__(self, margin: float = 0.0, size_average=None, reduce=None, reduction: str = "mean") -> None:
        super().__init__(size_average, reduce, reduction)
        self.margin = margin

    def forward(self, input1: Tensor, input2: Tensor, target: Tensor) -> Tensor:
        return F.cosine_embedding_loss(input1, input2, target, margin=self.margin, reduction=self.reduction)


# --------------------------------------------------------------------------------------------
# Triplet


class TripletMarginLoss(_Loss):
    r"""Triplet margin loss of anchors, positives and negatives ``(N, D)`` (or ``(D)``).

    :math:`\ell_n = \max(0, \text{margin} + d(a_n, p_n) - d(a_n, n_n))` with the pairwise
    distance :math:`d(x, y) = \lVert x - y + \text{eps} \rVert_p` (``eps`` added to the difference
    vector, as torch); with ``swap``, :math:`d(a_n, n_n)` becomes
    :math:`\min(d(a_n, n_n), d(p_n, n_n))`. Reduced by ``'mean'`` (default), ``'sum'`` or
    ``'none'``. ``margin`` must be positive; ``p`` is any float (``inf``, negative and 0
    included, as torch). Drop-in for :class:`torch.nn.TripletMarginLoss`; its graph is one node
    that keeps the inputs and the per-triplet distances (torch keeps every difference vector).
    """

    __constants__ = ["margin", "p", "eps", "swap", "reduction"]
    margin: float
    p: float
    eps: float
    swap: bool

    def __init__(
        self,
        margin: float = 1.0,
        p: float = 2.0,
        eps: float = 1e-6,
        swap: bool = False,
        size_average=None,
        reduce=None,
        reduction: str = "mean",
    ) -> None:
        super().__init__(size_average, reduce, reduction)
        if margin <= 0:
            raise ValueError(
                f"TripletMarginLoss: expected margin to be greater than 0, got {margin} instead"
            )
        self.margin = margin
        self.p = p
        self.eps = eps
        self.swap = swap

    def forward(self, anchor: Tensor, positive: Tensor, negative: Tensor) -> Tensor:
        return F.triplet_margin_loss(
            anchor,
            positive,
            negative,
            margin=self.margin,
            p=self.p,
            eps=self.eps,
            swap=self.swap,
            reduction=self.reduction,
        )


class PairwiseDistance(torch.nn.PairwiseDistance):
    r""":class:`torch.nn.PairwiseDistance`, as the default distance of
    :class:`TripletMarginWithDistanceLoss`.

    Calling it is calling torch's module. Passed as ``distance_function`` (which is what
    ``TripletMarginWithDistanceLoss`` does when none is given), the loss recognises it and
    computes :math:`\lVert x - y + \text{eps} \rVert_p` with its ``p`` (``norm``) and ``eps`` in
    torchloss's fused, hand-differentiated Function instead of calling it: the same values, one
    graph node, much less memory kept for backward. It is called as a module (as torch would)
    when it has forward hooks, ``keepdim=True`` or is a subclass.
    """

    def _triplet_fused_distance(self) -> tuple[float, float] | None:
        """``(p, eps)`` when the loss may compute this distance itself, else ``None``."""
        if type(self) is not PairwiseDistance or self.keepdim:
            return None
        if self._forward_hooks or self._forward_pre_hooks:
            return None
        if _module._global_forward_hooks or _module._global_forward_pre_hooks:
            return None
        return float(self.norm), float(self.eps)


class TripletMarginWithDistanceLoss(_Loss):
    r"""Triplet margin loss with a custom ``distance_function`` (keyword-only constructor).

    :math:`\ell_n = \max(0, \text{margin} + f(a_n, p_n) - f(a_n, n_n))`, with ``swap`` using
    :math:`\min(f(a_n, n_n), f(p_n, n_n))`. ``distance_function`` defaults to a
    :class:`PairwiseDistance` (p = 2, eps = 1e-6, as torch's default ``nn.PairwiseDistance()``),
    which torchloss computes in one hand-differentiated node; any other callable is called as
    given and differentiated by autograd, with margin, swap, hinge and reduction in one torchloss
    node on top. ``margin`` must be positive. Reduced by ``'mean'`` (default), ``'sum'`` or
    ``'none'``; no legacy arguments. Drop-in for :class:`torch.nn.TripletMarginWithDistanceLoss`.
    """

    __constants__ = ["margin", "swap", "reduction"]
    margin: float
    swap: bool

    def __init__(
        self,
        *,
        distance_function: Callable[[Tensor, Tensor], Tensor] | None = None,
        margin: float = 1.0,
        swap: bool = False,
        reduction: str = "mean",
    ) -> None:
        super().__init__(size_average=None, reduce=None, reduction=reduction)
        if margin <= 0:
            raise ValueError(
                f"TripletMarginWithDistanceLoss: expected margin to be greater than 0, got {margin} instead"
            )
        self.distance_function: Callable[[Tensor, Tensor], Tensor] | None = (
            distance_function if distance_function is not None else PairwiseDistance()
        )
        self.margin = margin
        self.swap = swap

    def forward(self, anchor: Tensor, positive: Tensor, negative: Tensor) -> Tensor:
        return F.triplet_margin_with_distance_loss(
            anchor,
            positive,
            negative,
            distance_function=self.distance_function,
            margin=self.margin,
            swap=self.swap,
            reduction=self.reduction,
        )


class CTCLoss(_Loss):
    r"""The connectionist temporal classification loss; see :func:`ctc_loss`.

    ``CTCLoss(blank=0, reduction='mean', zero_infinity=False)``, called as
    ``loss(log_probs, targets, input_lengths, target_lengths)``.
    """

    __constants__ = ["blank", "reduction"]

    def __init__(self, blank: int = 0, reduction: str = "mean", zero_infinity: bool = False) -> None:
        super().__init__(reduction=reduction)
        self.blank = blank
        self.zero_infinity = zero_infinity

    def forward(self, log_probs: Tensor, targets: Tensor, input_lengths, target_lengths) -> Tensor:
        return F.ctc_loss(
            log_probs, targets, input_lengths, target_lengths, self.blank, self.reduction, self.zero_infinity
        )


# --------------------------------------------------------------------------------------------
# Linear cross entropy (a linear layer and its cross entropy, streamed: docs/linear.md)

from .functional.linear import LinearCrossEntropyOptions


class LinearCrossEntropyLoss(_WeightedLoss):
    r"""Cross entropy of ``self.linear``'s logits, never formed whole; see
    :func:`torchloss.functional.linear_cross_entropy` and docs/linear.md.

    Drop-in for :class:`torch.nn.LinearCrossEntropyLoss`: the same constructor, the flat
    ``linear.weight`` ``(C * prod(out_features), in_features)`` and ``linear.bias`` parameters
    (reshaped to ``(C, *out_features, ...)`` in :meth:`forward`), the ``weight`` buffer, the
    same ``repr``, so state dicts move between the two both ways. ``options`` takes torch's
    ``LinearCrossEntropyOptions`` or torchloss's own (a memory budget).
    """

    __constants__ = ["num_classes", "out_features", "reduction", "ignore_index", "label_smoothing"]
    num_classes: int
    out_features: tuple
    ignore_index: int | None
    label_smoothing: float

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        *,
        out_features: tuple = (),
        bias: bool = False,
        device=None,
        dtype=None,
        reduction: str = "mean",
        weight: Tensor | None = None,
        ignore_index: int | None = None,
        label_smoothing: float = 0.0,
        options=None,
    ) -> None:
        if weight is not None and weight.shape != (num_classes,):
            raise RuntimeError(f"expected weight shape to be {(num_classes,)}, got {tuple(weight.shape)}")
        if label_smoothing < 0 or label_smoothing > 1.0:
            raise RuntimeError(f"expected label_smoothing to be in range [0, 1], got {label_smoothing}")
        super().__init__(weight=weight, size_average=None, reduce=None, reduction=reduction)
        self.num_classes = num_classes
        self.out_features = out_features
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing
        total = num_classes
        for d in out_features:
            total *= d
        self.linear = torch.nn.Linear(in_features, total, bias=bias, device=device, dtype=dtype)
        self.options = options

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        linear_weight = self.linear.weight.reshape((self.num_classes, *self.out_features, self.linear.in_features))
        linear_bias = (
            self.linear.bias.reshape((self.num_classes, *self.out_features)) if self.linear.bias is not None else None
        )
        return F.linear_cross_entropy(
            input,
            linear_weight,
            target,
            linear_bias=linear_bias,
            weight=self.weight,
            reduction=self.reduction,
            ignore_index=self.ignore_index,
            label_smoothing=self.label_smoothing,
            options=self.options,
        )

    def extra_repr(self) -> str:
        return (
            f"in_features={self.linear.in_features},"
            f" num_classes={self.num_classes},"
            f" out_features={self.out_features},"
            f" bias={self.linear.bias is not None},"
            f" reduction={self.reduction},"
            f" ignore_index={self.ignore_index},"
            f" label_smoothing={self.label_smoothing},"
            f" options={self.options}"
        )
