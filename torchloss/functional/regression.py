"""Regression: L1, MSE, SmoothL1, Huber (validation in torch's order, legacy arguments, dispatch)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .. import _native as native
from .. import _reduction as R
from .._autograd._base import Dispatch
from .._autograd.regression import (
    MEAN_BY_WEIGHT,
    HuberLossFunction,
    L1LossFunction,
    MSELossFunction,
    SmoothL1LossFunction,
)
from ._common import (
    _check_broadcast,
    _name,
    _require_floating,
    _warn_size,
    _weighted_reduction,
)

_l1 = Dispatch(L1LossFunction)
_mse = Dispatch(MSELossFunction)
_smooth_l1 = Dispatch(SmoothL1LossFunction)
_huber = Dispatch(HuberLossFunction)


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
        _check_weight_size(weight, input)
        # torch's weighted path subtracts (a bool is refused) before it checks the reduction
        _no_bool_subtraction("l1_loss", input, target)
        code = _weighted_reduction(reduction, weight, input, MEAN_BY_WEIGHT)
    else:
        code = R.get_enum(reduction)
    # torch's l1_loss is (input - target).abs(), and torch refuses to subtract a bool tensor
    _no_bool_subtraction("l1_loss", input, target)
    # (an empty 'none' call stays on the reference: the L1 kernel's backward crashed on it)
    if weight is None and native.module is not None and input.numel() and _regression_native(input, target):
        return native.module.l1_loss(input, target, code)  # (csrc/regression.cpp)
    return _l1(input, target, weight, code, _l1_keep_sign(input, target, weight))[0]


def _check_weight_size(weight: Tensor, input: Tensor) -> None:
    if weight.size() != input.size():
        raise ValueError("Weights and input must have the same size.")


def _no_bool_subtraction(fn: str, input: Tensor, target: Tensor) -> None:
    if input.dtype == torch.bool or target.dtype == torch.bool:
        raise RuntimeError(
            f"{fn}: Subtraction, the `-` operator, with a bool tensor is not supported "
            f"(input {_name(input)}, target {_name(target)})"
        )


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
        _check_weight_size(weight, input)
        # torch's weighted path is (input - target) ** 2 in Python: a bool is refused, before
        # the reduction is checked
        _no_bool_subtraction("mse_loss", input, target)
        code = _weighted_reduction(reduction, weight, input, MEAN_BY_WEIGHT)
    else:
        code = R.get_enum(reduction)
    if not (input.dtype == target.dtype and input.dtype.is_floating_point):
        # (a floating weight makes torch's weighted formula, w (x - y)^2, floating)
        if weight is None or not weight.dtype.is_floating_point:
            _require_floating("mse_loss", input, target)
    if weight is None and native.module is not None and _regression_native(input, target):
        return native.module.mse_loss(input, target, code)  # (csrc/regression.cpp)
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
        if input.dtype == torch.bool or target.dtype == torch.bool:
            # torch's beta = 0 is its l1_loss, which subtracts: a bool is refused
            raise RuntimeError("smooth_l1_loss (beta=0): Subtraction, the `-` operator, with a bool tensor is not supported")
        return _l1(input, target, None, code, _l1_keep_sign(input, target, None))[0]
    if isinstance(beta, Tensor) and beta.dim() != 0:  # torch's argument parser
        raise TypeError("smooth_l1_loss(): argument 'beta' (position 4) must be float, not Tensor")
    if not beta >= 0:  # (NaN too, as torch's check)
        raise RuntimeError(
            f"smooth_l1_loss does not support negative values for beta (got beta={beta})."
        )
    if not (input.dtype == target.dtype and input.dtype.is_floating_point):
        _require_floating("smooth_l1_loss", input, target)
    # (beta = inf stays on the reference: its gradient at d = ±inf is sign(d), as torch's)
    if native.module is not None and 0 < beta < math.inf and _regression_native(input, target):
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
    if isinstance(delta, Tensor) and delta.dim() != 0:  # torch's argument parser
        raise TypeError("huber_loss(): argument 'delta' (position 4) must be float, not Tensor")
    if not delta > 0:  # (NaN too, as torch's check)
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
native.REFERENCES["mse_loss"] = lambda t, s: MSELossFunction.apply(t[0], t[1], None, int(s[0]))


def _regression_native(input: Tensor, target: Tensor) -> bool:
    return (
        input.dtype in _REGRESSION_NATIVE_DTYPES
        and input.dtype == target.dtype
        and input.shape == target.shape
        and input.is_contiguous()
        and target.is_contiguous()
        and native.eager(input, target)
    )


