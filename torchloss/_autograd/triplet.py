r"""Triplet margin losses: TripletMarginLoss and TripletMarginWithDistanceLoss.

Notation. A *row* is one triplet: vectors :math:`a, p, n` along the last dimension of
``anchor``, ``positive`` and ``negative`` (a 0-d input is a row of one element; the three inputs
have the same rank and broadcast against each other). For two rows :math:`x, y`,

.. math::
    u = (x - y) + \epsilon, \qquad
    d(x, y) = \lVert u \rVert_q = \Big(\sum_k |u_k|^q\Big)^{1/q}

is torch's pairwise distance: ``eps`` is added to every component of the *difference vector*
(not to the norm), so :math:`d(a, a) = \epsilon D^{1/q}`, and the norm degree :math:`q` (the
loss's ``p``, renamed here so as not to clash with the positive :math:`p`) is any float:
:math:`q = \infty` is :math:`\max_k |u_k|`, :math:`q = -\infty` is :math:`\min_k |u_k|`,
:math:`q = 0` counts the non-zero components, and a negative :math:`q` is the formula as written
(a zero component makes :math:`d = 0`). With :math:`d_+ = d(a, p)`, :math:`d_- = d(a, n)`,
:math:`d_s = d(p, n)` and the margin :math:`m > 0`, each row's loss is

.. math::
    z = (m + d_+) - \delta, \qquad \ell = \max(z, 0), \qquad
    \delta = d_- \text{ or, with ``swap``, } \delta = \min(d_-, d_s),

evaluated in this order (torch's), so that the sign of :math:`z` agrees with torch's at exact
kinks. The rows' losses are reduced inside the Function.

**Derivative of the distance.** With :math:`\operatorname{sgn}(u) = u/|u|` (0 at 0; for complex
:math:`u` this gives torch's convention for the gradient of a real function),

.. math::
    c_k = \frac{\partial d}{\partial u_k} =
    \frac{\operatorname{sgn}(u_k)\,|u_k|^{q-1}}{d^{\,q-1}}
    = \underbrace{\operatorname{sgn}(u_k)\,|u_k|^{q-1}}_{e_k(u)}\;
      \underbrace{d^{\,1-q}}_{r(d)},

which is :math:`\operatorname{sgn}(u_k)` for :math:`q = 1` and :math:`u_k / d` for :math:`q = 2`.
Where this is 0/0 or :math:`0 \cdot \infty` torch defines it, and torchloss follows: for
:math:`q > 1` the whole row is 0 where :math:`d = 0` (only possible with ``eps = 0`` or an
``eps`` cancelling the difference exactly); for :math:`q < 1`, :math:`e_k = 0` where
:math:`u_k = 0`; for :math:`q = \pm\infty` the gradient is :math:`\operatorname{sgn}(u_k)` split
evenly among the components attaining the max (min), NaNs counting as attaining it; for
:math:`q = 0` there is no gradient at all (torch returns ``None`` for every input, and so does
torchloss). Since :math:`u_{ap} = a - p + \epsilon`, :math:`\partial d_+/\partial a = c^+` and
:math:`\partial d_+/\partial p = -c^+` (similarly for :math:`d_-` and :math:`d_s`).

**Derivative of the hinge.** ``clamp_min`` passes the gradient at exactly 0 (torch's
``clamp_min``): :math:`h = [z \ge 0]` (0 for a NaN :math:`z`). ``min`` splits the gradient ½/½
on a tie :math:`d_- = d_s` (torch's ``minimum``), which gives the weights

.. math::
    w_- = [d_- < d_s] + \tfrac12 [d_- = d_s], \qquad w_s = [d_s < d_-] + \tfrac12 [d_- = d_s]

(both 1 when the comparison involves a NaN, as torch's ``minimum`` backward; without swap
:math:`w_- = 1`, :math:`w_s = 0`). With :math:`g_r` the upstream gradient of row :math:`r` (``g``,
or ``g / R`` for ``'mean'`` over :math:`R` rows) and the row coefficients
:math:`k_+ = g_r h`, :math:`k_- = g_r h w_-`, :math:`k_s = g_r h w_s`, the terms
:math:`T_+ = k_+ c^+`, :math:`T_- = k_- c^-`, :math:`T_s = k_s c^s` give

.. math::
    \frac{\partial L}{\partial a} = T_+ - T_-, \qquad
    \frac{\partial L}{\partial p} = -T_+ - T_s, \qquad
    \frac{\partial L}{\partial n} = T_- + T_s,

each summed over the dimensions its input was broadcast along (and its real part taken for a real
input whose difference with another input is complex). They add up to 0: the loss is invariant
under translating all three inputs.

**Tangent.** :math:`\dot d = \sum_k \operatorname{Re}(\bar c_k \dot u_k)` with
:math:`\dot u_{ap} = \dot a - \dot p` etc., and :math:`\dot\ell = h\,(\dot d_+ - w_- \dot d_-
- w_s \dot d_s)`, reduced. At a swap tie this is the ½/½ average of the two tangents, as torch's
forward AD of ``minimum``: the jvp is the backward's Jacobian applied to the tangent.

**Second derivatives.** A differentiated backward works on the saved difference vectors, which
are differentiable outputs of the Function (see *What is saved*), in differentiable torch ops,
so autograd differentiates the formulas above exactly: for :math:`q = 2`,
:math:`\partial c_k/\partial u_j = (\delta_{kj} - c_k c_j)/d`; :math:`h` and the weights are
piecewise constant. ``where``-guarded quotients ("double where") keep the derivatives finite where
the values are masked.

**What is saved.** The difference vectors :math:`u_{ap}, u_{an}` (and :math:`u_{pn}`), as torch's
composite keeps them, not the inputs; they are extra *differentiable* outputs of ``forward`` (the
functional returns only the loss), so that a backward which is itself differentiated (grad mode
on: ``create_graph=True``, ``torch.func`` transforms, forward-over-reverse) differentiates them
back to the inputs: it recomputes the distances and the hinge from them, and the gradients that
reach them come back into this Function's backward (:math:`\bar a \mathrel{+}= \bar u_{ap} +
\bar u_{an}`, etc.). When a gradient will be wanted (the functional says so), the forward also
returns, non-differentiable, the per-row weights :math:`W_j = |\partial\ell/\partial d_j|\,
r(d_j)` of the first-order backward (:func:`_row_weights`, :math:`O(R)`), so that this backward is
one product per term and no reduction or comparison.

**Numerics.** float16/bfloat16 (and complex32) are computed in float32 (complex64) and the loss
rounded once; so are their gradients. The norms are ``torch.linalg.vector_norm``, the kernel of
torch's ``pairwise_distance``: bit-identical to torch's for the same difference vectors.
The difference vector is formed in torch's order, :math:`(x - y) + \epsilon`, so that :math:`a = p` gives exactly
:math:`u = \epsilon` and torch's distance and gradient there. Integer inputs are subtracted
exactly (in their integer dtype) before the conversion to floating point, as torch does.
"""

