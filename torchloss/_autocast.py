"""Autocast, as torch does it: one policy table for every loss, applied in one place.

Inside ``torch.autocast(device_type, dtype)`` torch runs each of its loss ops through a per-op
*cast policy* registered on the ``Autocast<Device>`` dispatch key (ATen's
``aten/src/ATen/autocast_mode.cpp``, with the shared CUDA/XPU op lists ``AT_FORALL_FP32``,
``AT_FORALL_FP32_SET_OPT_DTYPE``, ``AT_FORALL_LOWER_PRECISION_FP`` in ``autocast_mode.h``):

* ``fp32`` (``CastPolicy::fp32``): every *eligible* tensor argument (floating point, on the
  autocast device, not float64) is cast to float32, then the op runs with autocast excluded, so
  the loss comes out float32 whatever the inputs' dtype, and its gradients flow back through the
  casts into the inputs' own dtypes;
* ops in no list fall through: a loss torch writes as a composite of ordinary ops gets whatever
  policy each inner op has (on the CPU none of them is listed, so it runs in the inputs' dtype);
* ``aten::binary_cross_entropy`` is *banned* under CUDA autocast (a RuntimeError).

torchloss's losses are made of ordinary ops, so without help each inner op would be autocast on
its own: a bfloat16 CPU region returned a bfloat16 cross entropy (2.218750 where torch gives the
float32 2.224274). :func:`wrap` gives every public functional the policy of its torch twin from
:data:`POLICIES`: it casts the arguments as torch's wrapper would, then runs the whole functional
(validation, dispatch, the Function's forward) with autocast *disabled*, so that autocast never
changes what a torchloss Function computes inside (a CTC recursion, the blocks of a linear cross
entropy or a cross entropy's log-sum-exp run in the dtype they were given, with float32 opmath
for half inputs). :func:`without_autocast` does the same for every Function's ``backward`` and
``jvp`` (``LossFunction`` applies it), for a backward run inside the autocast region.

The table was derived from the lists of torch 2.13 and checked against the installed build:
``torch._C._dispatch_has_kernel_for_dispatch_key('aten::<op>', 'AutocastCPU' / 'AutocastCUDA')``
says which loss ops carry a policy (the lists are registered in CPU-only builds too), the CPU
column was verified by running every loss under ``torch.autocast('cpu')``, and the CUDA column by
running torch's losses on fake CUDA tensors with CUDA autocast switched on
(``tests/test_autocast.py`` repeats both checks). See docs/autocast.md.
"""

from __future__ import annotations

import functools
import threading

import torch
from torch import Tensor

__all__ = [
    "BANNED",
    "DISTANCE",
    "FP32",
    "INPUT",
    "LINEAR",
    "POLICIES",
    "REDUCED_FP32",
    "call_policy",
    "policy",
    "result_dtype",
    "without_autocast",
    "wrap",
]

# ---------------------------------------------------------------------------------------------
# Policies

FP32 = "fp32"
"""torch's ``CastPolicy::fp32``: eligible floating tensors (on the autocast device, not float64)
are cast to float32; the loss is float32."""

INPUT = "input"
"""No cast: torch's loss is a composite of ops none of which the device's autocast lists name, so
it runs in the inputs' dtype (float16/bfloat16 inputs give a float16/bfloat16 loss)."""

BANNED = "banned"
"""torch refuses the op under this autocast (``binary_cross_entropy`` on CUDA): RuntimeError."""

LINEAR = "linear"
"""A linear layer followed by a loss (``linear_cross_entropy``, the adaptive softmax): the matmul
operands are cast to the autocast dtype (``linear`` is ``lower_precision_fp`` on every device),
as torch's ``F.linear`` would; the loss that follows accumulates in float32 and comes out in
:func:`result_dtype` (float32 for linear cross entropy, whose torch version feeds the
lower-precision logits to ``cross_entropy``'s ``fp32`` policy; the input's own dtype for the
adaptive softmax, whose torch version writes into ``input.new_zeros``)."""

REDUCED_FP32 = "reduced_fp32"
"""The inputs' dtype for ``'none'``, float32 when reduced: torch's weighted ``l1_loss`` on CUDA
(``abs(input - target) * weight`` in no list, then ``torch.sum``, whose ``fp32_set_opt_dtype``
sums lower-precision terms into a float32 result, for ``'sum'`` and ``'mean'``)."""

