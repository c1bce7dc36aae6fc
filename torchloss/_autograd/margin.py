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
exactly at a kink :math:`z = 0` the gradient is 0, as in torch's kernels. The step is evaluated
as ``where(z > 0, sign(z), 0)``, whose value is exactly :math:`[z > 0]` and whose derivative is
0; unlike a bare boolean mask it keeps the backward attached to :math:`x` in the autograd graph,
so the (zero) second derivative of a piecewise-linear loss comes back as zeros from double
backward and forward-over-reverse instead of "does not require grad". (MultiLabelMargin, whose
pairwise tensors are large, computes the same step in place; see its ``_coeff``.)

Numerics shared by the three:

* float16/bfloat16 are computed in float32 (:func:`~torchloss._autograd._base.opmath`) and
  rounded once. torch's CPU kernels of the two hinge losses do not support half precision at all
  (its CUDA kernels do); torchloss supports it on every device.
* The hinge argument :math:`z` is formed in torch's order of operations,
  ``(margin - x[y]) + x[i]``, so that the sign of :math:`z`, and hence which terms are active,
  agrees with torch bit for bit, including at exact kinks.
* The backward recomputes everything from the saved *inputs*, in differentiable torch ops, so it
  is itself differentiable (double backward, forward-over-reverse).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .. import _reduction as R
from ._base import (
    LossFunction,
    add_tangents,
    broadcast_shape,
    opmath,
    opmath_dtype,
    result_type,
    unpack,
    zero_tangent,
)
from .binary import _softplus


def _as_rows(t: Tensor) -> Tensor:
    """A ``()``, ``(C)`` or ``(N, C)`` tensor as an ``(N, C)`` matrix (a 0-d one has C = 1)."""
    return t.reshape(-1, t.shape[-1] if t.dim() else 1)


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
        slope = slope * w_y
    slope = slope / c
    # every active term pulls x[y] down by what it pushes x[i] up
    target = (torch.arange(c, device=x.device) == y).to(slope.dtype)
    return slope - target * slope.sum(1, keepdim=True)


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

    ``target`` holds class indices (not differentiable); ``weight`` is not differentiable
    (torch's rule: the functional refuses a weight that requires grad, and the jvp drops a
    weight tangent). The range check of the target is done by the functional. The result has
    the dtype of ``input``; ``'none'`` gives the shape of ``target`` (``()`` or ``(N,)``).
    """

    @staticmethod
    def forward(input, target, weight, p, margin, reduction):
        x = opmath(_as_rows(input))
        y = target.reshape(-1, 1)
        z, other = _mm_hinge(x, y, margin)
        h = torch.where(other & (z > 0), z, 0.0)
        if p == 2:
            h = h * h
        if weight is not None:
            h = h * opmath(weight)[y]  # w_y, per term as in torch's kernel
        loss = (h.sum(1) / x.shape[1]).reshape(target.shape)
        return R.reduce(loss, reduction).to(input.dtype)

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
        coeff = MultiMarginLossFunction._coeff(ctx, input, target, weight)
        g = _per_sample_grad(grad, coeff.shape[0], ctx.reduction, coeff.dtype)
        gx = (g * coeff).reshape(input.shape).to(input.dtype)
        return gx, None, None, None, None, None

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


def _ml_pairs(x: Tensor, target: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The pairwise hinge arguments of MultiLabelMargin, for ``x`` and ``target`` of shape (N, C).

    Returns ``labels`` (N, C), the target with the ``-1`` entries made valid indices; ``z``
    (N, C, C), ``z[n, k, i] = 1 - x[n, labels[n, k]] + x[n, i]``; and ``skip`` (N, C, C), false
    exactly where position ``k`` holds a label (it comes before the first ``-1``) and class ``i``
    is not a label of the row: only those pairs enter the loss. (The complement is returned
    because ``masked_fill_`` takes it without another (N, C, C) temporary.)
    """
    is_pos = (target < 0).cumsum(1) == 0  # position k comes before the first -1
    labels = target.clamp_min(0)
    # class i is a label iff some labelled position names it (counted, so duplicates are fine)
    hits = torch.zeros_like(labels).scatter_add(1, labels, is_pos.to(labels.dtype))
    is_label = hits > 0
    z = (1 - x.gather(1, labels)).unsqueeze(2) + x.unsqueeze(1)
    skip = (~is_pos).unsqueeze(2) | is_label.unsqueeze(1)
    return labels, z, skip


