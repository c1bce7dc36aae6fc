r"""Vocabulary-parallel cross entropy over ``torch.distributed``.

When a model's output head is split across ranks by classes (tensor parallelism), rank :math:`r`
holds the logits :math:`x_{n,c}` of its own contiguous slice of classes
:math:`c \in [o_r, o_r + C_r)` only. The cross entropy of the whole vocabulary needs, per
position, just three numbers that are sums (or a maximum) over the classes, so each rank reduces
its slice to those numbers and the ranks exchange ``O(N)`` values, never ``N x C`` logits:

* the maximum :math:`M = \max_r m_r` of the ranks' maxima :math:`m_r = \max_{c \in r} x_c`,
  then, relative to it, the sum of exponentials :math:`S = \sum_r \sum_{c \in r} e^{x_c - M}` and
  :math:`\ell = M + \log S` (the log-sum-exp);
* the target logit :math:`x_t` (the one rank holding the target contributes it, the others 0);
* with label smoothing, :math:`Z = \sum_r \sum_{c\in r} w_c (x_c - M)` and :math:`W = \sum_c
  w_c`; with class weights, the target weight :math:`w_t` (the holder's contribution).

Everything is then exactly :mod:`torchloss._autograd.classification`'s cross entropy:

.. math::
    l = (1-\varepsilon)\,w_t\,(\log S - (x_t - M)) - \frac{\varepsilon}{C}\big(Z - W \log S\big)

(0 where ignored), whose pieces are sums of terms of one sign (no large :math:`\ell` is
subtracted from a large :math:`x`), and for probability targets :math:`t' = (1-\varepsilon)t +
\varepsilon/C` the same with :math:`P = \sum_c w_c t'_c (M - x_c)` and
:math:`A = \sum_c w_c t'_c`: :math:`l = P + A \log S`.

Collectives. The forward runs **three all-reduces**, on every rank: a fixed-size metadata table
(each rank's shapes, slice, arguments, target range and checksum, any local error; ``world x
57`` int64, each rank filling its own row), so that a bad call raises on every rank instead of
hanging; the MAX of the per-position maxima (``N``); and the SUM of every per-rank sum above,
packed into one buffer (``2N`` to ``4N + 1``). Every rank receives the same reduced bits and
forms the loss from them alone, so the loss is bitwise identical on every rank. The table is
read on the host for CPU tensors (exact exception types and messages); on GPUs and under
``torch.compile`` it is checked on the device by ``torch._assert_async`` (the same asserts on
every rank: no host synchronisation, no graph break) and the layout's first class and ``C``
stay 0-dim tensors. The first-order backward needs no collective:
:math:`\partial l/\partial x_c = s_c a^s - a^t[c = t] - a^r w_c` with
:math:`s_c = e^{(x_c - M) - \log S}` is local once :math:`M`, :math:`\log S` and the target
weight (``O(N)`` values saved by the forward) are known. Forward-mode AD (``jvp``) adds one
all-gather (each rank's share of :math:`\sum_c \partial l/\partial x_c\,\dot x_c`, reduced first
for 'mean'/'sum', summed in rank order). A differentiated backward (``create_graph=True``) ties
:math:`\log S` (and for probability targets :math:`A`) back to the logits of every rank with
:class:`_AttachLogS` / :class:`_RankSum`, whose backward is one all-reduce each: double backward
adds one all-reduce (two for probability targets with a differentiable target or weight; one
more, of the upstream gradient's cotangents, when the upstream gradient requires grad). The
linear-head version's differentiated backward also enters the replicated input through
:class:`_Replicate` and leaves through :class:`_SumReplicated`, and ties :math:`\ell = M + \log
S` to the rank's head rows by :class:`_AttachLSE`: differentiating its gradient adds an
all-reduce of the cotangents of :math:`\ell` (``N``) and one of the input's (``N x in``).

``torch.func.vmap``: the logits and linear-head Functions have batch rules (:func:`_vmap_rule`,
:func:`_linear_vmap_rule`) that fold the vmapped dimension into the positions, so the same three
all-reduces carry ``B`` times the elements; :class:`_RankSum` and :class:`_SumReplicated` (the
all-reduces of a differentiated backward) have batch rules too.

Gradient semantics. The loss is replicated (the same value on every rank) and its backward takes
the upstream gradient as replicated too: each rank gets the gradient of its own logit slice
(together, exactly the gradient of the gathered logits). A replicated full-size operand (a
``(C,)`` class weight, a global-shape probability target) gets its own slice of the gradient and
zeros elsewhere: the sum over ranks is its gradient (DTensor: ``Partial``). In a differentiated
backward the cotangents are per rank (each rank differentiates its own gradient slice), which is
why the attached statistics all-reduce them.
"""

from __future__ import annotations

import struct
import sys
from typing import NamedTuple

import torch
import torch.distributed as dist
from torch import Tensor
from torch.autograd import Function

from .. import _reduction as R
from .._autograd._base import Dispatch, eager_in_place, opmath_dtype

__all__ = ["vocab_parallel_cross_entropy", "vocab_parallel_linear_cross_entropy"]

_LOW_PRECISION = (torch.float16, torch.bfloat16)

# ============================================================================================
# Collectives


def _all_gather(t: Tensor, group) -> Tensor:
    """``(world, *t.shape)``: ``t`` of every rank, in rank order (one all-gather)."""
    world = dist.get_world_size(group)
    t = t.contiguous()
    out = t.new_empty((world * t.shape[0], *t.shape[1:]) if t.dim() else (world,))
    src = t if t.dim() else t.view(1)
    if hasattr(dist, "all_gather_single"):
        dist.all_gather_single(out, src, group=group)
    else:  # torch < 2.13
        dist.all_gather_into_tensor(out, src, group=group)
    return out.view(world, *t.shape)


def _all_reduce(t: Tensor, op: str, group, fresh: bool = False) -> Tensor:
    """The elementwise ``"sum"`` or ``"max"`` of ``t`` over the ranks (one all-reduce; in place
    when ``t`` is the caller's own ``fresh`` temporary, else on a copy). Every rank receives the same bits: the backends reduce each element
    once and hand the result to every rank. While ``torch.compile`` traces, the traceable
    functional collective (``torch.distributed._functional_collectives``) is used instead."""
    if torch.compiler.is_compiling():
        import torch.distributed._functional_collectives as fc

        return fc.all_reduce(t, op, group)
    t = t.contiguous() if fresh else t.clone(memory_format=torch.contiguous_format)
    dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM, group=group)
    return t


def _sum_packed(parts: list[Tensor], group) -> list[Tensor]:
    """The sum over the ranks of each of ``parts`` (tensors of one dtype and device), in one
    all-reduce of their concatenation."""
    flat = torch.cat([p.reshape(-1) for p in parts])
    total = _all_reduce(flat, "sum", group, fresh=len(parts) > 1)
    out, at = [], 0
    for p in parts:
        n = p.numel()
        out.append(total[at : at + n].view(p.shape))
        at += n
    return out


def _rank_sum(t: Tensor, group) -> Tensor:
    """The sum of ``t`` over the ranks, added in rank order (identical on every rank)."""
    return _all_gather(t, group).sum(0)


class _RankSum(Function):
    r"""``total = Σ_r local_r``: the forward returns ``total`` when the caller knows it already
    (``precomputed``), else all-reduces ``local``. The cotangent arriving on each rank is that
    rank's share of the objective, so the backward is an all-reduce too (the adjoint of a sum
    over ranks is the sum of the cotangents, handed to every rank); it is itself a ``_RankSum``,
    so higher derivatives follow. (``setup_context`` style with a batch rule, so that a backward
    run under ``torch.func`` transforms, which is always differentiable, can create it: under
    vmap the all-reduce runs once on the whole batch.)"""

    @staticmethod
    def forward(local, precomputed, group):
        if precomputed is not None:
            return precomputed.clone()
        out = local.clone()
        dist.all_reduce(out, group=group)
        return out

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.group = inputs[2]

    @staticmethod
    def vmap(info, in_dims, local, precomputed, group):
        B = info.batch_size
        local = local.movedim(in_dims[0], 0) if in_dims[0] is not None else local.expand(B, *local.shape)
        if precomputed is not None:
            d = in_dims[1]
            precomputed = precomputed.movedim(d, 0) if d is not None else precomputed.expand(B, *precomputed.shape)
        return _RankSum.apply(local, precomputed, group), 0

    @staticmethod
    def backward(ctx, grad):
        return _RankSum.apply(grad, None, ctx.group), None, None


class _AttachLogS(Function):
    r""":math:`\log S` of every position (``logs``, computed by the forward from all ranks), tied
    to this rank's logits ``x`` for a differentiated backward: :math:`\partial \log S/\partial
    x_c = s_c = e^{(x_c - M) - \log S}`. The per-rank cotangents are summed over the ranks (one
    all-reduce) before the multiplication by the local softmax. (``setup_context`` style, as
    :class:`_RankSum`.)"""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, M, logs, cd, group):
        return logs.clone()

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, M, logs, cd, group = inputs
        ctx.cd, ctx.group = cd, group
        ctx.save_for_backward(x, M, logs)

    @staticmethod
    def backward(ctx, grad):
        x, M, logs = ctx.saved_tensors
        cd = ctx.cd
        total = _RankSum.apply(grad, None, ctx.group)
        if torch.is_grad_enabled():
            logs = _AttachLogS.apply(x, M, logs, cd, ctx.group)
        s = torch.exp((x.to(logs.dtype) - M.unsqueeze(cd)) - logs.unsqueeze(cd))
        return (s * total.unsqueeze(cd)).to(x.dtype), None, None, None, None


class _Replicate(Function):
    r"""A replicated tensor (the same on every rank: the linear head's input, the upstream
    gradient) entering rank-local computations: the identity forward; the cotangents arriving on
    the ranks are each rank's share, so the backward sums them over the ranks (one all-reduce)
    and hands every rank the total. Its adjoint is :class:`_SumReplicated`."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, group):
        return x.clone()

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.group = inputs[1]

    @staticmethod
    def backward(ctx, grad):
        return _SumReplicated.apply(grad, ctx.group), None


class _SumReplicated(Function):
    r"""The sum over the ranks of each rank's share (the linear head's input gradient), a
    replicated result: one all-reduce forward. The cotangent of a replicated result is
    replicated, so each rank's share gets it unchanged (no collective); adjoint of
    :class:`_Replicate`. (Under vmap the all-reduce runs once on the whole batch.)"""

    @staticmethod
    def forward(part, group):
        out = part.clone()
        dist.all_reduce(out, group=group)
        return out

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.group = inputs[1]

    @staticmethod
    def vmap(info, in_dims, part, group):
        return _SumReplicated.apply(part, group), in_dims[0]

    @staticmethod
    def backward(ctx, grad):
        return _Replicate.apply(grad, ctx.group), None


class _AttachLSE(Function):
    r"""The linear head's :math:`\ell = M + \log S` of every position (``lse``, ``(N, 1)``, from
    every rank's statistics), tied to this rank's ``x`` ``(N, in)``, head rows ``w3``
    ``(C_local, 1, in)`` and bias ``b2`` for a differentiated backward:
    :math:`\partial\ell_p/\partial z_{pc} = s_{pc}`. The per-rank cotangents of :math:`\ell` are summed
    over the ranks (one all-reduce), then pushed through this rank's softmax block by block
    (:func:`~torchloss._autograd.linear.shard_grads` with :math:`G = \bar\ell_p s_{pc}`): the
    head rows' and bias' gradients are this rank's, the input's is this rank's share."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, w3, b2, lse, group, budget, vocab_start):
        return lse.clone()

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, w3, b2, lse, group, budget, vocab_start = inputs
        ctx.group, ctx.budget, ctx.vocab_start, ctx.has_b = group, budget, vocab_start, b2 is not None
        ctx.save_for_backward(x, w3, lse, *((b2,) if b2 is not None else ()))

    @staticmethod
    def backward(ctx, grad):
        from .._autograd import linear as lin

        x, w3, lse, *rest = ctx.saved_tensors
        b2 = rest[0] if ctx.has_b else None
        total = _RankSum.apply(grad, None, ctx.group)
        differentiated = torch.is_grad_enabled()
        if differentiated:
            lse = _AttachLSE.apply(x, w3, b2, lse, ctx.group, ctx.budget, ctx.vocab_start)
        need = ctx.needs_input_grad
        gr = lin.shard_grads(x, w3, b2, lse, lin.Coefs(total, None, None), None, None, None,
                             need=(need[0], need[1], need[2] and b2 is not None), vocab_start=ctx.vocab_start,
                             budget=ctx.budget, in_place=not differentiated)
        return gr.x, gr.w, gr.b, None, None, None, None


