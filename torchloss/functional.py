"""The public loss functions, mirroring ``torch.nn.functional``.

Each function validates its arguments in the order torch does (so the same bad call raises the
same exception type first), translates the legacy ``size_average``/``reduce`` pair, and calls one
hand-differentiated ``torch.autograd.Function`` from :mod:`torchloss._autograd`; the reduction
happens inside that Function, so the autograd graph of a loss is a single torchloss node.
"""

from __future__ import annotations

import math
import numbers
import operator
import warnings
from collections.abc import Callable

import torch
from torch import Tensor

from . import _native as native
from . import _reduction as R
from ._autograd._base import Dispatch, broadcast_shape, result_type
from ._autograd.binary import BCELossFunction, BCEWithLogitsLossFunction, SoftMarginLossFunction
from ._autograd.ctc import CTCLossFunction
from ._autograd.classification import (
    CrossEntropyLossFunction,
    CrossEntropyPlainFunction,
    CrossEntropyProbsLossFunction,
    NLLLossFunction,
    NLLLossPlainFunction,
)
from ._autograd.pair import (
    CosineEmbeddingLossFunction,
    HingeEmbeddingLossFunction,
    MarginRankingLossFunction,
)
from ._autograd.triplet import TripletDistanceHingeFunction, TripletMarginLossFunction
from ._autograd.margin import (
    MultiLabelMarginLossFunction,
    MultiLabelSoftMarginLossFunction,
    MultiMarginLossFunction,
)
from ._autograd.probabilistic import (
    GaussianNLLLossFunction,
    KLDivLossFunction,
    PoissonNLLLossFunction,
)
from ._autograd.regression import (
    MEAN_BY_WEIGHT,
    HuberLossFunction,
    L1LossFunction,
    MSELossFunction,
    SmoothL1LossFunction,
)

__all__ = [
    "l1_loss",
    "mse_loss",
    "smooth_l1_loss",
    "huber_loss",
    "soft_margin_loss",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "poisson_nll_loss",
    "gaussian_nll_loss",
    "kl_div",
    "nll_loss",
    "cross_entropy",
    "multi_margin_loss",
    "multilabel_margin_loss",
    "multilabel_soft_margin_loss",
    "margin_ranking_loss",
    "hinge_embedding_loss",
    "cosine_embedding_loss",
    "triplet_margin_loss",
    "triplet_margin_with_distance_loss",
    "ctc_loss",
]

_l1 = Dispatch(L1LossFunction)
_mse = Dispatch(MSELossFunction)
_smooth_l1 = Dispatch(SmoothL1LossFunction)
_huber = Dispatch(HuberLossFunction)

_SIZE_WARNING = (
    "Using a target size ({}) that is different to the input size ({}). This will likely lead to "
    "incorrect results due to broadcasting. Please ensure they have the same size."
)
_WEIGHTED_REDUCTIONS = {"none": R.NONE, "sum": R.SUM}


def _warn_size(input: Tensor, target: Tensor) -> None:
    if target.size() != input.size():
        warnings.warn(_SIZE_WARNING.format(target.size(), input.size()), stacklevel=3)


def _check_broadcast(input: Tensor, target: Tensor) -> None:
    # torch broadcasts the pair up front; doing the shape arithmetic here gives the same
    # RuntimeError for incompatible shapes without creating expanded views in the graph.
    broadcast_shape(input.shape, target.shape)


def _weighted_reduction(reduction: str, weight: Tensor, input: Tensor, mean_code: int) -> int:
    """Reduction code of the Python-weighted path of l1/mse/huber (torch validates it there)."""
    if weight.size() != input.size():
        raise ValueError("Weights and input must have the same size.")
    if reduction == "mean":
        return mean_code
    code = _WEIGHTED_REDUCTIONS.get(reduction)
    if code is None:
        raise ValueError(
            f"Invalid reduction mode: {reduction}. Expected one of 'none', 'mean', 'sum'."
        )
    return code


def _require_floating(name: str, input: Tensor, target: Tensor) -> None:
    # input and target are broadcast against each other first, so their dtypes promote plainly
    dtype = torch.promote_types(input.dtype, target.dtype)
    if not dtype.is_floating_point:
        raise NotImplementedError(
            f"{name}: expected floating-point input and target, got {_name(dtype)} "
            f"(input {_name(input)}, target {_name(target)})"
        )


def _name(t: Tensor | torch.dtype) -> str:
    """``'float32'`` for a float32 tensor or dtype: dtype names for error messages."""
    return str(getattr(t, "dtype", t)).replace("torch.", "")


# --------------------------------------------------------------------------------------------
# Regression: L1, MSE, SmoothL1, Huber


def l1_loss(
    input: Tensor,
    target: Tensor,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    weight: Tensor | None = None,
) -> Tensor:
    r"""Mean absolute error :math:`|x - y|`; see :class:`torchloss.L1Loss`.

    With ``weight`` (same size as ``input``) the element-wise loss is :math:`w|x-y|` and
    ``'mean'`` divides by :math:`\sum w`, as in torch.
    """
    same = input.shape == target.shape  # the usual call: no warning, nothing to broadcast
    if not same:
        _warn_size(input, target)
    if size_average is not None or reduce is not None:
        reduction = R.legacy_get_string(size_average, reduce)
    if not same:
        _check_broadcast(input, target)
    if weight is not None:
        code = _weighted_reduction(reduction, weight, input, MEAN_BY_WEIGHT)
    else:
        code = R.get_enum(reduction)
    return _l1(input, target, weight, code, _l1_keep_sign(input, target, weight))[0]


def _l1_keep_sign(input: Tensor, target: Tensor, weight: Tensor | None) -> bool:
    # the usual training call (real, unweighted, something requires grad): the Function keeps
    # the int8 sign of x - y for backward instead of both inputs (see L1LossFunction)
    return (
        weight is None
        and (input.requires_grad or target.requires_grad)
        and torch.is_grad_enabled()
        and not (input.is_complex() or target.is_complex())
    )


def mse_loss(
    input: Tensor,
    target: Tensor,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    weight: Tensor | None = None,
) -> Tensor:
    r"""Mean squared error :math:`(x - y)^2`; see :class:`torchloss.MSELoss`.

    With ``weight`` (same size as ``input``) the element-wise loss is :math:`w(x-y)^2` and
    ``'mean'`` divides by :math:`\sum w`, as in torch.
    """
    same = input.shape == target.shape
    if not same:
        _warn_size(input, target)
    if size_average is not None or reduce is not None:
        reduction = R.legacy_get_string(size_average, reduce)
    if not same:
        _check_broadcast(input, target)
    if weight is not None:
        code = _weighted_reduction(reduction, weight, input, MEAN_BY_WEIGHT)
    else:
        code = R.get_enum(reduction)
    if not (input.dtype == target.dtype and input.dtype.is_floating_point):
        _require_floating("mse_loss", input, target)
    return _mse(input, target, weight, code)


def smooth_l1_loss(
    input: Tensor,
    target: Tensor,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    beta: float = 1.0,
) -> Tensor:
    r"""Smooth L1 loss: :math:`\tfrac12 d^2/\beta` for :math:`|d| < \beta`, else
    :math:`|d| - \tfrac12\beta`; ``beta == 0`` is exactly L1. See :class:`torchloss.SmoothL1Loss`.
    """
    same = input.shape == target.shape
    if not same:
        _warn_size(input, target)
    if size_average is not None or reduce is not None:
        reduction = R.legacy_get_string(size_average, reduce)
    if not same:
        _check_broadcast(input, target)
    code = R.get_enum(reduction)
    if beta == 0.0:
        return _l1(input, target, None, code, _l1_keep_sign(input, target, None))[0]
    if beta < 0:
        raise RuntimeError(
            f"smooth_l1_loss does not support negative values for beta (got beta={beta})."
        )
    if not (input.dtype == target.dtype and input.dtype.is_floating_point):
        _require_floating("smooth_l1_loss", input, target)
    if native.module is not None and beta > 0 and _regression_native(input, target):  # (not NaN)
        return native.module.smooth_l1_loss(input, target, code, float(beta))
    return _smooth_l1(input, target, code, float(beta))


def huber_loss(
    input: Tensor,
    target: Tensor,
    reduction: str = "mean",
    delta: float = 1.0,
    weight: Tensor | None = None,
) -> Tensor:
    r"""Huber loss: :math:`\tfrac12 d^2` for :math:`|d| < \delta`, else
    :math:`\delta(|d| - \tfrac12\delta)`; see :class:`torchloss.HuberLoss`.

    With ``weight`` (same size as ``input``) the element-wise loss is multiplied by it and
    ``'mean'`` still divides by the element count (torch's rule, unlike L1/MSE).
    """
    if input.shape != target.shape:
        _warn_size(input, target)
        _check_broadcast(input, target)
    if weight is not None:
        code = _weighted_reduction(reduction, weight, input, R.MEAN)
    else:
        code = R.get_enum(reduction)
    if delta <= 0:
        raise RuntimeError(
            f"huber_loss does not support non-positive values for delta (got delta={delta})."
        )
    result = input.dtype if input.dtype == target.dtype else torch.promote_types(input.dtype, target.dtype)
    if not (result.is_floating_point and input.dtype.is_floating_point):
        pair = f"input {_name(input)}, target {_name(target)}"
        if not torch.can_cast(result, input.dtype):
            # Huber's result has the dtype of input (torch's rule), which cannot hold this one.
            raise RuntimeError(
                f"huber_loss: the loss of {pair} is {_name(result)}, which cannot be cast "
                f"to the dtype of input"
            )
        raise NotImplementedError(f"huber_loss: expected floating-point input and target, got {pair}")
    if weight is None and native.module is not None and delta > 0 and _regression_native(input, target):
        return native.module.huber_loss(input, target, code, float(delta))  # (delta > 0: not NaN)
    return _huber(input, target, weight, code, float(delta))


# The native kernels of SmoothL1 and Huber (csrc/regression.cpp) take a contiguous float32/float64
# pair of one shape and dtype (Huber without weight; SmoothL1 with beta > 0, beta == 0 being L1);
# the reference they fall back on for double backward has the kernels' arguments.
_REGRESSION_NATIVE_DTYPES = (torch.float32, torch.float64)
native.REFERENCES["huber_loss"] = lambda t, s: HuberLossFunction.apply(t[0], t[1], None, int(s[0]), s[1])
native.REFERENCES["smooth_l1_loss"] = lambda t, s: SmoothL1LossFunction.apply(t[0], t[1], int(s[0]), s[1])


def _regression_native(input: Tensor, target: Tensor) -> bool:
    return (
        input.dtype in _REGRESSION_NATIVE_DTYPES
        and input.dtype == target.dtype
        and input.shape == target.shape
        and input.is_contiguous()
        and target.is_contiguous()
        and native.eager(input, target)
    )


# ============================================================================================
# Binary: BCE, BCEWithLogits, SoftMargin


# Module-global Dispatch objects: the Function, or its jvp-less twin under torch.compile.
_bce = Dispatch(BCELossFunction)
_bce_logits = Dispatch(BCEWithLogitsLossFunction)
_soft_margin = Dispatch(SoftMarginLossFunction)


# --------------------------------------------------------------------------------------------
# Checks


def _not_differentiable(fn: str, name: str, t: Tensor | None) -> None:
    # torch's autograd layer refuses these arguments when they would need a gradient (only with
    # grad mode on: under no_grad torch accepts them, and so does torchloss).
    if t is not None and t.requires_grad and torch.is_grad_enabled():
        raise RuntimeError(
            f"The function '{fn}' is not differentiable with respect to argument '{name}'. "
            "This input cannot have requires_grad True."
        )


