"""Triplet: TripletMargin, TripletMarginWithDistance."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable

import torch
from torch import Tensor

from .. import _reduction as R
from .._autograd._base import Dispatch, broadcast_shape
from .._autograd.triplet import TripletDistanceHingeFunction, TripletMarginLossFunction
from ._common import _check_broadcastable, _name, _require_tensor

# ============================================================================================
# Triplet: TripletMargin, TripletMarginWithDistance
#
# Triplet margin losses: ``triplet_margin_loss`` and ``triplet_margin_with_distance_loss``.
#
# Validation follows torch's order, so that a call with several problems raises torch's exception
# first. ``triplet_margin_loss``: the reduction (and the legacy ``size_average``/``reduce`` pair),
# ``margin > 0``, the argument types (ATen's parser), the equal ranks, then for each distance in
# turn (``d(anchor, positive)``, ``d(anchor, negative)``, with ``swap`` ``d(positive, negative)``)
# bool operands, broadcasting and an empty last dimension where the norm has no identity, and
# last the broadcasting of the distances against each other. ``triplet_margin_with_distance_loss``
# (pure Python in torch): the reduction (``'elementwise_mean'`` is rejected), ``margin > 0``, the
# equal ranks, then the distances.
#
# The default distance (``None``, or the :class:`~torchloss.modules.PairwiseDistance` a
# ``TripletMarginWithDistanceLoss`` module creates) runs through the fused, hand-differentiated
# :class:`~torchloss._autograd.triplet.TripletMarginLossFunction`. Any other ``distance_function``
# is called as given, in torch's order (``(anchor, positive)``, ``(anchor, negative)``, then
# ``(positive, negative)`` with swap), and autograd differentiates it; its distances feed one
# :class:`~torchloss._autograd.triplet.TripletDistanceHingeFunction` node (margin, swap, hinge and
# reduction).

# Module-global Dispatch objects: the Function, or its jvp-less twin under torch.compile.
_triplet = Dispatch(TripletMarginLossFunction)
_triplet_hinge = Dispatch(TripletDistanceHingeFunction)

_PLAIN_REDUCTIONS = ("mean", "sum", "none")
# torch.pairwise_distance's defaults: the distance of triplet_margin_with_distance_loss
_DEFAULT_P, _DEFAULT_EPS = 2.0, 1e-6


# --------------------------------------------------------------------------------------------
# Checks


def _as_float(fn: str, name: str, position: int, value) -> float:
    """``value`` as a float, as ATen's argument parser reads a ``float`` argument (Python numbers
    and 0-d tensors; a one-element 1-d tensor is refused); TypeError otherwise."""
    if type(value) is float:
        return value
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, Tensor) and value.dim() == 0 and not value.is_complex():
        return float(value)
    raise TypeError(f"{fn}(): argument '{name}' (position {position}) must be float, not {type(value).__name__}")


def _check_margin(margin) -> None:
    if margin <= 0:
        raise ValueError(f"margin must be greater than 0, got {margin}")


def _check_ranks(anchor, positive, negative) -> None:
    a_dim, p_dim, n_dim = anchor.ndim, positive.ndim, negative.ndim
    if not (a_dim == p_dim and p_dim == n_dim):
        raise RuntimeError(
            f"The anchor, positive, and negative tensors are expected to have the same number of "
            f"dimensions, but got: anchor {a_dim}D, positive {p_dim}D, and negative {n_dim}D inputs"
        )


def _broadcast(x: tuple, y: tuple) -> tuple | None:
    """The broadcast of two shapes, or ``None`` if they do not broadcast."""
    try:
        return tuple(broadcast_shape(x, y))
    except RuntimeError:
        return None


def _check_rows(fn: str, names: tuple[str, str], shapes: tuple) -> tuple:
    """The broadcast of two per-row shapes; RuntimeError naming both if they do not broadcast."""
    shape = _broadcast(*shapes)
    if shape is None:
        try:  # torch's words first (its subtraction of the two distances), then which ones
            broadcast_shape(*shapes)
            words = ""
        except RuntimeError as exc:
            words = str(exc).split(" (shapes")[0] + " ("
        raise RuntimeError(
            f"{words}{fn}: the distances {names[0]} of shape {list(shapes[0])} and {names[1]} of shape "
            f"{list(shapes[1])} do not broadcast against each other (the triplets' batch "
            "dimensions of anchor, positive and negative must be broadcastable)" + (")" if words else "")
        )
    return shape


def _check_distance_inputs(fn: str, x: Tensor, x_name: str, y: Tensor, y_name: str, q: float) -> tuple:
    """The checks of torch's ``pairwise_distance(x, y, q)`` (``x - y + eps``, then the norm over
    the last dimension), in its order; returns the shape of the distance."""
    if x.dtype == torch.bool or y.dtype == torch.bool:
        which = f"{x_name} and {y_name} are" if x.dtype == y.dtype else f"{x_name if x.dtype == torch.bool else y_name} is"
        raise RuntimeError(
            f"{fn}: {which} bool; the distance d({x_name}, {y_name}) subtracts {y_name} from "
            f"{x_name}, which torch refuses for bool tensors: expected numeric tensors"
        )
    shape = _broadcast(x.shape, y.shape)
    if shape is None:
        _check_broadcastable(fn, y_name, y, x_name, x.shape)  # raises, naming the dimension
    features = shape[-1] if len(shape) else 1
    if features == 0 and (q < 0 or q == math.inf):
        raise RuntimeError(
            f"{fn}: cannot compute the p={q} norm of d({x_name}, {y_name}): the last dimension of "
            f"{x_name} and {y_name} is empty and this norm has no identity (expected p >= 0 and "
            "finite, or at least one feature)"
        )
    return shape[:-1]


def _triplet_with_grad(anchor: Tensor, positive: Tensor, negative: Tensor) -> bool:
    """Whether a backward will follow (grad mode on, an input requiring grad): the fused Function
    then prepares its per-row backward weights in the forward."""
    return torch.is_grad_enabled() and (anchor.requires_grad or positive.requires_grad or negative.requires_grad)


def _check_triplet(fn: str, anchor: Tensor, positive: Tensor, negative: Tensor, q: float, swap: bool) -> None:
    shape = anchor.shape
    if (
        positive.shape == shape
        and negative.shape == shape
        and (not shape or shape[-1] != 0)
        and torch.bool not in (anchor.dtype, positive.dtype, negative.dtype)
    ):
        return  # the usual call (one shape, features, no bool): none of the errors below applies
    rows_pos = _check_distance_inputs(fn, anchor, "anchor", positive, "positive", q)
    rows_neg = _check_distance_inputs(fn, anchor, "anchor", negative, "negative", q)
    if swap:
        rows_swap = _check_distance_inputs(fn, positive, "positive", negative, "negative", q)
        rows_neg = _check_rows(fn, ("d(anchor, negative)", "d(positive, negative)"), (rows_neg, rows_swap))
        _check_rows(fn, ("d(anchor, positive)", "min(d(anchor, negative), d(positive, negative))"), (rows_pos, rows_neg))
    else:
        _check_rows(fn, ("d(anchor, positive)", "d(anchor, negative)"), (rows_pos, rows_neg))


# --------------------------------------------------------------------------------------------
# TripletMarginLoss


def triplet_margin_loss(
    anchor: Tensor,
    positive: Tensor,
    negative: Tensor,
    margin: float = 1.0,
    p: float = 2,
    eps: float = 1e-06,
    swap: bool = False,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> Tensor:
    r"""Triplet margin loss; see :class:`torchloss.TripletMarginLoss`.

    :math:`\ell = \max(0, \text{margin} + d(a, p) - d(a, n))` per triplet, with the pairwise
    distance :math:`d(x, y) = \lVert x - y + \text{eps} \rVert_p` over the last dimension (``eps``
    is added to the difference vector, as torch) and, with ``swap``, :math:`d(a, n)` replaced by
    :math:`\min(d(a, n), d(p, n))`. ``anchor``, ``positive`` and ``negative`` have the same rank
    (``(D)`` gives a 0-d loss, ``(N, D)`` an ``(N)`` one for ``'none'``, more leading dimensions
    are more batch dimensions) and broadcast against each other. ``p`` is any float: ``inf``
    and ``-inf`` are the max and min norms, 0 counts non-zero components (no gradient), a negative
    ``p`` is accepted. All three inputs are differentiable; integer inputs give a loss of the
    default dtype, complex ones a real loss.

    The graph is one torchloss node, which keeps the inputs and the per-triplet distances for
    backward (torch keeps every difference vector).
    """
    fn = "triplet_margin_loss"
    if size_average is not None or reduce is not None:
        reduction = R.legacy_get_string(size_average, reduce)
    code = R.get_enum(reduction)
    _check_margin(margin)
    _require_tensor(fn, "anchor", 1, anchor)
    _require_tensor(fn, "positive", 2, positive)
    _require_tensor(fn, "negative", 3, negative)
    margin = _as_float(fn, "margin", 4, margin)
    q = _as_float(fn, "p", 5, p)
    eps = _as_float(fn, "eps", 6, eps)
    if not isinstance(swap, bool):
        raise TypeError(f"{fn}(): argument 'swap' (position 7) must be bool, not {type(swap).__name__}")
    _check_ranks(anchor, positive, negative)
    _check_triplet(fn, anchor, positive, negative, q, swap)
    return _triplet(anchor, positive, negative, margin, q, eps, swap, code, _triplet_with_grad(anchor, positive, negative))[0]


# --------------------------------------------------------------------------------------------
# TripletMarginWithDistanceLoss


def _fused_distance(distance_function) -> tuple[float, float] | None:
    """``(p, eps)`` if ``distance_function`` is torch's pairwise distance that torchloss computes
    itself: ``None`` (the default), or a torchloss ``PairwiseDistance`` module without hooks or
    ``keepdim`` (what ``TripletMarginWithDistanceLoss`` creates by default); else ``None``."""
    if distance_function is None:
        return _DEFAULT_P, _DEFAULT_EPS
    fused = getattr(distance_function, "_triplet_fused_distance", None)
    return fused() if callable(fused) else None


def _check_distance(fn: str, name: str, d) -> None:
    if not isinstance(d, Tensor):
        raise TypeError(
            f"{fn}: distance_function must return a Tensor of distances, got "
            f"{type(d).__name__} for {name}"
        )


def _check_user_distances(fn: str, d_pos, d_neg, d_swap) -> None:
    """torch's errors for ``clamp_min(margin + d_pos - delta, 0)``, ``delta = d_neg`` or
    ``minimum(d_neg, d_swap)``, on the distances a user's function returned."""
    names = ("distance_function(anchor, positive)", "distance_function(anchor, negative)")
    _check_distance(fn, names[0], d_pos)
    _check_distance(fn, names[1], d_neg)
    distances = (d_pos, d_neg)
    if d_swap is not None:
        _check_distance(fn, "distance_function(positive, negative)", d_swap)
        distances += (d_swap,)
    complex_ = [d for d in distances if d.is_complex()]
    if complex_:
        message = (
            f"{fn}: distance_function must return real distances, got {_name(complex_[0])} "
            "(the hinge max(0, margin + d(a, p) - d(a, n)) is not defined for complex values)"
        )
        # torch fails in minimum() with swap (RuntimeError), else in clamp_min()
        raise (RuntimeError if d_swap is not None else NotImplementedError)(message)
    rows = d_neg.shape
    delta_bool = d_neg.dtype == torch.bool
    if d_swap is not None:
        rows = _check_rows(fn, names[1:] + ("distance_function(positive, negative)",), (d_neg.shape, d_swap.shape))
        delta_bool = delta_bool and d_swap.dtype == torch.bool
    if delta_bool:
        raise RuntimeError(
            f"{fn}: distance_function returned bool distances for {names[1]}; the loss subtracts "
            "them from margin + d(anchor, positive), which torch refuses for bool tensors"
        )
    _check_rows(fn, (names[0], "the negative distance"), (d_pos.shape, rows))


