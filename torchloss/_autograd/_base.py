"""What every torchloss ``Function`` shares.

A loss Function here is a ``torch.autograd.Function`` written in the ``setup_context`` style:

* ``forward(*inputs)`` computes the *reduced* loss (the reduction is part of the Function, so the
  autograd graph of a loss is a single torchloss node);
* ``setup_context`` saves the inputs (never forward intermediates: a backward that recomputes from
  the inputs is differentiable again, which is what makes double backward exact);
* ``backward`` is written in ordinary differentiable torch ops (no ``once_differentiable``), so
  ``create_graph=True`` and ``gradgradcheck`` work;
* ``jvp`` gives forward-mode AD;
* ``generate_vmap_rule = True`` lets ``torch.func.vmap`` run forward, backward and jvp as written,
  which is why none of them branches on tensor values or calls ``.item()``.

TorchDynamo cannot trace a Function that defines ``jvp``. The functional layer therefore calls
each Function through a :class:`Dispatch`, which holds a twin identical but for ``jvp`` and picks
it while ``torch.compile`` is tracing, so compiled training loops see a single traceable node.
"""

from __future__ import annotations

import functools
import inspect

import torch
import torch.autograd.forward_ad as _fwad
from torch import Tensor
from torch.autograd import Function

from .. import _reduction as R
from .._autocast import without_autocast

_LOW_PRECISION = (torch.float16, torch.bfloat16)


class LossFunction(Function):
    generate_vmap_rule = True

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # torch's Function.apply binds the arguments to ``inspect.signature(forward)`` on every
        # call (to fill in defaults); a signature cached on the function (PEP 362's
        # ``__signature__``, which ``inspect.signature`` returns as is) saves 10-20 us per call,
        # a tenth of a small batch's forward and backward.
        forward = cls.__dict__.get("forward")
        if isinstance(forward, staticmethod):
            forward.__func__.__signature__ = inspect.signature(forward.__func__)
        # A backward (or jvp) run inside an autocast region computes what it computes outside
        # (torchloss/_autocast.py: the forward already runs with autocast disabled).
        # (Not torch's defaults: the jvp-less twin of a Dispatch must stay jvp-less for Dynamo.)
        for name in ("backward", "jvp"):
            method = cls.__dict__.get(name)
            if isinstance(method, staticmethod) and method.__func__ is not getattr(Function, name):
                setattr(cls, name, staticmethod(without_autocast(method.__func__)))


class Dispatch:
    """Calls a :class:`LossFunction`, or its jvp-less twin while ``torch.compile`` traces.

    TorchDynamo cannot trace a Function that defines ``jvp``, nor look one Function up from
    another (as a class attribute or a dict key), but it can read the attributes of a plain object
    held in a module global: so the functional layer calls ``Dispatch`` objects.
    """

    __slots__ = ("function", "traceable", "eager")

    def __init__(self, function: type[LossFunction]):
        self.function = function
        self.traceable = type(
            function.__name__,
            (function,),
            {"jvp": staticmethod(Function.jvp), "__module__": function.__module__},
        )
        # ``Function.apply`` ends in ``torch._C._FunctionBase.apply``; before it, in Python, it
        # binds the arguments to ``forward``'s signature (to fill in defaults) and unwraps dead
        # functorch wrappers, or hands the call to functorch when a transform is active. With
        # every argument passed positionally (the functional layer always passes all of them),
        # no transform active and no functorch wrapper among the arguments, none of that changes
        # anything, and calling the C apply directly saves about 5 us a call: a quarter of a
        # small batch's whole forward and backward.
        self.eager = super(Function, function).apply

    def __call__(self, *args):
        if torch.compiler.is_compiling():
            return self.traceable.apply(*args)
        if _transforms_active():
            return self.function.apply(*args)
        for a in args:
            if isinstance(a, Tensor) and _wrapped(a):
                return self.function.apply(*args)
        return self.eager(*args)


_transforms_active = torch._C._are_functorch_transforms_active
_wrapped = torch._C._functorch.is_functorch_wrapped_tensor
_legacy_batched = torch._C._functorch.is_legacy_batchedtensor


