r"""Classification losses over a class dimension: NLL and cross entropy.

Notation. The input has its classes along dimension ``cd`` (0 for an unbatched ``(C)`` input,
else 1); a *position* is everything else (a sample, or a sample and a pixel of a
K-dimensional input). For a position, :math:`x_c` are its scores, :math:`t` its class index,
:math:`w_c` the class weights (1 if absent), :math:`v = [t \ne \text{ignore\_index}]`, and
:math:`w_t = v\,w[t]` the weight of its target (0 when ignored).

Reductions. ``'none'`` keeps one value per position (0 at ignored ones); ``'sum'`` adds them;
``'mean'`` divides the sum by :math:`D = \sum_{\text{positions}} w_t` for index targets (the total
weight of the non-ignored targets, torch's definition) and by the number of positions for
probability targets. With the upstream gradient :math:`g` of the reduced value, every position
receives :math:`g_n = g` (sum), :math:`g/D` (mean) or its own :math:`g_n` (none).

Ignored positions contribute exactly 0 to the loss and to every gradient: they are masked with
``where`` (never multiplied by 0), so a ``-inf`` score or a ``0/0`` denominator at an ignored
position cannot leak a NaN, as in torch. When every target is ignored, ``'mean'`` is
:math:`0/0 = \text{NaN}` and the gradient is 0 (torch's behaviour); the backward divides by
:math:`D + [\text{nothing is valid}]` so the masked-out quotient is finite even for double
backward. Non-ignored targets whose weights are all 0 give a NaN loss and NaN gradients, again
as torch.

Memory. Cross entropy saves only its inputs for backward: the logits, the targets and the
weight. The backward recomputes the softmax from the logits in one fused pass
(``torch.softmax``, which computes in float32 for float16/bfloat16 logits without an upcast copy)
and scales and corrects it in place when the backward will not itself be differentiated. torch
instead keeps the :math:`N \times C` log-softmax beside the logits (plus a total weight), so
torchloss never keeps more, and nothing beside the logits that the caller usually still holds.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from .. import _reduction as R
from ._base import _LOW_PRECISION, LossFunction, constant, eager_in_place, opmath, opmath_dtype

_CPU = torch.device("cpu")


def _class_dim(input: Tensor | int) -> int:
    """0 for an unbatched ``(C)`` input, else 1 (``input`` may be given by its number of dims)."""
    dim = input if isinstance(input, int) else input.dim()
    return 0 if dim == 1 else 1


def _targets(input: Tensor | int, target: Tensor, ignore_index: int):
    """``(valid, idx)``: the non-ignored mask (shape of the loss) and the class indices with a
    size-1 class dimension, ignored positions pointing at class 0 (any valid index would do).

    Targets are compared in int64, as ATen's kernels read them: a uint8 target of 156 is not
    ``ignore_index=-100`` (uint8 arithmetic would wrap -100 to 156).
    """
    t = target.long()
    if _class_dim(input) == 0:
        t = t.reshape(())  # an unbatched input takes a () or (1,) target; the loss is ()
    valid = t != ignore_index
    idx = torch.where(valid, t, 0).unsqueeze(_class_dim(input))
    return valid, idx


def _class_view(weight: Tensor, input: Tensor) -> Tensor:
    """The (C) weight shaped to broadcast along the class dimension of ``input``."""
    if input.dim() <= 1:
        return weight
    shape = [1] * input.dim()
    shape[1] = weight.shape[0]
    return weight.view(shape)


def _target_weight(weight: Tensor | None, valid: Tensor, idx: Tensor, cd: int, dtype) -> Tensor:
    r""":math:`w_t = v\,w[t]` per position (``valid`` as 0/1 without a weight)."""
    if weight is None:
        return valid.to(dtype)
    if weight.numel() == 0:  # no classes: every target is ignored (see _pick)
        return valid.to(dtype)
    return torch.where(valid, opmath(weight).take(idx.squeeze(cd)), 0)


def _pick(x: Tensor, cd: int, idx: Tensor) -> Tensor:
    """``x`` at the target classes, the class dimension dropped. With no classes (``C = 0``, so
    every target is ``ignore_index``, as the functional layer checked; torch accepts such a call)
    there is nothing to gather, and the masked values are zeros."""
    if x.shape[cd] == 0:
        return x.new_zeros(idx.squeeze(cd).shape)
    return x.gather(cd, idx).squeeze(cd)


def _per_position(grad: Tensor, reduction: int, denominator) -> Tensor:
    """The gradient each position's loss receives (``denominator`` only for 'mean')."""
    if reduction == R.MEAN:
        return grad / denominator
    return grad