# ============================================================================================
# Validation: one all-reduce of a fixed-size table of every rank's record, then the same verdict
# on every rank

_MAGIC = 0x7C05
_MAX_DIMS = 8
_MSG_BYTES = 240  # of a local error's message, 8 to a field
_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
(
    F_MAGIC, F_ERR, F_DTYPE, F_NDIM, F_CLOCAL, F_HAS_START, F_START, F_KIND, F_WNUMEL, F_RED, F_IGN,
    F_EPS, F_TCLS, F_TVALS, F_TMIN, F_TMAX, F_TSUM, F_FLAGS, F_VMAP,
) = range(19)
F_DIMS = 19
F_MSG = F_DIMS + _MAX_DIMS
_FIELDS = F_MSG + _MSG_BYTES // 8
_I64_MAX, _I64_MIN = (1 << 63) - 1, -(1 << 63)

KIND_INDEX, KIND_PROBS = 0, 1


class _Layout(NamedTuple):
    """What the metadata exchange established (identical on every rank but ``rank``/``lo``/
    ``C_local``). ``lo``, ``C`` and ``sizes`` are Python ints when the records were read on the
    host (:func:`_exchange`), 0-dim/1-D int64 tensors on the device when they were checked
    there (:func:`_exchange_on_device`): the math takes either."""

    group: object
    world: int
    rank: int
    lo: int | Tensor  # this rank's first class
    C_local: int
    C: int | Tensor  # the whole vocabulary
    sizes: tuple | Tensor  # every rank's slice size, in rank order
    weight_full: bool  # the weight given is the (C,) one (not this rank's slice)
    target_full: bool  # probability targets of the global shape (not this rank's slice)


# A switch for the tests: run the device-side validation (every check a ``torch._assert_async``
# on the exchanged record, no host read) on CPU tensors too, as it runs on GPUs and under
# ``torch.compile``.
_DEVICE_VALIDATION = False


def _validate_on_host(x, target) -> bool:
    """Whether the record is read back on the host (CPU tensors, not compiling: reading costs no
    device synchronisation and gives every check its own exception type and message) rather
    than checked on the device by asserts (:func:`_exchange_on_device`)."""
    if torch.compiler.is_compiling() or _DEVICE_VALIDATION:
        return False
    return all(not isinstance(v, Tensor) or v.device.type == "cpu" for v in (x, target))


def _record(x, target, weight, kind, code, ignore_index, eps, vocab_start, cd, error, flags=0):
    """``(fields, target_values)``: this rank's metadata record as Python ints, and the smallest
    and largest non-ignored class index and a checksum of the targets (a tensor on the target's
    device, for the fields ``F_TMIN``, ``F_TMAX``, ``F_TSUM``) or ``None``."""
    rec = [0] * _FIELDS
    rec[F_MAGIC] = _MAGIC
    if error is not None:
        rec[F_ERR] = 1
        if not torch.compiler.is_compiling():  # (the text, for the other ranks' host-side message)
            msg = f"{type(error).__name__}: {error}".encode("utf-8", "replace")[:_MSG_BYTES].ljust(_MSG_BYTES, b"\0")
            rec[F_MSG:] = struct.unpack(f"<{_MSG_BYTES // 8}q", msg)
        return rec, None
    rec[F_FLAGS] = flags
    # (under torch.func.vmap: the batch sizes of the logits and the target, which every rank must share)
    rec[F_VMAP] = _vmap_size(x) * 65536 + _vmap_size(target)
    rec[F_DTYPE] = _DTYPES.index(x.dtype) if x.dtype in _DTYPES else 99
    rec[F_NDIM] = x.dim()
    pos = [s for i, s in enumerate(x.shape) if i != cd]
    rec[F_DIMS : F_DIMS + len(pos)] = pos
    rec[F_CLOCAL] = x.shape[cd]
    rec[F_HAS_START] = vocab_start is not None
    rec[F_START] = int(vocab_start) if vocab_start is not None else 0
    rec[F_KIND] = kind
    rec[F_WNUMEL] = -1 if weight is None else weight.numel()
    rec[F_RED] = code
    rec[F_IGN] = ignore_index
    rec[F_EPS] = struct.unpack("<q", struct.pack("<d", eps))[0]
    rec[F_TCLS] = target.shape[cd] if kind == KIND_PROBS else -1
    vals = None
    if kind == KIND_INDEX and target.numel():
        t = _plain(target).long()  # (every sample's targets, under vmap)
        ok = t != ignore_index
        # (a position-weighted checksum: targets permuted between ranks differ too)
        check = (t.reshape(-1) * torch.arange(1, t.numel() + 1, device=t.device)).sum()
        vals = torch.stack([torch.where(ok, t, _I64_MAX).min(), torch.where(ok, t, _I64_MIN).max(), check])
        rec[F_TVALS] = 1
    return rec, vals


def _plain(t: Tensor) -> Tensor:
    """``t`` without its ``torch.func`` wrappers (under vmap: every sample)."""
    if torch.compiler.is_compiling():
        return t
    while _wrapped(t):
        t = torch._C._functorch.get_unwrapped(t)
    return t


def _vmap_size(t) -> int:
    """The product of the vmap batch sizes of ``t`` (1 outside vmap)."""
    n = 1
    if not isinstance(t, Tensor) or torch.compiler.is_compiling():
        return n
    while _wrapped(t):
        inner = torch._C._functorch.get_unwrapped(t)
        if torch._C._functorch.is_batchedtensor(t):
            n *= inner.shape[torch._C._functorch.maybe_get_bdim(t)]
        t = inner
    return n


_wrapped = torch._C._functorch.is_functorch_wrapped_tensor


def _own_row(rec: Tensor, world: int, rank: int) -> Tensor:
    """``(world, fields)`` zeros but for this rank's row, ``rec``: summed over the ranks (one
    all-reduce), every rank's record."""
    n = rec.numel()
    return torch.cat([rec.new_zeros((rank, n)), rec.view(1, n), rec.new_zeros((world - rank - 1, n))])


def _check_locally(fn, x, target, weight, kind, ignore_index, eps, vocab_start, cd):
    """Checks that need no other rank (raising torch's exception types)."""
    if not isinstance(x, Tensor) or not isinstance(target, Tensor):
        raise TypeError(f"{fn}: local_logits and target must be tensors")
    if x.dim() < 1:
        raise ValueError(f"{fn}: expected local_logits with 1 or more dimensions (got {x.dim()})")
    if x.dim() - 1 > _MAX_DIMS:
        raise ValueError(f"{fn}: at most {_MAX_DIMS} dimensions besides the classes are supported")
    if not x.is_floating_point():
        raise NotImplementedError(f"{fn}: expected floating-point local_logits, got {x.dtype}")
    if eps > 1.0:
        raise RuntimeError(f"label_smoothing must be between 0.0 and 1.0. Got: {eps}")
    if vocab_start is not None and (isinstance(vocab_start, bool) or not hasattr(vocab_start, "__index__")):
        raise TypeError(f"{fn}: vocab_start must be an int or None, not {type(vocab_start).__name__}")
    if vocab_start is not None and int(vocab_start) < 0:
        raise ValueError(f"{fn}: vocab_start must be >= 0, got {int(vocab_start)}")
    if weight is not None and weight.dim() != 1:
        raise RuntimeError(f"{fn}: weight must be 1-D (the (C,) class weights or this rank's slice), got shape {list(weight.shape)}")
    pos = tuple(s for i, s in enumerate(x.shape) if i != cd)
    if kind == KIND_PROBS:
        if not target.is_floating_point():
            raise RuntimeError(
                f"{fn}: Expected floating point type for target with class probabilities, got {target.dtype}"
            )
        if ignore_index >= 0:
            raise RuntimeError(
                f"{fn}: ignore_index is not supported for floating point target (class probabilities); "
                f"got ignore_index={ignore_index}, which must be negative"
            )
        tpos = tuple(s for i, s in enumerate(target.shape) if i != cd)
        if tpos != pos:
            raise ValueError(
                f"{fn}: probability target of shape {list(target.shape)} does not match local_logits "
                f"of shape {list(x.shape)} outside the class dimension {cd}"
            )
        return
    expected = pos if x.dim() > 1 else ()
    shape = tuple(target.shape)
    if x.dim() == 1 and shape == (1,):
        shape = ()
    if shape != expected:
        raise ValueError(
            f"{fn}: target of shape {list(target.shape)} does not match local_logits of shape {list(x.shape)} "
            f"(expected class indices of shape {list(expected)})"
        )
    if target.dtype not in (torch.int64, torch.uint8):
        raise RuntimeError(f"{fn}: expected target dtype to be Long or Byte (class indices), but got {target.dtype}")
    if weight is not None:
        if weight.dtype != x.dtype:
            raise RuntimeError(f"{fn}: expected weight of the input's dtype {x.dtype}, got {weight.dtype}")
        if weight.requires_grad and torch.is_grad_enabled():
            raise RuntimeError(
                "The function 'nll_loss_forward' is not differentiable with respect to argument 'weight'. "
                "This input cannot have requires_grad True."
            )