from __future__ import annotations

import math
import struct

import torch
from torch import Tensor
from torch.autograd import forward_ad

from .. import _reduction as R
from ._base import (
    LossFunction,
    _combine_categories,
    add_tangents,
    eager_in_place,
    opmath_dtype,
    result_type,
)

_PLAIN = (torch.float32, torch.float64)  # dtypes computed as they are (no opmath conversion)
_REAL = {torch.complex32: torch.float16, torch.complex64: torch.float32, torch.complex128: torch.float64}


# --------------------------------------------------------------------------------------------
# Dtypes


def pair_dtype(x: Tensor, y: Tensor) -> torch.dtype:
    """The dtype of torch's ``x - y + eps`` for same-rank ``x`` and ``y``: their promoted dtype,
    or the default floating dtype when both are integral (the Python float ``eps`` promotes)."""
    dtype = torch.promote_types(x.dtype, y.dtype)
    if dtype.is_floating_point or dtype.is_complex:
        return dtype
    return torch.get_default_dtype()


def distance_dtype(x: Tensor, y: Tensor) -> torch.dtype:
    """The dtype of torch's ``pairwise_distance(x, y)``: :func:`pair_dtype`, made real."""
    dtype = pair_dtype(x, y)
    return _REAL.get(dtype, dtype)


def triplet_dtype(anchor: Tensor, positive: Tensor, negative: Tensor, swap: bool) -> torch.dtype:
    """The dtype of the triplet loss: the promotion of its distances' dtypes (the distances all
    have the same rank, so the plain promotion applies)."""
    dtype = torch.promote_types(distance_dtype(anchor, positive), distance_dtype(anchor, negative))
    if swap:
        dtype = torch.promote_types(dtype, distance_dtype(positive, negative))
    return dtype


def _operation_dtype(a: torch.dtype, a_dim: bool, b: torch.dtype, b_dim: bool) -> tuple[torch.dtype, bool]:
    """The dtype (and dimensionality) of a binary tensor operation: ATen's rule for dimensioned
    and 0-d operands."""
    if a_dim == b_dim:
        return torch.promote_types(a, b), a_dim
    if a_dim:
        return _combine_categories(a, b), True
    return _combine_categories(b, a), True


def margin_dtype(margin, first: torch.dtype, first_dim: bool) -> tuple[torch.dtype, bool]:
    """The dtype (and dimensionality) of torch's ``margin + d_pos`` in the distance variant:
    a Python float keeps a floating ``d_pos``'s dtype (else the default dtype); a tensor margin
    (torch's Python arithmetic takes one) promotes by ATen's rule."""
    if isinstance(margin, Tensor):
        return _operation_dtype(margin.dtype, margin.dim() > 0, first, first_dim)
    if not (first.is_floating_point or first.is_complex):
        first = torch.get_default_dtype()
    return first, first_dim


def hinge_dtype(d_pos: Tensor, d_neg: Tensor, d_swap: Tensor | None, margin=None) -> torch.dtype:
    """The dtype of torch's ``clamp_min(margin + d_pos - delta, 0)`` for distances a user's
    distance function returned, with ``delta = d_neg`` or ``minimum(d_neg, d_swap)``.

    ``margin + d_pos`` (a Python float and a tensor) has the dtype of ``d_pos`` if it is floating,
    else the default dtype; its difference with ``delta`` follows ATen's rule for dimensioned and
    0-d operands.
    """
    if d_swap is None:
        delta, delta_dim = d_neg.dtype, d_neg.dim() > 0
    else:
        delta, delta_dim = result_type(d_neg, d_swap), d_neg.dim() > 0 or d_swap.dim() > 0
    first, first_dim = margin_dtype(margin, d_pos.dtype, d_pos.dim() > 0)
    return _operation_dtype(first, first_dim, delta, delta_dim)[0]


# --------------------------------------------------------------------------------------------
# The p-norm distance and its derivative, written from primitives.