def _check_broadcastable(fn: str, name: str, t: Tensor, other: str, shape) -> None:
    """RuntimeError unless ``t`` and ``shape`` broadcast together."""
    for i, (a, b) in enumerate(zip(reversed(t.shape), reversed(shape)), start=1):
        if a != b and a != 1 and b != 1:
            raise RuntimeError(
                f"{fn}: {name} of shape {list(t.shape)} is not broadcastable with the {other} "
                f"shape {list(shape)}: size {a} does not match size {b} at dimension {-i}"
            )


def _check_fits(fn: str, name: str, t: Tensor, shape, other: str = "input") -> None:
    """RuntimeError unless broadcasting ``t`` against ``shape`` leaves ``shape`` unchanged
    (``t`` must broadcast *into* the loss, never enlarge it). Assumes broadcastability."""
    own = t.shape
    enlarged = len(own) > len(shape) or any(
        a != b and b == 1 for a, b in zip(reversed(own), reversed(shape))
    )
    if enlarged:
        big = list(broadcast_shape(own, shape))
        raise RuntimeError(
            f"{fn}: {name} of shape {list(own)} must broadcast into the {other} shape "
            f"{list(shape)}, but it would enlarge the loss to shape {big}"
        )


def _unwrap_functorch(t: Tensor) -> Tensor:
    # Under torch.func transforms the tensor is a wrapper (a BatchedTensor under vmap, on which
    # a value check would be data-dependent control flow, which vmap refuses). The innermost
    # plain tensor holds every value the wrapper stands for (all samples of a vmap batch), so
    # checking it is exactly checking each sample.
    while torch._C._functorch.is_functorch_wrapped_tensor(t):
        t = torch._C._functorch.get_unwrapped(t)
    return t


def _check_unit_interval(t: Tensor, name: str) -> None:
    """RuntimeError unless every element of ``t`` lies in [0, 1] (NaN fails), as torch's kernel.

    ``torch._assert_async`` raises at once on CPU, traces under ``torch.compile`` (no graph
    break, no host sync), and on CUDA becomes a device-side assert, which is what torch's CUDA
    kernel does for the same check (``CUDA_KERNEL_ASSERT``); so it adds no host synchronisation.
    On the CPU, where the flag is read on the host anyway, one ``aminmax`` pass and two host
    reads replace its four ops and three temporaries (NaN propagates into both extremes).
    """
    if not torch.compiler.is_compiling():
        t = _unwrap_functorch(t)
        if t.device.type == "cpu":
            if t.numel():
                lo, hi = torch.aminmax(t.detach())
                if not (float(lo) >= 0 and float(hi) <= 1):
                    raise RuntimeError(f"all elements of {name} should be between 0 and 1")
            return
    torch._assert_async(
        ((t >= 0) & (t <= 1)).all(), f"all elements of {name} should be between 0 and 1"
    )


# --------------------------------------------------------------------------------------------
# BCE


