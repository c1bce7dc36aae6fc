"""Case-table entries of MarginRanking, HingeEmbedding, CosineEmbedding."""

from __future__ import annotations

import torch

from ._base import ErrorCase, LossCase, Maker, Sample

# ============================================================================================
# Pair: MarginRanking, HingeEmbedding, CosineEmbedding
#
# Case-table entries of the pair losses: MarginRanking, HingeEmbedding, CosineEmbedding.
#
# Samples stay away from the kinks, where finite differences cross the hinge and the two
# implementations' subgradients are compared separately (``tests/test_pair_specific.py``):
#
# * MarginRanking: each element's hinge argument ``z = -y (x1 - x2) + margin`` is drawn first,
#   with ``|z| >= 0.1``, and one input is solved for; the sample where both inputs broadcast uses a
#   lattice (``x1`` on multiples of 0.3, ``x2`` on multiples of 0.3 shifted by 0.15, each within
#   0.02, margin 0.6), which keeps ``|z| >= 0.11`` for any draw. The vmap test combines every
#   differentiable input of one seed (all three are), so each combination is drawn as a whole.
# * HingeEmbedding: inputs at least 0.1 from the margin.
# * CosineEmbedding: each pair is built with a chosen cosine at least 0.08 from the margin (and at
#   most 0.95 in magnitude), whatever the seed, so the combination of one seed's target with
#   another seed's inputs in the vmap test stays off the kink as well. The ``(N, 1)`` against
#   ``(N, D)`` sample (torch's per-input norms, a cosine that is not bounded by 1) has no ``-1``
#   targets, whose kink it could not avoid.
#
# Targets other than +-1 are included: margin ranking uses them as numbers, hinge embedding
# applies both branches, cosine embedding gives 0. Zero vectors (whose float16 result torch
# computes as NaN) and integer inputs (nothing to differentiate) are tested separately.

# --------------------------------------------------------------------------------------------
# MarginRanking


def _mr_solved(make: Maker, shape1, shape2, y: torch.Tensor, margin: float = 0.0):
    """``(x1, x2)`` with every hinge argument ``y (x2 - x1) + margin`` of magnitude in
    [0.1, 2.0]: one input is drawn and the other, which must have the full shape, solved for.
    Elements with ``y == 0`` have ``z = margin`` whatever the inputs (use a non-zero margin)."""
    shape = torch.broadcast_shapes(shape1, shape2, y.shape)
    z = make.magnitude(*shape, low=0.1, high=2.0)
    safe = torch.where(y == 0, torch.ones_like(y), y)
    step = torch.where(y == 0, make.normal(*shape), (z - margin) / safe)  # x2 - x1
    if tuple(shape1) == tuple(shape):
        x2 = make.normal(*shape2)
        return (x2 - step).to(make.dtype), x2
    x1 = make.normal(*shape1)
    return x1, (x1 + step).to(make.dtype)


def _mr_lattice(make: Maker, shape1, shape2):
    a = make.randint(-5, 6, *shape1, dtype=torch.float64)
    b = make.randint(-5, 6, *shape2, dtype=torch.float64)
    x1 = 0.3 * a + make.uniform(*shape1, low=-0.02, high=0.02, dtype=torch.float64)
    x2 = 0.3 * b + 0.15 + make.uniform(*shape2, low=-0.02, high=0.02, dtype=torch.float64)
    return x1.to(make.dtype), x2.to(make.dtype)


def _mr_samples(make: Maker) -> list[Sample]:
    every = (0, 1, 2)

    def sample(name, shape1, shape2, y, margin=None, wrt=every):
        x1, x2 = _mr_solved(make, shape1, shape2, y, 0.0 if margin is None else margin)
        kwargs = {} if margin is None else {"margin": margin}
        return Sample(name, (x1, x2, y), kwargs, wrt=wrt)

    soft = torch.tensor([0.5, -2.0, 1.5, -0.25, 3.0, 0.0], dtype=make.dtype, device=make.device)
    lattice = _mr_lattice(make, (4, 1), (1, 5))
    return [
        sample("vector", (6,), (6,), make.signs(6)),
        sample("margin", (6,), (6,), make.signs(6), 0.5),
        sample("negative-margin", (6,), (6,), make.signs(6), -0.3),
        sample("int-margin", (6,), (6,), make.signs(6), 1),
        # targets used as numbers (y = 0 leaves z = margin, away from 0)
        sample("soft-targets", (6,), (6,), soft, 0.2),
        sample("matrix", (3, 4), (3, 4), make.signs(3, 4), 0.25),
        sample("3d", (2, 3, 2), (2, 3, 2), make.signs(2, 3, 2)),
        sample("scalar", (), (), make.signs(), 0.5),
        sample("input2-broadcast", (5,), (1,), make.signs(5), 0.1),
        sample("input1-broadcast", (1,), (5,), make.signs(5), -0.2),
        sample("target-broadcast", (5,), (5,), make.signs(1), 0.3),
        sample("target-row", (3, 4), (3, 4), make.signs(1, 4)),
        Sample("both-broadcast", (*lattice, make.signs(4, 1)), {"margin": 0.6}, wrt=every),
        sample("integer-target", (6,), (6,), make.signs(6, dtype=torch.int64), 0.4, wrt=(0, 1)),
        sample("float64-target", (3, 4), (3, 4), make.signs(3, 4, dtype=torch.float64), 0.1),
    ]


