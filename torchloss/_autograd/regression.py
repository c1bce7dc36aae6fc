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

**Eager shortcuts (speed and memory).** torch computes MSE, SmoothL1 and Huber in one fused kernel
(one full-size buffer for the element-wise loss, one for the gradient) and L1 as ``(x - y).abs()``
(keeping ``x - y`` for backward). When nothing differentiates, vmaps or traces the computation
(:func:`~torchloss._autograd._base.eager_in_place`) and the pair is float32 or float64 of one dtype
without ``weight``, the forward and a first-order backward here allocate no more than that:

* the forward forms :math:`d = x - y` once and turns it into :math:`\varphi(d)` in place
  (SmoothL1 and Huber need one scratch buffer: above :data:`_CHUNK` elements of a contiguous,
  same-shape pair they run chunk by chunk, in cache, so the scratch stays small and 'mean'/'sum'
  allocate nothing full-size at all);
* the backward forms :math:`d` in the buffer it returns and scales it in place to
  :math:`\varphi'(d)\,g_\ell` (whole-tensor passes: see :func:`_eager_backward`); the
  target's gradient is its negation (a second buffer only when both are wanted).

The many small operations this takes cost about 1-2 us each on small inputs, so there the code
also avoids operations with a Python number operand where it can (:func:`~torchloss._autograd._base.constant`).

Every other case (``create_graph``, ``torch.func``, forward AD, ``torch.compile``, low precision,
mixed dtypes, ``weight``, complex) runs the out-of-place code, which is differentiable again; the
two compute the same values (``tests/test_regression_specific.py`` checks them against each
other). L1 also keeps less for backward: see :class:`L1LossFunction`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .. import _reduction as R
from ._base import (
    LossFunction,
    _combine_categories,
    add_tangents,
    chunked_reduce,
    eager_in_place,
    eager_reduce,
    opmath_dtype,
    unpack,
)
from ._base import constant as _const

# L1/MSE weighted 'mean': Σ w·φ(d) / Σ w. Only reachable through the functional's ``weight``.
MEAN_BY_WEIGHT = 3

# The dtypes of the eager path: computed in their own precision (float16/bfloat16 need opmath).
_EAGER_DTYPES = (torch.float32, torch.float64)

# Elements per chunk of the chunked eager forward: 512 KiB of float32 per buffer,
# so that the chunk of x and y, d and the scratch (2 MiB in all) stay in cache between the few
# in-place passes, while the Python loop (about 10 us a chunk) stays a few percent of the work
# (measured: 64K-256K elements are within a few percent; 32K and 512K are slower).
_CHUNK = 1 << 17

# Largest element count whose 'mean'/'sum' forward sums φ = e·c as one dot product
# (:func:`_eager_forward`'s ``factors_``): one operation instead of a product and a sum, about
# 1 us less at the small size. MKL's dot accumulates in a few float32 lanes: measured against
# float64, its error is torch's sum's (within a factor 2 either way) up to a few thousand
# elements, but 3-4 times it at 128K, so larger inputs keep the product and torch's cascade sum.
_DOT_MAX = 256


# --------------------------------------------------------------------------------------------
# The shared machinery. ``phi(d, p)`` is the element-wise loss of the difference, ``dphi(d, p)``
# its derivative; ``p`` is the loss's scalar parameter (beta, delta) or None.


def _compute_dtype(input: Tensor, target: Tensor, weight: Tensor | None = None) -> torch.dtype:
    """The dtype the general code computes in: the promotion of every operand (weight included,
    and a 0-d operand like any other, since torch broadcasts the pair before computing), in
    float32 for float16/bfloat16. At least the precision of torch's result dtype, so that a
    float64 result is float64-accurate and a float32 input against a float64 target (or
    weight) is computed in float64, as torch does, and rounded once."""
    dtype = torch.promote_types(input.dtype, target.dtype)
    if weight is not None:
        dtype = torch.promote_types(dtype, weight.dtype)
    return opmath_dtype(dtype)


