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
    """gradcheck and gradgradcheck of a float64 call that takes a kernel: the kernel's backward
    and its create_graph hand-over to the reference."""
    kwargs = kwargs or {}
    assert takes_kernel(fn, args, kwargs, wrt), "the call did not take a native kernel"
    f = _as_function(fn, args, kwargs, wrt)
    inputs = tuple(_get(args, kwargs, slot).detach().double().requires_grad_() for slot in wrt)
    assert torch.autograd.gradcheck(f, inputs)
    assert torch.autograd.gradgradcheck(f, inputs)
