"""Binary: BCE, BCEWithLogits, SoftMargin."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import _native as native
from .. import _reduction as R
from .._autograd._base import Dispatch, broadcast_shape
from .._autograd.binary import (
    BCELossFunction,
    BCEWithLogitsLossFunction,
    SoftMarginLossFunction,
)
from ._common import (
    _NATIVE_FLOAT,
    _check_broadcastable,
    _name,
    _not_differentiable,
    _on_host,
    _require_tensor,
    _unwrap_functorch,
)

# ============================================================================================
# Binary: BCE, BCEWithLogits, SoftMargin


# Module-global Dispatch objects: the Function, or its jvp-less twin under torch.compile.
_bce = Dispatch(BCELossFunction)
_bce_logits = Dispatch(BCEWithLogitsLossFunction)
_soft_margin = Dispatch(SoftMarginLossFunction)


# --------------------------------------------------------------------------------------------
# Checks


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
        if _on_host(t):
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
        _on_host(input)
        and _on_host(target)
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
    for i, (name, t) in enumerate((("weight", weight), ("pos_weight", pos_weight))):
        if t is not None:  # torch's argument parser
            _require_tensor(fn, name, 3 + i, t)
    _not_differentiable(fn, "weight", weight)
    _not_differentiable(fn, "pos_weight", pos_weight)
    if not input.dtype.is_floating_point:
        raise NotImplementedError(f"{fn}: input must be floating point, got {_name(input.dtype)}")
    if pos_weight is not None:
        if pos_weight.dtype == torch.bool or pos_weight.dtype.is_complex:
            raise RuntimeError(f"{fn}: pos_weight must be a real number tensor, got {_name(pos_weight.dtype)}")
        _check_broadcastable(fn, "pos_weight", pos_weight, "target", target.shape, first=True)
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
    _require_tensor(fn, "input", 1, input)  # torch's argument parser
    _require_tensor(fn, "target", 2, target)
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
    if (
        native.module is not None
        and input.numel() <= _SOFT_MARGIN_NATIVE_MAX
        and input.dtype in (torch.float32, torch.float64)
        and target.dtype == input.dtype
        and target.shape == input.shape
        and input.is_contiguous()
        and target.is_contiguous()
        and native.eager(input, target)
    ):
        return native.module.soft_margin_loss(input, target, code)  # (csrc/binary.cpp)
    return _soft_margin(input, target, code)


# soft_margin_loss's kernel: small inputs only (a scalar exp and log1p per element; the
# reference's vectorised ops are faster beyond)
_SOFT_MARGIN_NATIVE_MAX = 2048
native.REFERENCES["soft_margin_loss"] = lambda t, s: SoftMarginLossFunction.apply(t[0], t[1], int(s[0]))