def _exchange(fn, group, x, target, weight, kind, code, ignore_index, eps, vocab_start, cd, error, flags=0) -> _Layout:
    """Every rank's metadata record (one all-reduce of a fixed-size ``(world, fields)`` table,
    each rank's own row filled), read on the host; raises the same error on every rank when any
    rank's call is bad or the ranks disagree."""
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    rec, vals = _record(x, target, weight, kind, code, ignore_index, eps, vocab_start, cd, error, flags)
    if vals is not None:
        rec[F_TMIN], rec[F_TMAX], rec[F_TSUM] = vals.tolist()  # (CPU targets: no device to wait for)
    rows = _all_reduce(_own_row(torch.tensor(rec, dtype=torch.int64), world, rank), "sum", group, True).tolist()
    bad = [r for r in range(world) if rows[r][F_ERR] or rows[r][F_MAGIC] != _MAGIC]
    if bad:
        if error is not None:
            raise error
        texts = []
        for r in bad:
            raw = struct.pack(f"<{_MSG_BYTES // 8}q", *rows[r][F_MSG:])
            msg = raw.rstrip(b"\0").decode("utf-8", "replace")
            texts.append(f"rank {r}: {msg or 'a call that is not ' + fn}")
        raise RuntimeError(f"{fn}: another rank rejected its arguments ({'; '.join(texts)})")

    def disagree(field, what, show=lambda v: v):
        values = [rows[r][field] for r in range(world)]
        if len(set(values)) > 1:
            listed = ", ".join(f"rank {r}: {show(v)}" for r, v in enumerate(values))
            raise ValueError(f"{fn}: the ranks disagree on {what} ({listed})")

    disagree(F_KIND, "the kind of target", lambda v: "probabilities" if v else "class indices")
    disagree(F_DTYPE, "the dtype of local_logits", lambda v: str(_DTYPES[v]) if v < len(_DTYPES) else "?")
    disagree(F_NDIM, "the number of dimensions of local_logits")
    dims = [tuple(rows[r][F_DIMS : F_DIMS + rows[r][F_NDIM] - 1]) for r in range(world)]
    if len(set(dims)) > 1:
        listed = ", ".join(f"rank {r}: {list(d)}" for r, d in enumerate(dims))
        raise ValueError(f"{fn}: the ranks disagree on the batch shape of local_logits, besides the classes ({listed})")
    disagree(F_RED, "the reduction", lambda v: {0: "'none'", 1: "'mean'", 2: "'sum'"}.get(v, v))
    disagree(F_IGN, "ignore_index")
    disagree(F_EPS, "label_smoothing", lambda v: struct.unpack("<d", struct.pack("<q", v))[0])
    # (the linear head: whether the input's gradient is needed, i.e. whether its backward all-reduces)
    disagree(F_FLAGS, "whether input needs a gradient (input.requires_grad and grad mode)", bool)
    disagree(F_VMAP, "the vmap batch sizes of local_logits and target",
             lambda v: f"{v // 65536} and {v % 65536}")
    if len({rows[r][F_WNUMEL] < 0 for r in range(world)}) > 1:
        given = [r for r in range(world) if rows[r][F_WNUMEL] >= 0]
        raise ValueError(f"{fn}: a class weight is given on ranks {given} only: give it on every rank or on none")
    sizes = tuple(rows[r][F_CLOCAL] for r in range(world))
    C = sum(sizes)
    has = {rows[r][F_HAS_START] for r in range(world)}
    if len(has) > 1:
        given = [r for r in range(world) if rows[r][F_HAS_START]]
        raise ValueError(f"{fn}: vocab_start is given on ranks {given} only: give it on every rank or on none")
    if has == {1}:
        starts = [rows[r][F_START] for r in range(world)]
        order = sorted(range(world), key=lambda r: (starts[r], sizes[r]))
        at = 0
        for r in order:
            if starts[r] != at:
                listed = ", ".join(f"rank {q}: [{starts[q]}, {starts[q] + sizes[q]})" for q in range(world))
                raise ValueError(
                    f"{fn}: the ranks' class slices (vocab_start and local_logits.shape[{cd}]) do not tile "
                    f"[0, {C}) without gaps or overlaps ({listed})"
                )
            at += sizes[r]
    else:
        starts = [sum(sizes[:r]) for r in range(world)]
    for r in range(world):
        wn = rows[r][F_WNUMEL]
        if wn >= 0 and wn not in (C, sizes[r]):
            raise RuntimeError(
                f"{fn}: weight tensor should be defined either for all {C} classes or for the {sizes[r]} "
                f"classes of the rank's slice, but rank {r} got a weight tensor of {wn} elements"
            )
        tc = rows[r][F_TCLS]
        if rows[r][F_KIND] == KIND_PROBS and tc not in (C, sizes[r]):
            raise ValueError(
                f"{fn}: probability target with {tc} classes on rank {r}: expected the rank's slice "
                f"({sizes[r]}) or the whole vocabulary ({C})"
            )
    for r in range(world):
        if rows[r][F_TVALS] and rows[r][F_TMIN] != _I64_MAX:
            for v in (rows[r][F_TMIN], rows[r][F_TMAX]):
                if v < 0 or v >= C:
                    raise IndexError(
                        f"Target {v} is out of bounds. (class indices must lie in [0, {C}) or equal "
                        f"ignore_index={rows[r][F_IGN]}; seen on rank {r})"
                    )
    sums = {rows[r][F_TSUM] for r in range(world) if rows[r][F_TVALS]}
    if len(sums) > 1:
        raise ValueError(f"{fn}: the ranks hold different targets (every rank needs the same global class indices)")
    wn = rows[rank][F_WNUMEL]
    return _Layout(
        group, world, rank, starts[rank], sizes[rank], C, sizes,
        weight_full=wn >= 0 and wn == C and C != sizes[rank],
        target_full=rows[rank][F_KIND] == KIND_PROBS and rows[rank][F_TCLS] == C and C != sizes[rank],
    )


def _exchange_on_device(fn, group, x, target, weight, kind, code, ignore_index, eps, vocab_start, cd, error,
                        flags=0):
    """:func:`_exchange` without reading anything back: the record travels on the logits'
    device (one all-reduce) and every check is a ``torch._assert_async`` of the exchanged table,
    the same on every rank, so a bad call stops every rank at the same assert (on the CPU a
    ``RuntimeError`` at once; on a GPU a device-side assert, like ``cross_entropy``'s for targets
    out of range). The layout's first class and vocabulary size stay 0-dim tensors. Used on GPUs
    (no host synchronisation) and while ``torch.compile`` traces (no graph break).

    Returns the layout, or ``None`` on a rank whose own arguments were bad while compiling (the
    compiled program then fails this rank's assert like every other rank's)."""
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    rec, vals = _record(x, target, weight, kind, code, ignore_index, eps, vocab_start, cd, error, flags)
    device = x.device if isinstance(x, Tensor) else torch.device("cpu")
    row = torch.tensor(rec, dtype=torch.int64)
    if device.type != "cpu":
        if device.type == "cuda" and not torch.compiler.is_compiling():
            row = row.pin_memory()  # (a pageable copy would wait for the stream: pinned, it does not)
        row = row.to(device, non_blocking=True)
    if vals is not None:
        row = torch.cat([row[:F_TMIN], vals.to(device), row[F_TSUM + 1 :]])
    rows = _all_reduce(_own_row(row, world, rank), "sum", group, True)
    if error is not None and not torch.compiler.is_compiling():
        raise error

    def check(ok: Tensor, what: str):
        torch._assert_async(ok.all(), f"{fn}: {what}")

    def agree(fields, what):
        v = rows[:, fields]
        check(v == v[:1], f"the ranks disagree on {what}")

    check((rows[:, F_ERR] == 0) & (rows[:, F_MAGIC] == _MAGIC),
          "a rank rejected its own arguments (outside torch.compile, that rank raises its own exception), "
          "or called another collective")
    if error is not None:
        return None
    agree([F_KIND], "the kind of target (class indices or probabilities)")
    agree([F_DTYPE], "the dtype of local_logits")
    agree([F_NDIM, *range(F_DIMS, F_DIMS + _MAX_DIMS)], "the batch shape of local_logits, besides the classes")
    agree([F_RED, F_IGN, F_EPS], "the reduction, ignore_index or label_smoothing")
    agree([F_FLAGS], "whether input needs a gradient (input.requires_grad and grad mode)")
    agree([F_VMAP], "the vmap batch sizes of local_logits and target")
    agree([F_HAS_START], "whether vocab_start is given: give it on every rank or on none")
    wn = rows[:, F_WNUMEL]
    check((wn < 0) == (wn[0] < 0), "whether a class weight is given: give it on every rank or on none")
    sizes = rows[:, F_CLOCAL]
    C = sizes.sum()
    if vocab_start is not None:
        starts = rows[:, F_START]
        order = torch.argsort(starts * (C + 1) + sizes)
        s_sorted, z_sorted = starts[order], sizes[order]
        check(s_sorted == z_sorted.cumsum(0) - z_sorted,
              "the ranks' class slices (vocab_start and local_logits' class dimension) do not tile [0, C) "
              "without gaps or overlaps")
        lo = rows[rank, F_START]
    else:
        lo = sizes[:rank].sum()
    check((wn < 0) | (wn == C) | (wn == sizes),
          "weight tensor should be defined either for all C classes or for the classes of the rank's slice")
    tc = rows[:, F_TCLS]
    check((rows[:, F_KIND] != KIND_PROBS) | (tc == C) | (tc == sizes),
          "probability target with a number of classes that is neither the rank's slice nor the whole vocabulary")
    has = rows[:, F_TVALS] == 1
    tmin, tmax = rows[:, F_TMIN], rows[:, F_TMAX]
    check(~has | (tmin == _I64_MAX) | ((tmin >= 0) & (tmax < C)),
          "target out of bounds: class indices must lie in [0, C) or equal ignore_index (on some rank)")
    sums = rows[:, F_TSUM]
    check((torch.where(has, sums, _I64_MIN).amax() == torch.where(has, sums, _I64_MAX).amin()) | ~has.any(),
          "the ranks hold different targets (every rank needs the same global class indices)")
    C_local = x.shape[cd]
    return _Layout(
        group, world, rank, lo, C_local, C, sizes,
        weight_full=weight is not None and weight.numel() != C_local,
        target_full=kind == KIND_PROBS and target.shape[cd] != C_local,
    )


def _prepare(fn, local_logits, target, group, vocab_start, weight, ignore_index, reduction, label_smoothing, flags=0):
    """Local checks (caught) and the metadata exchange: ``(layout, kind, code, ignore_index,
    eps)``; ``layout`` is ``None`` on a rank whose own call was bad while compiling (see
    :func:`_exchange_on_device`): the caller returns :func:`_poisoned` instead."""
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError(f"{fn}: torch.distributed is not initialized (call init_process_group first)")
    group = dist.group.WORLD if group is None else group
    error = None
    kind = code = eps = cd = None
    try:
        if callable(local_logits):  # (the linear head's checks and stand-in logits)
            local_logits = local_logits()
        code = R.get_enum(reduction)
        if type(ignore_index) is not int:
            if isinstance(ignore_index, (bool, float)) or not hasattr(ignore_index, "__index__"):
                raise TypeError(f"{fn}(): argument 'ignore_index' must be int, not {type(ignore_index).__name__}")
            ignore_index = int(ignore_index)
        eps = float(label_smoothing) if label_smoothing > 0 else 0.0
        # probabilities: the logits' number of dimensions (a float target, or the very same shape)
        same_dims = target.dim() == local_logits.dim() > 0
        kind = KIND_PROBS if same_dims and (target.is_floating_point() or target.shape == local_logits.shape) else KIND_INDEX
        cd = 0 if local_logits.dim() == 1 else 1
        _check_locally(fn, local_logits, target, weight, kind, ignore_index, eps, vocab_start, cd)
    except Exception as exc:  # noqa: BLE001 - reported to every rank, then raised here
        error = exc
    exchange = _exchange if _validate_on_host(local_logits, target) else _exchange_on_device
    layout = exchange(
        fn, group, local_logits, target, weight, kind, code, ignore_index, eps, vocab_start, cd, error, flags
    )
    return layout, kind, code, ignore_index, eps


def _poisoned(*tensors) -> Tensor:
    """What a rank whose own arguments were bad returns from a compiled program: never seen,
    since the program's assert on the exchanged records stops every rank first."""
    for t in tensors:
        if isinstance(t, Tensor) and t.is_floating_point():
            return t.new_full((), float("nan"))
    return torch.full((), float("nan"))


# ============================================================================================
# The math (shared by the plain and the DTensor Functions)


class _Cfg(NamedTuple):
    layout: _Layout
    reduction: int
    ignore_index: int
    eps: float
    cd: int
    # vmap's batch folded into the positions as their last dimension (see _vmap_rule): 'mean' and
    # 'sum' reduce per sample
    batched: bool = False


def _own_classes(t: Tensor, dim: int, L: _Layout) -> Tensor:
    """This rank's classes of a whole-vocabulary operand (along ``dim``)."""
    if isinstance(L.lo, int):
        return t.narrow(dim, L.lo, L.C_local)
    # (the device-side layout: the first class is a tensor)
    return t.index_select(dim, torch.arange(L.C_local, device=t.device) + L.lo.to(t.device))


def _local_weight(weight: Tensor | None, L: _Layout) -> Tensor | None:
    if weight is None:
        return None
    return _own_classes(weight, 0, L) if L.weight_full else weight


def _local_target(target: Tensor, L: _Layout, cd: int) -> Tensor:
    return _own_classes(target, cd, L) if L.target_full else target


def _class_view(w: Tensor, ndim: int, cd: int) -> Tensor:
    if ndim <= 1:
        return w
    shape = [1] * ndim
    shape[cd] = w.shape[0]
    return w.view(shape)


def _index_targets(target: Tensor, cfg: _Cfg):
    """``(t, valid, inside, li)``: global targets (int64, position shape), the non-ignored mask,
    where the target is one of this rank's classes, and its index in the slice (0 elsewhere)."""
    L = cfg.layout
    t = target.long()
    if cfg.cd == 0:
        t = t.reshape(())
    valid = t != cfg.ignore_index
    inside = valid & (t >= L.lo) & (t < L.lo + L.C_local)
    li = torch.where(inside, t - L.lo, 0)
    return t, valid, inside, li


