"""Shared by every family."""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

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


def _unwrap_functorch(t: Tensor) -> Tensor:
    # Under torch.func transforms the tensor is a wrapper (a BatchedTensor under vmap, on which
    # a value check would be data-dependent control flow, which vmap refuses). The innermost
    # plain tensor holds every value the wrapper stands for (all samples of a vmap batch), so
    # checking it is exactly checking each sample.
    while torch._C._functorch.is_functorch_wrapped_tensor(t):
        t = torch._C._functorch.get_unwrapped(t)
    return t


def _check_broadcastable(fn: str, name: str, t: Tensor, other: str, shape) -> None:
    """RuntimeError unless ``t`` and ``shape`` broadcast together."""
    for i, (a, b) in enumerate(zip(reversed(t.shape), reversed(shape)), start=1):
        if a != b and a != 1 and b != 1:
            raise RuntimeError(
                f"{fn}: {name} of shape {list(t.shape)} is not broadcastable with the {other} "
                f"shape {list(shape)}: size {a} does not match size {b} at dimension {-i}"
            )


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
