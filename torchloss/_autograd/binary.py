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

**Eager path.** When nothing differentiates, traces or vmaps the computation
(:func:`~torchloss._autograd._base.eager_in_place`) and the inputs already have the compute
dtype, forward and backward run a second implementation of the same formulas in at most two
full-size buffers (torch's own peak), updated in place and written with ``out=``: on a CPU
every further live temporary of a large batch costs a fresh allocation and its page faults,
which is most of the time of these memory-bound losses, and on a small batch every op costs a
dispatch, so the formulas are chosen for few ops. Fused primitives do that:
``torch.logaddexp(a, b)`` is a stable :math:`\log(e^a + e^b)` in one pass,
``torch.addcmul(0, x, y, value=-1)`` is :math:`-xy` in one, and ``torch.lerp(a, b, y)`` is
:math:`(1-y)\,a + y\,b` without forming :math:`1 - y` (torch evaluates ``b - (b - a)(1 - y)``
for :math:`y \ge 1/2`, where :math:`1 - y` is exact, and returns ``a`` or ``b`` exactly for
:math:`y \in \{0, 1\}`). The scalar factor of the upstream gradient is formed on the 0-d
gradient and applied in one pass; Python scalars in arithmetic are avoided on the hot path
where an op without one does as well (each costs a wrapper tensor, about a microsecond on a
small batch).

**Native kernels.** When torchloss's native kernels are built, a small eager CPU call of BCE or
BCE with logits (contiguous float/double input, target and optional weight of one shape, no
``pos_weight``, up to 2048 resp. 1024 elements) runs the C++ loops of
``torchloss/_native/csrc/binary.cpp`` instead of these Functions: the same formulas, operation
by operation (the file's header restates them), without a Python Function's overhead. Larger
calls stay here, where the vectorised ops cost less per element than the kernels' scalar loops.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .. import _native
from .. import _reduction as R
from ._base import LossFunction, chunked_reduce, eager_reduce, constant as _const, add_tangents, eager_in_place, opmath_dtype, unpack, zero_tangent

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


# The dtypes the eager code computes in their own precision (float16/bfloat16 need opmath).
_EAGER_DTYPES = (torch.float32, torch.float64)

# Elements per chunk of the chunked eager BCE-with-logits (512 KiB of float32 per buffer): the
# chunk's x, y and two scratch buffers stay in cache across the few passes over them, and no
# full-size temporary is allocated at all (see :func:`_bcel_eager`).
_CHUNK = 1 << 17

# Up to this many elements the eager code prefers fewer ops to faster ones (a dispatch costs
# more than the whole loop).
_FEW = 4096



def _check_unit(t: Tensor, name: str) -> None:
    # one aminmax pass and two host reads (NaN propagates into both extremes)
    if t.numel():
        lo, hi = torch.aminmax(t)
        if not (float(lo) >= 0 and float(hi) <= 1):
            raise RuntimeError(f"all elements of {name} should be between 0 and 1")


def _check_bce_values(input: Tensor, target: Tensor, loss: Tensor | None, reduction: int) -> None:
    """The [0, 1] check of BCE's plain CPU tensors, run inside the forward (no autograd there, so
    no ``detach``) when the functional defers it. ``target`` is read with one ``aminmax``; the
    input is checked *after the fact*: an input outside [0, 1] (or NaN) makes its log NaN, and
    the NaN survives the clamps, the lerp, any weight and the sum, so a reduced loss that is not
    NaN proves the input in range (one host read); only a NaN loss (or 'none') costs the full
    pass. ``loss`` None: before the loss exists, only the target. torch reports the input first
    when both are out of range, so a bad target re-checks the input before raising."""
    if loss is None:
        try:
            _check_unit(target, "target")
        except RuntimeError:
            _check_unit(input, "input")
            raise
        return
    if reduction != R.NONE:
        v = float(loss)
        if v == v:
            return
    _check_unit(input, "input")


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


def _bce_eager(x: Tensor, y: Tensor, w: Tensor | None, reduction: int) -> Tensor:
    r"""The reduced BCE, eager (two full-size buffers): :math:`-\ell = (1-y)L_1 + yL_0 =`
    ``lerp(L1, L0, y)`` with :math:`L_1 = \max(\log(1-x), -100)`, :math:`L_0 = \max(\log x, -100)`."""
    neg_loss = torch.neg(x).log1p_().clamp_min_(_LOG_MIN)
    l0 = torch.log(x).clamp_min_(_LOG_MIN)
    # y = 0 and y = 1 give L1 and L0 exactly; in between lerp rounds like torch's two products
    neg_loss = torch.lerp(neg_loss, l0, y, out=neg_loss)
    del l0
    if w is not None:
        neg_loss.mul_(w)
    # negated element-wise (not after the reduction, nor by ``0 - x``, which costs a Python
    # scalar's wrapper tensor): a zero mean is +0.0, as torch's sum of its (-0.0) terms
    return eager_reduce(neg_loss.neg_(), reduction)


def _times_grad(gx: Tensor, grad: Tensor, reduction: int, negate: bool = False) -> Tensor:
    """``gx`` times the gradient of the element-wise loss, in place: ``grad`` (0-d for 'mean'
    and 'sum'), divided by the number of elements for 'mean'; negated with ``negate``."""
    if grad.dim() == 0:  # 'mean' and 'sum': the factor is a scalar, one pass over gx
        if reduction == R.MEAN:
            n = gx.numel()
            return gx.mul_(grad.div(_const(-n if negate else n, grad.dtype, grad.device)))
        return gx.mul_(grad.neg() if negate else grad)
    gx.mul_(grad)
    return gx.neg_() if negate else gx


def _bce_grad_eager(x: Tensor, y: Tensor, grad: Tensor, w: Tensor | None, reduction: int) -> Tensor:
    """``(x - y) / max(x(1-x), eps)`` times the loss gradient, eager: the gradient's buffer and
    one for the denominator, :math:`x(1-x)` as ``lerp(x, 0, x)`` (:math:`x - x^2` below 1/2,
    :math:`x(1-x)` with an exact :math:`1-x` above: the two roundings of torch's ``(1-x)·x``)."""
    d = torch.lerp(x, _const(0.0, x.dtype, x.device), x).clamp_min_(_BCE_EPS)
    gx = torch.sub(x, y).div_(d)
    del d
    if w is not None:
        gx.mul_(w)
    return _times_grad(gx, grad, reduction)


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

    ``check`` (the functional sets it for plain CPU tensors outside any transform) asks the
    forward to run the [0, 1] check itself, mostly after the fact; see :func:`_check_bce_values`.
    """

    @staticmethod
    def forward(input, target, weight, reduction, check):
        if check:
            _check_bce_values(input, target, None, reduction)
        dt = input.dtype
        ct = dt if weight is None and dt in _EAGER_DTYPES else compute_dtype(dt, weight)
        if ct == dt and eager_in_place(input, target, weight):
            loss = _bce_eager(input, target, weight, reduction)
        else:
            loss = _bce_elementwise(input.to(ct), target.to(ct))
            if weight is not None:
                loss = loss * weight.to(ct)
            loss = R.reduce(loss, reduction).to(dt)
        if check:
            _check_bce_values(input, target, loss, reduction)
        return loss

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, target, weight, reduction, _check = inputs
        ctx.reduction = reduction
        ctx.out_dtype = output.dtype
        tensors = (input, target) if weight is None else (input, target, weight)
        ctx.save_for_backward(*tensors)
        ctx.save_for_forward(*tensors)

    @staticmethod
    def backward(ctx, grad):
        input, target, weight = unpack(ctx, 3)
        need_x, need_y = ctx.needs_input_grad[:2]
        dt = input.dtype
        ct = dt if weight is None and dt in _EAGER_DTYPES else compute_dtype(dt, weight)
        if ct == dt and eager_in_place(input, target, weight, grad):
            gx = _bce_grad_eager(input, target, grad, weight, ctx.reduction) if need_x else None
            gy = None
            if need_y:
                gy = torch.logit(input)
                gy = _times_grad(gy if weight is None else gy.mul_(weight), grad, ctx.reduction, True)
            return gx, gy, None, None, None
        x, y, w = input.to(ct), target.to(ct), _cast(weight, ct)
        g = R.unreduce(grad.to(ct), x.shape, ctx.reduction)
        if w is not None:
            g = g * w
        gx = R.sum_to(g * _bce_dx(x, y), input) if need_x else None
        gy = R.sum_to(g * _bce_dy(x), target) if need_y else None
        return gx, gy, None, None, None

    @staticmethod
    def jvp(ctx, t_input, t_target, _t_weight, _r, _c):
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


def _chunked(x: Tensor, *others: Tensor) -> bool:
    """Whether the eager code runs chunk by chunk: contiguous CPU tensors of one shape above
    :data:`_CHUNK` elements (on a GPU full-size temporaries are cheap and every chunk's op a
    kernel launch)."""
    return (
        x.numel() > _CHUNK
        and x.device.type == "cpu"
        and x.is_contiguous()
        and all(t.shape == x.shape and t.is_contiguous() for t in others)
    )


def _bcel_terms(x: Tensor, y: Tensor, t: Tensor | None, h: Tensor | None) -> Tensor:
    r"""The element-wise BCE of logits into ``t`` (``h``: a scratch of the same size; None:
    allocated), as :math:`T + x(H - y)` with :math:`T = \operatorname{sp}(-|x|)` and
    :math:`H = [x \ge 0]`: :math:`\operatorname{sp}(-x) + (1-y)x` for :math:`x \ge 0` and
    :math:`\operatorname{sp}(x) - yx` below, the symmetric form's value without cancellation
    (for targets in [0, 1] both terms are non-negative; :math:`H - y` rounds as torch's
    :math:`1 - y`), and the same infinities as the differentiable path (an infinite logit times
    a zero factor is NaN). ``logaddexp(·, 0)`` is a stable softplus in one pass. Fewer ops
    would do as ``logaddexp(-xy, (1-y)x)`` or ``lerp(sp(x), sp(-x), y)``, but those are NaN
    rather than torch's inf at :math:`x = +\infty, y = 0`.

    On a few elements ``copysign(x, -1)`` gives :math:`-|x|` and ``heaviside(x, 1)`` gives
    :math:`H` as a float (1 at ±0) in one op each; on the CPU both are scalar loops (about ten
    times slower per element than ``abs`` + ``neg_`` and ``ge``), so more elements take those."""
    zero = _const(0.0, x.dtype, x.device)
    if t is None and x.numel() <= _FEW:
        t = torch.copysign(x, _const(-1.0, x.dtype, x.device))
        h = torch.heaviside(x, _const(1.0, x.dtype, x.device))
    else:
        t = torch.abs(x, out=t).neg_()
        h = torch.ge(x, zero, out=torch.empty_like(x) if h is None else h)
    t = torch.logaddexp(t, zero, out=t)  # T, one pass
    return torch.addcmul(t, x, h.sub_(y), out=t)


def _bcel_eager(x: Tensor, y: Tensor, reduction: int) -> Tensor:
    """The reduced BCE of logits without weights, eager (:func:`_bcel_terms`). A large
    contiguous pair runs chunk by chunk in two chunk-sized buffers that stay in cache across
    the passes ('none' writes its chunks straight into the output): no full-size temporary at
    all, where torch's kernel allocates several. 'mean' and 'sum' add up the chunks' sums (each
    a cascade sum as torch's; the total of a few dozen is as accurate as one sum)."""
    if not _chunked(x, y):  # (out=None: the ops allocate)
        return eager_reduce(_bcel_terms(x, y, None, None), reduction)
    return chunked_reduce(x, y, _bcel_terms, reduction, _CHUNK)


def _bcel_dx_into(x: Tensor, y: Tensor, gx: Tensor | None, q: Tensor | None, scale: Tensor) -> Tensor:
    """``(1-y)σ(x) - yσ(-x)`` times ``scale`` into ``gx`` (``q``: a scratch) as
    ``lerp(σ(x), -σ(-x), y)``: each sigmoid where it is small enough not to cancel, no
    ``1 - y`` formed."""
    q = torch.neg(x, out=q).sigmoid_().neg_()
    gx = torch.sigmoid(x, out=gx)
    gx = torch.lerp(gx, q, y, out=gx)
    return gx.mul_(scale)


def _bcel_grad_eager(x: Tensor, y: Tensor, grad: Tensor, reduction: int) -> Tensor:
    """The input gradient of :func:`_bcel_eager` (:func:`_bcel_dx_into`): the gradient's buffer
    and a scratch, chunk by chunk for a large contiguous pair (the scratch chunk-sized)."""
    scale = grad
    if grad.dim() == 0 and reduction == R.MEAN:  # the factor of 'mean', formed on the 0-d grad
        scale = grad.div(_const(x.numel(), grad.dtype, grad.device))
    kernels = _native.module
    if (
        kernels is not None
        and x.dtype == torch.float32
        and _chunked(x, y)
        and (scale.dim() == 0 or _chunked(x, scale))
        and _native.eager(x, y, scale)
    ):
        # the same formula in one vectorised pass (csrc/binary.cpp), where the ops below take
        # six, each a dispatch per chunk
        return kernels.binary_cross_entropy_with_logits_grad(x, y, scale)
    if not (_chunked(x, y) and (grad.dim() == 0 or _chunked(x, grad))):
        return _bcel_dx_into(x, y, None, None, scale)
    n = x.numel()
    gx = torch.empty_like(x)
    xf, yf, gf = x.view(-1), y.view(-1), gx.view(-1)
    sf = scale.view(-1) if scale.dim() else None
    q = x.new_empty(_CHUNK)
    for i in range(0, n, _CHUNK):
        m = min(_CHUNK, n - i)
        s = scale if sf is None else sf[i : i + m]
        _bcel_dx_into(xf[i : i + m], yf[i : i + m], gf[i : i + m], q[:m], s)
    return gx


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
        if (
            weight is None
            and pos_weight is None
            and input.dtype == target.dtype
            and input.dtype in _EAGER_DTYPES
            and eager_in_place(input, target)
        ):
            return _bcel_eager(input, target, reduction)
        ct = compute_dtype(torch.promote_types(input.dtype, target.dtype), weight, pos_weight)
        x, y = input.to(ct), target.to(ct)
        # sp(±x) = max(±x, 0) + log1p(exp(-|x|)): the log1p term is shared by both.
        # (1 - y) sp(x) + pw y sp(-x) = (1 - y) max(x, 0) + pw y max(-x, 0) + (1 + (pw - 1) y) tail:
        # the tail once, so a target far outside [0, 1] does not cancel (1 - y) tail + y tail
        tail = torch.log1p(torch.exp(-x.abs()))
        pos = y * x.neg().clamp_min(0)
        if pos_weight is not None:
            pw = pos_weight.to(ct)
            pos = pos * pw
            tail = tail * (1 + (pw - 1) * y)
        loss = (1 - y) * x.clamp_min(0) + pos + tail
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
        need_x, need_y = ctx.needs_input_grad[:2]
        if not (need_y or ctx.has_weight or ctx.has_pos_weight):
            input, target = ctx.saved_tensors
            dt = input.dtype
            if dt == target.dtype and dt in _EAGER_DTYPES and eager_in_place(input, target, grad):
                return _bcel_grad_eager(input, target, grad, ctx.reduction), None, None, None, None
        input, target, ct, w, pw = BCEWithLogitsLossFunction._unpack(ctx)
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
        if ct == input.dtype and eager_in_place(input, target):
            # one full-size buffer: -y·x in one pass, then sp in place in one fused pass
            zero = input.new_zeros(())
            z = torch.addcmul(zero, input, target, value=-1)
            return R.reduce(torch.logaddexp(z, zero, out=z), reduction)
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
        if ct == input.dtype and eager_in_place(input, target, grad):
            # -y·σ(-y·x)·g in one full-size buffer
            gx = torch.mul(input, target).neg_().sigmoid_().mul_(target)
            return _times_grad(gx, grad, ctx.reduction, negate=True), None, None
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
