"""Linear cross entropy: the cross entropy of a linear layer's logits, never forming them."""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from .. import _reduction as R
from .._autograd._base import Dispatch
from .._autograd.linear import DEFAULT_BUDGET, LinearCrossEntropyFunction
from .._autograd.linear import lean as _lean
from ._common import _not_differentiable
from .classification import (
    _check_class_range,
    _check_class_weight,
    _check_index_targets,
    _check_smoothing,
    _check_uint8_smoothing_mean,
    _require_int,
    _spatial_weight,
)
from .pair import _require_float

_lce = Dispatch(LinearCrossEntropyFunction)


@dataclasses.dataclass(frozen=True)
class LinearCrossEntropyOptions:
    """torchloss's options for :func:`linear_cross_entropy` (torch's
    ``torch.nn.LinearCrossEntropyOptions`` is accepted too, and means the defaults).

    ``memory_budget``: bytes of block temporaries (logits, exponentials and gradient blocks, the
    float32 copy of a weight block for float16/bfloat16) that one call may hold beyond its
    inputs and gradients; the blocks of rows and classes are planned from the shapes to stay
    within it. ``precompute_gradients``: whether an eager ``'mean'``/``'sum'`` forward whose
    inputs require gradients forms them in the same pass (three matrix products per block in
    all, backward only scales them; the gradients are then held from the forward on), or leaves
    them to backward (which recomputes the logits: four products, no gradient-sized memory
    before backward).
    """

    memory_budget: int = DEFAULT_BUDGET
    precompute_gradients: bool = True

    def __post_init__(self):
        if not isinstance(self.memory_budget, int) or isinstance(self.memory_budget, bool) or self.memory_budget <= 0:
            raise ValueError(f"memory_budget must be a positive int (bytes), got {self.memory_budget!r}")
        if not isinstance(self.precompute_gradients, bool):
            raise TypeError(f"precompute_gradients must be a bool, got {self.precompute_gradients!r}")


_DEFAULTS = LinearCrossEntropyOptions()


def _resolve(options) -> LinearCrossEntropyOptions:
    if options is None or not isinstance(options, LinearCrossEntropyOptions):
        # None (torch's reference path) and torch's own options object: torchloss always
        # streams; torch's chunking fields do not apply (see docs/linear.md)
        if options is not None and not _is_torch_options(options):
            raise TypeError(
                "linear_cross_entropy(): argument 'options' must be None, a "
                "torchloss.LinearCrossEntropyOptions or a torch.nn.LinearCrossEntropyOptions, "
                f"not {type(options).__name__}"
            )
        return _DEFAULTS
    return options


def _is_torch_options(options) -> bool:
    cls = getattr(torch.nn, "LinearCrossEntropyOptions", None)
    return cls is not None and isinstance(options, cls)


