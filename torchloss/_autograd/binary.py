r"""Binary losses: BCE on probabilities, BCE on logits, and the soft margin loss.

Each element-wise loss :math:`\ell` lives on the shape of ``input`` (targets, weights and
``pos_weight`` broadcast *into* it; the functionals check that), and is reduced inside the
Function by :func:`torchloss._reduction.reduce`. With the upstream gradient :math:`g` of the
reduced value, :func:`~torchloss._reduction.unreduce` gives :math:`g_\ell = \partial L/\partial\ell`
(``g``, or ``g / numel`` for ``'mean'``), and every gradient below is :math:`g_\ell` times the
element-wise partial derivative. The jvp runs the same chain rule forwards:
:math:`\dot L = \operatorname{reduce}\big(\sum_a \partial\ell/\partial a \cdot \dot a\big)`.

Notation: :math:`\sigma(z) = 1/(1+e^{-z})`, and :math:`\operatorname{sp}(z) = \log(1+e^z)`
(softplus), so that :math:`-\log\sigma(z) = \operatorname{sp}(-z)`,
:math:`\operatorname{sp}'(z) = \sigma(z)`, :math:`\operatorname{sp}(z) - \operatorname{sp}(-z) = z`
and :math:`\sigma(z) + \sigma(-z) = 1`.

Numerical choices shared by the three:

* float16/bfloat16 are computed in float32 (:func:`~torchloss._autograd._base.opmath`) and
  rounded once; a floating weight of higher precision than the input raises the compute dtype to
  its own (torch multiplies by it in the promoted dtype too).
* softplus is evaluated as ``max(z, 0) + log1p(exp(-|z|))``: no overflow, no cancellation. Where
  autograd differentiates it (inside a backward, for double backward and forward-over-reverse) it
  is ``torch.logaddexp(z, 0)``, the same value, whose derivative is :math:`\sigma(z)` everywhere,
  including at :math:`z = 0`, where the ``max``/``abs`` form would give autograd's subgradient 0
  instead of 1/2.
* the backward recomputes everything from the saved *inputs*, so it is itself differentiable.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .. import _reduction as R
from ._base import LossFunction, add_tangents, opmath_dtype, unpack, zero_tangent

# torch's BCE backward clamps x(1-x) at a float32 1e-12 (9.99999996e-13 when seen in float64).
_BCE_EPS = float(torch.tensor(1e-12, dtype=torch.float32))
# torch's BCE forward clamps each log at -100 (so x = 0 or 1 gives a finite loss).
_LOG_MIN = -100.0


def compute_dtype(base: torch.dtype, *extra: Tensor | None) -> torch.dtype:
    """``base`` in opmath precision, promoted by any floating ``extra`` tensor of higher
    precision. Integer and bool weights are used as numbers in the compute dtype."""
    dtype = opmath_dtype(base)
    for t in extra:
        if t is not None and t.dtype.is_floating_point:
            dtype = torch.promote_types(dtype, t.dtype)
    return dtype


def _cast(t: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    return None if t is None else t.to(dtype)


def _softplus(z: Tensor) -> Tensor:
    """``log(1 + e^z)`` with an everywhere-exact autograd derivative (see the module notes)."""
    return torch.logaddexp(z, z.new_zeros(()))


# --------------------------------------------------------------------------------------------
# BCE on probabilities


def _bce_elementwise(x: Tensor, y: Tensor) -> Tensor:
    # -[y·max(log x, -100) + (1-y)·max(log(1-x), -100)], written as torch's kernel groups it so
    # that the signed zeros agree (x = y = 1 gives -0.0). log1p(-x) is exact for tiny x, where
    # log(1 - x) would round 1 - x first.
    log_x = torch.log(x).clamp_min(_LOG_MIN)
    log_1mx = torch.log1p(-x).clamp_min(_LOG_MIN)
    return (y - 1) * log_1mx - y * log_x


def _bce_dx(x: Tensor, y: Tensor) -> Tensor:
    # (x - y) / max(x(1-x), eps): torch's derivative, which ignores the forward's -100 clamp.
    return (x - y) / (x * (1 - x)).clamp_min(_BCE_EPS)


def _bce_dy(x: Tensor) -> Tensor:
    # -(log x - log(1-x)) = -logit(x), unclamped: ±inf at x ∈ {1, 0}, as in torch.
    return -torch.logit(x)


class BCELossFunction(LossFunction):
    r"""Binary cross entropy of probabilities :math:`x \in [0, 1]` and targets :math:`y \in [0, 1]`:

    .. math::
        \ell = -w\,\big[\,y\,\max(\log x, -100) + (1-y)\max(\log(1-x), -100)\,\big].

    **Input gradient.** Away from the clamps,
    :math:`\partial\ell/\partial x = -w\,[\,y/x - (1-y)/(1-x)\,]
    = -w\,\frac{y(1-x) - (1-y)x}{x(1-x)} = w\,\frac{x - y}{x(1-x)}`.
    As in torch, the denominator is clamped, :math:`\max(x(1-x), 10^{-12})` (the float32
    constant), so the gradient stays finite at :math:`x \in \{0, 1\}`, and the forward's
    :math:`-100` clamp is *not* differentiated (at :math:`x = 0, y = 1` the gradient is about
    :math:`-10^{12}`, not 0): torchloss matches torch's numbers here rather than the derivative
    of its own clamped forward, so that training behaves identically.

    **Target gradient.** :math:`\partial\ell/\partial y = -w\,[\log x - \log(1-x)]
    = -w\,\operatorname{logit}(x)`, with unclamped logs (±inf at :math:`x \in \{1, 0\}`), as torch.

    **Second derivatives** (double backward differentiates the two expressions above):
    :math:`\partial^2\ell/\partial x^2 = w\,\frac{x^2 + y - 2xy}{x^2(1-x)^2}` (zero where the
    clamp is active), :math:`\partial^2\ell/\partial x\,\partial y = -w/(x(1-x))`,
    :math:`\partial^2\ell/\partial y^2 = 0`.

    ``weight`` is not differentiable (torch's rule): the functional refuses a weight that
    requires grad, and the jvp ignores a weight tangent, as ``torch.func.jvp`` of torch's loss
    does. The range checks on ``x`` and ``y`` happen in the functional (they need the values).
    The result has the dtype of ``input`` (which equals that of ``target``).
    """

    @staticmethod
    def forward(input, target, weight, reduction):
        ct = compute_dtype(input.dtype, weight)
        loss = _bce_elementwise(input.to(ct), target.to(ct))
        if weight is not None:
            loss = loss * weight.to(ct)
        return R.reduce(loss, reduction).to(input.dtype)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, target, weight, reduction = inputs
        ctx.reduction = reduction
        ctx.out_dtype = output.dtype
        tensors = (input, target) if weight is None else (input, target, weight)
        ctx.save_for_backward(*tensors)
        ctx.save_for_forward(*tensors)

    @staticmethod
    def backward(ctx, grad):
        input, target, weight = unpack(ctx, 3)
        need_x, need_y = ctx.needs_input_grad[:2]
        ct = compute_dtype(input.dtype, weight)
        x, y, w = input.to(ct), target.to(ct), _cast(weight, ct)
        g = R.unreduce(grad.to(ct), x.shape, ctx.reduction)
        if w is not None:
            g = g * w
        gx = R.sum_to(g * _bce_dx(x, y), input) if need_x else None
        gy = R.sum_to(g * _bce_dy(x), target) if need_y else None
        return gx, gy, None, None

    @staticmethod
    def jvp(ctx, t_input, t_target, _t_weight, _r):
        input, target, weight = unpack(ctx, 3)
        ct = compute_dtype(input.dtype, weight)
        x, y = input.to(ct), target.to(ct)
        t_loss = None
        if t_input is not None:
            t_loss = _bce_dx(x, y) * t_input.to(ct)
        if t_target is not None:
            t_loss = add_tangents(t_loss, _bce_dy(x) * t_target.to(ct))
        if t_loss is None:  # only the (non-differentiable) weight carried a tangent
            return zero_tangent(x.shape, ctx.reduction, ctx.out_dtype, input)
        if weight is not None:
            t_loss = t_loss * weight.to(ct)
        return R.reduce(t_loss, ctx.reduction).to(ctx.out_dtype)


# --------------------------------------------------------------------------------------------
# BCE on logits


def _bcel_dx(x: Tensor, y: Tensor, pw: Tensor | None) -> Tensor:
    # (1-y)·σ(x) - pw·y·σ(-x). Equal to torch's σ(x)(pw·y + 1 - y) - pw·y, but each sigmoid is
    # evaluated where it is small, so σ(x) - 1 never cancels (x = 40, y = 1 gives -4e-18, not 0).
    pos = y * torch.sigmoid(-x)
    if pw is not None:
        pos = pos * pw
    return (1 - y) * torch.sigmoid(x) - pos


def _bcel_dy(x: Tensor, pw: Tensor | None) -> Tensor:
    # pw·sp(-x) - sp(x) = (pw - 1)·sp(-x) - x, using sp(x) = x + sp(-x): one softplus, and
    # exactly -x without pos_weight.
    if pw is None:
        return -x
    return (pw - 1) * _softplus(-x) - x


class BCEWithLogitsLossFunction(LossFunction):
    r"""Binary cross entropy of logits :math:`x` (any real), targets :math:`y`, optional
    ``weight`` :math:`w` and ``pos_weight`` :math:`p`:

    .. math::
        \ell = -w\,\big[\,p\,y\log\sigma(x) + (1-y)\log\sigma(-x)\,\big]
             = w\,\big[\,p\,y\operatorname{sp}(-x) + (1-y)\operatorname{sp}(x)\,\big].

    This is torch's :math:`w[(1-y)x + (1 + (p-1)y)\operatorname{sp}(-x)]` rewritten with
    :math:`\operatorname{sp}(x) = x + \operatorname{sp}(-x)`. The symmetric form is used because
    torch's has a cancellation: for :math:`y = 0, x = -50` it adds :math:`x` to
    :math:`\operatorname{sp}(-x) \approx 50` and returns 0, where the loss is
    :math:`\operatorname{sp}(-50) \approx 1.9\cdot 10^{-22}`. Both are exact at
    :math:`x = \pm 1000` (0 and 1000).

    **Gradients.** With :math:`\operatorname{sp}' = \sigma`:

    .. math::
        \frac{\partial\ell}{\partial x} = w\,[(1-y)\sigma(x) - p\,y\,\sigma(-x)]
            = w\,[\sigma(x)(p y + 1 - y) - p y], \qquad
        \frac{\partial\ell}{\partial y} = w\,[p\operatorname{sp}(-x) - \operatorname{sp}(x)]
            = w\,[(p-1)\operatorname{sp}(-x) - x],

    (the latter is torch's :math:`-w(p\log\sigma(x) - \log\sigma(-x))`). Second derivatives:
    :math:`\partial^2\ell/\partial x^2 = w(1 - y + p y)\sigma(x)\sigma(-x)`,
    :math:`\partial^2\ell/\partial x\partial y = -w[\sigma(x) + p\sigma(-x)]`,
    :math:`\partial^2\ell/\partial y^2 = 0`.

    ``weight`` and ``pos_weight`` get no reverse-mode gradient (torch refuses them when they
    require grad; so does the functional), but the jvp does carry their tangents, as
    ``torch.func.jvp`` of torch's loss does: :math:`\partial\ell/\partial w = \ell/w` (the
    unweighted loss) and :math:`\partial\ell/\partial p = w\,y\operatorname{sp}(-x)`.

    The result has the dtype of ``target`` (torch's rule).
    """

    @staticmethod
    def forward(input, target, weight, pos_weight, reduction):
        ct = compute_dtype(torch.promote_types(input.dtype, target.dtype), weight, pos_weight)
        x, y = input.to(ct), target.to(ct)
        # sp(±x) = max(±x, 0) + log1p(exp(-|x|)): the log1p term is shared by both.
        tail = torch.log1p(torch.exp(-x.abs()))
        pos = y * (x.neg().clamp_min(0) + tail)  # y·sp(-x)
        if pos_weight is not None:
            pos = pos * pos_weight.to(ct)
        loss = (1 - y) * (x.clamp_min(0) + tail) + pos
        if weight is not None:
            loss = loss * weight.to(ct)
        return R.reduce(loss, reduction).to(target.dtype)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, target, weight, pos_weight, reduction = inputs
        ctx.reduction = reduction
        ctx.out_dtype = output.dtype
        ctx.has_weight = weight is not None
        ctx.has_pos_weight = pos_weight is not None
        tensors = tuple(t for t in (input, target, weight, pos_weight) if t is not None)
        ctx.save_for_backward(*tensors)
        ctx.save_for_forward(*tensors)

    @staticmethod
    def _unpack(ctx):
        saved = list(ctx.saved_tensors)
        input, target = saved[:2]
        rest = saved[2:]
        weight = rest.pop(0) if ctx.has_weight else None
        pos_weight = rest.pop(0) if ctx.has_pos_weight else None
        ct = compute_dtype(torch.promote_types(input.dtype, target.dtype), weight, pos_weight)
        return input, target, ct, _cast(weight, ct), _cast(pos_weight, ct)

    @staticmethod
    def backward(ctx, grad):
        input, target, ct, w, pw = BCEWithLogitsLossFunction._unpack(ctx)
        need_x, need_y = ctx.needs_input_grad[:2]
        x, y = input.to(ct), target.to(ct)
        g = R.unreduce(grad.to(ct), x.shape, ctx.reduction)
        if w is not None:
            g = g * w
        gx = R.sum_to(g * _bcel_dx(x, y, pw), input) if need_x else None
        gy = R.sum_to(g * _bcel_dy(x, pw), target) if need_y else None
        return gx, gy, None, None, None

    @staticmethod
    def jvp(ctx, t_input, t_target, t_weight, t_pos_weight, _r):
        input, target, ct, w, pw = BCEWithLogitsLossFunction._unpack(ctx)
        x, y = input.to(ct), target.to(ct)
        t = None  # tangent of the unweighted loss
        if t_input is not None:
            t = _bcel_dx(x, y, pw) * t_input.to(ct)
        if t_target is not None:
            t = add_tangents(t, _bcel_dy(x, pw) * t_target.to(ct))
        if t_pos_weight is not None:
            t = add_tangents(t, y * _softplus(-x) * t_pos_weight.to(ct))
        if t is not None and w is not None:
            t = t * w
        if t_weight is not None:
            unweighted = (1 - y) * _softplus(x) + y * _softplus(-x) * (1 if pw is None else pw)
            t = add_tangents(t, unweighted * t_weight.to(ct))
        # every term has the input's shape: x and y have it, the weights broadcast into it
        return R.reduce(t, ctx.reduction).to(ctx.out_dtype)


# --------------------------------------------------------------------------------------------
# Soft margin


class SoftMarginLossFunction(LossFunction):
    r"""Soft margin loss :math:`\ell = \log(1 + e^{-y x}) = \operatorname{sp}(-y x)`, with the
    target :math:`y` (usually ±1, any real or integer value accepted) broadcast into ``input``.

    **Stability (a deliberate difference from torch).** torch evaluates
    ``log1p(exp(-y x))``, which overflows once :math:`-y x` exceeds about 89 (float32) or 710
    (float64): the loss becomes ``inf`` and the gradient ``NaN``. Here
    :math:`\operatorname{sp}(z) = \max(z, 0) + \log(1 + e^{-|z|})` is finite everywhere
    (:math:`-yx = 200` gives 200 and gradient :math:`-y`); where torch is finite the two agree.

    **Gradient.** :math:`\partial\ell/\partial x = -y\,\sigma(-y x) = y(\sigma(yx) - 1)`,
    evaluated in the first form so that it has no cancellation when :math:`\sigma(-yx)` is tiny.
    Second derivative: :math:`\partial^2\ell/\partial x^2 = y^2\sigma(yx)\sigma(-yx)`; double
    backward and forward-over-reverse both work (torch has no forward-over-reverse here).

    The target is not differentiable (torch's rule): the functional refuses a target that
    requires grad, and the jvp ignores a target tangent, as ``torch.func.jvp`` of torch's loss
    does. The result has the dtype of ``input``.
    """

    @staticmethod
    def forward(input, target, reduction):
        ct = compute_dtype(input.dtype, target)
        z = -(target.to(ct) * input.to(ct))
        loss = z.clamp_min(0) + torch.log1p(torch.exp(-z.abs()))
        return R.reduce(loss, reduction).to(input.dtype)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, target, reduction = inputs
        ctx.reduction = reduction
        ctx.out_dtype = output.dtype
        ctx.save_for_backward(input, target)
        ctx.save_for_forward(input, target)

    @staticmethod
    def _dx(input: Tensor, target: Tensor, ct: torch.dtype) -> Tensor:
        y = target.to(ct)
        return -y * torch.sigmoid(-(y * input.to(ct)))

    @staticmethod
    def backward(ctx, grad):
        input, target = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None
        ct = compute_dtype(input.dtype, target)
        g = R.unreduce(grad.to(ct), input.shape, ctx.reduction)
        gx = g * SoftMarginLossFunction._dx(input, target, ct)
        return R.sum_to(gx, input), None, None

    @staticmethod
    def jvp(ctx, t_input, _t_target, _r):
        input, target = ctx.saved_tensors
        ct = compute_dtype(input.dtype, target)
        if t_input is None:  # only the (non-differentiable) target carried a tangent
            return zero_tangent(input.shape, ctx.reduction, ctx.out_dtype, input)
        t = SoftMarginLossFunction._dx(input, target, ct) * t_input.to(ct)
        return R.reduce(t, ctx.reduction).to(ctx.out_dtype)