def _reduce_by(loss: Tensor, reduction: int, denominator) -> Tensor:
    if reduction == R.MEAN:
        return loss.sum() / denominator
    if reduction == R.SUM:
        return loss.sum()
    return loss


def _safe_total(wt: Tensor, valid: Tensor) -> Tensor:
    """:math:`D`, plus 1 when no target is valid (then every quotient is masked out anyway): the
    backward divides by this so that the masked quotient, and its own derivative, are finite."""
    total = wt.sum()
    return total + (~valid).all().to(total.dtype)


def _saved(ctx):
    """``(input, target, weight)`` of a cross-entropy Function (weight ``None`` when absent)."""
    saved = ctx.saved_tensors
    return saved[0], saved[1], (saved[2] if len(saved) > 2 else None)


def _softmax(input: Tensor, cd: int) -> Tensor:
    """Softmax along the class dimension, in float32 for float16/bfloat16 (no upcast copy)."""
    if input.dtype in _LOW_PRECISION:
        return torch.softmax(input, cd, dtype=torch.float32)
    return torch.softmax(input, cd)  # no dtype: saves a no-op conversion's dispatch


def _log_softmax(input: Tensor, cd: int) -> Tensor:
    r"""Log-softmax along the class dimension, in float32 for float16/bfloat16.

    Formed as :math:`(x_c - m) - \log\sum_k e^{x_k - m}` with :math:`m` the maximum (torch's
    kernel), not as :math:`\operatorname{logsumexp}(x) - x_c`: when one logit dominates, the
    loss is tiny while the log-sum-exp is large, and rounding the large value first would lose
    the loss entirely (1e-6 becomes 0 for logits near 100 in float32).
    """
    if input.dtype in _LOW_PRECISION:
        return torch.log_softmax(input, cd, dtype=torch.float32)
    return torch.log_softmax(input, cd)


# --------------------------------------------------------------------------------------------
# NLL


def _nll_saved(ctx):
    saved = ctx.saved_tensors
    target, weight = saved[0], (saved[1] if len(saved) > 1 else None)
    valid, idx = _targets(ctx.dim, target, ctx.ignore_index)
    cd = _class_dim(ctx.dim)
    compute = opmath_dtype(ctx.dtype)
    wt = _target_weight(weight, valid, idx, cd, compute)
    return cd, valid, idx, wt