DISTANCE = "distance"
"""``triplet_margin_with_distance_loss`` (Python in torch): the default distance is
``pairwise_distance``, whose norm is ``fp32_append_dtype`` on CUDA (so :data:`FP32` there) and in
no list on the CPU (:data:`INPUT`); a user's ``distance_function`` runs under the caller's
autocast, as in torch, and the hinge then follows torch's ops on the distances it returned: in
their dtype, except that on CUDA ``torch.sum`` (``fp32_set_opt_dtype``) makes a ``'sum'`` of
lower-precision distances float32."""

# Where each policy comes from, torch 2.13 (aten/src/ATen/autocast_mode.cpp: KERNEL_CPU(<op>,
# fp32) for the CPU column; autocast_mode.h AT_FORALL_FP32 / AT_FORALL_FP32_SET_OPT_DTYPE /
# AT_FORALL_LOWER_PRECISION_FP, registered by KERNEL_CUDA, for the CUDA column, which XPU shares;
# binary_cross_entropy_banned for CUDA's BCE).
#
#   name: (cpu, cuda/other devices)
POLICIES: dict[str, tuple[str, str]] = {
    # ATen loss ops listed fp32 on both devices
    "l1_loss": (FP32, FP32),
    "mse_loss": (FP32, FP32),
    "smooth_l1_loss": (FP32, FP32),
    "huber_loss": (FP32, FP32),
    "soft_margin_loss": (FP32, FP32),
    "binary_cross_entropy_with_logits": (FP32, FP32),
    "poisson_nll_loss": (FP32, FP32),
    "kl_div": (FP32, FP32),
    "nll_loss": (FP32, FP32),  # nll_loss and nll_loss2d
    "multi_margin_loss": (FP32, FP32),
    "multilabel_margin_loss": (FP32, FP32),
    "margin_ranking_loss": (FP32, FP32),
    "hinge_embedding_loss": (FP32, FP32),
    "cosine_embedding_loss": (FP32, FP32),
    "triplet_margin_loss": (FP32, FP32),
    # KERNEL_CPU(binary_cross_entropy, fp32); on CUDA binary_cross_entropy_banned
    "binary_cross_entropy": (FP32, BANNED),
    # KERNEL_CPU(cross_entropy_loss, fp32); on CUDA cross_entropy_loss is in no list and
    # decomposes into log_softmax (fp32_set_opt_dtype: computed and returned in float32) and
    # nll_loss (fp32): float32 from float32 casts of the inputs, i.e. fp32
    "cross_entropy": (FP32, FP32),
    # KERNEL_CPU(ctc_loss, IntList/Tensor, fp32); in no CUDA list (torch's CUDA kernels take
    # float32/float64 log-probabilities only, and a CUDA-autocast log_softmax returns float32)
    "ctc_loss": (FP32, INPUT),
    # Python composites in torch.nn.functional. gaussian_nll_loss: log and pow are fp32 on CUDA
    # (a float32 loss), unlisted on the CPU. multilabel_soft_margin_loss: logsigmoid and the
    # arithmetic are unlisted, sum(dim) is fp32_set_opt_dtype on CUDA (a float32 loss).
    "gaussian_nll_loss": (INPUT, FP32),
    "multilabel_soft_margin_loss": (INPUT, FP32),
    "triplet_margin_with_distance_loss": (DISTANCE, DISTANCE),
    # l1_loss/mse_loss with weight= are Python in torch.nn.functional (abs or pow, times weight,
    # torch.sum): unlisted on the CPU; on CUDA pow is fp32 (a float32 MSE) and sum is
    # fp32_set_opt_dtype (a float32 weighted L1 when reduced). huber_loss with weight= calls the
    # fp32 aten::huber_loss first: fp32 like the unweighted call.
    "l1_loss[weight]": (INPUT, REDUCED_FP32),
    "mse_loss[weight]": (INPUT, FP32),
    # linear + loss (see LINEAR)
    "linear_cross_entropy": (LINEAR, LINEAR),
    "adaptive_log_softmax_with_loss": (LINEAR, LINEAR),
    "adaptive_log_prob": (LINEAR, LINEAR),
    "adaptive_predict": (LINEAR, LINEAR),
}

# Calls whose torch implementation differs by argument: name -> (argument, its position); a call
# that passes it (not None) takes the policy of "name[argument]".
_VARIANTS = {"l1_loss": ("weight", 5), "mse_loss": ("weight", 5)}
# the position of ``reduction`` (then of ``size_average``/``reduce``) where REDUCED_FP32 needs it
_REDUCTION_AT = {"l1_loss": (4, 2, 3)}

