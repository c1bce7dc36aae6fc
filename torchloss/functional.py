"""The public loss functions, mirroring ``torch.nn.functional``.

Each function validates its arguments in the order torch does (so the same bad call raises the
same exception type first), translates the legacy ``size_average``/``reduce`` pair, and calls one
hand-differentiated ``torch.autograd.Function`` from :mod:`torchloss._autograd`; the reduction
happens inside that Function, so the autograd graph of a loss is a single torchloss node.
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor

from . import _reduction as R
from ._autograd._base import Dispatch
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
            f"{name}: expected floating-point input and target, got {input_dtype(dtype)} "
            f"(input {input_dtype(input)}, target {input_dtype(target)})"
        )


def input_dtype(t: Tensor | torch.dtype) -> str:
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
        pair = f"input {input_dtype(input)}, target {input_dtype(target)}"
        if not torch.can_cast(result, input.dtype):
            # Huber's result has the dtype of input (torch's rule), which cannot hold this one.
            raise RuntimeError(
                f"huber_loss: the loss of {pair} is {input_dtype(result)}, which cannot be cast "
                f"to the dtype of input"
            )
        raise NotImplementedError(f"huber_loss: expected floating-point input and target, got {pair}")
    return _huber(input, target, weight, code, float(delta))


# Staged families (each adds its names to __all__).
from ._functional_binary import *  # noqa: E402,F401,F403
from ._functional_binary import __all__ as _binary_all  # noqa: E402
from ._functional_probabilistic import *  # noqa: E402,F401,F403
from ._functional_probabilistic import __all__ as _probabilistic_all  # noqa: E402

__all__ += _binary_all + _probabilistic_all