def _rows(t: Tensor) -> Tensor:
    """A 0-d input as a row of one element (torch's norm over "the last dimension" of a 0-d
    tensor is its absolute value); other inputs unchanged."""
    return t.reshape(1) if t.dim() == 0 else t


def _difference(x: Tensor, y: Tensor, eps: float) -> Tensor:
    r""":math:`u = (x - y) + \epsilon` in the compute dtype, as a fresh tensor.

    Floating (or mixed) operands are converted first and subtracted in the compute dtype (float32
    for float16/bfloat16: no rounding of the difference to half precision); two integral operands
    are subtracted exactly in their integer dtype first, as torch does, then converted. The
    addition of ``eps`` happens in place on the fresh difference (autograd's subtraction does not
    need its result, so this is safe in a differentiated backward too).
    """
    if x.dtype == y.dtype and x.dtype in _PLAIN:
        u = torch.sub(x, y)  # the common case: no conversion
    else:
        ct = opmath_dtype(pair_dtype(x, y))
        if x.dtype.is_floating_point or x.dtype.is_complex or y.dtype.is_floating_point or y.dtype.is_complex:
            u = x.to(ct) - y.to(ct)
        else:
            u = (x - y).to(ct)
    return u.add_(eps)


def _pnorm(u: Tensor, q: float) -> Tensor:
    r""":math:`\lVert u \rVert_q` over the last dimension (see the module notes).

    ``torch.linalg.vector_norm`` is the kernel torch's ``pairwise_distance`` itself ends in, so
    the distances are torch's bit for bit, for every :math:`q` (±inf, 0 and negative included),
    in one pass and without a temporary the size of ``u``. Where a differentiated backward
    recomputes the distances, autograd differentiates this norm with torch's own formula, which
    is the derivative of the module notes (0 where it is undefined, as torch).
    """
    return torch.linalg.vector_norm(u, q, -1)


def _row_scale(d: Tensor, k: Tensor | None, q: float, exact: bool) -> Tensor | None:
    r""":math:`k\,r(d)` per row, with :math:`r(d) = d^{1-q}` and 0 where :math:`d = 0` (torch
    masks the row there for :math:`q > 1`; for :math:`q < 1` the power is 0 anyway); ``k``
    ``None`` means 1, and ``None`` is returned for 1 (:math:`q = 1`, no ``k``).

    ``exact`` (a backward that is itself differentiated, or a jvp): the "double where" keeps the
    derivative of the masked-out quotient finite. Otherwise the quotient is formed directly and
    masked once (three small ops per row vector instead of five).
    """
    if q == 1:
        return k
    zero = d == 0
    if exact:
        safe = torch.where(zero, 1, d)
        scale = safe.reciprocal() if q == 2 else safe.pow(1 - q)
        scale = scale if k is None else k * scale
    elif q == 2:
        scale = d.reciprocal() if k is None else k / d
    else:
        scale = d.pow(1 - q) if k is None else k * d.pow(1 - q)
    return torch.where(zero, 0, scale)


def _elementwise(u: Tensor, q: float, in_place: bool) -> Tensor:
    r""":math:`e_k(u) = \operatorname{sgn}(u_k)|u_k|^{q-1}` for finite :math:`q \ne 0`.

    ``in_place``: ``u`` is a temporary that may be overwritten (first-order backward only). For
    :math:`q < 1`, :math:`|u_k|^{q-1}` is infinite at :math:`u_k = 0`, where torch's gradient is
    0: masked with a double where. For :math:`1 < q < 2` the value at 0 is 0 without a mask, but
    its derivative is not finite; there too a differentiable backward masks with a double where.
    """
    if q == 2:
        return u
    if q == 1:
        return u.sgn_() if in_place else u.sgn()
    au = u.abs()
    if q > 2:
        return u * au.pow(q - 2)  # torch's form, u |u|^(q-2)
    if q > 1 and in_place:
        return u.sgn_().mul_(au.pow_(q - 1))
    zero = u == 0
    power = torch.where(zero, 1, au).pow(q - 1)
    return torch.where(zero, 0, u.sgn() * power)


def _term(u: Tensor, d: Tensor, k: Tensor | None, q: float, in_place: bool, exact: bool = True) -> Tensor:
    r""":math:`k \otimes c(u)`: the gradient of :math:`\sum_r k_r\, d_r` with respect to ``u``
    (``k`` ``None`` means 1, which gives :math:`c = \partial d/\partial u` itself).

    ``k`` and ``d`` are per row. ``in_place`` allows overwriting ``u`` (a temporary of the
    broadcast shape of the result); ``exact``: see :func:`_row_scale`.
    """
    if math.isinf(q):
        au = u.abs()
        hit = (au == d.unsqueeze(-1)) | au.isnan()  # the components attaining max (min) |u|
        share = hit.sum(-1).to(au.dtype).reciprocal()  # split evenly among them, as torch
        scale = share if k is None else k * share
        return u.sgn() * hit * scale.unsqueeze(-1)
    scale = _row_scale(d, k, q, exact)
    e = _elementwise(u, q, in_place)
    if scale is None:
        return e
    scale = scale.unsqueeze(-1)
    # in place: e is u or a fresh temporary of its shape
    return e.mul_(scale) if in_place else e * scale


def _dot(c: Tensor, t: Tensor) -> Tensor:
    r""":math:`\sum_k \operatorname{Re}(\bar c_k t_k)` over the last dimension: the tangent of
    a real function of ``u`` whose gradient (torch's convention) is ``c``."""
    if c.is_complex() or t.is_complex():
        return (c.conj() * t).real.sum(-1) if c.is_complex() else (c * t.real).sum(-1)
    return (c * t).sum(-1)


