r"""Adaptive softmax (Grave et al., 2016): the Functions behind :class:`torchloss.AdaptiveLogSoftmaxWithLoss`.

Notation. Input rows :math:`x_n \in \mathbb{R}^d`; bounds :math:`c_0 < c_1 < \dots < c_K`
(:math:`c_0` the shortlist size, :math:`c_K` the number of classes); the head
:math:`z = W x + b \in \mathbb{R}^{H}`, :math:`H = c_0 + K`, with log-softmax
:math:`\lambda = \log\operatorname{softmax}(z)` and softmax :math:`\sigma`; tail cluster
:math:`i = 1..K` (classes :math:`[c_{i-1}, c_i)`) has the projection :math:`P_i` (:math:`h_i
\times d`) and output weights :math:`O_i` (:math:`o_i \times h_i`, :math:`o_i = c_i - c_{i-1}`):
:math:`h^{(i)} = P_i x`, :math:`u^{(i)} = O_i h^{(i)}`, softmax :math:`s^{(i)}`.

For a target :math:`t` in cluster :math:`k` (:math:`k = 0` the shortlist), with the head column
:math:`j = t` (:math:`k = 0`) or :math:`c_0 + k - 1` and the relative class :math:`r = t -
c_{k-1}`, the log-probability is

.. math::
    \ell = \lambda_j + [k > 0]\,\big(u^{(k)}_r - \log\textstyle\sum_c e^{u^{(k)}_c}\big).

:class:`AdaptiveLogSoftmaxFunction` returns ``(output, loss)``: :math:`\ell_n` per row and the
loss :math:`L = -\frac1N\sum_n \ell_n` (``'mean'``, torch's), :math:`-\sum_n \ell_n` (``'sum'``)
or :math:`-\ell_n` (``'none'``).

Gradients. With upstream gradients :math:`\bar\ell_n` of the output and :math:`\bar L` of the
loss, each row's log-probability receives :math:`a_n = \bar\ell_n - \bar L/N` (mean),
:math:`\bar\ell_n - \bar L` (sum) or :math:`\bar\ell_n - \bar L_n` (none). Since
:math:`\partial\lambda_j/\partial z = e_j - \sigma` and
:math:`\partial(u_r - \operatorname{lse} u)/\partial u = e_r - s`,

.. math::
    \bar z_n = a_n (e_{j_n} - \sigma_n), \qquad
    \bar W = \bar z^\top X, \quad \bar b = \textstyle\sum_n \bar z_n, \\
    \bar u^{(i)}_n = [k_n = i]\, a_n (e_{r_n} - s^{(i)}_n), \qquad
    \bar O_i = \bar u^{(i)\top} H^{(i)}, \quad \bar H^{(i)} = \bar u^{(i)} O_i, \quad
    \bar P_i = \bar H^{(i)\top} X, \\
    \bar X = \bar z\, W + \textstyle\sum_i \bar H^{(i)} P_i .

The backward forms these with ordinary differentiable ops (softmax, scatter-add, matmul,
index-select/index-add), recomputed from the saved inputs, so autograd differentiates it again
(``gradgradcheck``, Hessian-vector products).

Tangents. With :math:`\dot z = W\dot x + \dot W x + \dot b`, :math:`\dot h^{(i)} = P_i\dot x +
\dot P_i x` and :math:`\dot u^{(i)} = O_i \dot h^{(i)} + \dot O_i h^{(i)}`,

.. math::
    \dot\ell = \dot z_j - \langle\sigma, \dot z\rangle
        + [k > 0]\,\big(\dot u^{(k)}_r - \langle s^{(k)}, \dot u^{(k)}\rangle\big),

and :math:`\dot L` is the same reduction of :math:`-\dot\ell` as the loss.

Formulation (static shapes). torch evaluates each tail cluster on the rows whose targets fall
in it, selected with ``nonzero`` (a data-dependent shape: a host sync on CUDA, a graph break under
``torch.compile``, refused by ``vmap``). Here each cluster is evaluated one of two ways, with the
same values:

* *compact* (eager calls on CPU tensors, no functorch transform, not compiling): the cluster's
  rows are selected as torch does, so the work is torch's (and a cluster without targets gets
  no gradient at all, None, as torch's unused submodule);
* *masked* (everywhere else: CUDA, ``torch.compile``, ``vmap``/``torch.func``): every row goes
  through every cluster and the rows of other clusters are masked out with ``where``. No
  data-dependent shape and no host synchronisation, at the price of computing
  :math:`N\,o_i\,h_i` per cluster instead of :math:`N_i\,o_i\,h_i` (and zero gradients for a
  cluster without targets).

Either way the :math:`N \times o_i` cluster logits are formed a block of rows at a time (about
``_BLOCK`` elements) and reduced at once, so nothing of size :math:`N \times o_i` is ever alive
whole, and nothing but the inputs is saved for backward (torch keeps the head's and each
cluster's log-softmax). Plain eager training calls take a shortcut beside this reference (see
:func:`_forward_kept`): they keep the softmaxes as torch keeps its log-softmaxes, and their first
backward recomputes nothing. float16/bfloat16: the matmuls run in the input dtype (as torch's), every
softmax, log-probability and sum in float32; the results are rounded once.
"""

