"""Shared checks of torchloss's native kernels (torchloss/_native) against the Python reference.

Each family's ``tests/test_native_<family>.py`` lists sample calls and runs :func:`check_kernel`
(values and gradients, saved bytes, untouched inputs) and :func:`check_double_backward` on them.
The reference is the same call with the kernels switched off (:func:`reference_only`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import pytest
import torch

from torchloss import _native as native
from torchloss.testing import graph_functions, parity, saved_bytes
from torchloss.testing._helpers import _as_function, _clone_inputs, _get

requires_native = pytest.mark.skipif(native.module is None, reason=f"native kernels: {native.state}")


@contextlib.contextmanager
def reference_only():
    """Every call inside runs the Python reference Functions (the kernels are switched off)."""
    saved = native.module
    native.module = None
    try:
        yield
    finally:
        native.module = saved


def kernel_nodes(out: torch.Tensor) -> list[str]:
    """Names of the native kernels' nodes in ``out``'s graph (``CppNode<torchloss::NLLPlain>``)."""
    prefix = "torch::autograd::CppNode<torchloss::"
    return [n[len(prefix) : -1] for n in graph_functions(out) if isinstance(n, str) and n.startswith(prefix)]


def _off(fn: Callable) -> Callable:
    def call(*args, **kwargs):
        with reference_only():
            return fn(*args, **kwargs)

    return call


def takes_kernel(fn: Callable, args: Sequence, kwargs: dict | None = None, wrt: Sequence = (0,)) -> list[str]:
    """The kernel nodes of one call with ``wrt`` requiring grad (empty: the reference ran)."""
    args, kwargs, _ = _clone_inputs(args, kwargs or {}, wrt)
    return kernel_nodes(fn(*args, **kwargs))


def check_kernel(
    fn: Callable,
    args: Sequence,
    kwargs: dict | None = None,
    wrt: Sequence = (0,),
    *,
    node: str | None = None,
    rtol: float = 1e-6,
    atol: float = 1e-7,
) -> None:
    """``fn(*args, **kwargs)`` takes a native kernel (named ``node`` when given) and agrees with
    the reference: values, dtype and shape, and the gradients of ``wrt`` under a random upstream
    gradient; it saves no more bytes for backward; its inputs are left as they were."""
    kwargs = kwargs or {}
    nodes = takes_kernel(fn, args, kwargs, wrt)
    assert nodes, "the call did not take a native kernel"
    if node is not None:
        assert nodes == [node], nodes
    tensors = [a for a in list(args) + list(kwargs.values()) if isinstance(a, torch.Tensor)]
    before = [t.clone() for t in tensors]
    report = parity(fn, _off(fn), args, kwargs, wrt, rtol=rtol, atol=atol)
    assert report.ok, report.problems
    ours, ref = saved_bytes(fn, args, kwargs, wrt), saved_bytes(_off(fn), args, kwargs, wrt)
    assert ours.extra <= ref.extra, (ours, ref)
    for t, b in zip(tensors, before):
        assert torch.equal(t, b) or torch.allclose(t, b, equal_nan=True)


def check_double_backward(fn: Callable, args: Sequence, kwargs: dict | None = None, wrt: Sequence = (0,)) -> None:
    """gradcheck (with batched gradients) and gradgradcheck of a float64 call that takes a
    kernel: the kernel's backward, and its hand-over to the reference under create_graph and for
    a batched upstream gradient (``is_grads_batched``); and ``jacobian(vectorize=True)`` against
    the reference's."""
    kwargs = kwargs or {}
    assert takes_kernel(fn, args, kwargs, wrt), "the call did not take a native kernel"
    f = _as_function(fn, args, kwargs, wrt)
    inputs = tuple(_get(args, kwargs, slot).detach().double().requires_grad_() for slot in wrt)
    assert torch.autograd.gradcheck(f, inputs, check_batched_grad=True)
    assert torch.autograd.gradgradcheck(f, inputs)
    check_batched_backward(fn, args, kwargs, wrt)


def check_batched_backward(fn: Callable, args: Sequence, kwargs: dict | None = None, wrt: Sequence = (0,)) -> None:
    """A call that takes a kernel, differentiated with a batch of upstream gradients
    (``torch.autograd.grad(..., is_grads_batched=True)``, what ``jacobian(vectorize=True)`` and
    ``gradcheck(check_batched_grad=True)`` run): the kernel's backward hands the batched gradient
    to the reference, and the result is the reference's, row by row."""
    kwargs = kwargs or {}
    args, kwargs, leaves = _clone_inputs(args, kwargs, wrt)
    out = fn(*args, **kwargs)
    assert kernel_nodes(out), "the call did not take a native kernel"
    gen = torch.Generator().manual_seed(0)
    grads = torch.randn((3, *out.shape), generator=gen, dtype=torch.float64).to(out.dtype)
    got = torch.autograd.grad(out, leaves, grads, is_grads_batched=True, allow_unused=True)
    with reference_only():
        ref_out = fn(*args, **kwargs)
    for k in range(3):
        expect = torch.autograd.grad(ref_out, leaves, grads[k], retain_graph=True, allow_unused=True)
        for g, e in zip(got, expect):
            assert (g is None) == (e is None)
            if g is not None:
                torch.testing.assert_close(g[k], e)
