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

TorchDynamo cannot trace a Function that defines ``jvp``. Every subclass therefore gets a twin,
``cls.traceable``, identical but for ``jvp``; :func:`apply` picks the twin while
``torch.compile`` is tracing, so compiled training loops see a single traceable node.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd import Function

_LOW_PRECISION = (torch.float16, torch.bfloat16)


class LossFunction(Function):
    generate_vmap_rule = True
    traceable: type[LossFunction]

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("_is_twin"):
            return
        cls.traceable = type(
            cls.__name__,
            (cls,),
            {"jvp": staticmethod(Function.jvp), "_is_twin": True, "__module__": cls.__module__},
        )


def apply(fn: type[LossFunction], *args):
    """``fn.apply(*args)``, or its jvp-less twin under ``torch.compile``."""
    if torch.compiler.is_compiling():
        return fn.traceable.apply(*args)
    return fn.apply(*args)


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
