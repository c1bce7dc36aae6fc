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
forward-over-reverse differentiate exactly the formulas written here. (KL keeps only the target
when only the input needs a gradient: its input gradient does not depend on the input.)

**Eager paths.** When nothing differentiates, vmaps or traces the computation
(:func:`~torchloss._autograd._base.eager_in_place`: forward, and a first-order backward, of a
plain eager call) and the compute dtype is real, forward and backward run the same formulas with
in-place ops on their own temporaries: each loss allocates one full-size buffer in forward (two
for Gaussian), and backward allocates only the gradients it returns (plus, for the Gaussian,
one temporary that becomes the var gradient). torch evaluates these losses as chains of
out-of-place ops that keep several full-size intermediates alive at once, and every fresh large
buffer costs page faults; this is where torchloss beats it. The differentiable code stays the path
for every other case (``create_graph``, ``torch.func``, forward AD, ``torch.compile``, complex
inputs); ``tests/test_probabilistic_specific.py`` checks that the two paths agree.

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
from ._base import (
    LossFunction,
    _combine_categories,
    add_tangents,
    broadcast_shape,
    eager_in_place,
    opmath_dtype,
    result_type,
)

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
    if t.dtype == dtype:  # the usual case, without the conversion call (small inputs)
        return t
    return t.to(dtype if t.is_complex() else _real(dtype))


def _eager(c: torch.dtype, x: Tensor, y: Tensor, *others: Tensor | None) -> bool:
    """Whether the eager in-place path applies: a real compute dtype ``c``, input and target of one
    shape (the loss's, so that a buffer computed from them holds the whole loss), and
    :func:`eager_in_place` (nothing differentiates, vmaps or traces the computation)."""
    return x.shape == y.shape and not c.is_complex and eager_in_place(x, y, *others)


def _finish(value: Tensor, shape: torch.Size, reduction: int, divisor: int, dtype: torch.dtype) -> Tensor:
    """Reduce an element-wise value (loss or tangent) given on a shape broadcastable to
    ``shape``, divide by ``divisor`` (KL's 'batchmean'), and round once to ``dtype``."""
    if value.shape != shape:
        value = value.expand(shape)
    out = R.reduce(value, reduction)
    if divisor != 1:
        out = out / divisor
    return out if out.dtype == dtype else out.to(dtype)


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
        if grad.dtype != like.dtype and torch.promote_types(grad.dtype, like.dtype) == like.dtype:
            grad = grad.to(like.dtype)  # a wider operand (0-d float64): summed in its own dtype
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


def _stirling_eager(y: Tensor) -> Tensor:
    """Eager :func:`_stirling` value, op for op as torch, in one fresh buffer (y's shape)."""
    s = torch.log(y).mul_(y).sub_(y)  # y log y - y
    s.add_(torch.mul(y, 2 * math.pi).log_().mul_(0.5))
    return s.masked_fill_(y <= 1, 0.0)


def _stirling_grad_eager(y: Tensor) -> Tensor:
    """Eager :func:`_stirling` derivative, ``log y + 1/(2y)`` where y > 1, in one fresh buffer."""
    ds = torch.reciprocal(y).mul_(0.5).add_(torch.log(y))
    return ds.masked_fill_(y <= 1, 0.0)


def _poisson_loss_eager(x: Tensor, y: Tensor, log_input: bool, full: bool, eps: float) -> Tensor:
    """Eager forward: the element-wise loss in one fresh buffer (``x.shape == y.shape``)."""
    if log_input:
        # e^x - y·x (addcmul_ may fuse the product and the difference: one rounding fewer)
        loss = torch.exp(x).addcmul_(y, x, value=-1)
    else:
        loss = torch.add(x, eps).log_().mul_(y)  # y·log(x + eps)
        loss = torch.sub(x, loss, out=loss)
    if full:
        loss.add_(_stirling_eager(y))
    return loss


def _poisson_grads_eager(x: Tensor, y: Tensor, g: Tensor, params, need_x: bool, need_y: bool):
    """Eager backward: ``(g·∂ℓ/∂x, g·∂ℓ/∂y)`` (None where not needed), each computed in place
    in the buffer it is returned in."""
    log_input, full, eps = params
    gx = gy = None
    if log_input:
        if need_x:
            gx = torch.exp(x).sub_(y).mul_(g)  # (e^x - y)·g
        if need_y:
            gy = torch.neg(x)
    else:
        shifted = torch.add(x, eps)
        if need_x:
            # (1 - y/(x + eps))·g as g - (g·y)/(x + eps): y/(x + eps) alone overflows for a huge
            # target over a tiny input where the gradient does not (torch's chain multiplies first)
            gx = torch.mul(y, g).div_(shifted).neg_().add_(g)
        if need_y:
            gy = shifted.log_().neg_()
    if need_y:
        if full:
            gy.add_(_stirling_grad_eager(y))
        gy.mul_(g)
    return gx, gy