def triplet_margin_with_distance_loss(
    anchor: Tensor,
    positive: Tensor,
    negative: Tensor,
    *,
    distance_function: Callable[[Tensor, Tensor], Tensor] | None = None,
    margin: float = 1.0,
    swap: bool = False,
    reduction: str = "mean",
) -> Tensor:
    r"""Triplet margin loss with a custom distance; see :class:`torchloss.TripletMarginWithDistanceLoss`.

    :math:`\ell = \max(0, \text{margin} + f(a, p) - f(a, n))`, with :math:`f(a, n)` replaced by
    :math:`\min(f(a, n), f(p, n))` with ``swap``; reduced over whatever shape ``f`` returns.
    ``distance_function`` ``None`` is ``torch.pairwise_distance`` (``p = 2``, ``eps = 1e-6``),
    computed by torchloss's own fused Function (one node). Any other function is called as given
    (``f(anchor, positive)``, ``f(anchor, negative)``, with swap ``f(positive, negative)``, as
    torch does) and differentiated by autograd; margin, swap, hinge and reduction are one
    torchloss node on top of its graph. No legacy ``size_average``/``reduce``; ``reduction``
    must be ``'none'``, ``'mean'`` or ``'sum'`` (``'elementwise_mean'`` is rejected, as torch).
    """
    fn = "triplet_margin_with_distance_loss"
    if reduction not in _PLAIN_REDUCTIONS:
        raise ValueError(f"{reduction} is not a valid value for reduction")
    _check_margin(margin)
    _check_ranks(anchor, positive, negative)
    code = R.get_enum(reduction)
    fused = _fused_distance(distance_function)
    if fused is not None:
        # torch.pairwise_distance(anchor, positive) etc. take tensors only (TypeError)
        _require_tensor(fn, "anchor", 1, anchor)
        _require_tensor(fn, "positive", 2, positive)
        _require_tensor(fn, "negative", 3, negative)
        q, eps = fused
        swap = bool(swap)
        _check_triplet(fn, anchor, positive, negative, q, swap)
        with_grad = _triplet_with_grad(anchor, positive, negative)
        return _triplet(anchor, positive, negative, _margin(margin), q, eps, swap, code, with_grad)[0]
    d_pos = distance_function(anchor, positive)
    d_neg = distance_function(anchor, negative)
    d_swap = distance_function(positive, negative) if swap else None
    _check_user_distances(fn, d_pos, d_neg, d_swap)
    return _triplet_hinge(d_pos, d_neg, d_swap, _margin(margin), code)[0]


def _margin(margin):
    """The distance variant's margin: a float, or a tensor (a constant, detached), whose dtype and
    shape take part in torch's ``margin + d_pos`` (a dimensioned one broadcasts the loss; its
    dtype promotes by ATen's rule)."""
    return margin.detach() if isinstance(margin, Tensor) else float(margin)


