"""Connectionist temporal classification."""

from __future__ import annotations

import operator

import torch
from torch import Tensor

from .. import _native as native
from .. import _reduction as R
from .._autograd._base import Dispatch
from .._autograd.ctc import CTCLossFunction
from ._common import _NATIVE_FLOAT, _on_host

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
# the native kernel's create_graph backward: the reference at the kernel's saved arguments
native.REFERENCES["ctc_loss"] = lambda t, s: CTCLossFunction.apply(
    t[0], t[1], t[2], t[3], int(s[0]), int(s[1]), bool(s[2]), True
)[0]


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
    ok = ok and not (isinstance(blank, Tensor) and blank.dim() != 0)  # (torch's parser)
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
    if not _on_host(t):
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
    if log_probs.dim() == 0:  # torch unsqueezes dimension 1 of an unbatched input first
        raise IndexError(
            "ctc_loss: log_probs must be (T, N, C) or (T, C), got a 0-d tensor "
            "(Dimension out of range (expected to be in range of [-1, 0], but got 1))"
        )
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
    if targets.dim() == 0:
        raise RuntimeError(
            "Expected 1 to 2 dimensions, but got 0-dimensional tensor for argument #2 'targets' "
            "(while checking arguments for ctc_loss_allocate_outputs)"
        )
    # (an unbatched call's targets are read as given, as torch's: 1-d the concatenated form, whose
    # length must be the target length, 2-d the padded form of a batch of one)
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
    kernels = native.module
    if (
        kernels is not None
        and log_probs.dtype in _NATIVE_FLOAT
        and log_probs.is_contiguous()
        and native.eager(log_probs, padded, il, tl)
    ):
        # the native kernel (torchloss/_native/csrc/ctc.cpp): the samples in parallel
        return kernels.ctc_loss(log_probs, padded, il, tl, blank, code, zero_infinity)
    with_grad = torch.is_grad_enabled() and x.requires_grad
    return _ctc(log_probs, padded, il, tl, blank, code, zero_infinity, with_grad)[0]
