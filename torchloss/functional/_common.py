"""Shared by every family."""

from __future__ import annotations

import warnings

import torch
from torch import Tensor
from torch._subclasses.fake_tensor import FakeTensor

from .. import _reduction as R
from .._autograd._base import broadcast_shape

_SIZE_WARNING = (
    "Using a target size ({}) that is different to the input size ({}). This will likely lead to "
    "incorrect results due to broadcasting. Please ensure they have the same size."
)
_WEIGHTED_REDUCTIONS = {"none": R.NONE, "sum": R.SUM}


def _warn_size(input: Tensor, target: Tensor) -> None:
    if target.size() != input.size():
        warnings.warn(_SIZE_WARNING.format(target.size(), input.size()), stacklevel=3)


def _check_broadcast(input: Tensor, target: Tensor) -> None:
    # torch broadcasts the pair up front; doing the shape arithmetic here gives the same
    # RuntimeError for incompatible shapes without creating expanded views in the graph.
    broadcast_shape(input.shape, target.shape)


def _weighted_reduction(reduction: str, weight: Tensor, input: Tensor, mean_code: int) -> int:
    """Reduction code of the Python-weighted path of l1/mse/huber (torch validates it there)."""
    if weight.size() != input.size():
        raise ValueError("Weights and input must have the same size.")
    if reduction == "mean":
        return mean_code
    code = _WEIGHTED_REDUCTIONS.get(reduction)
    if code is None:
        raise ValueError(
            f"Invalid reduction mode: {reduction}. Expected one of 'none', 'mean', 'sum'."
        )
    return code


def _require_floating(name: str, input: Tensor, target: Tensor) -> None:
    # input and target are broadcast against each other first, so their dtypes promote plainly
    dtype = torch.promote_types(input.dtype, target.dtype)
    if not dtype.is_floating_point:
        raise NotImplementedError(
            f"{name}: expected floating-point input and target, got {_name(dtype)} "
            f"(input {_name(input)}, target {_name(target)})"
        )


def _name(t: Tensor | torch.dtype) -> str:
    """``'float32'`` for a float32 tensor or dtype: dtype names for error messages."""
    return str(getattr(t, "dtype", t)).replace("torch.", "")


def _on_host(t: Tensor) -> bool:
    """Whether a value check may read ``t`` on the host: a real CPU tensor (under ``torch.func``
    transforms, the plain tensor underneath) outside ``torch.compile``. A meta or fake tensor
    (``FakeTensorMode``) has no values and a CUDA one would synchronise: their checks are
    ``torch._assert_async`` instead (a no-op on meta and fake tensors, as torch's meta kernels
    skip value checks; a device-side assert on CUDA)."""
    if torch.compiler.is_compiling():
        return False
    t = _unwrap_functorch(t)
    return t.device.type == "cpu" and not isinstance(t, FakeTensor)


def _unwrap_functorch(t: Tensor) -> Tensor:
    # Under torch.func transforms the tensor is a wrapper (a BatchedTensor under vmap, on which
    # a value check would be data-dependent control flow, which vmap refuses). The innermost
    # plain tensor holds every value the wrapper stands for (all samples of a vmap batch), so
    # checking it is exactly checking each sample.
    while torch._C._functorch.is_functorch_wrapped_tensor(t):
        t = torch._C._functorch.get_unwrapped(t)
    return t


def _check_broadcastable(fn: str, name: str, t: Tensor, other: str, shape, first: bool = False) -> None:
    """RuntimeError unless ``t`` and ``shape`` broadcast together.

    The message starts with torch's words for the op that fails there (``other`` is tensor
    ``a`` of torch's binary op and ``t`` tensor ``b``; ``first``: the other way round), which
    torch's own tests match, followed by which argument and shapes it is about."""
    ndim = max(len(t.shape), len(shape))
    for i, (a, b) in enumerate(zip(reversed(t.shape), reversed(shape)), start=1):
        if a != b and a != 1 and b != 1:
            sa, sb = (a, b) if first else (b, a)
            raise RuntimeError(
                f"The size of tensor a ({sa}) must match the size of tensor b ({sb}) at non-singleton "
                f"dimension {ndim - i} ({fn}: {name} of shape {list(t.shape)} is not broadcastable "
                f"with the {other} shape {list(shape)}: size {a} does not match size {b} at dimension {-i})"
            )


_C10_NAMES = {
    torch.float32: "Float", torch.float64: "Double", torch.float16: "Half", torch.bfloat16: "BFloat16",
    torch.int64: "Long", torch.int32: "Int", torch.int16: "Short", torch.int8: "Char",
    torch.uint8: "Byte", torch.bool: "Bool", torch.complex64: "ComplexFloat",
    torch.complex128: "ComplexDouble", torch.complex32: "ComplexHalf",
}


def _c10_name(t: Tensor) -> str:
    """The name ATen's messages give ``t``'s dtype ("Float", "Long", ...)."""
    return _C10_NAMES.get(t.dtype, str(t.dtype).replace("torch.", ""))


def _not_differentiable(fn: str, name: str, t: Tensor | None) -> None:
    # torch's autograd layer refuses these arguments when they would need a gradient (only with
    # grad mode on: under no_grad torch accepts them, and so does torchloss).
    if t is not None and t.requires_grad and torch.is_grad_enabled():
        raise RuntimeError(
            f"The function '{fn}' is not differentiable with respect to argument '{name}'. "
            "This input cannot have requires_grad True."
        )


_NATIVE_FLOAT = (torch.float32, torch.float64)


def _require_reduction_string(fn: str, reduction) -> None:
    # torch builds its message with ``reduction + "..."``, which is a TypeError for non-strings.
    if not isinstance(reduction, str):
        raise TypeError(f"{fn}(): reduction must be a string, got {type(reduction).__name__}")


def _require_tensor(fn: str, name: str, position: int, value) -> None:
    if not isinstance(value, Tensor):
        raise TypeError(
            f"{fn}(): argument '{name}' (position {position}) must be Tensor, not {type(value).__name__}"
        )


def _require_bool(fn: str, name: str, position: int | None, value) -> bool:
    """torch's argument parser for a ``bool`` argument: only a Python bool passes (TypeError)."""
    if not isinstance(value, bool):
        where = f" (position {position})" if position is not None else ""
        raise TypeError(f"{fn}(): argument '{name}'{where} must be bool, not {type(value).__name__}")
    return value