# The dtype of a LINEAR loss's result: float32, or "input" for the dtype its input had before
# the cast (None: not a floating result, e.g. the adaptive softmax's predicted classes).
_LINEAR_RESULT = {
    "linear_cross_entropy": torch.float32,
    "adaptive_log_softmax_with_loss": "input",
    "adaptive_log_prob": "input",
    "adaptive_predict": None,
}

# aten/src/ATen/autocast_mode.cpp, binary_cross_entropy_banned
BCE_BANNED_MESSAGE = (
    "torch.nn.functional.binary_cross_entropy and torch.nn.BCELoss are unsafe to autocast.\n"
    "Many models use a sigmoid layer right before the binary cross entropy layer.\n"
    "In this case, combine the two layers using torch.nn.functional.binary_cross_entropy_with_logits\n"
    "or torch.nn.BCEWithLogitsLoss.  binary_cross_entropy_with_logits and BCEWithLogits are\n"
    "safe to autocast."
)


def policy(name: str, device_type: str) -> str:
    """The policy of loss ``name`` (a functional's name) under autocast on ``device_type``."""
    cpu, other = POLICIES[name]
    return cpu if device_type == "cpu" else other


# ---------------------------------------------------------------------------------------------
# Applying it

_any_autocast = torch._C._is_any_autocast_enabled
# ATen's ExcludeDispatchKeyGuard(AutocastFunctionality), what torch's own wrappers run the op under
_DisableAutocast = torch._C._DisableAutocast
_state = threading.local()
# the device types this build has an autocast for (meta has none: torch casts nothing there)
_DEVICES = frozenset(
    d for d in ("cpu", "cuda", "xpu", "mps", "hpu", "xla", "ipu", "privateuseone") if torch.amp.is_autocast_available(d)
)


def result_dtype(default: torch.dtype) -> torch.dtype:
    """The dtype a :data:`LINEAR` loss must return inside the autocast call :func:`wrap` is
    making (float32 for ``linear_cross_entropy``, the input's dtype before its cast for the
    adaptive softmax), or ``default`` outside one. The loss's functional reads it to give its
    Function the output dtype (the wrapper casts the result as a fallback, which rounds it once
    through the matmul dtype first)."""
    dtype = getattr(_state, "result", None)
    return default if dtype is None else dtype


def _device_type(args, kwargs) -> str | None:
    for a in args:
        if isinstance(a, Tensor):
            return a.device.type
    for a in kwargs.values():
        if isinstance(a, Tensor):
            return a.device.type
    return None


def _cast(value, dtype: torch.dtype, device_type: str):
    """``cached_cast``: an eligible tensor (floating, on the autocast device, not float64) in
    ``dtype``, through a differentiable ``.to`` (gradients come back in the original dtype);
    tuples and lists of tensors element by element; anything else as it is."""
    if isinstance(value, Tensor):
        if (
            value.is_floating_point()
            and value.dtype != dtype
            and value.dtype != torch.float64
            and value.device.type == device_type
        ):
            return value.to(dtype)
        return value
    if isinstance(value, (tuple, list)):
        return type(value)(_cast(v, dtype, device_type) for v in value)
    return value


def _under_autocast(fn, device_type: str, dtype: torch.dtype, cache: bool, sum_fp32: bool):
    """A user's callable (a distance function) run under the caller's autocast, as torch runs it;
    with ``sum_fp32`` its lower-precision results are made float32 (what ``torch.sum``'s
    ``fp32_set_opt_dtype`` does to them on CUDA)."""

    @functools.wraps(fn)
    def call(*args, **kwargs):
        with torch.autocast(device_type, dtype=dtype, cache_enabled=cache):
            out = fn(*args, **kwargs)
        if sum_fp32 and isinstance(out, Tensor) and out.dtype in (torch.float16, torch.bfloat16):
            out = out.float()
        return out

    return call