def _mr_errors(make: Maker) -> list[ErrorCase]:
    x1, x2, y = make.normal(4), make.normal(4), make.signs(4)
    return [
        ErrorCase("bad-reduction", (x1, x2, y), {"reduction": "batchmean"}, ValueError, "reduction"),
        ErrorCase("target-dims", (x1, x2, y[0]), {}, RuntimeError, "same number of dimensions"),
        ErrorCase("input-dims", (x1, x2[None], y), {}, RuntimeError, "same number of dimensions"),
        ErrorCase("reduction-before-dims", (x1, x2, y[0]), {"reduction": "bad"}, ValueError, "reduction"),
        ErrorCase("not-a-tensor", (x1.tolist(), x2, y), {}, AttributeError, "input1"),
        ErrorCase("margin-none", (x1, x2, y), {"margin": None}, TypeError, "margin"),
        ErrorCase("margin-str", (x1, x2, y), {"margin": "0.5"}, TypeError, "margin"),
        ErrorCase("margin-complex", (x1, x2, y), {"margin": 1j}, TypeError, "margin"),
        ErrorCase("margin-1d-tensor", (x1, x2, y), {"margin": make.normal(1)}, TypeError, "margin"),
        ErrorCase(
            "margin-requires-grad", (x1, x2, y), {"margin": make.normal().requires_grad_()}, TypeError, "margin"
        ),
        ErrorCase(
            "margin-complex-tensor", (x1, x2, y), {"margin": make.normal().to(torch.complex128) + 1j}, RuntimeError, "margin"
        ),
        ErrorCase("dims-before-margin", (x1, x2, y[0]), {"margin": None}, RuntimeError, "dimensions"),
        ErrorCase("bool-target", (x1, x2, y > 0), {}, RuntimeError, "target"),
        ErrorCase("bool-input1", (x1 > 0, x2, y), {}, RuntimeError, "input1"),
        ErrorCase("bool-input2", (x1, x2 > 0, y), {}, RuntimeError, "input2"),
        ErrorCase("bool-target-before-shape", (x1, make.normal(3), y > 0), {}, RuntimeError, "target"),
        ErrorCase("input-broadcast", (x1, make.normal(3), y), {}, RuntimeError, "input2.*broadcastable"),
        ErrorCase("target-broadcast", (x1, x2, make.signs(3)), {}, RuntimeError, "target.*broadcastable"),
        ErrorCase("complex-input", (x1.to(torch.complex128), x2, y), {}, NotImplementedError, "complex"),
        ErrorCase("complex-target", (x1, x2, y.to(torch.complex128)), {}, NotImplementedError, "complex"),
        ErrorCase(
            "broadcast-before-complex", (x1.to(torch.complex128), make.normal(3), y), {}, RuntimeError, "broadcastable"
        ),
    ]


def _mr_empty(make: Maker) -> list[Sample]:
    return [
        Sample("empty", (make.normal(0), make.normal(0), make.signs(0)), wrt=(0, 1, 2)),
        Sample("empty-2d", (make.normal(0, 3), make.normal(0, 3), make.signs(0, 3)), {"margin": 0.5}, wrt=(0, 1, 2)),
    ]


# --------------------------------------------------------------------------------------------
# HingeEmbedding


def _he_input(make: Maker, *shape, margin: float = 1.0) -> torch.Tensor:
    """Inputs at least 0.1 from the kink at ``margin`` (on either side)."""
    return margin + make.magnitude(*shape, low=0.1, high=2.5)