def _to_input(g: Tensor, shape: torch.Size, dtype: torch.dtype) -> Tensor:
    """A gradient computed on the broadcast (compute-dtype) shape, as the gradient of an input of
    ``shape`` and ``dtype``: the real part for a real input, summed over broadcast dimensions (a
    0-d input's row of one element included), in ``dtype``."""
    if g.is_complex() and not dtype.is_complex:
        g = g.real
    if g.shape != shape:
        g = g.sum_to_size(shape)
    return g if g.dtype == dtype else g.to(dtype)


def _combine(x: Tensor | None, y: Tensor | None, sx: int, sy: int) -> Tensor | None:
    r""":math:`s_x x + s_y y` (signs ±1, ``None`` a zero term) for two gradient terms of the same
    input on the difference vectors' shapes.

    When the distance dimension broadcasts (one difference vector has one component, the other
    :math:`D`), the input both terms belong to has one component there: each term is summed over
    it *before* they are added, since adding first would broadcast the one-component term and
    count it :math:`D` times.
    """
    if x is not None and y is not None and x.shape[-1] != y.shape[-1]:
        x, y = x.sum(-1, keepdim=True), y.sum(-1, keepdim=True)
    if y is None:
        return None if x is None else (x if sx > 0 else -x)
    if x is None:
        return y if sy > 0 else -y
    if sx > 0:
        return x + y if sy > 0 else x - y
    return y - x if sy > 0 else -x - y


def _backward_is_differentiated(*tensors: Tensor) -> bool:
    """Whether this backward's result may itself be differentiated, so that it must recompute
    the distances from the inputs rather than use the saved (constant) ones: grad mode is on
    (``create_graph=True``, ``torch.func.grad``), or the inputs carry forward-mode tangents or
    are functorch wrappers (a ``torch.func`` transform may differentiate the backward)."""
    if torch.is_grad_enabled():
        return True
    if torch.compiler.is_compiling():
        return False
    dual = forward_ad._current_level >= 0  # a forward-mode dual level is active
    for t in tensors:
        if torch._C._functorch.is_functorch_wrapped_tensor(t):
            return True
        if dual and forward_ad.unpack_dual(t).tangent is not None:
            return True
    return False


# --------------------------------------------------------------------------------------------
# The hinge, shared by both Functions.


def _delta(d_neg: Tensor, d_swap: Tensor | None) -> Tensor:
    return d_neg if d_swap is None else torch.minimum(d_neg, d_swap)


def _hinge_arg(d_pos: Tensor, d_neg: Tensor, d_swap: Tensor | None, margin: float) -> Tensor:
    """``z = (margin + d_pos) - delta``, in torch's order of operations."""
    return (margin + d_pos) - _delta(d_neg, d_swap)


def _round_scalar(x: float, dtype: torch.dtype) -> float:
    """The Python float ``x`` as ATen converts a scalar operand to a tensor's ``dtype`` (through
    float32), computed on the host without creating a tensor."""
    x32 = struct.unpack("f", struct.pack("f", x))[0] if math.isfinite(x) and abs(x) < 3.4e38 else x
    if dtype == torch.float16:
        try:
            return struct.unpack("e", struct.pack("e", x32))[0]
        except OverflowError:
            return math.copysign(math.inf, x32)
    if dtype == torch.bfloat16:
        bits = struct.unpack("I", struct.pack("f", x32))[0]
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000  # round to nearest even
        return struct.unpack("f", struct.pack("I", bits))[0]
    return x32


def _user_hinge_arg(d_pos: Tensor, d_neg: Tensor, d_swap: Tensor | None, margin: float, out_dtype) -> Tensor:
    """``z`` of a user's distances, in the compute dtype of the loss's dtype ``out_dtype``.

    For float16/bfloat16 each of torch's Python operations (``margin + d_pos``, then ``- delta``)
    rounds to its result dtype, and so does this, so that the element-wise loss is bit-identical
    to torch's: the user's low-precision distances carry errors of their own that those roundings
    sometimes cancel, so rounding once would make some elements less accurate than torch's (the
    reduction still accumulates in float32 and rounds once).
    """
    ct = opmath_dtype(out_dtype)
    first = d_pos.dtype if (d_pos.dtype.is_floating_point or d_pos.dtype.is_complex) else torch.get_default_dtype()
    if isinstance(margin, Tensor):
        shifted = margin.to(ct) + d_pos.to(ct)
    elif first != ct and first.is_floating_point:
        # torch casts the Python margin to the tensor's dtype, adds in float32 and rounds
        shifted = (_round_scalar(margin, first) + d_pos.to(ct)).to(first).to(ct)
    else:
        shifted = margin + d_pos.to(ct)
    z = shifted - _delta(d_neg.to(ct), None if d_swap is None else d_swap.to(ct))
    if out_dtype != ct:
        z = z.to(out_dtype).to(ct)
    return z