def _apply(name: str, fn, args: tuple, kwargs: dict, compiling: bool):
    device_type = _device_type(args, kwargs)
    if device_type not in _DEVICES or not torch.is_autocast_enabled(device_type):
        return fn(*args, **kwargs)
    kind = call_policy(name, device_type, args, kwargs)
    low = torch.get_autocast_dtype(device_type)
    result = None
    if kind == BANNED:
        raise RuntimeError(BCE_BANNED_MESSAGE)
    if kind == FP32:
        args = tuple(_cast(a, torch.float32, device_type) for a in args)
        kwargs = {k: _cast(v, torch.float32, device_type) for k, v in kwargs.items()}
    elif kind == LINEAR:
        result = _LINEAR_RESULT[name]
        if result == "input":
            first = args[0] if args else kwargs.get("input")
            result = first.dtype if isinstance(first, Tensor) else None
        # every floating argument in the matmul dtype, as linear's lower_precision_fp casts its
        # operands; the class weight and probability targets too, so that the functional's dtype
        # checks hold (they are rounded to it: see docs/autocast.md)
        args = tuple(_cast(a, low, device_type) for a in args)
        kwargs = {k: _cast(v, low, device_type) for k, v in kwargs.items()}
    elif kind == DISTANCE:
        distance = kwargs.get("distance_function")
        if distance is None or hasattr(distance, "_triplet_fused_distance"):
            # torch.pairwise_distance: fp32 (its norm) on CUDA, unlisted on the CPU
            if device_type != "cpu":
                args = tuple(_cast(a, torch.float32, device_type) for a in args)
                kwargs = {k: _cast(v, torch.float32, device_type) for k, v in kwargs.items()}
        else:
            sum_fp32 = device_type != "cpu" and kwargs.get("reduction", "mean") == "sum"
            cache = torch.is_autocast_cache_enabled()
            kwargs = dict(kwargs, distance_function=_under_autocast(distance, device_type, low, cache, sum_fp32))
    if compiling:
        # Dynamo traces autocast contexts (not the C guard), and keeps no thread-local state
        with torch.autocast(device_type, enabled=False):
            out = fn(*args, **kwargs)
    else:
        previous = getattr(_state, "result", None)
        _state.result = result
        try:
            with _DisableAutocast():
                out = fn(*args, **kwargs)
        finally:
            _state.result = previous
    if result is not None:
        out = _cast_result(out, result)
    return out


def call_policy(name: str, device_type: str, args: tuple, kwargs: dict) -> str:
    """The policy of one call of ``name``: its row of :data:`POLICIES`, or the row of the variant
    the arguments select (``l1_loss[weight]``), with :data:`REDUCED_FP32` resolved."""
    variant = _VARIANTS.get(name)
    if variant is not None:
        value = kwargs.get(variant[0], args[variant[1]] if len(args) > variant[1] else None)
        if value is not None:
            kind = policy(f"{name}[{variant[0]}]", device_type)
            if kind == REDUCED_FP32:
                kind = INPUT if _reduction(name, args, kwargs) == "none" else FP32
            return kind
    return policy(name, device_type)


def _reduction(name: str, args: tuple, kwargs: dict) -> str:
    """The reduction a call asks for, legacy ``size_average``/``reduce`` included."""
    at, sa_at, rd_at = _REDUCTION_AT[name]
    size_average = kwargs.get("size_average", args[sa_at] if len(args) > sa_at else None)
    reduce = kwargs.get("reduce", args[rd_at] if len(args) > rd_at else None)
    if size_average is not None or reduce is not None:
        from ._reduction import legacy_get_string

        return legacy_get_string(size_average, reduce, emit_warning=False)
    return kwargs.get("reduction", args[at] if len(args) > at else "mean")


def _cast_result(out, dtype: torch.dtype):
    if isinstance(out, Tensor):
        return out if out.dtype == dtype or not out.is_floating_point() else out.to(dtype)
    if isinstance(out, tuple) and hasattr(out, "_fields"):  # a namedtuple (output, loss)
        return type(out)(*(_cast_result(o, dtype) for o in out))
    return out


def wrap(name: str, fn):
    """``fn`` (the functional ``name``) with torch's autocast policy for ``name`` applied.

    Outside autocast this costs one C call (``torch._C._is_any_autocast_enabled``)."""
    if name not in POLICIES:
        raise KeyError(f"torchloss._autocast: no autocast policy for {name!r}: add it to POLICIES")

    @functools.wraps(fn)
    def call(*args, **kwargs):
        if not _any_autocast():  # (traced by Dynamo, which guards on the autocast state)
            return fn(*args, **kwargs)
        return _apply(name, fn, args, kwargs, torch.compiler.is_compiling())

    return call


def without_autocast(fn):
    """``fn`` (a Function's ``backward`` or ``jvp``) run with autocast disabled when it is on, so
    that a backward called inside an autocast region computes what it computes outside."""

    @functools.wraps(fn)
    def call(*args):
        if not _any_autocast() or torch.compiler.is_compiling():
            return fn(*args)
        with _DisableAutocast():
            return fn(*args)

    return call