def batched(t: Tensor) -> bool:
    """Whether ``t`` is a batched or otherwise wrapped tensor rather than a plain one with storage:
    a functorch wrapper (``torch.func`` transforms) or a legacy ``BatchedTensor``, which is what a
    backward receives as its upstream gradient under ``torch.autograd.grad(...,
    is_grads_batched=True)`` (``gradcheck(check_batched_grad=True)``,
    ``torch.autograd.functional.jacobian/hessian(vectorize=True)``), with no transform active.
    Neither may be written into a plain temporary in place, nor read through a data pointer."""
    return _wrapped(t) or _legacy_batched(t)


_TO_COMPLEX = {
    torch.float16: torch.complex32,
    torch.bfloat16: torch.complex64,
    torch.float32: torch.complex64,
    torch.float64: torch.complex128,
}


def _combine_categories(higher: torch.dtype | None, lower: torch.dtype | None) -> torch.dtype | None:
    # ATen's rule for combining the dtype of dimensioned operands (higher priority) with that of
    # 0-dim operands: the latter only count when they are of a higher category.
    if higher is None:
        return lower
    if lower is None or higher.is_complex:
        return higher
    if lower.is_complex:
        # keeps the precision of the dimensioned floating operand
        return _TO_COMPLEX.get(higher, lower) if higher.is_floating_point else lower
    if higher.is_floating_point:
        return higher
    if higher == torch.bool or lower.is_floating_point:
        return torch.promote_types(higher, lower)
    return higher


def broadcast_shape(*shapes) -> torch.Size:
    """``torch.broadcast_shapes`` of tensor shapes, in plain Python.

    torch's version goes through its symbolic-shape machinery (tens of microseconds a call),
    which would dominate a loss on small inputs (about 18 us against 1 us for two
    shapes). Raises torch's RuntimeError for incompatible sizes.
    """
    first = shapes[0]
    for shape in shapes[1:]:
        if shape != first:
            break
    else:  # equal shapes, the usual case: no loop over the dimensions
        return torch.Size(first)
    ndim = max(len(s) for s in shapes)
    out = [1] * ndim
    for shape in shapes:
        for i, size in enumerate(shape, ndim - len(shape)):
            if size != 1:
                if out[i] != 1 and out[i] != size:
                    raise RuntimeError(
                        f"The size of tensor a ({out[i]}) must match the size of tensor b ({size}) "
                        f"at non-singleton dimension {i} (shapes {', '.join(str(list(x)) for x in shapes)} "
                        "do not broadcast)"
                    )
                out[i] = size
    return torch.Size(out)


def result_type(*tensors: Tensor) -> torch.dtype:
    """``torch.result_type`` for tensors, written with ``torch.promote_types`` so that TorchDynamo
    can trace it (it cannot trace ``torch.result_type``, which returns a dtype)."""
    dim = zero = None
    for t in tensors:
        if t.dim() > 0:
            dim = t.dtype if dim is None else torch.promote_types(dim, t.dtype)
        else:
            zero = t.dtype if zero is None else torch.promote_types(zero, t.dtype)
    return _combine_categories(dim, zero)