from __future__ import annotations

import torch
import torch.autograd.forward_ad as _fwad
from torch import Tensor

from .. import _reduction as R
from ._base import (
    _LOW_PRECISION,
    LossFunction,
    add_tangents,
    batched,
    eager_in_place,
    opmath_dtype,
)

# elements of a block of cluster logits (16 MiB in float32)
_BLOCK = 1 << 22

# whether eager CPU calls may select each cluster's rows (set False to test the masked form)
COMPACT = True

def _compact(*tensors: Tensor | None) -> bool:
    """Whether clusters may be evaluated on their own rows only (data-dependent shapes)."""
    if (
        not COMPACT
        or torch.compiler.is_compiling()
        or torch._C._are_functorch_transforms_active()
        or torch._C._len_torch_dispatch_stack()  # FakeTensorMode: no values to select rows by
    ):
        return False
    for t in tensors:
        if t is not None and (t.device.type != "cpu" or batched(t)):
            return False
    return True


def _lsm(u: Tensor) -> Tensor:
    return torch.log_softmax(u, 1, dtype=torch.float32) if u.dtype in _LOW_PRECISION else torch.log_softmax(u, 1)


def _sm(u: Tensor) -> Tensor:
    return torch.softmax(u, 1, dtype=torch.float32) if u.dtype in _LOW_PRECISION else torch.softmax(u, 1)