def _he_samples(make: Maker) -> list[Sample]:
    mixed = torch.tensor([1.0, -1.0, 0.0, 2.0, 0.5, -0.5, 1.0, -1.0], dtype=make.dtype, device=make.device)
    return [
        Sample("vector", (_he_input(make, 8), make.signs(8)), wrt=(0,)),
        Sample("matrix", (_he_input(make, 3, 4), make.signs(3, 4)), wrt=(0,)),
        # any target other than +-1 applies both branches
        Sample("other-targets", (_he_input(make, 8), mixed), wrt=(0,)),
        Sample("other-targets-margin", (_he_input(make, 8, margin=0.4), mixed), {"margin": 0.4}, wrt=(0,)),
        Sample("margin-0", (_he_input(make, 3, 4, margin=0.0), make.signs(3, 4)), {"margin": 0.0}, wrt=(0,)),
        Sample("negative-margin", (_he_input(make, 8, margin=-0.5), mixed), {"margin": -0.5}, wrt=(0,)),
        Sample("large-margin", (_he_input(make, 3, 4, margin=2.5), make.signs(3, 4)), {"margin": 2.5}, wrt=(0,)),
        Sample("int-margin", (_he_input(make, 6, margin=2.0), make.signs(6)), {"margin": 2}, wrt=(0,)),
        Sample("scalar", (_he_input(make), make.signs()), wrt=(0,)),
        Sample("scalar-other-target", (_he_input(make), make.signs() * 0), wrt=(0,)),
        Sample("3d", (_he_input(make, 2, 3, 2), make.signs(2, 3, 2)), wrt=(0,)),
        Sample("target-row", (_he_input(make, 3, 4), make.signs(4)), wrt=(0,)),
        Sample("target-0d", (_he_input(make, 3, 4), make.signs()), wrt=(0,)),
        # torch broadcasts silently, also to a shape larger than the input's
        Sample("enlarging", (_he_input(make, 3, 1), mixed[:4].reshape(1, 4)), wrt=(0,)),
        Sample("scalar-input-vector-target", (_he_input(make), mixed), wrt=(0,)),
        Sample("integer-target", (_he_input(make, 6), make.signs(6, dtype=torch.int64)), wrt=(0,)),
        Sample("bool-target", (_he_input(make, 6), make.signs(6) > 0), wrt=(0,)),
        Sample("float64-target", (_he_input(make, 3, 4), make.signs(3, 4, dtype=torch.float64)), wrt=(0,)),
        Sample("float64-0d-target", (_he_input(make, 3, 4), make.signs(dtype=torch.float64)), wrt=(0,)),
        # compared as numbers, whatever their dtype (uint8 255 is -1 in torch's comparison)
        Sample("complex-target", (_he_input(make, 8), mixed.to(torch.complex128)), wrt=(0,)),
        Sample("uint8-target", (_he_input(make, 4), torch.tensor([1, 255, 0, 2], dtype=torch.uint8, device=make.device)), wrt=(0,)),
    ]


def _he_errors(make: Maker) -> list[ErrorCase]:
    x, y = _he_input(make, 3, 4), make.signs(3, 4)
    return [
        ErrorCase("bad-reduction", (x, y), {"reduction": "batchmean"}, ValueError, "reduction"),
        ErrorCase("reduction-before-type", (x.tolist(), y), {"reduction": "bad"}, ValueError, "reduction"),
        ErrorCase("input-not-a-tensor", (x.tolist(), y), {}, TypeError, "input"),
        ErrorCase("target-not-a-tensor", (x, 1.0), {}, TypeError, "target"),
        ErrorCase("margin-none", (x, y), {"margin": None}, TypeError, "margin"),
        ErrorCase("margin-1d-tensor", (x, y), {"margin": make.normal(1)}, TypeError, "margin"),
        ErrorCase("bool-input", (x > 0, y), {}, RuntimeError, "input"),
        ErrorCase("complex-input", (x.to(torch.complex128), y), {}, NotImplementedError, "input"),
        ErrorCase("bad-broadcast", (x, make.signs(3)), {}, RuntimeError, "target.*broadcastable"),
        ErrorCase("complex-before-broadcast", (x.to(torch.complex128), make.signs(3)), {}, NotImplementedError, "input"),
        ErrorCase("integer-mean", (x.long(), y), {}, RuntimeError, "mean"),
        ErrorCase("uint8-negative-margin", (x.abs().to(torch.uint8), y), {"margin": -0.5}, RuntimeError, "margin"),
        ErrorCase("int8-margin-overflow", (x.to(torch.int8), y), {"margin": 200.0}, RuntimeError, "margin"),
    ]


