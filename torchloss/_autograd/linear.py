r"""Linear cross entropy: cross entropy of ``input @ linear_weight.T + linear_bias``, streamed.

Notation. The input is :math:`X` (``(N, in)``; an unbatched ``(in,)`` input is one row), the
linear weight :math:`W` (``(C, d1..dK, in)``, viewed as ``(C, D, in)`` with :math:`D = \prod d_k`,
1 without ``out_features``), the bias :math:`b` (``(C, D)``). A *position* :math:`p = (n, j)` is a
row and an output feature; its logits are :math:`z_{pc} = X_n \cdot W_{cj} + b_{cj}` and its
softmax runs over the :math:`C` classes. :math:`\ell_p = \log\sum_c e^{z_{pc}}`,
:math:`s_{pc} = e^{z_{pc} - \ell_p}`.

Loss per position (exactly :func:`torchloss._autograd.classification`'s cross entropy of the
logits). Index targets :math:`t_p` with validity :math:`v_p`, class weights :math:`w` (1 if absent),
:math:`w_t = v\,w[t]`, smoothing :math:`\varepsilon`, and :math:`r_c = w_c`:

.. math::
    l_p = (1-\varepsilon)\,w_t(\ell_p - z_{pt}) + \frac{\varepsilon}{C}\sum_c r_c(\ell_p - z_{pc}).

Probability targets :math:`t_{pc}`, :math:`t' = (1-\varepsilon)t + \varepsilon/C` and
:math:`r_{pc} = w_c t'_{pc}` (per position): :math:`l_p = \sum_c r_{pc}(\ell_p - z_{pc})`.

Streaming statistics. A block of rows and classes gives, per position, with its own maximum
:math:`m = \max_c z_{pc}`: :math:`s = \sum_c e^{z_{pc} - m}`, :math:`z_t` (the target's logit if
it lies in the block, else 0), :math:`R = \sum_c r_c (m - z_{pc})` and :math:`\rho = \sum_c r_c`.
Blocks combine exactly (:func:`combine_stats`): with :math:`M = \max_j m_j`,
:math:`S = \sum_j s_j e^{m_j - M}`, :math:`R = \sum_j R_j + \rho_j (M - m_j)`, :math:`\rho = \sum_j
\rho_j`, :math:`z_t = \sum_j z_{t,j}`. Then :math:`\ell = M + \log S` and

.. math::
    \ell - z_t = \log S + (M - z_t), \qquad \sum_c r_c(\ell - z_c) = \rho \log S + R,

sums of non-negative terms (for non-negative :math:`r`): no large :math:`\ell` is ever subtracted
from a large :math:`z`, so the loss keeps its digits as the log-softmax form does.

Gradients. :math:`\partial l_p/\partial z_{pc} = a^s_p s_{pc} - a^t_p [c = t_p] - a^r_p r_{pc}` with,
for the upstream gradient :math:`g_p` of the position (:math:`g` for ``'sum'``, :math:`g/\mathcal D`
for ``'mean'``, each position's own for ``'none'``; 0 where ignored):

* index targets: :math:`a^t = g(1-\varepsilon) w_t`, :math:`a^r = g v\,\varepsilon/C`,
  :math:`a^s = a^t + a^r \rho` (:math:`\rho = \sum_c w_c`);
* probability targets: :math:`a^t = 0`, :math:`a^r = g`, :math:`a^s = g\rho_p`.

Writing :math:`G_{pc}` for this, :math:`\partial L/\partial X_n = \sum_{j,c} G_{njc} W_{cj}`,
:math:`\partial L/\partial W_{cj} = \sum_n G_{njc} X_n`, :math:`\partial L/\partial b_{cj} = \sum_n
G_{njc}`: two matrix products per block of :math:`G`, which never exists beyond one block. For
probability targets also :math:`\partial L/\partial t_{pc} = g_p(1-\varepsilon) w_c (\ell_p -
z_{pc})` and :math:`\partial L/\partial w_c = \sum_p g_p t'_{pc}(\ell_p - z_{pc})`.

Tangents. :math:`\dot z = \dot X W^\top + X \dot W^\top + \dot b` block by block, and
:math:`\dot l_p = \sum_c G_{pc}\dot z_{pc}` (with :math:`g_p` = 1) plus, for probability targets,
:math:`\sum_c (\ell_p - z_{pc})\big[(1-\varepsilon) w_c \dot t_{pc} + \dot w_c t'_{pc}\big]`;
reduced as the loss.

Memory. Every pass runs over blocks of rows and classes planned from the shapes
(:func:`block_plan`) so that the block temporaries (logits, their exponentials or gradient, an
upcast of the weight block for float16/bfloat16) stay within a byte budget; the ``N x C`` logits
never exist. Eager ``'mean'``/``'sum'`` calls that need gradients form them during the forward
pass (one logits pass for the loss and the gradients: three matrix products per block in all, as
torch's unfused path), and backward scales them by the upstream gradient. Otherwise (``'none'``,
``torch.func`` transforms, ``torch.compile``, a differentiated backward) backward recomputes the
logits block by block from the saved inputs, with ordinary differentiable ops, so double backward
differentiates exactly the formulas above. The per-position :math:`\ell` is saved from the forward
as its two parts :math:`M` and :math:`\log S` (``2 x N x D`` values; backward forms
:math:`z - \ell` as :math:`(z - M) - \log S`, as the log-softmax does) for first-order backward
and ``jvp``; a differentiated backward recomputes it.

The streaming parts are public to the package, for ``vocab_parallel_linear_cross_entropy``: each
rank calls :func:`shard_stats` on its vocabulary shard (``vocab_start`` = its first class),
combines the statistics over ranks (``Stats.rebase`` to the global maximum, then sums), forms
:math:`\ell` and the coefficients, and calls :func:`shard_grads` for its shard's gradients.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import torch
import torch.autograd.forward_ad as _fwad
from torch import Tensor

from .. import _autocast, _native
from .. import _reduction as R
from ._base import LossFunction, constant, opmath_dtype

DEFAULT_BUDGET = 128 << 20  # bytes of block temporaries (see block_plan)
_wrapped = torch._C._functorch.is_functorch_wrapped_tensor
_legacy_batched = torch._C._functorch.is_legacy_batchedtensor
_transforms_active = torch._C._are_functorch_transforms_active


# --------------------------------------------------------------------------------------------
# The block plan


@functools.lru_cache(maxsize=None)
def native_half_products(dtype: torch.dtype) -> bool:
    """Whether this CPU multiplies ``dtype`` (bfloat16/float16) matrices natively, as torch runs
    them now: bfloat16 needs avx512_bf16 (or AMX) with torch's kernels not capped below AVX512
    (``ATEN_CPU_CAPABILITY``); float16 needs AMX-FP16. Elsewhere (an AVX2 CPU) a half product is
    emulated and several times slower than a float32 one, so every product runs in float32."""
    cpu = torch.cpu
    cap = torch.backends.cpu.get_cpu_capability()
    if not cap.startswith(("AVX512", "AMX")):
        return False
    if dtype == torch.bfloat16:
        return bool(getattr(cpu, "_is_avx512_bf16_supported", lambda: False)())
    if dtype == torch.float16:
        return bool(getattr(cpu, "_is_amx_fp16_supported", lambda: False)())
    return False


def block_plan(rows: int, classes: int, D: int, in_features: int, compute: torch.dtype, budget: int,
               upcast_weight: bool = False) -> tuple[int, int]:
    """``(row_block, vocab_block)`` for ``rows`` x ``classes`` (x ``D``) logits within ``budget``
    bytes of temporaries.

    A block of ``r`` rows and ``c`` classes holds about three ``r x c x D`` buffers of the
    computation dtype (logits, exponentials or gradient, one more temporary) plus, when the
    weight is upcast per block (float16/bfloat16), ``c x D x in`` floats. Whole-vocabulary blocks
    are preferred (one logits pass gives the loss and gradients); when fewer than 64 rows (or all
    of them) fit that way, rows are capped at 256 and the vocabulary is split instead.
    """
    item = torch.empty((), dtype=compute).element_size()
    per_elem = 3 * item * max(D, 1)
    wcol = item * max(D, 1) * in_features if upcast_weight else 0
    budget = max(int(budget), 1)
    classes = max(classes, 1)
    rows_full = (budget - wcol * classes) // (per_elem * classes) if budget > wcol * classes else 0
    if rows_full >= min(rows, 64) and rows_full > 0:
        rb = max(1, min(rows, rows_full))
        nb = -(-rows // rb)
        return (-(-rows // nb) if nb else rb), classes  # (balanced: no small last block)
    rb = max(1, min(rows, 256))
    cb = budget // (per_elem * rb + wcol)
    while cb < 16 and rb > 1:
        rb //= 2
        cb = budget // (per_elem * rb + wcol)
    return rb, max(1, min(classes, cb))


def _ranges(total: int, step: int):
    return [(i, min(i + step, total)) for i in range(0, total, step)]


# --------------------------------------------------------------------------------------------
# Streaming statistics


class Stats(NamedTuple):
    """Per-position statistics of a block of classes, each ``(N, D)`` in the computation dtype:
    ``m`` the maximum logit, ``s`` the sum of ``exp(z - m)``, ``zt`` the target's logit (0 where
    the target is not among the classes), ``r`` the sum of ``r_c (m - z_c)`` and ``rho`` the sum
    of ``r_c`` (both 0 when there is no ``r``)."""

    m: Tensor
    s: Tensor
    zt: Tensor
    r: Tensor
    rho: Tensor

    def rebase(self, M: Tensor) -> Stats:
        """The statistics relative to a maximum ``M >= m`` (the global one): after this, the
        statistics of disjoint class blocks (or vocabulary shards) combine by summing."""
        shift = M - self.m
        return Stats(M, self.s * torch.exp(-shift), self.zt, self.r + self.rho * shift, self.rho)

    def lse(self) -> Tensor:
        return self.m + torch.log(self.s)


def combine_stats(parts: list[Stats]) -> Stats:
    """The statistics of the union of disjoint class blocks."""
    if len(parts) == 1:
        return parts[0]
    M = parts[0].m
    for p in parts[1:]:
        M = torch.maximum(M, p.m)
    out = parts[0].rebase(M)
    s, zt, r, rho = out.s, out.zt, out.r, out.rho
    for p in parts[1:]:
        q = p.rebase(M)
        s, zt, r, rho = s + q.s, zt + q.zt, r + q.r, rho + q.rho
    return Stats(M, s, zt, r, rho)


def _logits(x: Tensor, w: Tensor, b: Tensor | None, c0: int, c1: int, compute: torch.dtype,
            out: Tensor | None = None) -> Tensor:
    """``(rows, c1 - c0, D)`` logits of classes ``[c0, c1)`` of a ``(C, D, in)`` weight (written
    into ``out``, a ``(rows, (c1 - c0) D)`` buffer, when given: eager only)."""
    wb = w[c0:c1]
    cb, D = wb.shape[0], wb.shape[1]
    wb = wb.reshape(cb * D, wb.shape[2])
    if wb.dtype != compute:
        wb = wb.to(compute)
    if out is not None:
        z = torch.mm(x, wb.t(), out=out) if b is None else torch.addmm(
            b[c0:c1].reshape(cb * D).to(compute), x, wb.t(), out=out)
    else:
        z = torch.mm(x, wb.t()) if b is None else torch.addmm(b[c0:c1].reshape(cb * D).to(compute), x, wb.t())
    return z.view(x.shape[0], cb, D)


def _local(idx: Tensor | None, valid: Tensor | None, start: int, cb: int):
    """``(local, inside)``: the targets' indices within a block starting at class ``start``
    (clamped into it) and where a valid target lies in the block."""
    local = idx - start
    inside = (local >= 0) & (local < cb)
    if valid is not None:
        inside = inside & valid
    return local.clamp(0, cb - 1).unsqueeze(1), inside


class ProbR:
    """The coefficients :math:`r_{pc} = w_c t'_{pc}` of probability targets, formed block by block
    from the ``(N, C, D)`` target (a view of the caller's): never a second ``N x C`` tensor."""

    def __init__(self, target: Tensor, wvec: Tensor | None, eps: float, compute: torch.dtype):
        self.t, self.wvec, self.eps, self.compute = target, wvec, eps, compute
        self.C = target.shape[1]

    def tsm_block(self, rows: tuple[int, int], c0: int, c1: int) -> Tensor:
        t = self.t[rows[0]:rows[1], c0:c1].to(self.compute)
        return t.mul(1 - self.eps).add_(self.eps / self.C) if self.eps > 0 else t

    def block(self, rows: tuple[int, int], c0: int, c1: int) -> Tensor:
        if self.wvec is None:
            return self.tsm_block(rows, c0, c1)
        # w t' = t (1 - eps) w + (eps / C) w: one fused op, one block-sized result
        w = self.wvec[c0:c1].view(1, c1 - c0, 1)
        t = self.t[rows[0]:rows[1], c0:c1].to(self.compute)
        if self.eps > 0:
            return torch.addcmul(w * (self.eps / self.C), t, w * (1 - self.eps))
        return t * w

    def rho(self, rb: int, cb: int) -> Tensor:
        r""":math:`\rho_p = \sum_c r_{pc}`, ``(N, D)``, over blocks of ``rb`` rows and ``cb``
        classes."""
        N, D = self.t.shape[0], self.t.shape[2]
        rows = []
        for r0, r1 in _ranges(N, max(1, rb)):
            total = None
            for c0, c1 in _ranges(self.C, max(1, cb)):
                part = self.block((r0, r1), c0, c1).sum(1)
                total = part if total is None else total + part
            rows.append(total if total is not None else self.t.new_zeros((r1 - r0, D), dtype=self.compute))
        if not rows:
            return self.t.new_zeros((0, D), dtype=self.compute)
        return rows[0] if len(rows) == 1 else torch.cat(rows, 0)


def _r_block(r, rows: tuple[int, int], c0: int, c1: int) -> Tensor | None:
    """``r`` of a block, broadcastable to ``(rows, cb, D)``: from a class vector ``(C,)``, a
    per-position ``(N, C, D)`` tensor or a :class:`ProbR`."""
    if r is None:
        return None
    if isinstance(r, ProbR):
        return r.block(rows, c0, c1)
    if r.dim() == 1:
        return r[c0:c1].view(1, c1 - c0, 1)
    return r[rows[0]:rows[1], c0:c1]


def block_stats(z: Tensor, local: Tensor | None, inside: Tensor | None, r: Tensor | None,
                in_place: bool = False) -> Stats:
    """:class:`Stats` of one ``(rows, cb, D)`` logits block. ``in_place`` (eager, nothing
    differentiates it) lets it overwrite ``z`` with :math:`e^{z - m}`: then at most one more
    block-sized temporary exists at a time."""
    m = z.amax(1)
    mk = m.unsqueeze(1)
    if local is not None:
        zt = torch.where(inside, z.gather(1, local).squeeze(1), 0)
    else:
        zt = torch.zeros_like(m)
    if r is not None:
        d = mk - z  # m - z >= 0
        rr = (d.mul_(r) if in_place else d * r).sum(1)
        del d
        rho = r.sum(1).expand_as(m) if r.shape[0] == 1 else r.sum(1)
    else:
        rr = rho = torch.zeros_like(m)
    s = (z.sub_(mk).exp_() if in_place else torch.exp(z - mk)).sum(1)
    return Stats(m, s, zt, rr, rho)


def shard_stats(x: Tensor, w: Tensor, b: Tensor | None, idx: Tensor | None, valid: Tensor | None,
                r: Tensor | None, *, vocab_start: int = 0, budget: int = DEFAULT_BUDGET) -> Stats:
    """The statistics of every position over the classes of ``w`` (``(C_shard, D, in)``, whose
    first class is ``vocab_start`` of the whole vocabulary): ``(N, D)`` tensors.

    ``x`` is ``(N, in)``; ``idx``/``valid`` the ``(N, D)`` target indices (global) and validity
    (``None`` for probability targets); ``r`` the smoothing/probability coefficients of these
    classes (``(C_shard,)`` or ``(N, C_shard, D)``) or ``None``. Differentiable (ordinary ops).
    """
    compute = opmath_dtype(x.dtype)
    N, C, D = x.shape[0], w.shape[0], w.shape[1]
    rb, cb = block_plan(N, C, D, x.shape[1], compute, budget, w.dtype != compute)
    in_place = _first_order(x, w, b, idx, r if isinstance(r, Tensor) else None)
    rows_out = []
    for r0, r1 in _ranges(N, rb):
        xi = x[r0:r1].to(compute)
        st = None
        for c0, c1 in _ranges(C, cb):
            z = _logits(xi, w, b, c0, c1, compute)
            local = inside = None
            if idx is not None:
                local, inside = _local(idx[r0:r1], valid[r0:r1], vocab_start + c0, c1 - c0)
            part = block_stats(z, local, inside, _r_block(r, (r0, r1), c0, c1), in_place)
            del z
            st = part if st is None else combine_stats([st, part])  # a running fold: O(rows) memory
        rows_out.append(st)
    if len(rows_out) == 1:
        return rows_out[0]
    if not rows_out:
        empty = x.new_zeros((0, D), dtype=compute)
        return Stats(empty, empty, empty, empty, empty)
    return Stats(*(torch.cat(f, 0) for f in zip(*rows_out)))


# --------------------------------------------------------------------------------------------
# Gradients, block by block


class Coefs(NamedTuple):
    """Per-position coefficients of :math:`G = a^s s - a^t[c = t] - a^r r`, ``(N, D)`` each
    (``tgt`` ``None`` for probability targets, ``r`` ``None`` without ``r``)."""

    soft: Tensor
    tgt: Tensor | None
    r: Tensor | None


def _lse_rows(lse, r0: int, r1: int):
    """Rows ``[r0, r1)`` of ``lse``: a tensor, or the pair ``(M, log S)`` (see :func:`_centred`)."""
    if isinstance(lse, tuple):
        return lse[0][r0:r1], lse[1][r0:r1]
    return lse[r0:r1]


def _centred(z: Tensor, lse, in_place: bool = False) -> Tensor:
    r""":math:`z - \ell` of a ``(rows, cb, D)`` block. ``lse`` is :math:`\ell` ``(rows, D)``, or
    the pair ``(M, log S)`` with :math:`\ell = M + \log S`: then formed as ``(z - M) - log S``, as
    the log-softmax is, so that large logits keep their digits (:math:`\ell` rounded first would
    lose those below its ulp)."""
    if isinstance(lse, tuple):
        M, log_s = lse[0].unsqueeze(1), lse[1].unsqueeze(1)
        return z.sub_(M).sub_(log_s) if in_place else (z - M) - log_s
    return z.sub_(lse.unsqueeze(1)) if in_place else z - lse.unsqueeze(1)


def _distance(lse, z: Tensor, out: Tensor | None = None) -> Tensor:
    r""":math:`\ell - z` (``-log softmax``) of a block, as :func:`_centred`, optionally into ``out``."""
    if isinstance(lse, tuple):
        M, log_s = lse[0].unsqueeze(1), lse[1].unsqueeze(1)
        if out is not None:
            return torch.sub(M, z, out=out).add_(log_s)
        return (M - z) + log_s
    if out is not None:
        return torch.sub(lse.unsqueeze(1), z, out=out)
    return lse.unsqueeze(1) - z


def block_grad(z: Tensor, lse: Tensor, co: Coefs, local, inside, r: Tensor | None) -> Tensor:
    """:math:`G` of one ``(rows, cb, D)`` block (a fresh tensor; ``co``/``lse`` of its rows;
    ``lse`` may be the pair ``(M, log S)``, see :func:`_centred`)."""
    G = torch.exp(_centred(z, lse)) * co.soft.unsqueeze(1)
    if r is not None and co.r is not None:
        G = G - co.r.unsqueeze(1) * r
    if co.tgt is not None and local is not None:
        G = G.scatter_add(1, local, torch.where(inside, -co.tgt, 0).unsqueeze(1))
    return G


def _block_grad_(z: Tensor, lse: Tensor, co: Coefs, local, inside, r: Tensor | None) -> Tensor:
    """:func:`block_grad` in place on ``z`` (eager, nothing differentiates it)."""
    G = _centred(z, lse, True).exp_().mul_(co.soft.unsqueeze(1))
    if r is not None and co.r is not None:
        G.addcmul_(r, co.r.unsqueeze(1), value=-1)  # no temporary
    if co.tgt is not None and local is not None:
        G.scatter_add_(1, local, torch.where(inside, -co.tgt, 0).unsqueeze(1))
    return G


class Grads(NamedTuple):
    x: Tensor | None  # (N, in): this shard's part of the input's gradient
    w: Tensor | None  # (C_shard, D, in)
    b: Tensor | None  # (C_shard, D)
    t: Tensor | None  # (N, C_shard, D): probability targets
    weight: Tensor | None  # (C_shard,): class weights of probability targets


def shard_grads(x: Tensor, w: Tensor, b: Tensor | None, lse: Tensor, co: Coefs,
                idx: Tensor | None, valid: Tensor | None, r: Tensor | None, *,
                need: tuple[bool, bool, bool] = (True, True, False), probs: tuple | None = None,
                vocab_start: int = 0, budget: int = DEFAULT_BUDGET, in_place: bool = False) -> Grads:
    """The gradients of the loss over the classes of ``w`` (a vocabulary shard starting at
    ``vocab_start``), given the global per-position ``lse`` and coefficients ``co``.

    ``need`` = (input, weight, bias). ``probs``, for probability-target gradients, is
    ``(gt_coef, wvec, t_smoothed, gw_coef)``: ``gt_coef`` ``(N, D)`` = :math:`g(1-\\varepsilon)`
    or ``None``, ``wvec`` the class weights (``(C_shard,)`` or ``None``), ``t_smoothed``
    ``(N, C_shard, D)`` and ``gw_coef`` ``(N, D)`` = :math:`g` or ``None``. The input gradient is
    this shard's part (the vocab-parallel caller all-reduces it). ``in_place`` accumulates in
    place (eager, nothing differentiates the result); otherwise every op is out of place and
    differentiable.
    """
    compute = opmath_dtype(x.dtype)
    N, K = x.shape
    C, D = w.shape[0], w.shape[1]
    need_x, need_w, need_b = need
    gt_coef, wvec, tsm, gw_coef = probs if probs is not None else (None, None, None, None)
    rb, cb = block_plan(N, C, D, K, compute, budget, w.dtype != compute)
    vblocks = _ranges(C, cb)
    if in_place:
        gx = x.new_zeros((N, K), dtype=compute) if need_x else None
        gw = w.new_zeros((C * D, K), dtype=compute) if need_w else None
        gb = w.new_zeros((C * D,), dtype=compute) if need_b else None
        gt = x.new_empty((N, C, D), dtype=compute) if gt_coef is not None else None
        gwt = x.new_zeros((C,), dtype=compute) if gw_coef is not None else None
    else:
        gx_rows, gw_parts, gb_parts, gt_rows, gwt_parts = [], [None] * len(vblocks), [None] * len(vblocks), [], [None] * len(vblocks)
    for r0, r1 in _ranges(N, rb):
        xi = x[r0:r1].to(compute)
        lse_i = _lse_rows(lse, r0, r1)
        co_i = Coefs(co.soft[r0:r1], None if co.tgt is None else co.tgt[r0:r1], None if co.r is None else co.r[r0:r1])
        gxi = None
        gt_blocks = []
        for j, (c0, c1) in enumerate(vblocks):
            z = _logits(xi, w, b, c0, c1, compute)
            cbj = c1 - c0
            local = inside = None
            if idx is not None:
                local, inside = _local(idx[r0:r1], valid[r0:r1], vocab_start + c0, cbj)
            rblk = _r_block(r, (r0, r1), c0, c1)
            if gt_coef is not None or gw_coef is not None:
                # ℓ - z = -log s; written straight into the target's gradient when eager
                if in_place and gt_coef is not None:
                    dist = _distance(lse_i, z, out=gt[r0:r1, c0:c1])
                else:
                    dist = _distance(lse_i, z)
                if gw_coef is not None:
                    part = dist * tsm.tsm_block((r0, r1), c0, c1)
                    part = (part.mul_(gw_coef[r0:r1].unsqueeze(1)) if in_place else part * gw_coef[r0:r1].unsqueeze(1)).sum((0, 2))
                    if in_place:
                        gwt[c0:c1] += part
                    else:
                        gwt_parts[j] = part if gwt_parts[j] is None else gwt_parts[j] + part
                if gt_coef is not None:
                    if in_place:
                        dist.mul_(gt_coef[r0:r1].unsqueeze(1))
                        if wvec is not None:
                            dist.mul_(wvec[c0:c1].view(1, cbj, 1))
                    else:
                        blk = dist * gt_coef[r0:r1].unsqueeze(1)
                        gt_blocks.append(blk if wvec is None else blk * wvec[c0:c1].view(1, cbj, 1))
                del dist
            if not (need_x or need_w or need_b):
                continue
            if in_place:
                G = _block_grad_(z, lse_i, co_i, local, inside, rblk)
            else:
                G = block_grad(z, lse_i, co_i, local, inside, rblk)
            G2 = G.view(r1 - r0, cbj * D)
            if need_x:
                wb = w[c0:c1].reshape(cbj * D, K)
                wb = wb if wb.dtype == compute else wb.to(compute)
                if in_place:
                    gx[r0:r1].addmm_(G2, wb)
                else:
                    part = torch.mm(G2, wb)
                    gxi = part if gxi is None else gxi + part
            if need_w:
                if in_place:
                    gw[c0 * D:c1 * D].addmm_(G2.t(), xi)
                else:
                    part = torch.mm(G2.t(), xi)
                    gw_parts[j] = part if gw_parts[j] is None else gw_parts[j] + part
            if need_b:
                if in_place:
                    gb[c0 * D:c1 * D] += G2.sum(0)
                else:
                    part = G2.sum(0)
                    gb_parts[j] = part if gb_parts[j] is None else gb_parts[j] + part
            del z, G, G2, rblk  # (before the next block's logits exist)
        if not in_place:
            if need_x:
                gx_rows.append(gxi if gxi is not None else xi.new_zeros(xi.shape))
            if gt_coef is not None:
                gt_rows.append(torch.cat(gt_blocks, 1) if len(gt_blocks) > 1 else gt_blocks[0])
    if not in_place:
        gx = _cat(gx_rows, (0, K), x, compute) if need_x else None
        gw = _cat([p if p is not None else x.new_zeros(((c1 - c0) * D, K), dtype=compute)
                   for p, (c0, c1) in zip(gw_parts, vblocks)], (0, K), x, compute) if need_w else None
        gb = _cat([p if p is not None else x.new_zeros(((c1 - c0) * D,), dtype=compute)
                   for p, (c0, c1) in zip(gb_parts, vblocks)], (0,), x, compute) if need_b else None
        gt = _cat(gt_rows, (0, C, D), x, compute) if gt_coef is not None else None
        gwt = _cat([p if p is not None else x.new_zeros((c1 - c0,), dtype=compute)
                    for p, (c0, c1) in zip(gwt_parts, vblocks)], (0,), x, compute) if gw_coef is not None else None
    return Grads(gx, None if gw is None else gw.view(C, D, K), None if gb is None else gb.view(C, D), gt, gwt)


def _cat(parts, empty_shape, like, dtype):
    if not parts:
        return like.new_zeros(empty_shape, dtype=dtype)
    return parts[0] if len(parts) == 1 else torch.cat(parts, 0)


# --------------------------------------------------------------------------------------------
# The per-position loss and coefficients


class Setup(NamedTuple):
    """What the targets and weights give, before any logits: ``idx``/``valid`` ``(N, D)`` (index
    targets), ``wt`` the target weights, ``r`` the smoothing/probability coefficients,
    ``denom`` the 'mean' denominator, ``tsm`` the :class:`ProbR` of probability targets."""

    idx: Tensor | None
    valid: Tensor | None
    wt: Tensor | None
    r: Tensor | None
    denom: Tensor | int | None
    safe_denom: Tensor | int | None
    tsm: ProbR | None
    wvec: Tensor | None


def _setup(target: Tensor, weight: Tensor | None, N: int, C: int, D: int, probs: bool, ignore_index: int,
           eps: float, compute: torch.dtype) -> Setup:
    wvec = None if weight is None else weight.to(compute)
    if probs:
        r = ProbR(target.reshape(N, C, D), wvec, eps, compute)
        return Setup(None, None, None, r, N * D, N * D, r, wvec)
    t = target.long().reshape(N, D)
    valid = t != ignore_index
    idx = torch.where(valid, t, 0)
    wt = valid.to(compute) if wvec is None else torch.where(valid, wvec.take(idx), 0)
    r = None
    if eps > 0:
        r = wvec if wvec is not None else torch.ones((C,), dtype=compute, device=target.device)
    denom = wt.sum()
    safe = denom + (~valid).all().to(compute)
    return Setup(idx, valid, wt, r, denom, safe, None, wvec)


def _loss(st: Stats, su: Setup, eps: float, C: int, probs: bool) -> Tensor:
    """Per-position loss ``(N, D)`` from the combined statistics."""
    log_s = torch.log(st.s)
    if probs:
        return st.rho * log_s + st.r
    loss = (log_s + (st.m - st.zt)) * su.wt
    if eps > 0:
        loss = (1 - eps) * loss + (eps / C) * (st.rho * log_s + st.r)
    return torch.where(su.valid, loss, 0)


def _coefs(gp: Tensor, su: Setup, eps: float, C: int, probs: bool, rho: Tensor | None) -> Coefs:
    """:class:`Coefs` for per-position upstream gradients ``gp`` (broadcastable to ``(N, D)``)."""
    if probs:
        return Coefs(gp * rho, None, gp.expand_as(rho))
    a = torch.where(su.valid, gp, 0)
    tgt = a * su.wt if eps == 0 else (1 - eps) * a * su.wt
    if eps > 0:
        ar = (eps / C) * a
        W = C if su.wvec is None else su.wvec.sum()
        return Coefs(tgt + ar * W, tgt, ar)
    return Coefs(tgt, tgt, None)


def _reduce(loss: Tensor, reduction: int, denom) -> Tensor:
    if reduction == R.MEAN:
        return loss.sum() / denom
    if reduction == R.SUM:
        return loss.sum()
    return loss


def _per_position(grad: Tensor, reduction: int, safe_denom, N: int, D: int, compute) -> Tensor:
    g = grad.to(compute)
    if reduction == R.MEAN:
        return (g / safe_denom).expand(N, D)
    if reduction == R.SUM:
        return g.expand(N, D)
    return g.reshape(N, D)


# --------------------------------------------------------------------------------------------
# The Function


def _views(input, linear_weight, linear_bias):
    x = input if input.dim() == 2 else input.unsqueeze(0)
    C, K = linear_weight.shape[0], linear_weight.shape[-1]
    w = linear_weight.reshape(C, math.prod(linear_weight.shape[1:-1]), K)  # (no -1: C may be 0)
    b = None if linear_bias is None else linear_bias.reshape(C, w.shape[1])
    return x, w, b


def _out_shape(input, linear_weight, probs):
    """The shape of the 'none' loss: (), (N) or (N, d1..dK)."""
    if input.dim() == 1:
        return ()
    return (input.shape[0], *linear_weight.shape[1:-1])


def _first_order(*tensors) -> bool:
    """Nothing differentiates, transforms or traces this computation (see ``eager_in_place``)."""
    if torch.compiler.is_compiling():
        return False
    if torch.is_grad_enabled() or _fwad._current_level != -1 or _transforms_active():
        return False
    for t in tensors:
        if t is not None and (_wrapped(t) or _legacy_batched(t)):
            return False
    return True


class LinearCrossEntropyFunction(LossFunction):
    r"""Streamed linear cross entropy; see the module docstring for the derivation.

    Arguments: ``input`` ``(in,)``/``(N, in)``, ``linear_weight`` ``(C, d.., in)``, ``target``,
    ``linear_bias``, ``weight``, the reduction code, ``ignore_index``, the smoothing, whether the
    target holds probabilities, the byte budget and whether an eager forward may form the
    gradients. Outputs ``(loss, lse, gx, gw, gb)``: the reduced loss, the per-position
    :math:`\ell` as the ``(2, N, D)`` pair of the maximum and :math:`\log S` (non-differentiable;
    the softmax is then formed as ``exp((z - M) - log S)``, which keeps the digits of large
    logits) and, when the forward formed them, the gradients of the
    reduced loss for a unit upstream gradient (else empty; non-differentiable).
    """

    @staticmethod
    def forward(input, linear_weight, target, linear_bias, weight, reduction, ignore_index, smoothing, probs, budget,
                precompute):
        dtype = input.dtype if not probs else torch.promote_types(input.dtype, target.dtype)
        if probs and weight is not None:
            dtype = torch.promote_types(dtype, weight.dtype)
        compute = opmath_dtype(dtype)
        # under torch.autocast the loss comes out in torch's autocast result dtype (float32), from
        # the float32 accumulation, not rounded through the matmul dtype first (see _autocast)
        dtype = _autocast.result_dtype(dtype)
        x, w, b = _views(input, linear_weight, linear_bias)
        N, C, D = x.shape[0], w.shape[0], w.shape[1]
        if probs and compute != opmath_dtype(x.dtype):
            x, w = x.to(compute), w.to(compute)
            b = None if b is None else b.to(compute)
        su = _setup(target, weight, N, C, D, probs, ignore_index, smoothing, compute)
        need = (input.requires_grad, linear_weight.requires_grad, linear_bias is not None and linear_bias.requires_grad)
        fuse = (
            precompute
            and reduction != R.NONE
            and any(need)
            and not probs_needs_extra(probs, target, weight)
            and not torch.compiler.is_compiling()
            and not _transforms_active()
            and _fwad._current_level == -1
            and not any(_wrapped(t) for t in (input, linear_weight, target) if t is not None)
        )
        if not fuse:
            st = shard_stats(x, w, b, su.idx, su.valid, su.r, budget=budget)
            loss = _reduce(_loss(st, su, smoothing, C, probs), reduction, su.denom)
            loss = loss.to(dtype)
            if reduction == R.NONE:
                loss = loss.reshape(_out_shape(input, linear_weight, probs))
            # (three distinct empty tensors: an output returned twice confuses Dynamo)
            return loss, _pair(st), *(x.new_empty((0,), dtype=compute) for _ in range(3))
        return _fused(x, w, b, su, reduction, smoothing, probs, budget, need, dtype, compute)

    @staticmethod
    def setup_context(ctx, inputs, output):
        (input, linear_weight, target, linear_bias, weight, reduction, ignore_index, smoothing, probs, budget,
         _precompute) = inputs
        _, lse, gx, gw, gb = output
        ctx.mark_non_differentiable(lse, gx, gw, gb)
        # (no zero gradients formed for those outputs: gx is the N x C G in the half path)
        ctx.set_materialize_grads(False)
        ctx.reduction, ctx.ignore_index, ctx.smoothing, ctx.probs, ctx.budget = reduction, ignore_index, smoothing, probs, budget
        ctx.fused = gx.numel() + gw.numel() + gb.numel() > 0
        ctx.has_bias, ctx.has_weight = linear_bias is not None, weight is not None
        # the precomputed gradients are held on ctx (detached: no reference cycle through their
        # grad_fn) and handed out, scaled in place, by the first backward; a second backward
        # (retain_graph=True) recomputes from the saved inputs
        ctx.pre = (gx.detach(), gw.detach(), gb.detach()) if ctx.fused else None
        # (a fused forward's backward uses its gradients, and a second or differentiated backward
        # recomputes: the statistics are kept only when nothing was precomputed)
        kept = lse if not ctx.fused else lse.new_empty((0,))
        ctx.save_for_backward(input, linear_weight, target, linear_bias, weight, kept)
        ctx.save_for_forward(input, linear_weight, target, linear_bias, weight, kept)

    @staticmethod
    def backward(ctx, grad, _lse, _gx, _gw, _gb):
        if grad is None:  # (gradients are not materialized: nothing reached the loss)
            return (None,) * 11
        saved = ctx.saved_tensors
        input, linear_weight, target, linear_bias, weight, lse = saved[:6]
        need_x, need_w, _, need_b, need_weight = ctx.needs_input_grad[:5]
        need_t = ctx.needs_input_grad[2]
        first = _first_order(grad, input, linear_weight)
        extra = ctx.probs and (need_t or need_weight)
        if first and ctx.reduction != R.NONE and not extra and (need_x or need_w or need_b):
            pre, ctx.pre = ctx.pre, None
            if pre is None:  # a second backward (retain_graph), or a forward that did not fuse:
                # the same fused pass as the forward's, so that every backward gives the same bits
                x, w, b, su, _N, _C, _D, compute, dtype = _prepare(ctx, input, linear_weight, target, linear_bias, weight)
                pre = _fused(x, w, b, su, ctx.reduction, ctx.smoothing, ctx.probs, ctx.budget,
                             (need_x, need_w, need_b), dtype, compute)[2:]
            gx, gw, gb = pre
            if gx.dtype in (torch.float16, torch.bfloat16) and not _exact_scale(grad):
                # G rounded, then scaled and rounded again, would be less accurate than torch's
                # G: the float32 products instead (the retain_graph pass, without G kept)
                x, w, b, su, _N, _C, _D, compute, dtype = _prepare(ctx, input, linear_weight, target, linear_bias, weight)
                gx, gw, gb = _fused(x, w, b, su, ctx.reduction, ctx.smoothing, ctx.probs, ctx.budget,
                                    (need_x, need_w, need_b), dtype, compute, keep_g=False)[2:]
            if gx.dtype in (torch.float16, torch.bfloat16):
                # float16/bfloat16: the forward kept G (N x C D, the input's dtype); the upstream
                # gradient scales it before the two products, which round their results once
                G = gx.mul_(grad)
                K = input.shape[-1]
                x2 = input.reshape(-1, K)
                out_x = torch.mm(G, linear_weight.reshape(-1, K)).view(input.shape) if need_x else None
                out_w = torch.mm(G.t(), x2).view(linear_weight.shape) if need_w else None
                out_b = _scaled(gb, grad.to(gb.dtype), linear_bias) if need_b else None
                return out_x, out_w, None, out_b, None, None, None, None, None, None, None
            g = grad.to(gx.dtype)
            # (what backward needs was formed: the forward's inputs required at least that)
            out_x = _scaled(gx, g, input) if need_x else None
            out_w = _scaled(gw, g, linear_weight) if need_w else None
            out_b = _scaled(gb, g, linear_bias) if need_b else None
            return out_x, out_w, None, out_b, None, None, None, None, None, None, None
        return _backward(ctx, grad, input, linear_weight, target, linear_bias, weight, lse,
                         (need_x, need_w, need_b, need_t and ctx.probs, need_weight and ctx.probs))

    @staticmethod
    def jvp(ctx, t_input, t_lw, t_target, t_bias, t_weight, *_):
        input, linear_weight, target, linear_bias, weight, lse = ctx.saved_tensors
        return _jvp(ctx, input, linear_weight, target, linear_bias, weight, lse, t_input, t_lw, t_target, t_bias, t_weight)


def _exact_scale(grad: Tensor) -> bool:
    """Whether multiplying by ``grad`` (a CPU scalar: read without a device synchronisation) is
    exact in any floating dtype: 0 or a power of two (1 above all: ``loss.backward()``)."""
    v = abs(float(grad))
    return v == 0.0 or (v != float("inf") and math.frexp(v)[0] == 0.5)


def _scaled(buffer: Tensor, g: Tensor, like: Tensor) -> Tensor:
    """A precomputed gradient times the upstream gradient, in place (the buffer is handed out),
    in ``like``'s dtype and shape."""
    out = buffer.mul_(g)
    return (out if out.dtype == like.dtype else out.to(like.dtype)).view(like.shape)


def probs_needs_extra(probs, target, weight) -> bool:
    """Probability targets whose target or weight needs a gradient take the unfused path (their
    gradients need the upstream gradient's blocks of ``ℓ - z``)."""
    return probs and (target.requires_grad or (weight is not None and weight.requires_grad))


def _fused(x, w, b, su, reduction, eps, probs, budget, need, dtype, compute, keep_g: bool = True):
    r"""Eager forward that also forms the gradients of the reduced loss (unit upstream gradient),
    one row block at a time: statistics over the vocabulary blocks, then the gradient blocks.

    With the whole vocabulary in one block (the usual case), the logits block is turned in place
    into :math:`e^{z - m}` (giving :math:`s`) and then into :math:`G = a^s e^{z-m}/s - \dots`:
    one logits product, four passes over the block and the two gradient products. On the CPU
    with index targets, no smoothing and ``D = 1``, the block becomes the softmax
    :math:`p = e^{z - m}/s` in place instead, row by row (torch's fused kernel keeps a row's
    passes in cache), with :math:`s = 1/\max_c p`, and :math:`G = a (p - [c = t])`. Otherwise
    the statistics come from a first pass over the vocabulary blocks and the gradients from a
    second, which recomputes each block's logits.

    Without ``r`` (index targets, no smoothing) a block holds the logits buffer and at most one
    small temporary, not the three buffers :func:`block_plan` allows for: the plan gets 3/2 of
    the budget then, i.e. two buffers (larger row blocks: fewer passes over the weight's
    gradient). With one vocabulary block, ``D = 1`` and no ``r``, ``G = (a / s)(e - s [c = t])``
    with :math:`e = e^{z - m}`: the row factor ``a / s`` is applied to the ``rows x in``
    operands and results of the gradient products instead of to the block (one pass less)."""
    N, K = x.shape
    C, D = w.shape[0], w.shape[1]
    plain = su.r is None and not probs
    rb, cb = block_plan(N, C, D, K, compute, budget * 3 // 2 if plain else budget, w.dtype != compute)
    # float16/bfloat16 on the CPU: when G of every position fits half the budget in the input's
    # dtype, each block's G (formed in float32) is rounded into it once and returned in place of
    # the input's gradient; backward scales it by the upstream gradient and runs the two
    # gradient products once, on the whole G in the input's dtype (the CPU's bfloat16 products
    # with float32 accumulation: torch's own gradient products, from a more accurate G), instead
    # of per row block in float32. The rest of the budget plans the float32 blocks.
    gfull = None
    if (keep_g and x.dtype != compute and w.dtype == x.dtype and x.device.type == "cpu" and (need[0] or need[1])
            and 2 * N * C * D <= budget // 2 and native_half_products(x.dtype)):
        rest = budget - 2 * N * C * D
        rb2, cb2 = block_plan(N, C, D, K, compute, rest * 3 // 2 if plain else rest, True)
        if cb2 == C and cb == C:
            rb = rb2
            gfull = x.new_empty((N, C * D), dtype=x.dtype)
    vblocks = _ranges(C, cb)
    need_x, need_w, need_b = need
    gx = x.new_zeros((N, K), dtype=compute) if need_x and gfull is None else x.new_empty((0,), dtype=compute)
    gw = w.new_zeros((C * D, K), dtype=compute) if need_w and gfull is None else x.new_empty((0,), dtype=compute)
    gb = w.new_zeros((C * D,), dtype=compute) if need_b else x.new_empty((0,), dtype=compute)
    one = torch.ones((), dtype=compute, device=x.device)
    g_pos = one / su.safe_denom if reduction == R.MEAN else one
    # bfloat16/float16 with G kept in the input's dtype (the CPU multiplies it natively), index
    # targets without smoothing, D = 1: the logits product runs in the input's dtype too, as
    # torch's (its float32 accumulation rounded once to the input's dtype: a quarter of a float32
    # product's time), and everything after it in float32 (see _half_logits_block)
    half_logits = (gfull is not None and plain and D == 1 and len(vblocks) == 1
                   and (b is None or b.dtype == x.dtype))
    wfull = w.reshape(C * D, K)
    if wfull.dtype != compute and wfull.numel() * 4 <= budget // 2 and not half_logits:
        wfull = wfull.to(compute)  # upcast once when it fits the budget, else per block
    w3 = wfull.view(C, D, K)
    losses, lses = [], []
    # one logits buffer for every row block (a fresh large allocation per block costs its page
    # faults again: about a sixth of a logits product)
    buf = x.new_empty((rb * C * D,), dtype=compute) if len(vblocks) == 1 and (N > rb or half_logits) else None
    for r0, r1 in _ranges(N, rb):
        idx_i = None if su.idx is None else su.idx[r0:r1]
        valid_i = None if su.valid is None else su.valid[r0:r1]
        su_i = su._replace(valid=valid_i, wt=None if su.wt is None else su.wt[r0:r1])
        if half_logits:
            st, G2 = _half_logits_block(x[r0:r1], wfull, None if b is None else b.reshape(C), idx_i, valid_i,
                                        buf[:(r1 - r0) * C].view(r1 - r0, C), g_pos, su_i, eps, C)
            if need_b:
                gb.add_(G2.sum(0))
            gfull[r0:r1].copy_(G2)
            losses.append(_loss(st, su_i, eps, C, probs))
            lses.append(torch.stack((st.m, torch.log(st.s))))
            del G2
            continue
        xi = x[r0:r1].to(compute)
        rows = (r0, r1)
        if len(vblocks) == 1:
            z = _logits(xi, w3, b, 0, C, compute, None if buf is None else buf[:(r1 - r0) * C * D].view(r1 - r0, C * D))
            loc = _local(idx_i, valid_i, 0, C) if idx_i is not None else (None, None)
            rblk = _r_block(su.r, rows, 0, C)
            m = z.amax(1, keepdim=True)
            zt = torch.where(loc[1], z.gather(1, loc[0]).squeeze(1), 0) if idx_i is not None else torch.zeros_like(m[:, 0])
            if rblk is not None:
                rr = (rblk * (m - z)).sum(1)
                rho = rblk.sum(1).expand(r1 - r0, D)
            else:
                rr = rho = torch.zeros_like(zt)
            n = r1 - r0
            if plain and D == 1 and idx_i is not None and wfull.dtype == compute and z.device.type == "cpu":
                # the logits block becomes the softmax p = e^{z - m} / s in place, row by row
                # (torch's fused kernel: a row's passes stay in cache, where sub_, exp_ and sum
                # would each stream the whole block), with s = 1 / max_c p (p at the maximum is
                # e^0 / s); then G = a (p - [c = t]), the row factor a kept aside
                p = torch._softmax(z.view(n, C), 1, False, out=z.view(n, C))
                st = Stats(m.squeeze(1), p.amax(1, keepdim=True).reciprocal_(), zt, rr, rho)
                co = _coefs(g_pos.expand(n, D), su_i, eps, C, probs, st.rho)
                row = co.soft.view(n, 1)
                e = p.scatter_add_(1, loc[0].view(n, 1), constant(-1.0, p.dtype, p.device).expand(n, 1))
                softmax_rows = True
            else:
                e = z.sub_(m).exp_()  # the logits block becomes exp(z - m) ...
                st = Stats(m.squeeze(1), e.sum(1), zt, rr, rho)
                co = _coefs(g_pos.expand(n, D), su_i, eps, C, probs, st.rho)
                softmax_rows = False
            if softmax_rows or (plain and D == 1 and co.tgt is not None and wfull.dtype == compute):
                if not softmax_rows:
                    # ... and then e - s [c = t], with the row factor a / s kept aside
                    row = (co.soft / st.s).view(n, 1)
                    e.scatter_add_(1, loc[0], (-st.s).view(n, 1, 1))
                G2 = e.view(n, C)
                if gfull is not None:
                    torch.mul(G2, row, out=gfull[r0:r1])
                    if need_b:
                        gb.addmv_(G2.t(), row.view(-1))
                    losses.append(_loss(st, su_i, eps, C, probs))
                    lses.append(torch.stack((st.m, torch.log(st.s))))
                    del e, G2, z
                    continue
                if need_x:
                    torch.mm(G2, wfull, out=gx[r0:r1]).mul_(row)
                if need_w:
                    gw.addmm_(G2.t(), xi * row)
                if need_b:
                    gb.addmv_(G2.t(), row.view(-1))
                losses.append(_loss(st, su_i, eps, C, probs))
                lses.append(torch.stack((st.m, torch.log(st.s))))
                del e, G2, z  # (before the next block's logits exist)
                continue
            G = e.mul_((co.soft / st.s).unsqueeze(1))  # ... and then G
            del e
            if rblk is not None and co.r is not None:
                G.addcmul_(rblk, co.r.unsqueeze(1), value=-1)
            if co.tgt is not None and loc[0] is not None:
                G.scatter_add_(1, loc[0], torch.where(loc[1], -co.tgt, 0).unsqueeze(1))
            grads = [(0, C, G)]
        else:
            st = None
            for c0, c1 in vblocks:
                z = _logits(xi, w3, b, c0, c1, compute)
                loc = _local(idx_i, valid_i, c0, c1 - c0) if idx_i is not None else (None, None)
                part = block_stats(z, *loc, _r_block(su.r, rows, c0, c1), True)
                del z
                st = part if st is None else combine_stats([st, part])
            co = _coefs(g_pos.expand(r1 - r0, D), su_i, eps, C, probs, st.rho)
            grads = None
        losses.append(_loss(st, su_i, eps, C, probs))
        lse_i = (st.m, torch.log(st.s))
        lses.append(torch.stack(lse_i))
        for c0, c1 in vblocks:
            if grads is not None:
                G = grads.pop()[2]
            else:
                z = _logits(xi, w3, b, c0, c1, compute)
                loc = _local(idx_i, valid_i, c0, c1 - c0) if idx_i is not None else (None, None)
                G = _block_grad_(z, lse_i, co, *loc, _r_block(su.r, rows, c0, c1))
            G2 = G.view(r1 - r0, (c1 - c0) * D)
            if gfull is not None:
                gfull[r0:r1].copy_(G2)
                if need_b:
                    gb += G2.sum(0)
                del G, G2, z
                continue
            if need_x:
                wb = wfull[c0 * D:c1 * D]
                gx[r0:r1].addmm_(G2, wb if wb.dtype == compute else wb.to(compute))
            if need_w:
                gw[c0 * D:c1 * D].addmm_(G2.t(), xi)
            if need_b:
                gb[c0 * D:c1 * D] += G2.sum(0)
            del G, G2, z  # (before the next block's logits exist)
    if not losses:
        loss = x.new_zeros((0, D), dtype=compute)
        lse = x.new_zeros((2, 0, D), dtype=compute)
    else:
        loss = torch.cat(losses, 0) if len(losses) != 1 else losses[0]
        lse = torch.cat(lses, 1) if len(lses) != 1 else lses[0]
    if gfull is not None:  # (backward scales G and multiplies: see the Function's backward)
        gx, gw = gfull, x.new_empty((0,), dtype=compute)
    return _reduce(loss, reduction, su.denom).to(dtype), lse, gx, gw, gb


def _half_logits_block(xh: Tensor, wh: Tensor, bh: Tensor | None, idx: Tensor, valid: Tensor | None, buf: Tensor,
                       g_pos: Tensor, su: Setup, eps: float, C: int) -> tuple[Stats, Tensor]:
    r"""One row block of :func:`_fused` for bfloat16/float16 operands on a CPU that multiplies
    them natively: ``(stats, G)`` with G in float32 (in ``buf``), for index targets without
    smoothing and D = 1.

    The logits come from the product in the operands' dtype (float32 accumulation, rounded once
    to bfloat16: the logits torch's reference path forms), widened into ``buf``; then, in
    float32, the maximum :math:`m`, the softmax :math:`p` (torch's fused kernel, in place) and
    :math:`s = 1/\max_c p_c` (:math:`p` at the maximum is :math:`e^0/s`), so that
    :math:`\log s + m - z_t` is the loss and :math:`G = a (p - [c = t])`, formed in ``buf``.
    The loss and G are those of the rounded logits (so they agree with each other: the target's
    logit is rounded like the rest), accurate to a few float32 ulps from there, where torch's
    reference rounds its log-softmax and G to bfloat16 as well. Measured (docs/linear.md): the
    loss's error is that of the final rounding, the gradients' that of G rounded to bfloat16.
    """
    n = xh.shape[0]
    zh = torch.mm(xh, wh.t()) if bh is None else torch.addmm(bh, xh, wh.t())
    z = buf.copy_(zh)
    del zh
    local, inside = _local(idx.view(n, 1), None if valid is None else valid.view(n, 1), 0, C)
    local = local.view(n, 1)
    m = z.amax(1, keepdim=True)
    zt = torch.where(inside, z.gather(1, local), 0)
    # in place: torch's row-wise softmax reads each row before writing it (no fresh buffer, whose
    # page faults would cost as much as the softmax)
    p = torch._softmax(z, 1, False, out=z)
    s = p.amax(1, keepdim=True).reciprocal_()
    zero = torch.zeros_like(m)
    st = Stats(m, s, zt, zero, zero)
    co = _coefs(g_pos.expand(n, 1), su, eps, C, False, zero)
    p.scatter_add_(1, local, constant(-1.0, p.dtype, p.device).expand(n, 1))
    return st, p.mul_(co.soft)


def _pair(st: Stats) -> Tensor:
    r"""``(2, N, D)``: the maximum and ``log S`` of every position, :math:`\ell` kept in two parts
    (see :func:`_centred`)."""
    return torch.stack((st.m, torch.log(st.s)))


def _unpair(p: Tensor):
    return p[0], p[1]


def _recompute_lse(ctx, x, w, b, su):
    return shard_stats(x, w, b, su.idx, su.valid, su.r, budget=ctx.budget)


def _prepare(ctx, input, linear_weight, target, linear_bias, weight):
    dtype = input.dtype if not ctx.probs else torch.promote_types(input.dtype, target.dtype)
    if ctx.probs and weight is not None:
        dtype = torch.promote_types(dtype, weight.dtype)
    compute = opmath_dtype(dtype)
    x, w, b = _views(input, linear_weight, linear_bias)
    if ctx.probs and compute != opmath_dtype(x.dtype):
        x, w = x.to(compute), w.to(compute)
        b = None if b is None else b.to(compute)
    N, C, D = x.shape[0], w.shape[0], w.shape[1]
    su = _setup(target, weight, N, C, D, ctx.probs, ctx.ignore_index, ctx.smoothing, compute)
    return x, w, b, su, N, C, D, compute, dtype


def _backward(ctx, grad, input, linear_weight, target, linear_bias, weight, lse, need):
    need_x, need_w, need_b, need_t, need_weight = need
    x, w, b, su, N, C, D, compute, _dtype = _prepare(ctx, input, linear_weight, target, linear_bias, weight)
    first = _first_order(grad, input, linear_weight)
    # the saved ℓ serves a backward that nothing differentiates (eager, or traced by the compiler
    # for a first-order graph); a differentiated backward recomputes it from the inputs
    keep = first or (torch.compiler.is_compiling() and not torch.is_grad_enabled())
    if keep and lse is not None and lse.numel() == 2 * N * D:
        lse = (lse[0].view(N, D), lse[1].view(N, D))
    else:  # a differentiated backward (or a fused forward, which keeps no ℓ): recompute
        lse = _unpair(_pair(_recompute_lse(ctx, x, w, b, su)))
    rho = su.r.rho(*block_plan(N, C, D, x.shape[1], compute, ctx.budget)) if ctx.probs else None
    gp = _per_position(grad, ctx.reduction, su.safe_denom, N, D, compute)
    co = _coefs(gp, su, ctx.smoothing, C, ctx.probs, rho)
    probs = None
    if need_t or need_weight:
        gt_coef = gp * (1 - ctx.smoothing) if need_t else None
        probs = (gt_coef, su.wvec, su.tsm, gp if need_weight else None)
    gr = shard_grads(x, w, b, lse, co, su.idx, su.valid, su.r, need=(need_x, need_w, need_b), probs=probs,
                     budget=ctx.budget, in_place=first)
    out_x = None if gr.x is None else gr.x.to(input.dtype).view(input.shape)
    out_w = None if gr.w is None else gr.w.to(linear_weight.dtype).view(linear_weight.shape)
    out_b = None if gr.b is None else gr.b.to(linear_bias.dtype).view(linear_bias.shape)
    out_t = None if gr.t is None else gr.t.to(target.dtype).view(target.shape)
    out_wt = None if gr.weight is None else gr.weight.to(weight.dtype)
    return out_x, out_w, out_t, out_b, out_wt, None, None, None, None, None, None


def _jvp(ctx, input, linear_weight, target, linear_bias, weight, lse, t_input, t_lw, t_target, t_bias, t_weight):
    x, w, b, su, N, C, D, compute, dtype = _prepare(ctx, input, linear_weight, target, linear_bias, weight)
    K = x.shape[1]
    if lse is not None and lse.numel() == 2 * N * D:
        lse = (lse[0].view(N, D), lse[1].view(N, D))
    else:
        lse = _unpair(_pair(_recompute_lse(ctx, x, w, b, su)))
    eps = ctx.smoothing
    tx = None if t_input is None else t_input.reshape(N, K).to(compute)
    tw = None if t_lw is None else t_lw.reshape(C, D, K).to(compute)
    tb = None if t_bias is None else t_bias.reshape(C, D).to(compute)
    probs = ctx.probs
    tt = None if (t_target is None or not probs) else t_target.to(compute).reshape(N, C, D)
    tww = None if (t_weight is None or not probs) else t_weight.to(compute)
    rho = su.r.rho(*block_plan(N, C, D, K, compute, ctx.budget)) if probs else None
    one = torch.ones((N, D), dtype=compute, device=x.device)
    co = _coefs(one, su, eps, C, probs, rho)
    rb, cb = block_plan(N, C, D, K, compute, ctx.budget, w.dtype != compute)
    rows = []
    for r0, r1 in _ranges(N, rb):
        xi = x[r0:r1].to(compute)
        co_i = Coefs(co.soft[r0:r1], None if co.tgt is None else co.tgt[r0:r1], None if co.r is None else co.r[r0:r1])
        acc = torch.zeros((r1 - r0, D), dtype=compute, device=x.device)
        for c0, c1 in _ranges(C, cb):
            cbj = c1 - c0
            z = _logits(xi, w, b, c0, c1, compute)
            dz = None
            if tx is not None:
                dz = _logits(tx[r0:r1], w, None, c0, c1, compute)
            if tw is not None:
                part = _logits(xi, tw, tb, c0, c1, compute)
                dz = part if dz is None else dz + part
            elif tb is not None:
                part = tb[c0:c1].unsqueeze(0)
                dz = part if dz is None else dz + part
            local = inside = None
            if su.idx is not None:
                local, inside = _local(su.idx[r0:r1], su.valid[r0:r1], c0, cbj)
            rblk = _r_block(su.r, (r0, r1), c0, c1)
            if dz is not None:
                G = block_grad(z, _lse_rows(lse, r0, r1), co_i, local, inside, rblk)
                acc = acc + (G * dz).sum(1)
            if tt is not None or tww is not None:
                dist = _distance(_lse_rows(lse, r0, r1), z)
                coef = None
                if tt is not None:
                    coef = (1 - eps) * tt[r0:r1, c0:c1]
                    if su.wvec is not None:
                        coef = coef * su.wvec[c0:c1].view(1, cbj, 1)
                if tww is not None:
                    part = tww[c0:c1].view(1, cbj, 1) * su.tsm.tsm_block((r0, r1), c0, c1)
                    coef = part if coef is None else coef + part
                acc = acc + (dist * coef).sum(1)
        rows.append(acc)
    t_loss = torch.cat(rows, 0) if len(rows) != 1 else rows[0]
    if not rows:
        t_loss = x.new_zeros((N, D), dtype=compute)
    if not probs:
        t_loss = torch.where(su.valid, t_loss, 0)
    out = _reduce(t_loss, ctx.reduction, su.denom).to(dtype)
    if ctx.reduction == R.NONE:
        out = out.reshape(_out_shape(input, linear_weight, probs))
    return out, None, None, None, None


# --------------------------------------------------------------------------------------------
# The lean single-block path (a fast path beside the streamed Function above)
#
# When the logits of the whole call fit the byte budget as one block, an eager call (no
# torch.compile, no torch.func transform, no forward-mode AD, no functorch wrapper) runs the same
# math in a handful of whole-tensor ops: the log-softmax of the single block (max, exponential
# sum and log in one primitive, the log-softmax form's accuracy), the loss from it, and, when
# anything needs a gradient, G (the softmax, exp of the log-softmax, minus the target terms)
# formed in place and the two gradient products. It is a plain autograd Function that keeps its
# inputs on ctx (a version check replaces save_for_backward, which costs about as much as the
# whole small loss): backward scales the precomputed gradients ('mean'/'sum') or G ('none').
# A backward that is itself differentiated (create_graph) or run under a transform goes to the
# streamed path's differentiable backward (:func:`_backward`), so double backward differentiates
# the same formulas; vmap, jvp and compile never reach this Function.


def lean_fits(N: int, C: int, D: int, K: int, compute: torch.dtype, upcast: bool, budget: int) -> bool:
    """Whether the call is one block of :func:`block_plan` (every row, every class) and small
    enough that its log-softmax, G and one temporary fit ``budget``."""
    item = 8 if compute == torch.float64 else 4
    return 3 * item * N * C * D + (4 * C * D * K if upcast else 0) <= budget


def _lean_pass(x, w, b, target, weight, reduction, ii, eps, probs, need, compute, C, D):
    """``(loss, pre)``: the reduced (or per-position) loss in ``compute`` and, when ``need``
    (input, weight, bias) asks for anything, the gradients of the reduced loss for a unit
    upstream gradient (``'mean'``/``'sum'``: ``(gx, gw, gb)``) or G per unit upstream gradient
    (``'none'``: ``(G,)``). ``x`` ``(N, K)``, ``w`` ``(C * D, K)``, ``b`` ``(C * D,)`` or
    ``None`` in ``compute``; ``weight`` the class weights in ``compute`` or ``None``."""
    N = x.shape[0]
    z = torch.mm(x, w.t()) if b is None else torch.addmm(b, x, w.t())
    if D != 1:
        z = z.view(N, C, D)
    if D == 1 and z.device.type == "cpu":
        # in place on the CPU: ATen's row-wise log-softmax reads each row before writing it
        # (bitwise the fresh buffer's result, one N x C buffer fewer at the peak)
        lp = torch._log_softmax(z, 1, False, out=z)
    else:
        lp = torch.log_softmax(z, 1)  # (N, C) or (N, C, D)
    grads = need[0] or need[1] or need[2]
    if probs:
        tgt = target.reshape(lp.shape)
        if tgt.dtype != compute:
            tgt = tgt.to(compute)
        r = tgt if eps == 0 else tgt.mul(1 - eps).add_(eps / C)
        if weight is not None:
            r = r * (weight if D == 1 else weight.view(C, 1))
        lossp = (r * lp).sum(1).neg_()
        if reduction == R.MEAN:
            gp = 1.0 / (N * D)
            loss = lossp.sum() / (N * D)
        elif reduction == R.SUM:
            gp, loss = 1.0, lossp.sum()
        else:
            gp, loss = 1.0, lossp
        if not grads:
            return loss, None
        # G = g (rho softmax - r), rho = sum_c r; (g r) summed, so that with one class G is
        # exactly 0 (as torch's log-softmax backward gives)
        G = r.mul(-gp)  # -g r, then + softmax (sum_c g r): one fused multiply-add per entry
        G.addcmul_(lp.exp_(), G.sum(1, keepdim=True).neg_())
    else:
        t = target.reshape((N,) if D == 1 else (N, D))
        if t.dtype != torch.int64:
            t = t.long()
        valid = t != ii
        # (the functional checked every target is in [0, C) or ignore_index)
        idx = (t if 0 <= ii < C else t.clamp(0, C - 1)).unsqueeze(1)
        lpt = lp.gather(1, idx).squeeze(1).neg_()  # -log p_t >= 0
        # (a where: an infinite class weight at an ignored position stays out, as torch's)
        wt = valid.to(compute) if weight is None else torch.where(valid, weight.take(idx.squeeze(1)), 0)
        # per position: (1 - eps) wt (-lp_t) + (eps / C) v sum_c r_c (-lp_c); an ignored position is 0
        # whatever its logits (a where, not a product: NaN or inf logits stay out of the loss)
        lossp = torch.where(valid, lpt if weight is None else lpt.mul_(wt), 0)
        if eps > 0:
            sr = lp.sum(1) if weight is None else (torch.mv(lp, weight) if D == 1 else torch.matmul(weight, lp))
            lossp = lossp.mul_(1 - eps).add_(torch.where(valid, sr.neg_(), 0), alpha=eps / C)
        if reduction == R.MEAN:
            denom = wt.sum()
            loss = lossp.sum().div_(denom)
            safe = denom.clamp_min(1) if weight is None else denom + valid.logical_not().all()
            gp = safe.reciprocal()
        elif reduction == R.SUM:
            loss, gp = lossp.sum(), None
        else:
            loss, gp = lossp, None
        if not grads:
            return loss, None
        # G = a_s softmax - a_t [c = t] - a_r r, a_t = g (1 - eps) wt, a_r = g v eps / C,
        # a_s = a_t + a_r sum_c r_c
        # (a where: a NaN 'mean' denominator (a NaN class weight) stays out of ignored rows)
        at = wt if gp is None else torch.where(valid, wt * gp, 0)
        G = lp.exp_()
        if eps == 0:
            G.scatter_add_(1, idx, constant(-1.0, compute, G.device).expand(idx.shape))
            G.mul_(at.unsqueeze(1))
        else:
            at = at * (1 - eps)
            ar = valid.to(compute).mul_(eps / C)
            if gp is not None:
                ar = torch.where(valid, ar * gp, 0)
            rsum = C if weight is None else weight.sum()
            a_s = (at + ar * rsum).unsqueeze(1)
            pt = G.gather(1, idx)
            G.mul_(a_s)
            if weight is None:
                G.sub_(ar.unsqueeze(1))
            else:
                G.addcmul_(weight if D == 1 else weight.view(C, 1), ar.unsqueeze(1), value=-1)
            # the target's entry in one piece, a_s p_t - (a_t + a_r r_t): with one class it is
            # then exactly 0 (a_s is that same sum), as torch's log-softmax backward gives
            rt = 1.0 if weight is None else weight.take(idx)
            G.scatter_(1, idx, pt.mul_(a_s).sub_(at.unsqueeze(1) + ar.unsqueeze(1) * rt))
    if reduction == R.NONE:
        return loss, (G,)
    G2 = G.view(N, C * D)
    gx = torch.mm(G2, w) if need[0] else None
    gw = torch.mm(G2.t(), x) if need[1] else None
    gb = G2.sum(0) if need[2] else None
    return loss, (gx, gw, gb)


def _lean_operands(input, linear_weight, target, linear_bias, weight, probs):
    """``x (N, K)``, ``w (C * D, K)``, ``b``, the class weights, in the computation dtype, and
    ``(compute, dtype, C, D)``."""
    dtype = input.dtype
    if probs:
        dtype = torch.promote_types(dtype, target.dtype)
        if weight is not None:
            dtype = torch.promote_types(dtype, weight.dtype)
    compute = opmath_dtype(dtype)
    x = input if input.dim() == 2 else input.unsqueeze(0)
    C, K = linear_weight.shape[0], linear_weight.shape[-1]
    w = linear_weight if linear_weight.dim() == 2 else linear_weight.reshape(-1, K)
    D = w.shape[0] // C if C else 1
    b = None if linear_bias is None else linear_bias.reshape(-1)
    if x.dtype != compute:
        x = x.to(compute)
    if w.dtype != compute:
        w = w.to(compute)
    if b is not None and b.dtype != compute:
        b = b.to(compute)
    wv = None if weight is None else (weight if weight.dtype == compute else weight.to(compute))
    return x, w, b, wv, compute, dtype, C, D


class LinearCrossEntropyLean(torch.autograd.Function):
    """The lean single-block path (see the section comment above). Arguments as
    :class:`LinearCrossEntropyFunction`'s, with the loss's result dtype last; one output."""

    @staticmethod
    def forward(ctx, input, linear_weight, target, linear_bias, weight, reduction, ignore_index, smoothing, probs,
                budget, out_dtype):
        need = ctx.needs_input_grad
        need = (need[0], need[1], need[3])
        x, w, b, wv, compute, _dtype, C, D = _lean_operands(input, linear_weight, target, linear_bias, weight, probs)
        loss, pre = _lean_pass(x, w, b, target, wv, reduction, ignore_index, smoothing, probs, need, compute, C, D)
        ctx.reduction, ctx.ignore_index, ctx.smoothing, ctx.probs, ctx.budget = reduction, ignore_index, smoothing, probs, budget
        ctx.pre = pre
        ctx.inputs = (input, linear_weight, target, linear_bias, weight)
        ctx.versions = tuple(None if t is None else t._version for t in ctx.inputs)
        if reduction == R.NONE:
            loss = loss.reshape(_out_shape(input, linear_weight, probs))
        return loss if loss.dtype == out_dtype else loss.to(out_dtype)

    @staticmethod
    def backward(ctx, grad):
        input, linear_weight, target, linear_bias, weight = ctx.inputs
        need_x, need_w, need_t, need_b, need_weight = ctx.needs_input_grad[:5]
        first = _first_order(grad, input, linear_weight)
        pre, ctx.pre = ctx.pre, None
        if pre is None or not first:
            for t, v in zip(ctx.inputs, ctx.versions):
                if t is not None and t._version != v:
                    raise RuntimeError(
                        "one of the variables needed for gradient computation has been modified by an inplace "
                        "operation: an input of linear_cross_entropy is at version "
                        f"{t._version}; expected version {v} instead."
                    )
        if not first or (ctx.probs and (need_t or need_weight)):
            return _backward(ctx, grad, input, linear_weight, target, linear_bias, weight, None,
                             (need_x, need_w, need_b, need_t and ctx.probs, need_weight and ctx.probs))
        if pre is None:  # a second backward (retain_graph): the same pass again, the same bits
            x, w, b, wv, compute, _dtype, C, D = _lean_operands(input, linear_weight, target, linear_bias, weight,
                                                                ctx.probs)
            pre = _lean_pass(x, w, b, target, wv, ctx.reduction, ctx.ignore_index, ctx.smoothing, ctx.probs,
                             (need_x, need_w, need_b), compute, C, D)[1]
        if ctx.reduction != R.NONE:
            gx, gw, gb = pre
            g = grad if grad.dtype == (gx if gx is not None else gw if gw is not None else gb).dtype else grad.to(
                (gx if gx is not None else gw if gw is not None else gb).dtype)
            return (_scaled(gx, g, input) if need_x else None, _scaled(gw, g, linear_weight) if need_w else None,
                    None, _scaled(gb, g, linear_bias) if need_b else None, None, None, None, None, None, None, None)
        (G,) = pre
        N = G.shape[0]
        CD = linear_weight.numel() // linear_weight.shape[-1]
        g = grad.reshape(N, *G.shape[2:]).to(G.dtype).unsqueeze(1)
        G2 = G.mul_(g).view(N, CD)
        x, w, _b, _wv, compute, _dtype, _C, _D = _lean_operands(input, linear_weight, target, None, weight, ctx.probs)
        out_x = torch.mm(G2, w).to(input.dtype).view(input.shape) if need_x else None
        out_w = torch.mm(G2.t(), x).to(linear_weight.dtype).view(linear_weight.shape) if need_w else None
        out_b = G2.sum(0).to(linear_bias.dtype).view(linear_bias.shape) if need_b else None
        return out_x, out_w, None, out_b, None, None, None, None, None, None, None


_backward_plain = LinearCrossEntropyLean.backward
LinearCrossEntropyLean.backward = staticmethod(_autocast.without_autocast(_backward_plain))
_lean_apply = super(torch.autograd.Function, LinearCrossEntropyLean).apply


# the dtypes of the native block kernel (bfloat16/float16 upcast to float32 inside it, as here)
_NATIVE_BLOCK_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


def lean(input, linear_weight, target, linear_bias, weight, reduction, ignore_index, smoothing, probs, budget,
         precompute):
    """The loss through :class:`LinearCrossEntropyLean` when the call qualifies (eager, one block
    within the budget, gradients precomputed), else ``None`` (the streamed Function takes it)."""
    if not precompute or torch.compiler.is_compiling() or _transforms_active() or _fwad._current_level != -1:
        return None
    for t in (input, linear_weight, target, linear_bias, weight):
        if t is not None and (_wrapped(t) or _legacy_batched(t)):
            return None
    if probs and (target.requires_grad or (weight is not None and weight.requires_grad)):
        return None
    dtype = input.dtype if not probs else torch.promote_types(input.dtype, target.dtype)
    if probs and weight is not None:
        dtype = torch.promote_types(dtype, weight.dtype)
    compute = opmath_dtype(dtype)
    shape = linear_weight.shape
    C, K = shape[0], shape[-1]
    D = 1
    for d in shape[1:-1]:
        D *= d
    N = input.shape[0] if input.dim() == 2 else 1
    if N == 0 or C == 0 or not lean_fits(N, C, D, K, compute, linear_weight.dtype != compute, budget):
        return None
    kernels = _native.module
    if (
        kernels is not None
        and not probs
        and input.dim() == 2
        and linear_weight.dim() == 2
        and input.dtype in _NATIVE_BLOCK_DTYPES
        and linear_weight.dtype == input.dtype
        and target.dim() == 1
        and target.dtype == torch.int64
        and _native.eager(input, linear_weight, target)
        and input.is_contiguous()
        and linear_weight.is_contiguous()
        and target.is_contiguous()
        and (linear_bias is None or (linear_bias.dtype == input.dtype and linear_bias.is_contiguous() and linear_bias.is_cpu))
        and (weight is None or (weight.dtype in (input.dtype, compute) and weight.is_contiguous() and weight.is_cpu))
        and _autocast.result_dtype(dtype) == dtype
    ):
        try:
            return kernels.linear_cross_entropy_block(input, linear_weight, linear_bias, target, weight, reduction,
                                                      ignore_index, smoothing)
        except (RuntimeError, AttributeError):  # (a kernel that refuses: the Python path)
            pass
    return _lean_apply(input, linear_weight, target, linear_bias, weight, reduction, ignore_index, smoothing, probs,
                       budget, _autocast.result_dtype(dtype))


def _native_reference(t, s):
    """The loss the native block kernel's create_graph backward differentiates: the streamed
    Function (recomputing, differentiable) on the kernel's saved arguments."""
    b = t[2] if t[2].numel() > 0 else None
    weight = t[4] if t[4].numel() > 0 else None
    return LinearCrossEntropyFunction.apply(t[0], t[1], t[3], b, weight, int(s[0]), int(s[1]), s[2], False,
                                            DEFAULT_BUDGET, True)[0]


_native.REFERENCES["linear_cross_entropy"] = _native_reference