def _swap_weights(d_neg: Tensor, d_swap: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
    """``(k w_-, k w_s)``: torch's ``minimum`` backward, ½/½ on a tie, both sides where the
    comparison involves a NaN (neither ``>`` nor ``<`` holds). (The user-distance hinge keeps the
    same weights as a compact code instead: :func:`_swap_choice`.)"""
    tie = d_neg == d_swap
    half = 0.5 * k
    k_neg = torch.where(tie, half, torch.where(d_neg > d_swap, 0, k))
    k_swap = torch.where(tie, half, torch.where(d_neg < d_swap, 0, k))
    return k_neg, k_swap


def _row_grad(grad: Tensor, z: Tensor, reduction: int) -> Tensor:
    """:math:`k = g_r h`, per row (the shape of ``z``): the upstream gradient of each row's loss
    where the hinge is active (``z >= 0``: clamp_min passes the gradient at 0), else 0."""
    g = R.unreduce(grad.to(z.dtype), z.shape, reduction)
    return torch.where(z >= 0, g, 0)


# --------------------------------------------------------------------------------------------
# TripletMarginLoss (and the default distance of TripletMarginWithDistanceLoss)


class TripletMarginLossFunction(LossFunction):
    r"""Triplet margin loss with torch's pairwise :math:`q`-norm distance, fully hand-derived.

    ``forward(anchor, positive, negative, margin, p, eps, swap, reduction, with_grad)`` returns
    ``(loss, weights, u_ap, u_an[, u_pn])``: the reduced loss

    .. math::
        \ell_r = \max\big((m + d(a_r, p_r)) - \delta_r,\; 0\big), \qquad
        \delta_r = d(a_r, n_r) \;\text{or}\; \min\big(d(a_r, n_r), d(p_r, n_r)\big)\ (\text{swap}),

    with :math:`d(x, y) = \lVert (x - y) + \epsilon \rVert_q` over the last dimension, followed by
    the backward's per-row weights (non-differentiable; empty unless ``with_grad``) and the
    difference vectors (differentiable), kept for the backward (module notes, *What is saved*;
    the functional returns only the loss).

    **Gradients** (module notes): with :math:`k_+ = g_r h`, :math:`k_- = g_r h w_-`,
    :math:`k_s = g_r h w_s` and :math:`c = \partial d/\partial u = \operatorname{sgn}(u)|u|^{q-1}
    d^{1-q}`,

    .. math::
        \bar a = k_+ c^+ - k_- c^-, \qquad
        \bar p = -k_+ c^+ - k_s c^s, \qquad
        \bar n = k_- c^- + k_s c^s,

    summed back to each input's shape. For :math:`q = 2`, :math:`c = u/d`; for :math:`q = 1`,
    :math:`c = \operatorname{sgn}(u)`; for :math:`q = \pm\infty`, :math:`\operatorname{sgn}(u)`
    shared among the extremal components; for :math:`q = 0`, no gradient (``None``, as torch).

    **Tangent**: :math:`\dot\ell_r = h\,(\dot d_+ - w_-\dot d_- - w_s\dot d_s)` with
    :math:`\dot d = \sum_k \operatorname{Re}(\bar c_k \dot u_k)`, :math:`\dot u_{ap} = \dot a -
    \dot p`, :math:`\dot u_{an} = \dot a - \dot n`, :math:`\dot u_{pn} = \dot p - \dot n`; reduced.

    **Cost.** Forward: the difference vectors (kept for backward) and one norm pass over each, no
    other :math:`R \times D` temporary. First-order backward: each term :math:`T_j` is the saved
    :math:`u_j` (for :math:`q = 2`) times its row weight, one fresh buffer; :math:`\bar a` is
    their difference and the terms become :math:`\bar p`, :math:`\bar n` in place: the three
    gradients are the only :math:`R \times D` allocations (one more with swap). Saved bytes and
    peak memory are torch's or below (torch keeps the same difference vectors).
    """

    @staticmethod
    def forward(anchor, positive, negative, margin, p, eps, swap, reduction, with_grad):
        a, pos, neg = _rows(anchor), _rows(positive), _rows(negative)
        diffs = (_difference(a, pos, eps), _difference(a, neg, eps))
        if swap:
            diffs += (_difference(pos, neg, eps),)
        dists = [_pnorm(u, p) for u in diffs]
        z = _hinge_arg(dists[0], dists[1], dists[2] if swap else None, margin)
        out = R.reduce(z.clamp_min(0), reduction)
        if anchor.dtype == positive.dtype == negative.dtype and anchor.dtype in _PLAIN:
            dtype = anchor.dtype
        else:
            dtype = triplet_dtype(anchor, positive, negative, swap)
        if isinstance(margin, Tensor):
            # (the distance variant's tensor margin: torch's margin + d_pos promotes)
            # (each distance has its own pair's dtype: a 0-d float64 d_neg does not promote a
            # dimensioned float32 margin + d_pos)
            rows = dists[0].dim() > 0
            neg = distance_dtype(anchor, negative)
            if swap:
                neg = torch.promote_types(neg, distance_dtype(positive, negative))
            first, first_dim = margin_dtype(margin, distance_dtype(anchor, positive), rows)
            dtype = _operation_dtype(first, first_dim, neg, rows)[0]
        if out.dtype != dtype:
            out = out.to(dtype)
        if with_grad and _has_weights(p):
            weights = _row_weights(z, dists, p, eager_in_place(z))
        else:
            weights = z.new_empty(0)
        return (out, weights) + diffs

    @staticmethod
    def setup_context(ctx, inputs, output):
        anchor, positive, negative, margin, p, eps, swap, reduction, with_grad = inputs
        _, weights, *diffs = output
        ctx.mark_non_differentiable(weights)
        ctx.set_materialize_grads(False)
        ctx.margin, ctx.p, ctx.eps, ctx.swap, ctx.reduction = margin, p, eps, swap, reduction
        ctx.out_dtype = output[0].dtype
        ctx.has_weights = with_grad and _has_weights(p)
        ctx.like = tuple((t.shape, t.dtype) for t in (anchor, positive, negative))
        # the difference vectors (which torch's composite keeps too), not the inputs
        ctx.save_for_backward(weights, *diffs)
        ctx.save_for_forward(anchor, positive, negative)

    @staticmethod
    def backward(ctx, grad, _grad_weights, *grad_diffs):
        need_a, need_p, need_n = ctx.needs_input_grad[:3]
        if ctx.p == 0 or not (need_a or need_p or need_n):
            # the 0-"norm" counts non-zeros: no gradient (torch returns None for every input)
            return (None,) * 9
        weights, *diffs = ctx.saved_tensors
        ga = gp = gn = None
        if grad is not None:
            ga, gp, gn = _loss_grads(ctx, grad, weights, diffs)
        if any(g is not None for g in grad_diffs):
            # A differentiated backward used the difference vectors (outputs of this Function)
            # and sends their gradients back: u_ap = a - p, u_an = a - n, u_pn = p - n.
            g_ap, g_an, g_pn = tuple(grad_diffs) + (None,) * (3 - len(grad_diffs))
            ga = _combine(ga, _combine(g_ap, g_an, 1, 1), 1, 1)
            gp = _combine(gp, _combine(g_ap, g_pn, -1, 1), 1, 1)
            gn = _combine(gn, _combine(g_an, g_pn, 1, 1), 1, -1)
        like_a, like_p, like_n = ctx.like
        ga = _to_input(ga, *like_a) if need_a and ga is not None else None
        gp = _to_input(gp, *like_p) if need_p and gp is not None else None
        gn = _to_input(gn, *like_n) if need_n and gn is not None else None
        return (ga, gp, gn) + (None,) * 6

    @staticmethod
    def jvp(ctx, t_anchor, t_positive, t_negative, _margin, _p, _eps, _swap, _reduction, _with_grad):
        anchor, positive, negative = ctx.saved_tensors
        q, eps, swap = ctx.p, ctx.eps, ctx.swap
        a, pos, neg = _rows(anchor), _rows(positive), _rows(negative)
        u_ap, u_an = _difference(a, pos, eps), _difference(a, neg, eps)
        u_pn = _difference(pos, neg, eps) if swap else None
        d_pos, d_neg = _pnorm(u_ap, q), _pnorm(u_an, q)
        d_swap = _pnorm(u_pn, q) if swap else None
        z = _hinge_arg(d_pos, d_neg, d_swap, ctx.margin)
        ta = None if t_anchor is None else _rows(t_anchor)
        tp = None if t_positive is None else _rows(t_positive)
        tn = None if t_negative is None else _rows(t_negative)

        def diff_tangent(u, tx, ty):  # u̇ for u = x - y + eps
            du = add_tangents(tx, None if ty is None else -ty)
            return None if du is None else du.to(u.dtype)

        def tangent(u, d, du):  # ḋ for d = |u|_q
            if du is None or q == 0:
                return None
            return _dot(_term(u, d, None, q, False), du)

        du_ap, du_an = diff_tangent(u_ap, ta, tp), diff_tangent(u_an, ta, tn)
        du_pn = diff_tangent(u_pn, tp, tn) if swap else None
        dz = tangent(u_ap, d_pos, du_ap)
        dd_neg = tangent(u_an, d_neg, du_an)
        dd_swap = tangent(u_pn, d_swap, du_pn) if swap else None
        if swap and (dd_neg is not None or dd_swap is not None):
            w_neg, w_swap = _swap_weights(d_neg, d_swap, torch.ones_like(z))
            dd_neg = None if dd_neg is None else w_neg * dd_neg
            dd_swap = None if dd_swap is None else w_swap * dd_swap
        dd = add_tangents(dd_neg, dd_swap)
        dz = add_tangents(dz, None if dd is None else -dd)
        if dz is None:
            dz = torch.zeros_like(z)
        t_loss = torch.where(z >= 0, dz, 0)
        t_out = R.reduce(t_loss, ctx.reduction).to(ctx.out_dtype)
        # (a differentiable output's tangent must be a tensor here: torch's forward AD trips
        # over a None for the third one)
        t_diffs = [torch.zeros_like(u) if du is None else du for u, du in ((u_ap, du_ap), (u_an, du_an), (u_pn, du_pn)) if u is not None]
        return (t_out, None, *t_diffs)


def _has_weights(q: float) -> bool:
    """Whether the forward precomputes the per-row weights of :func:`_row_weights` for the
    backward: every finite non-zero norm (±inf share the gradient among the extremal components,
    which the backward works out from the difference vectors; 0 has no gradient)."""
    return q != 0 and not math.isinf(q)


def _row_weights(z: Tensor, dists: list[Tensor], q: float, fast: bool) -> Tensor:
    r"""The per-row weights of the first-order backward, stacked on a new first dimension:
    :math:`W_j = |\partial\ell/\partial d_j|\, r(d_j)` for :math:`d_+, d_-` (and :math:`d_s`),
    i.e. :math:`h\,r(d_+)`, :math:`h\,w_-\,r(d_-)` (and :math:`h\,w_s\,r(d_s)`), on the loss's
    shape, with :math:`r(d) = d^{1-q}` (0 where :math:`d = 0`, :func:`_row_scale`).

    Computed by the forward (per row: O(R) memory, a few operations on vectors of R numbers)
    when the functional says a gradient will be wanted, so that the backward is just
    :math:`T_j = e(u_j)\,(g_r W_j)` and three sums of terms: no reduction pass, no comparison.
    ``fast`` (eager): the division by zero is masked in place.
    """
    h = z >= 0  # clamp_min passes the gradient at 0; False for a NaN z
    if len(dists) == 3:
        hf = h.to(z.dtype)
        k = torch.stack(torch.broadcast_tensors(hf, *_swap_weights(dists[1], dists[2], hf)))
    else:
        k = h  # the same for both distances (broadcast against them below)
    if dists[0].shape != z.shape or any(d.shape != z.shape for d in dists[1:]):
        dists = torch.broadcast_tensors(z, *dists)[1:]
    dist = torch.stack(dists)
    if q == 2 and fast:
        return (k / dist).masked_fill_(dist == 0, 0)
    w = _row_scale(dist, k.to(z.dtype), q, exact=False)
    return w if w.shape == dist.shape else w.expand(dist.shape)


def _loss_grads(ctx, grad: Tensor, weights: Tensor, diffs: list[Tensor]) -> tuple:
    r"""The gradients of the loss with respect to the three inputs on the broadcast shapes
    (``None`` where not needed): :math:`T_+ - T_-`, :math:`-T_+ - T_s`, :math:`T_- + T_s` with
    :math:`T_j = g_r\,\partial\ell/\partial u_j`, from the saved difference vectors.

    First order (nothing differentiates the backward) with the forward's weights:
    :math:`T_j = e(u_j)\,(g_r W_j)`, and the terms are combined in place (they are fresh
    temporaries). Otherwise (a differentiated backward, a transform, ±inf norms) the distances,
    hinge and weights are recomputed from the difference vectors in differentiable operations.
    """
    need_a, need_p, need_n = ctx.needs_input_grad[:3]
    q, swap = ctx.p, ctx.swap
    u_ap, u_an = diffs[0], diffs[1]
    u_pn = diffs[2] if swap else None
    want_pos, want_neg, want_swap = need_a or need_p, need_a or need_n, swap and (need_p or need_n)
    recompute = _backward_is_differentiated(grad, *diffs)
    if ctx.has_weights and not recompute:
        g = R.unreduce(grad if grad.dtype == weights.dtype else grad.to(weights.dtype), weights.shape[1:], ctx.reduction)
        w = (weights * g).unsqueeze(-1).unbind(0)
        t_pos = _elementwise(u_ap, q, False) * w[0] if want_pos else None
        t_neg = _elementwise(u_an, q, False) * w[1] if want_neg else None
        t_swap = _elementwise(u_pn, q, False) * w[2] if want_swap else None
        del w  # freed before the gradients are allocated (the step's peak memory)
    else:
        d_pos, d_neg = _pnorm(u_ap, q), _pnorm(u_an, q)
        d_swap = _pnorm(u_pn, q) if swap else None
        k_pos = _row_grad(grad, _hinge_arg(d_pos, d_neg, d_swap, ctx.margin), ctx.reduction)
        k_neg, k_swap = (k_pos, None) if d_swap is None else _swap_weights(d_neg, d_swap, k_pos)
        t_pos = _term(u_ap, d_pos, k_pos, q, False, recompute) if want_pos else None
        t_neg = _term(u_an, d_neg, k_neg, q, False, recompute) if want_neg else None
        t_swap = _term(u_pn, d_swap, k_swap, q, False, recompute) if want_swap else None
    ga = _combine(t_pos, t_neg, 1, -1) if need_a else None
    # the terms are fresh temporaries: eager, they become the gradients in place (when their
    # shapes agree, so that nothing broadcasts into them)
    # (and their dtypes: a complex operand makes some difference vectors complex, others real)
    in_place = not recompute and not torch.compiler.is_compiling() and u_ap.shape == u_an.shape and u_ap.dtype == u_an.dtype
    if swap and in_place:
        in_place = u_pn.shape == u_ap.shape and u_pn.dtype == u_ap.dtype
    gp = gn = None
    if need_p:
        gp = (t_pos.neg_() if in_place else -t_pos) if t_swap is None else (t_pos.neg_().sub_(t_swap) if in_place else _combine(t_pos, t_swap, -1, -1))
    if need_n:
        gn = t_neg if t_swap is None else (t_neg.add_(t_swap) if in_place else _combine(t_neg, t_swap, 1, 1))
    return ga, gp, gn


# --------------------------------------------------------------------------------------------
# TripletMarginWithDistanceLoss with a user's distance function: the hinge of given distances


class TripletDistanceHingeFunction(LossFunction):
    r"""The hinge and reduction of triplet distances computed by a user's ``distance_function``.

    ``forward(d_pos, d_neg, d_swap, margin, reduction)``, ``d_swap`` ``None`` without swap,
    returns ``(loss, active[, choice])``:

    .. math::
        z = (m + d_+) - \delta, \qquad \ell = \max(z, 0), \qquad
        \delta = d_- \;\text{or}\; \min(d_-, d_s),

    element-wise over the broadcast shape of the distances (whatever shape the distance function
    returns), then reduced; ``active`` is :math:`[z \ge 0]` and ``choice`` (with swap) says which
    of :math:`d_-, d_s` the minimum took, both non-differentiable outputs kept for the backward
    (the functional returns only the loss). The distances are this Function's inputs: the user's
    function runs before it, as given, and autograd differentiates it; this node is everything
    after it.

    **Gradients**, with :math:`k = g_r [z \ge 0]` (``clamp_min`` passes the gradient at 0) and
    torch's ``minimum`` weights :math:`w_-, w_s` (½/½ on a tie, both 1 when unordered by a NaN):

    .. math::
        \frac{\partial L}{\partial d_+} = k, \qquad
        \frac{\partial L}{\partial d_-} = -k\,w_-, \qquad
        \frac{\partial L}{\partial d_s} = -k\,w_s,

    summed to each distance's shape. The loss is piecewise linear in the distances, so these are
    piecewise constant: :math:`[z \ge 0]` and the weights have derivative 0 and are exact as
    saved even in a differentiated backward (which carries the upstream gradient's derivative;
    second derivatives with respect to the triplet's inputs come from the distance function's own
    graph). **Tangent**: :math:`\dot\ell = [z \ge 0]\,(\dot d_+ - w_- \dot d_- - w_s \dot d_s)`,
    reduced.

    **Memory**: one bool per loss element (and one int8 with swap), not the distances: less than
    torch's ``clamp_min`` and ``minimum``, which keep their float inputs.

    The result has torch's dtype for ``margin + d_pos - delta`` (:func:`hinge_dtype`). For
    float16/bfloat16 distances the element-wise hinge rounds where torch's Python expression does
    (so it is bit-identical to torch's; see :func:`_user_hinge_arg`), and the reduction
    accumulates in float32 and rounds once.
    """

    @staticmethod
    def forward(d_pos, d_neg, d_swap, margin, reduction):
        out_dtype = hinge_dtype(d_pos, d_neg, d_swap, margin)
        z = _user_hinge_arg(d_pos, d_neg, d_swap, margin, out_dtype)
        loss = R.reduce(z.clamp_min(0), reduction).to(out_dtype)
        active = z >= 0  # False for NaN, as clamp_min's backward
        if d_swap is None:
            return loss, active
        ct = z.dtype
        return loss, active, _swap_choice(d_neg.to(ct), d_swap.to(ct))

    @staticmethod
    def setup_context(ctx, inputs, output):
        d_pos, d_neg, d_swap, _margin, reduction = inputs
        _, *masks = output
        ctx.mark_non_differentiable(*masks)
        ctx.reduction, ctx.out_dtype = reduction, output[0].dtype
        ctx.ct = opmath_dtype(ctx.out_dtype)
        ctx.like = [(d.shape, d.dtype) for d in (d_pos, d_neg, d_swap) if d is not None]
        ctx.save_for_backward(*masks)
        ctx.save_for_forward(*masks)

    @staticmethod
    def backward(ctx, grad, *_mask_grads):
        active, *choice = ctx.saved_tensors
        k = torch.where(active, R.unreduce(grad.to(ctx.ct), active.shape, ctx.reduction), 0)
        k_neg, k_swap = (k, None) if not choice else (k * _choice_weights(choice[0], ctx.ct)).unbind(0)
        grads = [k, -k_neg, None if k_swap is None else -k_swap]
        out = []
        for g, need, like in zip(grads, ctx.needs_input_grad[:3], ctx.like + [None]):
            out.append(_sum_to_like(g, *like) if (need and g is not None) else None)
        return out[0], out[1], out[2], None, None

    @staticmethod
    def jvp(ctx, t_pos, t_neg, t_swap, _margin, _reduction):
        active, *choice = ctx.saved_tensors
        ct = ctx.ct
        t_pos = None if t_pos is None else t_pos.to(ct)
        t_neg = None if t_neg is None else t_neg.to(ct)
        t_swap = None if (t_swap is None or not choice) else t_swap.to(ct)
        if choice and (t_neg is not None or t_swap is not None):
            w_neg, w_swap = _choice_weights(choice[0], ct).unbind(0)
            t_neg = None if t_neg is None else w_neg * t_neg
            t_swap = None if t_swap is None else w_swap * t_swap
        t_delta = add_tangents(t_neg, t_swap)
        dz = add_tangents(t_pos, None if t_delta is None else -t_delta)
        if dz is None:
            dz = active.new_zeros((), dtype=ct)
        t_loss = torch.where(active, dz, 0)
        t_out = R.reduce(t_loss, ctx.reduction).to(ctx.out_dtype)
        return (t_out, None) if not choice else (t_out, None, None)


def _swap_choice(d_neg: Tensor, d_swap: Tensor) -> Tensor:
    """Which distance ``minimum(d_neg, d_swap)`` took, as int8: 1 ``d_neg``, -1 ``d_swap``, 0 a
    tie, 2 neither ordered (a NaN); see :func:`_choice_weights`."""
    lt, gt = d_neg < d_swap, d_neg > d_swap
    unordered = ~(lt | gt | (d_neg == d_swap))
    return lt.to(torch.int8) - gt.to(torch.int8) + 2 * unordered.to(torch.int8)


def _choice_weights(choice: Tensor, dtype: torch.dtype) -> Tensor:
    """``(w_-, w_s)`` of torch's ``minimum`` backward from :func:`_swap_choice`, stacked on a new
    first dimension: (1, 0), (0, 1), (½, ½) on a tie, (1, 1) for NaN (neither ``>`` nor ``<``)."""
    w_neg = torch.where(choice == 0, 0.5, torch.where(choice == -1, 0.0, 1.0)).to(dtype)
    w_swap = torch.where(choice == 0, 0.5, torch.where(choice == 1, 0.0, 1.0)).to(dtype)
    return torch.stack((w_neg, w_swap))


def _sum_to_like(g: Tensor, shape: torch.Size, dtype: torch.dtype) -> Tensor:
    """A gradient on the loss's shape, summed over the dimensions the input was broadcast along,
    in the input's dtype."""
    if g.shape != shape:
        g = g.sum_to_size(shape)
    return g.to(dtype)
