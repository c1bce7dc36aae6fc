"""Likelihoods: PoissonNLL, GaussianNLL, KLDiv."""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from .. import _reduction as R
from .._autograd._base import Dispatch, broadcast_shape
from .._autograd.probabilistic import (
    GaussianNLLLossFunction,
    KLDivLossFunction,
    PoissonNLLLossFunction,
)
from ._common import (
    _on_host,
    _require_bool,
    _require_reduction_string,
    _require_tensor,
    _unwrap_functorch,
)
from .pair import _require_float

# ============================================================================================
# Likelihoods: PoissonNLL, GaussianNLL, KLDiv


_poisson = Dispatch(PoissonNLLLossFunction)
_gaussian = Dispatch(GaussianNLLLossFunction)
_kl = Dispatch(KLDivLossFunction)

_PLAIN_REDUCTIONS = ("none", "mean", "sum")

KL_MEAN_WARNING = (
    "reduction: 'mean' divides the total loss by both the batch size and the support size."
    "'batchmean' divides only by the batch size, and aligns with the KL div math definition."
    "'mean' will be changed to behave the same as 'batchmean' in the next major release."
)


# --------------------------------------------------------------------------------------------
# Poisson


def poisson_nll_loss(
    input: Tensor,
    target: Tensor,
    log_input: bool = True,
    full: bool = False,
    size_average: bool | None = None,
    eps: float = 1e-8,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> Tensor:
    r"""Poisson negative log-likelihood; see :class:`torchloss.PoissonNLLLoss`.

    ``log_input=True``: :math:`e^x - y\,x`; otherwise :math:`x - y\log(x + \text{eps})`. ``full``
    adds the Stirling term :math:`y\log y - y + \tfrac12\log(2\pi y)` where :math:`y > 1`.
    ``input`` and ``target`` broadcast (silently). ``reduction`` must be ``'none'``, ``'mean'``
    or ``'sum'`` (``'elementwise_mean'`` is rejected, as in torch).

    Difference from torch: with ``full=True`` the target gradient at ``y <= 0`` is finite (the
    non-Stirling part) instead of torch's NaN, which leaks from its masked-out branch.
    """
    if size_average is not None or reduce is not None:
        reduction = R.legacy_get_string(size_average, reduce)
    _require_reduction_string("poisson_nll_loss", reduction)
    if reduction not in _PLAIN_REDUCTIONS:
        raise ValueError(
            f"{reduction} is not a valid value for reduction "
            "(poisson_nll_loss expects 'none', 'mean' or 'sum')"
        )
    _require_tensor("poisson_nll_loss", "input", 1, input)
    _require_tensor("poisson_nll_loss", "target", 2, target)
    _require_bool("poisson_nll_loss", "log_input", 3, log_input)
    _require_bool("poisson_nll_loss", "full", 4, full)
    if type(eps) is not float:
        eps = _require_float("poisson_nll_loss", "eps", 5, eps)
    if input.shape != target.shape:
        broadcast_shape(target.shape, input.shape)  # torch's target * log(input): target is tensor a
    # torch's expression subtracts a bool tensor in these cases, which torch refuses
    x_bool, y_bool = input.dtype == torch.bool, target.dtype == torch.bool
    if (x_bool and (y_bool or not log_input)) or (y_bool and full):
        raise RuntimeError(
            "poisson_nll_loss: bool input/target not supported here (torch would subtract a bool "
            "tensor); expected numeric tensors"
        )
    code = R.get_enum(reduction)
    return _poisson(input, target, bool(log_input), bool(full), float(eps), code)


# --------------------------------------------------------------------------------------------
# Gaussian


_NEGATIVE_VAR = "var has negative entry/entries (expected var >= 0)"


def _has_negative(var: Tensor) -> bool:
    """``torch.any(var < 0)``, also under ``torch.func.vmap``.

    The check needs the values on the host, which vmap forbids for a batched tensor (torch's own
    gaussian_nll_loss fails there). Under torch.func transforms we check the plain tensor
    underneath instead: it holds the values of every batch member, so a negative entry in any of
    them raises, as a Python loop over the batch would.
    """
    return bool(torch.any(_unwrap_functorch(var) < 0))


def _gaussian_var_shape(input: Tensor, var: Tensor) -> bool:
    """torch's var-shape rule; returns whether var must be unsqueezed (homoscedastic case)."""
    if var.size() == input.size():
        return False
    if input.size()[:-1] == var.size():
        # one dimension short: (..., ) → (..., 1)
        return True
    if input.dim() == var.dim() and sum(v for i, v in zip(input.size(), var.size()) if i != v) == 1:
        # exactly one mismatching dimension, where var has size 1
        return False
    raise ValueError(
        f"var is of incorrect size: expected var of the input's size {tuple(input.shape)}, or that "
        f"size without its last dimension, or with one dimension of size 1; got {tuple(var.shape)}"
    )


def gaussian_nll_loss(
    input: Tensor,
    target: Tensor,
    var: Tensor | float,
    full: bool = False,
    eps: float = 1e-6,
    reduction: str = "mean",
) -> Tensor:
    r"""Gaussian negative log-likelihood; see :class:`torchloss.GaussianNLLLoss`.

    :math:`\tfrac12(\log v_c + (x - y)^2 / v_c)` with :math:`v_c = \max(\text{var}, \text{eps})`
    (the clamp is straight-through for autograd), plus :math:`\tfrac12\log 2\pi` if ``full``.
    ``var`` is a non-negative tensor of the input's size, of that size without the last dimension
    (homoscedastic), or with exactly one dimension of size 1, or a non-negative Python float.

    Differences from torch: the negative-var check also works under ``torch.func.vmap`` over
    ``var`` (torch raises there), and under ``torch.compile`` it runs on the device
    (``torch._assert_async``: a RuntimeError when the graph runs) instead of breaking the graph;
    a Python-float var is applied as a constant, so float16/bfloat16
    inputs see it unrounded, and it also works with complex inputs (torch fails to clamp it).
    """
    if isinstance(var, float):
        if var < 0:
            raise ValueError(_NEGATIVE_VAR)
    elif not isinstance(var, Tensor):
        # torch falls through to torch.any(var < 0) and fails with a TypeError there
        raise TypeError(
            f"gaussian_nll_loss(): var must be a Tensor or a float, got {type(var).__name__}"
        )
    elif not _on_host(var):
        # A host read would break a compiled graph, synchronise a CUDA device, or find no values
        # (meta, fake): check on the device instead (a RuntimeError; nothing on meta and fake).
        torch._assert_async(torch.logical_not(torch.any(var < 0)), _NEGATIVE_VAR)
    elif _has_negative(var):
        raise ValueError(_NEGATIVE_VAR)
    if not isinstance(input, Tensor):
        # torch fails on its first use of input: ones_like(input) for a number var (TypeError),
        # input.size() otherwise (AttributeError)
        exc = TypeError if isinstance(var, (int, float)) else AttributeError
        raise exc(f"gaussian_nll_loss(): input must be a Tensor, not {type(input).__name__}")
    unsqueeze = False
    var_shape = input.shape
    if isinstance(var, Tensor):
        unsqueeze = _gaussian_var_shape(input, var)
        var_shape = var.shape + (1,) if unsqueeze else var.shape
    # a bad target fails where torch first uses it, (input - target), after the var checks
    target_error = None
    if not isinstance(target, Tensor) and isinstance(input, Tensor):
        # torch's formula takes a Python number as target (a constant)
        if isinstance(target, bool):
            target_error = RuntimeError("gaussian_nll_loss: a bool target cannot be subtracted (torch refuses it)")
        elif not isinstance(target, (int, float, complex)):
            target_error = TypeError(
                f"gaussian_nll_loss(): target must be a Tensor or a number, not {type(target).__name__}"
            )
        elif isinstance(target, complex) and not input.is_complex() and input.dtype == torch.float16:
            # torch's (input - target) ** 2 is complex32 there, whose pow torch lacks
            # (bfloat16 has no complex partner: its difference is complex64, computed)
            target_error = NotImplementedError("gaussian_nll_loss: a complex target of a half-precision input")
        else:
            dtype = input.dtype if (input.is_floating_point() or input.is_complex()) else None
            if isinstance(target, complex) and not input.is_complex():
                dtype = None
            target = torch.tensor(target, dtype=dtype, device=input.device)
        if target_error is not None:
            target = torch.empty(input.shape, device=input.device)  # (a stand-in for the checks below)
    _require_reduction_string("gaussian_nll_loss", reduction)
    if reduction not in _PLAIN_REDUCTIONS:
        raise ValueError(f"{reduction} is not valid (reduction must be 'none', 'mean' or 'sum')")
    if (
        isinstance(var, Tensor)
        and var.dtype != torch.bool
        and not (var.is_floating_point() or var.is_complex())
        and isinstance(eps, int)
    ):
        # torch clamps an integral var in place with an integral eps, then its log is in the
        # default dtype (the result dtype the same: what var is converted to here)
        var = var.to(torch.get_default_dtype())
    if isinstance(eps, str):  # (torch's clamp_ argument parser, before its integral-var error)
        raise TypeError("gaussian_nll_loss(): eps must be a real number, not str")
    if isinstance(var, Tensor) and not (var.is_floating_point() or var.is_complex()):
        # torch fails clamping an integral var in place (with a floating eps)
        raise RuntimeError(
            f"gaussian_nll_loss(): var must be a floating-point tensor, got {var.dtype}"
        )
    if not (input.shape == target.shape == var_shape):
        broadcast_shape(input.shape, target.shape, var_shape)
    code = R.get_enum(reduction)
    if eps is None or isinstance(eps, complex):
        # torch clamps var with ``min=eps``: None and complex are RuntimeErrors there
        raise RuntimeError(f"gaussian_nll_loss: eps must be a real number, got {eps!r}")
    if isinstance(eps, str):
        raise TypeError("gaussian_nll_loss(): eps must be a real number, not str")
    if isinstance(eps, Tensor) and eps.shape != var_shape:
        try:
            ok = torch.broadcast_shapes(var_shape, eps.shape) == var_shape
        except RuntimeError:
            ok = False
        if not ok:
            # torch clamps var in place with ``min=eps``: eps must broadcast to var's shape
            raise RuntimeError(
                f"gaussian_nll_loss: output with shape {list(var_shape)} doesn't match the broadcast "
                f"shape of var and eps (eps of shape {list(eps.shape)})"
            )
    if input.dtype == torch.bool or target.dtype == torch.bool:
        # torch computes input - target (after clamping var with eps), which refuses bool tensors
        raise RuntimeError(
            "gaussian_nll_loss: bool input/target not supported (expected numeric tensors)"
        )
    if target_error is not None:
        raise target_error
    return _gaussian(input, target, var, unsqueeze, bool(full), float(eps), code)


# --------------------------------------------------------------------------------------------
# KL divergence


def kl_div(
    input: Tensor,
    target: Tensor,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    log_target: bool = False,
) -> Tensor:
    r"""KL divergence of ``target`` from ``input`` (log-probabilities); see
    :class:`torchloss.KLDivLoss`.

    :math:`y(\log y - x)` (``0`` where :math:`y = 0`) or, with ``log_target``,
    :math:`e^y(y - x)`. ``reduction``: ``'none'``, ``'sum'``, ``'batchmean'`` (sum divided by
    ``input.size(0)``; no division for a 0-d input) or ``'mean'`` (divides by the number of
    elements, with torch's warning on every call). Legacy ``size_average``/``reduce`` override
    ``reduction``, yet a literal ``reduction='batchmean'`` still divides by the batch size, as in
    torch.

    Difference from torch: code compiled with ``torch.compile`` does not emit the 'mean' warning
    (TorchDynamo cannot trace ``warnings.warn``; torch's own kl_div is kept whole in the graph).
    """
    if size_average is not None or reduce is not None:
        code = R.get_enum(R.legacy_get_string(size_average, reduce))
    else:
        if reduction == "mean" and not torch.compiler.is_compiling():
            # TorchDynamo cannot trace warnings.warn; compiled code skips the warning
            warnings.warn(KL_MEAN_WARNING, stacklevel=2)
        code = R.SUM if reduction == "batchmean" else R.get_enum(reduction)
    _require_tensor("kl_div", "input", 1, input)
    _require_tensor("kl_div", "target", 2, target)
    _require_bool("kl_div", "log_target", None, log_target)
    if not (input.is_floating_point() and target.is_floating_point()):
        if input.is_complex() or target.is_complex():
            raise RuntimeError(
                f"kl_div: Complex inputs not supported. (expected real floating-point input and target, "
                f"got {input.dtype} and {target.dtype})"
            )
        raise RuntimeError(
            f"kl_div: Integral inputs not supported. (expected floating-point input and target, "
            f"got {input.dtype} and {target.dtype})"
        )
    if input.shape != target.shape:
        broadcast_shape(target.shape, input.shape)  # torch's target.log() - input: target is tensor a
    divisor = input.size(0) if reduction == "batchmean" and input.dim() != 0 else 1
    return _kl(input, target, code, divisor, bool(log_target))