def _steps(rows: int, width: int):
    """Row slices of blocks of about ``_BLOCK`` elements of a ``rows x width`` matrix."""
    step = max(1, _BLOCK // max(width, 1))
    return [slice(s, min(s + step, rows)) for s in range(0, rows, step)]


def _cat(parts: list[Tensor], empty: Tensor) -> Tensor:
    if not parts:
        return empty
    return parts[0] if len(parts) == 1 else torch.cat(parts)


class _Layout:
    """Per row: target ``t``, cluster ``k`` (0 = shortlist) and head column ``j``."""

    def __init__(self, target: Tensor, bounds: tuple[int, ...]):
        t = target.reshape(-1).long()
        k = torch.zeros_like(t)
        for c in bounds[:-1]:
            k = k + (t >= c).long()
        head = bounds[0] + len(bounds) - 1
        self.t, self.k = t, k
        self.j = torch.where(k == 0, t, bounds[0] - 1 + k).clamp(0, head - 1).unsqueeze(1)

    def cluster(self, i: int, bounds, compact: bool):
        """``(mask, rows, rel)``: the rows of cluster ``i`` (mask; indices when compact, else
        None) and their relative classes (all rows when not compact), as ``(M, 1)``."""
        lo, hi = bounds[i - 1], bounds[i]
        mask = self.k == i
        rel = (self.t - lo).clamp(0, hi - lo - 1)
        if compact:
            rows = mask.nonzero().squeeze(1)
            return mask, rows, rel.index_select(0, rows).unsqueeze(1)
        return mask, None, rel.unsqueeze(1)


def _rows(x: Tensor, rows: Tensor | None) -> Tensor:
    return x if rows is None else x.index_select(0, rows)


def _head_logits(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    # one fused addmm with a bias, as torch's Linear (no second rounding in float16/bfloat16)
    return x @ weight.T if bias is None else torch.addmm(bias, x, weight.T)


def _tail(tail) -> list[tuple[Tensor, Tensor]]:
    return [(tail[2 * i], tail[2 * i + 1]) for i in range(len(tail) // 2)]


def _coefficient(g_out: Tensor | None, g_loss: Tensor | None, reduction: int, n: int) -> Tensor:
    """:math:`a_n`: what each row's log-probability receives (``(N)``; either upstream gradient
    may be None, an unused output: the Function does not materialise zeros)."""
    if g_loss is None:
        return g_out.reshape(-1).to(opmath_dtype(g_out.dtype))
    g_loss = g_loss.to(opmath_dtype(g_loss.dtype))
    if reduction == R.MEAN:
        g_loss = g_loss / n
    g_loss = g_loss.reshape(-1) if reduction == R.NONE else g_loss.expand(n)
    if g_out is None:
        return -g_loss
    return g_out.reshape(-1).to(g_loss.dtype) - g_loss


def _reduced(logp: Tensor, reduction: int) -> Tensor:
    if reduction == R.MEAN:
        return -logp.sum() / logp.shape[0]
    return -logp.sum() if reduction == R.SUM else -logp


def _backward_reference(x, lay, a, bounds, W, b, tail, need, g_out, g_loss, target):
    """The gradients recomputed from the inputs with differentiable ops (``create_graph``,
    ``torch.func``, ``torch.compile``, every device): ``(gx, gW, gb, [gP_1, gO_1, ...])``."""
    dt = x.dtype
    compact = _compact(x, target, W, b, g_out, g_loss, *tail)
    # head: z̄ = a (e_j - σ)
    gz = _sm(_head_logits(x, W, b))
    if eager_in_place(gz, a):
        gz.mul_(a.neg()).scatter_add_(1, lay.j, a)
    else:
        gz = (gz * -a).scatter_add(1, lay.j, a)
    gz = gz.to(dt)
    gx = gz @ W if need[0] else None
    gW = gz.T @ x if need[5] else None
    gb = gz.sum(0) if b is not None and need[6] else None
    gtail = []
    for i, (P, O) in enumerate(_tail(tail), start=1):
        mask, rows, rel = lay.cluster(i, bounds, compact)
        if compact and rows.numel() == 0:
            # no target in this cluster: no gradient at all (None, as torch leaves it unused)
            gtail += [None, None]
            continue
        xs = _rows(x, rows)
        ai = _rows(a, rows)
        h = xs @ P.T
        gh_parts, gO = [], None
        for s in _steps(h.shape[0], O.shape[0]):
            gu = _sm(h[s] @ O.T)
            if eager_in_place(gu, ai):
                gu.mul_(ai[s].neg()).scatter_add_(1, rel[s], ai[s])
            else:
                gu = (gu * -ai[s]).scatter_add(1, rel[s], ai[s])
            if not compact:  # rows of other clusters (where, not a 0 factor: no NaN leaks)
                gu = torch.where(mask[s].unsqueeze(1), gu, 0)
            gu = gu.to(dt)
            gh_parts.append(gu @ O)
            gO_s = gu.T @ h[s]
            gO = gO_s if gO is None else gO + gO_s
        gh = _cat(gh_parts, h.new_zeros(0, h.shape[1]))
        if gO is None:
            gO = torch.zeros_like(O)
        gP = gh.T @ xs
        if need[0]:
            gxs = gh @ P
            gx = gx.index_add(0, rows, gxs) if compact else gx + gxs
        gtail += [gP, gO]
    return gx, gW, gb, gtail


# The eager shortcut. A plain eager call on CPU float32/float64 tensors that will be
# differentiated (``keep``, decided by the functional layer with :func:`keeps`) keeps what
# torch's module keeps: the head's probabilities σ (N x H) and, per cluster, its rows'
# probabilities s^(i) (N_i x o_i) and projections h^(i) (N_i x h_i), the softmaxes in place of
# the log-softmaxes the forward gathers from (saved with save_for_backward, so saved-tensor
# hooks see them; torch keeps each cluster's rows x_rows as well, and index tensors: this is
# less). Its first-order backward then needs no
# recomputation: the same matmuls as torch's (a quarter fewer than the reference's), one
# unblocked product per linear map, and the gradients of the logits are formed in place in the
# kept softmaxes (through ``.data``: no version bump, so a second backward may still unpack its
# saved tensors). That first backward marks them spent: a second one (retain_graph=True) forms
# them again from the inputs with the forward's ops, so that every backward gives the same bits.
# A backward that is differentiated, traced or batched takes the reference path.

KEEP_DTYPES = (torch.float32, torch.float64)


def keeps(input: Tensor, target: Tensor, head_weight: Tensor, head_bias: Tensor | None, tail) -> bool:
    """Whether a call takes the eager shortcut: grad mode on, a float32/float64 weight or input
    that requires grad, the compact form (eager, CPU, no transform, not compiling), no
    forward-AD level (whose jvp reads the inputs only; the shortcut would be wasted)."""
    if not torch.is_grad_enabled() or _fwad._current_level != -1 or input.dtype not in KEEP_DTYPES:
        return False
    if not (input.requires_grad or head_weight.requires_grad or (head_bias is not None and head_bias.requires_grad)
            or any(t.requires_grad for t in tail)):
        return False
    return _compact(input, target, head_weight, head_bias, *tail)


def _forward_kept(x, lay, bounds, W, b, tail):
    """``(logp, kept)``: the compact forward, keeping ``[σ, s^(1), h^(1), ...]``."""
    lsm = torch.log_softmax(_head_logits(x, W, b), 1)
    logp = lsm.gather(1, lay.j).squeeze(1)
    kept = [lsm.exp_()]
    for i, (P, O) in enumerate(_tail(tail), start=1):
        _, rows, rel = lay.cluster(i, bounds, True)
        xs = x.index_select(0, rows)
        h = xs @ P.T
        lsu = torch.log_softmax(h @ O.T, 1)
        logp.index_add_(0, rows, lsu.gather(1, rel).squeeze(1))
        kept += [lsu.exp_(), h]
    return logp, kept


def _backward_kept(x, lay, a, bounds, W, b, tail, kept, need):
    """The first-order gradients from what :func:`_forward_kept` kept (same formulas as
    :func:`_backward_reference`), overwriting the kept softmaxes: ``(gx, gW, gb, [gP_1, gO_1,
    ...])``."""
    na = a.neg()
    gz = kept[0].mul_(na).scatter_add_(1, lay.j, a)
    gx = gz @ W if need[0] else None
    gW = gz.T @ x if need[5] else None
    gb = gz.sum(0) if b is not None and need[6] else None
    del gz
    gtail = []
    for i, (P, O) in enumerate(_tail(tail), start=1):
        s, h = kept[2 * i - 1 : 2 * i + 1]
        _, rows, rel = lay.cluster(i, bounds, True)
        if rows.numel() == 0:
            gtail += [None, None]  # no target in this cluster: no gradient (torch's None)
            continue
        gu = s.mul_(na.index_select(0, rows)).scatter_add_(1, rel, a.index_select(0, rows))
        gO = gu.T @ h if need[6 + 2 * i] else None
        gP = None
        if need[0] or need[5 + 2 * i]:
            gh = gu @ O
            del gu
            gP = gh.T @ x.index_select(0, rows) if need[5 + 2 * i] else None
            if need[0]:
                # (index_put_ with accumulate: index_add_ on a matrix is many times slower at 2+ threads)
                gx.index_put_((rows,), gh @ P, accumulate=True)
        gtail += [gP, gO]
    return gx, gW, gb, gtail


class AdaptiveLogSoftmaxFunction(LossFunction):
    r"""``(output, loss)`` of the adaptive softmax; see the module docstring for the math.

    Arguments: ``input`` (``(N, d)``, or ``(d)`` with a ``()`` target), ``target``, the
    reduction code, ``bounds`` :math:`(c_0, \dots, c_K)`, ``keep`` (:func:`keeps`: take the
    eager shortcut of :func:`_forward_kept`), the head weight and bias (or None) and the tail
    weights :math:`P_1, O_1, \dots, P_K, O_K`. Outputs ``(output, loss, *kept)``, the
    ``1 + 2K`` kept tensors non-differentiable (empty unless ``keep``). Saves the inputs, and
    the kept tensors when ``keep``.
    """

    @staticmethod
    def forward(input, target, reduction, bounds, keep, head_weight, head_bias, *tail):
        x = input.reshape(-1, input.shape[-1])
        lay = _Layout(target, bounds)
        if keep and x.dtype in KEEP_DTYPES:  # eager shortcut (see _forward_kept); else the reference below
            logp, kept = _forward_kept(x, lay, bounds, head_weight, head_bias, tail)
        else:
            kept = [x.new_empty(0) for _ in range(1 + len(tail))]  # (distinct: Dynamo)
            compact = _compact(input, target, head_weight, head_bias, *tail)
            logp = _lsm(_head_logits(x, head_weight, head_bias)).gather(1, lay.j).squeeze(1)
            for i, (P, O) in enumerate(_tail(tail), start=1):
                mask, rows, rel = lay.cluster(i, bounds, compact)
                h = _rows(x, rows) @ P.T
                parts = [_lsm(h[s] @ O.T).gather(1, rel[s]).squeeze(1) for s in _steps(h.shape[0], O.shape[0])]
                picked = _cat(parts, logp.new_zeros(0))
                logp = logp.index_add(0, rows, picked) if compact else logp + torch.where(mask, picked, 0)
        loss = _reduced(logp, reduction)
        if input.dim() == 1:
            logp, loss = logp.squeeze(0), (loss.squeeze(0) if reduction == R.NONE else loss)
        return logp.to(input.dtype), loss.to(input.dtype), *kept

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, target, reduction, bounds, keep, head_weight, head_bias, *tail = inputs
        kept = output[2:]
        ctx.mark_non_differentiable(*kept)
        ctx.set_materialize_grads(False)  # (no zeros of the kept tensors' shapes, nor of an unused output)
        # (autocast may have cast the inputs after the functional layer chose ``keep``)
        keep = keep and input.dtype in KEEP_DTYPES
        ctx.reduction, ctx.bounds, ctx.keep, ctx.spent = reduction, bounds, keep, False
        # kept tensors go through save_for_backward (saved-tensor hooks see and count them)
        ctx.save_for_backward(input, target, head_weight, head_bias, *tail, *(kept if keep else ()))
        ctx.save_for_forward(input, target, head_weight, head_bias, *tail)

    @staticmethod
    def backward(ctx, g_out, g_loss, *_kept):
        input, target, W, b, *rest = ctx.saved_tensors
        need = ctx.needs_input_grad
        if g_out is None and g_loss is None:
            return (None,) * len(need)
        bounds = ctx.bounds
        n_tail = 2 * (len(bounds) - 1)
        tail, kept = rest[:n_tail], rest[n_tail:]
        x = input.reshape(-1, input.shape[-1])
        n = x.shape[0]
        lay = _Layout(target, bounds)
        a = _coefficient(g_out, g_loss, ctx.reduction, n).unsqueeze(1)
        if ctx.keep and eager_in_place(x, a, g_out, g_loss):
            if ctx.spent:  # a second backward (retain_graph): kept again, the same bits
                kept = _forward_kept(x, lay, bounds, W, b, tail)[1]
            else:
                ctx.spent = True  # written in place below
                kept = [k.data for k in kept]
            gx, gW, gb, gtail = _backward_kept(x, lay, a, bounds, W, b, tail, kept, need)
        else:
            gx, gW, gb, gtail = _backward_reference(x, lay, a, bounds, W, b, tail, need, g_out, g_loss, target)
        if gx is not None:
            gx = gx.reshape(input.shape)
        gtail = [g if nd else None for g, nd in zip(gtail, need[7:])]
        return (gx, None, None, None, None, gW, gb, *gtail)

    @staticmethod
    def jvp(ctx, t_input, _t, _r, _b, _k, t_W, t_b, *t_tail):
        input, target, W, b, *tail = ctx.saved_tensors
        bounds = ctx.bounds
        x = input.reshape(-1, input.shape[-1])
        tx = None if t_input is None else t_input.reshape(x.shape)
        lay = _Layout(target, bounds)
        compact = _compact(input, target, W, b, t_input, t_W, t_b, *tail, *t_tail)
        z = _head_logits(x, W, b)
        tz = add_tangents(None if tx is None else tx @ W.T, None if t_W is None else x @ t_W.T)
        tz = add_tangents(tz, t_b)
        if tz is None:
            tz = torch.zeros_like(z)
        tz = tz.expand_as(z)
        tzc = tz.to(opmath_dtype(tz.dtype))
        dot = tzc.gather(1, lay.j).squeeze(1) - (_sm(z) * tzc).sum(1)
        for i, (P, O) in enumerate(_tail(tail), start=1):
            tP, tO = t_tail[2 * i - 2], t_tail[2 * i - 1]
            mask, rows, rel = lay.cluster(i, bounds, compact)
            xs = _rows(x, rows)
            h = xs @ P.T
            th = add_tangents(None if tx is None else _rows(tx, rows) @ P.T, None if tP is None else xs @ tP.T)
            parts = []
            for s in _steps(h.shape[0], O.shape[0]):
                tu = add_tangents(None if th is None else th[s] @ O.T, None if tO is None else h[s] @ tO.T)
                if tu is None:
                    parts.append(h.new_zeros(h[s].shape[0], dtype=dot.dtype))
                    continue
                tu = tu.to(dot.dtype)
                parts.append(tu.gather(1, rel[s]).squeeze(1) - (_sm(h[s] @ O.T) * tu).sum(1))
            picked = _cat(parts, dot.new_zeros(0))
            dot = dot.index_add(0, rows, picked) if compact else dot + torch.where(mask, picked, 0)
        t_loss = _reduced(dot, ctx.reduction)
        if input.dim() == 1:
            dot, t_loss = dot.squeeze(0), (t_loss.squeeze(0) if ctx.reduction == R.NONE else t_loss)
        return dot.to(input.dtype), t_loss.to(input.dtype), *(None for _ in range(1 + len(tail)))


def log_prob_values(input: Tensor, bounds, head_weight: Tensor, head_bias: Tensor | None, tail) -> Tensor:
    """The forward of :class:`AdaptiveLogProbFunction` (also ``predict``'s, which needs no graph)."""
    x = input.reshape(-1, input.shape[-1])
    lam = _lsm(_head_logits(x, head_weight, head_bias))
    c0 = bounds[0]
    parts = [lam[:, :c0]]
    for i, (P, O) in enumerate(_tail(tail), start=1):
        parts.append(_lsm((x @ P.T) @ O.T) + lam[:, c0 + i - 1 : c0 + i])
    out = torch.cat(parts, 1).to(input.dtype)
    return out.reshape(*input.shape[:-1], out.shape[-1])


class AdaptiveLogProbFunction(LossFunction):
    r"""The full log-distribution :math:`N \times c_K` (``log_prob``).

    Columns :math:`c < c_0` hold :math:`\lambda_c`; cluster :math:`i`'s columns hold
    :math:`\lambda_{c_0+i-1} + \log s^{(i)}`. With the upstream gradient :math:`G`
    (:math:`G^{(i)}` its cluster-:math:`i` columns), the head column :math:`c_0+i-1` receives
    :math:`\bar\lambda_{c_0+i-1} = \sum_c G^{(i)}_c` and the shortlist columns :math:`G_c`, so

    .. math::
        \bar z = \bar\lambda - \sigma \textstyle\sum_c \bar\lambda_c, \qquad
        \bar u^{(i)} = G^{(i)} - s^{(i)} \textstyle\sum_c G^{(i)}_c,

    chained through the linear maps as in :class:`AdaptiveLogSoftmaxFunction`. Tangent:
    :math:`\dot z - \langle\sigma,\dot z\rangle` for the head, plus
    :math:`\dot u^{(i)} - \langle s^{(i)}, \dot u^{(i)}\rangle` in cluster :math:`i`'s columns.
    """

    @staticmethod
    def forward(input, bounds, head_weight, head_bias, *tail):
        return log_prob_values(input, bounds, head_weight, head_bias, tail)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, bounds, head_weight, head_bias, *tail = inputs
        ctx.bounds = bounds
        ctx.save_for_backward(input, head_weight, head_bias, *tail)
        ctx.save_for_forward(input, head_weight, head_bias, *tail)

    @staticmethod
    def backward(ctx, grad):
        input, W, b, *tail = ctx.saved_tensors
        need = ctx.needs_input_grad
        bounds = ctx.bounds
        c0 = bounds[0]
        x = input.reshape(-1, input.shape[-1])
        dt = x.dtype
        G = grad.reshape(x.shape[0], -1)
        G = G.to(opmath_dtype(G.dtype))
        head_cols = [G[:, :c0]] + [G[:, bounds[i - 1] : bounds[i]].sum(1, keepdim=True) for i in range(1, len(bounds))]
        gl = torch.cat(head_cols, 1)
        gz = (gl - _sm(_head_logits(x, W, b)) * gl.sum(1, keepdim=True)).to(dt)
        gx = gz @ W if need[0] else None
        gW = gz.T @ x if need[2] else None
        gb = gz.sum(0) if b is not None and need[3] else None
        gtail = []
        for i, (P, O) in enumerate(_tail(tail), start=1):
            Gi = G[:, bounds[i - 1] : bounds[i]]
            h = x @ P.T
            gu = (Gi - _sm(h @ O.T) * Gi.sum(1, keepdim=True)).to(dt)
            gh = gu @ O
            gtail += [gh.T @ x, gu.T @ h]
            if need[0]:
                gx = gx + gh @ P
        if gx is not None:
            gx = gx.reshape(input.shape)
        gtail = [g if nd else None for g, nd in zip(gtail, need[4:])]
        return (gx, None, gW, gb, *gtail)

    @staticmethod
    def jvp(ctx, t_input, _b, t_W, t_b, *t_tail):
        input, W, b, *tail = ctx.saved_tensors
        bounds = ctx.bounds
        c0 = bounds[0]
        x = input.reshape(-1, input.shape[-1])
        tx = None if t_input is None else t_input.reshape(x.shape)
        z = _head_logits(x, W, b)
        cd = opmath_dtype(z.dtype)
        tz = add_tangents(None if tx is None else tx @ W.T, None if t_W is None else x @ t_W.T)
        tz = add_tangents(tz, t_b)
        tz = torch.zeros_like(z, dtype=cd) if tz is None else tz.expand_as(z).to(cd)
        tl = tz - (_sm(z) * tz).sum(1, keepdim=True)
        parts = [tl[:, :c0]]
        for i, (P, O) in enumerate(_tail(tail), start=1):
            tP, tO = t_tail[2 * i - 2], t_tail[2 * i - 1]
            h = x @ P.T
            th = add_tangents(None if tx is None else tx @ P.T, None if tP is None else x @ tP.T)
            tu = add_tangents(None if th is None else th @ O.T, None if tO is None else h @ tO.T)
            col = tl[:, c0 + i - 1 : c0 + i]
            if tu is None:
                parts.append(col.expand(-1, O.shape[0]))
            else:
                tu = tu.to(cd)
                parts.append(tu - (_sm(h @ O.T) * tu).sum(1, keepdim=True) + col)
        out = torch.cat(parts, 1).to(input.dtype)
        return out.reshape(*input.shape[:-1], out.shape[-1])