class NLLLossFunction(LossFunction):
    r"""Negative log-likelihood of given log-probabilities: :math:`l = -w_t\, x_t`.

    The loss is linear in :math:`x`: :math:`\partial l/\partial x_c = -w_t\,[c = t]`, so the
    backward scatters :math:`-g_n w_t` into a zero tensor at each target class (with ``scatter``,
    which is differentiable in its source: the double backward w.r.t. the upstream gradient is a
    ``gather``), and the second derivative w.r.t. :math:`x` is 0. The tangent is
    :math:`\dot l = -w_t\,\dot x_t`. Only the target and weight are saved, not the input: the
    gradient does not depend on it (torch keeps the input).

    ``'mean'`` divides by :math:`D = \sum w_t`; the weight is not differentiable (as torch).
    """

    @staticmethod
    def forward(input, target, weight, reduction, ignore_index):
        cd = _class_dim(input)
        x = opmath(input)
        valid, idx = _targets(input, target, ignore_index)
        picked = _pick(x, cd, idx)
        wt = _target_weight(weight, valid, idx, cd, x.dtype)
        loss = torch.where(valid, -picked if weight is None else -(wt * picked), 0)
        return _reduce_by(loss, reduction, wt.sum()).to(input.dtype)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, target, weight, reduction, ignore_index = inputs
        ctx.reduction, ctx.ignore_index = reduction, ignore_index
        ctx.shape, ctx.dtype, ctx.dim = input.shape, input.dtype, input.dim()
        ctx.device = input.device
        tensors = (target,) if weight is None else (target, weight)
        ctx.save_for_backward(*tensors)
        ctx.save_for_forward(*tensors)

    @staticmethod
    def backward(ctx, grad):
        if not ctx.needs_input_grad[0]:
            return None, None, None, None, None
        cd, valid, idx, wt = _nll_saved(ctx)
        g = _per_position(opmath(grad), ctx.reduction, _safe_total(wt, valid) if ctx.reduction == R.MEAN else None)
        coef = torch.where(valid, -(wt * g), 0).to(ctx.dtype)
        gx = torch.zeros(ctx.shape, dtype=ctx.dtype, device=ctx.device)
        if gx.shape[cd] == 0:  # no classes (every target ignored): nothing to scatter
            return gx, None, None, None, None
        if eager_in_place(coef):
            return gx.scatter_(cd, idx, coef.unsqueeze(cd)), None, None, None, None
        gx = gx.scatter(cd, idx, coef.unsqueeze(cd))  # out of place: differentiable in coef
        return gx, None, None, None, None

    @staticmethod
    def jvp(ctx, t_input, _t, _w, _r, _i):
        cd, valid, idx, wt = _nll_saved(ctx)
        picked = _pick(opmath(t_input), cd, idx)
        t_loss = torch.where(valid, -(wt * picked), 0)
        return _reduce_by(t_loss, ctx.reduction, wt.sum()).to(ctx.dtype)


# --------------------------------------------------------------------------------------------
# Cross entropy, class-index targets