def opmath_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the arithmetic of a ``dtype`` loss runs in: float32 for float16/bfloat16 (and
    complex64 for complex32), otherwise ``dtype`` itself; the result is rounded back once."""
    if dtype in _LOW_PRECISION:
        return torch.float32
    if dtype == torch.complex32:
        return torch.complex64
    return dtype


def opmath(t: Tensor) -> Tensor:
    """Compute float16/bfloat16 in float32, as torch's kernels do in registers.

    Only the final result is rounded back, so a reduction over many half-precision elements
    does not accumulate one rounding error per element.
    """
    return t.float() if t.dtype in _LOW_PRECISION else t


def add_tangents(a: Tensor | None, b: Tensor | None) -> Tensor | None:
    """Sum of two optional tangent contributions (``None`` means zero)."""
    if a is None:
        return b
    if b is None:
        return a
    return a + b


def unpack(ctx, n: int):
    """The saved tensors of a pointwise loss, padded with ``None`` for inputs saved as absent."""
    saved = ctx.saved_tensors
    return tuple(saved) + (None,) * (n - len(saved))


def zero_tangent(shape, reduction: int, dtype: torch.dtype, like: Tensor) -> Tensor:
    """The tangent of a loss when only non-differentiable arguments carried tangents."""
    return R.reduce(like.new_zeros(shape, dtype=dtype), reduction)


def eager_in_place(*tensors: Tensor | None) -> bool:
    """Whether a forward or backward may take eager shortcuts (update its own temporaries in
    place, write comparisons with ``out=``, use saved statistics instead of recomputing).

    Only when nothing differentiates or traces the computation: not under ``torch.compile`` (the
    compiler fuses the out-of-place ops anyway), grad mode off (a backward run with
    ``create_graph=True`` or under ``torch.func.grad`` has it on), no
    ``torch.autograd.forward_ad`` level (whose dual tensors would carry tangents through it), and
    no batched tensor among ``tensors`` (:func:`batched`: a vmap ``BatchedTensor``, functorch's or
    the legacy one of ``is_grads_batched``, may differ in batching from the temporary it would be
    written into). A backward passes its upstream gradient (or a temporary made from it) among
    ``tensors``: under ``is_grads_batched`` only the gradient is batched.
    """
    if torch.is_grad_enabled() or _fwad._current_level != -1 or torch.compiler.is_compiling():
        return False
    for t in tensors:  # (a loop: a generator under any() costs ~0.5 us, a tenth of a small step)
        if t is not None and (_wrapped(t) or _legacy_batched(t)):
            return False
    return True


_dispatch_modes = torch._C._len_torch_dispatch_stack


def constant(value: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    """:func:`_constant`, or a fresh tensor while a dispatch mode (``FakeTensorMode``) is active:
    the mode must own every tensor its ops see, and a tensor made under one must not outlive it."""
    if not torch.compiler.is_compiling() and _dispatch_modes():
        with torch.inference_mode(False):
            return torch.tensor(value, dtype=dtype, device=device)
    return _constant(value, dtype, device)


@functools.lru_cache(maxsize=128)
def _constant(value: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    """``value`` (an element count, 0, -1, a loss parameter) as a cached 0-d tensor of ``dtype``.

    An op with a Python number operand wraps it into a fresh 0-d tensor on every call (about
    1 us of a small batch's ~25 us step); arithmetic with this one is the same arithmetic for
    float32/float64 (not for float16/bfloat16, whose kernels keep a Python number in float32).
    Cached (a training loop keeps its shapes), never written to, and made outside inference mode
    so that a ``create_graph`` backward may save it for its own derivative.
    """
    with torch.inference_mode(False):
        return torch.tensor(value, dtype=dtype, device=device)


def chunked_reduce(x: Tensor, y: Tensor, terms, reduction: int, chunk: int) -> Tensor:
    """``reduce(terms(x, y))`` for a contiguous same-shape pair, chunk by chunk (eager paths only).

    ``terms(xc, yc, out, scratch)`` computes the element-wise loss of one chunk into ``out``
    (``scratch``: a buffer of the chunk's size it may use) and returns it. The chunk-sized
    buffers are reused, so they stay in cache across the chunk's passes and nothing full-size
    is allocated at all, except the output of ``'none'``, into which the chunks are written
    directly. ``'mean'``/``'sum'`` add up the chunks' sums: each a cascade sum as torch's, and
    the total of a few dozen of them is as accurate as one sum over everything.
    """
    n = x.numel()
    xf, yf = x.view(-1), y.view(-1)
    scratch = xf.new_empty(min(chunk, n))
    out = xf.new_empty(n) if reduction == R.NONE else xf.new_empty(min(chunk, n))
    sums = []
    for i in range(0, n, chunk):
        m = min(chunk, n - i)
        t = terms(xf[i : i + m], yf[i : i + m], out[i : i + m] if reduction == R.NONE else out[:m], scratch[:m])
        if reduction != R.NONE:
            sums.append(t.sum())
    if reduction == R.NONE:
        return out.view(x.shape)
    total = torch.stack(sums).sum()
    return total.div_(constant(n, total.dtype, total.device)) if reduction == R.MEAN else total


def eager_reduce(loss: Tensor, reduction: int) -> Tensor:
    """:func:`torchloss._reduction.reduce` for eager paths: 'mean' as the sum divided by the
    cached element count (:func:`constant`), bit for bit torch's CPU ``mean`` with one dispatch
    less."""
    if reduction == R.MEAN:
        return loss.sum().div_(constant(loss.numel(), loss.dtype, loss.device))
    return loss.sum() if reduction == R.SUM else loss
