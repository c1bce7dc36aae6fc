"""Multi-class margin: MultiMargin, MultiLabelMargin, MultiLabelSoftMargin."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import _native as native
from .. import _reduction as R
from .._autograd._base import Dispatch, broadcast_shape
from .._autograd.margin import (
    MultiLabelMarginLossFunction,
    MultiLabelSoftMarginLossFunction,
    MultiMarginLossFunction,
)
from ._common import (
    _NATIVE_FLOAT,
    _c10_name,
    _check_broadcastable,
    _name,
    _not_differentiable,
    _on_host,
    _require_reduction_string,
    _require_tensor,
    _unwrap_functorch,
)
from .pair import _require_float

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
            "Expected non-empty vector or matrix with optional 0-dim batch size, but got: "
            f"{list(input.shape)} ({fn}: expected input to be a non-empty vector (C) or matrix "
            "(N, C) with C > 0; N may be 0)"
        )
    return input.shape[-1]


def _require_floating_input(fn: str, input: Tensor) -> None:
    if not input.dtype.is_floating_point:
        # torch's kernels are dispatched over the floating types only
        raise NotImplementedError(f"{fn}: expected floating-point input, got {_name(input)}")


def _require_int64_target(fn: str, target: Tensor) -> None:
    if target.dtype != torch.int64:
        raise RuntimeError(
            f"expected scalar type Long but found {_c10_name(target)} ({fn}: expected target of dtype "
            f"int64 (class indices), got {_name(target)})"
        )


def _assert_in_range(t: Tensor, low: int, high: int, message: str) -> None:
    """RuntimeError unless every element of ``t`` lies in ``[low, high]`` (see the module notes).

    Under ``torch.func`` transforms the innermost plain tensor is checked: it holds the values
    of every member of a vmap batch, so each sample is checked.
    """
    if not torch.compiler.is_compiling():
        t = _unwrap_functorch(t)
        if _on_host(t) and t.dtype == torch.int64:
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
    # torch's argument parser, in its order (input, target, p, margin, weight): TypeError
    _require_tensor(fn, "input", 1, input)
    _require_tensor(fn, "target", 2, target)
    if isinstance(p, Tensor) and p.dim() != 0:  # p is a Scalar: a number or a 0-d tensor
        raise TypeError(f"{fn}(): argument 'p' (position 3) must be Number, not Tensor")
    if type(margin) is not float:
        if isinstance(margin, complex):  # (a Scalar: torch fails converting it to a double)
            raise RuntimeError(f"{fn}: margin must be real, got {margin} (value cannot be converted to type double)")
        margin = _require_float(fn, "margin", 4, margin)
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
            f"inconsistent weight size, expected {classes} but got {list(weight.shape)} ({fn}: one "
            "weight per class)"
        )
    _require_floating_input(fn, input)
    _require_int64_target(fn, target)
    if weight is not None and weight.dtype != input.dtype:
        raise RuntimeError(
            f"expected scalar type {_c10_name(input)} but found {_c10_name(weight)} ({fn}: expected "
            f"weight of the input's dtype ({_name(input)}), got {_name(weight)})"
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
    _require_tensor(fn, "input", 1, input)
    _require_tensor(fn, "target", 2, target)
    classes = _class_count(fn, input)
    if input.dim() <= 1:
        fits = target.dim() <= 1 and target.numel() == classes
    else:
        fits = target.shape == input.shape
    if not fits:
        raise RuntimeError(
            f"inconsistent target size: {list(target.shape)} for input of size: {list(input.shape)} "
            f"({fn}: expected target of the input's shape)"
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
    if input.dim() == 2 and _on_host(target):
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


def _number_as_tensor(fn: str, name: str, value, input: Tensor):
    if isinstance(value, Tensor):
        return value
    if isinstance(value, (bool, int, float)):
        return torch.tensor(value, dtype=input.dtype if input.dtype.is_floating_point else None, device=input.device)
    if isinstance(value, complex):  # torch returns a complex "loss", as for a complex tensor
        raise NotImplementedError(f"{fn}: {name} must be real, got a complex number")
    raise TypeError(f"{fn}(): {name} must be a Tensor or a real number, not {type(value).__name__}")


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
    _require_tensor(fn, "input", 1, input)
    # torch's formula takes a Python number as target or weight (a constant); other non-tensors
    # fail in its arithmetic with a TypeError
    target = _number_as_tensor(fn, "target", target, input)
    if weight is not None:
        weight = _number_as_tensor(fn, "weight", weight, input)
    if not input.dtype.is_floating_point:
        raise NotImplementedError(f"{fn}: expected floating-point input (logits), got {_name(input)}")
    _check_broadcastable(fn, "target", target, "input", input.shape, first=True)
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