def _as(t: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    return t if t is None or t.dtype == dtype else t.to(dtype)


def _dtypes(input: Tensor, target: Tensor, weight: Tensor | None) -> tuple[torch.dtype, torch.dtype]:
    """``(ct, dt)``: the compute dtype of the loss (:func:`_compute_dtype`) and that of the
    difference ``d``: real when input and target are (a complex ``weight`` multiplies the real
    element-wise loss, as torch's ``loss * weight``)."""
    ct = _compute_dtype(input, target, weight)
    if ct.is_complex and not (input.dtype.is_complex or target.dtype.is_complex):
        return ct, ct.to_real()
    return ct, ct


def _weighted_dtype(loss_dtype: torch.dtype, input: Tensor, target: Tensor, weight: Tensor, reduction: int) -> torch.dtype:
    """torch's result dtype of its Python weighted path: ``loss * weight`` (``loss`` of the
    broadcast shape of input and target, ``weight`` of input's: ATen's rule for a 0-dim operand
    against a dimensioned one), then for L1/MSE ``'mean'`` ``sum(loss * weight) / sum(weight)``,
    two 0-dim tensors, which promote plainly."""
    loss_dim = input.dim() > 0 or target.dim() > 0
    if loss_dim == (weight.dim() > 0):
        dtype = torch.promote_types(loss_dtype, weight.dtype)
    elif loss_dim:
        dtype = _combine_categories(loss_dtype, weight.dtype)
    else:
        dtype = _combine_categories(weight.dtype, loss_dtype)
    if reduction == MEAN_BY_WEIGHT:
        dtype = torch.promote_types(dtype, weight.dtype)
    return dtype


# The dtype a float32 (complex64) weighted mean's weight gradient is computed in (see _backward)
_WIDER = {torch.float32: torch.float64, torch.complex64: torch.complex128}


def _conj(t: Tensor) -> Tensor:
    return t.conj() if t.is_complex() else t


def _real_for(t: Tensor, like: Tensor) -> Tensor:
    """The gradient ``t`` of a real ``like`` whose use was complex: its real part (torch's rule)."""
    return t.real if t.is_complex() and not like.is_complex() else t


def _forward(phi, p, input, target, weight, reduction, out_dtype):
    ct, dt = _dtypes(input, target, weight)
    d = _as(input, dt) - _as(target, dt)
    loss = phi(d, p)
    if reduction == MEAN_BY_WEIGHT:
        out = _mean_by_weight(loss, _as(weight, ct))[0]
    else:
        if weight is not None:
            loss = loss * _as(weight, ct)
        out = R.reduce(loss, reduction)
    return out.to(out_dtype)


def _setup(ctx, input, target, weight, reduction, p, output):
    ctx.reduction = reduction
    ctx.p = p
    ctx.out_dtype = output.dtype
    tensors = (input, target) if weight is None else (input, target, weight)
    ctx.save_for_backward(*tensors)
    ctx.save_for_forward(*tensors)


def _mean_by_weight(phi: Tensor, w: Tensor):
    r"""``(L, W)`` of the weighted mean :math:`L = \sum (w/W)\,\varphi`, :math:`W = \sum w`
    (torch's :math:`\sum w\varphi / W`, without its intermediate overflow: the products
    :math:`w\varphi` overflow long before their mean does), recomputed differentiably in
    backward/jvp."""
    total = w.sum()
    if phi.numel() == 0:
        return phi.sum() / total, total  # 0/0: NaN, as torch's
    return (phi * (w / total)).sum(), total


def _backward(phi, dphi, ctx, grad):
    # Complex values follow torch's conventions (the gradient of a real operand used in complex
    # arithmetic is the real part; a product's gradient is the upstream one times the conjugate
    # of the other factor; |d| gives sgn(d), d^2 the conjugate of 2d).
    input, target, weight = unpack(ctx, 3)
    need_x, need_y, need_w = ctx.needs_input_grad[:3]
    ct, dt = _dtypes(input, target, weight)
    d = _as(input, dt) - _as(target, dt)
    w = _as(weight, ct)
    if ctx.reduction == MEAN_BY_WEIGHT:
        value, total = _mean_by_weight(phi(d, ctx.p), w)
        g = grad / _conj(total)
    else:
        g = R.unreduce(grad, d.shape, ctx.reduction)
    gx = gy = gw = None
    if need_x or need_y:
        # (g w first: with a tiny total weight, g = grad/W is huge and φ' g alone may overflow)
        gl = g if w is None else g * _conj(w)
        if gl.is_complex() and not (d.is_complex() and phi is _square):
            gl = gl.real  # φ(d) is real: its gradient is
        if phi is _square:
            # conj(2d) g as d (2 g): the same bits (2 scales exactly), and 2 g / n first, as
            # torch's norm (x - y) g: 2 d overflows for |d| > FLT_MAX / 2 where the gradient is finite
            gd = _conj(d) * (2 * gl)
        else:
            gd = dphi(d, ctx.p) * gl
        gx = R.sum_to(_real_for(gd, input), input) if need_x else None
        gy = R.sum_to(_real_for(-gd, target), target) if need_y else None
    if need_w:
        phi_d = phi(d, ctx.p)
        if ctx.reduction == MEAN_BY_WEIGHT and ct in _WIDER:
            # (φ - L)/W magnifies the rounding of L by 1/W (a small total weight) and is
            # inf - inf where φ overflows (and the mean with it) although their difference is
            # finite: in float32 (and for float16/bfloat16) it is computed in float64
            wide = _WIDER[ct]
            d_w = _as(input, _WIDER.get(dt, dt)) - _as(target, _WIDER.get(dt, dt))
            phi_d, w_w = phi(d_w, ctx.p), _as(weight, wide)
            value, total = _mean_by_weight(phi_d, w_w)
            g = _as(grad, wide) / _conj(total)
        gw = _real_for(_conj(phi_d) * g, weight)
        if gw.shape != weight.shape:
            gw = gw.sum_to_size(weight.shape)
        if ctx.reduction == MEAN_BY_WEIGHT:
            # ∂(S/W)/∂w = φ/W (summed over any broadcast) - L/W: W = Σw counts each w once.
            gw = gw - _real_for(_conj(value) * g, weight)
        if gw.dtype != weight.dtype:
            gw = gw.to(weight.dtype)
    return gx, gy, gw


def _jvp(phi, dphi, ctx, t_input, t_target, t_weight):
    input, target, weight = unpack(ctx, 3)
    ct, dt = _dtypes(input, target, weight)
    d = _as(input, dt) - _as(target, dt)
    w = _as(weight, ct)
    t_d = add_tangents(_as(t_input, dt), None if t_target is None else -_as(t_target, dt))
    t_loss = None
    if t_d is not None:
        t_loss = dphi(d, ctx.p) * t_d
        if w is not None:
            t_loss = t_loss * w
    if t_weight is not None:
        t_loss = add_tangents(t_loss, phi(d, ctx.p) * _as(t_weight, ct))
    if ctx.reduction == MEAN_BY_WEIGHT:
        value, total = _mean_by_weight(phi(d, ctx.p), w)
        t_total = 0 if t_weight is None else _as(t_weight, ct).sum()
        out = (t_loss.sum() - value * t_total) / total
    elif ctx.reduction == R.NONE:
        out = t_loss.expand(d.shape)
    else:
        out = R.reduce(t_loss.expand(d.shape), ctx.reduction)
    return out.to(ctx.out_dtype)


# --------------------------------------------------------------------------------------------
# The eager path (see the module docstring).


def _eager(input: Tensor, target: Tensor, grad: Tensor | None = None) -> bool:
    """Whether the eager in-place code may run on this (unweighted) pair (and upstream gradient)."""
    dtype = input.dtype
    return dtype == target.dtype and dtype in _EAGER_DTYPES and eager_in_place(input, target, grad)


def _chunkable(input: Tensor, target: Tensor) -> bool:
    """Whether the eager code runs chunk by chunk: a contiguous pair of one shape (flat views
    of both) on the CPU, above :data:`_CHUNK` elements. (On a GPU the caching allocator makes
    full-size temporaries cheap, and each chunk's operations would be kernel launches.)"""
    return (
        input.numel() > _CHUNK
        and input.device.type == "cpu"
        and input.shape == target.shape
        and input.is_contiguous()
        and target.is_contiguous()
    )


def _eager_forward(phi_, p, input: Tensor, target: Tensor, reduction: int, factors_=None) -> Tensor:
    """``reduce(φ(input - target))`` with ``phi_(d, scratch, p)`` turning ``d`` into ``φ(d)`` in
    place (``scratch``: a buffer of ``d``'s size it may use, or None: then it allocates one).
    ``factors_(d, scratch, p)``, where given, returns ``(e, c)`` with ``φ(d) = e·c`` (``e`` in
    ``d``'s buffer): 'mean'/'sum' of at most :data:`_DOT_MAX` elements then end in one dot
    product instead of a product and a sum.

    A contiguous same-shape pair above :data:`_CHUNK` elements is done chunk by chunk: ``d`` and
    the scratch are chunk-sized (reused), 'none' writes straight into the output and
    'mean'/'sum' add up the chunks' sums (each a cascade sum, as torch's; the total of a few
    dozen of them is as accurate as one sum over everything: measured against float64, the
    errors of both are about half an ulp of the result).
    """
    if not _chunkable(input, target):
        d = torch.sub(input, target)
        if factors_ is not None and reduction != R.NONE and d.numel() <= _DOT_MAX and (d.dim() == 1 or d.is_contiguous()):
            # Σ e·c as one dot product (see _DOT_MAX); c is laid out as d (a permuted d from a
            # non-contiguous input keeps the product and sum: flat views need contiguity)
            e, c = factors_(d, None, p)
            if e.dim() != 1:
                e, c = e.view(-1), c.view(-1)
            total = torch.dot(e, c)
            return total.div_(_const(e.numel(), e.dtype, e.device)) if reduction == R.MEAN else total
        return eager_reduce(phi_(d, None, p), reduction)
    return chunked_reduce(
        input, target, lambda x, y, out, scratch: phi_(torch.sub(x, y, out=out), scratch, p), reduction, _CHUNK
    )



def _sum_to(grad: Tensor, shape, dtype: torch.dtype) -> Tensor:
    if grad.shape != shape:
        grad = grad.sum_to_size(shape)
    return grad if grad.dtype == dtype else grad.to(dtype)


def _split(gd: Tensor, need_x: bool, need_y: bool, x_meta, y_meta, in_place: bool):
    """``(Σ gd, -Σ gd)`` summed to the shapes (and cast to the dtypes) of input and target.

    ``gd`` is the caller's own buffer when ``in_place``: the input's gradient is then ``gd``
    itself where no summing or cast is needed, and the target's is negated in place unless
    that would change the input's."""
    gx = _sum_to(gd, *x_meta) if need_x else None
    if not need_y:
        return gx, None
    gy = _sum_to(gd, *y_meta)
    if in_place and gy is not gx:
        return gx, gy.neg_()
    return gx, -gy


def _eager_backward(dphi_, ctx, grad: Tensor, k: float = 1.0):
    r"""``(gx, gy)`` from the saved input and target, or None where the eager path does not apply
    (a weight was saved, other dtypes, or the backward is differentiated or transformed).

    ``dphi_(d, p)`` turns ``d`` in place into :math:`\varphi'(d)/k` for the loss's constant
    ``k``. For 'mean'/'sum' the constant :math:`k\,g/n` is formed first (a 0-dim operation, as
    torch's own kernels scale by :math:`g/n`), so the gradient takes a few passes over one
    full-size buffer, the gradient itself (a second buffer only when both gradients are wanted).

    Unlike the forward, it is not chunked: the buffer is the result, so chunking would save no
    memory, and the whole-tensor passes are faster than the chunk loop's many small operations
    (measured at 4M float32 elements on the CPU: about 0.3 ms less for Huber and MSE, the
    in-place passes over a buffer just written staying in the last-level cache).
    """
    saved = ctx.saved_tensors
    if len(saved) != 2 or not _eager(*saved, grad):
        return None
    input, target = saved
    d = dphi_(torch.sub(input, target), ctx.p)
    if ctx.reduction == R.NONE:
        d = d.mul_(grad)
        if k != 1:
            d = d.mul_(_const(k, d.dtype, d.device))
    else:
        scale = k / max(d.numel(), 1) if ctx.reduction == R.MEAN else k  # (empty: any scale)
        d = d.mul_(grad if scale == 1 else grad.mul(_const(scale, grad.dtype, grad.device)))
    need_x, need_y = ctx.needs_input_grad[:2]
    if need_x and not need_y and d.shape == input.shape:
        return d, None  # the usual call, without _split's generality
    return _split(d, need_x, need_y, (input.shape, input.dtype), (target.shape, target.dtype), True)


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

    **Memory.** With ``keep_sign`` (real, unweighted, and an input requires grad: the functional
    decides) the Function also returns :math:`\operatorname{sign}(d)` as a non-differentiable
    int8 output and keeps only it for backward (one byte per element; torch keeps the float
    :math:`d`): the gradients are :math:`\pm\operatorname{sign}(d)\,g_\ell`, linear in
    :math:`g_\ell` with a piecewise-constant factor, so double backward needs nothing more. The
    inputs are still saved for forward AD (references, not copies).
    """

    @staticmethod
    def forward(input, target, weight, reduction, keep_sign):
        if weight is None and _eager(input, target):
            d = torch.sub(input, target)
            sign = d.sign().to(torch.int8) if keep_sign else d.new_empty(0, dtype=torch.int8)
            return eager_reduce(d.abs_(), reduction), sign
        dtype = _promoted(input, target)
        if dtype.is_complex:
            dtype = dtype.to_real()
        if weight is not None:
            dtype = _weighted_dtype(dtype, input, target, weight, reduction)
        loss = _forward(_abs, None, input, target, weight, reduction, dtype)
        if keep_sign:
            ct = _compute_dtype(input, target)
            sign = (_as(input, ct) - _as(target, ct)).sign().to(torch.int8)
        else:
            sign = loss.new_empty(0, dtype=torch.int8)
        return loss, sign

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, target, weight, reduction, keep_sign = inputs
        loss, sign = output
        ctx.mark_non_differentiable(sign)
        ctx.keep_sign = keep_sign
        if not keep_sign:
            _setup(ctx, input, target, weight, reduction, None, loss)
            return
        ctx.reduction = reduction
        ctx.p = None
        ctx.out_dtype = loss.dtype
        ctx.metas = ((input.shape, input.dtype), (target.shape, target.dtype))
        ctx.save_for_backward(sign)
        ctx.save_for_forward(input, target)

    @staticmethod
    def backward(ctx, grad, _grad_sign):
        if not ctx.keep_sign:
            return (*_backward(_abs, _sgn, ctx, grad), None, None)
        (sign,) = ctx.saved_tensors
        need_x, need_y = ctx.needs_input_grad[:2]
        if eager_in_place(grad):
            # int8 x float multiplies slowly (mixed dtypes): convert once, then scale in place
            if ctx.reduction == R.MEAN:
                # (the cached count only where the dtype holds it as the Python number would be)
                n = sign.numel()
                if grad.dtype in _EAGER_DTYPES:
                    grad = grad.div(_const(n, grad.dtype, grad.device))
                else:
                    grad = grad / n
            gd = sign.to(grad.dtype).mul_(grad)
            gx, gy = _split(gd, need_x, need_y, *ctx.metas, True)
        else:
            gd = sign * R.unreduce(grad, sign.shape, ctx.reduction)
            gx, gy = _split(gd, need_x, need_y, *ctx.metas, False)
        return gx, gy, None, None, None

    @staticmethod
    def jvp(ctx, t_input, t_target, t_weight, _r, _k):
        input, target = ctx.saved_tensors[:2]  # in jvp: the ones saved for forward
        if input.is_complex() or target.is_complex():
            # d|d| = Re(conj(sgn d) · dd): the real directional derivative of the modulus.
            d = input - target
            t_d = add_tangents(t_input, None if t_target is None else -t_target)
            t_loss = (d.sgn().conj() * t_d).real
            return R.reduce(t_loss.expand(d.shape), ctx.reduction).to(ctx.out_dtype), None
        return _jvp(_abs, _sgn, ctx, t_input, t_target, t_weight), None


# --------------------------------------------------------------------------------------------
# MSE


def _square(d, _):
    return d * d


def _twice(d, _):
    return 2 * d


def _square_(d, _scratch, _):
    return d.mul_(d)  # (x - y)·(x - y), as torch's kernel


def _identity_(d, _):
    return d  # φ'(d)/2 for the eager backward (k = 2)


class MSELossFunction(LossFunction):
    r"""Squared error :math:`\ell = w\,(x - y)^2`.

    Derivative: :math:`\varphi(d) = d^2`, :math:`\varphi'(d) = 2d`, :math:`\varphi'' = 2`.
    """

    @staticmethod
    def forward(input, target, weight, reduction):
        if weight is None and _eager(input, target):
            return _eager_forward(_square_, None, input, target, reduction)
        dtype = _promoted(input, target)
        if weight is not None:
            dtype = _weighted_dtype(dtype, input, target, weight, reduction)
        return _forward(_square, None, input, target, weight, reduction, dtype)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, target, weight, reduction = inputs
        _setup(ctx, input, target, weight, reduction, None, output)

    @staticmethod
    def backward(ctx, grad):
        grads = _eager_backward(_identity_, ctx, grad, 2.0)
        if grads is not None:
            return (*grads, None, None)
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


def _huber_factors(d, scratch, delta):
    # (d - c/2, c), the first in d's buffer: c in the scratch (or a new buffer)
    c = torch.clamp(d, -delta, delta, out=scratch)
    return d.sub_(c, alpha=0.5), c


def _huber_(d, scratch, delta):
    # _huber in place: d becomes (d - c/2)·c
    e, c = _huber_factors(d, scratch, delta)
    return e.mul_(c)


def _dhuber_(d, delta):
    return d.clamp_(-delta, delta)


class HuberLossFunction(LossFunction):
    r"""Huber loss with threshold :math:`\delta > 0`:

    .. math::
        \varphi(d) = \begin{cases} \tfrac12 d^2 & |d| < \delta \\
                                  \delta\,(|d| - \tfrac12\delta) & \text{otherwise} \end{cases}
        \qquad \varphi'(d) = \operatorname{clamp}(d, -\delta, \delta).

    The two branches meet with equal value and slope at :math:`|d| = \delta`, so the derivative
    is continuous; its own derivative (used by double backward) is :math:`[\,|d| \le \delta\,]`.
    The result has the dtype of ``input`` (torch's rule for Huber, unlike L1/MSE, which promote),
    promoted with ``weight``'s where one is given (torch multiplies its loss by the weight); it is
    computed in the promotion of every operand (a float64 target counts) and rounded once.
    """

    @staticmethod
    def forward(input, target, weight, reduction, delta):
        if weight is None and _eager(input, target):
            return _eager_forward(_huber_, delta, input, target, reduction, _huber_factors)
        # torch multiplies its unweighted loss (input's dtype) by the weight: that promotes
        dtype = input.dtype if weight is None else _weighted_dtype(input.dtype, input, target, weight, reduction)
        return _forward(_huber, delta, input, target, weight, reduction, dtype)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, target, weight, reduction, delta = inputs
        _setup(ctx, input, target, weight, reduction, delta, output)

    @staticmethod
    def backward(ctx, grad):
        grads = _eager_backward(_dhuber_, ctx, grad)
        if grads is not None:
            return (*grads, None, None, None)
        return (*_backward(_huber, _dhuber, ctx, grad), None, None)

    @staticmethod
    def jvp(ctx, t_input, t_target, t_weight, _r, _d):
        return _jvp(_huber, _dhuber, ctx, t_input, t_target, t_weight)


def _smooth_l1(d, beta):
    # Kept as torch's two branches (not Huber/β): dividing δ(|d| - δ/2) by β would add two
    # roundings to the linear branch. (The eager _smooth_l1_ folds 1/β into the clamp instead.)
    ad = d.abs()
    if beta == _INF:
        # 0, except NaN at d = ±inf (inf - inf) and NaN: without d², which overflows first
        return ad * 0
    return torch.where(ad < beta, 0.5 * d * d / beta, ad - 0.5 * beta)


def _dsmooth_l1(d, beta):
    # d/β inside, ±1 outside (exactly ±1 at |d| = β); β = inf gives 0, as the loss is 0 there,
    # except at d = ±inf = ±β, where torch's |d| >= β branch gives sign(d) (d/β would be NaN)
    if beta == _INF:
        return torch.where(d.isinf(), d.sign(), d * 0)  # (NaN stays NaN, as torch's x/β)
    return (d / beta).clamp(-1.0, 1.0)


_INF = float("inf")


def _smooth_l1_(d, scratch, beta):
    r"""_smooth_l1 in place (for :func:`_eager_forward`), without ``where`` (not vectorised on
    the CPU: about 30 times slower than a pass), as Huber's :math:`c\,(d - c/2)` with the
    division by :math:`\beta` folded into :math:`c = \operatorname{clamp}(d, -\beta, \beta)`:
    :math:`\ell = (d - c/2)\cdot(c/\beta)` (both factors have the sign of :math:`d`).

    Outside, :math:`c/\beta` is exactly :math:`\pm 1` and the loss is torch's
    :math:`|d| - \beta/2` bit for bit; inside it is :math:`(d/2)\cdot(d/\beta)`: two roundings,
    as torch's :math:`(|d|/2 \cdot |d|)/\beta` (halving is exact). ``beta = inf`` gives 0 inside;
    NaN stays NaN.
    """
    e, c = _smooth_l1_factors(d, scratch, beta)
    return e.mul_(c)


def _smooth_l1_factors(d, scratch, beta):
    # (d - c/2, c/β), the first in d's buffer: c in the scratch (or a new buffer)
    c = torch.clamp(d, -beta, beta, out=scratch)
    d = d.sub_(c, alpha=0.5)
    return d, (c if beta == 1 else c.div_(_const(beta, c.dtype, c.device)))  # β = 1: the default


def _dsmooth_l1_(d, beta):
    # β·φ'(d) = clamp(d, -β, β) for the eager backward (k = 1/β): clamp(d/β, -1, 1) = clamp(d,
    # -β, β)/β, with the division folded into the 0-dim scale g/(βn)
    return d.clamp_(-beta, beta)


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
        if _eager(input, target):
            return _eager_forward(_smooth_l1_, beta, input, target, reduction, _smooth_l1_factors)
        dtype = _promoted(input, target)
        return _forward(_smooth_l1, beta, input, target, None, reduction, dtype)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, target, reduction, beta = inputs
        _setup(ctx, input, target, None, reduction, beta, output)

    @staticmethod
    def backward(ctx, grad):
        # (below 1e-30, 1/β could overflow float32: the general code divides by β instead)
        # (β = inf: the general code, whose derivative handles d = ±inf)
        grads = _eager_backward(_dsmooth_l1_, ctx, grad, 1.0 / ctx.p) if 1e-30 < ctx.p < _INF else None
        if grads is not None:
            return (*grads, None, None)
        gx, gy, _ = _backward(_smooth_l1, _dsmooth_l1, ctx, grad)
        return gx, gy, None, None

    @staticmethod
    def jvp(ctx, t_input, t_target, _r, _b):
        return _jvp(_smooth_l1, _dsmooth_l1, ctx, t_input, t_target, None)