class MultiLabelMarginLossFunction(LossFunction):
    r"""Multi-label hinge loss of a row :math:`x \in \mathbb R^C` whose target row lists the label
    classes :math:`t_1, t_2, \dots` up to the first :math:`-1` (the entries after it are ignored):

    .. math::
        \ell = \frac{1}{C} \sum_{k \in K} \sum_{i \notin J} \max(0, z_{ki}), \qquad
        z_{ki} = 1 - x_{t_k} + x_i,

    where :math:`K` is the set of positions before the terminator and :math:`J = \{t_k : k \in
    K\}` the label set. A duplicated label is a second position :math:`k` and is counted twice;
    a row starting with :math:`-1` has no labels and loss 0, and so does a row whose labels
    cover every class.

    **Gradient.** With the active pairs :math:`a_{ki} = [k \in K][i \notin J][z_{ki} > 0]`
    (strict, as torch), :math:`\partial z_{ki}/\partial x_i = 1` and
    :math:`\partial z_{ki}/\partial x_{t_k} = -1`:

    .. math::
        \frac{\partial \ell}{\partial x_c} = \frac{1}{C}\Big(\sum_{k} a_{kc}
            \;-\; \sum_{k:\, t_k = c}\; \sum_i a_{ki}\Big),

    the first sum for a non-label class :math:`c`, the second for a label class (the two never
    overlap). The backward is :math:`g_n` times this row, the jvp its dot product with the
    tangent. The loss is piecewise linear, so its second derivative is 0 (double backward and
    forward-over-reverse return zeros; torch implements neither, nor forward AD).

    **Cost.** The formulation is vectorised over all (position, class) pairs, whatever the
    number of labels: forward, backward and jvp each take :math:`O(N C^2)` time and build ``z``
    of shape ``(N, C, C)`` in the compute dtype plus (N, C, C) boolean masks, updated in place
    where that saves a temporary. Measured peak temporary memory for ``N = 64``, ``C = 1000`` in
    float32: about 0.31 GB for the forward and 0.37 GB for the backward (:math:`\approx 5 N C^2`
    and :math:`6 N C^2` bytes). torch's kernel loops over the labels instead: :math:`O(N |J| C)`
    time and :math:`O(NC)` memory, which is much faster for few labels among many classes (10
    labels of 1000, forward + backward on a CPU: ~280 ms against ~4 ms; 5 of 100: ~2 ms against
    0.2 ms). Fine for the usual tens to hundreds of classes; chunk the batch for very wide label
    spaces.

    The target is not differentiable (class indices); its range check (every entry in
    ``[-1, C-1]``, even after the terminator) is done by the functional. The result has the
    dtype of ``input``; ``'none'`` gives ``(N,)`` for a matrix input and ``()`` otherwise.
    """

    @staticmethod
    def forward(input, target, reduction):
        x = opmath(_as_rows(input))
        _, z, skip = _ml_pairs(x, target.reshape(x.shape))
        # max(0, z) on the pairs, in place on z (the forward is not differentiated)
        hinge = z.masked_fill_(skip, 0).clamp_min_(0)
        loss = (hinge.sum((1, 2)) / x.shape[1]).reshape(input.shape[:-1])
        return R.reduce(loss, reduction).to(input.dtype)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, target, reduction = inputs
        ctx.reduction = reduction
        ctx.out_dtype = output.dtype
        ctx.save_for_backward(input, target)
        ctx.save_for_forward(input, target)

    @staticmethod
    def _coeff(input: Tensor, target: Tensor) -> Tensor:
        x = opmath(_as_rows(input))
        labels, z, skip = _ml_pairs(x, target.reshape(x.shape))
        # a[n, k, i], the strict step of _step() computed in place on temporaries, to save two
        # (N, C, C) tensors: zero the inactive entries (NaN counts as inactive, as torch's
        # `if (z > 0)`), then sign() turns the rest into exactly 1 while keeping a
        # (zero-derivative) link to x. In place is safe under autograd: neither masked_fill_ nor
        # sign_ needs its input's value for its derivative, nor does the addition that made z.
        # (The in-place updates go into the tensors that depend on x *and* target, which vmap
        # requires: a tensor updated in place must be batched wherever its operand is.)
        inactive = (z > 0).logical_not_().logical_or_(skip)
        active = z.masked_fill_(inactive, 0).sign_()
        pushed_up = active.sum(1)  # Σ_k a_ki, for each non-label class i
        pulled_down = torch.zeros_like(x).scatter_add(1, labels, active.sum(2))
        return (pushed_up - pulled_down) / x.shape[1]

    @staticmethod
    def backward(ctx, grad):
        input, target = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None
        coeff = MultiLabelMarginLossFunction._coeff(input, target)
        g = _per_sample_grad(grad, coeff.shape[0], ctx.reduction, coeff.dtype)
        return (g * coeff).reshape(input.shape).to(input.dtype), None, None

    @staticmethod
    def jvp(ctx, t_input, _t_target, _r):
        input, target = ctx.saved_tensors
        if t_input is None:
            return zero_tangent(input.shape[:-1], ctx.reduction, ctx.out_dtype, input)
        coeff = MultiLabelMarginLossFunction._coeff(input, target)
        t = (coeff * _as_rows(t_input).to(coeff.dtype)).sum(1).reshape(input.shape[:-1])
        return R.reduce(t, ctx.reduction).to(ctx.out_dtype)


# --------------------------------------------------------------------------------------------
# MultiLabelSoftMargin


def _mlsm_dx(x: Tensor, y: Tensor) -> Tensor:
    # (1-y)·σ(x) - y·σ(-x) = σ(x) - y, with each sigmoid evaluated where it is small, so it does
    # not cancel for large |x| (x = 40, y = 1 gives -4e-18 rather than 0).
    return (1 - y) * torch.sigmoid(x) - y * torch.sigmoid(-x)


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

    ``input``, ``target`` and ``weight`` are all differentiable (integer targets and weights
    are used as numbers). The result has torch's promoted dtype of the three.
    """

    @staticmethod
    def forward(input, target, weight, reduction):
        out_dtype = result_type(*(t for t in (input, target, weight) if t is not None))
        ct = opmath_dtype(out_dtype)
        x, y = input.to(ct), target.to(ct)
        # sp(±x) = max(±x, 0) + log1p(exp(-|x|)): the log1p term is shared by both.
        tail = torch.log1p(torch.exp(-x.abs()))
        loss = y * (x.neg().clamp_min(0) + tail) + (1 - y) * (x.clamp_min(0) + tail)
        if weight is not None:
            loss = loss * weight.to(ct)
        return R.reduce(_per_class_mean(loss, input), reduction).to(out_dtype)

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
        if w is not None:
            g = g * w
        gx = _sum_to(g * _mlsm_dx(x, y), shape, input) if need_x else None
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
