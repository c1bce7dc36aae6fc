"""Classification: NLL, cross entropy."""

from __future__ import annotations

import math
import operator
import sys

import torch
from torch import Tensor

from .. import _native as native
from .. import _reduction as R
from .._autograd._base import Dispatch
from .._autograd.classification import (
    CrossEntropyLossFunction,
    CrossEntropyPlainFunction,
    CrossEntropyProbsLossFunction,
    NLLLossFunction,
    NLLLossPlainFunction,
)
from ._common import (
    _NATIVE_FLOAT,
    _c10_name,
    _name,
    _not_differentiable,
    _on_host,
    _require_tensor,
    _unwrap_functorch,
)
from .pair import _require_float

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
# the kernels of class weights, ignore_index and label smoothing (csrc/classification.cpp)
native.REFERENCES["cross_entropy_weighted"] = lambda t, s: CrossEntropyLossFunction.apply(
    t[0], t[1], t[2] if len(t) > 2 else None, int(s[0]), int(s[1]), s[2]
)
native.REFERENCES["nll_weighted"] = lambda t, s: NLLLossFunction.apply(
    t[0], t[1], t[2] if len(t) > 2 else None, int(s[0]), int(s[1])
)


def _try_weighted(name: str, input: Tensor, target: Tensor, weight: Tensor | None, *args):
    """The loss from the native kernel ``name`` (``cross_entropy_weighted``/``nll_weighted``:
    class weights, ``ignore_index``, label smoothing) for a validated eager call on a contiguous
    float/double ``(N, C)`` input, or None (the general reference path). A target outside
    ``[0, C)`` that is not ``ignore_index`` makes the kernel raise: the reference then raises
    torch's IndexError."""
    kernels = native.module
    if (
        kernels is None
        or input.dim() != 2
        or input.dtype not in _NATIVE_FLOAT
        or target.dtype != torch.int64
        or not (input.is_contiguous() and target.is_contiguous())
        or input.shape[0] == 0
        or (weight is not None and not (weight.dtype == input.dtype and weight.is_contiguous()))
        or not (native.eager(input, target) if weight is None else native.eager(input, target, weight))
    ):
        return None
    try:
        return getattr(kernels, name)(input, target, weight, *args)
    except RuntimeError:
        return None


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
        or not _on_host(target)
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


def _require_tensors(fn: str, input, target, weight) -> None:
    # torch's argument parser: input, target and weight (or None) must be tensors (TypeError)
    if type(input) is Tensor and type(target) is Tensor and (weight is None or type(weight) is Tensor):
        return  # (the usual case in one test: a small batch's step counts each call)
    _require_tensor(fn, "input", 1, input)
    _require_tensor(fn, "target", 2, target)
    if weight is not None:
        _require_tensor(fn, "weight", 3, weight)


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
        if target.dtype not in (torch.int64, torch.uint8):  # (torch checks the dtype first here)
            raise RuntimeError(
                f"{fn}: expected target dtype to be Long or Byte (int64 or uint8 class indices), "
                f"but got {_name(target)}"
            )
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
    if input.dim() == 2 and target.dim() == 0:
        # (an empty batch against a 0-d target: the batch sizes agree, then torch's kernel takes
        # the target's size(0))
        raise IndexError(
            "Dimension specified as 0 but tensor has no dimensions (a 0-d target of an input of "
            f"shape {list(input.shape)})"
        )
    _check_class_weight(fn, input, weight, prefix="")
    if not input.is_floating_point():
        raise NotImplementedError(f"{fn}: expected a floating-point input, got {_name(input)}")
    if weight is not None and weight.dtype != input.dtype:
        raise RuntimeError(
            f"expected scalar type {_c10_name(input)} but found {_c10_name(weight)} ({fn}: expected "
            f"weight of the input's dtype {_name(input)}, got {_name(weight)})"
        )