def _he_empty(make: Maker) -> list[Sample]:
    return [
        Sample("empty", (_he_input(make, 0), make.signs(0)), wrt=(0,)),
        Sample("empty-2d", (_he_input(make, 0, 4), make.signs(4)), {"margin": 0.5}, wrt=(0,)),
    ]


# --------------------------------------------------------------------------------------------
# CosineEmbedding


def _unit(t: torch.Tensor) -> torch.Tensor:
    return t / t.norm(dim=-1, keepdim=True)


def _cos_partner(make: Maker, base: torch.Tensor, margin: float, n: int) -> torch.Tensor:
    """``n`` vectors (one per row) whose cosine with the rows of ``base`` (``(n, D)`` or
    ``(1, D)``, in float64) lies at least 0.08 from ``margin`` and at most 0.95 in magnitude."""
    d = base.shape[-1]
    side = make.signs(n, dtype=torch.float64)
    gap = make.uniform(n, low=0.08, high=0.6, dtype=torch.float64)
    c = margin + side * gap
    c = torch.where(c.abs() > 0.95, margin - side * gap, c)
    u = _unit(base).expand(n, d)
    w = make.normal(n, d, dtype=torch.float64)
    w = _unit(w - (w * u).sum(-1, keepdim=True) * u)  # orthogonal to the base row
    scale = make.uniform(n, 1, low=0.5, high=2.0, dtype=torch.float64)
    return scale * (c[:, None] * u + (1 - c * c).sqrt()[:, None] * w)


def _cos_pair(make: Maker, n: int, d: int, margin: float = 0.0, base_rows: int | None = None):
    """``(x1, x2)`` of shape ``(n, D)``; ``base_rows=1`` makes ``x2`` a single ``(1, D)`` row."""
    rows = n if base_rows is None else base_rows
    base = make.normal(rows, d, dtype=torch.float64) * make.uniform(rows, 1, low=0.5, high=2.0, dtype=torch.float64)
    partner = _cos_partner(make, base, margin, n)
    return partner.to(make.dtype), base.to(make.dtype)


def _cos_targets(make: Maker, values, dtype=None) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype or make.dtype, device=make.device)


def _cos_samples(make: Maker) -> list[Sample]:
    def batch(name, n=5, d=6, margin=None, y=None, base_rows=None):
        x1, x2 = _cos_pair(make, n, d, 0.0 if margin is None else margin, base_rows)
        y = make.signs(n) if y is None else y
        kwargs = {} if margin is None else {"margin": margin}
        return Sample(name, (x1, x2, y), kwargs)

    def single(name, margin=None, y=1.0):
        x1, x2 = _cos_pair(make, 1, 7, 0.0 if margin is None else margin)
        kwargs = {} if margin is None else {"margin": margin}
        return Sample(name, (x1[0], x2[0], _cos_targets(make, y)), kwargs)

    mixed = [1.0, -1.0, 0.0, 2.0, 0.5, -1.0]
    x1q, x2q = make.normal(4, 1), make.normal(4, 5)
    y_pos = _cos_targets(make, [1.0, -1.0, 1.0, -1.0, 1.0])
    return [
        batch("matrix"),
        batch("margin", margin=0.3),
        batch("negative-margin", margin=-0.4),
        batch("large-margin", margin=0.8),
        batch("int-margin", margin=0),
        # targets other than +-1 give 0
        batch("other-targets", n=6, margin=0.2, y=_cos_targets(make, mixed)),
        batch("wide", n=3, d=64, margin=-0.1),
        batch("one-feature-pair", n=4, d=2),
        single("unbatched-positive"),
        single("unbatched-negative", margin=-0.2, y=-1.0),
        single("unbatched-other", y=0.0),
        # input2 broadcast along the batch
        batch("input2-row", margin=0.1, base_rows=1),
        # the target broadcast to the batch, and a batch broadcast to the target
        batch("target-1", margin=-0.3, y=make.signs(1)),
        Sample("target-enlarges", (*_cos_pair(make, 1, 6, 0.25), _cos_targets(make, [1.0, -1.0, 0.0, -1.0])), {"margin": 0.25}),
        # torch's per-input norms: an (N, 1) input against (N, D) (no -1 targets, see above)
        Sample("feature-broadcast", (x1q, x2q, _cos_targets(make, [1.0, 0.0, 1.0, 2.0])), {"margin": 0.5}),
        Sample("feature-broadcast-other", (x2q, x1q, _cos_targets(make, [1.0, 1.0, 0.5, 1.0]))),
        batch("integer-target", y=make.signs(5, dtype=torch.int64), margin=0.1),
        batch("float64-target", y=make.signs(5, dtype=torch.float64), margin=-0.2),
        # a float64 input2 promotes the loss (computed in float64; torch's norms of input1 in
        # float32), and broadcast along the features
        Sample("float64-input2-feature-broadcast", (x2q, x1q.double(), _cos_targets(make, [1.0, 1.0, 0.5, 1.0]))),
        batch("bool-target", y=make.signs(5) > 0),
        batch("complex-target", n=6, y=_cos_targets(make, mixed, dtype=torch.complex128)),
        Sample("positive-targets", (*_cos_pair(make, 5, 6), y_pos), {"margin": 0.6}),
    ]


