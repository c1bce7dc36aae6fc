"""The public loss functions, mirroring ``torch.nn.functional``.

Each function validates its arguments in the order torch does (so the same bad call raises the
same exception type first), translates the legacy ``size_average``/``reduce`` pair, and calls one
hand-differentiated ``torch.autograd.Function`` from :mod:`torchloss._autograd`; the reduction
happens inside that Function, so the autograd graph of a loss is a single torchloss node.
"""

from __future__ import annotations

import operator
import warnings

import torch
from torch import Tensor

from . import _reduction as R
from ._autograd._base import Dispatch
from ._autograd.binary import BCELossFunction, BCEWithLogitsLossFunction, SoftMarginLossFunction
from ._autograd.classification import (
    CrossEntropyLossFunction,
    CrossEntropyProbsLossFunction,
    NLLLossFunction,
)
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
    torch.broadcast_shapes(input.shape, target.shape)


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
    _warn_size(input, target)
    if size_average is not None or reduce is not None:
        reduction = R.legacy_get_string(size_average, reduce)
    _check_broadcast(input, target)
    if weight is not None:
        code = _weighted_reduction(reduction, weight, input, MEAN_BY_WEIGHT)
    else:
        code = R.get_enum(reduction)
    return _l1(input, target, weight, code)


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
    _warn_size(input, target)
    if size_average is not None or reduce is not None:
        reduction = R.legacy_get_string(size_average, reduce)
    _check_broadcast(input, target)
    if weight is not None:
        code = _weighted_reduction(reduction, weight, input, MEAN_BY_WEIGHT)
    else:
        code = R.get_enum(reduction)
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
    _warn_size(input, target)
    if size_average is not None or reduce is not None:
        reduction = R.legacy_get_string(size_average, reduce)
    _check_broadcast(input, target)
    code = R.get_enum(reduction)
    if beta == 0.0:
        return _l1(input, target, None, code)
    if beta < 0:
        raise RuntimeError(
            f"smooth_l1_loss does not support negative values for beta (got beta={beta})."
        )
    _require_floating("smooth_l1_loss", input, target)
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
    result = torch.promote_types(input.dtype, target.dtype)
    if not (result.is_floating_point and input.dtype.is_floating_point):
        pair = f"input {_name(input)}, target {_name(target)}"
        if not torch.can_cast(result, input.dtype):
            # Huber's result has the dtype of input (torch's rule), which cannot hold this one.
            raise RuntimeError(
                f"huber_loss: the loss of {pair} is {_name(result)}, which cannot be cast "
                f"to the dtype of input"
            )
        raise NotImplementedError(f"huber_loss: expected floating-point input and target, got {pair}")
    return _huber(input, target, weight, code, float(delta))

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
        big = list(torch.broadcast_shapes(own, shape))
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
    """
    if not torch.compiler.is_compiling():
        t = _unwrap_functorch(t)
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
    _check_unit_interval(input, "input")
    _check_unit_interval(target, "target")
    if weight is not None:
        _check_fits(fn, "weight", weight, input.shape)
        if weight.dtype.is_complex:
            raise RuntimeError(
                f"{fn}: weight must be real, got {_name(weight.dtype)} (the loss is "
                f"{_name(input.dtype)})"
            )
    return _bce(input, target, weight, code)


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
    torch.broadcast_shapes(input.shape, target.shape)
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
    torch.broadcast_shapes(input.shape, target.shape, var_shape)
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
    if input.is_complex() or target.is_complex():
        raise RuntimeError(
            f"kl_div: Complex inputs not supported. (expected real floating-point input and target, "
            f"got {input.dtype} and {target.dtype})"
        )
    if not (input.is_floating_point() and target.is_floating_point()):
        raise RuntimeError(
            f"kl_div: Integral inputs not supported. (expected floating-point input and target, "
            f"got {input.dtype} and {target.dtype})"
        )
    torch.broadcast_shapes(input.shape, target.shape)
    divisor = input.size(0) if reduction == "batchmean" and input.dim() != 0 else 1
    return _kl(input, target, code, divisor, bool(log_target))


# ============================================================================================
# Classification: NLL, cross entropy


_nll = Dispatch(NLLLossFunction)
_ce = Dispatch(CrossEntropyLossFunction)
_ce_probs = Dispatch(CrossEntropyProbsLossFunction)


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
    ignore_index = _require_int("nll_loss_nd", "ignore_index", 5, ignore_index)
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
    _assert_in_range(
        target, 0, classes - 1, f"{fn}: target out of range (class indices must be in [0, {classes - 1}])"
    )
    return _multi_margin(input, target, weight, 1 if p == 1 else 2, float(margin), code)


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
    return _multilabel_margin(input, target, code)


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
        shape = torch.broadcast_shapes(input.shape, target.shape)
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


# Staged families (each adds its names to __all__).
from ._functional_pair import *  # noqa: E402,F401,F403
from ._functional_pair import __all__ as _pair_all  # noqa: E402
from ._functional_triplet import *  # noqa: E402,F401,F403
from ._functional_triplet import __all__ as _triplet_all  # noqa: E402

__all__ += _pair_all + _triplet_all