def _check_spatial_target_dtype(fn: str, input: Tensor, target: Tensor, code: int) -> None:
    # torch's spatial kernel (nll_loss2d, which every K-dimensional input goes through) takes
    # int64 targets only; it skips the check for an empty target unless the reduction is 'none'
    if target.dtype == torch.uint8 and input.dim() >= 3 and (target.numel() > 0 or code == R.NONE):
        raise RuntimeError(
            f"{fn}: expected scalar type Long but found Byte (uint8 targets are supported for "
            f"(C) and (N, C) inputs only, got an input of {input.dim()} dimensions)"
        )


def _n_classes(input: Tensor) -> int:
    """C of a ``(C)``, ``(N, C)`` or ``(N, C, d1, ..., dK)`` input (classes along dim 1, or 0)."""
    return input.size(0 if input.dim() == 1 else 1)


def _spatial_weight(dims: int, C: int, weight: Tensor | None, smoothing: float = 0.0, code: int = R.MEAN,
                    empty: bool = False, dtype: torch.dtype | None = None) -> Tensor | None:
    """The class weight of an index-target call, flattened when the input is K-dimensional
    (``dims >= 3``) and the weight has ``C`` elements in another shape: torch's spatial kernel
    (nll_loss2d) checks only the weight's element count there, where the other paths want
    ``(C,)``. With label smoothing torch also views the weight as ``weight.size(0)`` classes
    (IndexError for a 0-d weight, RuntimeError unless its other sizes are 1) and, for
    ``'mean'``, gathers from it (RuntimeError unless it is 1-d, or the target ``empty``): the
    same refusals here, after torch's dtype check (a weight not of the input's ``dtype`` is left
    to it)."""
    if weight is None or dims < 3 or weight.dim() == 1 or weight.numel() != C:
        return weight
    if smoothing > 0 and (dtype is None or weight.dtype == dtype):
        if weight.dim() == 0:
            raise IndexError(
                "cross_entropy: label smoothing views a class weight of shape [] by its size(0) "
                "(Dimension specified as 0 but tensor has no dimensions)"
            )
        if weight.shape[0] != C or (code == R.MEAN and not empty):
            raise RuntimeError(
                f"cross_entropy: weight tensor should be defined either for all {C} classes or no classes "
                f"but got weight tensor of shape: {list(weight.shape)} (label smoothing with "
                f"{'mean reduction' if code == R.MEAN else 'this shape'} needs a 1-d weight)"
            )
    return weight.reshape(-1)


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
    if not _on_host(target):
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
    _require_tensors("nll_loss_nd", input, target, weight)
    if type(ignore_index) is not int:
        ignore_index = _require_int("nll_loss_nd", "ignore_index", 5, ignore_index)
    if input.dim() >= 3:
        weight = _spatial_weight(input.dim(), input.size(1), weight)
    if weight is None:
        # a failed attempt wastes one gather of the targets: always worth trying
        loss = _try_plain(_nll_plain, input, target, ignore_index, code, math.inf)
        if loss is not None:
            return loss
    if weight is None or not weight.requires_grad:
        # the weighted kernel checks what torch's validation below would (it raises, and None
        # comes back, for anything it does not take): tried first, as the plain one
        loss = _try_weighted("nll_weighted", input, target, weight, code, ignore_index)
        if loss is not None:
            return loss
    _check_index_targets("nll_loss", input, target, weight)
    _check_spatial_target_dtype("nll_loss", input, target, code)
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
    if type(input) is not Tensor and _is_dtensor(input):  # class-sharded logits: torchloss.distributed
        from ..distributed import dtensor_cross_entropy

        return dtensor_cross_entropy(input, target, weight, size_average, ignore_index, reduce, reduction, label_smoothing)
    if size_average is not None or reduce is not None:
        reduction = R.legacy_get_string(size_average, reduce)
    code = R.get_enum(reduction)
    _require_tensors("cross_entropy_loss", input, target, weight)
    if type(ignore_index) is not int:
        ignore_index = _require_int("cross_entropy_loss", "ignore_index", 5, ignore_index)
    if type(label_smoothing) is not float:
        label_smoothing = _require_float("cross_entropy_loss", "label_smoothing", 6, label_smoothing)
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
        # (torch's log-softmax checks the input's dtype only when there is an element to compute:
        # an empty integer or bool input gives an empty loss of the promoted dtype)
        if not input.is_floating_point() and input.numel() > 0:
            raise NotImplementedError(f"cross_entropy: expected a floating-point input, got {_name(input)}")
        _check_complex_log_softmax(input)
        if weight is not None and weight.is_complex() and input.numel() > 0:
            # torch returns a complex "loss" (its log-softmax promotes to the weight's dtype)
            raise NotImplementedError("cross_entropy: a complex weight is not supported (probability targets)")
        _check_smoothing(smoothing)
        return _ce_probs(input, target, weight, code, smoothing)
    if input.dim() >= 3:
        weight = _spatial_weight(input.dim(), input.size(1), weight, smoothing, code, target.numel() == 0, input.dtype)
    if not smoothing and weight is None:
        # a failed attempt wastes the log-softmax: tried first only while that is a few us
        loss = _try_plain(_ce_plain, input, target, ignore_index, code, 4096)
        if loss is not None:
            return loss
    if weight is None or not weight.requires_grad:
        # weights, label smoothing, ignored targets: the weighted kernel, tried first as above
        loss = _try_weighted("cross_entropy_weighted", input, target, weight, code, ignore_index, smoothing)
        if loss is not None:
            return loss
    _check_smoothing(smoothing)
    if input.dim() == 0:
        raise IndexError(
            "cross_entropy: a 0-dimensional input has no class dimension "
            "(Dimension out of range (expected to be in range of [-1, 0], but got 1))"
        )
    if not input.is_floating_point() and input.numel() > 0:
        # (torch's log-softmax; for an empty input the NLL's checks come first)
        raise NotImplementedError(f"cross_entropy: expected a floating-point input, got {_name(input)}")
    _check_complex_log_softmax(input)
    _check_index_targets("cross_entropy", input, target, weight)
    _check_spatial_target_dtype("cross_entropy", input, target, code)
    _not_differentiable("nll_loss_forward", "weight", weight)
    _check_class_range(target, _n_classes(input), ignore_index)
    if smoothing and weight is not None and target.dtype == torch.uint8 and code == R.MEAN:
        _check_uint8_smoothing_mean(target, ignore_index)
    return _ce(input, target, weight, code, ignore_index, smoothing)