class CrossEntropyLossFunction(LossFunction):
    r"""Cross entropy of logits and class indices, with class weights and label smoothing.

    With :math:`\ell = \log\sum_c e^{x_c}`, :math:`-\log p_c = \ell - x_c`,
    :math:`s = \operatorname{softmax}(x)`, smoothing :math:`\varepsilon` and
    :math:`W = \sum_c w_c`, each position's loss is (0 where ignored)

    .. math::
        l = (1-\varepsilon)\, w_t\,(\ell - x_t)
            + \frac{\varepsilon}{C} \sum_c w_c\,(\ell - x_c).

    Since :math:`\partial \ell/\partial x_c = s_c`,

    .. math::
        \frac{\partial l}{\partial x_c}
          = s_c\Big[(1-\varepsilon)\,w_t + \frac{\varepsilon}{C}\,W\Big]
            - (1-\varepsilon)\,w_t\,[c = t] - \frac{\varepsilon}{C}\,w_c,

    (:math:`v` folded into the coefficients), which the backward forms as one scaled softmax, a
    scatter-add at the targets and, with smoothing, one broadcast subtraction. The tangent is
    :math:`\dot l = (1-\varepsilon)\,w_t(\langle s, \dot x\rangle - \dot x_t) + \frac{\varepsilon}{C}
    (W\langle s, \dot x\rangle - \langle w, \dot x\rangle)`.

    Numerics: :math:`-\log p_c = \ell - x_c` comes from a log-softmax shifted by the row maximum
    (see :func:`_log_softmax`), so logits of any magnitude are fine and a tiny loss next to a
    large :math:`\ell` keeps its digits; it is formed before any multiplication, so the smoothing
    term never subtracts two large sums (:math:`W\ell - \sum w_c x_c` would cancel
    catastrophically for logits near 1e4 in float32). A ``-inf`` logit gives :math:`s_c = 0`, an
    infinite loss if it is the target's (or with smoothing), as in torch.

    Only the inputs are saved; the backward recomputes :math:`s` (see the module docstring).
    """

    @staticmethod
    def forward(input, target, weight, reduction, ignore_index, smoothing):
        cd = _class_dim(input)
        # log p = (x - max) - log Σ exp(x - max): a transient N×C buffer, not saved
        logp = _log_softmax(input, cd)
        valid, idx = _targets(input, target, ignore_index)
        loss = _pick(logp, cd, idx).neg()
        wt = _target_weight(weight, valid, idx, cd, logp.dtype)
        if weight is not None:
            loss = loss * wt
        if smoothing > 0 and logp.shape[cd] == 0:
            # no classes: torch's smoothing term is 0 * (ε/0) = NaN at every position
            return torch.full_like(_reduce_by(loss, reduction, 1), torch.nan, dtype=input.dtype)
        if smoothing > 0:
            if weight is not None:
                logp = logp * _class_view(opmath(weight), input)
            loss = (1 - smoothing) * loss - (smoothing / logp.shape[cd]) * logp.sum(cd)
        loss = torch.where(valid, loss, 0)
        total = wt.sum()
        out = _reduce_by(loss, reduction, total)
        if smoothing > 0 and reduction == R.MEAN:
            # torch divides the two terms by the total weight separately: with no weight at all
            # the first is 0/0, so the loss is NaN even where the smoothing term is not 0
            out = torch.where(total == 0, torch.nan, out)
        return out.to(input.dtype)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, target, weight, reduction, ignore_index, smoothing = inputs
        ctx.reduction, ctx.ignore_index, ctx.smoothing = reduction, ignore_index, smoothing
        tensors = (input, target) if weight is None else (input, target, weight)
        ctx.save_for_backward(*tensors)
        ctx.save_for_forward(*tensors)

    @staticmethod
    def backward(ctx, grad):
        input, target, weight = _saved(ctx)
        if not ctx.needs_input_grad[0]:
            return None, None, None, None, None, None
        eps = ctx.smoothing
        cd = _class_dim(input)
        x = opmath(input)
        C = x.shape[cd]
        if C == 0:  # no classes (every target ignored): an empty gradient
            return torch.zeros_like(input), None, None, None, None, None
        valid, idx = _targets(input, target, ctx.ignore_index)
        wt = _target_weight(weight, valid, idx, cd, x.dtype)
        g = opmath(grad)
        if ctx.reduction == R.MEAN:
            g = g / _safe_total(wt, valid)
        a = torch.where(valid, g, 0)  # per position; 0 where ignored
        a_target = a * wt if weight is not None else a
        if eps > 0:
            a_target = (1 - eps) * a_target
            # (ε/C)·W without a weight is ε
            a_softmax = a_target + a * (eps if weight is None else (eps / C) * opmath(weight).sum())
        else:
            a_softmax = a_target
        a_softmax, a_target = a_softmax.unsqueeze(cd), a_target.unsqueeze(cd)
        gx = _softmax(input, cd)
        if eager_in_place(gx, a_softmax):
            # scaled and corrected in place: the softmax buffer becomes the gradient
            gx.mul_(a_softmax).scatter_add_(cd, idx, a_target.neg())
            if eps > 0:
                gx.sub_(_smoothing_term(a, weight, input, eps, C, cd))
        else:
            gx = (gx * a_softmax).scatter_add(cd, idx, -a_target)
            if eps > 0:
                gx = gx - _smoothing_term(a, weight, input, eps, C, cd)
        return gx.to(input.dtype), None, None, None, None, None

    @staticmethod
    def jvp(ctx, t_input, _t, _w, _r, _i, _s):
        input, target, weight = _saved(ctx)
        eps = ctx.smoothing
        cd = _class_dim(input)
        x, tx = opmath(input), opmath(t_input)
        C = x.shape[cd]
        s = _softmax(input, cd)
        valid, idx = _targets(input, target, ctx.ignore_index)
        wt = _target_weight(weight, valid, idx, cd, x.dtype)
        mean_dot = (s * tx).sum(cd)  # <s, ẋ>, the tangent of ℓ
        t_loss = mean_dot - _pick(tx, cd, idx)
        if weight is not None:
            t_loss = t_loss * wt
        if eps > 0 and C == 0:
            t_loss = torch.full_like(t_loss, torch.nan)  # the loss is NaN (see forward)
        elif eps > 0:
            if weight is None:
                t_smooth = C * mean_dot - tx.sum(cd)
            else:
                w = opmath(weight)
                t_smooth = w.sum() * mean_dot - (tx * _class_view(w, input)).sum(cd)
            t_loss = (1 - eps) * t_loss + (eps / C) * t_smooth
        t_loss = torch.where(valid, t_loss, 0)
        return _reduce_by(t_loss, ctx.reduction, wt.sum()).to(input.dtype)