def linear_cross_entropy(
    input: Tensor,
    linear_weight: Tensor,
    target: Tensor,
    *,
    linear_bias: Tensor | None = None,
    weight: Tensor | None = None,
    reduction: str = "mean",
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    options=None,
) -> Tensor:
    r"""``cross_entropy(linear(input, linear_weight, linear_bias), target, ...)`` without the
    logits; see :class:`torchloss.LinearCrossEntropyLoss` and docs/linear.md.

    ``input`` ``(in,)`` or ``(N, in)``; ``linear_weight`` ``(C, in)`` or ``(C, d1, ..., dK, in)``
    (a K-dimensional loss over the classes ``C``); the target holds class probabilities when its
    shape is the logits' ``(N, C, d1, ..., dK)`` (or ``(C,)``), class indices otherwise;
    ``ignore_index=None`` means -100 for index targets (and must be ``None`` for probabilities).
    The logits are formed block by block within ``options.memory_budget`` bytes, for every
    argument combination.
    """
    if input.dim() < 1 or input.dim() > 2:
        raise RuntimeError(f"expected input with dimensionality 1 or 2, got {input.dim()}")
    if linear_weight.dim() < 2:
        raise RuntimeError(f"expected linear_weight with dimensionality at least 2, got {linear_weight.dim()}")
    num_batches = input.shape[:-1]
    in_features = input.shape[-1]
    if in_features != linear_weight.shape[-1]:
        raise RuntimeError(
            "expected equal input and linear_weight last dimensions (in_features), "
            f"got {input.shape[-1]} and {linear_weight.shape[-1]}, respectively"
        )
    num_classes = linear_weight.shape[0]
    out_features = tuple(linear_weight.shape[1:-1])
    if linear_bias is not None and tuple(linear_bias.shape) != (num_classes, *out_features):
        raise RuntimeError(
            f"expected linear_bias shape {(num_classes, *out_features)}, got {tuple(linear_bias.shape)}"
        )
    if out_features and len(num_batches) == 0:
        raise RuntimeError(
            f"K-dimensional loss defined by linear_weight shape {tuple(linear_weight.shape)} requires"
            f" batched input, (N, {in_features}), got unbatched input with shape {tuple(input.shape)}"
        )
    logits_shape = (*num_batches, num_classes, *out_features)
    probs = tuple(target.shape) == logits_shape
    if probs and ignore_index is not None:
        raise RuntimeError("ignore_index cannot be specified when target contains probabilities")
    ignore_index = -100 if ignore_index is None else ignore_index
    opts = _resolve(options)
    # the linear layer's checks (torch's addmm/mm messages, naming the arguments)
    if linear_weight.dtype != input.dtype:
        raise RuntimeError(
            f"expected m1 and m2 to have the same dtype (input and linear_weight), but got: "
            f"{_dt(input)} != {_dt(linear_weight)}"
        )
    if linear_bias is not None and linear_bias.dtype != input.dtype:
        raise RuntimeError(
            f"self and mat2 must have the same dtype (linear_bias and linear_weight), but got "
            f"{_dt(linear_bias)} and {_dt(linear_weight)}"
        )
    # cross_entropy's argument parser (reduction, then weight, ignore_index, label_smoothing by
    # position), then its checks, on the logits' shape
    code = R.get_enum(reduction)
    if weight is not None and not isinstance(weight, Tensor):
        raise TypeError(
            f"cross_entropy_loss(): argument 'weight' (position 3) must be Tensor, not {type(weight).__name__}"
        )
    if type(ignore_index) is not int:
        ignore_index = _require_int("cross_entropy_loss", "ignore_index", 5, ignore_index)
    if type(label_smoothing) is not float:
        label_smoothing = _require_float("cross_entropy_loss", "label_smoothing", 6, label_smoothing)
    smoothing = label_smoothing if label_smoothing > 0 else 0.0
    if probs:
        if not target.is_floating_point():
            raise RuntimeError(
                "cross_entropy: Expected floating point type for target with class probabilities "
                f"(a target of the logits' shape), got {_dt(target)}"
            )
        if weight is not None:
            _check_class_weight("cross_entropy", _meta(logits_shape, input), weight, prefix="cross_entropy: ")
            if weight.is_complex():  # (torch returns a complex "loss" here: see docs/differences.md)
                raise NotImplementedError(
                    f"linear_cross_entropy: expected real class weights (weight), got {_dt(weight)}"
                )
        if not input.is_floating_point():
            raise NotImplementedError(f"linear_cross_entropy: expected a floating-point input, got {_dt(input)}")
        _check_smoothing(smoothing)
    else:
        _check_smoothing(smoothing)
        if not input.is_floating_point():
            raise NotImplementedError(f"linear_cross_entropy: expected a floating-point input, got {_dt(input)}")
        if not (weight is None and input.dim() == 2 and not out_features and target.dim() == 1
                and target.dtype == torch.int64 and target.shape[0] == input.shape[0]):
            # (the common case above passes every one of these checks)
            if (input.dim() == 2 and input.shape[0] == 0 and target.dim() == 0 and not out_features
                    and target.dtype in (torch.int64, torch.uint8)):
                # torch's batch check passes (0 == 0) and then reads the 0-d target's size(0)
                raise IndexError("Dimension specified as 0 but tensor has no dimensions")
            weight = _spatial_weight(len(logits_shape), num_classes, weight, smoothing, code, target.numel() == 0,
                                     input.dtype)
            _check_index_targets("cross_entropy", _meta(logits_shape, input), target, weight)
            _not_differentiable("nll_loss_forward", "weight", weight)
        _check_range(target, num_classes, ignore_index)
        if smoothing and weight is not None and target.dtype == torch.uint8 and code == R.MEAN:
            _check_uint8_smoothing_mean(target, ignore_index)  # (torch's cross_entropy on the logits)
    out = _lean(input, linear_weight, target, linear_bias, weight, code, ignore_index, smoothing, probs,
                opts.memory_budget, opts.precompute_gradients)
    if out is not None:
        return out
    out = _lce(input, linear_weight, target, linear_bias, weight, code, ignore_index, smoothing, probs,
               opts.memory_budget, opts.precompute_gradients)
    return out[0]


def _meta(shape, like: Tensor) -> Tensor:
    return torch.empty(shape, dtype=like.dtype, device="meta")


def _check_range(target: Tensor, n_classes: int, ignore_index: int) -> None:
    """:func:`_check_class_range`, with one ``aminmax`` for the usual CPU call whose targets are
    all classes (the full check, and its message, when any is not)."""
    if (type(target) is Tensor and target.device.type == "cpu" and target.numel() > 0
            and not torch.compiler.is_compiling() and not _wrapped(target)):
        lo, hi = torch.aminmax(target)
        if 0 <= int(lo) and int(hi) < n_classes:
            return
    _check_class_range(target, n_classes, ignore_index)


_wrapped = torch._C._functorch.is_functorch_wrapped_tensor


def _dt(t: Tensor) -> str:
    return {torch.float32: "float", torch.float64: "double", torch.float16: "c10::Half",
            torch.bfloat16: "c10::BFloat16"}.get(t.dtype, str(t.dtype).replace("torch.", ""))