def binary_cross_entropy(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> Tensor:
    r"""Binary cross entropy of probabilities; see :class:`torchloss.BCELoss`.

    :math:`\ell = -w[y\max(\log x, -100) + (1-y)\max(\log(1-x), -100)]`. ``input`` and
    ``target`` must have the same size and floating dtype, with values in [0, 1]; ``weight``
    must broadcast into their shape and is not differentiable.
    """
    fn = "binary_cross_entropy"
    if size_average is not None or reduce is not None:
        reduction = R.legacy_get_string(size_average, reduce)
    code = R.get_enum(reduction)
    if target.size() != input.size():
        raise ValueError(
            f"Using a target size ({target.size()}) that is different to the input size "
            f"({input.size()}) is deprecated. Please ensure they have the same size."
        )
    if weight is not None:
        _check_broadcastable(fn, "weight", weight, "target", target.shape)
    _not_differentiable(fn, "weight", weight)
    if target.dtype != input.dtype:
        raise RuntimeError(
            f"{fn}: expected target to have the dtype of input ({_name(input.dtype)}), "
            f"found dtype {_name(target.dtype)}"
        )
    if not input.dtype.is_floating_point:
        raise NotImplementedError(
            f"{fn}: input and target must be floating point, got {_name(input.dtype)}"
        )
    if weight is not None:
        _check_fits(fn, "weight", weight, input.shape)
        if weight.dtype.is_complex:
            raise RuntimeError(
                f"{fn}: weight must be real, got {_name(weight.dtype)} (the loss is "
                f"{_name(input.dtype)})"
            )
    # Plain CPU tensors outside any transform or compile (the Function then gets them as they
    # are) are range-checked inside the forward, mostly after the fact and without detaching
    # (BCELossFunction's ``check``); every other case here, before.
    check = (
        input.device.type == "cpu"
        and not torch.compiler.is_compiling()
        and not torch._C._are_functorch_transforms_active()
        and not _bce_wrapped(input)
        and not _bce_wrapped(target)
        and (weight is None or not _bce_wrapped(weight))
    )
    if not check:
        _check_unit_interval(input, "input")
        _check_unit_interval(target, "target")
    elif _binary_native(input, target, weight, _BCE_NATIVE_MAX):
        # the kernel checks the [0, 1] range in its loop and raises the reference's messages
        return native.module.binary_cross_entropy(input, target, weight, code)
    return _bce(input, target, weight, code, check)


_bce_wrapped = torch._C._functorch.is_functorch_wrapped_tensor

# The native kernels of the binary family (torchloss/_native/csrc/binary.cpp): contiguous
# float/double input, target and weight (None or of the input's shape and dtype) of one shape,
# no pos_weight, up to these many elements. The kernels' loops are scalar (a log, exp or log1p
# call per element, ~10 ns each); above these sizes the reference's vectorised eager ops cost
# less than the loops, and take the call (measured crossovers: about 3000 and 1300 elements).
_BCE_NATIVE_MAX = 2048
_BCE_LOGITS_NATIVE_MAX = 1024
native.REFERENCES["binary_cross_entropy"] = lambda t, s: BCELossFunction.apply(
    t[0], t[1], t[2] if len(t) > 2 else None, int(s[0]), False
)
native.REFERENCES["binary_cross_entropy_with_logits"] = lambda t, s: BCEWithLogitsLossFunction.apply(
    t[0], t[1], t[2] if len(t) > 2 else None, None, int(s[0])
)


def _binary_native(input: Tensor, target: Tensor, weight: Tensor | None, limit: int) -> bool:
    """Whether a binary kernel takes a validated call: contiguous float/double input and target of
    one dtype, a weight that is None or contiguous of the input's shape and dtype, at most
    ``limit`` elements, plain eager work."""
    if (
        native.module is None
        or input.numel() > limit
        or input.dtype not in _NATIVE_FLOAT
        or target.dtype != input.dtype
        or not (input.is_contiguous() and target.is_contiguous())
    ):
        return False
    if weight is None:
        return native.eager(input, target)
    return (
        weight.dtype == input.dtype
        and weight.shape == input.shape
        and weight.is_contiguous()
        and native.eager(input, target, weight)
    )


# --------------------------------------------------------------------------------------------
# BCE with logits


def binary_cross_entropy_with_logits(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    pos_weight: Tensor | None = None,
) -> Tensor:
    r"""Binary cross entropy of logits; see :class:`torchloss.BCEWithLogitsLoss`.

    :math:`\ell = -w[p\,y\log\sigma(x) + (1-y)\log\sigma(-x)]`, computed without overflow.
    ``target`` must have the size of ``input``; its dtype is the result's. ``weight`` and
    ``pos_weight`` (p) broadcast into the input shape (``pos_weight`` along the trailing class
    dimension) and are not differentiable in reverse mode.
    """
    fn = "binary_cross_entropy_with_logits"
    if size_average is not None or reduce is not None:
        reduction = R.legacy_get_string(size_average, reduce)
    code = R.get_enum(reduction)
    if target.size() != input.size():
        raise ValueError(f"Target size ({target.size()}) must be the same as input size ({input.size()})")
    _not_differentiable(fn, "weight", weight)
    _not_differentiable(fn, "pos_weight", pos_weight)
    if not input.dtype.is_floating_point:
        raise NotImplementedError(f"{fn}: input must be floating point, got {_name(input.dtype)}")
    if pos_weight is not None:
        if pos_weight.dtype == torch.bool or pos_weight.dtype.is_complex:
            raise RuntimeError(f"{fn}: pos_weight must be a real number tensor, got {_name(pos_weight.dtype)}")
        _check_broadcastable(fn, "pos_weight", pos_weight, "target", target.shape)
        _check_fits(fn, "pos_weight", pos_weight, input.shape)
    if target.dtype.is_complex:
        # torch returns a complex "loss" here; torchloss does not support complex targets.
        raise NotImplementedError(f"{fn}: target must be real floating point, got {_name(target.dtype)}")
    if not target.dtype.is_floating_point:
        raise RuntimeError(
            f"{fn}: target must be floating point (the loss has the dtype of target), "
            f"got {_name(target.dtype)}"
        )
    if weight is not None:
        _check_broadcastable(fn, "weight", weight, "input", input.shape)
        _check_fits(fn, "weight", weight, input.shape)
        if weight.dtype.is_complex:
            raise RuntimeError(f"{fn}: weight must be real, got {_name(weight.dtype)}")
    if pos_weight is None and _binary_native(input, target, weight, _BCE_LOGITS_NATIVE_MAX):
        return native.module.binary_cross_entropy_with_logits(input, target, weight, code)
    return _bce_logits(input, target, weight, pos_weight, code)


# --------------------------------------------------------------------------------------------
# Soft margin


def soft_margin_loss(
    input: Tensor,
    target: Tensor,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> Tensor:
    r"""Soft margin loss :math:`\log(1 + e^{-y x})`; see :class:`torchloss.SoftMarginLoss`.

    ``target`` (usually ±1; integer and bool targets are fine) broadcasts into the shape of
    ``input`` and is not differentiable. Unlike torch, large :math:`-yx` does not overflow.
    """
    fn = "soft_margin_loss"
    if size_average is not None or reduce is not None:
        reduction = R.legacy_get_string(size_average, reduce)
    code = R.get_enum(reduction)
    _not_differentiable(fn, "target", target)
    if input.dtype == torch.bool:
        raise RuntimeError(f"{fn}: input must be floating point, got bool")
    _check_broadcastable(fn, "target", target, "input", input.shape)
    _check_fits(fn, "target", target, input.shape)
    if not input.dtype.is_floating_point:
        if input.dtype.is_complex:
            # torch computes a complex value here; torchloss supports real inputs only.
            raise NotImplementedError(f"{fn}: input must be real floating point, got {_name(input.dtype)}")
        raise RuntimeError(
            f"{fn}: input must be floating point (the loss has the dtype of input), "
            f"got {_name(input.dtype)}"
        )
    if target.dtype.is_complex:
        raise RuntimeError(f"{fn}: target must be real, got {_name(target.dtype)} (the loss is {_name(input.dtype)})")
    return _soft_margin(input, target, code)

# ============================================================================================
# Likelihoods: PoissonNLL, GaussianNLL, KLDiv


_poisson = Dispatch(PoissonNLLLossFunction)
_gaussian = Dispatch(GaussianNLLLossFunction)
_kl = Dispatch(KLDivLossFunction)

_PLAIN_REDUCTIONS = ("none", "mean", "sum")

KL_MEAN_WARNING = (
    "reduction: 'mean' divides the total loss by both the batch size and the support size."
    "'batchmean' divides only by the batch size, and aligns with the KL div math definition."
    "'mean' will be changed to behave the same as 'batchmean' in the next major release."
)


def _require_tensor(fn: str, name: str, position: int, value) -> None:
    if not isinstance(value, Tensor):
        raise TypeError(
            f"{fn}(): argument '{name}' (position {position}) must be Tensor, not {type(value).__name__}"
        )


def _require_reduction_string(fn: str, reduction) -> None:
    # torch builds its message with ``reduction + "..."``, which is a TypeError for non-strings.
    if not isinstance(reduction, str):
        raise TypeError(f"{fn}(): reduction must be a string, got {type(reduction).__name__}")


# --------------------------------------------------------------------------------------------
# Poisson


def poisson_nll_loss(
    input: Tensor,
    target: Tensor,
    log_input: bool = True,
    full: bool = False,
    size_average: bool | None = None,
    eps: float = 1e-8,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> Tensor:
    r"""Poisson negative log-likelihood; see :class:`torchloss.PoissonNLLLoss`.

    ``log_input=True``: :math:`e^x - y\,x`; otherwise :math:`x - y\log(x + \text{eps})`. ``full``
    adds the Stirling term :math:`y\log y - y + \tfrac12\log(2\pi y)` where :math:`y > 1`.
    ``input`` and ``target`` broadcast (silently). ``reduction`` must be ``'none'``, ``'mean'``
    or ``'sum'`` (``'elementwise_mean'`` is rejected, as in torch).

    Difference from torch: with ``full=True`` the target gradient at ``y <= 0`` is finite (the
    non-Stirling part) instead of torch's NaN, which leaks from its masked-out branch.
    """
    if size_average is not None or reduce is not None:
        reduction = R.legacy_get_string(size_average, reduce)
    _require_reduction_string("poisson_nll_loss", reduction)
    if reduction not in _PLAIN_REDUCTIONS:
        raise ValueError(
            f"{reduction} is not a valid value for reduction "
            "(poisson_nll_loss expects 'none', 'mean' or 'sum')"
        )
    _require_tensor("poisson_nll_loss", "input", 1, input)
    _require_tensor("poisson_nll_loss", "target", 2, target)
    if input.shape != target.shape:
        broadcast_shape(input.shape, target.shape)
    # torch's expression subtracts a bool tensor in these cases, which torch refuses
    x_bool, y_bool = input.dtype == torch.bool, target.dtype == torch.bool
    if (x_bool and (y_bool or not log_input)) or (y_bool and full):
        raise RuntimeError(
            "poisson_nll_loss: bool input/target not supported here (torch would subtract a bool "
            "tensor); expected numeric tensors"
        )
    code = R.get_enum(reduction)
    return _poisson(input, target, bool(log_input), bool(full), float(eps), code)


# --------------------------------------------------------------------------------------------
# Gaussian


_NEGATIVE_VAR = "var has negative entry/entries (expected var >= 0)"


def _has_negative(var: Tensor) -> bool:
    """``torch.any(var < 0)``, also under ``torch.func.vmap``.

    The check needs the values on the host, which vmap forbids for a batched tensor (torch's own
    gaussian_nll_loss fails there). Under torch.func transforms we check the plain tensor
    underneath instead: it holds the values of every batch member, so a negative entry in any of
    them raises, as a Python loop over the batch would.
    """
    return bool(torch.any(_unwrap_functorch(var) < 0))


def _gaussian_var_shape(input: Tensor, var: Tensor) -> bool:
    """torch's var-shape rule; returns whether var must be unsqueezed (homoscedastic case)."""
    if var.size() == input.size():
        return False
    if input.size()[:-1] == var.size():
        # one dimension short: (..., ) → (..., 1)
        return True
    if input.dim() == var.dim() and sum(v for i, v in zip(input.size(), var.size()) if i != v) == 1:
        # exactly one mismatching dimension, where var has size 1
        return False
    raise ValueError(
        f"var is of incorrect size: expected var of the input's size {tuple(input.shape)}, or that "
        f"size without its last dimension, or with one dimension of size 1; got {tuple(var.shape)}"
    )


def gaussian_nll_loss(
    input: Tensor,
    target: Tensor,
    var: Tensor | float,
    full: bool = False,
    eps: float = 1e-6,
    reduction: str = "mean",
) -> Tensor:
    r"""Gaussian negative log-likelihood; see :class:`torchloss.GaussianNLLLoss`.

    :math:`\tfrac12(\log v_c + (x - y)^2 / v_c)` with :math:`v_c = \max(\text{var}, \text{eps})`
    (the clamp is straight-through for autograd), plus :math:`\tfrac12\log 2\pi` if ``full``.
    ``var`` is a non-negative tensor of the input's size, of that size without the last dimension
    (homoscedastic), or with exactly one dimension of size 1, or a non-negative Python float.

    Differences from torch: the negative-var check also works under ``torch.func.vmap`` over
    ``var`` (torch raises there), and under ``torch.compile`` it runs on the device
    (``torch._assert_async``: a RuntimeError when the graph runs) instead of breaking the graph;
    a Python-float var is applied as a constant, so float16/bfloat16
    inputs see it unrounded, and it also works with complex inputs (torch fails to clamp it).
    """
    if isinstance(var, float):
        if var < 0:
            raise ValueError(_NEGATIVE_VAR)
    elif not isinstance(var, Tensor):
        # torch falls through to torch.any(var < 0) and fails with a TypeError there
        raise TypeError(
            f"gaussian_nll_loss(): var must be a Tensor or a float, got {type(var).__name__}"
        )
    elif torch.compiler.is_compiling():
        # A host sync would break the graph: check on the device instead (a RuntimeError).
        torch._assert_async(torch.logical_not(torch.any(var < 0)), _NEGATIVE_VAR)
    elif _has_negative(var):
        raise ValueError(_NEGATIVE_VAR)
    unsqueeze = False
    var_shape = input.shape
    if isinstance(var, Tensor):
        unsqueeze = _gaussian_var_shape(input, var)
        var_shape = var.shape + (1,) if unsqueeze else var.shape
    _require_reduction_string("gaussian_nll_loss", reduction)
    if reduction not in _PLAIN_REDUCTIONS:
        raise ValueError(f"{reduction} is not valid (reduction must be 'none', 'mean' or 'sum')")
    if isinstance(var, Tensor) and not (var.is_floating_point() or var.is_complex()):
        # torch fails clamping an integral var in place
        raise RuntimeError(
            f"gaussian_nll_loss(): var must be a floating-point tensor, got {var.dtype}"
        )
    if not (input.shape == target.shape == var_shape):
        broadcast_shape(input.shape, target.shape, var_shape)
    if input.dtype == torch.bool or target.dtype == torch.bool:
        # torch computes input - target, which refuses bool tensors
        raise RuntimeError(
            "gaussian_nll_loss: bool input/target not supported (expected numeric tensors)"
        )
    code = R.get_enum(reduction)
    return _gaussian(input, target, var, unsqueeze, bool(full), float(eps), code)


# --------------------------------------------------------------------------------------------
# KL divergence


def kl_div(
    input: Tensor,
    target: Tensor,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    log_target: bool = False,
) -> Tensor:
    r"""KL divergence of ``target`` from ``input`` (log-probabilities); see
    :class:`torchloss.KLDivLoss`.

    :math:`y(\log y - x)` (``0`` where :math:`y = 0`) or, with ``log_target``,
    :math:`e^y(y - x)`. ``reduction``: ``'none'``, ``'sum'``, ``'batchmean'`` (sum divided by
    ``input.size(0)``; no division for a 0-d input) or ``'mean'`` (divides by the number of
    elements, with torch's warning on every call). Legacy ``size_average``/``reduce`` override
    ``reduction``, yet a literal ``reduction='batchmean'`` still divides by the batch size, as in
    torch.

    Difference from torch: code compiled with ``torch.compile`` does not emit the 'mean' warning
    (TorchDynamo cannot trace ``warnings.warn``; torch's own kl_div is kept whole in the graph).
    """
    if size_average is not None or reduce is not None:
        code = R.get_enum(R.legacy_get_string(size_average, reduce))
    else:
        if reduction == "mean" and not torch.compiler.is_compiling():
            # TorchDynamo cannot trace warnings.warn; compiled code skips the warning
            warnings.warn(KL_MEAN_WARNING, stacklevel=2)
        code = R.SUM if reduction == "batchmean" else R.get_enum(reduction)
    _require_tensor("kl_div", "input", 1, input)
    _require_tensor("kl_div", "target", 2, target)
    if not (input.is_floating_point() and target.is_floating_point()):
        if input.is_complex() or target.is_complex():
            raise RuntimeError(
                f"kl_div: Complex inputs not supported. (expected real floating-point input and target, "
                f"got {input.dtype} and {target.dtype})"
            )
        raise RuntimeError(
            f"kl_div: Integral inputs not supported. (expected floating-point input and target, "
            f"got {input.dtype} and {target.dtype})"
        )
    if input.shape != target.shape:
        broadcast_shape(input.shape, target.shape)
    divisor = input.size(0) if reduction == "batchmean" and input.dim() != 0 else 1
    return _kl(input, target, code, divisor, bool(log_target))


# ============================================================================================
# Classification: NLL, cross entropy


_nll = Dispatch(NLLLossFunction)
_ce = Dispatch(CrossEntropyLossFunction)
_ce_probs = Dispatch(CrossEntropyProbsLossFunction)

# The fast Functions of plain index targets (no weight, smoothing or ignored target).
_nll_plain = Dispatch(NLLLossPlainFunction)
_ce_plain = Dispatch(CrossEntropyPlainFunction)
# the native kernel of each plain Function, and the reference it falls back on for double backward
_PLAIN_KERNELS = {NLLLossPlainFunction: "nll_loss", CrossEntropyPlainFunction: "cross_entropy"}
native.REFERENCES["nll_loss"] = lambda t, s: NLLLossPlainFunction.apply(t[0], t[1].unsqueeze(1), int(s[0]))
native.REFERENCES["cross_entropy"] = lambda t, s: CrossEntropyPlainFunction.apply(t[0], t[1].unsqueeze(1), int(s[0]))
_NATIVE_FLOAT = (torch.float32, torch.float64)


def _plain_layout(input: Tensor, target: Tensor) -> bool:
    """Whether an eager CPU call has the layout of the plain Functions: a floating ``(N, C, ...)``
    input and a non-empty int64 target of the loss's shape, so that it passes every check of
    :func:`_check_index_targets` (without a weight). The class range is then what remains to know
    (:func:`_plain_range`, or the bounds check of the Function's own ``gather``); anything else
    (CUDA, ``torch.compile``, uint8 or empty targets, unbatched inputs) takes the general path.
    """
    nd = input.dim()
    if (
        nd < 2
        or target.dtype != torch.int64
        or not (input.is_cpu and target.is_cpu and input.is_floating_point())
        or torch.compiler.is_compiling()
    ):
        return False
    shape = target.shape
    if nd == 2:
        return len(shape) == 1 and shape[0] == input.shape[0] and shape[0] > 0
    return shape == input.shape[:1] + input.shape[2:] and target.numel() > 0


def _plain_range(input: Tensor, target: Tensor, ignore_index: int) -> bool:
    """Whether every target is a class index in ``[0, C)`` and none equals ``ignore_index``.

    One ``aminmax`` read on the host: CPU only, as torch's CPU kernel reads the targets anyway
    (under ``torch.func`` transforms the innermost plain target holds every value checked).
    """
    lo, hi = torch.aminmax(_unwrap_functorch(target))
    lo, hi = int(lo), int(hi)
    return 0 <= lo and hi < input.shape[1] and not lo <= ignore_index <= hi


def _try_plain(plain: Dispatch, input: Tensor, target: Tensor, ignore_index: int, code: int, probe_limit: float):
    """The loss from a plain Function, or None when the general path must compute it.

    When ``ignore_index`` is no class index, a target equals it exactly when it lies outside
    ``[0, C)``, and then the Function's own ``gather`` raises (its bounds check reads the targets
    on the CPU): the general path then raises torch's IndexError or ignores what it must. Trying
    first saves the ``aminmax`` read (~2 us of a small batch) for inputs of at most
    ``probe_limit`` elements, where a failed attempt wastes little (for cross entropy, the
    log-softmax computed before the gather); otherwise the range is read first.
    """
    if not _plain_layout(input, target):
        return None
    if input.numel() <= probe_limit and not 0 <= ignore_index < input.shape[1]:
        try:
            return _plain_apply(plain, input, target, code)
        except RuntimeError:
            return None
    if _plain_range(input, target, ignore_index):
        return _plain_apply(plain, input, target, code)
    return None


_functorch_on = torch._C._are_functorch_transforms_active
_functorch_wrapped = torch._C._functorch.is_functorch_wrapped_tensor


def _plain_apply(plain: Dispatch, input: Tensor, target: Tensor, code: int) -> Tensor:
    """``plain(input, idx, code)``, straight to the C apply (``plain.eager``) when no functorch
    transform is active and neither tensor is a functorch wrapper: what ``Dispatch`` checks,
    ``torch.compile`` being ruled out by :func:`_plain_layout` already. About 1 us less a call.
    A contiguous float/double ``(N, C)`` input takes the native kernel when it is built (its
    out-of-range targets raise a RuntimeError, as the reference's ``gather`` does)."""
    kernels, name = native.module, _PLAIN_KERNELS.get(plain.function)
    if (
        kernels is not None
        and name is not None
        and input.dim() == 2
        and input.dtype in _NATIVE_FLOAT
        and input.is_contiguous()
        and target.is_contiguous()
        and native.eager(input, target)
    ):
        return getattr(kernels, name)(input, target, code)
    idx = target.unsqueeze(1)
    if _functorch_on() or _functorch_wrapped(input) or _functorch_wrapped(target):
        return plain(input, idx, code)
    return plain.eager(input, idx, code)


def _require_int(fn: str, name: str, position: int, value) -> int:
    """torch's argument parser for an ``int`` argument: integers and integer-likes (a numpy
    integer, a one-element integer tensor) pass, ``bool`` and ``float`` are a TypeError."""
    if isinstance(value, (bool, float)) or not hasattr(value, "__index__"):
        raise TypeError(
            f"{fn}(): argument '{name}' (position {position}) must be int, not {type(value).__name__}"
        )
    return operator.index(value)


def _check_index_targets(fn: str, input: Tensor, target: Tensor, weight: Tensor | None) -> None:
    """torch's ``nll_loss_nd`` checks, in its order: dimensions, batch size, target shape,
    target dtype, weight shape, input dtype, weight dtype."""
    if input.dim() < 1:
        raise ValueError(f"{fn}: expected input with 1 or more dimensions (got {input.dim()})")
    target_batch = target.size(0) if target.dim() > 0 else 0
    if input.dim() != 1 and input.size(0) != target_batch:
        raise ValueError(
            f"Expected input batch_size ({input.size(0)}) to match target batch_size ({target_batch})."
        )
    if input.dim() == 1 and target.dim() == 1 and target.size(0) != 1:
        raise ValueError(
            f"For 1D input, 1D target must have size 1, but got target size: {target.size(0)}"
        )
    if input.dim() <= 2:
        if target.dim() > 1:
            raise RuntimeError(
                f"{fn}: 0D or 1D target tensor expected, multi-target not supported "
                f"(got a target of shape {list(target.shape)} for an input of shape {list(input.shape)})"
            )
    else:
        expected = [input.size(0), *input.shape[2:]]
        if input.dim() == 4 and target.dim() != 3:
            raise RuntimeError(
                f"{fn}: only batches of spatial targets supported (3D tensors) but got targets of "
                f"dimension: {target.dim()}"
            )
        if list(target.shape) != expected:
            raise RuntimeError(
                f"{fn}: Expected target size {expected}, got {list(target.shape)} "
                f"(the input's shape {list(input.shape)} without its class dimension 1)"
            )
    if target.dtype not in (torch.int64, torch.uint8):
        raise RuntimeError(
            f"{fn}: expected target dtype to be Long or Byte (int64 or uint8 class indices), "
            f"but got {_name(target)}"
        )
    _check_class_weight(fn, input, weight, prefix="")
    if not input.is_floating_point():
        raise NotImplementedError(f"{fn}: expected a floating-point input, got {_name(input)}")
    if weight is not None and weight.dtype != input.dtype:
        raise RuntimeError(
            f"{fn}: expected weight of the input's dtype {_name(input)}, got {_name(weight)}"
        )


def _n_classes(input: Tensor) -> int:
    """C of a ``(C)``, ``(N, C)`` or ``(N, C, d1, ..., dK)`` input (classes along dim 1, or 0)."""
    return input.size(0 if input.dim() == 1 else 1)


def _check_class_weight(fn: str, input: Tensor, weight: Tensor | None, prefix: str) -> None:
    C = _n_classes(input)
    if weight is not None and (weight.dim() != 1 or weight.numel() != C):
        raise RuntimeError(
            f"{prefix}weight tensor should be defined either for all {C} classes or no classes "
            f"but got weight tensor of shape: {list(weight.shape)}"
        )


def _check_class_range(target: Tensor, n_classes: int, ignore_index: int) -> None:
    """IndexError unless every target is a class index in ``[0, C)`` or ``ignore_index``.

    On the CPU this reads the targets on the host (torch's CPU kernel does the same, as the
    values are right there). On other devices, and while ``torch.compile`` traces, it is a
    ``torch._assert_async`` instead: no host synchronisation, a device-side assert on CUDA like
    torch's kernel (a RuntimeError rather than an IndexError).
    """
    if target.numel() == 0:
        return
    if torch.compiler.is_compiling() or target.device.type != "cpu":
        t = target.long()
        ok = ((t == ignore_index) | ((t >= 0) & (t < n_classes))).all()
        torch._assert_async(ok, f"Target out of bounds: class indices must lie in [0, {n_classes})")
        return
    t = _unwrap_functorch(target).long()
    bad = (t != ignore_index) & ((t < 0) | (t >= n_classes))
    if bool(bad.any()):
        value = int(t[bad][0])
        raise IndexError(
            f"Target {value} is out of bounds. (class indices must lie in [0, {n_classes}) "
            f"or equal ignore_index={ignore_index})"
        )


def nll_loss(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    size_average: bool | None = None,
    ignore_index: int = -100,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> Tensor:
    r"""Negative log-likelihood of log-probabilities; see :class:`torchloss.NLLLoss`.

    :math:`\ell_n = -w_{y_n} x_{n, y_n}` (0 where :math:`y_n` = ``ignore_index``) for an input
    of shape ``(C)``, ``(N, C)`` or ``(N, C, d1, ..., dK)`` and int64/uint8 class indices of
    shape ``()``, ``(N)`` or ``(N, d1, ..., dK)``. ``'mean'`` divides by the total weight of the
    non-ignored targets (NaN when there is none, with a zero gradient, as torch).
    """
    if size_average is not None or reduce is not None:
        reduction = R.legacy_get_string(size_average, reduce)
    code = R.get_enum(reduction)
    if type(ignore_index) is not int:
        ignore_index = _require_int("nll_loss_nd", "ignore_index", 5, ignore_index)
    if weight is None:
        # a failed attempt wastes one gather of the targets: always worth trying
        loss = _try_plain(_nll_plain, input, target, ignore_index, code, math.inf)
        if loss is not None:
            return loss
    _check_index_targets("nll_loss", input, target, weight)
    _not_differentiable("nll_loss_forward", "weight", weight)
    _check_class_range(target, _n_classes(input), ignore_index)
    return _nll(input, target, weight, code, ignore_index)


def cross_entropy(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    size_average: bool | None = None,
    ignore_index: int = -100,
    reduce: bool | None = None,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> Tensor:
    r"""Cross entropy of logits; see :class:`torchloss.CrossEntropyLoss`.

    The target holds class probabilities when ``target.shape == input.shape`` (torch's rule, by
    shape alone) and class indices otherwise. Index targets:
    :math:`\ell = (1-\varepsilon) w_y (\mathrm{lse}(x) - x_y) + \frac{\varepsilon}{C}\sum_c w_c
    (\mathrm{lse}(x) - x_c)`, 0 at ``ignore_index``, ``'mean'`` dividing by the total weight of
    the non-ignored targets. Probability targets :math:`t' = (1-\varepsilon) t + \varepsilon/C`:
    :math:`\ell = \sum_c w_c t'_c (\mathrm{lse}(x) - x_c)`, ``'mean'`` dividing by the number of
    positions. A negative ``label_smoothing`` counts as 0, as in torch.
    """
    if size_average is not None or reduce is not None:
        reduction = R.legacy_get_string(size_average, reduce)
    code = R.get_enum(reduction)
    if type(ignore_index) is not int:
        ignore_index = _require_int("cross_entropy_loss", "ignore_index", 5, ignore_index)
    smoothing = float(label_smoothing) if label_smoothing > 0 else 0.0
    if input.shape == target.shape:
        # class probabilities
        if not target.is_floating_point():
            raise RuntimeError(
                "cross_entropy: Expected floating point type for target with class probabilities "
                f"(a target of the input's shape), got {_name(target)}"
            )
        if ignore_index >= 0:
            raise RuntimeError(
                "cross_entropy: ignore_index is not supported for floating point target (class "
                f"probabilities); got ignore_index={ignore_index}, which must be negative"
            )
        if input.dim() == 0:
            raise IndexError(
                "cross_entropy: a 0-dimensional input has no class dimension "
                "(Dimension specified as 1 but tensor has no dimensions)"
            )
        _check_class_weight("cross_entropy", input, weight, prefix="cross_entropy: ")
        if not input.is_floating_point():
            raise NotImplementedError(f"cross_entropy: expected a floating-point input, got {_name(input)}")
        _check_smoothing(smoothing)
        return _ce_probs(input, target, weight, code, smoothing)
    if not smoothing and weight is None:
        # a failed attempt wastes the log-softmax: tried first only while that is a few us
        loss = _try_plain(_ce_plain, input, target, ignore_index, code, 4096)
        if loss is not None:
            return loss
    _check_smoothing(smoothing)
    if input.dim() == 0:
        raise IndexError(
            "cross_entropy: a 0-dimensional input has no class dimension "
            "(Dimension out of range (expected to be in range of [-1, 0], but got 1))"
        )
    if not input.is_floating_point():
        raise NotImplementedError(f"cross_entropy: expected a floating-point input, got {_name(input)}")
    _check_index_targets("cross_entropy", input, target, weight)
    _not_differentiable("nll_loss_forward", "weight", weight)
    _check_class_range(target, _n_classes(input), ignore_index)
    return _ce(input, target, weight, code, ignore_index, smoothing)


def _check_smoothing(smoothing: float) -> None:
    if smoothing > 1.0:
        raise RuntimeError(f"label_smoothing must be between 0.0 and 1.0. Got: {smoothing}")


# ============================================================================================
# Multi-class margin: MultiMargin, MultiLabelMargin, MultiLabelSoftMargin
#
# Validation follows torch's order, so that a call with several problems raises torch's
# exception first: the reduction (in Python), then ``p``/``weight`` (Python), the shapes, the
# dtypes and, last, the target values. The value checks use ``torch._assert_async``: a
# RuntimeError at once on the CPU, a traced assertion under ``torch.compile`` and a device-side
# assert on CUDA (as torch's own kernels), never a host synchronisation.
#
# Deliberate differences from torch (see each docstring and docs/differences.md):
# float16/bfloat16 work on every device (computed in float32; torch's CPU kernels of the two hinge
# losses refuse them), an empty batch gives NaN for 'mean' and 0 for 'sum' (torch returns
# uninitialised memory), dtype checks also apply to empty inputs, double backward and forward AD
# work, and complex targets/weights of multilabel_soft_margin_loss are refused.

# Module-global Dispatch objects: the Function, or its jvp-less twin under torch.compile.
_multi_margin = Dispatch(MultiMarginLossFunction)
# the native kernel's reference for double backward: tensors (input, target[, weight]), scalars
# (p, margin, reduction)
native.REFERENCES["multi_margin_loss"] = lambda t, s: MultiMarginLossFunction.apply(
    t[0], t[1], t[2] if len(t) > 2 else None, int(s[0]), s[1], int(s[2])
)
_multilabel_margin = Dispatch(MultiLabelMarginLossFunction)
_multilabel_soft_margin = Dispatch(MultiLabelSoftMarginLossFunction)

_SOFT_REDUCTIONS = {"none": R.NONE, "mean": R.MEAN, "sum": R.SUM}


# --------------------------------------------------------------------------------------------
# Checks shared by the two hinge losses


def _class_count(fn: str, input: Tensor) -> int:
    """C of a ``()``, ``(C)`` or ``(N, C)`` input with C > 0 (N may be 0); RuntimeError otherwise."""
    nd = input.dim()
    if nd == 0:
        return 1
    if nd > 2 or input.shape[-1] == 0:
        raise RuntimeError(
            f"{fn}: expected input to be a non-empty vector (C) or matrix (N, C) with C > 0 "
            f"(N may be 0), got input of shape {list(input.shape)}"
        )
    return input.shape[-1]


def _require_floating_input(fn: str, input: Tensor) -> None:
    if not input.dtype.is_floating_point:
        # torch's kernels are dispatched over the floating types only
        raise NotImplementedError(f"{fn}: expected floating-point input, got {_name(input)}")


def _require_int64_target(fn: str, target: Tensor) -> None:
    if target.dtype != torch.int64:
        raise RuntimeError(
            f"{fn}: expected target of dtype int64 (class indices), got {_name(target)}"
        )


def _assert_in_range(t: Tensor, low: int, high: int, message: str) -> None:
    """RuntimeError unless every element of ``t`` lies in ``[low, high]`` (see the module notes).

    Under ``torch.func`` transforms the innermost plain tensor is checked: it holds the values
    of every member of a vmap batch, so each sample is checked.
    """
    if not torch.compiler.is_compiling():
        t = _unwrap_functorch(t)
        if t.device.type == "cpu" and t.dtype == torch.int64:
            # on the CPU, _assert_async reads its flag on the host anyway: read the extremes
            # instead (one reduction rather than four ops, a few microseconds on small batches)
            if t.numel():
                lo, hi = torch.aminmax(t)
                if int(lo) < low or int(hi) > high:
                    raise RuntimeError(message)
            return
    torch._assert_async(((t >= low) & (t <= high)).all(), message)


# --------------------------------------------------------------------------------------------
# MultiMargin


def multi_margin_loss(
    input: Tensor,
    target: Tensor,
    p: int = 1,
    margin: float = 1.0,
    weight: Tensor | None = None,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> Tensor:
    r"""Multi-class hinge loss; see :class:`torchloss.MultiMarginLoss`.

    :math:`\ell_n = \frac1C\sum_{i \ne y_n} w_{y_n}\max(0, \text{margin} - x_{n,y_n} + x_{n,i})^p`
    for ``input`` of shape ``(N, C)`` (or ``(C)``: one sample) and int64 class indices
    ``target`` of shape ``(N,)`` (or ``()``); ``p`` is 1 or 2; ``weight`` (one per class, not
    differentiable) weighs each sample by its target class. ``'none'`` gives the target's shape.

    Differences from torch: float16/bfloat16 inputs work on the CPU too (computed in float32);
    an empty batch gives NaN for ``'mean'`` and 0 for ``'sum'`` (torch: uninitialised memory),
    and its dtypes are checked as for any other batch (torch skips the checks); double backward
    and forward AD are supported.
    """
    fn = "multi_margin_loss"
    if size_average is not None or reduce is not None:
        reduction = R.legacy_get_string(size_average, reduce)
    code = R.get_enum(reduction)
    if p != 1 and p != 2:
        raise ValueError(f"{fn}: only p == 1 and p == 2 supported, got p={p!r}")
    if weight is not None and weight.dim() != 1:
        raise ValueError(
            f"{fn}: weight must be one-dimensional (one weight per class), got a "
            f"{weight.dim()}-d weight of shape {list(weight.shape)}"
        )
    _not_differentiable(fn, "weight", weight)
    classes = _class_count(fn, input)
    n = input.shape[0] if input.dim() == 2 else 1
    if target.dim() > 1 or target.numel() != n:
        raise RuntimeError(
            f"{fn}: target tensor should be 1-D with size equal to the number of input samples "
            f"(batch size). Expected target size [{n}], but got {list(target.shape)}. Input has "
            f"shape {list(input.shape)}."
        )
    if weight is not None and weight.numel() != classes:
        raise RuntimeError(
            f"{fn}: inconsistent weight size, expected {classes} (one per class) but got "
            f"{list(weight.shape)}"
        )
    _require_floating_input(fn, input)
    _require_int64_target(fn, target)
    if weight is not None and weight.dtype != input.dtype:
        raise RuntimeError(
            f"{fn}: expected weight of the input's dtype ({_name(input)}), got {_name(weight)}"
        )
    p = 1 if p == 1 else 2
    kernel = getattr(native.module, "multi_margin_loss", None)  # None: not built (or not this family)
    if (
        kernel is not None
        and input.dim() != 0
        and input.dtype in _NATIVE_FLOAT
        and input.is_contiguous()
        and target.is_contiguous()
        and (weight is None or weight.is_contiguous())
        and (native.eager(input, target) if weight is None else native.eager(input, target, weight))
    ):
        # the native kernel (see torchloss/_native); it runs the range check below itself, with
        # the same message
        return kernel(input, target, weight, p, float(margin), code)
    _assert_in_range(
        target, 0, classes - 1, f"{fn}: target out of range (class indices must be in [0, {classes - 1}])"
    )
    return _multi_margin(input, target, weight, p, float(margin), code)


# --------------------------------------------------------------------------------------------
# MultiLabelMargin


def multilabel_margin_loss(
    input: Tensor,
    target: Tensor,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> Tensor:
    r"""Multi-label hinge loss; see :class:`torchloss.MultiLabelMarginLoss`.

    :math:`\ell_n = \frac1C\sum_{j \in J_n}\sum_{i \notin J_n}\max(0, 1 - x_{n,j} + x_{n,i})`
    where the labels :math:`J_n` are the entries of target row :math:`n` before its first
    ``-1``. ``target`` is int64 with the shape of ``input`` (``(N, C)`` or ``(C)``); every
    entry, even after the terminator, must lie in ``[-1, C-1]``. ``'none'`` gives ``(N,)`` (or
    ``()`` for an unbatched input).

    Differences from torch: float16/bfloat16 inputs work on the CPU too (computed in float32);
    an empty batch gives NaN for ``'mean'`` and 0 for ``'sum'`` (torch: uninitialised memory),
    and its dtypes are checked as for any other batch; double backward and forward AD are
    supported.
    """
    fn = "multilabel_margin_loss"
    if size_average is not None or reduce is not None:
        reduction = R.legacy_get_string(size_average, reduce)
    code = R.get_enum(reduction)
    classes = _class_count(fn, input)
    if input.dim() <= 1:
        fits = target.dim() <= 1 and target.numel() == classes
    else:
        fits = target.shape == input.shape
    if not fits:
        raise RuntimeError(
            f"{fn}: inconsistent target size: expected target of the input's shape "
            f"{list(input.shape)}, got {list(target.shape)}"
        )
    # torch checks the range of the target's values (as integers) before any dtype
    if target.dtype.is_complex:
        raise NotImplementedError(f"{fn}: target must hold integer class indices, got {_name(target)}")
    kernels = native.module
    if (
        kernels is not None
        and input.dtype in _NATIVE_FLOAT
        and target.dtype == torch.int64
        and input.dim() == target.dim() >= 1
        and classes <= _ML_NATIVE_MAX_CLASSES
        and input.is_contiguous()
        and target.is_contiguous()
        and native.eager(input, target)
        and (
            input.dim() == 1
            or input.numel() < _ML_NATIVE_READ_FROM
            or _ml_label_count(target, max(64, classes // 4)) >= 0
        )
    ):
        # the native kernel checks the target's range itself, with the message below (the dtype
        # checks that follow it here pass for these dtypes)
        return kernels.multilabel_margin_loss(input, target, code)
    values = target.trunc() if target.dtype.is_floating_point else target
    _assert_in_range(
        values,
        -1,
        classes - 1,
        f"{fn}: argument #2 'target' is out of range (every entry, even after the first -1, "
        f"must be a class index in [0, {classes - 1}] or -1)",
    )
    _require_floating_input(fn, input)
    _require_int64_target(fn, target)
    # the forward computes the gradient coefficients alongside the loss when they will be needed
    with_grad = input.requires_grad and torch.is_grad_enabled()
    labels = -1  # a bound on the rows' label counts, when known (see _ml_label_count)
    if input.dim() == 2 and target.device.type == "cpu":
        limit = MultiLabelMarginLossFunction.label_limit(*input.shape)
        if limit and not torch.compiler.is_compiling() and not torch._C._are_functorch_transforms_active():
            labels = _ml_label_count(target, limit)
    return _multilabel_margin(input, target, code, with_grad, labels)[0]


# the native kernel (contiguous (N, C) or (C) float/double input, int64 target of its shape, C
# up to this: its counts are int32), and the reference its create_graph backward differentiates
_ML_NATIVE_MAX_CLASSES = 32768
# From this many elements, a batch takes the kernel only if its rows have at most max(64, C/4)
# labels (read by _ml_label_count), those the kernel counts in vectorised passes: with more, its
# per-row sorted counting is slower than the reference's (C = 1024, 1024 labels: ~1.4 times).
_ML_NATIVE_READ_FROM = 65536
native.REFERENCES["multilabel_margin_loss"] = lambda t, s: _multilabel_margin(t[0], t[1], int(s[0]), True, -1)[0]


def _ml_label_count(target: Tensor, limit: int) -> int:
    """The largest label count of a row of the ``(N, C)`` target (the index of its first -1, or
    C), if at most ``limit``, else -1.

    The eager forward loops over that many label positions (O(N K C), as torch's kernel) instead
    of sorting every row, which is faster for a few labels among many classes. The count depends
    on the target's values, so it is read here, on the host, and passed to the Function as a
    plain int: only for a CPU target (reading costs no device synchronisation, like the range
    check's) outside torch.compile and torch.func transforms; everywhere else (and for more
    labels) the Function sorts. The count only chooses the formulation: both give the same
    values. Only the leading columns are read: those of the first power of two (from 4) at which
    every row has seen its -1.
    """
    n, c = target.shape
    if n == 0:
        return 0
    k = 4
    while True:
        k = min(k, c)
        terminated, first = target[:, :k].lt(0).max(1)
        if bool(terminated.all()):
            return int(first.max())
        if k == c:  # a row without -1: every position is a label
            return c if c <= limit else -1
        if k > limit:  # a row with at least k labels
            return -1
        k *= 2


# --------------------------------------------------------------------------------------------
# MultiLabelSoftMargin


def multilabel_soft_margin_loss(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> Tensor:
    r"""Multi-label logistic loss; see :class:`torchloss.MultiLabelSoftMarginLoss`.

    :math:`\ell = -\frac1C\sum_c w_c[y_c\log\sigma(x_c) + (1-y_c)\log\sigma(-x_c)]` over the
    last dimension of ``input`` (any rank >= 1: ``(N, C)`` gives ``(N,)``, ``(N, d, C)`` gives
    ``(N, d)``), computed without overflow. ``target`` (floating or integer) and ``weight``
    broadcast against ``input``; all three are differentiable. ``reduction`` must be
    ``'none'``, ``'mean'`` or ``'sum'`` (``'elementwise_mean'`` is rejected, as in torch); as in
    torch, it is validated after the shapes.

    Difference from torch: complex targets and weights are refused (NotImplementedError; torch
    returns a complex "loss"); float16/bfloat16 are computed in float32 and rounded once.
    """
    fn = "multilabel_soft_margin_loss"
    if size_average is not None or reduce is not None:
        reduction = R.legacy_get_string(size_average, reduce)
    if not input.dtype.is_floating_point:
        raise NotImplementedError(f"{fn}: expected floating-point input (logits), got {_name(input)}")
    _check_broadcastable(fn, "target", target, "input", input.shape)
    if target.dtype == torch.bool:
        # torch evaluates 1 - target, which torch refuses for bool
        raise RuntimeError(f"{fn}: target must be a number tensor (float or integer), got bool")
    if target.dtype.is_complex:
        raise NotImplementedError(f"{fn}: target must be real, got {_name(target)}")
    if weight is not None:
        shape = broadcast_shape(input.shape, target.shape)
        _check_broadcastable(fn, "weight", weight, "loss", shape)
        if weight.dtype.is_complex:
            raise NotImplementedError(f"{fn}: weight must be real, got {_name(weight)}")
    if input.dim() == 0:
        raise IndexError(
            f"{fn}: input must have at least one dimension (its last dimension holds the "
            "classes), got a 0-d input"
        )
    _require_reduction_string(fn, reduction)
    code = _SOFT_REDUCTIONS.get(reduction)
    if code is None:
        raise ValueError(f"{reduction} is not valid (reduction must be 'none', 'mean' or 'sum')")
    return _multilabel_soft_margin(input, target, weight, code)


# ============================================================================================
# Pair: MarginRanking, HingeEmbedding, CosineEmbedding
#
# Pair losses: MarginRanking, HingeEmbedding, CosineEmbedding (public functions).
#
# Validation follows torch's order, so that a call with several problems raises torch's exception
# first: the reduction (and the legacy pair); for ``margin_ranking_loss`` the equal-rank check,
# which torch makes in Python before its argument parser runs; what the parser checks (tensor
# arguments, a ``float`` margin); the cosine's dimension checks; and then what the operations of
# torch's composite would trip over, in the order it performs them (bool arithmetic,
# broadcasting, the complex ``clamp``, an integer ``mean``).
#
# Deliberate differences from torch (see each docstring and docs/differences.md): float16/bfloat16
# are computed in float32 and rounded once (so the cosine of a zero vector in float16 is 0, not
# NaN, and the hinge margin is not rounded to the input's dtype first); the cosine's denominator
# does not overflow for large norms; the graph is one node.

# Module-global Dispatch objects: the Function, or its jvp-less twin under torch.compile.
_margin_ranking = Dispatch(MarginRankingLossFunction)
_hinge_embedding = Dispatch(HingeEmbeddingLossFunction)
_cosine_embedding = Dispatch(CosineEmbeddingLossFunction)


# --------------------------------------------------------------------------------------------
# Checks


def _require_float(fn: str, name: str, position: int, value) -> float:
    """torch's argument parser for a ``float`` argument.

    Python and NumPy numbers (``bool`` and ``int`` included) and 0-d tensors that do not require
    grad pass, as their ``float`` value; a 0-d complex tensor with a non-zero imaginary part is a
    RuntimeError (its conversion "overflows"); anything else (``None``, a string, a 1-element
    1-d tensor, a tensor requiring grad, a Python complex) is a TypeError naming the argument.
    """
    if isinstance(value, Tensor):
        if value.dim() == 0 and not value.requires_grad:
            if value.is_complex():
                number = complex(value)
                if number.imag != 0:
                    raise RuntimeError(
                        f"{fn}(): argument '{name}' (position {position}) must be a real number, "
                        f"got {number} (value cannot be converted to type double without overflow)"
                    )
                return number.real
            return float(value)
    elif isinstance(value, numbers.Real) or (
        type(value).__module__ == "numpy" and hasattr(value, "__float__")
    ):
        # NumPy scalars, np.bool_ included, convert as torch's parser converts them
        return float(value)
    raise TypeError(
        f"{fn}(): argument '{name}' (position {position}) must be float, not {type(value).__name__}"
    )


def _dim(fn: str, name: str, t) -> int:
    # margin_ranking_loss reads the dimensions in Python before torch's parser sees the
    # arguments, so a non-tensor fails there, with an AttributeError.
    if not isinstance(t, Tensor):
        raise AttributeError(  # noqa: TRY004 (torch's exception type here)
            f"{fn}(): argument '{name}' must be a Tensor (its .dim() is read), got {type(t).__name__}"
        )
    return t.dim()


def _no_bool_arithmetic(fn: str, name: str, t: Tensor, operation: str) -> None:
    if t.dtype == torch.bool:
        raise RuntimeError(
            f"{fn}: {name} must be a number tensor, got bool (torch's loss {operation}, which bool "
            f"tensors do not support)"
        )


def _no_complex(fn: str, dtype: torch.dtype, what: str) -> None:
    if dtype.is_complex:
        raise NotImplementedError(
            f"{fn}: expected real {what}, got {_name(dtype)} (the loss clamps at 0, which is not "
            "defined for complex numbers)"
        )


# --------------------------------------------------------------------------------------------
# MarginRanking


def margin_ranking_loss(
    input1: Tensor,
    input2: Tensor,
    target: Tensor,
    margin: float = 0,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> Tensor:
    r"""Margin ranking loss :math:`\max(0, -y\,(x_1 - x_2) + \text{margin})`; see
    :class:`torchloss.MarginRankingLoss`.

    ``input1``, ``input2`` and ``target`` must have the same number of dimensions (torch's
    check) and broadcast together; all three are differentiable (the target is usually
    :math:`\pm 1`, any value is used as a number). The result has the promoted dtype of the
    three, or the default floating dtype when that is an integer dtype. At the kink
    (:math:`-y(x_1 - x_2) + \text{margin} = 0`) the gradient passes, as torch's.
    """
    fn = "margin_ranking_loss"
    if size_average is not None or reduce is not None:
        reduction = R.legacy_get_string(size_average, reduce)
    code = R.get_enum(reduction)
    d1 = _dim(fn, "input1", input1)
    if d1 != _dim(fn, "input2", input2) or d1 != _dim(fn, "target", target):
        raise RuntimeError(
            f"{fn}: input1, input2 and target must have the same number of dimensions, got "
            f"input1: {tuple(input1.shape)}, input2: {tuple(input2.shape)}, target: {tuple(target.shape)}"
        )
    if type(margin) is not float:
        margin = _require_float(fn, "margin", 4, margin)
    shape, dtype = input1.shape, input1.dtype
    usual = (
        input2.shape == shape and target.shape == shape
        and input2.dtype == dtype and target.dtype == dtype and dtype.is_floating_point
    )
    if not usual:  # (one shape and one floating dtype raise none of these)
        # torch's composite computes -target * (input1 - input2) + margin, then clamps
        _no_bool_arithmetic(fn, "target", target, "negates the target")
        _no_bool_arithmetic(fn, "input1", input1, "subtracts input2 from input1")
        _no_bool_arithmetic(fn, "input2", input2, "subtracts input2 from input1")
        _check_broadcastable(fn, "input2", input2, "input1", input1.shape)
        shape = broadcast_shape(input1.shape, input2.shape)
        _check_broadcastable(fn, "target", target, "input1/input2 broadcast", shape)
        _no_complex(fn, result_type(input1, input2, target), "inputs and target")
    # the usual training call (scores that require grad, a constant target): the Function keeps
    # one byte per element for backward instead of the two scores
    keep_step = torch.is_grad_enabled() and (input1.requires_grad or input2.requires_grad) and not target.requires_grad
    return _margin_ranking(input1, input2, target, margin, code, keep_step)[0]


# --------------------------------------------------------------------------------------------
# HingeEmbedding


def hinge_embedding_loss(
    input: Tensor,
    target: Tensor,
    margin: float = 1.0,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> Tensor:
    r"""Hinge embedding loss; see :class:`torchloss.HingeEmbeddingLoss`.

    :math:`\ell = x` where :math:`y = 1`, :math:`\max(0, \text{margin} - x)` where
    :math:`y = -1`, and the sum of both for any other target value (torch's rule). ``target``
    broadcasts with ``input`` (possibly to a larger shape) and is not differentiable. The result
    has the dtype of ``input``; an integer input works with ``'none'`` and ``'sum'`` (int64), as
    in torch, and its margin is truncated to the integer dtype.
    """
    fn = "hinge_embedding_loss"
    if size_average is not None or reduce is not None:
        reduction = R.legacy_get_string(size_average, reduce)
    code = R.get_enum(reduction)
    _require_tensor(fn, "input", 1, input)
    _require_tensor(fn, "target", 2, target)
    if type(margin) is not float:
        margin = _require_float(fn, "margin", 3, margin)
    integral = not (input.dtype.is_floating_point or input.dtype.is_complex)
    if integral:
        _no_bool_arithmetic(fn, "input", input, "computes margin - input")
        # torch fills a tensor of the input's dtype with the margin (truncating it)
        info = torch.iinfo(input.dtype)
        if not (info.min <= margin <= info.max):
            raise RuntimeError(
                f"{fn}: margin={margin} cannot be converted to the dtype of input "
                f"({_name(input)}) without overflow"
            )
    _no_complex(fn, input.dtype, "input")
    if target.shape != input.shape:
        _check_broadcastable(fn, "target", target, "input", input.shape)
    if integral and code == R.MEAN:
        raise RuntimeError(
            f"{fn}: reduction='mean' needs a floating-point input (the mean of an integer "
            f"loss has no dtype, as in torch), got input of dtype {_name(input)}"
        )
    if target.requires_grad:
        target = target.detach()  # a selector: the loss does not depend on it (as in torch)
    # with_coeff: the forward computes the int8 coefficient the backward needs alongside the loss
    with_coeff = input.requires_grad and torch.is_grad_enabled()
    return _hinge_embedding(input, target, margin, code, with_coeff)[0]


# --------------------------------------------------------------------------------------------
# CosineEmbedding


def cosine_embedding_loss(
    input1: Tensor,
    input2: Tensor,
    target: Tensor,
    margin: float = 0,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> Tensor:
    r"""Cosine embedding loss; see :class:`torchloss.CosineEmbeddingLoss`.

    With :math:`c = \frac{\sum x_1 x_2}{\sqrt{(\sum x_1^2 + \epsilon)(\sum x_2^2 + \epsilon)}}`
    over the last dimension (:math:`\epsilon = 10^{-12}`, as torch): :math:`1 - c` where
    :math:`y = 1`, :math:`\max(0, c - \text{margin})` where :math:`y = -1`, 0 for any other
    target value. ``input1`` and ``input2`` are ``(N, D)`` with a ``(N)`` target, or ``(D)``
    with a 0-d target; they broadcast against each other, and the target against the batch.
    The target is not differentiable. The result has the promoted dtype of the inputs (the
    default floating dtype for integer or bool inputs).

    Differences from torch: float16/bfloat16 are computed in float32 (torch's float16 result is
    NaN for a zero vector), and the denominator :math:`\sqrt{q_1 q_2}` falls back to
    :math:`\sqrt{q_1}\sqrt{q_2}` where the product overflows (torch's cosine becomes 0 there).
    """
    fn = "cosine_embedding_loss"
    if size_average is not None or reduce is not None:
        reduction = R.legacy_get_string(size_average, reduce)
    code = R.get_enum(reduction)
    _require_tensor(fn, "input1", 1, input1)
    _require_tensor(fn, "input2", 2, input2)
    _require_tensor(fn, "target", 3, target)
    if type(margin) is not float:
        margin = _require_float(fn, "margin", 4, margin)
    if target.dim() > 1:
        raise RuntimeError(
            f"{fn}: 0D or 1D target tensor expected, multi-target not supported (got a target "
            f"of shape {tuple(target.shape)})"
        )
    expected = target.dim() + 1
    if input1.dim() != expected or input2.dim() != expected:
        raise RuntimeError(
            f"{fn}: {target.dim()}D target tensor expects {expected}D input tensors, but found "
            f"input1 of shape {tuple(input1.shape)} and input2 of shape {tuple(input2.shape)}"
        )
    if input2.shape != input1.shape or target.shape != input1.shape[:-1] or input1.dtype != input2.dtype or not input1.dtype.is_floating_point:
        # (one shape, a per-sample target and one floating dtype raise none of these)
        _check_broadcastable(fn, "input2", input2, "input1", input1.shape)
        _no_complex(fn, result_type(input1, input2), "inputs")
        batch = broadcast_shape(input1.shape[:-1], input2.shape[:-1])
        _check_broadcastable(fn, "target", target, "batch", batch)
    if target.requires_grad:
        target = target.detach()  # a selector: the loss does not depend on it (as in torch)
    # with_grad: the forward prepares the per-sample coefficients of the backward
    with_grad = torch.is_grad_enabled() and (input1.requires_grad or input2.requires_grad)
    return _cosine_embedding(input1, input2, target, margin, code, with_grad)[0]


# ============================================================================================
# Triplet: TripletMargin, TripletMarginWithDistance
#
# Triplet margin losses: ``triplet_margin_loss`` and ``triplet_margin_with_distance_loss``.
#
# Validation follows torch's order, so that a call with several problems raises torch's exception
# first. ``triplet_margin_loss``: the reduction (and the legacy ``size_average``/``reduce`` pair),
# ``margin > 0``, the argument types (ATen's parser), the equal ranks, then for each distance in
# turn (``d(anchor, positive)``, ``d(anchor, negative)``, with ``swap`` ``d(positive, negative)``)
# bool operands, broadcasting and an empty last dimension where the norm has no identity, and
# last the broadcasting of the distances against each other. ``triplet_margin_with_distance_loss``
# (pure Python in torch): the reduction (``'elementwise_mean'`` is rejected), ``margin > 0``, the
# equal ranks, then the distances.
#
# The default distance (``None``, or the :class:`~torchloss.modules.PairwiseDistance` a
# ``TripletMarginWithDistanceLoss`` module creates) runs through the fused, hand-differentiated
# :class:`~torchloss._autograd.triplet.TripletMarginLossFunction`. Any other ``distance_function``
# is called as given, in torch's order (``(anchor, positive)``, ``(anchor, negative)``, then
# ``(positive, negative)`` with swap), and autograd differentiates it; its distances feed one
# :class:`~torchloss._autograd.triplet.TripletDistanceHingeFunction` node (margin, swap, hinge and
# reduction).

# Module-global Dispatch objects: the Function, or its jvp-less twin under torch.compile.
_triplet = Dispatch(TripletMarginLossFunction)
_triplet_hinge = Dispatch(TripletDistanceHingeFunction)

_PLAIN_REDUCTIONS = ("mean", "sum", "none")
# torch.pairwise_distance's defaults: the distance of triplet_margin_with_distance_loss
_DEFAULT_P, _DEFAULT_EPS = 2.0, 1e-6


# --------------------------------------------------------------------------------------------
# Checks


def _as_float(fn: str, name: str, position: int, value) -> float:
    """``value`` as a float, as ATen's argument parser reads a ``float`` argument (Python numbers
    and one-element tensors); TypeError otherwise."""
    if type(value) is float:
        return value
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, Tensor) and value.numel() == 1 and not value.is_complex():
        return float(value)
    raise TypeError(f"{fn}(): argument '{name}' (position {position}) must be float, not {type(value).__name__}")


def _check_margin(margin) -> None:
    if margin <= 0:
        raise ValueError(f"margin must be greater than 0, got {margin}")


def _check_ranks(anchor, positive, negative) -> None:
    a_dim, p_dim, n_dim = anchor.ndim, positive.ndim, negative.ndim
    if not (a_dim == p_dim and p_dim == n_dim):
        raise RuntimeError(
            f"The anchor, positive, and negative tensors are expected to have the same number of "
            f"dimensions, but got: anchor {a_dim}D, positive {p_dim}D, and negative {n_dim}D inputs"
        )


def _broadcast(x: tuple, y: tuple) -> tuple | None:
    """The broadcast of two shapes, or ``None`` if they do not broadcast."""
    try:
        return tuple(broadcast_shape(x, y))
    except RuntimeError:
        return None


def _check_rows(fn: str, names: tuple[str, str], shapes: tuple) -> tuple:
    """The broadcast of two per-row shapes; RuntimeError naming both if they do not broadcast."""
    shape = _broadcast(*shapes)
    if shape is None:
        raise RuntimeError(
            f"{fn}: the distances {names[0]} of shape {list(shapes[0])} and {names[1]} of shape "
            f"{list(shapes[1])} do not broadcast against each other (the triplets' batch "
            "dimensions of anchor, positive and negative must be broadcastable)"
        )
    return shape


def _check_distance_inputs(fn: str, x: Tensor, x_name: str, y: Tensor, y_name: str, q: float) -> tuple:
    """The checks of torch's ``pairwise_distance(x, y, q)`` (``x - y + eps``, then the norm over
    the last dimension), in its order; returns the shape of the distance."""
    if x.dtype == torch.bool or y.dtype == torch.bool:
        which = f"{x_name} and {y_name} are" if x.dtype == y.dtype else f"{x_name if x.dtype == torch.bool else y_name} is"
        raise RuntimeError(
            f"{fn}: {which} bool; the distance d({x_name}, {y_name}) subtracts {y_name} from "
            f"{x_name}, which torch refuses for bool tensors: expected numeric tensors"
        )
    shape = _broadcast(x.shape, y.shape)
    if shape is None:
        _check_broadcastable(fn, y_name, y, x_name, x.shape)  # raises, naming the dimension
    features = shape[-1] if len(shape) else 1
    if features == 0 and (q < 0 or q == math.inf):
        raise RuntimeError(
            f"{fn}: cannot compute the p={q} norm of d({x_name}, {y_name}): the last dimension of "
            f"{x_name} and {y_name} is empty and this norm has no identity (expected p >= 0 and "
            "finite, or at least one feature)"
        )
    return shape[:-1]


def _triplet_with_grad(anchor: Tensor, positive: Tensor, negative: Tensor) -> bool:
    """Whether a backward will follow (grad mode on, an input requiring grad): the fused Function
    then prepares its per-row backward weights in the forward."""
    return torch.is_grad_enabled() and (anchor.requires_grad or positive.requires_grad or negative.requires_grad)


def _check_triplet(fn: str, anchor: Tensor, positive: Tensor, negative: Tensor, q: float, swap: bool) -> None:
    shape = anchor.shape
    if (
        positive.shape == shape
        and negative.shape == shape
        and (not shape or shape[-1] != 0)
        and torch.bool not in (anchor.dtype, positive.dtype, negative.dtype)
    ):
        return  # the usual call (one shape, features, no bool): none of the errors below applies
    rows_pos = _check_distance_inputs(fn, anchor, "anchor", positive, "positive", q)
    rows_neg = _check_distance_inputs(fn, anchor, "anchor", negative, "negative", q)
    if swap:
        rows_swap = _check_distance_inputs(fn, positive, "positive", negative, "negative", q)
        rows_neg = _check_rows(fn, ("d(anchor, negative)", "d(positive, negative)"), (rows_neg, rows_swap))
        _check_rows(fn, ("d(anchor, positive)", "min(d(anchor, negative), d(positive, negative))"), (rows_pos, rows_neg))
    else:
        _check_rows(fn, ("d(anchor, positive)", "d(anchor, negative)"), (rows_pos, rows_neg))


# --------------------------------------------------------------------------------------------
# TripletMarginLoss


def triplet_margin_loss(
    anchor: Tensor,
    positive: Tensor,
    negative: Tensor,
    margin: float = 1.0,
    p: float = 2,
    eps: float = 1e-06,
    swap: bool = False,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> Tensor:
    r"""Triplet margin loss; see :class:`torchloss.TripletMarginLoss`.

    :math:`\ell = \max(0, \text{margin} + d(a, p) - d(a, n))` per triplet, with the pairwise
    distance :math:`d(x, y) = \lVert x - y + \text{eps} \rVert_p` over the last dimension (``eps``
    is added to the difference vector, as torch) and, with ``swap``, :math:`d(a, n)` replaced by
    :math:`\min(d(a, n), d(p, n))`. ``anchor``, ``positive`` and ``negative`` have the same rank
    (``(D)`` gives a 0-d loss, ``(N, D)`` an ``(N)`` one for ``'none'``, more leading dimensions
    are more batch dimensions) and broadcast against each other. ``p`` is any float: ``inf``
    and ``-inf`` are the max and min norms, 0 counts non-zero components (no gradient), a negative
    ``p`` is accepted. All three inputs are differentiable; integer inputs give a loss of the
    default dtype, complex ones a real loss.

    The graph is one torchloss node, which keeps the inputs and the per-triplet distances for
    backward (torch keeps every difference vector).
    """
    fn = "triplet_margin_loss"
    if size_average is not None or reduce is not None:
        reduction = R.legacy_get_string(size_average, reduce)
    code = R.get_enum(reduction)
    _check_margin(margin)
    _require_tensor(fn, "anchor", 1, anchor)
    _require_tensor(fn, "positive", 2, positive)
    _require_tensor(fn, "negative", 3, negative)
    margin = _as_float(fn, "margin", 4, margin)
    q = _as_float(fn, "p", 5, p)
    eps = _as_float(fn, "eps", 6, eps)
    if not isinstance(swap, bool):
        raise TypeError(f"{fn}(): argument 'swap' (position 7) must be bool, not {type(swap).__name__}")
    _check_ranks(anchor, positive, negative)
    _check_triplet(fn, anchor, positive, negative, q, swap)
    return _triplet(anchor, positive, negative, margin, q, eps, swap, code, _triplet_with_grad(anchor, positive, negative))[0]


# --------------------------------------------------------------------------------------------
# TripletMarginWithDistanceLoss


def _fused_distance(distance_function) -> tuple[float, float] | None:
    """``(p, eps)`` if ``distance_function`` is torch's pairwise distance that torchloss computes
    itself: ``None`` (the default), or a torchloss ``PairwiseDistance`` module without hooks or
    ``keepdim`` (what ``TripletMarginWithDistanceLoss`` creates by default); else ``None``."""
    if distance_function is None:
        return _DEFAULT_P, _DEFAULT_EPS
    fused = getattr(distance_function, "_triplet_fused_distance", None)
    return fused() if callable(fused) else None


def _check_distance(fn: str, name: str, d) -> None:
    if not isinstance(d, Tensor):
        raise TypeError(
            f"{fn}: distance_function must return a Tensor of distances, got "
            f"{type(d).__name__} for {name}"
        )


def _check_user_distances(fn: str, d_pos, d_neg, d_swap) -> None:
    """torch's errors for ``clamp_min(margin + d_pos - delta, 0)``, ``delta = d_neg`` or
    ``minimum(d_neg, d_swap)``, on the distances a user's function returned."""
    names = ("distance_function(anchor, positive)", "distance_function(anchor, negative)")
    _check_distance(fn, names[0], d_pos)
    _check_distance(fn, names[1], d_neg)
    distances = (d_pos, d_neg)
    if d_swap is not None:
        _check_distance(fn, "distance_function(positive, negative)", d_swap)
        distances += (d_swap,)
    complex_ = [d for d in distances if d.is_complex()]
    if complex_:
        message = (
            f"{fn}: distance_function must return real distances, got {_name(complex_[0])} "
            "(the hinge max(0, margin + d(a, p) - d(a, n)) is not defined for complex values)"
        )
        # torch fails in minimum() with swap (RuntimeError), else in clamp_min()
        raise (RuntimeError if d_swap is not None else NotImplementedError)(message)
    rows = d_neg.shape
    delta_bool = d_neg.dtype == torch.bool
    if d_swap is not None:
        rows = _check_rows(fn, names[1:] + ("distance_function(positive, negative)",), (d_neg.shape, d_swap.shape))
        delta_bool = delta_bool and d_swap.dtype == torch.bool
    if delta_bool:
        raise RuntimeError(
            f"{fn}: distance_function returned bool distances for {names[1]}; the loss subtracts "
            "them from margin + d(anchor, positive), which torch refuses for bool tensors"
        )
    _check_rows(fn, (names[0], "the negative distance"), (d_pos.shape, rows))


def triplet_margin_with_distance_loss(
    anchor: Tensor,
    positive: Tensor,
    negative: Tensor,
    *,
    distance_function: Callable[[Tensor, Tensor], Tensor] | None = None,
    margin: float = 1.0,
    swap: bool = False,
    reduction: str = "mean",
) -> Tensor:
    r"""Triplet margin loss with a custom distance; see :class:`torchloss.TripletMarginWithDistanceLoss`.

    :math:`\ell = \max(0, \text{margin} + f(a, p) - f(a, n))`, with :math:`f(a, n)` replaced by
    :math:`\min(f(a, n), f(p, n))` with ``swap``; reduced over whatever shape ``f`` returns.
    ``distance_function`` ``None`` is ``torch.pairwise_distance`` (``p = 2``, ``eps = 1e-6``),
    computed by torchloss's own fused Function (one node). Any other function is called as given
    (``f(anchor, positive)``, ``f(anchor, negative)``, with swap ``f(positive, negative)``, as
    torch does) and differentiated by autograd; margin, swap, hinge and reduction are one
    torchloss node on top of its graph. No legacy ``size_average``/``reduce``; ``reduction``
    must be ``'none'``, ``'mean'`` or ``'sum'`` (``'elementwise_mean'`` is rejected, as torch).
    """
    fn = "triplet_margin_with_distance_loss"
    if reduction not in _PLAIN_REDUCTIONS:
        raise ValueError(f"{reduction} is not a valid value for reduction")
    _check_margin(margin)
    _check_ranks(anchor, positive, negative)
    code = R.get_enum(reduction)
    fused = _fused_distance(distance_function)
    if fused is not None:
        # torch.pairwise_distance(anchor, positive) etc. take tensors only (TypeError)
        _require_tensor(fn, "anchor", 1, anchor)
        _require_tensor(fn, "positive", 2, positive)
        _require_tensor(fn, "negative", 3, negative)
        q, eps = fused
        swap = bool(swap)
        _check_triplet(fn, anchor, positive, negative, q, swap)
        with_grad = _triplet_with_grad(anchor, positive, negative)
        return _triplet(anchor, positive, negative, float(margin), q, eps, swap, code, with_grad)[0]
    d_pos = distance_function(anchor, positive)
    d_neg = distance_function(anchor, negative)
    d_swap = distance_function(positive, negative) if swap else None
    _check_user_distances(fn, d_pos, d_neg, d_swap)
    return _triplet_hinge(d_pos, d_neg, d_swap, float(margin), code)[0]


# --------------------------------------------------------------------------------------------
# Connectionist temporal classification
#
# Validation follows torch's order (``torch.ctc_loss`` then ``ctc_loss_allocate_outputs``): the
# reduction name (Python), the argument types (the overload resolution: lengths are both tensors
# or both int sequences), the log-probability dtype, the rank of ``log_probs``, ``blank``, the
# length shapes, an empty ``log_probs``, the targets' shape, then the length values. The values
# are read on the host for CPU tensors and lists (torch's CPU kernel does the same); on other
# devices and under ``torch.compile`` they become ``torch._assert_async`` checks (no sync).
#
# The Function receives one layout: ``(T, N, C)`` log-probabilities, padded ``(N, S)`` int64
# targets and int64 ``(N)`` lengths; concatenated targets are scattered into a padded tensor here.

_ctc = Dispatch(CTCLossFunction)


def _ctc_lengths(value, name: str, device) -> Tensor:
    if isinstance(value, Tensor):
        if value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
            raise RuntimeError(f"{name} must be integral (got a {str(value.dtype).replace('torch.', '')} tensor)")
        return value.to(device=device, dtype=torch.int64).reshape(-1)
    return torch.tensor([operator.index(v) for v in value], dtype=torch.int64, device=device)


def _ctc_type_error(log_probs, targets, input_lengths, target_lengths, blank, zero_infinity) -> None:
    """torch's overload resolution: Tensor, Tensor, then two tensors or two int sequences."""
    def is_int_seq(v):
        return isinstance(v, (list, tuple)) and all(
            hasattr(e, "__index__") and not isinstance(e, bool) for e in v
        )

    ok = isinstance(log_probs, Tensor) and isinstance(targets, Tensor)
    both_tensors = isinstance(input_lengths, Tensor) and isinstance(target_lengths, Tensor)
    both_lists = is_int_seq(input_lengths) and is_int_seq(target_lengths)
    ok = ok and (both_tensors or both_lists)
    ok = ok and hasattr(blank, "__index__") and not isinstance(blank, bool)
    ok = ok and isinstance(zero_infinity, bool)
    if not ok:
        got = ", ".join(
            type(v).__name__ for v in (log_probs, targets, input_lengths, target_lengths, blank, zero_infinity)
        )
        raise TypeError(
            f"ctc_loss() received an invalid combination of arguments - got ({got}), but expected "
            "(Tensor log_probs, Tensor targets, tuple of ints input_lengths, tuple of ints "
            "target_lengths, int blank, int reduction, bool zero_infinity) or (Tensor log_probs, "
            "Tensor targets, Tensor input_lengths, Tensor target_lengths, int blank, int "
            "reduction, bool zero_infinity)"
        )


def _ctc_host_values(t: Tensor) -> list[int] | None:
    """The values of a length tensor when reading them costs no device synchronisation."""
    if torch.compiler.is_compiling() or t.device.type != "cpu":
        return None
    if torch._C._functorch.is_functorch_wrapped_tensor(t):
        return None
    return t.tolist()


def _ctc_check_values(il: Tensor, tl: Tensor, T: int, padded_S: int | None) -> list[int] | None:
    """Checks the length values; returns the target lengths when they were read on the host."""
    il_v, tl_v = _ctc_host_values(il), _ctc_host_values(tl)
    if il_v is None or tl_v is None:
        torch._assert_async((il <= T).all() & (il >= 0).all(), f"Expected input_lengths to lie in [0, {T}]")
        torch._assert_async((tl >= 0).all(), "Expected target_lengths to be non-negative")
        if padded_S is not None:
            torch._assert_async((tl <= padded_S).all(), f"Expected target_lengths to be at most {padded_S}")
        return None
    suffix = " (while checking arguments for ctc_loss_allocate_outputs)"
    for v in il_v:
        if v > T:
            raise RuntimeError(f"Expected input_lengths to have value at most {T}, but got value {v}{suffix}")
        if v < 0:
            raise RuntimeError(f"Expected input_lengths to have value at least 0, but got value {v}{suffix}")
    for v in tl_v:
        if v < 0:
            raise RuntimeError(f"Expected target_lengths to have value at least 0, but got value {v}{suffix}")
    if padded_S is not None:
        for v in tl_v:
            if v > padded_S:
                raise RuntimeError(
                    f"Expected tensor to have size at least {v} at dimension 1, but got size "
                    f"{padded_S} for argument #2 'targets'{suffix}"
                )
    return tl_v


def _ctc_pad_concatenated(targets: Tensor, tl: Tensor) -> Tensor:
    """``(N, S_max)`` int64 from concatenated targets (``S_max`` read on the host when free,
    else bounded by the total length, which needs no synchronisation)."""
    values = _ctc_host_values(tl)
    s_max = max(values, default=0) if values is not None else targets.shape[0]
    N = tl.shape[0]
    offsets = torch.cumsum(tl, 0) - tl  # (N)
    j = torch.arange(s_max, device=targets.device)
    idx = (offsets.unsqueeze(1) + j).clamp(max=max(targets.shape[0] - 1, 0))
    if targets.shape[0] == 0:
        return torch.zeros((N, s_max), dtype=torch.int64, device=targets.device)
    return targets.long()[idx]  # positions j >= tl[n] are read but never used


def ctc_loss(
    log_probs: Tensor,
    targets: Tensor,
    input_lengths,
    target_lengths,
    blank: int = 0,
    reduction: str = "mean",
    zero_infinity: bool = False,
) -> Tensor:
    r"""Connectionist temporal classification loss; see :class:`torchloss.CTCLoss`.

    ``log_probs`` ``(T, N, C)`` or unbatched ``(T, C)``; ``targets`` padded ``(N, S)`` or
    concatenated ``(sum(target_lengths))`` (``(S)`` unbatched); lengths as tensors (any integer
    dtype) or sequences of ints. The per-sample loss is :math:`-\log p(l_n \mid x_n)` over the
    first ``input_lengths[n]`` frames (``inf`` for an impossible alignment, 0 then with
    ``zero_infinity``); ``'mean'`` divides each by ``max(target_length, 1)`` and averages. The
    gradient is torch's, ``exp(log_probs) - posterior`` (exact after ``log_softmax``); double
    backward and forward-mode AD are exact derivatives of that gradient (see
    :mod:`torchloss._autograd.ctc`). float16/bfloat16 are computed in float32.
    """
    code = R.get_enum(reduction)
    _ctc_type_error(log_probs, targets, input_lengths, target_lengths, blank, zero_infinity)
    blank = operator.index(blank)
    if not (log_probs.is_floating_point() and not log_probs.is_complex()):
        raise NotImplementedError(
            f"ctc_loss: expected floating-point log_probs, got {str(log_probs.dtype).replace('torch.', '')}"
        )
    if targets.is_complex() or targets.dtype == torch.bool:
        raise RuntimeError(f"ctc_loss: expected integer targets, got {targets.dtype}")
    device = log_probs.device
    il = _ctc_lengths(input_lengths, "input_lengths", device)
    tl = _ctc_lengths(target_lengths, "target_lengths", device)
    unbatched = log_probs.dim() == 2
    x = log_probs.unsqueeze(1) if unbatched else log_probs
    if unbatched:
        targets = targets.unsqueeze(0)
    if x.dim() != 3:
        raise RuntimeError(
            f"Expected 3-dimensional tensor, but got {x.dim()}-dimensional tensor for argument "
            "#1 'log_probs' (while checking arguments for ctc_loss_allocate_outputs)"
        )
    T, N, C = x.shape
    if blank < 0 or blank >= C:
        raise RuntimeError(f"blank must be in label range (got blank={blank} for {C} classes)")
    if il.numel() != N:
        raise RuntimeError(f"input_lengths must be of size batch_size ({il.numel()} != {N})")
    if tl.numel() != N:
        raise RuntimeError(f"target_lengths must be of size batch_size ({tl.numel()} != {N})")
    if x.numel() == 0:
        raise RuntimeError("log_probs tensor must not be empty")
    suffix = " (while checking arguments for ctc_loss_allocate_outputs)"
    if targets.dim() == 1:
        total = _ctc_host_values(tl)
        if total is not None and targets.shape[0] != sum(total):
            raise RuntimeError(
                f"Expected tensor to have size {sum(total)} at dimension 0, but got size "
                f"{targets.shape[0]} for argument #2 'targets'{suffix}"
            )
        _ctc_check_values(il, tl, T, None)
        padded = _ctc_pad_concatenated(targets, tl)
    elif targets.dim() == 2:
        if targets.shape[0] != N:
            raise RuntimeError(
                f"Expected tensor to have size {N} at dimension 0, but got size "
                f"{targets.shape[0]} for argument #2 'targets'{suffix}"
            )
        tl_v = _ctc_check_values(il, tl, T, targets.shape[1])
        padded = targets.long()
        # like torch, size the recursions by the longest target rather than the padding (a view)
        s_max = max(tl_v, default=0) if tl_v is not None else padded.shape[1]
        if s_max < padded.shape[1]:
            padded = padded[:, :s_max]
    else:
        raise RuntimeError(
            f"Expected 1 to 2 dimensions, but got {targets.dim()}-dimensional tensor for "
            f"argument #2 'targets'{suffix}"
        )
    with_grad = torch.is_grad_enabled() and x.requires_grad
    return _ctc(log_probs, padded, il, tl, blank, code, zero_infinity, with_grad)[0]
