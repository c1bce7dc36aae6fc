r"""Multi-class margin losses: MultiMargin, MultiLabelMargin and MultiLabelSoftMargin.

Notation: a sample is a row :math:`x \in \mathbb R^C` of ``input`` (an unbatched ``(C)`` input
is one row; a 0-d input is one row with :math:`C = 1`), :math:`g` is the upstream gradient of the
reduced loss and :math:`g_n` its share for sample :math:`n` (``g``, or ``g / N`` for ``'mean'``:
:func:`torchloss._reduction.unreduce`). :math:`[P]` is 1 if :math:`P` holds, else 0.

The two hinge losses are piecewise linear (MultiMargin with ``p=2``: piecewise quadratic) in
:math:`x`. Their per-sample gradient is written once, as a coefficient row
:math:`c_n = \partial \ell_n / \partial x_n`, from which

* the backward is :math:`g_n c_n` and
* the jvp is :math:`\operatorname{reduce}_n(c_n \cdot \dot x_n)`,

so the two modes cannot disagree. The hinge's derivative is the *strict* step :math:`[z > 0]`:
exactly at a kink :math:`z = 0` the gradient is 0, as in torch's kernels. Where the backward is
itself differentiated, the step is evaluated as ``where(z > 0, sign(z), 0)``, whose value is
exactly :math:`[z > 0]` and whose derivative is 0; unlike a bare boolean mask it keeps the
backward attached to :math:`x` in the autograd graph, so the (zero) second derivative of a
piecewise-linear loss comes back as zeros from double backward and forward-over-reverse instead
of "does not require grad". (MultiLabelMargin attaches its precomputed coefficients the same way,
with ``where(False, x, c)``; see its docstring.)

Numerics shared by the three:

* float16/bfloat16 are computed in float32 (:func:`~torchloss._autograd._base.opmath`) and
  rounded once. torch's CPU kernels of the two hinge losses do not support half precision at all
  (its CUDA kernels do); torchloss supports it on every device.
* The hinge argument :math:`z` is formed in torch's order of operations,
  ``(margin - x[y]) + x[i]``, so that the sign of :math:`z`, and hence which terms are active,
  agrees with torch bit for bit, including at exact kinks. Equivalently, and this is how the
  step is evaluated where only the step is needed: :math:`z > 0` iff
  :math:`x_i > \theta = \operatorname{fl}(x_y - \text{margin})`, compared exactly. (Rounding to
  nearest is monotonic and symmetric, so :math:`\operatorname{fl}(\text{margin} - x_y) = -\theta`,
  and the exact sum of two floats, when positive, is at least the smallest subnormal and
  rounds to a positive float.)
* The differentiable backward recomputes everything from the saved *inputs*, in differentiable
  torch ops, so it is itself differentiable (double backward, forward-over-reverse).
  MultiLabelMargin saves its gradient coefficients instead (computed by the forward anyway).
* Plain eager calls (nothing differentiating, tracing or vmapping the computation:
  :func:`~torchloss._autograd._base.eager_in_place`) take in-place shortcuts on their own
  temporaries, which give the same values with fewer and smaller temporaries.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .. import _reduction as R
from ._base import (
    LossFunction,
    add_tangents,
    broadcast_shape,
    eager_in_place,
    opmath,
    opmath_dtype,
    result_type,
    unpack,
    zero_tangent,
)
from .binary import _softplus

_INF = float("inf")


def _as_rows(t: Tensor) -> Tensor:
    """A ``()``, ``(C)`` or ``(N, C)`` tensor as an ``(N, C)`` matrix (a 0-d one has C = 1)."""
    return t if t.dim() == 2 else t.reshape(-1, t.shape[-1] if t.dim() else 1)


def _step(z: Tensor, mask: Tensor) -> Tensor:
    """The strict step :math:`[z > 0]` where ``mask`` holds, 0 elsewhere, with derivative 0.

    0 at the kink (torch's subgradient). ``sign(z)`` is 1 wherever ``z > 0``, so the value is
    exactly the step, but the result stays in the autograd graph (see the module notes). NaN
    gives 0, as torch's ``if (z > 0)``.
    """
    return torch.where(mask & (z > 0), z.sign(), 0.0)


def _per_sample_grad(grad: Tensor, n: int, reduction: int, dtype: torch.dtype) -> Tensor:
    """:math:`g_n` as an ``(N, 1)`` column (``'none'``) or a 0-d tensor (``'mean'``/``'sum'``)."""
    grad = grad.to(dtype)
    if reduction == R.NONE:
        return grad.reshape(-1, 1)
    return R.unreduce(grad, (n,), reduction)


# --------------------------------------------------------------------------------------------
# MultiMargin


def _mm_hinge(x: Tensor, y: Tensor, margin: float) -> tuple[Tensor, Tensor]:
    """``z[n, i] = margin - x[n, y_n] + x[n, i]`` and the mask ``i != y_n``, both ``(N, C)``."""
    z = (margin - x.gather(1, y)) + x
    other = torch.arange(x.shape[1], device=x.device) != y
    return z, other


def _mm_coeff(x: Tensor, y: Tensor, w_y: Tensor | None, p: int, margin: float) -> Tensor:
    r""":math:`c = \partial \ell_n / \partial x_n`, ``(N, C)`` (see MultiMarginLossFunction)."""
    c = x.shape[1]
    z, other = _mm_hinge(x, y, margin)
    if p == 1:
        slope = _step(z, other)
    else:
        slope = 2 * torch.where(other & (z > 0), z, 0.0)
    if w_y is not None:
        slope = torch.where(slope > 0, slope * w_y, slope)  # active terms only: inf * 0 is none
    slope = slope / c
    # every active term pulls x[y] down by what it pushes x[i] up (a selection, not a product
    # with a 0/1 mask, so that an infinite slope gives torch's -inf there rather than NaN)
    return torch.where(~other, -slope.sum(1, keepdim=True), slope)


def _mm_reduce(h: Tensor, reduction: int, shape: torch.Size, eager: bool, skip_nan: bool) -> Tensor:
    """The reduced loss from the ``(N, C)`` terms ``h`` (0 for the target's own term): each
    sample's sum over the classes divided by C, then the reduction. With ``skip_nan`` the NaN
    terms are skipped (``nansum``): the unweighted eager forward leaves the term of a NaN ``z``
    NaN, and torch's ``if (z > 0)`` skips it."""
    total = torch.nansum if skip_nan else torch.sum
    div = torch.Tensor.div_ if eager else torch.div  # eager: the sum is a temporary of ours
    rows = div(total(h, 1), h.shape[1])  # each sample's loss, Σ_i h / C, as torch's kernel
    if reduction == R.NONE:
        return rows.reshape(shape)
    # 'mean': the mean over the samples ('mean' of nothing: 0/0 = NaN). The samples' losses are
    # summed in double, as torch's kernel does (acc_type): a float32 sum of all N C terms at
    # once overflowed where every sample's loss and the mean are finite
    out = rows.sum(dtype=torch.float64) if rows.dtype == torch.float32 else rows.sum()
    if reduction == R.MEAN:
        out = div(out, h.shape[0])
    return out.to(h.dtype)


def _mm_grad_in_place(
    x: Tensor, y: Tensor, w_y: Tensor | None, p: int, margin: float, reduction: int, grad: Tensor
) -> Tensor:
    """The input gradient ``(N, C)``, built in one buffer with torch's rounding (eager
    backward only; see MultiMarginLossFunction)."""
    n, c = x.shape
    # torch's per-term factor ('mean' of an empty batch: the gradient is empty anyway)
    scale = 1.0 / max(n * c, 1) if reduction == R.MEAN else 1.0 / c
    g = grad if grad.dtype == x.dtype else grad.to(x.dtype)
    if reduction == R.NONE:
        g = g.reshape(-1, 1)
    if p == 1:
        # [z_i > 0] = [x_i > fl(x_y - margin)] exactly (see the module notes); NaN: 0
        s = torch.gt(x, x.gather(1, y).sub_(margin), out=torch.empty_like(x))
        # each active term's slope, rounded as torch's kernel: fl(fl(scale w_y) g)
        if w_y is None:
            s.mul_(g * scale)
        else:  # (a selection: an infinite weight of an inactive term is no term)
            s = torch.where(s > 0, (w_y * scale) * g, 0.0)
    else:
        s = x + x.gather(1, y).neg_().add_(margin)  # z (torch's sum, commuted: the same bits)
        s.clamp_min_(0).nan_to_num_(0.0, _INF, -_INF).mul_(2 * scale)  # 2 scale z [z > 0]
        if w_y is not None:
            s = torch.where(s > 0, s.mul(w_y), s)  # (an infinite weight of an inactive term: none)
    s.scatter_(1, y, 0.0)
    s.scatter_(1, y, s.sum(1, keepdim=True).neg_())
    if p == 2:
        s.mul_(g)
    return s


class MultiMarginLossFunction(LossFunction):
    r"""Multi-class hinge loss of a row :math:`x \in \mathbb R^C` with target class :math:`y`,
    ``margin`` :math:`m`, ``p`` :math:`\in \{1, 2\}` and optional class weights :math:`w`:

    .. math::
        \ell = \frac{1}{C} \sum_{i \ne y} w_y \, \max(0, z_i)^p, \qquad z_i = m - x_y + x_i.

    The weight of the *target* class multiplies each term after the power (torch's rule).

    **Gradient.** Only the active terms (:math:`i \ne y`, :math:`z_i > 0`, strictly) depend on
    :math:`x`, and :math:`\partial z_i/\partial x_i = 1`, :math:`\partial z_i/\partial x_y = -1`.
    With the slope :math:`s_i = \frac{w_y}{C}\,[z_i > 0]` (``p=1``) or
    :math:`s_i = \frac{w_y}{C}\,2 z_i [z_i > 0]` (``p=2``), and :math:`s_y = 0`:

    .. math::
        \frac{\partial \ell}{\partial x_i} = s_i \;(i \ne y), \qquad
        \frac{\partial \ell}{\partial x_y} = -\sum_{i \ne y} s_i .

    The backward is :math:`g_n` times this row, the jvp its dot product with the tangent.
    **Second derivatives:** 0 for ``p=1``; for ``p=2``,
    :math:`\partial s_i / \partial x_i = \frac{2 w_y}{C}[z_i > 0] = -\partial s_i/\partial x_y`
    (double backward differentiates the slope as written). torch implements neither double
    backward nor forward AD for this loss; torchloss does both.

    **Eager path.** A plain eager forward forms :math:`z` in one ``(N, C)`` buffer and turns it
    into the terms in place; a plain eager backward builds the gradient in one ``(N, C)`` buffer
    (for ``p=1`` the step as :math:`[x_i > \operatorname{fl}(x_y - m)]`, see the module notes),
    rounded as torch's kernel: with its per-term factor :math:`f = \operatorname{fl}(1/C)`
    (:math:`\operatorname{fl}(1/(NC))` for ``'mean'``) and :math:`g` the upstream gradient (of
    the sample, for ``'none'``), an active term's slope is
    :math:`\operatorname{fl}(\operatorname{fl}(f w_y)\, g)` for ``p=1``, and
    :math:`\operatorname{fl}(\operatorname{fl}(\operatorname{fl}(2f z_i)\, w_y)\, g)` for ``p=2``.
    So neither allocates more than one ``(N, C)`` tensor (torch's peak). Elsewhere (double
    backward, ``torch.func``, ``torch.compile``) both use the out-of-place differentiable ops
    above.

    ``target`` holds class indices (not differentiable); ``weight`` is not differentiable
    (torch's rule: the functional refuses a weight that requires grad, and the jvp drops a
    weight tangent). The range check of the target is done by the functional. The result has
    the dtype of ``input``; ``'none'`` gives the shape of ``target`` (``()`` or ``(N,)``).
    """

    @staticmethod
    def forward(input, target, weight, p, margin, reduction):
        x = opmath(_as_rows(input))
        y = target.reshape(-1, 1)
        w_y = None if weight is None else opmath(weight)[y]  # w_y, per term as in torch's kernel
        eager = eager_in_place(input, target, weight)
        if eager:
            # z = x - fl(x_y - margin) = x + fl(margin - x_y) (torch's sum: the same bits, as
            # rounding is symmetric), then max(0, z)
            h = torch.sub(x, x.gather(1, y).sub_(margin)).clamp_min_(0)
            if p == 2:
                h.square_()
            if w_y is not None:
                # a NaN z is no term (torch's `if (z > 0)`), and neither is a zero one: an
                # infinite (or NaN) weight multiplies the positive terms only
                h.nan_to_num_(0.0, _INF, -_INF)
                h = torch.where(h > 0, h.mul(w_y), h)
            h.scatter_(1, y, 0.0)  # the target's own term
        else:
            z, other = _mm_hinge(x, y, margin)
            h = torch.where(other & (z > 0), z, 0.0)
            if p == 2:
                h = h * h
            if w_y is not None:
                h = torch.where(h > 0, h * w_y, h)  # (only the positive terms: inf * 0 is no term)
        loss = _mm_reduce(h, reduction, target.shape, eager, eager and w_y is None)
        return loss if loss.dtype == input.dtype else loss.to(input.dtype)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, target, weight, p, margin, reduction = inputs
        ctx.p, ctx.margin, ctx.reduction = p, margin, reduction
        ctx.out_dtype = output.dtype
        tensors = (input, target) if weight is None else (input, target, weight)
        ctx.save_for_backward(*tensors)
        ctx.save_for_forward(*tensors)

    @staticmethod
    def _coeff(ctx, input, target, weight):
        x = opmath(_as_rows(input))
        y = target.reshape(-1, 1)
        w_y = None if weight is None else opmath(weight)[y]
        return _mm_coeff(x, y, w_y, ctx.p, ctx.margin)

    @staticmethod
    def backward(ctx, grad):
        input, target, weight = unpack(ctx, 3)
        if not ctx.needs_input_grad[0]:
            return None, None, None, None, None, None
        if eager_in_place(input, target, weight, grad):
            x = opmath(_as_rows(input))
            y = target.reshape(-1, 1)
            w_y = None if weight is None else opmath(weight)[y]
            gx = _mm_grad_in_place(x, y, w_y, ctx.p, ctx.margin, ctx.reduction, grad)
        else:
            coeff = MultiMarginLossFunction._coeff(ctx, input, target, weight)
            gx = _per_sample_grad(grad, coeff.shape[0], ctx.reduction, coeff.dtype) * coeff
        if gx.shape != input.shape:
            gx = gx.reshape(input.shape)
        return (gx if gx.dtype == input.dtype else gx.to(input.dtype)), None, None, None, None, None

    @staticmethod
    def jvp(ctx, t_input, _t_target, _t_weight, _p, _margin, _r):
        input, target, weight = unpack(ctx, 3)
        if t_input is None:
            return zero_tangent(target.shape, ctx.reduction, ctx.out_dtype, input)
        coeff = MultiMarginLossFunction._coeff(ctx, input, target, weight)
        t = (coeff * _as_rows(t_input).to(coeff.dtype)).sum(1).reshape(target.shape)
        return R.reduce(t, ctx.reduction).to(ctx.out_dtype)


# --------------------------------------------------------------------------------------------
# MultiLabelMargin
#
# Both formulations below compute, per row, the integer coefficient row k = C · ∂ℓ/∂x (see
# MultiLabelMarginLossFunction): k_i = a_i ≥ 0 for a non-label class (the number of active
# pairs it is in), k_c = -m_c G_c ≤ 0 for a label class. The loss follows from k alone (see
# _ml_loss), so the forward computes the gradient coefficients as a by-product.

# The pairwise formulation (O(C^2) per row, but fewer and cheaper ops than the sort) is used for
# rows of at most _ML_PAIRWISE_ALWAYS_C classes, and for rows of at most _ML_PAIRWISE_MAX_C
# classes when the whole batch has at most _ML_CHUNK pairs (a small call, whose cost is the
# number of ops); see _ml_pairwise_rows.
_ML_PAIRWISE_ALWAYS_C = 8
_ML_PAIRWISE_MAX_C = 16
# Eager chunking: the forward processes at most this many elements (rows x classes, or
# rows x classes^2 for the pairwise formulation) at a time, which bounds its temporaries.
_ML_CHUNK = 16384
# The label loop (see _ml_label_loop) is used eagerly when the functional has found that no row
# has more than _ML_LOOP_PER_BIT * log2(C) labels (below that it beats the sort: forward on one
# CPU thread, 4M float32 scores, 4 labels: ~30 ms against ~200 ms; the two meet near 16 labels
# at C = 32, 36 at C = 1024). It processes at most _ML_LOOP_CHUNK (row, label, class) triples
# at a time (a cache-sized bool block), in chunks of rows.
_ML_LOOP_PER_BIT = 3
_ML_LOOP_CHUNK = 131072
_I64_MIN = -(2**63)
_LOW_31 = 2**31 - 1
_LOW_32 = 2**32 - 1


def _ml_multiplicity(target: Tensor) -> Tensor:
    """``m[n, c]``, the number of label positions (those before the first ``-1``) naming class
    ``c``: 0 for a non-label, 2 for a label listed twice. int64, the target's shape (N, C)."""
    valid = target.ge(0).cumprod(1)  # 1 before the first -1, 0 from it on
    return torch.zeros_like(target).scatter_add_(1, target.clamp_min(0), valid)


def _ml_pairwise(x: Tensor, m: Tensor) -> Tensor:
    """``k`` from all (class, class) pairs at once: ``(N, C, C)`` booleans."""
    # pair (c, i) is active iff x_i > fl(x_c - 1), for a label c and a non-label i. Label
    # columns get a score that passes no comparison (NaN passes none either); the rows of
    # non-labels c count for nothing, having m_c = 0.
    other = x.masked_fill(m > 0, -_INF)
    # m_c [(c, i) active], summed in the smallest integer dtype that holds every count: a sum
    # over int8 in the default int64 would first convert the whole (N, C, C) block (8 times its
    # size: 25 KiB for 32 rows of 10 classes). Σ_c m_c ≤ C (the label positions), and
    # m_c G_c ≤ (C - |J| + 1)(C - |J|) ≤ C (C - 1), as are the differences below.
    c = x.shape[1]
    dtype = torch.int8 if c * (c - 1) <= 127 else torch.int16 if c * (c - 1) <= 32767 else torch.int64
    weighted = (other.unsqueeze(1) > (x - 1).unsqueeze(2)) * m.to(dtype).unsqueeze(2)
    # k_i = Σ_c m_c [(c, i) active] - m_i Σ_j [(i, j) active]
    return weighted.sum(1, dtype=dtype) - weighted.sum(2, dtype=dtype)


def _ml_sorted_packed(x: Tensor, m: Tensor) -> Tensor:
    """``k`` by one sort of int64 keys per row (eager, float32 scores).

    Each class becomes one key: in the high half, the order-preserving int32 image of its
    threshold fl(x_c - 1) if it is a label, of its score if it is not (``-0.0`` made ``+0.0``
    first, so that equal floats give equal keys); in the low half its multiplicity ``m_c``
    (>= 1 for a label, 0 for a non-label). Sorted in descending order, a label therefore comes
    before every non-label of equal value, so the non-labels before a label's key are exactly
    those strictly above its threshold (the strict step), and the labels after a non-label's
    key are exactly those whose threshold is strictly below its score. A NaN score gets the
    smallest key (low half 0): after every threshold, so counted by none.
    """
    label = m > 0
    bits = (torch.where(label, x - 1, x) + 0.0).view(torch.int32)
    ordered = bits ^ ((bits >> 31) & _LOW_31)  # int32 order = float order
    key = (ordered.long() << 32).bitwise_or_(m).masked_fill_(torch.isnan(x), _I64_MIN)
    key, order = key.sort(dim=1, descending=True)
    weight = key.bitwise_and_(_LOW_32)  # m_c of a label, 0 for a non-label (or a NaN)
    is_score = weight == 0
    scores_at_or_above = is_score.cumsum(1)
    labels_at_or_above = weight.cumsum(1)
    # a_i: label weight strictly below a score; -m_c G_c: G_c the scores strictly above a label
    total = labels_at_or_above[:, -1:].clone()
    above = labels_at_or_above.neg_().add_(total)
    k = torch.where(is_score, above, weight.mul_(scores_at_or_above).neg_())
    return torch.empty_like(k).scatter_(1, order, k)


def _ml_sorted_runs(x: Tensor, m: Tensor) -> Tensor:
    """``k`` by one sort of the scores/thresholds themselves, any float dtype, any mode.

    The keys are floats (score or threshold, as in :func:`_ml_sorted_packed`), so a label and a
    non-label of equal value may sort either way; the counts are therefore taken at the start
    of each run of equal keys: G_c counts the scores before the run of c's threshold, and a_i
    the label weight of the runs that start after the run of score i.
    """
    c = x.shape[1]
    label = m > 0
    nan = torch.isnan(x)
    is_score = ~(label | nan)  # eligible non-labels
    weight = m.masked_fill(nan, 0)  # a NaN label score has no active pairs
    key = torch.where(label, x - 1, x)
    key, order = key.sort(dim=1, descending=True)
    is_score = is_score.gather(1, order)
    weight = weight.gather(1, order)
    new_run = torch.cat([torch.ones_like(is_score[:, :1]), key[:, 1:] != key[:, :-1]], 1)
    run_start = torch.where(new_run, torch.arange(c, device=x.device), 0).cummax(1).values
    scores = is_score.cumsum(1)
    scores_before = torch.cat([torch.zeros_like(scores[:, :1]), scores[:, :-1]], 1)
    above = scores_before.gather(1, run_start)  # G: scores strictly above
    # label weight whose run starts at or before each position: all labels >= the value there
    at_or_above = torch.zeros_like(weight).scatter_add(1, run_start, weight).cumsum(1)
    k = torch.where(is_score, at_or_above[:, -1:] - at_or_above, -(weight * above))
    return k.scatter(1, order, k)


def _ml_label_loop(
    x: Tensor, target: Tensor, labels: int, rows: bool, with_grad: bool
) -> tuple[Tensor, Tensor | None]:
    r"""As :func:`_ml_forward`, looping over the first ``labels`` target columns (eager only).

    ``labels`` is at least every row's label count (the functional reads it from the target:
    see ``MultiLabelMarginLossFunction.label_limit``), so the columns from it on hold no label. Each
    position :math:`j` (label :math:`t_j`, threshold :math:`\theta_j`) is compared with every
    non-label score at once, in ``(rows, labels, C)`` bool blocks: :math:`a_i` counts the
    positions with :math:`x_i > \theta_j`, and :math:`G_j` the scores above :math:`\theta_j`
    is scattered, negated, onto :math:`k_{t_j}` (a duplicated label: once per position, which
    is its multiplicity). Time :math:`O(N \cdot \text{labels} \cdot C)`, as torch's kernel.
    """
    n, c = x.shape
    t = target[:, :labels]
    valid = t.ge(0).cummin(1).values  # before the row's first -1
    # a position past the terminator names the row's first label instead: marking a label again
    # changes nothing, and a row without labels has no active pair whatever is marked
    idx = torch.where(valid, t, t[:, :1]).clamp_min_(0)
    # θ_j = fl(x_{t_j} - 1), +inf past the terminator (no score is above it: G_j = 0)
    theta = x.gather(1, idx).sub_(1).masked_fill_(valid.logical_not_(), _INF)
    loss = x.new_empty(n, dtype=torch.float64)
    coeff = torch.empty_like(x) if with_grad else None
    triples = labels * c
    if n * triples <= _ML_CHUNK:  # a small batch at once
        chunk = max(n, 1)
    else:  # at most 1/16 of the batch, so that the temporaries stay below the coefficients
        chunk = max(1, min(_ML_LOOP_CHUNK // triples, n // 16))
    # the (pair active) indicators of a chunk, in the float dtype, so that they are summed in
    # place (a bool block would be converted first): reused by every chunk
    active = x.new_empty(min(chunk, n), labels, c)
    for r in range(0, n, chunk):
        s = slice(r, r + chunk)
        xr, ir = x[s], idx[s]
        act = active[: xr.shape[0]]
        k = torch.empty_like(xr) if coeff is None else coeff[s]
        # the non-labels' scores (a label's is -inf, above no threshold; NaN is above none)
        torch.gt(xr.scatter(1, ir, -_INF).unsqueeze(1), theta[s].unsqueeze(2), out=act)
        torch.sum(act, 1, out=k)  # a_i (0 for a label): exact counts
        k.scatter_add_(1, ir, act.sum(2).neg_())  # -G_j onto k_{t_j}
        loss[s] = _ml_loss(k, xr, True)
    return (loss if rows else loss.sum()), (coeff.div_(c) if coeff is not None else None)


def _ml_label_limit(n: int, c: int) -> int:
    """The largest label count for which the eager forward of ``n`` rows of ``c`` classes takes
    the label loop (0: never, the rows are counted pairwise). The functional reads a batch's
    label count only when this is positive."""
    return 0 if _ml_pairwise_rows(n, c) else _ML_LOOP_PER_BIT * (c.bit_length() - 1)


def _ml_pairwise_rows(n: int, c: int) -> bool:
    """Whether a batch of ``n`` rows of ``c`` classes is counted pairwise (else sorted)."""
    return c <= _ML_PAIRWISE_ALWAYS_C or (c <= _ML_PAIRWISE_MAX_C and n * c * c <= _ML_CHUNK)


def _ml_counts(x: Tensor, m: Tensor, eager: bool, pairwise: bool) -> Tensor:
    if pairwise:
        return _ml_pairwise(x, m)
    if eager and x.dtype == torch.float32:
        return _ml_sorted_packed(x, m)
    return _ml_sorted_runs(x, m)


def _ml_loss(k: Tensor, x: Tensor, rows: bool) -> Tensor:
    r""":math:`C \ell_n` per row (``rows``) or summed over the rows, float64, from the coefficient
    rows ``k`` (see the class docstring): :math:`\sum_c k_c x_c + \max(k_c, 0)`.

    A class with :math:`k_c = 0` is in no active pair; an infinite or NaN score there gives a
    NaN term, which ``nansum`` skips (torch skips NaN pairs too). The products are exact in
    float64 for float32 scores. Since :math:`\sum_c k_c = 0` (each active pair adds 1 to a
    non-label and -1 to a label), the scores are shifted by one finite score of the row first:
    the same sum, without the cancellation of terms of the scores' magnitude (float64 scores
    of 3e9 lost 5e-7 of a loss of 1.5 where torch's pairwise sum is exact).
    """
    xd = x.to(torch.float64)
    shift = xd.gather(1, k.argmax(1, keepdim=True)) if xd.shape[1] else xd.new_zeros((xd.shape[0], 1))
    shift = torch.where(shift.isfinite(), shift, 0.0)
    terms = torch.addcmul(k.clamp_min(0), k, xd - shift)
    return torch.nansum(terms, 1) if rows else torch.nansum(terms)


def _ml_coeff(k: Tensor, dtype: torch.dtype) -> Tensor:
    """``k / C`` in ``dtype``: each count converted exactly, then divided once."""
    coeff = k / k.shape[1]  # int64 / int: the default float dtype (usually the one wanted)
    return coeff if coeff.dtype == dtype else k.to(dtype) / k.shape[1]


def _ml_forward(
    x: Tensor, target: Tensor, rows: bool, with_grad: bool, eager: bool, labels: int = -1
) -> tuple[Tensor, Tensor | None]:
    r""":math:`C \ell_n` (float64; per row if ``rows``, else summed) and, when ``with_grad``, the
    coefficient rows :math:`\partial \ell_n / \partial x_n` (the compute dtype, ``(N, C)``).
    ``labels``: a bound on the rows' label counts known to the caller, or -1."""
    n, c = x.shape
    if eager and 0 <= labels <= _ml_label_limit(n, c):
        return _ml_label_loop(x, target, labels, rows, with_grad)
    pairwise = _ml_pairwise_rows(n, c)
    per_row = c * c if pairwise else c
    # rows per chunk: at most _ML_CHUNK elements, and at most 1/16 of the batch, so that the
    # temporaries (some 60 bytes per element) stay below the coefficients (4 per element)
    chunk = max(1, min(_ML_CHUNK // per_row, n // 16))
    if not eager or n * per_row <= _ML_CHUNK:
        k = _ml_counts(x, _ml_multiplicity(target), eager, pairwise)
        return _ml_loss(k, x, rows), (_ml_coeff(k, x.dtype) if with_grad else None)
    # eager and large: chunks of rows, written into the outputs
    loss = x.new_empty(n, dtype=torch.float64)
    coeff = torch.empty_like(x) if with_grad else None
    for r in range(0, n, chunk):
        xr = x[r : r + chunk]
        k = _ml_counts(xr, _ml_multiplicity(target[r : r + chunk]), True, pairwise)
        loss[r : r + chunk] = _ml_loss(k, xr, True)
        if coeff is not None:
            coeff[r : r + chunk] = k
    return (loss if rows else loss.sum()), (coeff.div_(c) if coeff is not None else None)


class MultiLabelMarginLossFunction(LossFunction):
    r"""Multi-label hinge loss of a row :math:`x \in \mathbb R^C` whose target row lists the label
    classes :math:`t_1, t_2, \dots` up to the first :math:`-1` (the entries after it are ignored):

    .. math::
        \ell = \frac{1}{C} \sum_{k \in K} \sum_{i \notin J} \max(0, z_{ki}), \qquad
        z_{ki} = 1 - x_{t_k} + x_i,

    where :math:`K` is the set of positions before the terminator and :math:`J = \{t_k : k \in
    K\}` the label set. A duplicated label is a second position :math:`k` and is counted twice;
    a row starting with :math:`-1` has no labels and loss 0, and so does a row whose labels
    cover every class. Grouping the positions by class, with the multiplicity
    :math:`m_c = |\{k \in K : t_k = c\}|` (0 for a non-label, 2 for a label listed twice):

    .. math::
        \ell = \frac{1}{C} \sum_{c \in J} m_c \sum_{i \notin J} \max(0,\, 1 - x_c + x_i).

    **Active pairs.** The pair :math:`(c, i)` is active iff :math:`z_{ci} > 0` (strictly, as
    torch), with :math:`z` formed in torch's order ``(1 - x[c]) + x[i]``. Since rounding is
    monotonic and symmetric, and a sum of two floats that is positive exactly rounds to a
    positive float, this holds iff :math:`x_i > \theta_c` with the threshold
    :math:`\theta_c = \operatorname{fl}(x_c - 1) = -\operatorname{fl}(1 - x_c)`, compared
    exactly. A NaN score is in no active pair (torch's ``z > 0`` is false for NaN).

    **Gradient.** With :math:`a_i = \sum_{c \in J} m_c [x_i > \theta_c]` for a non-label
    :math:`i` (the label weight below it) and :math:`G_c = |\{i \notin J : x_i > \theta_c\}|`
    for a label :math:`c` (the non-labels above its threshold), and since
    :math:`\partial z_{ci}/\partial x_i = 1`, :math:`\partial z_{ci}/\partial x_c = -1`:

    .. math::
        C\,\frac{\partial \ell}{\partial x_i} = k_i = a_i \;(i \notin J), \qquad
        C\,\frac{\partial \ell}{\partial x_c} = k_c = -m_c G_c \;(c \in J).

    The backward is :math:`g_n k / C`, the jvp the dot product of :math:`k / C` with the
    tangent. The loss is piecewise linear, so its second derivative is 0 (double backward and
    forward-over-reverse return zeros; torch implements neither, nor forward AD).

    **The loss from** :math:`k`. Summing :math:`z_{ci} = 1 + (-x_c) + x_i` over the active
    pairs, each label :math:`c` appears :math:`m_c G_c` times and each non-label :math:`i`
    :math:`a_i` times, and the number of active pairs is :math:`\sum_i a_i`:

    .. math::
        C \ell = \sum_{i \notin J} a_i (1 + x_i) - \sum_{c \in J} m_c G_c x_c
               = \sum_{c:\, k_c \ne 0} k_c \big(x_c + [k_c > 0]\big),

    evaluated in float64 (exact products for float32 scores, so no cancellation from the
    float32 side), which makes the forward a by-product of the counts and as accurate as
    torch's (which accumulates each float32 :math:`z` in a double).

    **Counting.** For narrow rows (:func:`_ml_pairwise_rows`) all (class, class) pairs are
    compared at once (``(N, C, C)`` booleans, rows weighted by :math:`m_c`). Otherwise each row is sorted
    once: every class contributes one key, its threshold :math:`\theta_c` if it is a label, its
    score if not (a class is never both), and in descending order :math:`G_c` is the number of
    non-label keys before :math:`\theta_c` and :math:`a_i` the label weight after :math:`x_i`,
    a tie between a threshold and a score counting as inactive (:func:`_ml_sorted_packed`,
    :func:`_ml_sorted_runs`). Time :math:`O(N C \log C)` whatever the number of labels, memory
    :math:`O(NC)`: eagerly, the rows are processed in chunks, so the temporaries stay below the
    saved coefficients. torch's kernel loops over the label positions instead,
    :math:`O(N |K| C)`, which is cheaper for a few labels among many classes (C = 1024 with 4
    labels, one CPU thread: the sort ~200 ms, torch's forward and backward ~120 ms) and dearer
    otherwise (C = 1024 with 64 labels: ~210 against ~1400 ms).

    **The label loop.** So an eager forward that knows a bound :math:`L` on the rows' label
    counts, with :math:`L \le 3 \log_2 C`, loops over the first :math:`L` target positions
    instead (:func:`_ml_label_loop`): :math:`O(NLC)`, ~30 ms for the example above. The bound
    depends on the target's values, which neither ``forward`` nor ``backward`` may read (no host
    reads or value-dependent branches there: ``torch.compile``, vmap). The functional reads it
    (:func:`torchloss.functional._ml_label_count`) where that is free and sound: a CPU target
    (no device synchronisation; the range check reads its extremes there too), outside
    ``torch.compile`` and ``torch.func`` transforms, and passes it as the plain int argument
    ``labels`` (-1: unknown). It only selects the formulation: every formulation gives the same
    counts, so the result does not depend on it, and the traced, vmapped, CUDA and
    differentiated paths never see it.

    **Saved for backward.** The coefficient rows :math:`k / C` are computed by the forward
    anyway (when the input requires grad), returned as a second, non-differentiable output and
    saved: ``(N, C)`` in the compute dtype (for float32 and float64 inputs the size of torch's
    saved ``is_target``). A first order backward only scales them. Where the backward is itself differentiated (or traced,
    or vmapped), they are attached to ``input`` by ``where(False, x, k / C)``: the same values,
    derivative 0 with respect to :math:`x` (exactly the second derivative of a piecewise-linear
    loss), so double backward and forward-over-reverse return zeros connected to ``input``
    instead of "does not require grad". The jvp recomputes them when the forward did not.

    The target is not differentiable (class indices); its range check (every entry in
    ``[-1, C-1]``, even after the terminator) is done by the functional. The result has the
    dtype of ``input``; ``'none'`` gives ``(N,)`` for a matrix input and ``()`` otherwise.
    """

    # the largest label count for which the functional passes ``labels`` (see _ml_label_limit)
    label_limit = staticmethod(_ml_label_limit)

    @staticmethod
    def forward(input, target, reduction, with_grad, labels):
        x = opmath(_as_rows(input))
        eager = eager_in_place(input, target)
        rows = reduction == R.NONE
        loss, coeff = _ml_forward(x, target.reshape(x.shape), rows, with_grad, eager, labels)
        if rows:
            loss = (loss / x.shape[1]).reshape(input.shape[:-1])
        else:  # 'mean': Σ_n ℓ_n / N ('mean' of nothing: 0/0 = NaN)
            loss = loss / (x.numel() if reduction == R.MEAN else x.shape[1])
        return loss.to(input.dtype), (x.new_empty(0) if coeff is None else coeff)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, target, reduction, _, _ = inputs
        ctx.reduction = reduction
        ctx.out_dtype = output[0].dtype
        ctx.mark_non_differentiable(output[1])
        # the coefficients never receive a gradient: no (N, C) zeros for them in backward
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(input, target, output[1])
        ctx.save_for_forward(input, target, output[1])

    @staticmethod
    def _coeff(input: Tensor, target: Tensor, saved: Tensor) -> Tensor:
        """The coefficient rows ``k / C``: the saved ones, or recomputed (when the forward ran
        without ``with_grad``). Attached to ``input`` with derivative 0 unless the caller is
        plain eager code (see the class docstring)."""
        x = opmath(_as_rows(input))
        coeff = saved
        if coeff.shape != x.shape:
            m = _ml_multiplicity(target.reshape(x.shape))
            coeff = _ml_coeff(_ml_counts(x, m, False, _ml_pairwise_rows(*x.shape)), x.dtype)
        if eager_in_place(input, target, coeff):
            return coeff
        return torch.where(torch.zeros((), dtype=torch.bool, device=x.device), x, coeff)

    @staticmethod
    def backward(ctx, grad, _grad_coeff):
        input, target, saved = ctx.saved_tensors
        if not ctx.needs_input_grad[0] or grad is None:
            return None, None, None, None, None
        coeff = MultiLabelMarginLossFunction._coeff(input, target, saved)
        g = _per_sample_grad(grad, coeff.shape[0], ctx.reduction, coeff.dtype)
        return (g * coeff).reshape(input.shape).to(input.dtype), None, None, None, None

    @staticmethod
    def jvp(ctx, t_input, _t_target, _r, _w, _labels):
        input, target, saved = ctx.saved_tensors
        if t_input is None:
            return zero_tangent(input.shape[:-1], ctx.reduction, ctx.out_dtype, input), None
        coeff = MultiLabelMarginLossFunction._coeff(input, target, saved)
        t = (coeff * _as_rows(t_input).to(coeff.dtype)).sum(1).reshape(input.shape[:-1])
        return R.reduce(t, ctx.reduction).to(ctx.out_dtype), None


# --------------------------------------------------------------------------------------------
# MultiLabelSoftMargin


def _mlsm_dx(x: Tensor, y: Tensor) -> Tensor:
    # (1-y)·σ(x) - y·σ(-x) = σ(x) - y, with each sigmoid evaluated where it is small, so it does
    # not cancel for large |x| (x = 40, y = 1 gives -4e-18 rather than 0).
    return (1 - y) * torch.sigmoid(x) - y * torch.sigmoid(-x)


def _mlsm_loss_in_place(x: Tensor, y: Tensor) -> Tensor:
    r"""The element-wise loss :math:`u` in one new buffer of ``x``'s shape (plus one temporary),
    eager only (see MultiLabelSoftMarginLossFunction).

    :math:`y\,\operatorname{sp}(-x) + (1-y)\operatorname{sp}(x) = x([x \ge 0] - y) + \log(1 +
    e^{-|x|})`, since :math:`\operatorname{sp}(\pm x) = \max(\pm x, 0) + \log(1 + e^{-|x|})`
    and only one of the maxima is nonzero: the product is :math:`x(1 - y)` or :math:`-x y`,
    rounded as torch's :math:`(1-y)\,x` and :math:`y\,(-x)`, and for targets in [0, 1] both
    terms are nonnegative (no cancellation). An infinite :math:`x` whose factor is 0 gives NaN,
    as torch's ``0 * logsigmoid(-inf)``.
    """
    u = torch.ge(x, 0, out=torch.empty_like(x)).sub_(y).mul_(x)  # the sign of 0 is irrelevant
    return u.add_(x.abs().neg_().exp_().log1p_())


def _mlsm_dx_in_place(x: Tensor, y: Tensor) -> Tensor:
    """:func:`_mlsm_dx` in one new buffer of ``x``'s shape plus one temporary at a time (eager
    only): the same operations in the same order, so the same bits."""
    d = torch.sigmoid(x).mul_(1 - y)
    return d.sub_(torch.neg(x).sigmoid_().mul_(y))


def _mlsm_eager(input: Tensor, target: Tensor, weight: Tensor | None, *more: Tensor) -> bool:
    """Whether the eager in-place path applies: :func:`eager_in_place`, and ``input`` has the
    shape of the loss (so its buffers hold every element; ``target``/``weight`` may broadcast)."""
    if not eager_in_place(input, target, weight, *more):
        return False
    if target.dim() > input.dim() or (weight is not None and weight.dim() > input.dim()):
        return False
    shapes = (input.shape, target.shape) if weight is None else (input.shape, target.shape, weight.shape)
    return broadcast_shape(*shapes) == input.shape


def _per_class_mean(e: Tensor, input: Tensor) -> Tensor:
    # torch sums over dimension input.dim() - 1 *of the broadcast loss* and divides by the
    # input's class count. When target or weight broadcast the loss to more dimensions than the
    # input has, that dimension is not the last one; torchloss reproduces this as it is.
    return e.sum(input.dim() - 1) / input.shape[-1]


class MultiLabelSoftMarginLossFunction(LossFunction):
    r"""Multi-label logistic loss: one binary cross entropy on logits per class, averaged over the
    classes (the last dimension of ``input``), with targets :math:`y` and optional weights
    :math:`w` broadcast against ``input``:

    .. math::
        u_c = -\big[\,y_c \log\sigma(x_c) + (1-y_c)\log\sigma(-x_c)\big]
            = y_c \operatorname{sp}(-x_c) + (1-y_c)\operatorname{sp}(x_c),
        \qquad \ell = \frac{1}{C}\sum_c w_c u_c,

    with :math:`\operatorname{sp}(z) = \log(1 + e^z)` evaluated as
    :math:`\max(z, 0) + \log(1 + e^{-|z|})`: finite and exact for any :math:`x`
    (:math:`x = \pm 10^4` gives :math:`10^4` or :math:`0`). The loss is divided by :math:`C`,
    not by :math:`\sum_c w_c` (torch's rule).

    **Gradients.** With :math:`\operatorname{sp}' = \sigma`, :math:`\sigma(z) + \sigma(-z) = 1`:

    .. math::
        \frac{\partial \ell}{\partial x_c} = \frac{w_c}{C}\big[(1-y_c)\sigma(x_c) - y_c\sigma(-x_c)\big]
            = \frac{w_c}{C}(\sigma(x_c) - y_c), \qquad
        \frac{\partial \ell}{\partial y_c} = \frac{w_c}{C}\big[\operatorname{sp}(-x_c)
            - \operatorname{sp}(x_c)\big] = -\frac{w_c}{C} x_c, \qquad
        \frac{\partial \ell}{\partial w_c} = \frac{u_c}{C}.

    Each is summed over the dimensions its argument was broadcast along. **Second derivatives**
    (double backward differentiates the expressions above):
    :math:`\partial^2\ell/\partial x_c^2 = \frac{w_c}{C}\sigma(x_c)\sigma(-x_c)`,
    :math:`\partial^2\ell/\partial x_c\partial y_c = -\frac{w_c}{C}`,
    :math:`\partial^2\ell/\partial x_c\partial w_c = \frac{\sigma(x_c) - y_c}{C}`,
    :math:`\partial^2\ell/\partial y_c\partial w_c = -\frac{x_c}{C}`, the others 0. Where
    autograd differentiates :math:`\operatorname{sp}` (the weight gradient, inside a backward),
    it is ``logaddexp(z, 0)``, whose derivative is :math:`\sigma(z)` everywhere.

    **Eager path.** When nothing differentiates, traces or vmaps the computation and ``input``
    has the loss's shape, the forward builds :math:`u` in one buffer with one temporary
    (:func:`_mlsm_loss_in_place`) and the backward the input gradient likewise
    (:func:`_mlsm_dx_in_place`), each as accurate as the out-of-place expressions above, which
    are kept for every other case (torch's autograd keeps some six ``N x C`` buffers alive; the
    out-of-place forward allocated ten).

    ``input``, ``target`` and ``weight`` are all differentiable (integer targets and weights
    are used as numbers). The result has torch's promoted dtype of the three.
    """

    @staticmethod
    def forward(input, target, weight, reduction):
        out_dtype = result_type(*(t for t in (input, target, weight) if t is not None))
        ct = opmath_dtype(out_dtype)
        x, y = input.to(ct), target.to(ct)
        w = None if weight is None else weight.to(ct)
        if _mlsm_eager(input, target, weight):
            loss = _mlsm_loss_in_place(x, y)
            if w is not None:
                loss.mul_(w)
        else:
            # sp(±x) = max(±x, 0) + log1p(exp(-|x|)): the log1p term is shared by both.
            tail = torch.log1p(torch.exp(-x.abs()))
            loss = y * (x.neg().clamp_min(0) + tail) + (1 - y) * (x.clamp_min(0) + tail)
            if w is not None:
                loss = loss * w
        loss = R.reduce(_per_class_mean(loss, input), reduction)
        return loss if loss.dtype == out_dtype else loss.to(out_dtype)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, target, weight, reduction = inputs
        ctx.reduction = reduction
        ctx.out_dtype = output.dtype
        tensors = (input, target) if weight is None else (input, target, weight)
        ctx.save_for_backward(*tensors)
        ctx.save_for_forward(*tensors)

    @staticmethod
    def _unpack(ctx):
        input, target, weight = unpack(ctx, 3)
        ct = opmath_dtype(ctx.out_dtype)
        w = None if weight is None else weight.to(ct)
        shape = broadcast_shape(*(t.shape for t in (input, target, weight) if t is not None))
        return input, target, weight, input.to(ct), target.to(ct), w, shape

    @staticmethod
    def backward(ctx, grad):
        input, target, weight, x, y, w, shape = MultiLabelSoftMarginLossFunction._unpack(ctx)
        need_x, need_y, need_w = ctx.needs_input_grad[:3]
        class_dim = input.dim() - 1
        if ctx.reduction == R.NONE:
            g = grad.to(x.dtype).unsqueeze(class_dim)
        else:
            per_sample = shape[:class_dim] + shape[class_dim + 1 :]
            g = R.unreduce(grad.to(x.dtype), per_sample, ctx.reduction)
        g = g / input.shape[-1]
        gw = None
        if need_w:
            u = y * _softplus(-x) + (1 - y) * _softplus(x)  # the unweighted loss
            gw = _sum_to(g * u, shape, weight)
        gx = None
        if need_x and _mlsm_eager(input, target, weight, grad):
            gx = _mlsm_dx_in_place(x, y).mul_(g)
            if w is not None:
                gx.mul_(w)
            gx = gx if gx.dtype == input.dtype else gx.to(input.dtype)
        if w is not None:
            g = g * w
        if need_x and gx is None:
            gx = _sum_to(g * _mlsm_dx(x, y), shape, input)
        gy = _sum_to(g * -x, shape, target) if need_y else None
        return gx, gy, gw, None

    @staticmethod
    def jvp(ctx, t_input, t_target, t_weight, _r):
        input, _target, _weight, x, y, w, shape = MultiLabelSoftMarginLossFunction._unpack(ctx)
        t = None  # tangent of the element-wise loss w·u
        if t_input is not None:
            t = _mlsm_dx(x, y) * t_input.to(x.dtype)
        if t_target is not None:
            t = add_tangents(t, -x * t_target.to(x.dtype))
        if t is not None and w is not None:
            t = t * w
        if t_weight is not None:
            u = y * _softplus(-x) + (1 - y) * _softplus(x)
            t = add_tangents(t, u * t_weight.to(x.dtype))
        if t is None:
            t = x.new_zeros(())
        t = _per_class_mean(t.expand(shape), input)
        return R.reduce(t, ctx.reduction).to(ctx.out_dtype)


def _sum_to(t: Tensor, shape: torch.Size, like: Tensor) -> Tensor:
    """A derivative term, broadcast to the loss ``shape`` and summed back to ``like``'s shape.

    A term need not involve every argument (``∂ℓ/∂y = -w x/C`` has no ``y``), so it is expanded
    to the full loss shape before summing over the dimensions ``like`` was broadcast along.
    """
    return R.sum_to(t.expand(shape), like)