def _smoothing_term(a: Tensor, weight: Tensor | None, input: Tensor, eps: float, C: int, cd: int) -> Tensor:
    r""":math:`\frac{\varepsilon}{C}\,a_n\,w_c`: the gradient of the smoothing term's
    :math:`-\sum_c w_c x_c` part (broadcast over classes without a weight)."""
    term = (eps / C) * a.unsqueeze(cd)
    if weight is not None:
        term = term * _class_view(opmath(weight), input)
    return term


# --------------------------------------------------------------------------------------------
# Plain index targets: no weight, no smoothing, no ignored target
#
# The common case of a classifier's training step, where a small batch costs mostly Python and
# dispatch (1-2 us an op). The functional layer picks these Functions only for eager CPU calls
# whose targets it knows to be class indices in [0, C) that differ from ``ignore_index`` (see
# ``_plain_layout`` in functional/classification.py), so the valid mask, the target weights and their sum
# (:math:`D` is the number of positions) all drop out, and with them about twenty small ops a
# step. The Functions themselves never branch on values: they compute the loss of their
# arguments, whatever those are. ``idx`` is the target with a size-1 class dimension,
# ``(N, 1, d1, ..., dK)``, made once by the caller and saved (a view of the target's storage).



def _negated_total(picked: Tensor, reduction: int) -> Tensor:
    """``-mean`` / ``-sum`` of ``picked`` (``(N, 1, ...)``), or its negation per position with the
    class dimension dropped. For 'mean' the sum is divided by ``-D`` (one op for both)."""
    if reduction == R.MEAN:
        return picked.sum().div(constant(-picked.numel(), picked.dtype, _CPU))
    if reduction == R.SUM:
        return picked.sum().neg()
    return picked.squeeze(1).neg()


# Inputs of at most this many elements take cached constants in the backward (see
# :func:`_zeros_template`): small batches, where each op's dispatch is what a step costs.
_TEMPLATE_LIMIT = 1 << 16


@functools.lru_cache(maxsize=32)
def _zeros_template(shape: torch.Size, dtype: torch.dtype) -> Tensor:
    """A cached zero tensor of the input's shape, for small float32/float64 CPU inputs.

    The gradient of the plain NLL is then ``zeros.scatter(1, idx, coef)``: one op where a fresh
    ``new_zeros`` and an in-place ``scatter_`` take two plus the ``eager_in_place`` test (about
    1.5 us of a small batch's ~25 us). The out-of-place ``scatter`` copies the cached zeros (never
    written to) and is differentiable in its source, so the same op serves double backward.
    Made outside inference mode so that a ``create_graph`` backward may use it.
    """
    with torch.inference_mode(False):
        return torch.zeros(shape, dtype=dtype)