def _local_max(x: Tensor, cd: int) -> Tensor:
    """The slice's maximum per position (-inf for an empty slice)."""
    if x.shape[cd] == 0:
        shape = [s for i, s in enumerate(x.shape) if i != cd]
        return x.new_full(shape, float("-inf"))
    return x.amax(cd)


def _global_max(m: Tensor, group):
    """``(M, shift)``: the maximum over every rank's classes per position (one all-reduce) and
    the shift the local sums use (``M`` where finite, else 0, so that a position whose logits
    are all ``-inf`` gives ``S = 0`` rather than NaN in the shift)."""
    M = _all_reduce(m, "max", group)
    return M, torch.where(torch.isfinite(M), M, 0)


def _rescaled(m: Tensor, s: Tensor, M: Tensor) -> Tensor:
    """A rank's sum of exponentials ``s`` taken relative to its own maximum ``m``, relative to
    the global ``M`` instead (0 for an empty or all ``-inf`` slice)."""
    return torch.where(torch.isfinite(m), s * torch.exp(m - M), 0)


def _eps_C(eps: float, L, dtype: torch.dtype):
    """``eps / C``: a Python float when the layout is known on the host, else a 0-dim tensor of
    ``dtype`` (the device-side layout of :func:`_exchange_on_device`)."""
    if isinstance(L.C, int):
        return eps / L.C
    return (eps / L.C.to(torch.float64)).to(dtype)


def _C_as(L, like: Tensor) -> Tensor:
    """The vocabulary size as a 0-dim tensor like ``like``."""
    return like.new_tensor(float(L.C)) if isinstance(L.C, int) else L.C.to(like.dtype)


def _per_sample(t: Tensor, batched: bool) -> Tensor:
    """The sum over the positions (per sample when vmap's batch is folded in as the last
    dimension)."""
    if not batched:
        return t.sum()
    return t.sum(tuple(range(t.dim() - 1))) if t.dim() > 1 else t


def _mean_denominator(wt: Tensor, valid: Tensor, batched: bool = False) -> Tensor:
    if batched:
        none = (~valid).all(tuple(range(valid.dim() - 1))) if valid.dim() > 1 else ~valid
        return _per_sample(wt, True) + none.to(wt.dtype)
    return wt.sum() + (~valid).all().to(wt.dtype)


def _reduce(loss: Tensor, reduction: int, denominator, batched: bool = False) -> Tensor:
    if batched and reduction != R.NONE:
        total = _per_sample(loss, True)
        return total / denominator if reduction == R.MEAN else total
    if reduction == R.MEAN:
        return loss.sum() / denominator
    if reduction == R.SUM:
        return loss.sum()
    return loss


# ---- class-index targets


def _index_forward(x_in: Tensor, target: Tensor, weight: Tensor | None, cfg: _Cfg):
    """``(loss, stats)``; ``stats = (M, log S, w_t, W, D)`` for the backward."""
    L, cd, eps = cfg.layout, cfg.cd, cfg.eps
    compute = opmath_dtype(x_in.dtype)
    x = x_in  # (no float32 copy of float16/bfloat16 logits: the maximum and the gather are exact)
    _t, valid, inside, li = _index_targets(target, cfg)
    w = _local_weight(weight, L)
    w = None if w is None else w.to(compute)
    M, shift = _global_max(_local_max(x, cd).to(compute), L.group)  # (all-reduce 1: the maxima)
    z = torch.sub(x_in, shift.unsqueeze(cd))  # (in float32 for float16/bfloat16 logits)
    smooth = None
    if eps > 0:  # Σ_c w_c (x_c - M) (every term <= 0), before z becomes exp(z)
        smooth = (z * _class_view(w, x.dim(), cd)).sum(cd) if w is not None else z.sum(cd)
    parts = [z.exp_().sum(cd)]  # z is this function's own temporary: one N x C_local buffer
    if L.C_local:
        parts.append(torch.where(inside, x.gather(cd, li.unsqueeze(cd)).squeeze(cd).to(compute), 0))
        if w is not None:
            parts.append(torch.where(inside, w.take(li), 0))
    else:
        parts.append(torch.zeros_like(M))
        if w is not None:
            parts.append(torch.zeros_like(M))
    if eps > 0:
        parts.append(smooth)
        parts.append(w.sum() if w is not None else M.new_tensor(float(L.C_local)))
    got = _sum_packed(parts, L.group)  # (all-reduce 2: every sum, packed)
    logs = torch.log(got[0])
    xt = got[1]  # (one rank holds each target: the sum is exact)
    wt = got[2] if w is not None else valid.to(compute)
    loss = logs - (xt - M)
    if w is not None:
        loss = loss * wt
    W = None
    if eps > 0:
        Z, W = got[-2], got[-1]
        logp_sum = Z - W * logs  # Σ_c w_c log p_c
        loss = (1 - eps) * loss - _eps_C(eps, L, compute) * logp_sum
    loss = torch.where(valid, loss, 0)
    D = _per_sample(wt, cfg.batched)
    out = _reduce(loss, cfg.reduction, D, cfg.batched).to(x_in.dtype)
    return out, (M, logs, wt, W if W is not None else _C_as(L, M), D)


def _index_coefs(g: Tensor, valid: Tensor, wt: Tensor, W: Tensor, cfg: _Cfg, weighted: bool):
    """``(a, a_target, a_softmax)`` per position for the upstream gradient ``g`` per position."""
    a = torch.where(valid, g, 0)
    a_t = a * wt if weighted else a
    if cfg.eps > 0:
        a_t = (1 - cfg.eps) * a_t
        a_s = a_t + a * (_eps_C(cfg.eps, cfg.layout, W.dtype) * W)
    else:
        a_s = a_t
    return a, a_t, a_s


def _replicated_grad(grad: Tensor, cfg: _Cfg, replicate: bool) -> Tensor:
    """The upstream gradient (replicated) of a differentiated backward: when it requires grad
    itself, its per-rank cotangents are summed over the ranks (:class:`_Replicate`, one
    all-reduce); the DTensor path's ``to_local(grad_placements=[Partial()])`` does that instead."""
    if replicate and torch.is_grad_enabled() and grad.requires_grad:
        return _Replicate.apply(grad, cfg.layout.group)
    return grad


def _index_grad(x_in, target, weight, stats, cfg: _Cfg, grad: Tensor, replicate: bool = True) -> Tensor:
    r""":math:`\partial L/\partial x_c = s_c a^s - a^t [c = t] - a^r w_c` on this rank's slice."""
    L, cd, eps = cfg.layout, cfg.cd, cfg.eps
    M, logs, wt, W, _D = stats
    compute = M.dtype
    _t, valid, inside, li = _index_targets(target, cfg)
    w = _local_weight(weight, L)
    w = None if w is None else w.to(compute)
    g = _replicated_grad(grad, cfg, replicate).to(compute)
    if cfg.reduction == R.MEAN:
        g = g / _mean_denominator(wt, valid, cfg.batched)
    a, a_t, a_s = _index_coefs(g, valid, wt, W, cfg, w is not None)
    differentiated = torch.is_grad_enabled()
    if differentiated:
        logs = _AttachLogS.apply(x_in, M, logs, cd, L.group)
    if eager_in_place(x_in, grad) and not differentiated:
        gx = torch.sub(x_in, M.unsqueeze(cd))  # float32 for float16/bfloat16 logits (no upcast copy)
        gx.sub_(logs.unsqueeze(cd)).exp_().mul_(a_s.unsqueeze(cd))
        if L.C_local:
            gx.scatter_add_(cd, li.unsqueeze(cd), torch.where(inside, -a_t, 0).unsqueeze(cd))
        if eps > 0:
            r = _eps_C(eps, L, compute) * a.unsqueeze(cd)
            gx.sub_(r * _class_view(w, gx.dim(), cd) if w is not None else r)
        return gx.to(x_in.dtype)
    gx = torch.exp((x_in.to(compute) - M.unsqueeze(cd)) - logs.unsqueeze(cd)) * a_s.unsqueeze(cd)
    if L.C_local:
        gx = gx.scatter_add(cd, li.unsqueeze(cd), torch.where(inside, -a_t, 0).unsqueeze(cd))
    if eps > 0:
        r = _eps_C(eps, L, compute) * a.unsqueeze(cd)
        gx = gx - (r * _class_view(w, gx.dim(), cd) if w is not None else r)
    return gx.to(x_in.dtype)


def _index_tangent(x_in, target, weight, stats, cfg: _Cfg, tx: Tensor) -> Tensor:
    """This rank's share of the loss's tangent, reduced: ``Σ_c ∂l/∂x_c ẋ_c`` over its classes."""
    L, cd = cfg.layout, cfg.cd
    M, logs, wt, W, D = stats
    compute = M.dtype
    _t, valid, inside, li = _index_targets(target, cfg)
    w = _local_weight(weight, L)
    w = None if w is None else w.to(compute)
    one = torch.ones_like(M)
    a, a_t, a_s = _index_coefs(one, valid, wt, W, cfg, w is not None)
    txc = tx.to(compute)
    s = torch.exp((x_in.to(compute) - M.unsqueeze(cd)) - logs.unsqueeze(cd))
    p = a_s * (s * txc).sum(cd)
    if L.C_local:
        p = p - torch.where(inside, a_t * txc.gather(cd, li.unsqueeze(cd)).squeeze(cd), 0)
    if cfg.eps > 0:
        wx = (txc * _class_view(w, txc.dim(), cd)).sum(cd) if w is not None else txc.sum(cd)
        p = p - _eps_C(cfg.eps, L, compute) * a * wx
    p = torch.where(valid, p, 0)
    return _reduce(p, cfg.reduction, D, cfg.batched)


# ---- probability targets


def _probs_dtypes(x: Tensor, target: Tensor, weight: Tensor | None):
    dtype = torch.promote_types(x.dtype, target.dtype)
    if weight is not None:
        dtype = torch.promote_types(dtype, weight.dtype)
    return dtype, opmath_dtype(dtype)


def _probs_operands(x_in, target, weight, cfg: _Cfg, compute):
    """``(x, t', w, r)``: local logits, smoothed local targets, class-shaped local weight and
    :math:`r_c = w_c t'_c` in the computation dtype."""
    L, cd = cfg.layout, cfg.cd
    x = x_in.to(compute)
    t = _local_target(target, L, cd).to(compute)
    if cfg.eps > 0:
        t = t * (1 - cfg.eps) + _eps_C(cfg.eps, L, compute)
    w = _local_weight(weight, L)
    w = None if w is None else _class_view(w.to(compute), x.dim(), cd)
    return x, t, w, (t if w is None else t * w)


def _positions(x: Tensor, cd: int, batched: bool = False) -> int:
    """The number of positions (of each sample when vmap's batch is folded in, last)."""
    pos = x.shape[:cd] + x.shape[cd + 1 :]
    n = _prod(pos)
    return n // pos[-1] if batched and pos and pos[-1] else n


