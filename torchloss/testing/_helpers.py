"""Implementation of :mod:`torchloss.testing` (see there)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

Slot = int | str


# --------------------------------------------------------------------------------------------
# Argument plumbing


def _get(args: Sequence, kwargs: dict, slot: Slot):
    return kwargs[slot] if isinstance(slot, str) else args[slot]


def _substitute(args: Sequence, kwargs: dict, wrt: Sequence[Slot], values: Sequence):
    args, kwargs = list(args), dict(kwargs)
    for slot, v in zip(wrt, values):
        if isinstance(slot, str):
            kwargs[slot] = v
        else:
            args[slot] = v
    return args, kwargs


def _clone_inputs(args, kwargs, wrt, requires_grad=True):
    leaves = []
    for slot in wrt:
        t = _get(args, kwargs, slot).detach().clone()
        t.requires_grad_(requires_grad)
        leaves.append(t)
    a, k = _substitute(args, kwargs, wrt, leaves)
    return a, k, leaves


def _as_function(fn, args, kwargs, wrt):
    """``f(*tensors)`` with the ``wrt`` tensors as its arguments and everything else fixed."""

    def f(*tensors):
        a, k = _substitute(args, kwargs, wrt, tensors)
        return fn(*a, **k)

    return f


def max_error(a: Tensor | None, b: Tensor | None) -> float:
    """Largest absolute difference, NaN- and inf-aware: equal NaN/inf positions count as equal."""
    if a is None or b is None:
        return 0.0 if a is None and b is None else math.inf
    if a.shape != b.shape:
        return math.inf
    if a.numel() == 0:
        return 0.0
    wide = torch.complex128 if (a.is_complex() or b.is_complex()) else torch.float64
    a64, b64 = a.detach().to("cpu", wide), b.detach().to("cpu", wide)
    same = (a64 == b64) | (a64.isnan() & b64.isnan())
    diff = torch.where(same, 0.0, (a64 - b64).abs())
    return float(diff.max())


def _close(a: Tensor | None, b: Tensor | None, rtol: float, atol: float) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    return bool(torch.allclose(a.detach().cpu(), b.detach().cpu(), rtol=rtol, atol=atol, equal_nan=True))


# --------------------------------------------------------------------------------------------
# Parity


@dataclass
class Report:
    """What :func:`parity` found: the largest forward and gradient errors, and whether both were
    within tolerance (and dtypes/shapes agreed)."""

    forward_error: float
    gradient_error: float
    ok: bool
    problems: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return self.ok


def parity(
    fn: Callable,
    reference: Callable,
    args: Sequence,
    kwargs: dict | None = None,
    wrt: Sequence[Slot] = (0,),
    *,
    rtol: float = 1e-5,
    atol: float = 1e-6,
    seed: int = 0,
) -> Report:
    """Compare ``fn`` against ``reference`` on the same inputs: output values, dtype and shape,
    and the gradients of every ``wrt`` input under one random upstream gradient.

    Both run on fresh clones of the inputs, so neither can see the other's side effects. A ``wrt``
    input that ``reference`` does not differentiate (its gradient is ``None``) must get ``None``
    from ``fn`` as well.
    """
    kwargs = kwargs or {}
    problems = []
    a1, k1, leaves1 = _clone_inputs(args, kwargs, wrt)
    a2, k2, leaves2 = _clone_inputs(args, kwargs, wrt)
    out = fn(*a1, **k1)
    ref = reference(*a2, **k2)
    fwd = max_error(out, ref)
    if out.shape != ref.shape:
        problems.append(f"output shape {tuple(out.shape)} != reference {tuple(ref.shape)}")
    if out.dtype != ref.dtype:
        problems.append(f"output dtype {out.dtype} != reference {ref.dtype}")
    if not _close(out, ref, rtol, atol):
        problems.append(f"forward differs by {fwd:.3g}")
    grad_err = 0.0
    if ref.requires_grad or out.requires_grad:
        gen = torch.Generator().manual_seed(seed)
        upstream = torch.rand(ref.shape, generator=gen, dtype=torch.float64).add_(0.5)
        upstream = upstream.to(device=ref.device, dtype=ref.dtype)
        g1 = _grads(out, leaves1, upstream.to(out.dtype))
        g2 = _grads(ref, leaves2, upstream)
        for slot, a, b in zip(wrt, g1, g2):
            err = max_error(a, b)
            grad_err = max(grad_err, err)
            if not _close(a, b, rtol, atol):
                problems.append(f"gradient of {slot!r} differs by {err:.3g}")
    return Report(fwd, grad_err, not problems, problems)


def _grads(out: Tensor, leaves: list[Tensor], upstream: Tensor) -> list[Tensor | None]:
    if not out.requires_grad:
        return [None] * len(leaves)
    return list(torch.autograd.grad(out, leaves, upstream, allow_unused=True))


# --------------------------------------------------------------------------------------------
# Autograd checks


def check_autograd(
    fn: Callable,
    args: Sequence,
    kwargs: dict | None = None,
    wrt: Sequence[Slot] = (0,),
    *,
    gradgrad: bool = True,
    forward_ad: bool = True,
    batched: bool = True,
    **gradcheck_kwargs: Any,
) -> dict[str, bool]:
    """``gradcheck``, ``gradgradcheck`` and the forward-mode (jvp) check of ``fn`` w.r.t. ``wrt``.

    With ``batched`` (the default), ``gradcheck`` also checks batched gradients
    (``check_batched_grad=True``: the backward run once under ``is_grads_batched=True``, i.e.
    vmapped over the upstream gradient, as torch's own OpInfo tests do), and
    :func:`check_vectorized_jacobian` compares ``jacobian(vectorize=True)`` with the
    non-vectorized one.

    Inputs should be float64. Each check raises ``torch.autograd.gradcheck.GradcheckError`` on
    failure; the returned dict records which checks ran.
    """
    kwargs = kwargs or {}
    _, _, leaves = _clone_inputs(args, kwargs, wrt)
    f = _as_function(fn, args, kwargs, wrt)
    done = {}
    first = dict(gradcheck_kwargs)
    if batched:
        first.setdefault("check_batched_grad", True)
    torch.autograd.gradcheck(f, leaves, **first)
    done["gradcheck"] = True
    if batched:
        check_vectorized_jacobian(fn, args, kwargs, wrt)
        done["vectorized_jacobian"] = True
    if gradgrad:
        torch.autograd.gradgradcheck(f, leaves, **gradcheck_kwargs)
        done["gradgradcheck"] = True
    if forward_ad:
        torch.autograd.gradcheck(
            f,
            leaves,
            check_forward_ad=True,
            check_backward_ad=False,
            check_undefined_grad=False,
            check_batched_grad=False,
            **gradcheck_kwargs,
        )
        done["forward_ad"] = True
    return done


def check_vectorized_jacobian(
    fn: Callable,
    args: Sequence,
    kwargs: dict | None = None,
    wrt: Sequence[Slot] = (0,),
    reference: Callable | None = None,
    *,
    rtol: float = 1e-7,
    atol: float = 1e-10,
) -> None:
    """``torch.autograd.functional.jacobian(vectorize=True)`` of ``fn`` w.r.t. ``wrt`` (one
    backward with a batch of upstream gradients, ``is_grads_batched=True``) against the
    non-vectorized one (one backward per output element), or against ``reference``'s
    vectorized Jacobian when given. Raises ``GradcheckError`` on a mismatch or an error."""
    kwargs = kwargs or {}
    leaves = tuple(_get(args, kwargs, slot).detach() for slot in wrt)
    f = _as_function(fn, args, kwargs, wrt)
    try:
        got = torch.autograd.functional.jacobian(f, leaves, vectorize=True)
    except Exception as exc:
        raise torch.autograd.gradcheck.GradcheckError(f"jacobian(vectorize=True) raised: {exc}") from exc
    if reference is None:
        expected = torch.autograd.functional.jacobian(f, leaves)
    else:
        expected = torch.autograd.functional.jacobian(_as_function(reference, args, kwargs, wrt), leaves, vectorize=True)
    for slot, a, b in zip(wrt, got, expected):
        if not _close(a, b, rtol, atol):
            raise torch.autograd.gradcheck.GradcheckError(
                f"jacobian(vectorize=True) w.r.t. {slot!r} differs from the "
                f"{'reference' if reference is not None else 'non-vectorized one'}: max error {max_error(a, b)}"
            )


def check_jvp(
    fn: Callable,
    reference: Callable | None,
    args: Sequence,
    kwargs: dict | None = None,
    wrt: Sequence[Slot] = (0,),
    *,
    rtol: float = 1e-5,
    atol: float = 1e-6,
    seed: int = 0,
) -> float:
    """Largest error of ``torch.func.jvp(fn)`` against ``reference``'s, along a random tangent.

    With ``reference=None`` (a loss torch cannot differentiate forwards) the reference tangent is
    the reverse-mode Jacobian of ``fn`` itself applied to the tangent, so the two modes of the
    same implementation are checked against each other. Raises ``AssertionError`` on mismatch.
    """
    kwargs = kwargs or {}
    primals = [_get(args, kwargs, s).detach() for s in wrt]
    gen = torch.Generator().manual_seed(seed)
    tangents = [
        torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p.device, p.dtype) for p in primals
    ]
    f = _as_function(fn, args, kwargs, wrt)
    out, t_out = torch.func.jvp(f, tuple(primals), tuple(tangents))
    if reference is not None:
        _, t_ref = torch.func.jvp(_as_function(reference, args, kwargs, wrt), tuple(primals), tuple(tangents))
    else:
        jac = torch.func.jacrev(f, argnums=tuple(range(len(primals))))(*primals)
        t_ref = sum(
            (j.reshape(out.numel(), -1) @ t.reshape(-1)).reshape(out.shape) for j, t in zip(jac, tangents)
        )
    err = max_error(t_out, t_ref)
    assert _close(t_out, t_ref.to(t_out.dtype), rtol, atol), f"jvp differs by {err:.3g}"
    return err


def check_vmap(
    fn: Callable,
    reference: Callable,
    batch: Sequence[tuple[Sequence, dict]],
    wrt: Sequence[Slot] = (0,),
    *,
    rtol: float = 1e-5,
    atol: float = 1e-6,
) -> float:
    """``torch.func.vmap(fn)`` and ``vmap(grad(fn))`` over a batch of samples, against a Python
    loop of ``reference`` (so a reference without vmap support still serves).

    ``batch`` is a list of ``(args, kwargs)`` sharing everything but the ``wrt`` tensors, which
    must have equal shapes across samples. Raises ``AssertionError`` on mismatch.
    """
    args0, kwargs0 = batch[0]
    stacked = [torch.stack([_get(a, k, s) for a, k in batch]) for s in wrt]
    f = _as_function(fn, args0, kwargs0, wrt)
    out = torch.func.vmap(f)(*stacked)
    expected = torch.stack([reference(*a, **k) for a, k in batch])
    err = max_error(out, expected)
    assert _close(out, expected, rtol, atol), f"vmap differs by {err:.3g}"

    def total(*tensors):
        return f(*tensors).sum()

    grads = torch.func.vmap(torch.func.grad(total, argnums=tuple(range(len(wrt)))))(*stacked)
    for i, slot in enumerate(wrt):
        expected_g = []
        for a, k in batch:
            a2, k2, leaves = _clone_inputs(a, k, wrt)
            expected_g.append(torch.autograd.grad(reference(*a2, **k2).sum(), leaves[i])[0])
        expected_g = torch.stack(expected_g)
        e = max_error(grads[i], expected_g)
        err = max(err, e)
        assert _close(grads[i], expected_g, rtol, atol), f"vmap(grad) of {slot!r} differs by {e:.3g}"
    return err


# --------------------------------------------------------------------------------------------
# Graph inspection


def graph_functions(output: Tensor) -> list[type | str]:
    """Every node between ``output`` and its leaves: the ``autograd.Function`` class for custom
    Functions, the node's name for C++ ones (``'torch::autograd::CppNode<torchloss::...>'`` for
    torchloss's native kernels), the node's class name for torch's own (``'AccumulateGrad'`` for
    leaves)."""
    seen, found, stack = set(), [], [output.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        cls = getattr(node, "_forward_cls", None)
        if cls is None and type(node).__name__ == "CppFunction":
            cls = node.name()
        found.append(cls or type(node).__name__)
        stack.extend(n for n, _ in node.next_functions)
    return found


# --------------------------------------------------------------------------------------------
# Memory kept for backward


@dataclass
class SavedBytes:
    """Bytes the autograd graph of one call keeps alive for backward.

    ``total`` counts every distinct storage saved; ``extra`` only those that are not storages of
    the call's own tensor arguments, i.e. memory that exists only because of the graph (an input
    the caller holds anyway costs nothing extra, a log-softmax computed for backward does).
    """

    total: int
    extra: int
    tensors: int


def saved_bytes(fn: Callable, args: Sequence, kwargs: dict | None = None, wrt: Sequence[Slot] = (0,)) -> SavedBytes:
    """Measure what ``fn(*args, **kwargs)`` saves for backward with ``wrt`` requiring grad,
    using :class:`torch.autograd.graph.saved_tensors_hooks` (each storage counted once)."""
    kwargs = kwargs or {}
    args, kwargs, _ = _clone_inputs(args, kwargs, wrt)
    own = {
        t.untyped_storage().data_ptr()
        for t in list(args) + list(kwargs.values())
        if isinstance(t, Tensor)
    }
    seen: dict[int, int] = {}
    count = 0

    def pack(t: Tensor):
        nonlocal count
        count += 1
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn(*args, **kwargs)
    del out
    total = sum(seen.values())
    extra = sum(n for ptr, n in seen.items() if ptr not in own)
    return SavedBytes(total=total, extra=extra, tensors=count)