class NLLLossPlainFunction(LossFunction):
    r""":class:`NLLLossFunction` without weight or ignored targets: :math:`l = -x_t`.

    :math:`\partial l/\partial x_c = -[c = t]`: the backward scatters :math:`-g_n` into zeros,
    with :math:`-g_n = g/(-D)` for 'mean' (:math:`D` the number of positions; the same value as
    torch's :math:`-(g/D)`), :math:`-g` for 'sum'. The tangent is :math:`-\dot x_t`, reduced
    alike. Only ``idx`` is saved.
    """

    @staticmethod
    def forward(input, idx, reduction):
        if reduction == R.MEAN and input.dtype not in _LOW_PRECISION:
            # the common case inline (a small batch's forward is mostly call overhead)
            return input.gather(1, idx).sum().div(constant(-idx.numel(), input.dtype, _CPU))
        loss = _negated_total(opmath(input.gather(1, idx)), reduction)
        return loss if loss.dtype == input.dtype else loss.to(input.dtype)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, idx, reduction = inputs
        ctx.reduction, ctx.shape = reduction, input.shape
        ctx.save_for_backward(idx)
        ctx.save_for_forward(idx)

    @staticmethod
    def backward(ctx, grad):
        if not ctx.needs_input_grad[0]:
            return None, None, None
        (idx,) = ctx.saved_tensors
        reduction = ctx.reduction
        if (
            reduction != R.NONE
            and grad.dtype not in _LOW_PRECISION
            and idx.numel() <= _TEMPLATE_LIMIT
            and grad.is_cpu
            and not torch.compiler.is_compiling()
        ):
            # a 0-d coefficient, expanded: an (N, 1) one would raise the peak above torch's
            coef = grad.div(constant(-idx.numel(), grad.dtype, _CPU)) if reduction == R.MEAN else grad.neg()
            return _zeros_template(ctx.shape, grad.dtype).scatter(1, idx, coef.expand_as(idx)), None, None
        g = opmath(grad)
        if reduction == R.MEAN:
            coef = g.div(constant(-idx.numel(), g.dtype, _CPU))
        else:
            coef = (g if reduction == R.SUM else g.unsqueeze(1)).neg()
        if coef.dtype != grad.dtype:
            coef = coef.to(grad.dtype)  # float16/bfloat16: computed in float32, rounded once
        # (expand_as and unpacked sizes: a torch.Size argument costs ~1.5 us more to parse)
        coef = coef.expand_as(idx)
        gx = grad.new_zeros(*ctx.shape)  # grad has the loss's (the input's) dtype and device
        if eager_in_place(gx, coef):
            return gx.scatter_(1, idx, coef), None, None
        return gx.scatter(1, idx, coef), None, None  # out of place: differentiable in coef

    @staticmethod
    def jvp(ctx, t_input, _i, _r):
        (idx,) = ctx.saved_tensors
        loss = _negated_total(opmath(t_input.gather(1, idx)), ctx.reduction)
        return loss if loss.dtype == t_input.dtype else loss.to(t_input.dtype)


# Elements of the log-softmax block computed at a time by _picked_log_softmax (16 MiB in float32:
# within glibc's 32 MiB limit for reusing freed chunks, and few enough blocks that the parallel
# regions of the softmax kernel stay few).
_BLOCK = 1 << 22


def _picked_log_softmax(input: Tensor, idx: Tensor) -> Tensor:
    r""":math:`\log p_t` per position, ``(N, 1, d1, ..., dK)``, from the log-softmax of ``input``.

    Only the picked values are needed, so on large eager inputs the log-softmax is formed a block
    of samples at a time (about ``_BLOCK`` elements) and gathered into one small result: a freshly
    mapped N×C buffer costs more to fault in than to compute, while the blocks are reused from
    the allocator's heap (at 4096×8192 float32 the forward takes ~20-40 ms instead of ~115 ms on
    one thread). Each sample's values are exactly those of the one-pass form. Elsewhere (inputs
    of at most one block, transforms, forward AD) it is the one-pass form.
    """
    rows = input.shape[0]
    step = _BLOCK * rows // input.numel() if input.numel() else rows
    if step >= rows or not eager_in_place(input, idx):
        return _log_softmax(input, 1).gather(1, idx)
    step = max(step, 1)
    picked = idx.new_empty(idx.shape, dtype=opmath_dtype(input.dtype))
    for i in range(0, rows, step):
        torch.gather(_log_softmax(input[i : i + step], 1), 1, idx[i : i + step], out=picked[i : i + step])
    return picked


@functools.lru_cache(maxsize=32)
def _minus_ones(shape: torch.Size, dtype: torch.dtype) -> Tensor:
    """A cached CPU tensor of -1 (never written to; see :func:`_zeros_template`)."""
    with torch.inference_mode(False):
        return torch.full(shape, -1.0, dtype=dtype)


