"""Case-table entries of TripletMargin and TripletMarginWithDistance."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as TF

from ...modules import PairwiseDistance
from ._base import ErrorCase, LossCase, Maker, Sample

# ============================================================================================
# Triplet: TripletMargin, TripletMarginWithDistance
#
# Case-table entries of the triplet losses: TripletMarginLoss and TripletMarginWithDistanceLoss.
#
# Samples stay away from every kink, so that finite differences and the two implementations'
# subgradients agree (the kinks themselves are compared with torch in
# ``tests/test_triplet_specific.py``): the hinge :math:`z = m + d_+ - \\delta` and, with swap, the
# choice :math:`d(a, n)` vs :math:`d(p, n)` are at least ``GAP`` from 0 in every row; the
# components of the difference vectors are at least ``GAP`` from 0 (where :math:`|u|^q` has a kink
# or an infinite second derivative) and, for the infinity norms, the extremal component of each row
# is ``GAP`` clear of the next. Samples are drawn until they qualify (deterministically, from the
# Maker's generator), and batched samples have both active and inactive rows.
#
# ``TripletMarginWithDistanceLoss`` samples whose name starts with ``user-`` call a user's distance
# function (``Sample.user_graph = True``): by design their autograd graph holds the user's
# distance ops below the one torchloss node (margin, swap, hinge and reduction), so the generic
# graph-purity check, which expects a single node, does not apply to them. The user functions are
# module-level functions (the generic module test only constructs modules with them: nothing needs
# pickling).

GAP = 0.05
_TRIES = 2000


# --------------------------------------------------------------------------------------------
# Distance functions of the samples (user functions: torch ops, called as given)


def cosine_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """1 - cos(x, y) over the last dimension (torch's documented example)."""
    return 1.0 - TF.cosine_similarity(x, y, dim=-1)


def squared_euclidean(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return ((x - y) ** 2).sum(-1)


def chebyshev(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The l-infinity distance of torch's documented example."""
    return torch.max(torch.abs(x - y), dim=-1).values


def elementwise_gap(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """|x - y| per element: a "distance" of the inputs' shape (the loss reduces over whatever
    shape the distance function returns)."""
    return (x - y).abs()


def _user(sample: Sample) -> Sample:
    """Mark a sample that calls a user's distance function (see the module notes)."""
    sample.user_graph = True
    return sample


# --------------------------------------------------------------------------------------------
# Drawing triplets away from the kinks


def _pairwise(q: float, eps: float):
    def distance(x, y):
        return TF.pairwise_distance(x, y, q, eps)

    return distance


def _components_clear(u: torch.Tensor, q: float | None) -> bool:
    """No component near 0 (for norms other than q = 2) and, for the infinity norms, a clear
    extremum in every row."""
    if q is None or q == 2:
        return True
    au = u.abs().reshape(-1, u.shape[-1] if u.dim() else 1)
    if bool((au < GAP).any()):
        return False
    if math.isinf(q) and au.shape[-1] > 1:
        top = au.sort(-1, descending=q > 0).values
        return bool(((top[:, 0] - top[:, 1]).abs() >= GAP).all())
    return True


def _triplet(
    make: Maker, shapes, *, q=2.0, eps=1e-6, margin=1.0, swap=False, distance=None, dtypes=(None,) * 3, scale=1.0
):
    """``(anchor, positive, negative)`` of the given shapes, drawn until every row is clear of
    the kinks (module notes). ``distance`` is the distance function (default: torch's pairwise
    distance of norm ``q``); ``q`` also decides which component checks apply (``None``: none).
    ``scale`` is the inputs' standard deviation."""
    distance = distance or _pairwise(q, eps)
    for _ in range(_TRIES):
        a, p, n = (make.normal(*s, scale=scale, dtype=dt) for s, dt in zip(shapes, dtypes))
        a64, p64, n64 = a.double().cpu(), p.double().cpu(), n.double().cpu()
        pairs = [(a64, p64), (a64, n64)] + ([(p64, n64)] if swap else [])
        if not all(_components_clear((x - y) + eps, q) for x, y in pairs):
            continue
        d_pos, d_neg = distance(a64, p64), distance(a64, n64)
        delta = d_neg
        if swap:
            d_swap = distance(p64, n64)
            if bool(((d_neg - d_swap).abs() < GAP).any()):
                continue
            delta = torch.minimum(d_neg, d_swap)
        z = (margin + d_pos) - delta
        if bool((z.abs() < GAP).any()) or not bool((z > 0).any()):
            continue
        if z.numel() > 2 and not bool((z < 0).any()):
            continue  # batched: want inactive rows too
        if swap and z.numel() > 2 and not bool(((d_swap < d_neg) & (z > 0)).any()):
            continue  # batched swap: want a row where the swapped distance is used
        return a, p, n
    raise RuntimeError(f"could not draw a triplet clear of the kinks for shapes {shapes}")


def _same(*shape):
    return (shape, shape, shape)


# --------------------------------------------------------------------------------------------
# TripletMarginLoss


def _tm(make: Maker, name: str, shapes, wrt=(0, 1, 2), dtypes=(None,) * 3, scale=1.0, **kwargs) -> Sample:
    q = kwargs.get("p", 2.0)
    draw = {
        "q": q,
        "eps": kwargs.get("eps", 1e-6),
        "margin": kwargs.get("margin", 1.0),
        "swap": kwargs.get("swap", False),
        "dtypes": dtypes,
        "scale": scale,
    }
    return Sample(name, _triplet(make, shapes, **draw), kwargs, wrt=wrt)


def _tm_samples(make: Maker) -> list[Sample]:
    batch = _same(6, 5)
    return [
        _tm(make, "batch", batch),
        _tm(make, "p1", batch, p=1),
        _tm(make, "p3", batch, p=3),
        _tm(make, "p1.5", batch, p=1.5),
        _tm(make, "p0.5", batch, p=0.5),
        # negative norms are dominated by the smallest component: larger inputs spread the rows
        _tm(make, "p-1", batch, p=-1.0, scale=10.0),
        _tm(make, "p-inf", batch, p=math.inf),
        _tm(make, "p-minus-inf", batch, p=-math.inf, scale=3.0),
        _tm(make, "margin-eps", batch, margin=0.5, eps=1e-3),
        _tm(make, "margin2-eps0", batch, margin=2.0, eps=0.0),
        _tm(make, "swap", batch, swap=True),
        _tm(make, "swap-p1", batch, p=1, swap=True),
        _tm(make, "swap-p3-margin", batch, p=3, margin=0.5, swap=True),
        _tm(make, "swap-p1.5-eps", batch, p=1.5, eps=1e-2, swap=True),
        _tm(make, "unbatched", _same(5)),
        _tm(make, "unbatched-swap-p1", _same(5), p=1, swap=True),
        _tm(make, "scalar", _same(), margin=0.5),
        _tm(make, "3d", _same(2, 3, 4)),
        _tm(make, "3d-swap-p1.5", _same(2, 3, 4), p=1.5, swap=True),
        # same rank, broadcasting sizes: one positive for every anchor; one feature per anchor
        _tm(make, "broadcast-positive-swap", ((5, 4), (1, 4), (5, 4)), swap=True),
        _tm(make, "broadcast-anchor-features", ((5, 1), (5, 4), (5, 4)), p=1),
        _tm(make, "broadcast-batches", ((3, 1, 4), (1, 2, 4), (3, 2, 4)), swap=True),
        # the distance dimension broadcasts within one distance only: d(a, p) over one
        # component, d(a, n) over four (issue 17); with swap, d(p, n) over one
        _tm(make, "broadcast-features-negative", ((5, 1), (5, 1), (5, 4))),
        _tm(make, "broadcast-features-negative-p1-swap", ((5, 1), (5, 1), (5, 4)), p=1, swap=True),
        _tm(make, "broadcast-features-anchor-p3-swap", ((5, 4), (5, 1), (5, 1)), p=3, swap=True),
        _tm(make, "broadcast-features-positive-p-inf", ((5, 1), (5, 4), (5, 1)), p=math.inf),
        # torch promotes the distances: a float64 negative makes the loss float64
        _tm(make, "float64-negative", batch, dtypes=(None, None, torch.float64)),
    ]


def _tm_errors(make: Maker) -> list[ErrorCase]:
    a, p, n = make.normal(3, 4), make.normal(3, 4), make.normal(3, 4)
    return [
        ErrorCase("bad-reduction", (a, p, n), {"reduction": "batchmean"}, ValueError, "reduction"),
        ErrorCase("reduction-before-margin", (a, p, n), {"reduction": "bad", "margin": -1.0}, ValueError, "reduction"),
        ErrorCase("margin-zero", (a, p, n), {"margin": 0.0}, ValueError, "margin"),
        ErrorCase("margin-negative", (a, p, n), {"margin": -1}, ValueError, "margin"),
        ErrorCase("margin-before-rank", (a, p[0], n), {"margin": -1.0}, ValueError, "margin"),
        ErrorCase("margin-before-type", ([1.0], p, n), {"margin": 0}, ValueError, "margin"),
        ErrorCase("anchor-not-tensor", ([1.0, 2.0], p, n), {}, TypeError, "anchor"),
        ErrorCase("negative-not-tensor", (a, p, 3.0), {}, TypeError, "negative"),
        ErrorCase("swap-not-bool", (a, p, n), {"swap": 1}, TypeError, "swap"),
        ErrorCase("p-not-float", (a, p, n), {"p": "2"}, TypeError, "'p'"),
        ErrorCase("eps-not-float", (a, p, n), {"eps": None}, TypeError, "eps"),
        ErrorCase("rank", (a, p[0], n), {}, RuntimeError, "same number of dimensions"),
        ErrorCase("rank-negative", (a[0], p[0], n), {}, RuntimeError, "negative 2D"),
        ErrorCase("positive-batch", (a, make.normal(2, 4), n), {}, RuntimeError, "positive"),
        ErrorCase("negative-batch", (a, p, make.normal(2, 4)), {}, RuntimeError, "negative"),
        ErrorCase("positive-features", (a, make.normal(3, 5), n), {}, RuntimeError, "positive"),
        ErrorCase(
            "swap-positive-negative",
            (a[:1], make.normal(3, 4), make.normal(2, 4)),
            {"swap": True},
            RuntimeError,
            "negative of shape",
        ),
        ErrorCase(
            "distances-do-not-broadcast", (a[:1], make.normal(3, 4), make.normal(2, 4)), {}, RuntimeError, "distances"
        ),
        ErrorCase("bool-anchor-positive", (a > 0, p > 0, n), {}, RuntimeError, "bool"),
        ErrorCase("bool-negative", (a, p, n > 0), {}, RuntimeError, "bool"),
        ErrorCase("empty-features-negative-p", (a[:, :0], p[:, :0], n[:, :0]), {"p": -1.0}, RuntimeError, "norm"),
        ErrorCase("empty-features-inf", (a[:, :0], p[:, :0], n[:, :0]), {"p": math.inf}, RuntimeError, "norm"),
        ErrorCase("empty-features-broadcast", (a[:, :1], p[:, :0], n[:, :0]), {"p": -2.0}, RuntimeError, "norm"),
    ]


def _tm_empty(make: Maker) -> list[Sample]:
    return [
        Sample("empty", (make.normal(0, 5), make.normal(0, 5), make.normal(0, 5)), wrt=(0, 1, 2)),
        Sample("empty-swap-p1", (make.normal(0, 5), make.normal(0, 5), make.normal(0, 5)), {"p": 1, "swap": True}, wrt=(0, 1, 2)),
        Sample("empty-3d", (make.normal(2, 0, 5), make.normal(2, 0, 5), make.normal(2, 0, 5)), wrt=(0, 1, 2)),
        # no features: every distance is 0 and the loss is the margin
        Sample("no-features", (make.normal(3, 0), make.normal(3, 0), make.normal(3, 0)), {"margin": 0.5}, wrt=(0, 1, 2)),
        Sample("no-features-p0.5-swap", (make.normal(3, 0), make.normal(3, 0), make.normal(3, 0)), {"p": 0.5, "swap": True}, wrt=(0, 1, 2)),
    ]


# --------------------------------------------------------------------------------------------
# TripletMarginWithDistanceLoss


def _td(make: Maker, name: str, shapes, q: float | None = 2.0, **kwargs) -> Sample:
    fn = kwargs.get("distance_function")
    distance = None
    if isinstance(fn, torch.nn.PairwiseDistance):
        q, distance = fn.norm, _pairwise(fn.norm, fn.eps)
    elif fn is not None:
        distance = fn
    draw = {"q": q, "margin": kwargs.get("margin", 1.0), "swap": kwargs.get("swap", False), "distance": distance}
    if distance is None:
        draw["eps"] = 1e-6
    sample = Sample(name, _triplet(make, shapes, **draw), kwargs, wrt=(0, 1, 2))
    # a user's function (torchloss's own PairwiseDistance is fused, not called)
    if fn is not None and type(fn) is not PairwiseDistance:
        sample = _user(sample)
    return sample


def _td_samples(make: Maker) -> list[Sample]:
    batch = _same(6, 5)
    return [
        _td(make, "default", batch),
        _td(make, "default-swap-margin", batch, margin=0.5, swap=True),
        _td(make, "unbatched", _same(5)),
        _td(make, "3d-swap", _same(2, 3, 4), swap=True),
        _td(make, "broadcast-positive", ((5, 4), (1, 4), (5, 4))),
        _td(make, "broadcast-features-negative", ((5, 1), (5, 1), (5, 4))),
        _td(make, "broadcast-features-anchor-swap", ((5, 4), (5, 1), (5, 1)), swap=True),
        # torchloss's PairwiseDistance (what the module creates by default), any p and eps: fused
        _td(make, "pairwise-module-p3", batch, distance_function=PairwiseDistance(p=3, eps=1e-4)),
        _td(make, "pairwise-module-p1-swap", batch, distance_function=PairwiseDistance(p=1), swap=True),
        # user distance functions, called as given
        _td(make, "user-cosine", batch, q=None, distance_function=cosine_distance, margin=0.3),
        _td(make, "user-cosine-swap", batch, q=None, distance_function=cosine_distance, margin=0.2, swap=True),
        _td(make, "user-squared-euclidean", batch, q=None, distance_function=squared_euclidean, margin=2.0),
        _td(make, "user-chebyshev-swap", batch, q=math.inf, distance_function=chebyshev, margin=0.5, swap=True),
        _td(make, "user-torch-pairwise-p1", batch, distance_function=torch.nn.PairwiseDistance(p=1)),
        _td(make, "user-unbatched-cosine", _same(5), q=None, distance_function=cosine_distance, margin=0.4),
    ] + [_elementwise_sample(make)]


def _elementwise_sample(make: Maker) -> Sample:
    # a distance of the inputs' shape: the loss is element-wise over (N, D), every element away
    # from the hinge's kink and |x - y| away from 0
    for _ in range(_TRIES):
        a, p, n = make.normal(4, 3), make.normal(4, 3), make.normal(4, 3)
        a64, p64, n64 = a.double().cpu(), p.double().cpu(), n.double().cpu()
        ap, an = (a64 - p64).abs(), (a64 - n64).abs()
        z = 0.5 + ap - an
        if bool((ap < GAP).any() or (an < GAP).any() or (z.abs() < GAP).any()):
            continue
        if bool((z > 0).any()) and bool((z < 0).any()):
            kwargs = {"distance_function": elementwise_gap, "margin": 0.5}
            return _user(Sample("user-elementwise-distance", (a, p, n), kwargs, wrt=(0, 1, 2)))
    raise RuntimeError("could not draw the element-wise sample")


def _complex_distance(x, y):
    return (x - y).sum(-1).to(torch.complex64)


def _number_distance(x, y):
    return 1.0


def _bool_distance(x, y):
    return (x - y > 0).any(-1)


def _second_rows(x, y):
    # one distance per row of the second argument: with 3 positives and 2 negatives the two
    # distances do not broadcast
    return (y**2).sum(-1) + x.sum()


def _td_errors(make: Maker) -> list[ErrorCase]:
    a, p, n = make.normal(3, 4), make.normal(3, 4), make.normal(3, 4)
    return [
        ErrorCase("bad-reduction", (a, p, n), {"reduction": "batchmean"}, ValueError, "reduction"),
        ErrorCase("elementwise-mean", (a, p, n), {"reduction": "elementwise_mean"}, ValueError, "reduction"),
        ErrorCase("reduction-none-object", (a, p, n), {"reduction": None}, ValueError, "reduction"),
        ErrorCase("reduction-before-margin", (a, p, n), {"reduction": "bad", "margin": 0}, ValueError, "reduction"),
        ErrorCase("legacy-size-average", (a, p, n), {"size_average": True}, TypeError, "size_average"),
        ErrorCase("legacy-reduce", (a, p, n), {"reduce": False}, TypeError, "reduce"),
        ErrorCase("positional-distance", (a, p, n, cosine_distance), {}, TypeError, "positional"),
        ErrorCase("margin-zero", (a, p, n), {"margin": 0}, ValueError, "margin"),
        ErrorCase("margin-before-rank", (a, p[0], n), {"margin": -1.0}, ValueError, "margin"),
        ErrorCase("rank", (a, p[0], n), {}, RuntimeError, "same number of dimensions"),
        ErrorCase("rank-user-distance", (a, p, n[0]), {"distance_function": cosine_distance}, RuntimeError, "same number"),
        ErrorCase("anchor-without-ndim", ([1.0], p, n), {}, AttributeError, "ndim"),
        ErrorCase("positive-batch", (a, make.normal(2, 4), n), {}, RuntimeError, "positive"),
        ErrorCase("negative-features", (a, p, make.normal(3, 5)), {}, RuntimeError, "negative"),
        ErrorCase("bool-inputs", (a > 0, p > 0, n > 0), {}, RuntimeError, "bool"),
        ErrorCase("complex-distance", (a, p, n), {"distance_function": _complex_distance}, NotImplementedError, "real"),
        ErrorCase(
            "complex-distance-swap", (a, p, n), {"distance_function": _complex_distance, "swap": True}, RuntimeError, "real"
        ),
        ErrorCase("number-distance", (a, p, n), {"distance_function": _number_distance}, TypeError, "distance_function"),
        ErrorCase("bool-distance", (a, p, n), {"distance_function": _bool_distance}, RuntimeError, "bool"),
        ErrorCase(
            "distances-do-not-broadcast",
            (a, p, make.normal(2, 4)),
            {"distance_function": _second_rows},
            RuntimeError,
            "distance",
        ),
    ]


def _td_empty(make: Maker) -> list[Sample]:
    return [
        Sample("empty", (make.normal(0, 5), make.normal(0, 5), make.normal(0, 5)), wrt=(0, 1, 2)),
        Sample("empty-swap", (make.normal(0, 5), make.normal(0, 5), make.normal(0, 5)), {"swap": True}, wrt=(0, 1, 2)),
        Sample("no-features", (make.normal(3, 0), make.normal(3, 0), make.normal(3, 0)), wrt=(0, 1, 2)),
        _user(
            Sample(
                "user-empty-squared-euclidean",
                (make.normal(0, 5), make.normal(0, 5), make.normal(0, 5)),
                {"distance_function": squared_euclidean, "swap": True},
                wrt=(0, 1, 2),
            )
        ),
    ]


_TRIPLET_CASES: list[LossCase] = [
    LossCase(
        "triplet_margin_loss",
        "TripletMarginLoss",
        samples=_tm_samples,
        errors=_tm_errors,
        empty=_tm_empty,
        forward_arity=3,
        notes="one node keeping the inputs and O(N) distances (torch keeps every difference "
        "vector); float16/bfloat16 computed in float32 and rounded once",
    ),
    LossCase(
        "triplet_margin_with_distance_loss",
        "TripletMarginWithDistanceLoss",
        samples=_td_samples,
        errors=_td_errors,
        empty=_td_empty,
        legacy=False,
        forward_arity=3,
        notes="the default distance is the fused hand-written Function; a user's distance "
        "function is called as given, its ops below one torchloss node (samples named user-*)",
    ),
]

