r"""Connectionist temporal classification (CTC), with torch's gradient and exact higher derivatives.

Notation. ``x = log_probs`` has shape ``(T, N, C)``; sample :math:`n` uses the first
:math:`T_n` frames and the target :math:`l = (l_1, \dots, l_{L_n})`. The *extended* target
:math:`l'` of length :math:`L'_n = 2 L_n + 1` interleaves blanks: :math:`l'_{2j} = b` (the blank),
:math:`l'_{2j+1} = l_{j+1}`. The emission of state :math:`s` at frame :math:`t` is
:math:`e_t(s) = x_{t, l'_s}`. A transition :math:`s-2 \to s` (skipping a blank) is allowed iff
:math:`s \ge 2` and :math:`l'_s \ne l'_{s-2}` (torch's rule: a blank state never skips, and a
repeated label needs a blank in between).

Recursions, all in log space (:math:`\oplus` is log-add-exp):

.. math::
    \alpha_t(s) &= e_t(s) + \tilde\alpha_t(s), \qquad
    \tilde\alpha_t(s) = \alpha_{t-1}(s) \oplus \alpha_{t-1}(s-1) \oplus
                        [\text{skip ok}]\,\alpha_{t-1}(s-2), \\
    \log p_n &= \alpha_{T_n-1}(L'_n-1) \oplus \alpha_{T_n-1}(L'_n-2), \qquad
    \ell_n = -\log p_n,

with the virtual start :math:`\alpha_{-1}(0) = 0` (so :math:`\alpha_0(0) = e_0(0)`,
:math:`\alpha_0(1) = e_0(1)`). :math:`\beta'_t(s)` (the log-probability of the rest of the
target from state :math:`s` at :math:`t`, *including* :math:`e_t(s)`) obeys the mirrored recursion;
it *is* the alpha recursion run on each sample's time-reversed frames and reversed extended target
(the skip rule :math:`l'_s \ne l'_{s+2}` is symmetric), so one vectorised recursion serves both,
and in the forward of a differentiated loss the two run together, as one batch of :math:`2N`
rows: half the Python-level steps of running them one after the other. Only the time loop is in
Python; every step is a handful of ops over ``(2N, 2S+1)``. The joint log-probability of the paths
through state :math:`s` at frame :math:`t` is :math:`\tilde\alpha_t(s) + \beta'_t(s)` (no
emission subtracted, so a ``-inf`` log-probability cannot make a ``-inf - -inf``), and the
posterior occupancy of class :math:`c` is

.. math::
    \gamma_t(c) = \sum_{s:\ l'_s = c} \exp\big(\tilde\alpha_t(s) + \beta'_t(s) - \log p_n\big)
                = \frac{\partial \log p_n}{\partial x_{t,n,c}} .

torch's gradient. :math:`\partial\ell_n/\partial x_{t,n,c} = -\gamma_t(c)` for any ``x``;
torch's kernel returns instead

.. math::
    G_{t,n,c} = \exp(x_{t,n,c}) - \gamma_t(c) \quad (t < T_n), \qquad 0 \quad (t \ge T_n),

which equals the true gradient *after back-propagation through* ``log_softmax`` (the Jacobian
of log-softmax maps :math:`\exp(x) = \operatorname{softmax}(z)` to 0), and is what torchloss
returns too. :math:`G` is exactly the gradient of the potential

.. math::
    F(x) = \sum_n \ell_n(x) + \sum_n \sum_{t < T_n} \sum_c \exp(x_{t,n,c}),

for *every* ``x``, normalised or not. This fixes the higher-order semantics: the Function behaves
as if its derivative were :math:`G = \nabla F`. The backward computes :math:`G` with
differentiable ops when it is itself differentiated, so double backward is the exact Hessian
:math:`\nabla^2 F = \nabla^2\ell + \operatorname{diag}(\exp x)` (symmetric, as a Hessian must be),
and ``jvp`` returns :math:`\langle G, \dot x\rangle`, the same linear map as the backward (so
``jacfwd == jacrev``). Composed with ``log_softmax`` everything is the exact derivative of the
composed loss: :math:`z \mapsto J(z)^\top G(\operatorname{log\_softmax}(z))` *is* the true
gradient for every ``z``, hence its derivative (what double backward computes) is the true
Hessian, and the tangent :math:`\dot x = J\dot z` satisfies :math:`\sum_c e^{x_c}\dot x_c = 0`,
so :math:`\langle G, \dot x\rangle = -\langle\gamma, \dot x\rangle`. On unnormalised ``x`` the
derivatives are those of :math:`F`, not of the loss, exactly like torch's first derivative.

Reductions. With the upstream gradient :math:`g`: ``'none'`` gives :math:`g_n`, ``'sum'``
:math:`g`, ``'mean'`` :math:`g / (N \max(L_n, 1))` (each loss divided by its target length, a
zero length counting as 1, then averaged). An impossible alignment (:math:`p_n = 0`) gives
:math:`\ell_n = +\infty` and a NaN gradient on frames :math:`t < T_n` (torch's behaviour), or, with
``zero_infinity``, a zero loss and a zero gradient.

Saved for backward. A first-order backward (grad mode off, plain tensors) only scales the
per-sample gradient :math:`G` computed in the forward (a second, non-differentiable output of
the Function, ``(T, N, C)``: no larger than torch's saved ``log_alpha`` of ``(T, N, 2S+1)``
when :math:`C \le 2S + 1`, the usual case). Its forward stores only half of :math:`\alpha` and
:math:`\beta'` (they meet in the middle, see :func:`_fast_grad`), so that forward and backward
peak below torch's ``log_alpha`` and ``log_beta`` together. A backward that is itself
differentiated (``create_graph``, ``torch.func``), vmapped, or traced by ``torch.compile``
recomputes :math:`G` from the saved ``log_probs`` with out-of-place, NaN-safe differentiable
ops, so its derivatives are exact (see :func:`_lse3`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .. import _reduction as R
from ._base import LossFunction, opmath_dtype

_NEG_INF = float("-inf")
# exp() of float32 arguments below about -87 (denormal results) is ~30x slower on CPU than of
# ordinary arguments, and exp(-inf) ~5x slower. The fast path clamps exp arguments at -80:
# exp(-80) = 1.8e-35 is a normal float32, and negligible next to the 1 that the largest term of
# every sum contributes (1 + 1.8e-35 == 1 in float32 and float64 alike).
_EXP_FLOOR = -80.0


def _plain(*tensors: Tensor) -> bool:
    """Whether the fast path (preallocated buffers, ``out=`` and in-place ops) may run: eager
    mode, no functorch wrappers (vmap's BatchedTensor, grad's GradTrackingTensor)."""
    if torch.compiler.is_compiling():
        return False
    return not any(torch._C._functorch.is_functorch_wrapped_tensor(t) for t in tensors)


def _extended(targets: Tensor, C: int, blank: int) -> Tensor:
    """``(N, 2S+1)`` extended targets: blank, l_1, blank, l_2, ..., blank.

    Label values are clamped into ``[0, C)`` (torch does not check them on the CPU and reads
    memory out of bounds for them; here they read a valid class instead, still meaningless)."""
    N, S = targets.shape
    lab = targets.clamp(0, C - 1)
    blanks = torch.full_like(lab, blank)
    body = torch.stack([blanks, lab], dim=2).reshape(N, 2 * S)
    return torch.cat([body, lab.new_full((N, 1), blank)], dim=1)


def _skip_mask(ext: Tensor, dtype: torch.dtype) -> Tensor:
    """0 where the transition s-2 -> s is allowed, -inf elsewhere (``(N, 2S+1)``)."""
    allowed = torch.cat([torch.zeros_like(ext[:, :2], dtype=torch.bool), ext[:, 2:] != ext[:, :-2]], dim=1)
    return torch.zeros((), dtype=dtype, device=ext.device).where(allowed, _NEG_INF)


class _Plan:
    r"""Index tensors and masks shared by the forward, the gradient and the tangent of one call.

    The reversed pass runs on the *globally* flipped emissions ``E.flip(0, 2)`` (frame
    :math:`T-1-u`, state :math:`L-1-r`), so that no per-sample gather is needed in either
    direction. Sample :math:`n`'s reversed extended target then occupies states
    :math:`r \ge L - L'_n` (its virtual start), and its reversed frames start at
    :math:`u = T - T_n`: on the frames before, the emissions are replaced by the *hold* row
    (0 at the start state, ``-inf`` elsewhere), which keeps the pass at its virtual start.
    :math:`\beta'` is then the reversed pass flipped back: ``X[1:, N:, 2:].flip(0, 2)``.
    """

    def __init__(self, x: Tensor, targets: Tensor, input_lengths: Tensor, target_lengths: Tensor, blank: int):
        T, N, C = x.shape
        dev = x.device
        self.T, self.N, self.C = T, N, C
        ext = _extended(targets, C, blank)  # (N, L)
        L = ext.shape[1]
        self.L = L
        self.ext = ext
        self.il, self.tl = input_lengths, target_lengths
        self.Ln = 2 * target_lengths + 1  # (N)
        self.valid_t = torch.arange(T, device=dev).unsqueeze(1) < input_lengths  # (T, N)
        s = torch.arange(L, device=dev)
        zero = torch.zeros((), dtype=x.dtype, device=dev)
        # virtual start rows (N, L) of the forward pass (state 0) and of the reversed one
        self.init_fwd = zero.where(s == 0, _NEG_INF).expand(N, L)
        self.init_rev = zero.where(s == (L - self.Ln).unsqueeze(1), _NEG_INF)
        self.hold = ~self.valid_t.flip(0).unsqueeze(2)  # (T, N, 1): reversed frames before the start
        self.n_idx = torch.arange(N, device=dev)

    def emissions(self, x: Tensor, both: bool) -> tuple[Tensor, Tensor, Tensor]:
        """Emissions ``(T, B, L)``, skip masks ``(B, L)`` and start rows ``(B, L)`` of the
        forward pass (B = N) or of the forward and reversed passes stacked (B = 2N)."""
        T, N, L = self.T, self.N, self.L
        e = x.gather(2, self.ext.unsqueeze(0).expand(T, N, L))
        mask = _skip_mask(self.ext, x.dtype)
        if not both:
            return e, mask, self.init_fwd
        e_rev = torch.where(self.hold, self.init_rev, e.flip(0, 2))
        return (
            torch.cat([e, e_rev], dim=1),
            torch.cat([mask, _skip_mask(self.ext.flip(1), x.dtype)], dim=0),
            torch.cat([self.init_fwd, self.init_rev], dim=0),
        )

    def log_p(self, X: Tensor) -> Tensor:
        r""":math:`\log p_n` from the stacked (padded) forward pass ``X`` of ``(T+1, B, L+2)``."""
        rows = X[self.il, self.n_idx]  # (N, L+2): alpha_{Tn-1}, row 0 being the virtual start
        last = 2 + self.Ln - 1
        ends = rows.gather(1, torch.stack([last, last - 1], dim=1))  # (N, 2)
        # double where: where both ends are -inf (an impossible sample) the logsumexp runs on
        # zeros, so its derivative is finite (exp(-inf - -inf) would be NaN) and then masked
        ok = (ends > _NEG_INF).any(1)
        lp = torch.logsumexp(torch.where(ok.unsqueeze(1), ends, 0.0), dim=1).where(ok, _NEG_INF)
        # no frame: p = 1 for an empty target, else 0 (the virtual start is not a frame)
        empty = torch.where(self.tl == 0, 0.0, _NEG_INF).to(lp.dtype)
        return torch.where(self.il == 0, empty, lp)


# --------------------------------------------------------------------------------------------
# The recursion: a fast path (buffers, out=) and a differentiable path (out of place, NaN-safe).


def _lse3(a: Tensor, b: Tensor, c: Tensor) -> Tensor:
    r""":math:`\log(e^a + e^b + e^c)`, with a NaN-free derivative everywhere, ``-inf`` included.

    The shift :math:`m` (the maximum, 0 where all three are ``-inf``) is detached: the value
    :math:`m + \log\sum e^{x-m}` does not depend on it, and without it the derivative is exactly
    the softmax weights (no :math:`1 - \sum` cancellation). The log uses the "double where":
    where all terms are ``-inf`` the sum is 0 and the result ``-inf``, and the log's argument is
    replaced by 1 so that its derivative (1/0) never meets the zero upstream gradient of an
    unreachable state (``0 * inf = NaN``)."""
    m = torch.maximum(torch.maximum(a, b), c).detach()
    m = torch.where(torch.isfinite(m), m, 0.0)
    s = (a - m).exp() + (b - m).exp() + (c - m).exp()
    pos = s > 0
    return torch.where(pos, torch.log(torch.where(pos, s, 1.0)) + m, _NEG_INF)


def _recurse_autograd(E: Tensor, mask: Tensor, init: Tensor) -> tuple[Tensor, Tensor]:
    """The recursion of :func:`_fast_grad` (both passes over all frames, stored) written out of
    place with :func:`_lse3` (differentiable, vmappable)."""
    T, B, L = E.shape
    pad = E.new_full((B, 2), _NEG_INF)
    prev = torch.cat([pad, init.expand(B, L)], 1)
    xs, ys = [prev], []
    allowed = mask == 0
    for t in range(T):
        c = torch.where(allowed, prev[:, :-2], _NEG_INF)
        y = _lse3(prev[:, 2:], prev[:, 1:-1], c)
        prev = torch.cat([pad, y + E[t]], 1)
        ys.append(y)
        xs.append(prev)
    return torch.stack(ys), torch.stack(xs)


# --------------------------------------------------------------------------------------------
# Loss and gradient


# None: by device (scatter_add on the CPU, the dense contraction elsewhere); True/False force one
# (the tests run both on the CPU)
DENSE_CLASS_SUMS: bool | None = None


def _class_sums(gamma: Tensor, ext: Tensor, C: int, acc: Tensor | None = None) -> Tensor:
    r""":math:`\sum_{s:\ l'_s = c} \gamma_t(s)`: ``(T, N, L)`` state posteriors summed into their
    classes, ``(T, N, C)`` (added in place to ``acc`` when given, on the eager path).

    Deterministic on every device. On the CPU ``scatter_add`` is: each output row is summed by
    one thread in index order. On CUDA it uses atomics, whose order varies between runs when a
    class occurs at several states (every blank, repeated labels), so there the sum is the
    contraction with the one-hot matrix of the extended targets, ``(N, T, L) @ (N, L, C)``, a
    batched matmul with a fixed reduction order; it costs ``T N L C`` multiply-adds, nothing on a
    GPU, about 1.4x the scatter on the CPU."""
    dense = DENSE_CLASS_SUMS if DENSE_CLASS_SUMS is not None else gamma.device.type != "cpu"
    if not dense:
        idx = ext.unsqueeze(0).expand(gamma.shape)
        if acc is not None:
            return acc.scatter_add_(2, idx, gamma)
        return torch.zeros(gamma.shape[:2] + (C,), dtype=gamma.dtype, device=gamma.device).scatter_add(2, idx, gamma)
    onehot = (ext.unsqueeze(2) == torch.arange(C, device=ext.device)).to(gamma.dtype)  # (N, L, C)
    sums = torch.bmm(gamma.transpose(0, 1), onehot).transpose(0, 1)
    return sums if acc is None else acc.add_(sums)


def _fast(x: Tensor, targets: Tensor, il: Tensor, tl: Tensor, blank: int, zero_infinity: bool, with_grad: bool):
    r"""``(log p, G)`` on the eager path (``G`` only ``with_grad``, with the inf/NaN rule applied;
    ``None`` otherwise): in-place recursions over preallocated buffers, few ops (it is also the
    small-size hot path). See :func:`_fast_grad` and :func:`_fast_loss`."""
    logp, G = _fast_grad(x, targets, il, tl, blank, zero_infinity) if with_grad else (_fast_loss(x, targets, il, tl, blank), None)
    # no frame for a non-empty target: p = 0 (the recursions' start meets their end when a label
    # equals the blank, which torch does not check)
    return logp.masked_fill_((il == 0) & (tl > 0), _NEG_INF), G


def _eager_setup(x: Tensor, targets: Tensor, tl: Tensor, blank: int):
    """``(ext, used)``: the ``(N, L)`` extended targets and the ``(N, C)`` classes each sample's
    target reads (its blank included)."""
    N, C = x.shape[1:]
    L = 2 * targets.shape[1] + 1
    ext = targets.new_full((N, L), blank)
    ext[:, 1::2] = targets.clamp(0, C - 1)  # torch reads out of bounds for such labels
    s_idx = torch.arange(L, device=x.device)
    used = torch.zeros((N, C), dtype=torch.bool, device=x.device)
    used.scatter_(1, ext.where(s_idx < 2 * tl.unsqueeze(1) + 1, blank), True)
    return ext, used


def _sanitise_(z: Tensor, valid: Tensor, used: Tensor, blank: int) -> Tensor:
    r"""Make the emissions of ``z`` (``(..., N, C)`` frames, ``valid`` ``(..., N, 1)``) safe for
    the flat layout of the eager recursions, in place; returns the ``(N)`` samples that must get
    a NaN loss and gradient.

    A NaN or ``+inf`` emission would leak through the padding into the neighbouring sample
    (``NaN + -inf``), so such values become ``-inf``, and the samples that had them in a class of
    their target on a frame ``t < Tn`` (the only values torch reads for the loss) are returned.
    Frames ``t >= Tn`` read ``-inf`` for every class but the blank, which reads 0: the reversed
    pass then *holds* its virtual start until its first real frame ``Tn - 1`` (the start state is
    a blank; the label state below it is ``-inf``, and a blank never skips), and no per-sample
    time offset is needed."""
    bad = (z < float("inf")).logical_not_().logical_and_(used).logical_and_(valid)
    bad = bad.flatten(0, -3).any(0).any(1)
    invalid = ~valid
    z.nan_to_num_(nan=_NEG_INF, posinf=_NEG_INF, neginf=_NEG_INF).masked_fill_(invalid, _NEG_INF)
    z[..., blank].masked_fill_(invalid.squeeze(-1), 0.0)
    return bad


def _fast_loss(x: Tensor, targets: Tensor, il: Tensor, tl: Tensor, blank: int) -> Tensor:
    r""":math:`\log p` alone (nothing differentiates): the reversed-time recursion for
    :math:`\beta'` of :func:`_fast_grad` (its ``[beta' | ...]`` half, same row layout and four ops
    a frame), on a rolling buffer of ``K + 1 ~ T / 8`` rows refilled with the emissions of the
    next ``K`` frames (row 0: the row the previous run of frames ended on, at first the virtual
    start)."""
    T, N, C = x.shape
    L = 2 * targets.shape[1] + 1
    W = L + 4
    M = N * W - 4
    dev = x.device
    ext, used = _eager_setup(x, targets, tl, blank)
    xs = x.flip(0)  # a copy, sanitised in place
    bad = _sanitise_(xs, (torch.arange(T - 1, -1, -1, device=dev).unsqueeze(1) < il).unsqueeze(2), used, blank)
    K = -(-T // 8)
    X = x.new_full((K + 1, N, W), _NEG_INF)
    X[0].scatter_(1, (2 + 2 * tl).unsqueeze(1), 0.0)
    mask = x.new_full((N, W), _NEG_INF)
    mask[:, 2:L].masked_fill_(ext[:, :-2] != ext[:, 2:], 0.0)
    mask = mask.view(N * W)[2 : 2 + M]
    a, b, c = (X.view(K + 1, N * W)[:, off : off + M].unbind(0) for off in (2, 3, 4))
    y = x.new_empty(M)
    tmp = x.new_empty(M)
    logaddexp, add = torch.logaddexp, torch.add
    for u0 in range(0, T, K):
        n = min(K, T - u0)
        if u0:
            X[0].copy_(X[K])
        torch.gather(xs[u0 : u0 + n], 2, ext.expand(n, N, L), out=X[1 : n + 1, :, 2 : 2 + L])
        for t in range(n):
            logaddexp(a[t], b[t], out=y)
            add(c[t], mask, out=tmp)
            logaddexp(y, tmp, out=y)
            add(y, a[t + 1], out=a[t + 1])
    return torch.logaddexp(X[n, :, 2], X[n, :, 3]).masked_fill_(bad, float("nan"))


def _fast_grad(x: Tensor, targets: Tensor, il: Tensor, tl: Tensor, blank: int, zero_infinity: bool):
    r"""``(log p, G)``: :math:`\alpha` and :math:`\beta'` meet in the middle, so that only half
    of them is ever stored, and ``G`` is formed in memory already allocated. The peak is about
    ``T N (L + 4) + T N C`` floats plus a third of the first term (the chunk buffers below),
    against torch's ``2 T N L + T N C``.

    Layout. The two recursions run as one batch of ``2N`` rows of width ``W = L + 4`` (two
    ``-inf`` padding columns on each side of every row make the out-of-range predecessors
    ``-inf``). One half runs the mirrored recursion for :math:`\beta'` in *reversed time* and
    natural state order (its state ``s`` reads ``s``, ``s+1``, ``s+2``; its virtual start is state
    :math:`L'_n - 1`), the other runs :math:`\alpha` (``s``, ``s-1``, ``s-2``; start: state 0).
    Step ``k`` computes :math:`\alpha_k` and :math:`\beta'_{T'-1-k}`, ``T' = 2m`` being ``T``
    rounded up to even (an odd ``T`` gets an extra frame ``T``, invalid for every sample).

    * Steps ``k < m`` write row ``1 + k`` of ``X`` ``(m+1, 2N, W)``, halves ordered
      ``[beta' | alpha]`` (row 0: the virtual starts). The rows are first filled with the
      emissions and each step adds :math:`\tilde\alpha` (resp. :math:`\tilde\beta`, the
      log-add-exp of the predecessors) to its row in place.
    * Steps ``k >= m`` find the partners of what they compute already stored: :math:`\beta'_k`
      and :math:`\alpha_{T'-1-k}` are both in row ``T' - k``, halves in the same order as the
      step's own ``[alpha | beta']``. The emission-free :math:`\tilde\alpha_k`,
      :math:`\tilde\beta_{T'-1-k}` are added to that row, making it the joint
      :math:`\tilde\alpha_t(s) + \beta'_t(s) = \alpha_t(s) + \tilde\beta_t(s)` (the
      log-probability of the paths through state ``s`` at frame ``t``, emission counted once) of
      its two frames. These steps run in chunks of ``K ~ m / 6`` rows ``Q`` (emissions gathered
      per chunk, rows written in descending order so that the chunk's :math:`\tilde\alpha`,
      :math:`\tilde\beta` rows ``Y`` line up with their partner rows and join them in one add).
      The first of them (``k = m``) reads row ``m``, in the other half order: it writes its two
      halves swapped.

    Each step is four ops (two ``logaddexp``, two ``add``) on ``(2, M)``, M = N W - 4: the rows
    of a half flattened into one contiguous run (padding included), one strided view per operand
    covering both halves (their predecessor columns differ by 2 and 4). A per-sample ``(N, L)``
    view would leave the vectorised kernels one scalar tail per sample, which costs
    ``logaddexp`` 3-4x at L = 61. The padding positions compute garbage that their ``-inf``
    emission turns back into ``-inf`` (:func:`_sanitise_` keeps every emission below ``+inf``).

    The emissions come from one folded, sanitised copy ``Z`` ``(2, m, N, C)`` of ``x``: ``Z[0, j]``
    is frame ``T'-1-j``, ``Z[1, j]`` frame ``j``, so that the emissions of step ``k < m`` are
    ``Z[:, k]`` and those of step ``k >= m`` ``Z[:, T'-1-k]`` (halves in each step's order), one
    gather for any run of steps. Once the recursions are done ``Z`` holds ``G``.

    :math:`\log p_n` is :math:`\beta'_0(0) \oplus \beta'_0(1)`, from the last step (1 for an
    empty target with no frame, 0 for a non-empty one, with no special case)."""
    T, N, C = x.shape
    L = 2 * targets.shape[1] + 1
    W = L + 4
    NW = N * W
    M = NW - 4
    m = (T + 1) // 2
    T2 = 2 * m
    dev = x.device
    ext, used = _eager_setup(x, targets, tl, blank)
    frames = torch.cat([torch.arange(T2 - 1, m - 1, -1, device=dev), torch.arange(m, device=dev)])
    Z = x.index_select(0, frames.clamp(max=T - 1)).view(2, m, N, C)  # the extra frame: any, masked
    bad = _sanitise_(Z, (frames.unsqueeze(1) < il).view(2, m, N, 1), used, blank)
    X = x.new_full((m + 1, 2 * N, W), _NEG_INF)
    torch.gather(Z.transpose(0, 1), 3, ext.expand(m, 2, N, L), out=X[1:].view(m, 2, N, W)[..., 2 : 2 + L])
    X[0, :N].scatter_(1, (2 + 2 * tl).unsqueeze(1), 0.0)
    X[0, N:, 2] = 0.0
    skip = ext[:, :-2] != ext[:, 2:]  # (N, L-2): the skip between s and s+2 is allowed
    mask = x.new_full((2, N, W), _NEG_INF)
    mask[0, :, 2:L].masked_fill_(skip, 0.0)  # beta': s+2 -> s
    mask[1, :, 4 : L + 2].masked_fill_(skip, 0.0)  # alpha: s-2 -> s
    mask = mask.view(2, NW)[:, 2 : 2 + M]
    mask_swapped = mask.flip(0)
    y = x.new_empty(2, M)
    tmp = x.new_empty(2, M)
    logaddexp, add = torch.logaddexp, torch.add

    def views(buf: Tensor, rows: int, specs):
        # per-row (2, M) views (offset of half 0, columns half 1 reads right of half 0)
        return (buf.as_strided((rows, 2, M), (2 * NW, NW + shift, 1), off).unbind(0) for off, shift in specs)

    # steps k < m, in X: [beta' | alpha]; a: state s (a[k + 1] is the row step k writes);
    # b: s + 1 / s - 1; c: s + 2 / s - 2
    a, b, c = views(X, m + 1, ((2, 0), (3, -2), (4, -4)))
    for k in range(m):
        logaddexp(a[k], b[k], out=y)
        add(c[k], mask, out=tmp)
        logaddexp(y, tmp, out=y)
        add(y, a[k + 1], out=a[k + 1])
    # steps k >= m, in chunks of Q: [alpha | beta']
    K = -(-m // 6)
    Q = x.new_full((K + 1, 2 * N, W), _NEG_INF)
    Y = x.new_empty(K, 2, M)
    Yq = Y.unbind(0)
    qa, qb, qc = views(Q, K + 1, ((2, 0), (1, 2), (0, 4)))
    joint = X.as_strided((m + 1, 2, M), (2 * NW, NW, 1), 2)
    done = 0
    while done < m:
        n = min(K, m - done)
        j = m - done - n  # Z[:, j + q] holds the emissions of the step that writes Q[q]
        if done:
            Q[n].copy_(Q[0])  # the row the previous chunk ended on
        e = Q[:n].view(n, 2, N, W)[..., 2 : 2 + L]
        torch.gather(Z[:, j : j + n].transpose(0, 1), 3, ext.expand(n, 2, N, L), out=e)
        top = n - 1
        if not done:  # step m reads row m of X, in the other half order
            logaddexp(a[m], b[m], out=y)
            add(c[m], mask, out=tmp)
            logaddexp(y[0], tmp[0], out=Yq[top][1])
            logaddexp(y[1], tmp[1], out=Yq[top][0])
            add(Yq[top], qa[top], out=qa[top])
            top -= 1
        for q in range(top, -1, -1):
            yq, aq = Yq[q], qa[q]
            logaddexp(qa[q + 1], qb[q + 1], out=y)
            add(qc[q + 1], mask_swapped, out=tmp)
            logaddexp(y, tmp, out=yq)
            add(yq, aq, out=aq)
        joint[j + 1 : j + 1 + n].add_(Y[:n])  # Y[q] joins row T' - k = j + 1 + q
        done += n
    logp = torch.logaddexp(Q[0, N:, 2], Q[0, N:, 3]).masked_fill_(bad, float("nan"))
    del Q, Y, Yq, qa, qb, qc, a, b, c
    # gamma_t(s) = exp(joint_t(s) - log p), in place. The exp arguments are <= 0 up to rounding,
    # clamped at -80 (slow denormal exps). sum_s gamma_t(s) = 1 on every valid frame in exact
    # arithmetic. In float32, alpha and beta' carry a drift common to all states of a frame
    # (|log p| ~ 1e4 for T = 4000 has an ulp of 1e-3), which dividing by the computed sum
    # cancels (T = 4000, S = 2500: max gradient error 1.8e-3 against float64, torch's 8.5e-3).
    # Negated, so that the class sums below subtract. Invalid frames (among them the extra one)
    # and impossible or NaN samples are overwritten at the end.
    # The frame's maximum is subtracted first (the normalisation makes that the same in exact
    # arithmetic, as the native kernel does): a drift of hundreds (float32 log-probabilities of
    # 1e9, whose ulp is 64) would otherwise overflow exp to inf and the quotient to NaN.
    R = X[1:, :, 2 : 2 + L]
    R.sub_(torch.cat([logp, logp]).view(1, 2 * N, 1))
    top = R.amax(2, keepdim=True)
    R.sub_(top.masked_fill_(~torch.isfinite(top), 0.0)).clamp_(min=_EXP_FLOOR).exp_()
    R.div_(R.sum(2, keepdim=True).neg_())
    # G = exp(x) - class sums of gamma, in Z's memory (T N C of its T' N C floats). Frames >= m
    # (half 0, reversed) are summed into Z[0] first, which is G[:m]'s memory, then added to
    # G[m:] (Z[1]'s memory) in natural order; then G[:m] gets its exp and half 1's sums.
    s0 = _class_sums(R[:, :N], ext, C, acc=Z[0].zero_())
    G = Z.view(-1)[: T * N * C].view(T, N, C)
    torch.exp(x[m:], out=G[m:])
    G[m:].index_add_(0, torch.arange(T - m - 1, -1, -1, device=dev), s0[T2 - T :])
    torch.exp(x[:m], out=G[:m])
    _class_sums(R[:, N:], ext, C, acc=G[:m])
    del X, R, Z, s0
    valid = (torch.arange(T, device=dev).unsqueeze(1) < il).unsqueeze(2)  # (T, N, 1)
    impossible = (logp == _NEG_INF).view(1, N, 1)
    if zero_infinity:
        G.masked_fill_(~valid | impossible, 0.0)
        return logp, G.masked_fill_(valid & bad.view(1, N, 1), float("nan"))
    G.masked_fill_(~valid, 0.0)
    return logp, G.masked_fill_(valid & (impossible | bad.view(1, N, 1)), float("nan"))


def _forward_autograd(x: Tensor, plan: _Plan, with_grad: bool):
    """``(log p, G)`` (G before the inf/NaN rule) like :func:`_fast`, written out of place with :func:`_recurse_autograd` (differentiable,
    vmappable, traceable)."""
    E, mask, init = plan.emissions(x, with_grad)
    Y, X = _recurse_autograd(E, mask, init)
    N = plan.N
    logp = plan.log_p(X[:, :N])
    if not with_grad:
        return logp, None
    # joint[t, n, s] = alpha~_t(s) + beta'_t(s) (no emission subtracted: no -inf - -inf); beta'
    # holds its start state at 0 on frames t >= Tn: masked so that exp cannot overflow there
    valid = plan.valid_t.unsqueeze(2)
    beta = torch.where(valid, X[1:, N:, 2:].flip(0, 2), _NEG_INF)
    finite = torch.isfinite(logp)
    logp_safe = torch.where(finite, logp, 0.0)  # double where: no inf - inf in the derivative
    e = beta + Y[:, :N] - logp_safe.view(1, N, 1)
    # the frame's maximum subtracted (a constant: the normalisation below cancels it) so that a
    # float32 drift cannot overflow exp, as in the fast path
    top = e.detach().amax(2, keepdim=True)
    gamma = (e - torch.where(torch.isfinite(top), top, 0.0)).exp()
    # the same per-frame normalisation as the fast path (its derivative is 0 in exact arithmetic:
    # the sum is identically 1 on valid frames)
    z = gamma.sum(2, keepdim=True)
    gamma = gamma / torch.where(valid & (z > 0), z, 1.0)
    G = torch.exp(x) - _class_sums(gamma, plan.ext, plan.C)
    return logp, torch.where(valid, G, 0.0)





def _batched(log_probs: Tensor) -> Tensor:
    """``(T, N, C)`` from batched or unbatched ``(T, C)`` log-probabilities (a view inside the
    Function, so that an unbatched call is still one node)."""
    return log_probs.unsqueeze(1) if log_probs.dim() == 2 else log_probs


def _losses(logp: Tensor, zero_infinity: bool) -> Tensor:
    loss = -logp
    if zero_infinity:
        loss = torch.where(loss == float("inf"), 0.0, loss)
    return loss


def _reduce(loss: Tensor, reduction: int, tl: Tensor) -> Tensor:
    if reduction == R.MEAN:
        return (loss / tl.clamp(min=1).to(loss.dtype)).mean()
    if reduction == R.SUM:
        return loss.sum()
    return loss


def _coef(grad: Tensor, reduction: int, tl: Tensor, N: int) -> Tensor:
    """The gradient each sample's loss receives, shaped ``(1, N, 1)`` (or a 0-d tensor)."""
    if reduction == R.MEAN:
        return (grad / (tl.clamp(min=1).to(grad.dtype) * N)).view(1, N, 1)
    if reduction == R.SUM:
        return grad
    return grad.reshape(1, N, 1)


class CTCLossFunction(LossFunction):
    r"""CTC loss of ``log_probs`` ``(T, N, C)`` (or unbatched ``(T, C)``, with ``N = 1``) and padded ``targets`` ``(N, S)`` (int64), with
    int64 ``input_lengths``/``target_lengths`` ``(N)``; see the module docstring for the
    recursions, torch's gradient and the derivative semantics.

    Returns ``(loss, G)``: the reduced loss in the input's dtype, and a non-differentiable
    ``(T, N, C)`` per-sample gradient computed alongside the forward when ``with_grad`` (an empty
    tensor otherwise), which a first-order backward only scales. The caller keeps ``loss``.
    """

    @staticmethod
    def forward(log_probs, targets, input_lengths, target_lengths, blank, reduction, zero_infinity, with_grad):
        dtype = opmath_dtype(log_probs.dtype)
        x = _batched(log_probs).to(dtype)
        if _plain(log_probs, targets, input_lengths, target_lengths):
            # the gradient is precomputed only on the fast path; elsewhere backward recomputes it
            logp, G = _fast(x, targets, input_lengths, target_lengths, blank, zero_infinity, with_grad)
        else:
            logp, G = _forward_autograd(x, _Plan(x, targets, input_lengths, target_lengths, blank), False)
        loss = _reduce(_losses(logp, zero_infinity), reduction, target_lengths)
        if log_probs.dim() == 2 and reduction == R.NONE:
            loss = loss.squeeze(0)
        return loss.to(log_probs.dtype), x.new_empty(0) if G is None else G

    @staticmethod
    def setup_context(ctx, inputs, output):
        log_probs, targets, input_lengths, target_lengths, blank, reduction, zero_infinity, _ = inputs
        ctx.blank, ctx.reduction, ctx.zero_infinity = blank, reduction, zero_infinity
        ctx.mark_non_differentiable(output[1])
        # no zero (T, N, C) gradient materialised for G, which nothing differentiates: a third
        # buffer of that size next to G and the returned gradient during the backward
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(log_probs, targets, input_lengths, target_lengths, output[1])
        ctx.save_for_forward(log_probs, targets, input_lengths, target_lengths)

    @staticmethod
    def backward(ctx, grad, _grad_G):
        log_probs, targets, il, tl, G = ctx.saved_tensors
        if grad is None or not ctx.needs_input_grad[0]:
            return (None,) * 8
        N = _batched(log_probs).shape[1]
        g = _coef(grad.to(opmath_dtype(log_probs.dtype)), ctx.reduction, tl, N)
        if G.numel() == 0 or torch.is_grad_enabled() or not _plain(log_probs, grad, G):
            G = _gradient(log_probs, targets, il, tl, ctx.blank, ctx.zero_infinity)
            out = G * g
        else:
            out = G.mul(g)
        return out.reshape(log_probs.shape).to(log_probs.dtype), None, None, None, None, None, None, None

    @staticmethod
    def jvp(ctx, t_lp, _t, _il, _tl, _b, _r, _z, _w):
        log_probs, targets, il, tl = ctx.saved_tensors[:4]
        dtype = opmath_dtype(log_probs.dtype)
        G = _gradient(log_probs, targets, il, tl, ctx.blank, ctx.zero_infinity)
        t_loss = _reduce((G * _batched(t_lp).to(dtype)).sum(dim=(0, 2)), ctx.reduction, tl)
        if log_probs.dim() == 2 and ctx.reduction == R.NONE:
            t_loss = t_loss.squeeze(0)
        return t_loss.to(log_probs.dtype), None


def _apply_inf(G: Tensor, logp: Tensor, plan: _Plan, zero_infinity: bool) -> Tensor:
    """Impossible samples (:math:`\\log p_n = -\\infty`): torch's NaN on frames ``t < Tn``, or 0
    with ``zero_infinity``; frames ``t >= Tn`` are 0 either way."""
    bad = (logp == _NEG_INF).view(1, -1, 1)
    if zero_infinity:
        return torch.where(bad, 0.0, G)
    nan_here = bad & plan.valid_t.unsqueeze(2)
    return torch.where(nan_here, float("nan"), G)


def _gradient(log_probs: Tensor, targets: Tensor, il: Tensor, tl: Tensor, blank: int, zero_infinity: bool) -> Tensor:
    """:math:`G` recomputed from the inputs, differentiably unless nothing will differentiate it."""
    x = _batched(log_probs).to(opmath_dtype(log_probs.dtype))
    if not torch.is_grad_enabled() and _plain(log_probs, targets, il, tl):
        return _fast(x, targets, il, tl, blank, zero_infinity, True)[1]
    plan = _Plan(x, targets, il, tl, blank)
    logp, G = _forward_autograd(x, plan, True)
    return _apply_inf(G, logp, plan, zero_infinity)