class CrossEntropyPlainFunction(LossFunction):
    r""":class:`CrossEntropyLossFunction` without weight, smoothing or ignored targets:
    :math:`l = -\log p_t` and :math:`\partial l/\partial x_c = s_c - [c = t]`.

    The forward gathers from a transient log-softmax (see :func:`_log_softmax` for its
    numerics). The backward recomputes the softmax (in float32 for float16/bfloat16), subtracts
    1 at each target and scales by :math:`g_n`: in place on the softmax buffer when nothing
    differentiates the backward (three small ops besides the softmax), else as
    ``(s * g_n).scatter_add(idx, -g_n)``. The tangent is
    :math:`\langle s, \dot x\rangle - \dot x_t`. Saves ``input`` and ``idx`` only.
    """

    @staticmethod
    def forward(input, idx, reduction):
        if reduction == R.MEAN and input.dtype not in _LOW_PRECISION and input.numel() <= _BLOCK:
            # the common small case inline (the one-pass form of _picked_log_softmax)
            return torch.log_softmax(input, 1).gather(1, idx).sum().div(constant(-idx.numel(), input.dtype, _CPU))
        loss = _negated_total(_picked_log_softmax(input, idx), reduction)
        return loss if loss.dtype == input.dtype else loss.to(input.dtype)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, idx, reduction = inputs
        ctx.reduction = reduction
        ctx.save_for_backward(input, idx)
        ctx.save_for_forward(input, idx)

    @staticmethod
    def backward(ctx, grad):
        if not ctx.needs_input_grad[0]:
            return None, None, None
        input, idx = ctx.saved_tensors
        g = opmath(grad)
        if ctx.reduction == R.MEAN:
            coef = g.div(constant(idx.numel(), g.dtype, _CPU))
        else:
            coef = g if ctx.reduction == R.SUM else g.unsqueeze(1)
        gx = _softmax(input, 1)
        if eager_in_place(gx, coef):
            # the softmax buffer becomes the gradient: (s - onehot) * g_n; small inputs add a
            # cached column of -1 (a tensor source parses faster than a scalar with a reduce)
            if idx.numel() <= _TEMPLATE_LIMIT and gx.is_cpu:
                gx.scatter_add_(1, idx, _minus_ones(idx.shape, gx.dtype))
            else:
                gx.scatter_(1, idx, -1.0, reduce="add")
            gx.mul_(coef)
        else:
            gx = (gx * coef).scatter_add(1, idx, coef.neg().expand_as(idx))
        return (gx if gx.dtype == input.dtype else gx.to(input.dtype)), None, None

    @staticmethod
    def jvp(ctx, t_input, _i, _r):
        input, idx = ctx.saved_tensors
        tx = opmath(t_input)
        # -(ẋ_t - <s, ẋ>) per position (class dimension kept for the shared reduction)
        loss = _negated_total(tx.gather(1, idx) - (_softmax(input, 1) * tx).sum(1, keepdim=True), ctx.reduction)
        return loss if loss.dtype == input.dtype else loss.to(input.dtype)


# --------------------------------------------------------------------------------------------
# Cross entropy, class-probability targets


def _positions(input: Tensor) -> int:
    """'mean' denominator of probability targets: numel / C (0 when the input is empty)."""
    C = input.shape[_class_dim(input)]
    return input.numel() // C if C else 0