def _prod(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def _probs_forward(x_in, target, weight, cfg: _Cfg):
    """``(loss, stats)``; ``stats = (M, log S, A)``."""
    L, cd = cfg.layout, cfg.cd
    dtype, compute = _probs_dtypes(x_in, target, weight)
    x, _t, _w, r = _probs_operands(x_in, target, weight, cfg, compute)
    M, shift = _global_max(_local_max(x, cd), L.group)  # (all-reduce 1: the maxima)
    z = x - shift.unsqueeze(cd)
    P_r = -(r * z).sum(cd)  # Σ_c w_c t'_c (M - x_c) (every term >= 0)
    S, P, A = _sum_packed([z.exp_().sum(cd), P_r, r.sum(cd)], L.group)  # (all-reduce 2)
    logs = torch.log(S)
    loss = P + A * logs
    out = _reduce(loss, cfg.reduction, _positions(x_in, cd, cfg.batched), cfg.batched).to(dtype)
    return out, (M, logs, A)


def _pad_classes(g: Tensor, L: _Layout, cd: int, full: bool, size: int) -> Tensor:
    """This rank's slice of a gradient, placed in zeros of the whole vocabulary (``size``
    classes) when the operand was given whole (``full``)."""
    if not full:
        return g
    if not isinstance(L.lo, int):
        shape = list(g.shape)
        shape[cd] = size
        index = torch.arange(L.C_local, device=g.device) + L.lo.to(g.device)
        return g.new_zeros(shape).index_copy(cd, index, g)
    before = list(g.shape)
    before[cd] = L.lo
    after = list(g.shape)
    after[cd] = size - L.lo - L.C_local
    return torch.cat([g.new_zeros(before), g, g.new_zeros(after)], cd)


def _probs_grads(x_in, target, weight, stats, cfg: _Cfg, grad: Tensor, need, replicate: bool = True):
    L, cd, eps = cfg.layout, cfg.cd, cfg.eps
    M, logs, A = stats
    _, compute = _probs_dtypes(x_in, target, weight)
    x, t, w, r = _probs_operands(x_in, target, weight, cfg, compute)
    g = _replicated_grad(grad, cfg, replicate).to(compute)
    if cfg.reduction == R.MEAN:
        g = g / _positions(x_in, cd, cfg.batched)
    elif cfg.reduction == R.NONE:
        g = g.unsqueeze(cd)
    if torch.is_grad_enabled():
        logs = _AttachLogS.apply(x_in, M, logs, cd, L.group)
        if (target.requires_grad or (weight is not None and weight.requires_grad)):
            A = _RankSum.apply(r.sum(cd), A, L.group)
    logp = (x - M.unsqueeze(cd)) - logs.unsqueeze(cd)
    gx = gt = gw = None
    if need[0]:
        gx = ((torch.exp(logp) * A.unsqueeze(cd) - r) * g).to(x_in.dtype)
    if need[1] or need[2]:
        nlogp = -logp * g
        if need[1]:
            gt = nlogp * (1 - eps) if w is None else nlogp * ((1 - eps) * w)
            gt = _pad_classes(gt, L, cd, L.target_full, target.shape[cd]).to(target.dtype)
        if need[2]:
            gw = (nlogp * t).sum([d for d in range(x.dim()) if d != cd]) if x.dim() > 1 else nlogp * t
            gw = _pad_classes(gw, L, 0, L.weight_full, weight.shape[0]).to(weight.dtype)
    return gx, gt, gw


def _probs_tangent(x_in, target, weight, stats, cfg: _Cfg, tx, tt, tw) -> Tensor:
    L, cd, eps = cfg.layout, cfg.cd, cfg.eps
    M, logs, A = stats
    _, compute = _probs_dtypes(x_in, target, weight)
    x, t, w, r = _probs_operands(x_in, target, weight, cfg, compute)
    logp = (x - M.unsqueeze(cd)) - logs.unsqueeze(cd)
    p = torch.zeros_like(M)
    if tx is not None:
        p = p + ((torch.exp(logp) * A.unsqueeze(cd) - r) * tx.to(compute)).sum(cd)
    if tt is not None:
        tl = _local_target(tt, L, cd).to(compute) * (1 - eps)
        p = p - ((logp * tl) if w is None else (logp * w * tl)).sum(cd)
    if tw is not None:
        twl = _class_view(_local_weight(tw, L).to(compute), x.dim(), cd)
        p = p - (logp * t * twl).sum(cd)
    return _reduce(p, cfg.reduction, _positions(x_in, cd, cfg.batched), cfg.batched)


# ============================================================================================
# The autograd Functions


def _save(ctx, cfg, x, target, stats, weight) -> None:
    """What the logits Functions keep: the inputs, the ``O(N)`` statistics and the weight if any
    (for backward and for forward AD alike)."""
    ctx.cfg = cfg
    ctx.has_weight = weight is not None
    ctx.n_stats = len(stats)
    tensors = (x, target, *stats) + ((weight,) if weight is not None else ())
    ctx.save_for_backward(*tensors)
    ctx.save_for_forward(*tensors)


def _unpack(ctx):
    """``(x, target, stats, weight)`` as :func:`_save` kept them."""
    saved = ctx.saved_tensors
    k = 2 + ctx.n_stats
    return saved[0], saved[1], tuple(saved[2:k]), (saved[k] if ctx.has_weight else None)


class _ShardedLogitsFunction(Function):
    """What the two logits Functions share: ``forward(x, target, weight, cfg)`` returns the loss and
    its ``O(N)`` statistics, which are not differentiable and are saved with the inputs."""

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, target, weight, cfg = inputs
        ctx.mark_non_differentiable(*output[1:])
        _save(ctx, cfg, x, target, tuple(output[1:]), weight)


class VocabParallelCrossEntropyFunction(_ShardedLogitsFunction):
    r"""Cross entropy of this rank's slice of the logits and global class indices (one torchloss
    node; see the module docstring for the math and the collectives). Returns the loss and the
    ``O(N)`` statistics :math:`M`, :math:`\log S`, :math:`w_t`, :math:`W`, :math:`D` (not
    differentiable; :func:`vocab_parallel_cross_entropy` returns the loss alone), which it saves
    with the inputs. Written in the ``setup_context`` style with a :meth:`vmap` rule, so
    ``torch.func`` transforms apply."""

    @staticmethod
    def forward(x, target, weight, cfg):
        loss, stats = _index_forward(x, target, weight, cfg)
        return (loss, *stats)

    @staticmethod
    def backward(ctx, grad, *_stats):
        if not ctx.needs_input_grad[0]:
            return None, None, None, None
        x, target, stats, weight = _unpack(ctx)
        return _index_grad(x, target, weight, stats, ctx.cfg, grad), None, None, None

    @staticmethod
    def jvp(ctx, tx, _t, _w, _c):
        x, target, stats, weight = _unpack(ctx)
        if tx is None:
            tangent = torch.zeros_like(_index_forward_shape(stats, ctx.cfg, x))
        else:
            part = _index_tangent(x, target, weight, stats, ctx.cfg, tx)
            tangent = _rank_sum(part, ctx.cfg.layout.group).to(x.dtype)
        return (tangent, *(None for _ in stats))

    @staticmethod
    def vmap(info, in_dims, x, target, weight, cfg):
        return _vmap_rule(VocabParallelCrossEntropyFunction, info, in_dims, x, target, weight, cfg, (0, 0, 0, 0, None, 0))


def _index_forward_shape(stats, cfg, x):
    M = stats[0]
    if cfg.reduction == R.NONE:
        return M.new_zeros(M.shape, dtype=x.dtype)
    return M.new_zeros(M.shape[-1:] if cfg.batched else ())


class VocabParallelCrossEntropyProbsFunction(_ShardedLogitsFunction):
    r"""Cross entropy of this rank's slice of the logits and probability targets (this rank's
    slice, or the whole vocabulary's); target and weight are differentiable. Returns the loss
    and the statistics :math:`M`, :math:`\log S`, :math:`A` (not differentiable)."""

    @staticmethod
    def forward(x, target, weight, cfg):
        loss, stats = _probs_forward(x, target, weight, cfg)
        return (loss, *stats)

    @staticmethod
    def backward(ctx, grad, *_stats):
        x, target, stats, weight = _unpack(ctx)
        need = ctx.needs_input_grad[:3]
        gx, gt, gw = _probs_grads(x, target, weight, stats, ctx.cfg, grad, need)
        return gx, gt, gw, None

    @staticmethod
    def jvp(ctx, tx, tt, tw, _c):
        x, target, stats, weight = _unpack(ctx)
        part = _probs_tangent(x, target, weight, stats, ctx.cfg, tx, tt, tw)
        dtype, _ = _probs_dtypes(x, target, weight)
        return (_rank_sum(part, ctx.cfg.layout.group).to(dtype), *(None for _ in stats))

    @staticmethod
    def vmap(info, in_dims, x, target, weight, cfg):
        return _vmap_rule(VocabParallelCrossEntropyProbsFunction, info, in_dims, x, target, weight, cfg, (0, 0, 0, 0))


def _vmap_rule(function, info, in_dims, x, target, weight, cfg: _Cfg, out_dims):
    r"""The batch rule of the logits Functions under ``torch.func.vmap``: the collectives cannot
    run on batched tensors, so the vmapped dimension is folded into the positions, as their last
    dimension (a per-sample ``(C_local,)`` becomes ``(B, C_local)``; ``(N, C_local, d...)``
    becomes ``(N, C_local, d..., B)``), and the Function runs once on the folded operands with
    'mean'/'sum' reduced per sample: the same three all-reduces, of ``B`` times the elements.
    (Every rank must vmap alike: the batch sizes travel in the metadata record.)"""
    xd, td, wd, _ = in_dims
    if wd is not None:
        raise NotImplementedError("vocab_parallel_cross_entropy: vmap over the class weight is not supported")
    B = info.batch_size
    x = x.movedim(xd, 0) if xd is not None else x.expand(B, *x.shape)
    target = target.movedim(td, 0) if td is not None else target.expand(B, *target.shape)
    if cfg.cd == 1:
        x, target = x.movedim(0, -1), target.movedim(0, -1)
    out = function.apply(x, target, weight, cfg._replace(cd=1, batched=True))
    return tuple(v if d is None else v.movedim(-1, 0) for v, d in zip(out, out_dims)), out_dims


# ============================================================================================
# Public API


def vocab_parallel_cross_entropy(
    local_logits: Tensor,
    target: Tensor,
    *,
    group=None,
    vocab_start: int | None = None,
    weight: Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> Tensor:
    r"""``torchloss.functional.cross_entropy`` of logits whose classes are split across the ranks
    of ``group``, without gathering them.

    Args:
        local_logits: ``(C_local)``, ``(N, C_local)`` or ``(N, C_local, d1, ..., dK)``: this rank's
            contiguous slice of the classes (slice sizes may differ between ranks, and may be 0).
        target: class indices into the whole vocabulary, ``()``, ``(N)`` or ``(N, d1, ..., dK)``,
            the same on every rank; or class probabilities of ``local_logits``' number of
            dimensions: this rank's slice (``local_logits``' shape) or the whole vocabulary's.
        group: the process group over which the classes are split (default: the world).
        vocab_start: this rank's first class; default: the sum of the slice sizes of the
            lower ranks (slices in rank order). Given on every rank or on none.
        weight: class weights, either all ``C`` of them or this rank's ``C_local`` (told apart by
            size; when ``C_local == C`` the two are the same).
        ignore_index, reduction, label_smoothing: as ``cross_entropy``, over the whole vocabulary.

    Returns the loss of ``cross_entropy`` on the gathered logits, on every rank (bitwise the same
    on every rank). Its backward gives each rank the gradient of its ``local_logits`` with no
    collective. Every rank must call it (three all-reduces: a fixed-size metadata table, the
    maxima, the packed ``O(N)`` sums); a bad call raises on every rank. Works under
    ``torch.compile(fullgraph=True)`` and ``torch.func.vmap`` (logits and target batched).
    """
    fn = "vocab_parallel_cross_entropy"
    layout, kind, code, ignore_index, eps = _prepare(
        fn, local_logits, target, group, vocab_start, weight, ignore_index, reduction, label_smoothing
    )
    if layout is None:
        return _poisoned(local_logits)
    cfg = _Cfg(layout, code, ignore_index, eps, 0 if local_logits.dim() == 1 else 1)
    if kind == KIND_PROBS:
        return _VPCE_PROBS(local_logits, target, weight, cfg)[0]
    return _VPCE(local_logits, target, weight, cfg)[0]


# ============================================================================================
# The head's weight split by rows: vocab_parallel_linear_cross_entropy


class VocabParallelLinearCrossEntropyFunction(Function):
    r"""Cross entropy of ``input @ local_linear_weight.T (+ local bias)`` over the whole
    vocabulary, streamed block by block (:mod:`torchloss._autograd.linear`'s
    :func:`~torchloss._autograd.linear.shard_stats` / :func:`~torchloss._autograd.linear.shard_grads`):
    no rank ever holds its ``N x C_local`` logits. The forward's statistics travel in two
    all-reduces, the maxima and the packed sums (as :class:`VocabParallelCrossEntropyFunction`,
    each rank's sums rescaled to the global maximum first); the backward recomputes each block
    of logits, forms this shard's weight (and bias) gradient and its share of the input's gradient,
    and all-reduces the latter (the one backward collective: the input is replicated across the
    tensor-parallel ranks, so its gradient is the sum of every shard's part)."""

    @staticmethod
    def forward(input, lw, bias, target, weight, cfg, budget):
        from .._autograd import linear as lin

        L, eps = cfg.layout, cfg.eps
        compute = opmath_dtype(input.dtype)
        x = input.reshape(-1, input.shape[-1])
        w3 = lw.view(lw.shape[0], 1, lw.shape[1])
        b2 = None if bias is None else bias.view(-1, 1)
        t, valid, inside, li = _index_targets(target.reshape(-1), cfg._replace(cd=1))
        wl = _local_weight(weight, L)
        wl = None if wl is None else wl.to(compute)
        r = None
        if eps > 0:
            r = wl if wl is not None else torch.ones((L.C_local,), dtype=compute, device=x.device)
        N = x.shape[0]
        if L.C_local:
            st = lin.shard_stats(x, w3, b2, t.view(N, 1), valid.view(N, 1), r, vocab_start=L.lo, budget=budget)
            m, s, zt, rr, rho = (v.view(N) for v in st)
        else:
            m = x.new_full((N,), float("-inf"), dtype=compute)
            s = zt = rr = rho = torch.zeros_like(m)
        M, _shift = _global_max(m, L.group)  # (all-reduce 1: the maxima)
        parts = [_rescaled(m, s, M), zt]
        if wl is not None:
            parts.append(torch.where(inside, wl.take(li), 0) if L.C_local else torch.zeros_like(m))
        if eps > 0:  # Σ_c r_c (M - z_c) = R + ρ (M - m) (0 for an empty slice)
            parts += [rr + rho * (M - torch.where(torch.isfinite(m), m, M)), rho]
        got = _sum_packed(parts, L.group)  # (all-reduce 2: every sum, packed)
        logs = torch.log(got[0])
        wt = got[2] if wl is not None else valid.to(compute)
        loss = logs + (M - got[1])
        if wl is not None:
            loss = loss * wt
        W = _C_as(L, x.new_zeros((), dtype=compute))
        if eps > 0:
            Rg, W = got[-2], got[-1]
            loss = (1 - eps) * loss + _eps_C(eps, L, compute) * (W * logs + Rg)
        loss = torch.where(valid, loss, 0)
        D = wt.sum()
        out = _reduce(loss.view(target.shape), cfg.reduction, D).to(input.dtype)
        return out, M + logs, wt, W

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, lw, bias, target, weight, cfg, budget = inputs
        _out, lse, wt, W = output
        ctx.mark_non_differentiable(lse, wt, W)
        ctx.cfg, ctx.budget = cfg, budget
        ctx.has = (bias is not None, weight is not None)
        saved = (input, lw, target, lse, wt, W, *(t for t in (bias, weight) if t is not None))
        ctx.save_for_backward(*saved)
        ctx.save_for_forward(*saved)

    @staticmethod
    def vmap(info, in_dims, input, lw, bias, target, weight, cfg, budget):
        return _linear_vmap_rule(VocabParallelLinearCrossEntropyFunction, info, in_dims, input, lw, bias, target,
                                 weight, cfg, budget, False)

    @staticmethod
    def _unpack(ctx):
        saved = list(ctx.saved_tensors)
        input, lw, target, lse, wt, W = saved[:6]
        rest = saved[6:]
        bias = rest.pop(0) if ctx.has[0] else None
        weight = rest.pop(0) if ctx.has[1] else None
        return input, lw, target, lse, wt, W, bias, weight

    @staticmethod
    def jvp(ctx, t_input, t_lw, t_bias, _t, _w, _c, _b):
        r"""The tangent :math:`\sum_c G_c \dot z_c` with :math:`\dot z = \dot X W^\top + X \dot W^\top
        + \dot b`, block by block over this rank's classes (:math:`G` for a unit upstream gradient),
        reduced, then summed over the ranks (one all-gather)."""
        from .._autograd import linear as lin

        cfg, L, eps = ctx.cfg, ctx.cfg.layout, ctx.cfg.eps
        input, lw, target, lse, wt, W, bias, weight = VocabParallelLinearCrossEntropyFunction._unpack(ctx)
        compute = lse.dtype
        K = input.shape[-1]
        x = input.reshape(-1, K)
        N, Cl = x.shape[0], lw.shape[0]
        t, valid, inside, _li = _index_targets(target.reshape(-1), cfg._replace(cd=1))
        wl = _local_weight(weight, L)
        wl = None if wl is None else wl.to(compute)
        a, a_t, a_s = _index_coefs(torch.ones_like(lse), valid, wt, W, cfg, wl is not None)
        r = None
        if eps > 0:
            r = wl if wl is not None else torch.ones((Cl,), dtype=compute, device=x.device)
        tx = None if t_input is None else t_input.reshape(N, K).to(compute)
        acc = x.new_zeros((N,), dtype=compute)
        rb, cb = lin.block_plan(N, max(Cl, 1), 1, K, compute, ctx.budget, lw.dtype != compute)
        for r0 in range(0, N, rb):
            r1 = min(N, r0 + rb)
            xi = x[r0:r1].to(compute)
            rows = slice(r0, r1)
            co = lin.Coefs(a_s[rows].view(-1, 1), a_t[rows].view(-1, 1), (_eps_C(eps, L, compute) * a[rows]).view(-1, 1) if eps > 0 else None)
            for c0 in range(0, Cl, cb):
                c1 = min(Cl, c0 + cb)
                wb = lw[c0:c1].to(compute)
                z = xi @ wb.t()
                if bias is not None:
                    z = z + bias[c0:c1].to(compute)
                dz = None if tx is None else tx[rows] @ wb.t()
                if t_lw is not None:
                    part = xi @ t_lw[c0:c1].to(compute).t()
                    dz = part if dz is None else dz + part
                if t_bias is not None:
                    part = t_bias[c0:c1].to(compute).expand(r1 - r0, c1 - c0)
                    dz = part if dz is None else dz + part
                if dz is None:
                    continue
                local = (t[rows] - L.lo - c0)
                blk_inside = inside[rows] & (local >= 0) & (local < c1 - c0)
                local = local.clamp(0, c1 - c0 - 1).view(-1, 1, 1)
                rblk = None if r is None else r[c0:c1].view(1, -1, 1)
                G = lin.block_grad(z.unsqueeze(2), lse[rows].view(-1, 1), co, local, blk_inside.view(-1, 1), rblk)
                acc[rows] += (G.squeeze(2) * dz).sum(1)
        p = torch.where(valid, acc, 0)
        part = _reduce(p.view(target.shape), cfg.reduction, wt.sum())
        return _rank_sum(part, L.group).to(input.dtype), None, None, None

    @staticmethod
    def backward(ctx, grad, *_stats):
        from .._autograd import linear as lin

        cfg, L, eps = ctx.cfg, ctx.cfg.layout, ctx.cfg.eps
        input, lw, target, lse, wt, W, bias, weight = VocabParallelLinearCrossEntropyFunction._unpack(ctx)
        need_x, need_w, need_b = ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2]
        compute = lse.dtype
        differentiated = torch.is_grad_enabled()
        x, w3, b2, grad, lse = _linear_attach(input, lw, bias, grad, lse, L, ctx.budget, differentiated)
        N = x.shape[0]
        t, valid, _inside, _li = _index_targets(target.reshape(-1), cfg._replace(cd=1))
        wl = _local_weight(weight, L)
        wl = None if wl is None else wl.to(compute)
        g = grad.to(compute)
        if cfg.reduction == R.MEAN:
            g = (g / _mean_denominator(wt, valid)).expand(N)
        elif cfg.reduction == R.SUM:
            g = g.expand(N)
        else:
            g = g.reshape(N)
        a, a_t, a_s = _index_coefs(g, valid, wt, W, cfg, wl is not None)
        r = None
        if eps > 0:
            r = wl if wl is not None else torch.ones((L.C_local,), dtype=compute, device=x.device)
        co = lin.Coefs(a_s.view(N, 1), a_t.view(N, 1), (_eps_C(eps, L, compute) * a).view(N, 1) if eps > 0 else None)
        gr = lin.shard_grads(
            x, w3, b2, lse, co, t.view(N, 1), valid.view(N, 1), r,
            need=(need_x, need_w, need_b), vocab_start=L.lo, budget=ctx.budget, in_place=not differentiated,
        )
        if differentiated and not L.C_local:
            gr = _anchored(gr, lse, co.soft)
        gx = gw = gb = None
        if need_x:
            gx = _sum_input_grad(gr.x, L.group, differentiated).to(input.dtype).view(input.shape)
        if need_w:
            gw = gr.w.view(lw.shape).to(lw.dtype)
        if need_b:
            gb = gr.b.view(bias.shape).to(bias.dtype)
        return gx, gw, gb, None, None, None, None


class VocabParallelLinearCrossEntropyProbsFunction(Function):
    r""":class:`VocabParallelLinearCrossEntropyFunction` for probability targets (``(N, C_local)``
    this rank's slice, or ``(N, C)``): :math:`r_c = w_c t'_c` per position, the statistics
    :math:`(m, S, R = \sum_c r_c (m - z_c), \rho = \sum_c r_c)` rescaled to the global maximum
    :math:`M` and summed over the ranks, :math:`l = \sum_r [R_r + \rho_r (M - m_r)] + A \log S`; target and weight are differentiable (each rank's classes'
    part of a whole-vocabulary operand's gradient, as the logits version)."""

    @staticmethod
    def forward(input, lw, bias, target, weight, cfg, budget):
        from .._autograd import linear as lin

        L = cfg.layout
        dtype, compute = _probs_dtypes(input, target, weight)
        x, w3, b2, r3, _tsm, _wl = _linear_probs_operands(input, lw, bias, target, weight, cfg, compute)
        N = x.shape[0]
        if L.C_local:
            st = lin.shard_stats(x, w3, b2, None, None, r3, vocab_start=L.lo, budget=budget)
            m, s, rr, rho = (v.view(N) for v in (st.m, st.s, st.r, st.rho))
        else:
            m = x.new_full((N,), float("-inf"), dtype=compute)
            s = rr = rho = torch.zeros_like(m)
        M, _shift = _global_max(m, L.group)  # (all-reduce 1: the maxima)
        # (all-reduce 2: S, Σ_c r_c (M - z_c) = R + ρ (M - m), A = Σ_c r_c)
        S, P, A = _sum_packed([_rescaled(m, s, M), rr + rho * (M - torch.where(torch.isfinite(m), m, M)), rho], L.group)
        logs = torch.log(S)
        loss = P + A * logs
        out = _reduce(loss.view(input.shape[:-1]), cfg.reduction, N).to(dtype)
        return out, M + logs, A

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, lw, bias, target, weight, cfg, budget = inputs
        _out, lse, A = output
        ctx.mark_non_differentiable(lse, A)
        ctx.cfg, ctx.budget = cfg, budget
        ctx.has = (bias is not None, weight is not None)
        saved = (input, lw, target, lse, A, *(v for v in (bias, weight) if v is not None))
        ctx.save_for_backward(*saved)
        ctx.save_for_forward(*saved)

    @staticmethod
    def vmap(info, in_dims, input, lw, bias, target, weight, cfg, budget):
        return _linear_vmap_rule(VocabParallelLinearCrossEntropyProbsFunction, info, in_dims, input, lw, bias, target,
                                 weight, cfg, budget, True)

    @staticmethod
    def jvp(ctx, t_input, t_lw, t_bias, t_target, t_weight, _c, _b):
        r"""The tangent :math:`\sum_c (A s_c - r_c)\dot z_c + \sum_c (\ell - z_c)\big[(1-\varepsilon)
        w_c \dot t_c + \dot w_c t'_c\big]` over this rank's classes, block by block
        (:math:`\dot z = \dot X W^\top + X \dot W^\top + \dot b`), reduced, then summed over the
        ranks (one all-gather)."""
        from .._autograd import linear as lin

        cfg, L, eps = ctx.cfg, ctx.cfg.layout, ctx.cfg.eps
        saved = list(ctx.saved_tensors)
        input, lw, target, lse, A = saved[:5]
        rest = saved[5:]
        bias = rest.pop(0) if ctx.has[0] else None
        weight = rest.pop(0) if ctx.has[1] else None
        dtype, compute = _probs_dtypes(input, target, weight)
        x, w3, b2, r3, tsm, wl = _linear_probs_operands(input, lw, bias, target, weight, cfg, compute)
        N, K, Cl = x.shape[0], x.shape[1], lw.shape[0]
        tx = None if t_input is None else t_input.reshape(N, K).to(compute)
        tt = None
        if t_target is not None:
            tt = _local_target(_classes_last(t_target).reshape(N, -1), L, 1).to(compute) * (1 - eps)
            if wl is not None:
                tt = tt * wl
        tw = None if t_weight is None else _local_weight(t_weight, L).to(compute)
        acc = x.new_zeros((N,), dtype=compute)
        rb, cb = lin.block_plan(N, max(Cl, 1), 1, K, compute, ctx.budget, lw.dtype != compute)
        ones = x.new_ones((N, 1), dtype=compute)
        for r0 in range(0, N, rb):
            r1 = min(N, r0 + rb)
            rows = slice(r0, r1)
            xi = x[rows]
            co = lin.Coefs(A[rows].view(-1, 1), None, ones[rows])
            for c0 in range(0, Cl, cb):
                c1 = min(Cl, c0 + cb)
                wb = w3[c0:c1, 0]
                z = xi @ wb.t()
                if b2 is not None:
                    z = z + b2[c0:c1, 0]
                dz = None if tx is None else tx[rows] @ wb.t()
                if t_lw is not None:
                    part = xi @ t_lw[c0:c1].to(compute).t()
                    dz = part if dz is None else dz + part
                if t_bias is not None:
                    part = t_bias[c0:c1].to(compute).expand(r1 - r0, c1 - c0)
                    dz = part if dz is None else dz + part
                if dz is not None:
                    G = lin.block_grad(z.unsqueeze(2), lse[rows].view(-1, 1), co, None, None, r3[rows, c0:c1])
                    acc[rows] += (G.squeeze(2) * dz).sum(1)
                if tt is not None or tw is not None:
                    d = lse[rows].view(-1, 1) - z  # ℓ - z
                    coef = None if tt is None else tt[rows, c0:c1]
                    if tw is not None:
                        part = tw[c0:c1].view(1, -1) * tsm[rows, c0:c1, 0]
                        coef = part if coef is None else coef + part
                    acc[rows] += (d * coef).sum(1)
        part = _reduce(acc.view(input.shape[:-1]), cfg.reduction, N)
        return _rank_sum(part, L.group).to(dtype), None, None

    @staticmethod
    def backward(ctx, grad, *_stats):
        from .._autograd import linear as lin

        cfg, L, eps = ctx.cfg, ctx.cfg.layout, ctx.cfg.eps
        saved = list(ctx.saved_tensors)
        input, lw, target, lse, A = saved[:5]
        rest = saved[5:]
        bias = rest.pop(0) if ctx.has[0] else None
        weight = rest.pop(0) if ctx.has[1] else None
        need_x, need_w, need_b, need_t, need_wt = ctx.needs_input_grad[:5]
        _, compute = _probs_dtypes(input, target, weight)
        differentiated = torch.is_grad_enabled()
        xin, _w3, _b2, grad, lse = _linear_attach(input, lw, bias, grad, lse, L, ctx.budget, differentiated, compute)
        x, w3, b2, r3, tsm, wl = _linear_probs_operands(xin, lw, bias, target, weight, cfg, compute)
        w3, b2 = _w3, _b2
        N = x.shape[0]
        if differentiated and (target.requires_grad or (weight is not None and weight.requires_grad)):
            A = _RankSum.apply(r3.sum(1).view(N), A, L.group)  # (differentiable target or weight)
        g = grad.to(compute)
        g = (g / N).expand(N) if cfg.reduction == R.MEAN else (g.expand(N) if cfg.reduction == R.SUM else g.reshape(N))
        co = lin.Coefs((g * A).view(N, 1), None, g.view(N, 1))
        probs = None
        if need_t or need_wt:
            # the smoothed targets (over the whole vocabulary's C, already applied) as the blocked
            # linear cross entropy takes them: a ProbR with no smoothing of its own (its own would
            # spread over this shard's classes only), or the tensor itself
            probr = getattr(lin, "ProbR", None)
            tsm_arg = probr(tsm, None, 0.0, compute) if probr is not None else tsm
            probs = ((g * (1 - eps)).view(N, 1) if need_t else None, wl, tsm_arg, g.view(N, 1) if need_wt else None)
        if differentiated and not L.C_local:  # (shard_grads' out-of-place path needs a class)
            gr = lin.Grads(*(x.new_zeros(shape, dtype=compute) if on else None for on, shape in (
                (need_x, x.shape), (need_w, w3.shape), (need_b, (0, 1)),
                (need_t, (N, 0, 1)), (need_wt, (0,)))))
        else:
            gr = lin.shard_grads(x, w3, b2, lse, co, None, None, r3, need=(need_x, need_w, need_b),
                                 probs=probs, vocab_start=L.lo, budget=ctx.budget, in_place=not differentiated)
        if differentiated and not L.C_local:
            gr = _anchored(gr, lse, co.soft)
        gx = gw = gb = gt = gwt = None
        if need_x:
            gx = _sum_input_grad(gr.x, L.group, differentiated).to(input.dtype).view(input.shape)
        if need_w:
            gw = gr.w.view(lw.shape).to(lw.dtype)
        if need_b:
            gb = gr.b.view(bias.shape).to(bias.dtype)
        if need_t:
            gt = _pad_classes(gr.t.view(N, L.C_local), L, 1, L.target_full, _classes_last(target).shape[-1])
            gt = _classes_back(gt, target).to(target.dtype)
        if need_wt:
            gwt = _pad_classes(gr.weight, L, 0, L.weight_full, weight.shape[0]).to(weight.dtype)
        return gx, gw, gb, gt, gwt, None, None


def _linear_vmap_rule(function, info, in_dims, input, lw, bias, target, weight, cfg: _Cfg, budget, probs: bool):
    r"""The batch rule of the linear-head Functions under ``torch.func.vmap`` (hidden states and
    targets batched; the head's rows, bias and class weight shared): the vmapped dimension is
    folded into the positions (``(B * P, in)`` hidden states, ``(B * P)`` class indices or
    ``(B * P, C)`` probabilities, classes last), the Function runs once with reduction 'none'
    (the same three all-reduces, of ``B`` times the elements), and 'mean'/'sum' are formed per
    sample from the per-position losses (the 'mean' denominator from the target weights the
    Function returns)."""
    xd, wd, bd, td, ud = in_dims[:5]
    if wd is not None or bd is not None or ud is not None:
        raise NotImplementedError(
            "vocab_parallel_linear_cross_entropy: vmap over the head's weight, its bias or the class weight is not supported"
        )
    B = info.batch_size
    input = input.movedim(xd, 0) if xd is not None else input.expand(B, *input.shape)
    target = target.movedim(td, 0) if td is not None else target.expand(B, *target.shape)
    lead = input.shape[1:-1]  # one sample's positions
    P = _prod(lead)
    x = input.reshape(B * P, input.shape[-1])
    if probs:
        t = (target.movedim(2, -1) if target.dim() > 3 else target).reshape(B * P, target.shape[2 if target.dim() > 2 else 1])
    else:
        t = target.reshape(B * P)
    out = function.apply(x, lw, bias, t, weight, cfg._replace(reduction=R.NONE), budget)
    loss = out[0].view(B, P)
    if cfg.reduction == R.NONE:
        loss = loss.view(B, *lead)
    elif cfg.reduction == R.SUM:
        loss = loss.sum(1)
    else:
        loss = loss.sum(1) / (P if probs else out[2].view(B, P).sum(1).to(loss.dtype))
    rest = tuple(v.view(B, P) if v.dim() else v for v in out[1:])
    return (loss, *rest), (0, *(0 if v.dim() else None for v in out[1:]))


def _linear_attach(input, lw, bias, grad, lse, L: _Layout, budget, differentiated, compute=None):
    """``(x, w3, b2, grad, lse)`` of the linear head's backward: ``(N, in)`` input, ``(C_local, 1,
    in)`` rows, ``(C_local, 1)`` bias, upstream gradient and ``(N, 1)`` :math:`\\ell`. For a
    differentiated backward the replicated input and upstream gradient enter through
    :class:`_Replicate` (their cotangents are summed over the ranks) and :math:`\\ell` is tied to
    this rank's operands by :class:`_AttachLSE` (its cotangents too)."""
    if differentiated:
        if input.requires_grad:
            input = _Replicate.apply(input, L.group)
        if grad.requires_grad:
            grad = _Replicate.apply(grad, L.group)
    x = input.reshape(-1, input.shape[-1])
    if compute is not None:
        x = x.to(compute)
    N = x.shape[0]
    w3 = lw.view(lw.shape[0], 1, lw.shape[1])
    b2 = None if bias is None else bias.view(-1, 1)
    if compute is not None:
        w3 = w3.to(compute)
        b2 = None if b2 is None else b2.to(compute)
    lse = lse.view(N, 1)
    if differentiated and (x.requires_grad or w3.requires_grad or (b2 is not None and b2.requires_grad)):
        lse = _AttachLSE.apply(x, w3, b2, lse, L.group, budget, L.lo)
    return x, w3, b2, grad, lse


def _anchored(gr, *shared):
    """An empty vocabulary slice's gradients (zeros, independent of anything) tied to the shared
    per-position quantities (:math:`\\ell`, the coefficients, hence the upstream gradient) by
    adding an empty sum of each: exactly zero, but differentiating them reaches the same
    collective nodes on this rank as on the others (else they would wait for it)."""
    zero = sum(t.reshape(-1)[:0].sum() for t in shared)
    return type(gr)(*(None if v is None else v + zero.to(v.dtype) for v in gr))


def _sum_input_grad(part: Tensor, group, differentiated: bool) -> Tensor:
    """The input's gradient: the sum of every shard's part (one all-reduce), differentiable when
    the backward is."""
    if differentiated:
        return _SumReplicated.apply(part, group)
    dist.all_reduce(part, group=group)
    return part


def _classes_last(target: Tensor) -> Tensor:
    """A ``(B, C, d1..dK)`` probability target with its classes last (``(B, d1..dK, C)``), as the
    rows ``input.reshape(-1, in)`` of a ``(B, d1..dK, in)`` input; ``(N, C)``/``(C,)`` as given."""
    return target.movedim(1, -1) if target.dim() > 2 else target


def _classes_back(g: Tensor, target: Tensor) -> Tensor:
    """The inverse of :func:`_classes_last` for an ``(N, C)`` gradient of ``target``."""
    if target.dim() <= 2:
        return g.view(target.shape)
    lead = _classes_last(target).shape[:-1]
    return g.view(*lead, g.shape[-1]).movedim(-1, 1)


def _linear_probs_operands(input, lw, bias, target, weight, cfg: _Cfg, compute):
    """``(x, w3, b2, r3, t', w)`` of the linear head with probability targets, in ``compute``."""
    L, eps = cfg.layout, cfg.eps
    x = input.reshape(-1, input.shape[-1]).to(compute)
    N = x.shape[0]
    w3 = lw.to(compute).view(lw.shape[0], 1, lw.shape[1])
    b2 = None if bias is None else bias.to(compute).view(-1, 1)
    t = _local_target(_classes_last(target).reshape(N, -1), L, 1).to(compute)
    if eps > 0:
        t = t * (1 - eps) + _eps_C(eps, L, compute)
    wl = _local_weight(weight, L)
    wl = None if wl is None else wl.to(compute)
    r = t if wl is None else t * wl
    return x, w3, b2, r.view(N, L.C_local, 1), t.view(N, L.C_local, 1), wl


def vocab_parallel_linear_cross_entropy(
    input: Tensor,
    local_linear_weight: Tensor,
    target: Tensor,
    *,
    group=None,
    vocab_start: int | None = None,
    local_linear_bias: Tensor | None = None,
    weight: Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    budget: int | None = None,
) -> Tensor:
    r""":func:`vocab_parallel_cross_entropy` of ``input @ local_linear_weight.T (+ local_linear_bias)``
    without ever forming those logits: the head's weight is split by rows (classes) across the
    ranks of ``group``.

    Args:
        input: ``(in,)``, ``(N, in)`` or ``(B, T, in)`` hidden states, the same on every rank
            (replicated across the tensor-parallel group).
        local_linear_weight: ``(C_local, in)``: this rank's rows of the head's weight.
        target: class indices into the whole vocabulary, of ``input``'s shape without ``in``; or,
            for an ``(in,)``/``(N, in)`` input, probabilities of this rank's classes
            (``(N, C_local)``) or of the whole vocabulary (``(N, C)``).
        local_linear_bias: ``(C_local,)``, this rank's slice of the head's bias, or ``None``.
        weight, ignore_index, reduction, label_smoothing, group, vocab_start: as
            :func:`vocab_parallel_cross_entropy`.
        budget: bytes of block temporaries (logits blocks, their exponentials); default:
            :data:`torchloss._autograd.linear.DEFAULT_BUDGET`.

    Collectives: the forward's three all-reduces (metadata table, maxima, packed sums); the backward
    all-reduces the input's gradient (each rank's classes contribute a part of it), so every rank
    gets the whole gradient of ``input``, as tensor parallelism expects. The weight and bias
    gradients are each rank's own slice. Works under ``torch.compile(fullgraph=True)`` and
    ``torch.func.vmap`` (hidden states and target batched). Forward-mode AD works (one more all-gather, of each
    rank's share of the tangent). The backward is differentiable (``create_graph=True``):
    differentiating the gradient all-reduces the cotangents of :math:`\ell` (``N``) and, when the
    input requires grad, the input's (``N x in``); see docs/distributed.md for the counts.
    """
    from .._autograd import linear as lin

    fn = "vocab_parallel_linear_cross_entropy"
    lw, bias = local_linear_weight, local_linear_bias

    def stand_in():
        """The head's checks, then a zero-stride stand-in for the ``(N, C_local, ...)`` logits, so
        that the metadata exchange and the target checks are those of the logits version."""
        if not isinstance(input, Tensor) or not isinstance(lw, Tensor):
            raise TypeError(f"{fn}: input and local_linear_weight must be tensors")
        if lw.dim() != 2:
            raise ValueError(f"{fn}: local_linear_weight must be (C_local, in), got shape {list(lw.shape)}")
        if input.dim() < 1 or input.shape[-1] != lw.shape[1]:
            raise ValueError(
                f"{fn}: input of shape {list(input.shape)} does not end in local_linear_weight's "
                f"in_features ({lw.shape[1]})"
            )
        if input.dtype != lw.dtype:
            raise RuntimeError(f"{fn}: input ({input.dtype}) and local_linear_weight ({lw.dtype}) differ in dtype")
        if bias is not None and (bias.shape != lw.shape[:1] or bias.dtype != lw.dtype):
            raise ValueError(
                f"{fn}: local_linear_bias must be ({lw.shape[0]},) of dtype {lw.dtype}, got "
                f"{list(bias.shape)} of {bias.dtype}"
            )
        lead = input.shape[:-1]
        return input.new_empty(()).expand(*lead[:1], lw.shape[0], *lead[1:])

    needs_input_grad = isinstance(input, Tensor) and input.requires_grad and torch.is_grad_enabled()
    layout, kind, code, ignore_index, eps = _prepare(
        fn, stand_in, target, group, vocab_start, weight, ignore_index, reduction, label_smoothing, int(needs_input_grad)
    )
    if layout is None:
        return _poisoned(input, local_linear_weight)
    cfg = _Cfg(layout, code, ignore_index, eps, 1)
    budget = lin.DEFAULT_BUDGET if budget is None else int(budget)
    if kind == KIND_PROBS:
        return _VPLCE_PROBS(input, local_linear_weight, local_linear_bias, target, weight, cfg, budget)[0]
    return _VPLCE(input, local_linear_weight, local_linear_bias, target, weight, cfg, budget)[0]


# Each Function through a Dispatch: its jvp-less twin while torch.compile traces (Dynamo does not
# trace a Function that defines jvp), the Function itself otherwise.
_VPCE = Dispatch(VocabParallelCrossEntropyFunction)
_VPCE_PROBS = Dispatch(VocabParallelCrossEntropyProbsFunction)
_VPLCE = Dispatch(VocabParallelLinearCrossEntropyFunction)
_VPLCE_PROBS = Dispatch(VocabParallelLinearCrossEntropyProbsFunction)


# ============================================================================================
# DTensor: torchloss.functional.cross_entropy on logits sharded on the class dimension


def is_dtensor(x) -> bool:
    """Whether ``x`` is a ``torch.distributed.tensor.DTensor`` (without importing DTensor)."""
    mod = sys.modules.get("torch.distributed.tensor")
    return mod is not None and isinstance(x, mod.DTensor)


class DTensorCrossEntropyFunction(Function):
    """:func:`vocab_parallel_cross_entropy` of a class-sharded ``DTensor`` (one torchloss node:
    it unwraps the local shards, runs the same math, and wraps the loss as a replicated DTensor
    and the gradients with the operands' placements, ``Partial`` for replicated ones).

    A differentiated backward (``create_graph=True``) unwraps the saved operands with
    ``to_local()`` (differentiable; a replicated operand's and the upstream gradient's
    cotangents come back as ``Partial``, each rank's share), runs the same differentiable local
    math as :func:`vocab_parallel_cross_entropy` (:class:`_AttachLogS`: one all-reduce in the
    double backward) and wraps the gradients with ``DTensor.from_local`` (differentiable).
    ``jvp`` takes DTensor (or plain) tangents: this rank's share of the tangent, summed over the
    ranks (one all-gather), as a replicated DTensor."""

    @staticmethod
    def forward(ctx, input, target, weight, cfg, probs):
        from torch.distributed.tensor import DTensor, Replicate

        x, t, w = (v.to_local() if isinstance(v, DTensor) else v for v in (input, target, weight))
        loss, stats = (_probs_forward if probs else _index_forward)(x, t, w, cfg)
        ctx.cfg, ctx.probs, ctx.has_weight = cfg, probs, w is not None
        ctx.mesh = input.device_mesh
        ctx.specs = tuple(
            (v.device_mesh, v.placements, v.shape, v.stride()) if isinstance(v, DTensor) else None
            for v in (input, target, weight)
        )
        tensors = (*stats, input, target, *((weight,) if weight is not None else ()))
        ctx.save_for_backward(*tensors)
        ctx.save_for_forward(*tensors)
        return DTensor.from_local(loss, input.device_mesh, [Replicate()], run_check=False)

    @staticmethod
    def _unpack(ctx, differentiated=False):
        """``(stats, x, t, w)``: the statistics and the operands' local tensors (for a
        differentiated backward, through the differentiable ``to_local()``)."""
        from torch.distributed.tensor import DTensor, Partial

        saved = ctx.saved_tensors
        k = 3 if ctx.probs else 5
        stats, ops = tuple(saved[:k]), saved[k:]

        def local(v):
            if not isinstance(v, DTensor):
                return v
            if differentiated and v.placements[0].is_replicate():
                return v.to_local(grad_placements=[Partial()])  # (each rank's share of the cotangent)
            return v.to_local()

        return stats, local(ops[0]), local(ops[1]), (local(ops[2]) if ctx.has_weight else None)

    @staticmethod
    def backward(ctx, grad):
        from torch.distributed.tensor import DTensor, Partial

        differentiated = torch.is_grad_enabled()
        stats, x, t, w = DTensorCrossEntropyFunction._unpack(ctx, differentiated)
        if isinstance(grad, DTensor):
            g = grad.to_local(grad_placements=[Partial()]) if differentiated else grad.to_local()
        else:
            g = grad
        if ctx.probs:
            gx, gt, gw = _probs_grads(x, t, w, stats, ctx.cfg, g, ctx.needs_input_grad[:3], replicate=False)
        else:
            gx, gt, gw = (_index_grad(x, t, w, stats, ctx.cfg, g, replicate=False) if ctx.needs_input_grad[0] else None), None, None
        out = []
        for grad_v, spec in zip((gx, gt, gw), ctx.specs):
            if grad_v is None or spec is None:
                out.append(grad_v)
                continue
            mesh, placements, shape, stride = spec
            if placements[0].is_replicate():  # each rank holds its classes' part
                placements = [Partial()]
            out.append(DTensor.from_local(grad_v, mesh, placements, shape=shape, stride=stride, run_check=False))
        return out[0], out[1], out[2], None, None

    @staticmethod
    def jvp(ctx, t_input, t_target, t_weight, _c, _p):
        from torch.distributed.tensor import DTensor, Replicate

        stats, x, t, w = DTensorCrossEntropyFunction._unpack(ctx)

        def local(v):
            return v.to_local() if isinstance(v, DTensor) else v

        cfg = ctx.cfg
        if ctx.probs:
            part = _probs_tangent(x, t, w, stats, cfg, local(t_input), local(t_target), local(t_weight))
            dtype = _probs_dtypes(x, t, w)[0]
        elif t_input is None:
            part, dtype = torch.zeros_like(_index_forward_shape(stats, cfg, x)), x.dtype
        else:
            part, dtype = _index_tangent(x, t, w, stats, cfg, local(t_input)), x.dtype
        if t_input is not None or ctx.probs:
            part = _rank_sum(part, cfg.layout.group)
        return DTensor.from_local(part.to(dtype), ctx.mesh, [Replicate()], run_check=False)


def dtensor_cross_entropy(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None,
                          reduction="mean", label_smoothing=0.0):
    """``torchloss.functional.cross_entropy`` for a ``DTensor`` input sharded on its class
    dimension (``Shard(1)``, or ``Shard(-1)`` of an ``(N, C)`` input) over a 1-D mesh: the same
    loss and gradients as torch's ``loss_parallel()``, plus label smoothing, probability targets
    (a DTensor sharded like the input, or a plain tensor of the whole vocabulary), class weights
    with ignored targets, every reduction. The target (class indices) may be a plain tensor or a
    replicated DTensor; the weight a plain ``(C,)`` tensor or a DTensor (replicated or sharded).
    Returns a replicated DTensor."""
    from torch.distributed.tensor import DTensor

    fn = "cross_entropy"
    if size_average is not None or reduce is not None:
        reduction = R.legacy_get_string(size_average, reduce)
    mesh = input.device_mesh
    cd = 0 if input.dim() == 1 else 1
    placement = input.placements[0] if len(input.placements) == 1 else None
    if mesh.ndim != 1 or placement is None or not placement.is_shard() or placement.dim % max(input.dim(), 1) != cd:
        raise NotImplementedError(
            f"{fn}: a DTensor input must be sharded on its class dimension ({cd}) over a 1-D device mesh "
            f"(Shard({cd})); got placements {tuple(input.placements)} on a {mesh.ndim}-D mesh: "
            "redistribute it, or call full_tensor()"
        )
    group = mesh.get_group(0)
    x = input.to_local()

    def local(v):
        # replicated: the whole tensor; sharded: this rank's part (told apart by size afterwards)
        if not isinstance(v, DTensor):
            return v
        if len(v.placements) == 1 and (v.placements[0].is_replicate() or v.placements[0].is_shard()):
            return v.to_local()
        raise NotImplementedError(f"{fn}: unsupported placements {tuple(v.placements)} of a DTensor target or weight")

    t, w = local(target), local(weight)
    layout, kind, code, ignore_index, eps = _prepare(
        fn, x, t, group, None, w, ignore_index, reduction, label_smoothing
    )
    if layout is None:
        return _poisoned(x)
    cfg = _Cfg(layout, code, ignore_index, eps, cd)
    return DTensorCrossEntropyFunction.apply(input, target, weight, cfg, kind == KIND_PROBS)