def _poisson_dtype(input: Tensor, target: Tensor, log_input: bool) -> torch.dtype:
    """torch's result dtype: ``exp(x) - y*x`` or ``x - y*log(x + eps)``. (``full`` adds its
    Stirling term in place, which keeps the dtype.)"""
    if input.dtype == target.dtype and input.dtype.is_floating_point:
        return input.dtype  # every op of the chain keeps a floating dtype
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

    **Memory.** The inputs are saved (nothing allocated for the graph; torch keeps
    :math:`e^x`). Eager, forward computes the loss in one full-size buffer and backward each
    gradient in place in the buffer it returns; torch's chain keeps up to four full-size
    tensors alive.
    """

    @staticmethod
    def forward(input, target, log_input, full, eps, reduction):
        out_dtype = _poisson_dtype(input, target, log_input)
        c = opmath_dtype(out_dtype)
        x, y = _up(input, c), _up(target, c)
        if _eager(c, x, y):
            loss = _poisson_loss_eager(x, y, log_input, full, eps)
        else:
            loss = _poisson(x, y, log_input, full, eps)[0]
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
        g = _spread(grad, shape, ctx.reduction, 1, c)
        if _eager(c, x, y, g):
            gx, gy = _poisson_grads_eager(x, y, g, ctx.params, need_x, need_y)
            gx = None if gx is None else R.sum_to(gx, input)
            gy = None if gy is None else R.sum_to(gy, target)
            return gx, gy, None, None, None, None
        _, dx, dy = _poisson(x, y, *ctx.params, value=False)
        log_input, _, eps = ctx.params
        if need_x and not log_input:
            # conj(1 - y/(x + eps)) g as g - (g conj(y)) / conj(x + eps), as the eager path
            # (torch's chain multiplies first): y/(x + eps) alone overflows for a huge target over
            # a tiny input where the gradient does not
            gd = g - (g * torch.conj(y)) / torch.conj(x + eps)
            gx = _pullback(torch.ones((), dtype=gd.real.dtype, device=gd.device), gd, shape, input)
        else:
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
    if eps != eps:  # a NaN eps: torch's clamp makes every entry NaN
        return (v - v.detach()) + eps
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


def _gaussian_eager(c: torch.dtype, x: Tensor, y: Tensor, v: Tensor, *others: Tensor | None) -> bool:
    """:func:`_eager`, and var broadcasting into the loss's shape (so that the loss, or a gradient,
    can be computed in place in a buffer of that shape)."""
    return v.dim() <= x.dim() and _eager(c, x, y, v, *others) and broadcast_shape(x.shape, v.shape) == x.shape


def _gaussian_loss_eager(x: Tensor, y: Tensor, vc: Tensor) -> Tensor:
    """Eager forward: ``log v_c + (x - y)²/v_c`` (the bracket, not yet halved) in one fresh
    buffer; ``vc`` (fresh, from the clamp) becomes ``log v_c`` in place."""
    loss = torch.sub(x, y)
    return loss.mul_(loss).div_(vc).add_(vc.log_())


def _overflowed(r: Tensor) -> bool:
    """Whether ``r`` holds ±inf (with no NaN: a NaN row's gradient is NaN either way), by its
    extremes: no full-size temporary. Eager CPU only (a host read, no device wait)."""
    if r.device.type != "cpu" or isinstance(r, torch._subclasses.FakeTensor):
        return False  # (no values to read: meta and fake tensors; a device would synchronise)
    lo, hi = torch.aminmax(r)
    return bool((hi == math.inf) | (lo == -math.inf))


def _gaussian_grads_eager(x: Tensor, y: Tensor, vc: Tensor, g: Tensor, need_x: bool, need_y: bool, need_v: bool):
    """Eager backward: ``(g·r, -g·r, g·(1/v_c - r²)/2)`` with ``r = (x - y)/v_c`` (None where
    not needed). ``vc`` is fresh (from the clamp) and becomes the var gradient in place when it
    has the loss's shape; ``r``'s buffer becomes the input's (or target's) gradient: two full-size
    buffers for the usual call, both returned. Where ``r`` overflows (a tiny var under a huge
    difference) the input's gradient is formed in torch's order instead, ``(g/v_c)·(x - y)``,
    finite when the 1/N of 'mean' in ``g`` brings it back (one check of ``r``: a rare extra pass)."""
    r = torch.sub(x, y).div_(vc)
    t = None
    if (need_x or need_y) and r.numel() and _overflowed(r):
        t = torch.sub(x, y).mul_(torch.div(g, vc))
    gv = None
    if need_v:
        # 1/v_c - r² (torch's 1/v_c - d²/v_c², whose two terms cancel alike)
        if vc.shape == r.shape:
            gv = vc.reciprocal_().addcmul_(r, r, value=-1)
        else:
            gv = torch.mul(r, r).neg_().add_(vc.reciprocal_())
        # ·g/2 (halving is exact: one multiplication with a 0-d g)
        gv = gv.mul_(g * 0.5) if g.dim() == 0 else gv.mul_(g).mul_(0.5)
    gx = gy = None
    if need_x and need_y:
        gx = torch.mul(r, g) if t is None else t
        gy = torch.neg(gx, out=r)
    elif need_x:
        gx = r.mul_(g) if t is None else t
    elif need_y:
        gy = (r.mul_(g) if t is None else t).neg_()
    return gx, gy, gv


def _gaussian_dtype(input: Tensor, target: Tensor, v) -> torch.dtype:
    """torch's result dtype: ``0.5 * (log(v) + (x - y)**2 / v)``, where a Python-float var is
    ``var * ones_like(input)`` (input's dtype and shape, the default float for an integral input)."""
    if input.dtype == target.dtype and input.dtype.is_floating_point and (not isinstance(v, Tensor) or v.dtype == input.dtype):
        return input.dtype  # every op of the chain keeps a floating dtype
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

    **Memory.** The inputs are saved (torch keeps var's clamped copy, :math:`x - y`, its
    square and more). Eager, forward needs two full-size buffers (the squared difference,
    divided and added to in place, and the clamp, turned into its logarithm), backward two as
    well: :math:`r`'s buffer becomes the input's gradient and the clamp's the var gradient
    (:math:`(1/v_c - r^2)/2`, torch's two terms, in place), so the usual call allocates nothing
    beside the gradients it returns.
    """

    @staticmethod
    def forward(input, target, var, unsqueeze, full, eps, reduction):
        v_for_dtype = var.unsqueeze(-1) if isinstance(var, Tensor) and unsqueeze else var
        out_dtype = _gaussian_dtype(input, target, v_for_dtype)
        c = opmath_dtype(out_dtype)
        x, y = _up(input, c), _up(target, c)
        _, vc = _gaussian_var(var, unsqueeze, eps, c, x.device, straight_through=False)
        if _gaussian_eager(c, x, y, vc):
            loss = _gaussian_loss_eager(x, y, vc).mul_(0.5)
            if full:
                loss = loss.add_(_HALF_LOG_2PI)
            return _finish(loss, loss.shape, reduction, 1, out_dtype)
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
    def _recompute(ctx, straight_through: bool = True):
        """``(input, target, var, c, x, y, v, vc)`` from the saved tensors: the inputs in the
        compute dtype ``c``, var as it broadcasts (``v``) and clamped (``vc``)."""
        saved = ctx.saved_tensors
        input, target = saved[:2]
        var = saved[2] if ctx.var_value is None else ctx.var_value
        c = opmath_dtype(ctx.out_dtype)
        x, y = _up(input, c), _up(target, c)
        v, vc = _gaussian_var(var, ctx.unsqueeze, ctx.eps, c, x.device, straight_through)
        return input, target, var, c, x, y, v, vc

    @staticmethod
    def backward(ctx, grad):
        need_x, need_y, need_v = ctx.needs_input_grad[:3]
        # a plain clamp (a fresh buffer) for the eager path, the straight-through one otherwise
        fast = not torch.is_grad_enabled()
        input, target, var, c, x, y, v, vc = GaussianNLLLossFunction._recompute(ctx, straight_through=not fast)
        shape = broadcast_shape(x.shape, y.shape, v.shape)
        g = _spread(grad, shape, ctx.reduction, 1, c)
        need_v = need_v and isinstance(var, Tensor)
        like_v = (var.unsqueeze(-1) if ctx.unsqueeze else var) if need_v else None
        if fast and _gaussian_eager(c, x, y, vc, g):
            gx, gy, gv = _gaussian_grads_eager(x, y, vc, g, need_x, need_y, need_v)
            gx = None if gx is None else R.sum_to(gx, input)
            gy = None if gy is None else R.sum_to(gy, target)
            gv = None if gv is None else R.sum_to(gv, like_v)
        else:
            if fast:  # not eager after all: the straight-through clamp
                vc = _gaussian_var(var, ctx.unsqueeze, ctx.eps, c, x.device, True)[1]
            d = x - y
            dx, dv = _gaussian_partials(d, vc)
            gx = _pullback(dx, g, shape, input) if need_x else None
            gy = _pullback(-dx, g, shape, target) if need_y else None
            gv = _pullback(dv, g, shape, like_v) if need_v else None
        if gv is not None and ctx.unsqueeze:
            gv = gv.squeeze(-1)
        return gx, gy, gv, None, None, None, None

    @staticmethod
    def jvp(ctx, t_input, t_target, t_var, _unsqueeze, _full, _eps, _reduction):
        _, _, _, c, x, y, v, vc = GaussianNLLLossFunction._recompute(ctx)
        d = x - y
        shape = broadcast_shape(d.shape, v.shape)
        dx, dv = _gaussian_partials(d, vc)
        t_d = add_tangents(t_input, None if t_target is None else -t_target)
        if t_var is not None and ctx.unsqueeze:
            t_var = t_var.unsqueeze(-1)
        t = add_tangents(_push(dx, t_d, c), _push(dv, t_var, c))
        return _finish(t, shape, ctx.reduction, 1, ctx.out_dtype)


# --------------------------------------------------------------------------------------------
# KL divergence


def _kl_dx(y: Tensor, log_target: bool) -> Tensor:
    """``∂ℓ/∂x`` of the KL divergence: ``-y`` or ``-e^y`` (independent of the input)."""
    return -torch.exp(y) if log_target else -y


def _kl_dy(x: Tensor, y: Tensor, log_target: bool) -> Tensor:
    """``∂ℓ/∂y`` of the KL divergence (see the Function's docstring)."""
    if log_target:
        return torch.exp(y) * (y - x + 1)
    # d/dy [y log y] = log y + 1 is -inf at y == 0 (one-sided); torch's autograd of
    # xlogy(y, y) gives NaN there (xlogy(y != 0, y) + y/y), and we match it.
    log_y = torch.where(y == 0, math.nan, torch.log(y))
    return log_y + 1 - x


# from this many elements on, three vectorised passes beat one scalar xlogy (measured: about
# 1 ns against 2 ns an element in float32, and 2-3 us a dispatch)
_VECTOR_XLOGY_MIN = 8192


def _kl_loss_eager(x: Tensor, y: Tensor, log_target: bool) -> Tensor:
    """Eager forward: the element-wise loss in one fresh buffer (two with ``log_target``)."""
    if log_target:
        return torch.sub(y, x).mul_(torch.exp(y))  # e^y·(y - x)
    if y.numel() < _VECTOR_XLOGY_MIN:
        loss = torch.xlogy(y, y)  # y log y, with 0 log 0 = 0
    else:
        # torch's xlogy is a scalar loop, twice the time of these three vectorised passes on
        # large inputs (but two more dispatches on small ones). The clamp turns only
        # log 0 = -inf into a finite number, whose product with y = 0 is 0 (a negative or NaN
        # target keeps its NaN: clamp propagates it).
        loss = torch.log(y).clamp_(min=torch.finfo(y.dtype).min).mul_(y)
    # - y·x (addcmul_ may fuse the product and the difference: one rounding fewer)
    return loss.addcmul_(y, x, value=-1)


def _kl_dx_eager(y: Tensor, grad: Tensor, shape: torch.Size, reduction: int, divisor: int, log_target: bool) -> Tensor:
    """Eager ``g·∂ℓ/∂x = -g·y`` (or ``-g·e^y``) in the one buffer it is returned in, from the
    upstream ``grad`` (in the compute dtype): for 'mean'/'sum' the negation joins the division
    into the 0-d factor (``grad / -n`` is exactly ``-(grad / n)``)."""
    if reduction == R.NONE:
        g = grad if divisor == 1 else grad / divisor
        return (torch.exp(y).mul_(g) if log_target else torch.mul(y, g)).neg_()
    n = divisor * (shape.numel() if reduction == R.MEAN else 1)
    g = grad / -n
    return torch.exp(y).mul_(g) if log_target else torch.mul(y, g)


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

    **Memory.** :math:`\partial\ell/\partial x` does not involve the input, so when only the
    input needs a gradient (the usual call) only the target is saved, as torch does; otherwise
    both. Eager, forward computes the loss in one full-size buffer (plus :math:`e^y` with
    ``log_target``) and backward only the gradient it returns, :math:`y\cdot(-g)` with the
    negation and the division by the batch (or element) count folded into the 0-d factor.
    """

    @staticmethod
    def forward(input, target, reduction, divisor, log_target):
        # kl_div rejects integral and complex inputs; for two floating operands torch's chain
        # (exp(y) * (y - x), xlogy(y, y) - y * x) gives plain result_type.
        out_dtype = input.dtype if input.dtype == target.dtype else result_type(input, target)
        c = opmath_dtype(out_dtype)
        x, y = _up(input, c), _up(target, c)
        if _eager(c, x, y):
            loss = _kl_loss_eager(x, y, log_target)
        elif log_target:
            loss = torch.exp(y) * (y - x)
        else:
            loss = torch.xlogy(y, y) - y * x
        return _finish(loss, loss.shape, reduction, divisor, out_dtype)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, target, reduction, divisor, log_target = inputs
        ctx.reduction, ctx.divisor, ctx.log_target = reduction, divisor, log_target
        ctx.out_dtype = output.dtype
        # the input's gradient needs only the target (torch's graph keeps just the target too);
        # the target's needs both. The shapes are kept for the loss's shape in backward.
        ctx.shapes, ctx.x_dtype = (input.shape, target.shape), input.dtype
        ctx.save_for_backward(*((input, target) if ctx.needs_input_grad[1] else (target,)))
        ctx.save_for_forward(input, target)

    @staticmethod
    def backward(ctx, grad):
        need_x, need_y = ctx.needs_input_grad[:2]
        saved = ctx.saved_tensors
        input, target = saved if need_y else (None, saved[0])
        c = opmath_dtype(ctx.out_dtype)
        y = _up(target, c)
        shape = broadcast_shape(*ctx.shapes)
        x_shape = ctx.shapes[0]
        gx = gy = None
        if need_x and not need_y and y.shape == shape and eager_in_place(y, grad):
            gx = _kl_dx_eager(y, _up(grad, c), shape, ctx.reduction, ctx.divisor, ctx.log_target)
        else:
            g = _spread(grad, shape, ctx.reduction, ctx.divisor, c)
            if need_x:
                gx = _kl_dx(y, ctx.log_target) * g
                if gx.shape != shape:
                    gx = gx.expand(shape)
            if need_y:
                # a target wider than the loss (a 0-d float64 one) gets its gradient in its dtype
                cy = target.dtype if target.dtype in (torch.float64, torch.complex128) else c
                xs, ys, gs = (_up(input, cy), _up(target, cy), g.to(cy)) if cy != c else (_up(input, c), y, g)
                if ctx.log_target:
                    # g (y - x + 1) first, then e^y (the order of torch's chain, which multiplies
                    # the upstream gradient into y - x): e^y (y - x + 1) alone overflows where
                    # the gradient is finite (float32 y near 88 and a 'mean' over a few elements)
                    gy = _pullback(torch.exp(ys), (ys - xs + 1) * gs, shape, target)
                else:
                    gy = _pullback(_kl_dy(xs, ys, False), gs, shape, target)
        if gx is not None:
            gx = gx if gx.shape == x_shape else gx.sum_to_size(x_shape)
            gx = gx if gx.dtype == ctx.x_dtype else gx.to(ctx.x_dtype)
        return gx, gy, None, None, None

    @staticmethod
    def jvp(ctx, t_input, t_target, _reduction, _divisor, _log_target):
        input, target = ctx.saved_tensors
        c = opmath_dtype(ctx.out_dtype)
        x, y = _up(input, c), _up(target, c)
        shape = broadcast_shape(x.shape, y.shape)
        dx = _kl_dx(y, ctx.log_target) if t_input is not None else None
        if t_target is not None and ctx.log_target:
            # e^y ((y - x + 1) ẏ): the tangent before e^y, as backward applies the upstream first
            ty = torch.exp(y) * ((y - x + 1) * _up(t_target, c))
        else:
            ty = _push(_kl_dy(x, y, ctx.log_target) if t_target is not None else None, t_target, c)
        t = add_tangents(_push(dx, t_input, c), ty)
        return _finish(t, shape, ctx.reduction, ctx.divisor, ctx.out_dtype)
