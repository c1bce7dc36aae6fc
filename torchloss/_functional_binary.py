"""The binary losses' public functions: ``binary_cross_entropy``,
``binary_cross_entropy_with_logits`` and ``soft_margin_loss`` (re-exported by
:mod:`torchloss.functional`).

Each validates its arguments in the order torch does, with torch's exception types (so the same
bad call fails the same way first), then calls one Function from :mod:`torchloss._autograd.binary`.
Shapes are checked with plain integer arithmetic rather than by building expanded views, so the
autograd graph of a loss stays a single torchloss node.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import _reduction as R
from ._autograd._base import Dispatch
from ._autograd.binary import BCELossFunction, BCEWithLogitsLossFunction, SoftMarginLossFunction

__all__ = [
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "soft_margin_loss",
]

# Module-global Dispatch objects: the Function, or its jvp-less twin under torch.compile.
_bce = Dispatch(BCELossFunction)
_bce_logits = Dispatch(BCEWithLogitsLossFunction)
_soft_margin = Dispatch(SoftMarginLossFunction)


# --------------------------------------------------------------------------------------------
# Checks


def _name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


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