def _cos_errors(make: Maker) -> list[ErrorCase]:
    a, b, y = make.normal(4, 5), make.normal(4, 5), make.signs(4)
    return [
        ErrorCase("bad-reduction", (a, b, y), {"reduction": "batchmean"}, ValueError, "reduction"),
        ErrorCase("reduction-before-shape", (a, b, y[None]), {"reduction": "bad"}, ValueError, "reduction"),
        ErrorCase("input-not-a-tensor", (a.tolist(), b, y), {}, TypeError, "input1"),
        ErrorCase("target-not-a-tensor", (a, b, 1), {}, TypeError, "target"),
        ErrorCase("margin-none", (a, b, y), {"margin": None}, TypeError, "margin"),
        ErrorCase("margin-before-shape", (a, b, y[None]), {"margin": "x"}, TypeError, "margin"),
        ErrorCase("target-2d", (a, b, y[None]), {}, RuntimeError, "0D or 1D target"),
        ErrorCase("1d-target-1d-inputs", (a[0], b[0], y), {}, RuntimeError, "input"),
        ErrorCase("0d-target-2d-inputs", (a, b, y[0]), {}, RuntimeError, "input"),
        ErrorCase("1d-target-3d-inputs", (a[None], b[None], y), {}, RuntimeError, "input"),
        ErrorCase("mixed-input-dims", (a[0], b, y), {}, RuntimeError, "input"),
        ErrorCase("0d-inputs", (a[0, 0], b[0, 0], y[0]), {}, RuntimeError, "input"),
        ErrorCase("batch-mismatch", (a, make.normal(3, 5), y), {}, RuntimeError, "input2.*broadcastable"),
        ErrorCase("feature-mismatch", (a, make.normal(4, 3), y), {}, RuntimeError, "input2.*broadcastable"),
        ErrorCase("target-length", (a, b, make.signs(3)), {}, RuntimeError, "target.*broadcastable"),
        ErrorCase("complex-inputs", (a.to(torch.complex128), b, y), {}, NotImplementedError, "complex"),
        ErrorCase(
            "complex-before-target-length", (a.to(torch.complex128), b, make.signs(3)), {}, NotImplementedError, "complex"
        ),
        ErrorCase(
            "broadcast-before-complex", (a.to(torch.complex128), make.normal(3, 5), y), {}, RuntimeError, "broadcastable"
        ),
    ]


def _cos_empty(make: Maker) -> list[Sample]:
    return [
        Sample("empty", (make.normal(0, 5), make.normal(0, 5), make.signs(0))),
        Sample("empty-target-broadcast", (make.normal(0, 5), make.normal(1, 5), make.signs(1)), {"margin": 0.5}),
        # no features: the cosine is 0/sqrt(eps^2) = 0, so the loss is 1 for y = 1
        Sample("no-features", (make.normal(3, 0), make.normal(3, 0), _cos_targets(make, [1.0, -1.0, 0.0]))),
    ]


_PAIR_CASES: list[LossCase] = [
    LossCase(
        "margin_ranking_loss",
        "MarginRankingLoss",
        samples=_mr_samples,
        errors=_mr_errors,
        empty=_mr_empty,
        forward_arity=3,
        notes="all three arguments differentiable; the gradient passes at the kink, as torch's",
    ),
    LossCase(
        "hinge_embedding_loss",
        "HingeEmbeddingLoss",
        samples=_he_samples,
        errors=_he_errors,
        empty=_he_empty,
        notes="float16/bfloat16 computed in float32 with the margin unrounded (torch rounds it to "
        "the input's dtype)",
    ),
    LossCase(
        "cosine_embedding_loss",
        "CosineEmbeddingLoss",
        samples=_cos_samples,
        errors=_cos_errors,
        empty=_cos_empty,
        forward_arity=3,
        notes="float16/bfloat16 in float32 (torch: NaN for a zero vector in float16); no overflow "
        "of the squared-norm product; keeps O(N) statistics instead of torch's intermediates",
    ),
]