def _check_complex_log_softmax(input: Tensor) -> None:
    """torch's log-softmax of an (empty: else its dtype check came first) complex input that
    requires grad: autograd refuses the complex output (a RuntimeError, before the NLL's checks)."""
    if input.is_complex() and input.requires_grad and torch.is_grad_enabled():
        raise RuntimeError(
            "cross_entropy: _log_softmax does not support automatic differentiation for outputs "
            "with complex dtype (a complex input that requires grad)"
        )


def _check_uint8_smoothing_mean(target: Tensor, ignore_index: int) -> None:
    """torch's ``'mean'`` of the smoothing term divides by the class weights gathered at the
    non-ignored targets (after its NLL's checks): a uint8 index is refused by ``gather``, unless
    there is no such target (an empty index is not checked). ``'sum'``/``'none'`` gather nothing.
    The targets are read on the host on the CPU (as the range check does); elsewhere any
    non-empty target counts."""
    if target.numel() == 0:
        return
    if _on_host(target) and not bool((_unwrap_functorch(target).long() != ignore_index).any()):
        return
    raise RuntimeError(
        "cross_entropy: gather(): Expected dtype int32/int64 for index (uint8 targets with class "
        "weights, label smoothing and reduction='mean')"
    )


def _is_dtensor(x) -> bool:
    # a DTensor exists only once torch.distributed.tensor was imported: no import here
    mod = sys.modules.get("torch.distributed.tensor")
    return mod is not None and isinstance(x, mod.DTensor)


def _check_smoothing(smoothing: float) -> None:
    if smoothing > 1.0:
        raise RuntimeError(f"label_smoothing must be between 0.0 and 1.0. Got: {smoothing}")


