r"""Pair losses: MarginRanking, HingeEmbedding and CosineEmbedding.

Notation: :math:`g` is the upstream gradient of the reduced loss and :math:`g_\ell` its share for
one element (or one sample) of the element-wise loss (``g``, or ``g / numel`` for ``'mean'``:
:func:`torchloss._reduction.unreduce`). :math:`[P]` is 1 if :math:`P` holds, else 0. Every
gradient is summed back to the shape of its argument (``sum_to``) where that argument was
broadcast, and the tangent of the reduced loss is the reduction of
:math:`\sum_a \partial\ell/\partial a \cdot \dot a`.

**Subgradients.** torch builds all three losses from ``clamp_min(·, 0)``, whose derivative is
:math:`[z \ge 0]`: *at* a kink the gradient passes (it is 1, not 0; the multi-class hinge
kernels use the strict :math:`[z > 0]` instead). torchloss reproduces this, forming each hinge
argument :math:`z` in torch's order of operations so that, in float32 and float64, the sign of
:math:`z`, hence the active set, agrees with torch's bit for bit, including at exact kinks.

**Numerics shared by the three.**

* float16/bfloat16 are computed in float32 (:func:`~torchloss._autograd._base.opmath`) and
  rounded once (torch rounds after every operation of its composite). Integer inputs follow
  torch's integer arithmetic exactly (see each Function).
* The backward is written in ordinary torch operations on what is saved (the inputs; for
  HingeEmbedding its piecewise-constant coefficient; for CosineEmbedding also three numbers per
  sample, recomputed when the backward is itself differentiated), so it is itself
  differentiable (double backward, forward-over-reverse).

**Speed (the eager shortcuts).** torch's composites select with ``torch.where`` and masks, whose
CPU kernels are not vectorised (one ``where`` over 4M float32 elements takes longer than ten
vectorised element-wise operations). torchloss never selects over the full element-wise shape:
masks are 0/1 floats (or clamp bounds, see :func:`_he_terms`), and when nothing will differentiate
or trace the code (:func:`~torchloss._autograd._base.eager_in_place`: eager, grad mode off, no forward-AD level, plain tensors) the
forward and a first-order backward write comparisons straight into float buffers (``out=``) and
update their own temporaries in place. Otherwise the same formulas run out of place, so that
autograd, ``torch.func`` and ``torch.compile`` see ordinary differentiable operations; the two
paths compute the same values (``tests/test_pair_specific.py`` checks them against each other).
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
    opmath_dtype,
    result_type,
    zero_tangent,
)

# torch's cosine_embedding_loss adds ATen's EPSILON to each squared norm: 1e-12 as a float32
# constant, 9.99999996e-13 when seen in float64 (using the double 1e-12 would move float64
# gradients of near-zero vectors by a few parts in 1e9).
EPSILON = float(torch.tensor(1e-12, dtype=torch.float32))


# --------------------------------------------------------------------------------------------
# Shared helpers


def _mul(a: Tensor, b: Tensor, fast: bool) -> Tensor:
    """``a * b``, in place on ``a`` (a temporary of the caller's) when eager and ``a`` has the
    result's shape."""
    if fast and broadcast_shape(a.shape, b.shape) == a.shape:
        return a.mul_(b)
    return a * b


def _cmp_into(op, t: Tensor, value, out: Tensor | None = None, dtype=None) -> Tensor:
    """``op(t, value)`` (a comparison) as 0/1 written into ``out`` (or a new buffer of ``t``'s
    shape and ``dtype``), for the eager path.

    Straight into the float (or int8) buffer rather than through a bool tensor and a
    conversion. A complex ``t`` goes through bool (torch would cast a complex intermediate to the
    real buffer, with a warning).
    """
    if out is None:
        out = torch.empty(t.shape, dtype=dtype, device=t.device)
    if t.is_complex():
        return out.copy_(op(t, value))
    return op(t, value, out=out)


def _as(t: Tensor, dtype: torch.dtype) -> Tensor:
    """``t.to(dtype)``, without the dispatch (about 1 us) when it already has that dtype."""
    return t if t.dtype == dtype else t.to(dtype)


def _per_element(grad: Tensor, shape, reduction: int, dtype: torch.dtype) -> Tensor:
    """:math:`g_\\ell`: the upstream gradient of each element of a loss of ``shape``, in the
    compute dtype (a 0-d tensor for ``'mean'``/``'sum'``, a broadcast view, never a copy)."""
    return R.unreduce(_as(grad, dtype), shape, reduction)


# --------------------------------------------------------------------------------------------
# MarginRanking


def _mr_dtypes(input1: Tensor, input2: Tensor, target: Tensor) -> tuple[torch.dtype, torch.dtype]:
    """``(result, compute)`` dtypes: torch promotes the three, then adds the Python-float margin,
    which turns an integral promotion into the default floating dtype."""
    dtype = input1.dtype
    if input2.dtype == dtype and target.dtype == dtype and dtype in (torch.float32, torch.float64):
        return dtype, dtype  # the usual call: no promotion to work out
    promoted = result_type(input1, input2, target)
    if not promoted.is_floating_point:
        return torch.get_default_dtype(), promoted
    return promoted, opmath_dtype(promoted)


def _integral(t: Tensor) -> bool:
    return not (t.dtype.is_floating_point or t.dtype.is_complex)


def _mr_target(target: Tensor, ct: torch.dtype) -> Tensor:
    """The target in ``ct`` as torch's ``-target`` leaves it: an integer target is negated in its
    own dtype first, wrapping around as it does (a uint8 255 negates to 1, so it acts as -1)."""
    if _integral(target):
        return (-target).to(ct).neg_()
    return _as(target, ct)


def _mr_difference(input1: Tensor, input2: Tensor, ct: torch.dtype) -> Tensor:
    """:math:`d = x_2 - x_1` in ``ct``; two integer scores are subtracted as torch's
    ``input1 - input2``, in their integer dtype (wrapping around as it does), then negated."""
    if _integral(input1) and _integral(input2):
        return (input1 - input2).to(ct).neg_()
    return _as(input2, ct) - _as(input1, ct)


def _mr_hinge_arg(x1: Tensor, x2: Tensor, y: Tensor, margin: float) -> tuple[Tensor, Tensor]:
    """``(d, z)``: :math:`d = x_2 - x_1` and :math:`z = y\\,d + m`, out of place.

    torch forms :math:`(-y)(x_1 - x_2) + m`; negation is exact and rounding is symmetric, so
    :math:`y(x_2 - x_1)` is the same number bit for bit, and so is the sign of :math:`z`.
    """
    d = x2 - x1
    return d, y * d + margin


class MarginRankingLossFunction(LossFunction):
    r"""Margin ranking loss of two scores :math:`x_1, x_2` and a target :math:`y` (usually
    :math:`\pm 1`, any value accepted), broadcast together, with margin :math:`m`:

    .. math::
        \ell = \max(0, z), \qquad z = -y\,(x_1 - x_2) + m = y\,d + m, \quad d = x_2 - x_1 .

    **Gradients.** With :math:`s = [z \ge 0]` (torch's ``clamp_min`` subgradient: the gradient
    passes at :math:`z = 0`), :math:`\partial z/\partial x_1 = -y`,
    :math:`\partial z/\partial x_2 = y` and :math:`\partial z/\partial y = d`:

    .. math::
        \frac{\partial\ell}{\partial x_1} = -y\,s, \qquad
        \frac{\partial\ell}{\partial x_2} = y\,s, \qquad
        \frac{\partial\ell}{\partial y} = (x_2 - x_1)\,s .

    The backward is :math:`g_\ell` times these (summed to each argument's shape); the tangent is
    :math:`\dot\ell = s\,(y(\dot x_2 - \dot x_1) + d\,\dot y)`. **Second derivatives** are 0
    except the cross terms :math:`\partial^2\ell/\partial x_1\partial y = -s`,
    :math:`\partial^2\ell/\partial x_2\partial y = s`; double backward differentiates the
    expressions above (the step :math:`s` is piecewise constant).

    All three arguments are differentiable (torch's rule: the target enters multiplicatively).
    The result has torch's promoted dtype of the three, or the default floating dtype when that
    is integral (``+ margin`` with a Python float). Integer arguments are computed as torch does,
    :math:`(-y)(x_1 - x_2)` in the integer dtype (wrapping as it does) and then
    :math:`+ m` in floating point.

    **Memory.** With ``keep_step`` (the caller's scores require grad and its target does not:
    the usual training call) the Function returns the step :math:`s` as a second,
    non-differentiable bool output and keeps only it and the target for backward (one byte per
    element beyond the inputs): the two gradients are :math:`\mp y\,s\,g_\ell`, and their
    derivatives need nothing more (:math:`s` is piecewise constant, the target a constant).
    Otherwise the three inputs are saved (the caller's tensors) and the backward recomputes
    :math:`d` and :math:`s`. torch keeps :math:`-y` and :math:`x_1 - x_2` (eight bytes per
    float32 element, all allocated for the graph). Eager, the backward allocates no full-size
    buffer beside the gradients it returns (it computes them in place in its temporaries),
    except one when the target's gradient is not needed.
    """

    @staticmethod
    def forward(input1, input2, target, margin, reduction, keep_step):
        out_dtype, ct = _mr_dtypes(input1, input2, target)
        if not ct.is_floating_point:
            # torch's integer arithmetic, then + margin in the default floating dtype
            z = ((-target) * (input1 - input2)).to(out_dtype) + margin
            return R.reduce(z.clamp_min(0), reduction), z.new_empty(0, dtype=torch.bool)
        x1, x2, y = _as(input1, ct), _as(input2, ct), _mr_target(target, ct)
        fast = eager_in_place(x1, x2, y)
        d = _mr_difference(input1, input2, ct) if _integral(input1) and _integral(input2) else x2 - x1
        z = _mul(d, y, fast)  # y·(x2 - x1), bit for bit torch's (-y)·(x1 - x2)
        if fast:
            z = z.add_(margin)
            step = torch.ge(z, 0) if keep_step else z.new_empty(0, dtype=torch.bool)
            loss = z.clamp_min_(0)
        else:
            z = z + margin
            step = z >= 0 if keep_step else z.new_empty(0, dtype=torch.bool)
            loss = z.clamp_min(0)
        return _as(R.reduce(loss, reduction), out_dtype), step

    @staticmethod
    def setup_context(ctx, inputs, output):
        input1, input2, target, margin, reduction, keep_step = inputs
        ctx.margin, ctx.reduction = margin, reduction
        ctx.out_dtype = output[0].dtype
        ctx.mark_non_differentiable(output[1])
        ctx.set_materialize_grads(False)
        ctx.step = bool(keep_step)  # only floating inputs can require grad
        ctx.shapes = (input1.shape, input2.shape)
        if ctx.step:
            ctx.save_for_backward(output[1], target)
        else:
            ctx.save_for_backward(input1, input2, target)
        ctx.save_for_forward(input1, input2, target)

    @staticmethod
    def backward(ctx, grad, _grad_step):
        need_x1, need_x2, need_y = ctx.needs_input_grad[:3]
        if grad is None or not (need_x1 or need_x2 or need_y):
            return None, None, None, None, None, None
        if ctx.step:
            return MarginRankingLossFunction._backward_step(ctx, grad) + (None, None, None, None)
        return MarginRankingLossFunction._backward_inputs(ctx, grad) + (None,)

    @staticmethod
    def _backward_step(ctx, grad):
        r"""``(gx1, gx2)`` from the saved step and target: :math:`\mp y\,s\,g`."""
        step, target = ctx.saved_tensors
        ct = opmath_dtype(ctx.out_dtype)
        g = _per_element(grad, step.shape, ctx.reduction, ct)
        gx2 = (step * _mr_target(target, ct)) * g  # y·s·g, on the broadcast shape
        s1, s2 = ctx.shapes
        gx1 = -gx2 if ctx.needs_input_grad[0] else None
        gx1 = None if gx1 is None else (gx1 if gx1.shape == s1 else gx1.sum_to_size(s1))
        gx2 = (gx2 if gx2.shape == s2 else gx2.sum_to_size(s2)) if ctx.needs_input_grad[1] else None
        return gx1, gx2

    @staticmethod
    def _backward_inputs(ctx, grad):
        input1, input2, target = ctx.saved_tensors
        need_x1, need_x2, need_y = ctx.needs_input_grad[:3]
        ct = opmath_dtype(ctx.out_dtype)
        x1, x2, y = input1.to(ct), input2.to(ct), _mr_target(target, ct)
        fast = eager_in_place(x1, x2, y, grad)
        d = x2 - x1
        shape = broadcast_shape(d.shape, y.shape)
        g = _per_element(grad, shape, ctx.reduction, ct)
        if fast:
            # gz = [y·d + m >= 0]·g, the gradient of z, computed in place in one full-size
            # buffer: d's own when the target's gradient (which needs d) is not wanted
            gz = torch.mul(y, d) if need_y or d.shape != shape else d.mul_(y)
            gz = gz.add_(ctx.margin).ge_(0).mul_(g)
        else:
            gz = ((y * d + ctx.margin) >= 0).to(ct) * g
        # eager, d becomes the target's gradient and gz that of input1 (see below)
        gy = R.sum_to(_mul(d, gz, fast), target) if need_y else None
        gx1 = gx2 = None
        if need_x2:
            gx2 = R.sum_to(y * gz, input2)
        if need_x1:
            if gx2 is not None and input1.shape == input2.shape and input1.dtype == input2.dtype:
                reuse = fast and gz.shape == gx2.shape and gz.dtype == gx2.dtype
                gx1 = torch.neg(gx2, out=gz) if reuse else -gx2
            elif fast:
                gx1 = R.sum_to(_mul(gz, y, fast).neg_(), input1)
            else:
                gx1 = R.sum_to(-(y * gz), input1)
        return gx1, gx2, gy, None, None

    @staticmethod
    def jvp(ctx, t_input1, t_input2, t_target, _m, _r, _k):
        input1, input2, target = ctx.saved_tensors  # the ones saved for forward
        ct = opmath_dtype(ctx.out_dtype)
        x1, x2, y = input1.to(ct), input2.to(ct), _mr_target(target, ct)
        d, z = _mr_hinge_arg(x1, x2, y, ctx.margin)
        t = None  # tangent of z
        if t_input1 is not None:
            t = -(y * t_input1.to(ct))
        if t_input2 is not None:
            t = add_tangents(t, y * t_input2.to(ct))
        if t_target is not None:
            t = add_tangents(t, d * t_target.to(ct))
        if t is None:
            return zero_tangent(z.shape, ctx.reduction, ctx.out_dtype, z), None
        t = (z >= 0).to(ct) * t  # on the full broadcast shape, whichever tangents were given
        return R.reduce(t, ctx.reduction).to(ctx.out_dtype), None


# --------------------------------------------------------------------------------------------
# HingeEmbedding


def _he_terms(x: Tensor, target: Tensor, margin: float, fast: bool) -> tuple[Tensor, Tensor]:
    r"""The two terms of the hinge embedding loss on the broadcast shape:
    :math:`[y \ne 1]\max(0, m - x)` and :math:`[y \ne -1]\,x`.

    torch selects each with ``where``. ``mask * term`` would be NaN where a dropped term is
    infinite (``0 * inf``), where ``where`` gives 0 (``x = +inf`` with target -1 has loss 0 in
    torch), so the masks become clamp bounds instead: with ``drop`` the 0/1 mask of the dropped
    positions, :math:`hi = 1/\text{drop} - 1` is ``+inf`` where the term is kept and 0 where it
    is dropped, and ``clamp(term, -hi, hi)`` is the term or 0 whatever its value, infinities
    included (only ``clamp_max(hi)`` for the non-negative hinge). A NaN stays NaN; the loss is
    NaN there in torch too, as the other term is then NaN as well.

    Eager, this allocates three buffers: the hinge, one target-sized mask (reused for both
    bounds) and the linear term.
    """
    ct = x.dtype
    if margin != margin:
        # a NaN margin: the hinge term is NaN everywhere and a clamp bound cannot drop it;
        # torch's where does (the loss is x where y = 1)
        hinge = torch.where(target == 1, 0.0, (margin - x).clamp_min(0))
        return hinge, torch.where(target == -1, 0.0, x)
    hinge = margin - x
    if fast:
        hinge = hinge.clamp_min_(0)
        bound = _cmp_into(torch.eq, target, 1, dtype=ct)
        bound = bound.reciprocal_().sub_(1)  # hi of the hinge term
        full = hinge.shape == broadcast_shape(hinge.shape, bound.shape)
        hinge = hinge.clamp_max_(bound) if full else hinge.clamp_max(bound)
        bound = _cmp_into(torch.eq, target, -1, bound).reciprocal_().sub_(1)  # hi of the linear term
        linear = torch.clamp_max(x, bound).clamp_min_(bound.neg_())
        return hinge, linear
    hinge = hinge.clamp_min(0).clamp_max((target == 1).to(ct).reciprocal() - 1)
    bound = (target == -1).to(ct).reciprocal() - 1
    return hinge, x.clamp(-bound, bound)


_INF_M = float("inf")


def _he_coeff(x: Tensor, y: Tensor, margin: float, fast: bool, dtype: torch.dtype) -> Tensor:
    r""":math:`\partial\ell/\partial x = [y \ne -1] - [y \ne 1][x \le m]` on the broadcast shape,
    in ``dtype`` (int8 to be saved, or a floating dtype).

    :math:`x \le m` is exactly torch's clamp subgradient :math:`m - x \ge 0` (an IEEE difference
    is 0 only for equal operands, and the comparison casts ``m`` to the dtype of ``x`` as the
    subtraction does).
    """
    if fast and margin not in (_INF_M, -_INF_M):
        # two buffers: the step, which becomes the coefficient, and one target-sized mask
        coeff = _cmp_into(torch.le, x, margin, dtype=dtype)
        mask = _cmp_into(torch.ne, y, 1, dtype=dtype)
        coeff = _mul(coeff, mask, fast)
        return coeff.neg_().add_(_cmp_into(torch.ne, y, -1, mask))
    # [m - x >= 0] (x <= m, except that inf - inf is NaN: no gradient at x = m = ±inf)
    active = ((x <= margin) if margin not in (_INF_M, -_INF_M) else (margin - x >= 0)).to(dtype)
    return (y != -1).to(dtype) - (y != 1).to(dtype) * active


# Below this many elements a call costs its number of operations (1-3 us of dispatch each), not
# its passes over memory: :func:`_he_small` then takes over from the vectorised clamp-bound
# formulation of :func:`_he_terms` and :func:`_he_coeff` (about half the operations, but
# ``masked_fill`` is not vectorised: 2x slower at 4M elements; the two cross near 30K).
_HE_SMALL = 1 << 14


def _he_small(x: Tensor, y: Tensor, margin: float, with_coeff: bool) -> tuple[Tensor, Tensor]:
    r"""``(loss, coeff)`` for small eager inputs of one shape: the element-wise loss, as torch's
    ``where`` selections (``masked_fill`` of the dropped positions: 0 whatever the term, so
    infinities behave as in torch), and, if ``with_coeff``, the int8 coefficient of
    :func:`_he_coeff` (else an empty tensor). Eight operations for the loss, six for the
    coefficient: :math:`[x \le m]`, zeroed where :math:`y = 1`, then
    :math:`1 - [y \ne 1][x \le m] - [y = -1] = [y \ne -1] - [y \ne 1][x \le m]`.
    """
    is_pos, is_neg = y == 1, y == -1
    hinge = (margin - x).clamp_min_(0).masked_fill_(is_pos, 0)
    loss = x.masked_fill(is_neg, 0).add_(hinge)
    if not with_coeff:
        return loss, x.new_empty(0, dtype=torch.int8)
    if margin in (_INF_M, -_INF_M):  # inf - inf is NaN: [m - x >= 0] is 0 at x = m = ±inf
        coeff = torch.ge(margin - x, 0, out=torch.empty(x.shape, dtype=torch.int8, device=x.device))
    else:
        coeff = torch.le(x, margin, out=torch.empty(x.shape, dtype=torch.int8, device=x.device))
    coeff = coeff.masked_fill_(is_pos, 0).neg_().add_(1).add_(is_neg, alpha=-1)
    return loss, coeff


class HingeEmbeddingLossFunction(LossFunction):
    r"""Hinge embedding loss of an input :math:`x` (typically a distance) and a target :math:`y`
    (broadcast together, possibly to a larger shape), with margin :math:`m`:

    .. math::
        \ell = [y \ne 1]\,\max(0, m - x) + [y \ne -1]\,x ,

    so :math:`y = 1` gives :math:`x`, :math:`y = -1` gives :math:`\max(0, m - x)`, and any other
    target value (0, 2, NaN, ...) gives both terms, as torch's composite does.

    **Gradient.** With torch's ``clamp_min`` subgradient :math:`[m - x \ge 0]` (the gradient
    passes at the kink :math:`x = m`):

    .. math::
        \frac{\partial\ell}{\partial x} = [y \ne -1] - [y \ne 1]\,[x \le m] \in \{-1, 0, 1\} .

    The backward is :math:`g_\ell` times this (summed to the input's shape), the tangent
    :math:`\dot\ell` is this times :math:`\dot x`; the second derivative is 0 (the coefficient is
    piecewise constant). The target is used only in comparisons: it is not differentiable (the
    functional passes it detached, so a target that requires grad does not make the loss
    require grad, as in torch).

    **Dtypes.** The result has the dtype of ``input`` (the target's dtype only matters for the
    comparisons; ``'sum'`` of an integer loss is int64, as ``torch.sum``). Integer inputs are
    computed as torch does, in their own dtype with the margin converted to it (truncated:
    ``margin=2.7`` acts as 2 on an int64 input). float16/bfloat16 inputs are computed in
    float32 with the margin unrounded (torch rounds the margin to the input's dtype first; only
    a value exactly at the rounded kink can then differ, by the subgradient).

    **Memory.** When the input requires grad, the Function keeps only the coefficient above, as
    int8 (one byte per element of the loss); torch keeps two bool masks and a float tensor of
    the loss's shape (six bytes per element in float32). The forward selects its two terms
    without ``torch.where`` (see :func:`_he_terms`).
    """

    @staticmethod
    def forward(input, target, margin, reduction, with_coeff):
        if not input.dtype.is_floating_point:
            # torch's composite, in the input's integer dtype (an integer input has no gradient)
            hinge = (input.new_full((), margin) - input).clamp_min(0)
            loss = torch.where(target != 1, hinge, 0) + torch.where(target != -1, input, 0)
            return R.reduce(loss, reduction), loss.new_empty(0, dtype=torch.int8)
        ct = opmath_dtype(input.dtype)
        x = input if input.dtype == ct else input.to(ct)
        fast = eager_in_place(x, target)
        if fast and x.numel() <= _HE_SMALL and target.shape == x.shape:
            loss, coeff = _he_small(x, target, margin, with_coeff)
        else:
            hinge, linear = _he_terms(x, target, margin, fast)
            # both terms have the loss's (broadcast) shape; added before reducing, as torch does
            loss = hinge.add_(linear) if fast else hinge + linear
            coeff = _he_coeff(x, target, margin, fast, torch.int8) if with_coeff else x.new_empty(0, dtype=torch.int8)
        loss = R.reduce(loss, reduction)
        return (loss if loss.dtype == input.dtype else loss.to(input.dtype)), coeff

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, target, margin, reduction, with_coeff = inputs
        coeff = output[1]
        ctx.mark_non_differentiable(coeff)
        ctx.set_materialize_grads(False)
        ctx.margin, ctx.reduction = margin, reduction
        ctx.out_dtype = output[0].dtype
        ctx.input_shape = input.shape
        ctx.has_coeff = ctx.needs_input_grad[0]
        if ctx.has_coeff:
            # The backward and the jvp need only the coefficient ∂ℓ/∂x ∈ {-1, 0, 1}, which is
            # piecewise constant (higher derivatives need nothing more): one int8 per element,
            # instead of the input and the target (torch keeps two bool masks and a float
            # tensor of the loss's shape). The forward computes it alongside the loss when the
            # functional asked for it (``with_coeff``: the input requires grad); otherwise
            # (a transform that makes the input require grad inside) it is computed here.
            if not with_coeff:
                ct = opmath_dtype(input.dtype)
                x = input.to(ct)
                coeff = _he_coeff(x, target, margin, eager_in_place(x, target), torch.int8)
            ctx.save_for_backward(coeff)
            ctx.save_for_forward(coeff)
        else:
            # nothing to differentiate in reverse mode; the jvp (forward mode) recomputes it
            ctx.save_for_forward(input, target)

    @staticmethod
    def _coeff(ctx) -> Tensor:
        if ctx.has_coeff:
            return ctx.saved_tensors[0]
        input, target = ctx.saved_tensors
        ct = opmath_dtype(input.dtype)
        return _he_coeff(input.to(ct), target, ctx.margin, False, ct)

    @staticmethod
    def backward(ctx, grad, _grad_coeff):
        if grad is None or not ctx.needs_input_grad[0]:
            return None, None, None, None, None
        (coeff,) = ctx.saved_tensors
        ct = opmath_dtype(ctx.out_dtype)
        # int8 coefficient times g_ℓ in the compute dtype: exact, one operation
        gx = coeff * _per_element(grad, coeff.shape, ctx.reduction, ct)
        if gx.shape != ctx.input_shape:  # the target broadcast the loss beyond the input
            gx = gx.sum_to_size(ctx.input_shape)
        return (gx if gx.dtype == ctx.out_dtype else gx.to(ctx.out_dtype)), None, None, None, None

    @staticmethod
    def jvp(ctx, t_input, _t_target, _m, _r, _w):
        coeff = HingeEmbeddingLossFunction._coeff(ctx)
        if t_input is None:
            return zero_tangent(coeff.shape, ctx.reduction, ctx.out_dtype, coeff), None
        ct = opmath_dtype(ctx.out_dtype)
        return R.reduce(coeff * t_input.to(ct), ctx.reduction).to(ctx.out_dtype), None


# --------------------------------------------------------------------------------------------
# CosineEmbedding


def _cos_dtypes(input1: Tensor, input2: Tensor) -> tuple[torch.dtype, torch.dtype]:
    """``(result, compute)``: the promoted dtype of the inputs, or the default floating dtype
    when it is integral or bool (torch adds the float EPSILON to integer sums)."""
    dtype = input1.dtype
    if input2.dtype == dtype and dtype in (torch.float32, torch.float64):
        return dtype, dtype  # the usual call: no promotion to work out
    # torch's p / sqrt(q1 q2): p has the inputs' promoted dtype; an integer (or bool) input's
    # squared norm is an integer sum plus the float EPSILON, of the default dtype
    promoted = result_type(input1, input2)
    default = torch.get_default_dtype()
    if _integral(input1) or _integral(input2):
        promoted = default if _integral(input1) and _integral(input2) else torch.promote_types(promoted, default)
    return promoted, opmath_dtype(promoted)


def _cos_stats(
    input1: Tensor, input2: Tensor, ct: torch.dtype, fast: bool = False
) -> tuple[Tensor, Tensor, Tensor]:
    r"""The per-sample statistics :math:`p = \sum x_1 x_2`, :math:`q_1 = \sum x_1^2 + \varepsilon`,
    :math:`q_2 = \sum x_2^2 + \varepsilon` over the last (feature) dimension, in ``ct``.

    The same element-wise products and sums as torch (so that, for example, identical rows give
    :math:`p = q_1 - \varepsilon` exactly and a cosine of exactly 1). Each squared norm runs over
    its own input's features: an ``(N, 1)`` input against an ``(N, D)`` one has
    :math:`q_1 = x_1^2` while :math:`p` sums over the broadcast D (torch's rule, reproduced).
    Integer and bool inputs are multiplied and summed in their integer dtype, as torch does, and
    converted afterwards.
    """
    if _integral(input1) or _integral(input2):
        # torch adds EPSILON to an integer input's squared norm in the default dtype
        default = torch.get_default_dtype()

        def square(x: Tensor) -> Tensor:
            if _integral(x):
                return _as((x * x).sum(-1).to(default) + EPSILON, ct)
            x = _as(x, ct)
            return (x * x).sum(-1) + EPSILON

        if _integral(input1) and _integral(input2):
            p = (input1 * input2).sum(-1).to(ct)
        else:
            p = (_as(input1, ct) * _as(input2, ct)).sum(-1)
        return p, square(input1), square(input2)
    a, b = _as(input1, ct), _as(input2, ct)
    if fast and a.shape == b.shape:
        # one product buffer for the three sums
        buf = a * b
        p = buf.sum(-1)
        q1 = torch.mul(a, a, out=buf).sum(-1) + EPSILON
        return p, q1, torch.mul(b, b, out=buf).sum(-1) + EPSILON
    return (a * b).sum(-1), (a * a).sum(-1) + EPSILON, (b * b).sum(-1) + EPSILON


def _cos_of(p: Tensor, q1: Tensor, q2: Tensor) -> tuple[Tensor, Tensor]:
    r"""``(c, d)``: the cosine :math:`c = p / d` and its denominator :math:`d = \sqrt{q_1 q_2}`.

    :math:`\sqrt{q_1 q_2}` is torch's expression (kept so that the cosine agrees with torch's bit
    for bit); where the product overflows (norms beyond about :math:`10^{19}` in float32) it is
    :math:`\sqrt{q_1}\sqrt{q_2}` instead, which is finite, so the cosine stays right where
    torch's drops to 0. Both are per-sample, O(N), operations.
    """
    prod = q1 * q2
    d = torch.where(torch.isinf(prod), q1.sqrt() * q2.sqrt(), prod.sqrt())
    return p / d, d


def _cos_loss(c: Tensor, pos: Tensor, neg: Tensor, margin: float) -> tuple[Tensor, Tensor]:
    """``(loss, h)``: the per-sample loss, ``1 - c`` where ``y == 1`` (``pos``), ``max(0, c -
    margin)`` where ``y == -1`` (``neg``), 0 elsewhere, and :math:`h = c - m` (per sample:
    O(N)). torch adds ``where(pos, 1 - c, 0)`` and ``where(neg, max(0, h), 0)``; at most one
    of them is not 0, so nesting the selections gives the same numbers in one operation less."""
    h = c - margin
    return torch.where(pos, 1 - c, torch.where(neg, h.clamp_min(0), 0)), h


def _cos_dloss(c: Tensor, y: Tensor, margin: float, h: Tensor | None = None, pos=None, neg=None) -> Tensor:
    r""":math:`\partial\ell/\partial c`: -1 where ``y == 1``, :math:`[c - m \ge 0]` where
    ``y == -1`` (torch's clamp subgradient; 0 for a NaN), 0 elsewhere; piecewise constant.
    (``h = c - m`` and the masks ``y == ±1`` when the caller has them.)"""
    h = c - margin if h is None else h
    pos = y == 1 if pos is None else pos
    neg = y == -1 if neg is None else neg
    return (neg & (h >= 0)).to(c.dtype) - pos.to(c.dtype)


def _cos_weights(dloss: Tensor, c: Tensor, d: Tensor, q1: Tensor, q2: Tensor) -> Tensor:
    r"""The first-order backward's per-sample coefficients per unit of upstream gradient,
    :math:`\partial\ell/\partial c \cdot (1/d,\; c/q_1,\; c/q_2)`, stacked on a new first
    dimension and as columns (``(3, *batch, 1)``), so that the backward is one product with
    :math:`g_\ell` and two ``addcmul``."""
    dc = dloss * c
    parts = (dloss, dc, dc, d, q1, q2)
    shape = dc.shape
    if not (d.shape == shape and q1.shape == shape and q2.shape == shape):
        parts = torch.broadcast_tensors(*parts)
    return (torch.stack(parts[:3]) / torch.stack(parts[3:])).unsqueeze(-1)


def _as_like(g: Tensor | None, like: Tensor) -> Tensor | None:
    return g if g is None or g.dtype == like.dtype else g.to(like.dtype)


def _col(t: Tensor) -> Tensor:
    """A per-sample quantity as a column, broadcasting along the features."""
    return t.unsqueeze(-1)


def _sum_to_shape(t: Tensor, shape) -> Tensor:
    """``t`` brought to ``shape``: summed over the dimensions ``shape`` was broadcast along, and
    expanded (a view) along those where ``t`` is the smaller one. The dtype is kept."""
    full = broadcast_shape(t.shape, shape)
    if t.shape != full:
        t = t.expand(full)
    return t.sum_to_size(shape) if full != shape else t


def _input_grad(u: Tensor, other: Tensor, v: Tensor, own: Tensor, like: Tensor, fast: bool, cols: bool = False) -> Tensor:
    """``u[:, None] * other - v[:, None] * own``, each term brought to ``like``'s shape.

    The two terms are summed back separately when their shapes differ: the second comes from
    :math:`q_i`, which runs over the input's own features, so it must not be summed over a
    feature dimension along which only the *other* input was broadcast (an ``(N, 1)`` input);
    the first comes from :math:`p`, over the broadcast features. When the shapes agree (the
    usual case) it is one expression, in one temporary when eager. (``cols``: ``u`` and ``v``
    are columns already.)
    """
    uc, vc = (u, v) if cols else (_col(u), _col(v))
    first = broadcast_shape(uc.shape, other.shape)
    if first != broadcast_shape(vc.shape, own.shape, like.shape):
        # summed separately, subtracted in the compute dtype, rounded once
        diff = _sum_to_shape(other * uc, like.shape) - _sum_to_shape(own * vc, like.shape)
        return R.sum_to(diff, like)
    out = other * uc
    out = out.addcmul_(own, vc, value=-1) if fast else out - own * vc
    return R.sum_to(out, like)


class CosineEmbeddingLossFunction(LossFunction):
    r"""Cosine embedding loss of two batches of vectors :math:`x_1, x_2` (``(N, D)``, or ``(D)``
    for one pair) and per-sample targets :math:`y`, with margin :math:`m`:

    .. math::
        c = \frac{p}{d}, \quad p = \sum_j x_{1j} x_{2j}, \quad d = \sqrt{q_1 q_2}, \quad
        q_i = \sum_j x_{ij}^2 + \varepsilon, \qquad
        \ell = \begin{cases} 1 - c & y = 1 \\ \max(0, c - m) & y = -1 \\ 0 & \text{otherwise,}
        \end{cases}

    with torch's :math:`\varepsilon = 10^{-12}` (a float32 constant: :data:`EPSILON`) added to
    each squared norm (a zero vector has cosine 0, so loss 1 for :math:`y = 1`). The inputs
    broadcast against each other and the target against the batch.

    **Gradients.** :math:`\partial p/\partial x_1 = x_2`, :math:`\partial q_1/\partial x_1 =
    2 x_1` (the constant :math:`\varepsilon` drops out) and
    :math:`\partial d/\partial x_1 = d\,x_1/q_1`, so

    .. math::
        \frac{\partial c}{\partial x_1} = \frac{x_2}{d} - \frac{c}{q_1}\,x_1, \qquad
        \frac{\partial c}{\partial x_2} = \frac{x_1}{d} - \frac{c}{q_2}\,x_2 .

    With :math:`k = g_n\,\partial\ell/\partial c`, where :math:`\partial\ell/\partial c` is
    :math:`-1` (:math:`y = 1`), :math:`[c - m \ge 0]` (:math:`y = -1`, torch's clamp
    subgradient) or 0, the backward is

    .. math::
        \nabla_{x_1} = \frac{k}{d}\,x_2 - \frac{k c}{q_1}\,x_1, \qquad
        \nabla_{x_2} = \frac{k}{d}\,x_1 - \frac{k c}{q_2}\,x_2

    (each term summed to the input's shape where it was broadcast: the first over the
    broadcast shape of :math:`p`, the second over the input's own, that of :math:`q_i`), and the
    tangent is
    :math:`\dot\ell = \partial\ell/\partial c \cdot \dot c` with

    .. math::
        \dot c = \frac{\dot p}{d} - c\Big(\frac{\sum_j x_{1j}\dot x_{1j}}{q_1}
            + \frac{\sum_j x_{2j}\dot x_{2j}}{q_2}\Big), \qquad
        \dot p = \sum_j (\dot x_{1j} x_{2j} + x_{1j}\dot x_{2j}) .

    Double backward differentiates the backward's expressions (through :math:`c, d, q_i`, the
    coefficient :math:`\partial\ell/\partial c` being piecewise constant). The target is a
    selector only, not differentiable (the functional passes it detached, as torch's output does
    not depend on it).

    **Memory.** When a gradient will be wanted (``with_grad``, from the functional), the forward
    also returns, as non-differentiable outputs, four per-sample numbers: the backward's
    coefficients per unit of upstream gradient, :math:`\partial\ell/\partial c \cdot (1/d,\;
    c/q_1,\; c/q_2)` (:func:`_cos_weights`), and :math:`\partial\ell/\partial c` itself; the
    Function keeps them and the inputs (not the target): O(N) numbers that spare the
    first-order backward every per-sample recomputation (it is one product with :math:`g_\ell`
    and two ``addcmul``, about a third of the operations: at the small sizes the cost of a call
    is its number of operations). A backward that is itself differentiated (or traced, or run
    under a transform) recomputes :math:`p, q_i, c, d` from the inputs instead, so that higher
    derivatives differentiate through them (:math:`\partial\ell/\partial c` is piecewise
    constant: the saved one is exact). Without ``with_grad`` the target is kept instead. torch's
    composite keeps the inputs as well, plus per-sample float intermediates and two masks (22
    bytes per sample in float32, against torchloss's 16).

    **Numerics.** float16/bfloat16 are computed in float32 (torch's float16 computation loses
    :math:`\varepsilon` and gives NaN for a zero vector); :math:`d` avoids the overflow of
    :math:`q_1 q_2` (:func:`_cos_of`). Integer and bool inputs are multiplied and summed in their
    own dtype as torch does. The result has the promoted dtype of the inputs (the default
    floating dtype for integer inputs); ``'none'`` gives ``(N,)`` or ``()``.
    """

    @staticmethod
    def forward(input1, input2, target, margin, reduction, with_grad):
        out_dtype, ct = _cos_dtypes(input1, input2)
        p, q1, q2 = _cos_stats(input1, input2, ct, eager_in_place(input1, input2))
        c, d = _cos_of(p, q1, q2)
        pos, neg = target == 1, target == -1
        loss, h = _cos_loss(c, pos, neg, margin)
        loss = _as(R.reduce(loss, reduction), out_dtype)
        if not with_grad:
            return loss, c.new_empty(0), c.new_empty(0)
        # what the first-order backward needs per sample: its coefficients, and ∂ℓ/∂c (for a
        # backward that is differentiated, which recomputes the rest)
        dloss = (neg & (h >= 0)).to(c.dtype).masked_fill_(pos, -1)  # (_cos_dloss)
        return loss, _cos_weights(dloss, c, d, q1, q2), dloss

    @staticmethod
    def setup_context(ctx, inputs, output):
        input1, input2, target, margin, reduction, with_grad = inputs
        loss, weights, dloss = output
        ctx.mark_non_differentiable(weights, dloss)
        ctx.set_materialize_grads(False)
        ctx.margin, ctx.reduction = margin, reduction
        ctx.out_dtype = loss.dtype
        ctx.with_grad = with_grad
        # with ∂ℓ/∂c and the coefficients, the backward needs no target
        if with_grad:
            ctx.save_for_backward(input1, input2, weights, dloss)
        else:
            ctx.save_for_backward(input1, input2, target)
        ctx.save_for_forward(input1, input2, target)

    @staticmethod
    def backward(ctx, grad, _grad_weights, _grad_dloss):
        input1, input2, *saved = ctx.saved_tensors
        need_x1, need_x2 = ctx.needs_input_grad[:2]
        if grad is None or not (need_x1 or need_x2):
            return None, None, None, None, None, None
        ct = opmath_dtype(ctx.out_dtype)
        a, b = _as(input1, ct), _as(input2, ct)
        fast = eager_in_place(a, b, saved[0], grad)
        if fast and ctx.with_grad:
            # First order, from the forward's coefficients: one product with g_ℓ, then each
            # input's gradient is two products (u, v are columns already)
            weights = saved[0]
            g = _per_element(grad, weights.shape[1:-1], ctx.reduction, ct)
            u, v1, v2 = (weights * (g if g.dim() == 0 else g.unsqueeze(-1))).unbind(0)
            shape = a.shape
            if b.shape == shape and u.shape[:-1] == shape[:-1]:
                # the usual call (nothing broadcast): u x_other - v x_own, in one buffer each
                gx1 = torch.mul(b, u).addcmul_(a, v1, value=-1) if need_x1 else None
                gx2 = torch.mul(a, u).addcmul_(b, v2, value=-1) if need_x2 else None
                return _as_like(gx1, input1), _as_like(gx2, input2), None, None, None, None
            gx1 = _input_grad(u, b, v1, a, input1, fast, True) if need_x1 else None
            gx2 = _input_grad(u, a, v2, b, input2, fast, True) if need_x2 else None
            return gx1, gx2, None, None, None, None
        # recomputed from the inputs, so that a differentiated backward differentiates them
        p, q1, q2 = _cos_stats(input1, input2, ct)
        c, d = _cos_of(p, q1, q2)
        # ∂ℓ/∂c is piecewise constant: the forward's (a constant) is exact
        dloss = saved[1] if ctx.with_grad else _cos_dloss(c, saved[0], ctx.margin)
        k = dloss * _per_element(grad, dloss.shape, ctx.reduction, ct)
        u, kc = k / d, k * c
        v1, v2 = kc / q1, kc / q2
        gx1 = _input_grad(u, b, v1, a, input1, fast) if need_x1 else None
        gx2 = _input_grad(u, a, v2, b, input2, fast) if need_x2 else None
        return gx1, gx2, None, None, None, None

    @staticmethod
    def jvp(ctx, t_input1, t_input2, _t_target, _m, _r, _w):
        input1, input2, target = ctx.saved_tensors
        ct = opmath_dtype(ctx.out_dtype)
        # recomputed (not the saved statistics): this runs inside forward-mode transforms
        p, q1, q2 = _cos_stats(input1, input2, ct)
        c, d = _cos_of(p, q1, q2)
        dloss = _cos_dloss(c, target, ctx.margin)
        a, b = input1.to(ct), input2.to(ct)
        # dp = ṗ; rel = Σ x1 ẋ1 / q1 + Σ x2 ẋ2 / q2 = (q̇1/q1 + q̇2/q2) / 2
        dp = rel = None
        if t_input1 is not None:
            ta = t_input1.to(ct)
            dp = (ta * b).sum(-1)
            rel = (a * ta).sum(-1) / q1
        if t_input2 is not None:
            tb = t_input2.to(ct)
            dp = add_tangents(dp, (a * tb).sum(-1))
            rel = add_tangents(rel, (b * tb).sum(-1) / q2)
        if dp is None:
            return zero_tangent(dloss.shape, ctx.reduction, ctx.out_dtype, dloss), None, None
        t = dloss * (dp / d - c * rel)
        return R.reduce(t, ctx.reduction).to(ctx.out_dtype), None, None
