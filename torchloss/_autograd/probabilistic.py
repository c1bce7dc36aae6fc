r"""Likelihood-based losses: Poisson NLL, Gaussian NLL and the KL divergence.

All three are point-wise: an element-wise loss :math:`\ell(x, y[, v])` on the broadcast shape of
the inputs, then reduced (``'none'``/``'mean'``/``'sum'``, and for KL an extra division by the
batch size, ``'batchmean'``). With :math:`g_\ell` the upstream gradient spread back over the
element-wise shape (:func:`torchloss._reduction.unreduce`, divided by the batch size for
``'batchmean'``), every input gradient has the same form

.. math::
    \frac{\partial L}{\partial a} = \Sigma_{\text{bcast}}\; g_\ell\,
        \overline{\partial \ell / \partial a},

where :math:`\Sigma_{\text{bcast}}` sums over the dimensions ``a`` was broadcast along and the bar
(complex conjugate, torch's convention for holomorphic functions) only matters for the complex
inputs Poisson and Gaussian accept. The tangent is the same chain rule run forwards,
:math:`\dot L = \operatorname{reduce}\big(\sum_a \partial\ell/\partial a \cdot \dot a\big)`. Each
Function's docstring gives :math:`\ell` and its partial derivatives; backward and jvp recompute
them from the saved *inputs* in differentiable torch ops, so double backward and
forward-over-reverse differentiate exactly the formulas written here.

Numerics shared by the three:

* float16/bfloat16 are computed in float32 and rounded once, at the end (``opmath_dtype``);
  integer inputs (Poisson, Gaussian) are computed in the result dtype torch gives them.
* A value that must be masked (Poisson's Stirling term for targets ``<= 1``) is masked with the
  "double where": the masked lanes are evaluated at a harmless substitute, so neither the value
  nor any derivative of it (backward, double backward, jvp) can be NaN there.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .. import _reduction as R
from ._base import LossFunction, _combine_categories, add_tangents, broadcast_shape, opmath_dtype, result_type

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


# --------------------------------------------------------------------------------------------
# Shared machinery


# torch's dtype rules, followed through the exact chain of ops torch evaluates: a dtype is carried
# as ``(dtype, zero_dim)``, since a 0-dim operand only promotes a dimensioned one across
# categories, and ``exp``/``log``/true division take integers to the default float. No single
# ``result_type`` call reproduces such a chain. Pure dtype arithmetic, so TorchDynamo traces it.


def _operand(t: Tensor):
    return t.dtype, t.dim() == 0


def _binary(a, b):
    """The ``(dtype, zero_dim)`` of a binary op (``+ - * xlogy``) of two tensors."""
    (da, za), (db, zb) = a, b
    if za == zb:
        return torch.promote_types(da, db), za
    dim, zero = (db, da) if za else (da, db)
    return _combine_categories(dim, zero), False


def _floating(a):
    """Of a floating op (``exp``, ``log``, true division, a product with a Python float)."""
    dtype, zero_dim = a
    if not (dtype.is_floating_point or dtype.is_complex):
        dtype = torch.get_default_dtype()
    return dtype, zero_dim


_TO_REAL = {torch.complex32: torch.float16, torch.complex64: torch.float32, torch.complex128: torch.float64}


def _real(dtype: torch.dtype) -> torch.dtype:
    # ``dtype.to_real()``, as a lookup TorchDynamo can trace
    return _TO_REAL.get(dtype, dtype)


def _up(t: Tensor, dtype: torch.dtype) -> Tensor:
    """``t`` in the compute dtype; a real tensor stays real (its complex partner's real dtype), so
    e.g. the Stirling mask ``y <= 1`` still works for a real target beside a complex input."""
    return t.to(dtype if t.is_complex() else _real(dtype))


def _finish(value: Tensor, shape: torch.Size, reduction: int, divisor: int, dtype: torch.dtype) -> Tensor:
    """Reduce an element-wise value (loss or tangent) given on a shape broadcastable to
    ``shape``, divide by ``divisor`` (KL's 'batchmean'), and round once to ``dtype``."""
    if value.shape != shape:
        value = value.expand(shape)
    out = R.reduce(value, reduction)
    if divisor != 1:
        out = out / divisor
    return out.to(dtype)


def _spread(grad: Tensor, shape: torch.Size, reduction: int, divisor: int, dtype: torch.dtype) -> Tensor:
    """Backward of :func:`_finish`: the upstream gradient of each element of the loss."""
    g = R.unreduce(_up(grad, dtype), shape, reduction)
    if divisor != 1:
        g = g / divisor
    return g


def _pullback(partial: Tensor, g: Tensor, shape: torch.Size, like: Tensor) -> Tensor:
    r""":math:`\Sigma_{\text{bcast}}\, g\,\overline{\partial\ell/\partial a}`, in the shape and
    dtype of ``like`` (a real input of a complex loss gets the real part, as torch's engine does).

    ``partial`` may be smaller than the loss (when it does not depend on every input); it is
    expanded first, so summing over broadcast dimensions counts every element of the loss.
    """
    if partial.is_complex():
        partial = partial.conj()
    grad = partial * g
    if grad.shape != shape:
        grad = grad.expand(shape)
    if grad.shape != like.shape:
        grad = grad.sum_to_size(like.shape)
    if grad.is_complex() and not like.is_complex():
        grad = grad.real
    return grad.to(like.dtype)


def _push(partial: Tensor, tangent: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    r"""One term :math:`\partial\ell/\partial a\cdot\dot a` of the tangent (None for no tangent)."""
    if tangent is None:
        return None
    return partial * _up(tangent, dtype)


# --------------------------------------------------------------------------------------------
# Poisson


def _stirling(y: Tensor):
    r"""``(S(y), S'(y))`` where y > 1, and 0 elsewhere (NaN targets keep NaN, as torch's
    ``masked_fill(target <= 1, 0)``). :math:`S(y) = y\log y - y + \tfrac12\log(2\pi y)` is
    evaluated op for op as torch does (merging the two logarithms is no more accurate in float32,
    and would only move the rounding away from torch's). Masked lanes are evaluated at y = 2
    (double where), so the unused branch cannot put NaN or inf into any derivative: torch's own
    target gradient at y <= 0 is NaN (0·log 0, or the log of a negative, in its masked branch);
    ours gets no Stirling contribution there, only the non-Stirling part, which is finite.
    """
    masked = y <= 1
    ys = torch.where(masked, 2.0, y)
    log_y = torch.log(ys)
    s = ys * log_y - ys + 0.5 * torch.log(2 * math.pi * ys)
    ds = log_y + 0.5 / ys
    return torch.where(masked, 0.0, s), torch.where(masked, 0.0, ds)


def _poisson(x: Tensor, y: Tensor, log_input: bool, full: bool, eps: float, value: bool = True):
    """``(loss or None, ∂ℓ/∂x, ∂ℓ/∂y)`` of the Poisson NLL (see the Function's docstring)."""
    if log_input:
        ex = torch.exp(x)
        loss = ex - y * x if value else None
        dx = ex - y
        dy = -x
    else:
        shifted = x + eps
        log_shifted = torch.log(shifted)
        loss = x - y * log_shifted if value else None
        dx = 1 - y / shifted
        dy = -log_shifted
    if full:
        s, ds = _stirling(y)
        if value:
            loss = loss + s
        dy = dy + ds
    return loss, dx, dy


def _poisson_dtype(input: Tensor, target: Tensor, log_input: bool) -> torch.dtype:
    """torch's result dtype: ``exp(x) - y*x`` or ``x - y*log(x + eps)``. (``full`` adds its
    Stirling term in place, which keeps the dtype.)"""
    x, y = _operand(input), _operand(target)
    if log_input:
        return _binary(_floating(x), _binary(y, x))[0]
    return _binary(x, _binary(y, _floating(x)))[0]


class PoissonNLLLossFunction(LossFunction):
    r"""Poisson negative log-likelihood of a target ``y`` given the rate's log ``x``
    (``log_input=True``) or the rate ``x`` itself (``log_input=False``):

    .. math::
        \ell = e^{x} - y\,x \qquad\text{or}\qquad \ell = x - y \log(x + \varepsilon),

    plus, with ``full``, the Stirling approximation of :math:`\log y!`,
    :math:`S(y) = y\log y - y + \tfrac12\log(2\pi y)`, only where :math:`y > 1` (0 elsewhere).

    Derivatives (``log_input=True`` / ``False``):

    .. math::
        \frac{\partial\ell}{\partial x} = e^{x} - y \;/\; 1 - \frac{y}{x + \varepsilon}, \qquad
        \frac{\partial\ell}{\partial y} = -x \;/\; -\log(x + \varepsilon)
            \;+\; [y > 1]\,\big(\log y + \tfrac{1}{2y}\big),

    the last term from :math:`S'(y) = \log y + 1 - 1 + \tfrac{1}{2y}`. :math:`S` jumps at
    :math:`y = 1` (:math:`S(1) = \tfrac12\log 2\pi - 1 \ne 0`), so the target gradient there is the
    one-sided value from the side the mask picks (:math:`y \le 1`: none). Second derivatives, for
    double backward: :math:`\partial^2\ell/\partial x^2 = e^x` or :math:`y/(x+\varepsilon)^2`,
    :math:`\partial^2\ell/\partial x\partial y = -1` or :math:`-1/(x+\varepsilon)`,
    :math:`\partial^2\ell/\partial y^2 = [y > 1](1/y - 1/(2y^2))`; autograd obtains them by
    differentiating the backward below.
    """

    @staticmethod
    def forward(input, target, log_input, full, eps, reduction):
        out_dtype = _poisson_dtype(input, target, log_input)
        c = opmath_dtype(out_dtype)
        x, y = _up(input, c), _up(target, c)
        loss, _, _ = _poisson(x, y, log_input, full, eps)
        return _finish(loss, loss.shape, reduction, 1, out_dtype)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, target, log_input, full, eps, reduction = inputs
        ctx.params = (log_input, full, eps)
        ctx.reduction = reduction
        ctx.out_dtype = output.dtype
        ctx.save_for_backward(input, target)
        ctx.save_for_forward(input, target)

    @staticmethod
    def backward(ctx, grad):
        input, target = ctx.saved_tensors
        need_x, need_y = ctx.needs_input_grad[:2]
        c = opmath_dtype(ctx.out_dtype)
        x, y = _up(input, c), _up(target, c)
        shape = broadcast_shape(x.shape, y.shape)
        _, dx, dy = _poisson(x, y, *ctx.params, value=False)
        g = _spread(grad, shape, ctx.reduction, 1, c)
        gx = _pullback(dx, g, shape, input) if need_x else None
        gy = _pullback(dy, g, shape, target) if need_y else None
        return gx, gy, None, None, None, None

    @staticmethod
    def jvp(ctx, t_input, t_target, _log_input, _full, _eps, _reduction):
        input, target = ctx.saved_tensors
        c = opmath_dtype(ctx.out_dtype)
        x, y = _up(input, c), _up(target, c)
        shape = broadcast_shape(x.shape, y.shape)
        _, dx, dy = _poisson(x, y, *ctx.params, value=False)
        t = add_tangents(_push(dx, t_input, c), _push(dy, t_target, c))
        return _finish(t, shape, ctx.reduction, 1, ctx.out_dtype)


# --------------------------------------------------------------------------------------------
# Gaussian


def _clamp_straight_through(v: Tensor, eps: float) -> Tensor:
    """``max(v, eps)`` whose derivative is 1 everywhere (torch clamps a clone under ``no_grad``).

    ``v - v.detach()`` is exactly 0 (for finite v) with derivative 1, so the clamped lanes hold
    exactly ``eps`` (as ``clamp`` does in forward) yet differentiate as ``v``. The ``x +
    (clamp(x) - x).detach()`` idiom would not be exact: ``v + (eps - v)`` need not round to eps.
    """
    return torch.where(v < eps, (v - v.detach()) + eps, v)


def _gaussian_var(var, unsqueeze: bool, eps: float, dtype: torch.dtype, device, straight_through: bool):
    """``(v, v_c)``: var as it broadcasts against the input (unsqueezed for the homoscedastic
    one-fewer-dims case) and its clamp at eps, in the compute dtype. A Python-float var is a
    constant 0-d tensor (torch multiplies it into ``ones_like(input)``: same values, no graph)."""
    if isinstance(var, Tensor):
        v = var.unsqueeze(-1) if unsqueeze else var
        v = _up(v, dtype)
    else:
        v = torch.full((), var, dtype=_real(dtype), device=device)
    if straight_through and isinstance(var, Tensor):
        return v, _clamp_straight_through(v, eps)
    return v, v.clamp(min=eps)


def _gaussian_partials(d: Tensor, vc: Tensor):
    r"""``(∂ℓ/∂x, ∂ℓ/∂var)``; ``∂ℓ/∂y = -∂ℓ/∂x``."""
    r = d / vc
    return r, 0.5 * (1 - d * r) / vc


def _gaussian_dtype(input: Tensor, target: Tensor, v) -> torch.dtype:
    """torch's result dtype: ``0.5 * (log(v) + (x - y)**2 / v)``, where a Python-float var is
    ``var * ones_like(input)`` (input's dtype and shape, the default float for an integral input)."""
    x = _operand(input)
    v = _operand(v) if isinstance(v, Tensor) else _floating(x)
    quotient = _floating(_binary(_binary(x, _operand(target)), v))
    return _binary(_floating(v), quotient)[0]


class GaussianNLLLossFunction(LossFunction):
    r"""Gaussian negative log-likelihood of ``y`` under :math:`\mathcal N(x, v)` with the variance
    clamped for stability, :math:`v_c = \max(v, \varepsilon)`:

    .. math::
        \ell = \tfrac12\Big(\log v_c + \frac{(x - y)^2}{v_c}\Big)
            \;\big[+\,\tfrac12\log 2\pi \text{ if full}\big].

    Derivatives, with :math:`d = x - y` and :math:`r = d / v_c`:

    .. math::
        \frac{\partial\ell}{\partial x} = r, \qquad \frac{\partial\ell}{\partial y} = -r, \qquad
        \frac{\partial\ell}{\partial v} = \tfrac12\Big(\frac1{v_c} - \frac{d^2}{v_c^2}\Big)
            = \frac{1 - d\,r}{2 v_c}.

    As in torch, the clamp is invisible to autograd (straight-through): the var gradient is
    evaluated at :math:`v_c` but passed to :math:`v` unchanged, not zeroed below eps. Backward
    rebuilds :math:`v_c` with :func:`_clamp_straight_through`, so the second derivatives
    (:math:`\partial^2\ell/\partial x^2 = 1/v_c`, :math:`\partial^2\ell/\partial x\partial v =
    -r/v_c`, :math:`\partial^2\ell/\partial v^2 = (2dr - 1)/(2v_c^2)`) are straight-through too,
    exactly like differentiating torch's graph twice.

    ``var`` is a tensor (``unsqueeze``: the homoscedastic case whose var lacks the input's last
    dimension; the unsqueeze happens here, so the autograd graph holds only this node) or a Python
    float (a constant: no gradient). Reductions over dimensions var was broadcast along sum its
    gradient.
    """

    @staticmethod
    def forward(input, target, var, unsqueeze, full, eps, reduction):
        v_for_dtype = var.unsqueeze(-1) if isinstance(var, Tensor) and unsqueeze else var
        out_dtype = _gaussian_dtype(input, target, v_for_dtype)
        c = opmath_dtype(out_dtype)
        x, y = _up(input, c), _up(target, c)
        _, vc = _gaussian_var(var, unsqueeze, eps, c, x.device, straight_through=False)
        d = x - y
        loss = 0.5 * (torch.log(vc) + d * d / vc)
        if full:
            loss = loss + _HALF_LOG_2PI
        return _finish(loss, loss.shape, reduction, 1, out_dtype)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, target, var, unsqueeze, full, eps, reduction = inputs
        ctx.unsqueeze, ctx.eps, ctx.reduction = unsqueeze, eps, reduction
        ctx.out_dtype = output.dtype
        if isinstance(var, Tensor):
            ctx.var_value = None
            tensors = (input, target, var)
        else:
            ctx.var_value = var
            tensors = (input, target)
        ctx.save_for_backward(*tensors)
        ctx.save_for_forward(*tensors)

    @staticmethod
    def _recompute(ctx):
        saved = ctx.saved_tensors
        input, target = saved[:2]
        var = saved[2] if ctx.var_value is None else ctx.var_value
        c = opmath_dtype(ctx.out_dtype)
        x, y = _up(input, c), _up(target, c)
        v, vc = _gaussian_var(var, ctx.unsqueeze, ctx.eps, c, x.device, straight_through=True)
        d = x - y
        shape = broadcast_shape(d.shape, v.shape)
        return input, target, var, c, d, vc, shape

    @staticmethod
    def backward(ctx, grad):
        input, target, var, c, d, vc, shape = GaussianNLLLossFunction._recompute(ctx)
        need_x, need_y, need_v = ctx.needs_input_grad[:3]
        g = _spread(grad, shape, ctx.reduction, 1, c)
        dx, dv = _gaussian_partials(d, vc)
        gx = _pullback(dx, g, shape, input) if need_x else None
        gy = _pullback(-dx, g, shape, target) if need_y else None
        gv = None
        if need_v and isinstance(var, Tensor):
            like = var.unsqueeze(-1) if ctx.unsqueeze else var
            gv = _pullback(dv, g, shape, like)
            if ctx.unsqueeze:
                gv = gv.squeeze(-1)
        return gx, gy, gv, None, None, None, None

    @staticmethod
    def jvp(ctx, t_input, t_target, t_var, _unsqueeze, _full, _eps, _reduction):
        _, _, _, c, d, vc, shape = GaussianNLLLossFunction._recompute(ctx)
        dx, dv = _gaussian_partials(d, vc)
        t_d = add_tangents(t_input, None if t_target is None else -t_target)
        if t_var is not None and ctx.unsqueeze:
            t_var = t_var.unsqueeze(-1)
        t = add_tangents(_push(dx, t_d, c), _push(dv, t_var, c))
        return _finish(t, shape, ctx.reduction, 1, ctx.out_dtype)


# --------------------------------------------------------------------------------------------
# KL divergence


def _kl_partials(x: Tensor, y: Tensor, log_target: bool):
    """``(∂ℓ/∂x, ∂ℓ/∂y)`` of the KL divergence (see the Function's docstring)."""
    if log_target:
        ey = torch.exp(y)
        return -ey, ey * (y - x + 1)
    # d/dy [y log y] = log y + 1 is -inf at y == 0 (one-sided); torch's autograd of
    # xlogy(y, y) gives NaN there (xlogy(y != 0, y) + y/y), and we match it.
    log_y = torch.where(y == 0, math.nan, torch.log(y))
    return -y, log_y + 1 - x


class KLDivLossFunction(LossFunction):
    r"""Point-wise KL divergence of the target distribution from the input's, with the input
    given as log-probabilities :math:`x = \log q` and the target as probabilities :math:`y`
    (or log-probabilities, ``log_target``):

    .. math::
        \ell = y\log y - y\,x \quad(\text{with } 0\log 0 = 0), \qquad
        \ell_{\log} = e^{y}\,(y - x).

    Derivatives:

    .. math::
        \frac{\partial\ell}{\partial x} = -y, \quad \frac{\partial\ell}{\partial y} = \log y + 1 - x;
        \qquad
        \frac{\partial\ell_{\log}}{\partial x} = -e^{y}, \quad
        \frac{\partial\ell_{\log}}{\partial y} = e^{y}\,(y - x + 1).

    At :math:`y = 0` the non-log target gradient is NaN, as torch's (the one-sided derivative
    would be :math:`-\infty`); the loss itself is 0 there (NaN if also :math:`x = -\infty`,
    :math:`0\cdot\infty`, as torch). Second derivatives: :math:`\partial^2\ell/\partial x^2 = 0`,
    :math:`\partial^2\ell/\partial x\partial y = -1`, :math:`\partial^2\ell/\partial y^2 = 1/y`;
    log target: :math:`0`, :math:`-e^y`, :math:`e^y(y - x + 2)`.

    ``reduction`` is none/mean/sum; ``divisor`` divides the reduced value afterwards (the batch
    size for ``'batchmean'``, which is 'sum' / N; 1 otherwise). Its gradient is divided likewise.
    """

    @staticmethod
    def forward(input, target, reduction, divisor, log_target):
        # kl_div rejects integral and complex inputs; for two floating operands torch's chain
        # (exp(y) * (y - x), xlogy(y, y) - y * x) gives plain result_type.
        out_dtype = result_type(input, target)
        c = opmath_dtype(out_dtype)
        x, y = _up(input, c), _up(target, c)
        if log_target:
            loss = torch.exp(y) * (y - x)
        else:
            loss = torch.xlogy(y, y) - y * x
        return _finish(loss, loss.shape, reduction, divisor, out_dtype)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, target, reduction, divisor, log_target = inputs
        ctx.reduction, ctx.divisor, ctx.log_target = reduction, divisor, log_target
        ctx.out_dtype = output.dtype
        ctx.save_for_backward(input, target)
        ctx.save_for_forward(input, target)

    @staticmethod
    def backward(ctx, grad):
        input, target = ctx.saved_tensors
        need_x, need_y = ctx.needs_input_grad[:2]
        c = opmath_dtype(ctx.out_dtype)
        x, y = _up(input, c), _up(target, c)
        shape = broadcast_shape(x.shape, y.shape)
        g = _spread(grad, shape, ctx.reduction, ctx.divisor, c)
        dx, dy = _kl_partials(x, y, ctx.log_target)
        gx = _pullback(dx, g, shape, input) if need_x else None
        gy = _pullback(dy, g, shape, target) if need_y else None
        return gx, gy, None, None, None

    @staticmethod
    def jvp(ctx, t_input, t_target, _reduction, _divisor, _log_target):
        input, target = ctx.saved_tensors
        c = opmath_dtype(ctx.out_dtype)
        x, y = _up(input, c), _up(target, c)
        shape = broadcast_shape(x.shape, y.shape)
        dx, dy = _kl_partials(x, y, ctx.log_target)
        t = add_tangents(_push(dx, t_input, c), _push(dy, t_target, c))
        return _finish(t, shape, ctx.reduction, ctx.divisor, ctx.out_dtype)
