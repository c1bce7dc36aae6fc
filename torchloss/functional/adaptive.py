r"""Adaptive softmax as functions of the weights (torch has no functional for it).

:class:`torchloss.AdaptiveLogSoftmaxWithLoss` holds the parameters and calls these; they take the
module's tensors directly: the head's weight ``(c_0 + K, d)`` and bias (or None), the tail as a
sequence of ``(projection, output)`` weight pairs (``tail.i.0.weight``, ``tail.i.1.weight``) and
the constructor's ``cutoffs`` (without ``n_classes``, which the last output weight implies).
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Sequence

import torch
from torch import Tensor

from .. import _reduction as R
from .._autograd import adaptive as A
from .._autograd._base import Dispatch
from ._common import _on_host, _unwrap_functorch

__all__ = ["adaptive_log_prob", "adaptive_log_softmax_with_loss", "adaptive_predict"]

# the same type name and fields as torch.nn.modules.adaptive._ASMoutput
_ASMoutput = namedtuple("_ASMoutput", ["output", "loss"])

_asm = Dispatch(A.AdaptiveLogSoftmaxFunction)
_log_prob = Dispatch(A.AdaptiveLogProbFunction)


def _layout(head_weight: Tensor, tail_weights, cutoffs) -> tuple[tuple[int, ...], list[Tensor]]:
    """``(bounds, flat tail)``: :math:`(c_0, \\dots, c_K)` with ``n_classes`` last, and the tail
    weights as ``[P_1, O_1, ...]``, after checking that the shapes fit together."""
    if isinstance(cutoffs, (str, bytes)) or not all(isinstance(c, int) or (isinstance(c, Tensor) and c.numel() == 1) for c in cutoffs):
        raise TypeError(f"adaptive_log_softmax_with_loss: cutoffs should be a sequence of ints, got {cutoffs!r}")
    cutoffs = [int(c) for c in cutoffs]
    pairs = [tuple(p) for p in tail_weights]
    if len(cutoffs) == 0 or len(pairs) != len(cutoffs) or any(len(p) != 2 for p in pairs):
        raise ValueError(
            "adaptive_log_softmax_with_loss: tail_weights should hold one (projection, output) weight "
            f"pair per cutoff ({len(cutoffs)} cutoffs, {len(pairs)} entries)"
        )
    bounds = tuple(cutoffs) + (cutoffs[-1] + pairs[-1][1].shape[0],)
    if list(bounds[:-1]) != sorted(set(bounds[:-1])) or bounds[0] <= 0:
        raise ValueError("adaptive_log_softmax_with_loss: cutoffs should be unique positive integers in increasing order")
    if head_weight.dim() != 2 or head_weight.shape[0] != bounds[0] + len(pairs):
        raise RuntimeError(
            f"adaptive_log_softmax_with_loss: head_weight should have {bounds[0] + len(pairs)} rows "
            f"(shortlist {bounds[0]} + {len(pairs)} clusters), got shape {list(head_weight.shape)}"
        )
    flat = []
    for i, (P, O) in enumerate(pairs):
        size = bounds[i + 1] - bounds[i]
        if P.dim() != 2 or O.dim() != 2 or O.shape[0] != size or O.shape[1] != P.shape[0]:
            raise RuntimeError(
                f"adaptive_log_softmax_with_loss: tail_weights[{i}] should be a (h, d) projection and "
                f"a ({size}, h) output weight, got shapes {list(P.shape)} and {list(O.shape)}"
            )
        flat += [P, O]
    return bounds, flat


def _check_shapes(input: Tensor, target: Tensor) -> None:
    """torch's module's shape checks, in its order and with its messages."""
    if target.dim() == 1:
        if input.size(0) != target.size(0):
            raise RuntimeError("Input and target should have the same size in the batch dimension.")
        if input.dim() != 2:
            raise RuntimeError(f"1D target tensor expects 2D input tensors, but found inputs with size {input.size()}")
    elif target.dim() == 0:
        if input.dim() != 1:
            raise RuntimeError(f"0D target tensor expects 1D input tensors, but found inputs with size {input.size()}")
    else:
        raise RuntimeError("0D or 1D target tensor expected, multi-target not supported")
    if target.is_complex():  # torch compares the targets with the cutoffs first
        raise NotImplementedError(f'"ge" not implemented for {target.dtype} (adaptive_log_softmax_with_loss target)')
    if target.dtype not in (torch.int64, torch.int32) and target.numel():
        # torch's gather() refuses other index dtypes (uint8, bool, ...): the same exception
        raise RuntimeError(
            "gather(): Expected dtype int32/int64 for index (adaptive_log_softmax_with_loss: target "
            f"should hold class indices, got {target.dtype})"
        )


def _check_targets(target: Tensor, n_classes: int) -> None:
    """torch's RuntimeError for targets outside ``[0, n_classes)``.

    On the CPU it reads the targets (torch's module reads them everywhere); on other devices and
    while ``torch.compile`` traces it is a ``torch._assert_async``: no host synchronisation.
    """
    if target.numel() == 0:
        return
    # (meta, fake: no values, _assert_async a no-op; checked first: Dynamo cannot trace the unwrap)
    if torch.compiler.is_compiling() or not _on_host(target):
        t = target.long()
        torch._assert_async(
            ((t >= 0) & (t < n_classes)).all(), f"Target values should be in [0, {n_classes - 1}]"
        )
        return
    lo, hi = torch.aminmax(_unwrap_functorch(target).long())
    lo, hi = int(lo), int(hi)
    if lo < 0 or hi >= n_classes:
        raise RuntimeError(
            f"Target values should be in [0, {n_classes - 1}], but values in range [{lo}, {hi}] were found. "
        )


def _unused_clusters_detached(target: Tensor, bounds, flat: list[Tensor], *others) -> list[Tensor]:
    """``flat`` with the weights of clusters no target falls in detached, on eager CPU calls.

    torch's module never evaluates a cluster without rows, so its result does not depend on that
    cluster's weights: they get no gradient (``.grad`` stays None, which optimizers skip), and a
    call whose only differentiable weights are unused returns a result that does not require
    grad. The eager compact form reads the targets anyway (`_check_targets`), so it does the
    same; under ``torch.compile``, ``vmap`` or on other devices the masked form cannot know
    without a host read and gives those weights zero gradients (docs/differences.md).
    """
    if not any(t.requires_grad for t in flat) or not A._compact(target, *others, *flat):
        return flat
    k = len(flat) // 2
    cluster = torch.bucketize(target.reshape(-1), torch.tensor(bounds[:-1], dtype=target.dtype), right=True)
    used = torch.bincount(cluster, minlength=k + 1)[1:].tolist()
    return [t if used[i // 2] else t.detach() for i, t in enumerate(flat)]


def adaptive_log_softmax_with_loss(
    input: Tensor,
    target: Tensor,
    head_weight: Tensor,
    head_bias: Tensor | None,
    tail_weights: Sequence[tuple[Tensor, Tensor]],
    cutoffs: Sequence[int],
    reduction: str = "mean",
) -> _ASMoutput:
    r"""``(output, loss)`` of the adaptive softmax; see :class:`torchloss.AdaptiveLogSoftmaxWithLoss`.

    ``output`` holds each row's target log-probability (``(N)``, or ``()`` for an unbatched
    ``(d)`` input with a ``()`` target); ``loss`` is :math:`-\mathrm{mean}` of it (``'mean'``,
    the module's), :math:`-\mathrm{sum}` (``'sum'``) or the per-row negation (``'none'``). Both
    come from one hand-differentiated Function.
    """
    _check_shapes(input, target)
    if target.dtype not in (torch.int64, torch.int32):  # an empty target of another dtype (torch accepts it)
        target = target.long()
    code = R.get_enum(reduction)
    bounds, flat = _layout(head_weight, tail_weights, cutoffs)
    _check_targets(target, bounds[-1])
    flat = _unused_clusters_detached(target, bounds, flat, head_weight, head_bias, input)
    keep = A.keeps(input, target, head_weight, head_bias, flat)
    output, loss, *_ = _asm(input, target, code, bounds, keep, head_weight, head_bias, *flat)
    return _ASMoutput(output, loss)


def adaptive_log_prob(
    input: Tensor,
    head_weight: Tensor,
    head_bias: Tensor | None,
    tail_weights: Sequence[tuple[Tensor, Tensor]],
    cutoffs: Sequence[int],
) -> Tensor:
    """Log-probabilities of every class, ``(N, n_classes)`` (``(n_classes)`` for a ``(d)`` input)."""
    bounds, flat = _layout(head_weight, tail_weights, cutoffs)
    return _log_prob(input, bounds, head_weight, head_bias, *flat)


def adaptive_predict(
    input: Tensor,
    head_weight: Tensor,
    head_bias: Tensor | None,
    tail_weights: Sequence[tuple[Tensor, Tensor]],
    cutoffs: Sequence[int],
) -> Tensor:
    """The most probable class of each row (``adaptive_log_prob(...).argmax(-1)``).

    A row whose head argmax is a shortlist class needs nothing else (a tail class's
    log-probability is at most its cluster's head log-probability). Eager CPU calls evaluate the
    full distribution only for the other rows, as torch does; elsewhere (CUDA, ``torch.compile``,
    ``vmap``) every row's, and the answer is selected with ``where``: no data-dependent shapes.
    """
    bounds, flat = _layout(head_weight, tail_weights, cutoffs)
    with torch.no_grad():
        z = A._head_logits(input.reshape(-1, input.shape[-1]), head_weight, head_bias)
        best = z.argmax(-1).reshape(input.shape[:-1])
        far = best >= bounds[0]
        if A._compact(input, head_weight, head_bias, *flat) and input.dim() == 2:
            if not bool(far.any()):
                return best
            rows = far.nonzero().squeeze(1)
            full = A.log_prob_values(input.index_select(0, rows), bounds, head_weight, head_bias, flat)
            return best.index_put((rows,), full.argmax(-1))
        full = A.log_prob_values(input, bounds, head_weight, head_bias, flat)
        return torch.where(far, full.argmax(-1), best)