class CrossEntropyProbsLossFunction(LossFunction):
    r"""Cross entropy of logits and class probabilities (``target.shape == input.shape``).

    With smoothing the target becomes :math:`t' = (1-\varepsilon)\,t + \varepsilon/C`; then, with
    :math:`-\log p_c = \ell - x_c` and :math:`A = \sum_c w_c t'_c`,

    .. math::
        l = -\sum_c w_c\, t'_c \log p_c, \qquad
        \frac{\partial l}{\partial x_c} = s_c A - w_c t'_c, \qquad
        \frac{\partial l}{\partial t_c} = -(1-\varepsilon)\,w_c \log p_c, \qquad
        \frac{\partial l}{\partial w_c} = -t'_c \log p_c,

    the first because :math:`\partial(-\log p_k)/\partial x_c = s_c - [k = c]`. The tangent is
    the sum of the three directional derivatives. ``'mean'`` divides by the number of positions
    (``numel / C``; the weights are not part of the denominator, as in torch). Target and weight
    are differentiable here. The result dtype is the promotion of input, target and weight, and
    the arithmetic runs in it (float32 for float16/bfloat16), so a float64 target gets a float64
    log-softmax. Only the inputs are saved.
    """

    @staticmethod
    def forward(input, target, weight, reduction, smoothing):
        x, t, w, cd, dtype = _probs_operands(input, target, weight, smoothing)
        term = t * _log_softmax(x, cd)
        if w is not None:
            term = term * w
        loss = -term.sum(cd)
        return _reduce_by(loss, reduction, _positions(input)).to(dtype)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, target, weight, reduction, smoothing = inputs
        ctx.reduction, ctx.smoothing = reduction, smoothing
        tensors = (input, target) if weight is None else (input, target, weight)
        ctx.save_for_backward(*tensors)
        ctx.save_for_forward(*tensors)

    @staticmethod
    def backward(ctx, grad):
        input, target, weight = _saved(ctx)
        need_x, need_t, need_w = ctx.needs_input_grad[:3]
        eps = ctx.smoothing
        x, t, w, cd, _ = _probs_operands(input, target, weight, eps)
        g = grad.to(x.dtype)
        if ctx.reduction == R.MEAN:
            g = g / _positions(input)
        elif ctx.reduction == R.NONE:
            g = g.unsqueeze(cd)
        wt = t if w is None else w * t
        gx = gt = gw = None
        if need_x:
            total = wt.sum(cd, keepdim=True)  # A
            gx = torch.softmax(x, cd)
            if eager_in_place(gx, total, wt, g):
                gx = gx.mul_(total).sub_(wt).mul_(g)
            else:
                gx = (gx * total - wt) * g
            gx = gx.to(input.dtype)
        if need_t or need_w:
            neg_logp = torch.log_softmax(x, cd).neg() * g
            if need_t:
                gt = neg_logp * (1 - eps) if w is None else neg_logp * ((1 - eps) * w)
                gt = gt.to(target.dtype)
            if need_w:
                gw = R.sum_to(neg_logp * t, w).reshape(weight.shape).to(weight.dtype)
        return gx, gt, gw, None, None

    @staticmethod
    def jvp(ctx, t_input, t_target, t_weight, _r, _s):
        input, target, weight = _saved(ctx)
        eps = ctx.smoothing
        x, t, w, cd, dtype = _probs_operands(input, target, weight, eps)
        wt = t if w is None else w * t
        dot = None
        if t_input is not None:
            dot = (torch.softmax(x, cd) * wt.sum(cd, keepdim=True) - wt) * t_input.to(x.dtype)
        if t_target is not None or t_weight is not None:
            neg_logp = torch.log_softmax(x, cd).neg()
            if t_target is not None:
                tt = (1 - eps) * t_target.to(x.dtype)
                term = neg_logp * tt if w is None else neg_logp * w * tt
                dot = term if dot is None else dot + term
            if t_weight is not None:
                term = neg_logp * t * _class_view(t_weight.to(x.dtype), input)
                dot = term if dot is None else dot + term
        return _reduce_by(dot.sum(cd), ctx.reduction, _positions(input)).to(dtype)


def _probs_operands(input: Tensor, target: Tensor, weight: Tensor | None, smoothing: float):
    """``(x, t', w, cd, dtype)``: the operands in the computation dtype (the promoted result
    dtype, float32 for float16/bfloat16), the smoothed target and the class-shaped weight."""
    dtype = torch.promote_types(input.dtype, target.dtype)
    if weight is not None:
        dtype = torch.promote_types(dtype, weight.dtype)
    compute = opmath_dtype(dtype)
    cd = _class_dim(input)
    x = input.to(compute)
    t = _smoothed(target.to(compute), smoothing, x.shape[cd])
    w = None if weight is None else _class_view(weight.to(compute), input)
    return x, t, w, cd, dtype


def _smoothed(target: Tensor, smoothing: float, C: int) -> Tensor:
    if smoothing > 0:
        return target * (1 - smoothing) + smoothing / C
    return target
