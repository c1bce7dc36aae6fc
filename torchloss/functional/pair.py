"""Pair: MarginRanking, HingeEmbedding, CosineEmbedding."""

from __future__ import annotations

import numbers

import torch
from torch import Tensor

from .. import _reduction as R
from .._autograd._base import Dispatch, broadcast_shape, result_type
from .._autograd.pair import (
    CosineEmbeddingLossFunction,
    HingeEmbeddingLossFunction,
    MarginRankingLossFunction,
)
from ._common import _check_broadcastable, _name, _require_tensor

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
            f"{fn} : All input tensors should have same dimension but got sizes: input1: "
            f"{input1.shape}, input2: {input2.shape}, target: {target.shape} ({fn}: input1, input2 "
            f"and target must have the same number of dimensions, got input1: {tuple(input1.shape)}, "
            f"input2: {tuple(input2.shape)}, target: {tuple(target.shape)})"
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
        _check_broadcastable(fn, "target", target, "input1/input2 broadcast", shape, first=True)
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
        _check_broadcastable(fn, "target", target, "input", input.shape, first=True)
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
        _check_broadcastable(fn, "target", target, "batch", batch, first=True)
    if target.requires_grad:
        target = target.detach()  # a selector: the loss does not depend on it (as in torch)
    # with_grad: the forward prepares the per-sample coefficients of the backward
    with_grad = torch.is_grad_enabled() and (input1.requires_grad or input2.requires_grad)
    return _cosine_embedding(input1, input2, target, margin, code, with_grad)[0]


