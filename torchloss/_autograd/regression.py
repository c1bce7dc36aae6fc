r"""Regression losses of a difference :math:`d = x - y`: L1, MSE, SmoothL1 and Huber.

Each is :math:`\ell = w \cdot \varphi(d)` on the broadcast shape of ``input`` and ``target``
(``w = 1`` unless the functional's ``weight`` is given), then reduced. With the upstream gradient
:math:`g_\ell` of the element-wise loss (see :mod:`torchloss._reduction`),

.. math::
    \frac{\partial L}{\partial x} = \Sigma_{\text{bcast}}\, g_\ell\, w\, \varphi'(d), \qquad
    \frac{\partial L}{\partial y} = -\Sigma_{\text{bcast}}\, g_\ell\, w\, \varphi'(d), \qquad
    \frac{\partial L}{\partial w} = g_\ell\, \varphi(d),

where :math:`\Sigma_{\text{bcast}}` sums over the dimensions an input was broadcast along. The
tangent (jvp) is the same chain rule run forwards:
:math:`\dot L = \operatorname{reduce}\big(w \varphi'(d) (\dot x - \dot y) + \varphi(d)\,\dot w\big)`.

L1 and MSE with a weight use torch's weighted mean :math:`L = S / W`, :math:`S = \sum w\varphi`,
:math:`W = \sum w`, for which :math:`\partial L/\partial w_i = (\varphi_i - L)/W`
(once per weight element, however far the loss broadcasts; ``MEAN_BY_WEIGHT`` below); Huber's weighted mean divides by the element count as usual.

Low-precision inputs are computed in float32 (:func:`~torchloss._autograd._base.opmath`) and
rounded once at the end.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .. import _reduction as R
from ._base import LossFunction, add_tangents, opmath, unpack

# L1/MSE weighted 'mean': Σ w·φ(d) / Σ w. Only reachable through the functional's ``weight``.
MEAN_BY_WEIGHT = 3


# --------------------------------------------------------------------------------------------
# The shared machinery. ``phi(d, p)`` is the element-wise loss of the difference, ``dphi(d, p)``
# its derivative; ``p`` is the loss's scalar parameter (beta, delta) or None.


def _forward(phi, p, input, target, weight, reduction, out_dtype):
    d = opmath(input) - opmath(target)
    loss = phi(d, p)
    if weight is not None:
        loss = loss * opmath(weight)
    if reduction == MEAN_BY_WEIGHT:
        out = loss.sum() / opmath(weight).sum()
    else:
        out = R.reduce(loss, reduction)
    return out.to(out_dtype)


def _setup(ctx, input, target, weight, reduction, p, output):
    ctx.reduction = reduction
    ctx.p = p
    ctx.out_dtype = output.dtype
    tensors = (input, target) if weight is None else (input, target, weight)
    ctx.save_for_backward(*tensors)
    ctx.save_for_forward(*tensors)


def _mean_by_weight(loss_w: Tensor, w: Tensor):
    """``(L, W)`` of the weighted mean, recomputed differentiably in backward/jvp."""
    total = w.sum()
    return loss_w.sum() / total, total


def _backward(phi, dphi, ctx, grad):
    input, target, weight = unpack(ctx, 3)
    need_x, need_y, need_w = ctx.needs_input_grad[:3]
    d = opmath(input) - opmath(target)
    w = None if weight is None else opmath(weight)
    if ctx.reduction == MEAN_BY_WEIGHT:
        value, total = _mean_by_weight(phi(d, ctx.p) * w, w)
        g = grad / total
    else:
        g = R.unreduce(grad, d.shape, ctx.reduction)
    gx = gy = gw = None
    if need_x or need_y:
        gd = dphi(d, ctx.p) * g
        if w is not None:
            gd = gd * w
        gx = R.sum_to(gd, input) if need_x else None
        gy = R.sum_to(-gd, target) if need_y else None
    if need_w:
        gw = R.sum_to(phi(d, ctx.p) * g, weight)
        if ctx.reduction == MEAN_BY_WEIGHT:
            # ∂(S/W)/∂w = φ/W (summed over any broadcast) - L/W: W = Σw counts each w once.
            gw = gw - value * g
    return gx, gy, gw


def _jvp(phi, dphi, ctx, t_input, t_target, t_weight):
    input, target, weight = unpack(ctx, 3)
    d = opmath(input) - opmath(target)
    w = None if weight is None else opmath(weight)
    t_d = add_tangents(t_input, None if t_target is None else -t_target)
    t_loss = None
    if t_d is not None:
        t_loss = dphi(d, ctx.p) * opmath(t_d)
        if w is not None:
            t_loss = t_loss * w
    if t_weight is not None:
        t_loss = add_tangents(t_loss, phi(d, ctx.p) * opmath(t_weight))
    if ctx.reduction == MEAN_BY_WEIGHT:
        value, total = _mean_by_weight(phi(d, ctx.p) * w, w)
        t_total = 0 if t_weight is None else opmath(t_weight).sum()
        out = (t_loss.sum() - value * t_total) / total
    elif ctx.reduction == R.NONE:
        out = t_loss.expand(d.shape)
    else:
        out = R.reduce(t_loss.expand(d.shape), ctx.reduction)
    return out.to(ctx.out_dtype)


def _promoted(input: Tensor, target: Tensor) -> torch.dtype:
    # torch broadcasts input and target against each other before computing L1/MSE/SmoothL1, so
    # a 0-dim operand promotes like any other (unlike ``torch.result_type``'s 0-dim rule).
    return torch.promote_types(input.dtype, target.dtype)


# --------------------------------------------------------------------------------------------
# L1


def _abs(d, _):
    return d.abs()


def _sgn(d, _):
    # sign(0) = 0, as torch: the subgradient at the kink is 0. ``sgn`` is d/|d| for complex d.
    return d.sgn()


class L1LossFunction(LossFunction):
    r"""L1 loss :math:`\ell = w\,|x - y|`.

    Derivative: :math:`\varphi(d) = |d|`, :math:`\varphi'(d) = \operatorname{sign}(d)`, taken
    as 0 at :math:`d = 0` (torch's subgradient). For complex inputs :math:`|d|` is the modulus
    and the gradient is :math:`\operatorname{sgn}(d) = d/|d|`, torch's convention for ``abs``.
    Its second derivative is 0 almost everywhere, so ``gradgradcheck`` sees a zero Hessian.
    """

    @staticmethod
    def forward(input, target, weight, reduction):
        dtype = _promoted(input, target)
        if dtype.is_complex:
            dtype = dtype.to_real()
        if weight is not None:
            dtype = torch.promote_types(dtype, weight.dtype)
        return _forward(_abs, None, input, target, weight, reduction, dtype)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, target, weight, reduction = inputs
        _setup(ctx, input, target, weight, reduction, None, output)

    @staticmethod
    def backward(ctx, grad):
        return (*_backward(_abs, _sgn, ctx, grad), None)

    @staticmethod
    def jvp(ctx, t_input, t_target, t_weight, _):
        input, target = ctx.saved_tensors[:2]
        if input.is_complex() or target.is_complex():
            # d|d| = Re(conj(sgn d) · dd): the real directional derivative of the modulus.
            d = input - target
            t_d = add_tangents(t_input, None if t_target is None else -t_target)
            t_loss = (d.sgn().conj() * t_d).real
            return R.reduce(t_loss.expand(d.shape), ctx.reduction).to(ctx.out_dtype)
        return _jvp(_abs, _sgn, ctx, t_input, t_target, t_weight)


# --------------------------------------------------------------------------------------------
# MSE


def _square(d, _):
    return d * d


def _twice(d, _):
    return 2 * d


class MSELossFunction(LossFunction):
    r"""Squared error :math:`\ell = w\,(x - y)^2`.

    Derivative: :math:`\varphi(d) = d^2`, :math:`\varphi'(d) = 2d`, :math:`\varphi'' = 2`.
    """

    @staticmethod
    def forward(input, target, weight, reduction):
        dtype = _promoted(input, target)
        if weight is not None:
            dtype = torch.promote_types(dtype, weight.dtype)
        return _forward(_square, None, input, target, weight, reduction, dtype)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, target, weight, reduction = inputs
        _setup(ctx, input, target, weight, reduction, None, output)

    @staticmethod
    def backward(ctx, grad):
        return (*_backward(_square, _twice, ctx, grad), None)

    @staticmethod
    def jvp(ctx, t_input, t_target, t_weight, _):
        return _jvp(_square, _twice, ctx, t_input, t_target, t_weight)


# --------------------------------------------------------------------------------------------
# Huber and SmoothL1


def _huber(d, delta):
    # With c = clamp(d, -δ, δ):  c·(d - c/2) = d²/2 inside, δ·(|d| - δ/2) outside. Both branches
    # round exactly as torch's two-branch formula does (0.5·d exactly halves), with no select.
    c = d.clamp(-delta, delta)
    return c * (d - 0.5 * c)


def _dhuber(d, delta):
    return d.clamp(-delta, delta)


class HuberLossFunction(LossFunction):
    r"""Huber loss with threshold :math:`\delta > 0`:

    .. math::
        \varphi(d) = \begin{cases} \tfrac12 d^2 & |d| < \delta \\
                                  \delta\,(|d| - \tfrac12\delta) & \text{otherwise} \end{cases}
        \qquad \varphi'(d) = \operatorname{clamp}(d, -\delta, \delta).

    The two branches meet with equal value and slope at :math:`|d| = \delta`, so the derivative
    is continuous; its own derivative (used by double backward) is :math:`[\,|d| \le \delta\,]`.
    The result has the dtype of ``input`` (torch's rule for Huber, unlike L1/MSE, which promote).
    """

    @staticmethod
    def forward(input, target, weight, reduction, delta):
        return _forward(_huber, delta, input, target, weight, reduction, input.dtype)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, target, weight, reduction, delta = inputs
        _setup(ctx, input, target, weight, reduction, delta, output)

    @staticmethod
    def backward(ctx, grad):
        return (*_backward(_huber, _dhuber, ctx, grad), None, None)

    @staticmethod
    def jvp(ctx, t_input, t_target, t_weight, _r, _d):
        return _jvp(_huber, _dhuber, ctx, t_input, t_target, t_weight)


def _smooth_l1(d, beta):
    # Kept as torch's two branches (not Huber/β): dividing δ(|d| - δ/2) by β would add two
    # roundings to the linear branch.
    ad = d.abs()
    return torch.where(ad < beta, 0.5 * d * d / beta, ad - 0.5 * beta)


def _dsmooth_l1(d, beta):
    # d/β inside, ±1 outside (exactly ±1 at |d| = β); β = inf gives 0, as the loss is 0 there.
    return (d / beta).clamp(-1.0, 1.0)


class SmoothL1LossFunction(LossFunction):
    r"""Smooth L1 loss with threshold :math:`\beta > 0` (``beta == 0`` is routed to L1):

    .. math::
        \varphi(d) = \begin{cases} \tfrac12 d^2/\beta & |d| < \beta \\
                                  |d| - \tfrac12\beta & \text{otherwise} \end{cases}
        \qquad \varphi'(d) = \operatorname{clamp}(d/\beta, -1, 1).

    It equals Huber(:math:`\delta=\beta`)/:math:`\beta`; its second derivative is
    :math:`[\,|d| \le \beta\,]/\beta`.
    """

    @staticmethod
    def forward(input, target, reduction, beta):
        dtype = _promoted(input, target)
        return _forward(_smooth_l1, beta, input, target, None, reduction, dtype)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, target, reduction, beta = inputs
        _setup(ctx, input, target, None, reduction, beta, output)

    @staticmethod
    def backward(ctx, grad):
        gx, gy, _ = _backward(_smooth_l1, _dsmooth_l1, ctx, grad)
        return gx, gy, None, None

    @staticmethod
    def jvp(ctx, t_input, t_target, _r, _b):
        return _jvp(_smooth_l1, _dsmooth_l1, ctx, t_input, t_target, None)
