"""Reduction names, legacy ``size_average``/``reduce`` translation, and the reduce/un-reduce math.

Every torchloss ``Function`` reduces inside itself, so the forward and the backward of a
reduction live here, side by side:

* forward:  ``'none'`` keeps the element-wise loss ``l``; ``'sum'`` is ``Σ l``; ``'mean'`` is
  ``Σ l / numel(l)``.
* backward: the upstream gradient ``g`` of the reduced value is spread back over the element-wise
  shape: ``∂L/∂l = g`` (sum), ``g / numel`` (mean), or ``g`` itself (none, already that shape).

Reductions travel into the Functions as the small integers ATen uses (``NONE``, ``MEAN``,
``SUM``), so that the Functions carry no strings.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

NONE = 0
MEAN = 1
SUM = 2

_ENUMS = {"none": NONE, "mean": MEAN, "sum": SUM}

LEGACY_WARNING = "size_average and reduce args will be deprecated, please use reduction='{}' instead."
ELEMENTWISE_MEAN_WARNING = (
    "reduction='elementwise_mean' is deprecated. Please use reduction='mean' instead."
)


def get_enum(reduction: str) -> int:
    """The integer code of a reduction name, as ``torch.nn._reduction.get_enum``.

    ``'elementwise_mean'`` is accepted as a deprecated alias of ``'mean'`` (with torch's warning);
    anything else raises ``ValueError("<s> is not a valid value for reduction")``.
    """
    code = _ENUMS.get(reduction) if isinstance(reduction, str) else None
    if code is not None:
        return code
    if reduction == "elementwise_mean":
        warnings.warn(ELEMENTWISE_MEAN_WARNING, stacklevel=3)
        return MEAN
    raise ValueError(f"{reduction} is not a valid value for reduction")


def legacy_get_string(size_average: bool | None, reduce: bool | None, emit_warning: bool = True) -> str:
    """Translate the deprecated ``size_average``/``reduce`` pair into a reduction name.

    A ``None`` counts as ``True``; ``reduce=False`` wins over ``size_average``. The result always
    overrides an explicit ``reduction`` argument, as in torch.
    """
    if size_average is None:
        size_average = True
    if reduce is None:
        reduce = True
    if size_average and reduce:
        ret = "mean"
    elif reduce:
        ret = "sum"
    else:
        ret = "none"
    if emit_warning:
        warnings.warn(LEGACY_WARNING.format(ret), stacklevel=3)
    return ret


def legacy_get_enum(size_average: bool | None, reduce: bool | None, emit_warning: bool = True) -> int:
    return get_enum(legacy_get_string(size_average, reduce, emit_warning))


# --------------------------------------------------------------------------------------------
# The math.


def reduce(loss: Tensor, reduction: int) -> Tensor:
    """Forward of a reduction (``loss`` is the element-wise loss)."""
    if reduction == MEAN:
        return loss.mean()
    if reduction == SUM:
        return loss.sum()
    return loss


def unreduce(grad: Tensor, shape: torch.Size, reduction: int) -> Tensor:
    """Backward of :func:`reduce`: the gradient of the element-wise loss, broadcastable to ``shape``.

    The result is a broadcast view for ``'mean'``/``'sum'`` (a 0-d tensor is enough: every
    element of the loss receives the same gradient), so callers multiply it into their
    element-wise derivative without materialising an expanded copy.
    """
    if reduction == MEAN:
        # 'mean' of an empty loss is 0/0 = NaN; its gradient is then empty, so dividing by zero
        # here is harmless.
        return grad / _numel(shape)
    return grad


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def sum_to(grad: Tensor, like: Tensor) -> Tensor:
    """Sum a gradient computed on the broadcast shape back to the shape (and dtype) of ``like``.

    An operand of a wider dtype than the gradient (a 0-d float64 operand beside float32 ones) has
    its gradient summed in its own dtype: converted first, so the sum does not round at the
    gradient's precision (one conversion, only when a sum and a widening are both needed)."""
    if grad.shape != like.shape:
        if grad.dtype != like.dtype and torch.promote_types(grad.dtype, like.dtype) == like.dtype:
            grad = grad.to(like.dtype)
        grad = grad.sum_to_size(like.shape)
    if grad.dtype != like.dtype:
        grad = grad.to(like.dtype)
    return grad
