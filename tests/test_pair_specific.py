"""Pair losses (MarginRanking, HingeEmbedding, CosineEmbedding): what the case table can't express.

The subgradients at the kinks (torch's ``clamp_min`` passes the gradient at 0), the eager
shortcuts against the differentiable path, infinities and NaN, the cosine's epsilon and zero
vectors, targets other than +-1, integer inputs (torch's integer arithmetic), broadcasting and
shapes, half precision, the memory kept for backward, higher derivatives against torch's, and
``torch.compile``.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as TF

import torchloss
import torchloss.functional as F
from torchloss._autograd.pair import EPSILON
from torchloss.testing import graph_functions, saved_bytes

# every test on each device of the device fixture (tests/conftest.py: on_device, cpu_only)
pytestmark = pytest.mark.usefixtures("on_device")

D = torch.float64
FLOATS = [torch.float32, D]
REDUCTIONS = ("none", "mean", "sum")
NAMES = ["margin_ranking_loss", "hinge_embedding_loss", "cosine_embedding_loss"]


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _run(fn, args, wrt, upstream=None, create_graph=False, **kwargs):
    """``fn(*args, **kwargs)`` on fresh leaves for the ``wrt`` positions, its gradients under
    ``upstream`` (a fixed random one by default), and the leaves."""
    args = [a.detach().clone().requires_grad_() if i in wrt else a for i, a in enumerate(args)]
    out = fn(*args, **kwargs)
    if upstream is None:
        upstream = (torch.rand(out.shape, generator=_gen(1), dtype=D) + 0.5).to(out.dtype)
    grads = torch.autograd.grad(out, [args[i] for i in wrt], upstream, create_graph=create_graph)
    return out, grads


def _same(a, b):
    """Equal values, dtypes and shapes; NaN equal to NaN."""
    assert a.dtype == b.dtype and a.shape == b.shape, (a.dtype, b.dtype, a.shape, b.shape)
    torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)


# --------------------------------------------------------------------------------------------
# Subgradients at the kinks


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("margin", [0.0, 0.5, 0.1, -0.3, 1])
def test_margin_ranking_subgradient_at_kink_matches_torch(margin, dtype):
    # Elements 0-3 sit exactly on the kink z = -y (x1 - x2) + margin = 0 in the dtype's
    # arithmetic (x2 = 0, x1 = margin / y, all exact); 4-5 are active, 6-7 inactive.
    m = float(torch.tensor(float(margin), dtype=dtype))
    y = torch.tensor([1.0, -1.0, 0.5, 2.0, 1.0, -1.0, 1.0, -1.0], dtype=dtype)
    x2 = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.3, -0.2, 0.1, 0.4], dtype=dtype)
    x1 = torch.tensor([m, -m, 2 * m, m / 2, 0.3 - 2.0, -0.2 + 2.0, 2.5, -2.5], dtype=dtype)
    z = -y * (x1 - x2) + margin
    assert (z[:4] == 0).all() and (z[4:6] > 0).all() and (z[6:] < 0).all()
    for reduction in REDUCTIONS:
        ours, g = _run(F.margin_ranking_loss, (x1, x2, y), (0, 1, 2), margin=margin, reduction=reduction)
        ref, g_ref = _run(TF.margin_ranking_loss, (x1, x2, y), (0, 1, 2), margin=margin, reduction=reduction)
        _same(ours, ref)
        for a, b in zip(g, g_ref):
            _same(a, b)
    # the gradient passes at the kink: d/dx1 = -y, d/dx2 = y, d/dy = x2 - x1 on the active set
    _, (g1, g2, gy) = _run(F.margin_ranking_loss, (x1, x2, y), (0, 1, 2), torch.ones(8, dtype=dtype), margin=margin, reduction="none")
    active = torch.tensor([1.0] * 6 + [0.0] * 2, dtype=dtype)
    assert torch.equal(g1, -y * active) and torch.equal(g2, y * active)
    assert torch.equal(gy, (x2 - x1) * active)
    # forward mode sees the same subgradient
    tangents = [torch.randn(8, generator=_gen(s), dtype=dtype) for s in range(3)]
    _, t = torch.func.jvp(lambda a, b, c: F.margin_ranking_loss(a, b, c, margin=margin, reduction="sum"), (x1, x2, y), tuple(tangents))
    torch.testing.assert_close(t, sum((gi * ti).sum() for gi, ti in zip((g1, g2, gy), tangents)))


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("margin", [1.0, 0.1, -0.3, 0.0, 2])
def test_hinge_subgradient_at_kink_matches_torch(margin, dtype):
    # x == margin (as the dtype holds it) for targets 1, -1, 0, 2, 0.5, then off-kink points
    m = float(torch.tensor(float(margin), dtype=dtype))
    y = torch.tensor([1.0, -1.0, 0.0, 2.0, 0.5, -1.0, -1.0, 0.0], dtype=dtype)
    x = torch.tensor([m] * 5 + [m - 0.5, m + 0.5, m + 1.0], dtype=dtype)
    for reduction in REDUCTIONS:
        ours, (g,) = _run(F.hinge_embedding_loss, (x, y), (0,), margin=margin, reduction=reduction)
        ref, (g_ref,) = _run(TF.hinge_embedding_loss, (x, y), (0,), margin=margin, reduction=reduction)
        _same(ours, ref)
        _same(g, g_ref)
    # [y != -1] - [y != 1][x <= m]: at the kink 1 (y=1), -1 (y=-1, the hinge passes), 0 (both)
    _, (g,) = _run(F.hinge_embedding_loss, (x, y), (0,), torch.ones(8, dtype=dtype), margin=margin, reduction="none")
    assert g.tolist() == [1.0, -1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 1.0]
    t = torch.randn(8, generator=_gen(), dtype=dtype)
    _, jvp = torch.func.jvp(lambda v: F.hinge_embedding_loss(v, y, margin=margin, reduction="sum"), (x,), (t,))
    torch.testing.assert_close(jvp, (g * t).sum())


@pytest.mark.parametrize("dtype", FLOATS)
def test_cosine_subgradient_at_kink_matches_torch(dtype):
    # Row 0: orthogonal vectors, cosine exactly 0 = margin, target -1: on the kink, the gradient
    # passes (x2/d for x1). Row 1: identical vectors, target 1: the cosine is p / (p + eps), as in
    # torch (exactly 1 in float32, where eps is lost next to p). Row 2: an active -1 row, row 3:
    # an inactive one.
    x1 = torch.tensor([[1.0, 0.0, 0.0], [0.3, -1.2, 2.0], [1.0, 1.0, 0.0], [1.0, 0.0, 0.0]], dtype=dtype)
    x2 = torch.tensor([[0.0, 2.0, 0.0], [0.3, -1.2, 2.0], [1.0, 0.5, 0.5], [-1.0, 0.5, 0.0]], dtype=dtype)
    y = torch.tensor([-1.0, 1.0, -1.0, -1.0], dtype=dtype)
    for reduction in REDUCTIONS:
        ours, g = _run(F.cosine_embedding_loss, (x1, x2, y), (0, 1), reduction=reduction)
        ref, g_ref = _run(TF.cosine_embedding_loss, (x1, x2, y), (0, 1), reduction=reduction)
        _same(ours, ref)
        for a, b in zip(g, g_ref):
            # row 1's gradient is 0 up to rounding (x2/d - c x1/q1 with x1 = x2, c = 1)
            torch.testing.assert_close(a, b, rtol=1e-6 if dtype == torch.float32 else 1e-14, atol=1e-7 if dtype == torch.float32 else 1e-15)
    none = F.cosine_embedding_loss(x1, x2, y, reduction="none")
    assert none[0] == 0 and 0 <= none[1] < 1e-12 and none[2] > 0 and none[3] == 0
    assert dtype == D or none[1] == 0
    _, (g1, g2) = _run(F.cosine_embedding_loss, (x1, x2, y), (0, 1), torch.ones(4, dtype=dtype), reduction="none")
    d = math.sqrt((1 + EPSILON) * (4 + EPSILON))
    torch.testing.assert_close(g1[0], x2[0] / d)  # passes at the kink
    torch.testing.assert_close(g2[0], x1[0] / d)
    assert (g1[3] == 0).all() and (g2[3] == 0).all()


# --------------------------------------------------------------------------------------------
# The eager shortcuts against the differentiable path


def _generic_forward(fn, *args, **kwargs):
    # an open forward-AD level turns the eager shortcuts off (see pair._fast)
    with fwAD.dual_level():
        return fn(*args, **kwargs)


def _path_inputs():
    inf, nan = float("inf"), float("nan")
    gen = _gen(3)
    x = torch.tensor([inf, -inf, nan, 0.5, 1.0, 2.0, -3.0, 1.0, inf, -inf, nan, 0.0], dtype=D)
    y = torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0, -1.0, -1.0, -1.0, -1.0, -1.0, 0.0, 2.0], dtype=D)
    return [
        ("margin_ranking_loss", (torch.randn(6, 5, generator=gen, dtype=D), torch.randn(6, 5, generator=gen, dtype=D), torch.randn(6, 5, generator=gen, dtype=D)), (0, 1, 2), {"margin": 0.2}),
        ("margin_ranking_loss", (torch.randn(6, 1, generator=gen, dtype=D), torch.randn(1, 5, generator=gen, dtype=D), torch.randn(6, 1, generator=gen, dtype=D)), (0, 1, 2), {}),
        ("margin_ranking_loss", (torch.randn(5, generator=gen, dtype=D), torch.randn(5, generator=gen, dtype=D), torch.randn(1, generator=gen, dtype=D)), (0, 1, 2), {}),
        ("hinge_embedding_loss", (torch.randn(6, 5, generator=gen, dtype=D), torch.randint(-1, 3, (6, 5), generator=gen).to(D)), (0,), {"margin": 0.3}),
        ("hinge_embedding_loss", (x, y), (0,), {}),
        ("hinge_embedding_loss", (torch.randn(6, 1, generator=gen, dtype=D), torch.tensor([1.0, -1.0, 0.0, 2.0], dtype=D)), (0,), {"margin": -0.5}),
        ("cosine_embedding_loss", (torch.randn(6, 5, generator=gen, dtype=D), torch.randn(6, 5, generator=gen, dtype=D), torch.tensor([1.0, -1.0, 0.0, -1.0, 1.0, -1.0], dtype=D)), (0, 1), {"margin": -0.2}),
        ("cosine_embedding_loss", (torch.randn(6, 1, generator=gen, dtype=D), torch.randn(6, 5, generator=gen, dtype=D), torch.tensor([1.0, -1.0, 0.0, -1.0, 1.0, -1.0], dtype=D)), (0, 1), {"margin": -0.9}),
        ("cosine_embedding_loss", (torch.randn(1, 5, generator=gen, dtype=D), torch.randn(6, 5, generator=gen, dtype=D), torch.tensor([1.0, -1.0, 0.0, -1.0, 1.0, -1.0], dtype=D)), (0, 1), {}),
    ]


@pytest.mark.cpu_only
@pytest.mark.parametrize("dtype", [torch.float32, D, torch.float16])
@pytest.mark.parametrize("i", range(len(_path_inputs())))
def test_eager_shortcuts_agree_with_differentiable_path(i, dtype):
    name, args, wrt, kwargs = _path_inputs()[i]
    args = tuple(a.to(dtype) for a in args)
    fn = getattr(F, name)
    for reduction in REDUCTIONS:
        fast = fn(*args, reduction=reduction, **kwargs)
        _same(fast, _generic_forward(fn, *args, reduction=reduction, **kwargs))
        # grad mode off in backward: the shortcuts; create_graph=True: the differentiable path
        _, g_fast = _run(fn, args, wrt, reduction=reduction, **kwargs)
        _, g_slow = _run(fn, args, wrt, create_graph=True, reduction=reduction, **kwargs)
        with fwAD.dual_level():  # everything on the differentiable path, setup_context included
            _, g_generic = _run(fn, args, wrt, reduction=reduction, **kwargs)
        for a, b in zip(g_fast + g_fast, g_slow + g_generic):
            if name == "cosine_embedding_loss":
                # addcmul_ against a multiply and a subtraction, and the forward's coefficients
                # (∂ℓ/∂c / d, times g) against g / d: rounding, also of gradients that cancel to
                # about 0 (an (N, 1) input's)
                tol = 16 * torch.finfo(dtype).eps
                torch.testing.assert_close(a, b.detach(), rtol=2e-3 if dtype == torch.float16 else 1e-5, atol=tol, equal_nan=True)
            else:
                _same(a, b.detach())


def test_infinities_and_nan_match_torch():
    # torch's where gives 0 for a dropped infinite term (x = +inf, y = -1: loss 0); a plain
    # mask multiplication would give NaN there
    for name, args, wrt, kwargs in _path_inputs():
        for reduction in REDUCTIONS:
            ours, g = _run(getattr(F, name), args, wrt, reduction=reduction, **kwargs)
            ref, g_ref = _run(getattr(TF, name), args, wrt, reduction=reduction, **kwargs)
            torch.testing.assert_close(ours, ref, equal_nan=True)
            for a, b in zip(g, g_ref):
                torch.testing.assert_close(a, b, equal_nan=True)
    _, (x, y), _, _ = _path_inputs()[4]
    loss = F.hinge_embedding_loss(x, y, reduction="none")
    assert loss[:3].tolist()[:2] == [math.inf, -math.inf] and math.isnan(loss[2])
    assert loss[8] == 0.0 and loss[9] == math.inf  # x = +inf and -inf with target -1


def test_margin_ranking_inf_nan_match_torch():
    inf, nan = float("inf"), float("nan")
    x1 = torch.tensor([inf, -inf, nan, 1.0, 1.0, inf], dtype=D)
    x2 = torch.tensor([0.0, 0.0, 0.0, nan, inf, inf], dtype=D)
    y = torch.tensor([1.0, 1.0, -1.0, 1.0, -1.0, 1.0], dtype=D)
    for reduction in REDUCTIONS:
        ours, g = _run(F.margin_ranking_loss, (x1, x2, y), (0, 1, 2), margin=0.5, reduction=reduction)
        ref, g_ref = _run(TF.margin_ranking_loss, (x1, x2, y), (0, 1, 2), margin=0.5, reduction=reduction)
        _same(ours, ref)
        for a, b in zip(g, g_ref):
            _same(a, b)


# --------------------------------------------------------------------------------------------
# CosineEmbedding: epsilon, zero vectors, large norms


@pytest.mark.parametrize("dtype", FLOATS)
def test_cosine_epsilon_and_zero_vectors_match_torch(dtype):
    z = torch.zeros(3, dtype=dtype)
    v = torch.tensor([0.5, -1.0, 2.0], dtype=dtype)
    tiny = torch.tensor([1e-7, -2e-7, 1e-7], dtype=dtype)  # squared norm 6e-14, next to eps
    x1 = torch.stack([z, v, z, tiny, tiny, v])
    x2 = torch.stack([v, z, z, v, tiny, -tiny])
    for y in ([1.0] * 6, [-1.0] * 6):
        y = torch.tensor(y, dtype=dtype)
        for margin in (0.0, -0.5):
            for reduction in REDUCTIONS:
                ours, g = _run(F.cosine_embedding_loss, (x1, x2, y), (0, 1), margin=margin, reduction=reduction)
                ref, g_ref = _run(TF.cosine_embedding_loss, (x1, x2, y), (0, 1), margin=margin, reduction=reduction)
                torch.testing.assert_close(ours, ref, rtol=1e-6, atol=0)
                for a, b in zip(g, g_ref):
                    torch.testing.assert_close(a, b, rtol=1e-5 if dtype == torch.float32 else 1e-12, atol=0)
                    assert torch.isfinite(a).all()
    # a zero vector has cosine 0: loss 1 for y = 1, max(0, -margin) for y = -1; the gradient of
    # the other vector's partner is x/d with d = sqrt(eps (|v|^2 + eps))
    y = torch.tensor([1.0, -1.0], dtype=dtype)
    out = F.cosine_embedding_loss(x1[:2], x2[:2], y, margin=-0.5, reduction="none")
    assert out.tolist() == [1.0, 0.5]
    _, (g1, _) = _run(F.cosine_embedding_loss, (x1[:1], x2[:1], y[:1]), (0, 1), torch.ones(1, dtype=dtype), reduction="none")
    d = math.sqrt(EPSILON * (5.25 + EPSILON))
    torch.testing.assert_close(g1[0], -v / d)
    # no features: cosine 0
    empty = F.cosine_embedding_loss(torch.zeros(2, 0, dtype=dtype), torch.zeros(2, 0, dtype=dtype), y, reduction="none")
    assert empty.tolist() == [1.0, 0.0]


def test_cosine_zero_vector_in_float16_is_finite():
    # torch computes in float16, where eps = 1e-12 vanishes: 0/0 = NaN. torchloss computes in
    # float32 (a deliberate difference): cosine 0, loss 1 for y = 1 and 0 for y = -1.
    x1 = torch.zeros(2, 4, dtype=torch.float16)
    x2 = torch.randn(2, 4, generator=_gen()).half()
    y = torch.tensor([1.0, -1.0])
    assert torch.isnan(TF.cosine_embedding_loss(x1, x2, y, reduction="none")).all()
    out = F.cosine_embedding_loss(x1, x2, y, reduction="none")
    assert out.dtype == torch.float16 and out.tolist() == [1.0, 0.0]
    # the gradient x2/d of the zero vector is about 1e6 |x2|, beyond float16: it rounds to inf,
    # as the float32 gradient does when rounded (not NaN)
    ones = torch.ones(2, dtype=torch.float16)
    _, g = _run(F.cosine_embedding_loss, (x1, x2, y), (0, 1), ones, reduction="none")
    _, g32 = _run(F.cosine_embedding_loss, (x1.float(), x2.float(), y), (0, 1), ones.float(), reduction="none")
    for a, b in zip(g, g32):
        _same(a, b.to(torch.float16))
        assert not torch.isnan(a).any()


def test_cosine_large_norms_do_not_overflow():
    # In float32 torch's sqrt(q1 * q2) overflows once the norms' product passes ~1.8e19: its
    # cosine drops to 0 (loss 1 for y = 1). torchloss takes sqrt(q1) sqrt(q2) there.
    gen = _gen(5)
    a, b = torch.randn(4, 8, generator=gen, dtype=D), torch.randn(4, 8, generator=gen, dtype=D)
    y = torch.tensor([1.0, -1.0, 1.0, -1.0])
    exact = TF.cosine_embedding_loss(a, b, y.double(), margin=-0.5, reduction="none")
    big1, big2 = (a * 1e10).float(), (b * 1e10).float()
    theirs = TF.cosine_embedding_loss(big1, big2, y, margin=-0.5, reduction="none")
    assert theirs[0] == 1.0  # torch's overflowed cosine
    ours, (g1, g2) = _run(F.cosine_embedding_loss, (big1, big2, y), (0, 1), margin=-0.5, reduction="none")
    torch.testing.assert_close(ours.double(), exact, rtol=1e-5, atol=1e-6)
    assert torch.isfinite(g1).all() and torch.isfinite(g2).all()
    # the gradient scales as 1/norm: compare with the float64 gradient of the scaled inputs
    _, (e1, e2) = _run(F.cosine_embedding_loss, (big1.double(), big2.double(), y.double()), (0, 1), margin=-0.5, reduction="none")
    torch.testing.assert_close(g1.double(), e1, rtol=1e-4, atol=1e-20)
    torch.testing.assert_close(g2.double(), e2, rtol=1e-4, atol=1e-20)


# --------------------------------------------------------------------------------------------
# Targets other than +-1


def test_targets_other_than_plus_minus_one_match_torch():
    gen = _gen(6)
    odd = torch.tensor([0.0, 2.0, 0.5, -2.0, float("nan"), 1.0, -1.0], dtype=D)
    a, b = torch.randn(7, 4, generator=gen, dtype=D), torch.randn(7, 4, generator=gen, dtype=D)
    x = torch.randn(7, generator=gen, dtype=D) * 2
    calls = [
        ("cosine_embedding_loss", (a, b, odd), (0, 1), {"margin": -0.3}),
        ("hinge_embedding_loss", (x, odd), (0,), {"margin": 0.7}),
        ("margin_ranking_loss", (x, b[:, 0], odd), (0, 1, 2), {"margin": 0.4}),
    ]
    for name, args, wrt, kwargs in calls:
        for reduction in REDUCTIONS:
            ours, g = _run(getattr(F, name), args, wrt, reduction=reduction, **kwargs)
            ref, g_ref = _run(getattr(TF, name), args, wrt, reduction=reduction, **kwargs)
            torch.testing.assert_close(ours, ref, equal_nan=True)
            for u, v in zip(g, g_ref):
                torch.testing.assert_close(u, v, equal_nan=True)
    # cosine: 0 loss and 0 gradient for every target but +-1 (NaN included)
    loss = F.cosine_embedding_loss(a, b, odd, reduction="none")
    assert (loss[:5] == 0).all()
    _, (g1, g2) = _run(F.cosine_embedding_loss, (a, b, odd), (0, 1), reduction="none")
    assert (g1[:5] == 0).all() and (g2[:5] == 0).all()
    # hinge: both branches for those targets: x + max(0, margin - x)
    loss = F.hinge_embedding_loss(x, odd, margin=0.7, reduction="none")
    torch.testing.assert_close(loss[:5], x[:5] + (0.7 - x[:5]).clamp_min(0))


@pytest.mark.cpu_only
@pytest.mark.parametrize("fast", [True, False])
def test_selector_target_dtypes_match_torch_without_warnings(fast):
    # the eager path writes comparisons into float buffers; a complex target must not go
    # through a complex-to-real cast (which warns)
    x = torch.randn(6, generator=_gen(16), dtype=D) * 2
    a, b = torch.randn(6, 3, generator=_gen(17), dtype=D), torch.randn(6, 3, generator=_gen(18), dtype=D)
    targets = [
        torch.tensor([1, -1, 0, 2, 1, -1]).to(torch.complex64),
        torch.tensor([1, 255, 0, 2, 1, 255], dtype=torch.uint8),
        torch.tensor([1, 0, 1, 0, 1, 1]).bool(),
        torch.tensor([1, -1, 0, 2, 1, -1], dtype=torch.int8),
    ]
    for t in targets:
        for reduction in REDUCTIONS:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                if fast:
                    ours, g = _run(F.hinge_embedding_loss, (x, t), (0,), reduction=reduction, margin=0.5)
                    ours_c, g_c = _run(F.cosine_embedding_loss, (a, b, t), (0, 1), reduction=reduction)
                else:
                    with fwAD.dual_level():
                        ours, g = _run(F.hinge_embedding_loss, (x, t), (0,), reduction=reduction, margin=0.5)
                        ours_c, g_c = _run(F.cosine_embedding_loss, (a, b, t), (0, 1), reduction=reduction)
            ref, g_ref = _run(TF.hinge_embedding_loss, (x, t), (0,), reduction=reduction, margin=0.5)
            _same(ours, ref)
            _same(g[0], g_ref[0])
            ref_c, g_ref_c = _run(TF.cosine_embedding_loss, (a, b, t), (0, 1), reduction=reduction)
            torch.testing.assert_close(ours_c, ref_c)
            for u, v in zip(g_c, g_ref_c):
                torch.testing.assert_close(u, v)


def test_target_requires_grad_like_torch():
    gen = _gen(7)
    a, b = torch.randn(4, 3, generator=gen, dtype=D), torch.randn(4, 3, generator=gen, dtype=D)
    y = torch.tensor([1.0, -1.0, 1.0, -1.0], dtype=D, requires_grad=True)
    # hinge and cosine use the target as a selector only: a target requiring grad does not make
    # the loss require grad (torch's behaviour, too)
    for ours, ref in (
        (F.hinge_embedding_loss(a[:, 0], y), TF.hinge_embedding_loss(a[:, 0], y)),
        (F.cosine_embedding_loss(a, b, y), TF.cosine_embedding_loss(a, b, y)),
    ):
        assert not ours.requires_grad and not ref.requires_grad
    # the margin ranking target is differentiable
    x1, x2 = a[:, 0], b[:, 0]
    (gy,) = torch.autograd.grad(F.margin_ranking_loss(x1, x2, y, margin=0.3), y)
    (gy_ref,) = torch.autograd.grad(TF.margin_ranking_loss(x1, x2, y, margin=0.3), y)
    torch.testing.assert_close(gy, gy_ref)


# --------------------------------------------------------------------------------------------
# Integer inputs: torch's integer arithmetic


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.int8, torch.uint8])
def test_integer_inputs_match_torch(dtype):
    gen = _gen(8)
    x1 = torch.randint(0, 100, (5, 4), generator=gen).to(dtype)
    x2 = torch.randint(0, 100, (5, 4), generator=gen).to(dtype)
    y = torch.tensor([1, -1, 1, -1, 0])
    for reduction in REDUCTIONS:
        # margin ranking: (-y)(x1 - x2) in the integer dtype (uint8 wraps), then + margin
        ours = F.margin_ranking_loss(x1, x2, y[:, None].to(dtype), margin=0.5, reduction=reduction)
        ref = TF.margin_ranking_loss(x1, x2, y[:, None].to(dtype), margin=0.5, reduction=reduction)
        _same(ours, ref)
        # cosine: products in the integer dtype, sums in int64, then floating point
        ours = F.cosine_embedding_loss(x1, x2, y, margin=0.1, reduction=reduction)
        ref = TF.cosine_embedding_loss(x1, x2, y, margin=0.1, reduction=reduction)
        _same(ours, ref)
    # hinge: in the input's dtype, margin truncated; 'sum' is int64, 'mean' is refused
    for reduction in ("none", "sum"):
        for margin in (2.7, 1, 0.0):
            ours = F.hinge_embedding_loss(x1 - x2 if dtype != torch.uint8 else x1, y[:, None], margin=margin, reduction=reduction)
            ref = TF.hinge_embedding_loss(x1 - x2 if dtype != torch.uint8 else x1, y[:, None], margin=margin, reduction=reduction)
            _same(ours, ref)
    for fn in (F.hinge_embedding_loss, TF.hinge_embedding_loss):
        with pytest.raises(RuntimeError, match="mean"):
            fn(x1, y[:, None])
    # bool inputs work for cosine (products are logical and)
    _same(F.cosine_embedding_loss(x1 > 50, x2 > 50, y), TF.cosine_embedding_loss(x1 > 50, x2 > 50, y))


def test_integer_results_follow_the_default_dtype():
    x = torch.tensor([3, 1, 4]), torch.tensor([1, 5, 9]), torch.tensor([1, -1, 1])
    previous = torch.get_default_dtype()
    try:
        torch.set_default_dtype(D)
        _same(F.margin_ranking_loss(*x, margin=0.25), TF.margin_ranking_loss(*x, margin=0.25))
        a = torch.tensor([[1, 2], [3, 4], [5, -6]])
        _same(F.cosine_embedding_loss(a, a.flip(0), x[2]), TF.cosine_embedding_loss(a, a.flip(0), x[2]))
    finally:
        torch.set_default_dtype(previous)


# --------------------------------------------------------------------------------------------
# Broadcasting and shapes


def test_broadcasting_and_shapes_match_torch():
    gen = _gen(9)

    def r(*shape):
        return torch.randn(shape, generator=gen, dtype=D)

    calls = [
        # margin ranking: equal ranks broadcast, e.g. to a (5, 5) result
        ("margin_ranking_loss", (r(5, 1), r(1, 5), r(5, 1)), (0, 1, 2), (5, 5)),
        ("margin_ranking_loss", (r(1, 5), r(1, 5), r(3, 1)), (0, 1, 2), (3, 5)),
        ("margin_ranking_loss", (r(), r(), r()), (0, 1, 2), ()),
        # hinge: the target may enlarge the result
        ("hinge_embedding_loss", (r(3, 1), torch.tensor([1.0, -1.0, 0.0, 1.0], dtype=D)), (0,), (3, 4)),
        ("hinge_embedding_loss", (r(), torch.tensor([1.0, -1.0], dtype=D)), (0,), (2,)),
        # cosine: inputs broadcast against each other, the target against the batch
        ("cosine_embedding_loss", (r(1, 4), r(1, 4), torch.tensor([1.0, -1.0, 1.0], dtype=D)), (0, 1), (3,)),
        ("cosine_embedding_loss", (r(3, 4), r(1, 4), torch.tensor([1.0], dtype=D)), (0, 1), (3,)),
        ("cosine_embedding_loss", (r(3, 1), r(3, 4), torch.tensor([1.0, 0.0, 1.0], dtype=D)), (0, 1), (3,)),
        ("cosine_embedding_loss", (r(4), r(1), torch.tensor(1.0, dtype=D)), (0, 1), ()),
    ]
    for name, args, wrt, shape in calls:
        ours, g = _run(getattr(F, name), args, wrt, reduction="none")
        ref, g_ref = _run(getattr(TF, name), args, wrt, reduction="none")
        assert ours.shape == ref.shape == shape
        torch.testing.assert_close(ours, ref)
        for i, a, b in zip(wrt, g, g_ref):
            assert a.shape == args[i].shape
            torch.testing.assert_close(a, b)
    # torch's per-input norms: an (N, 1) input against (N, D) gives cosines beyond 1
    x1, x2 = torch.tensor([[2.0], [-1.0]], dtype=D), torch.tensor([[1.0, 1.0, 1.0], [1.0, 2.0, 2.0]], dtype=D)
    y = torch.tensor([1.0, 1.0], dtype=D)
    loss = F.cosine_embedding_loss(x1, x2, y, reduction="none")
    torch.testing.assert_close(loss, 1 - torch.tensor([3 / math.sqrt(3), -5 / 3], dtype=D), rtol=1e-10, atol=0)
    torch.testing.assert_close(loss, TF.cosine_embedding_loss(x1, x2, y, reduction="none"))


def test_rank_and_dimension_errors_name_the_arguments():
    x = torch.randn(4)
    with pytest.raises(RuntimeError, match=r"input1, input2 and target must have the same number of dimensions.*\(4,\).*\(\)"):
        F.margin_ranking_loss(x, x, x[0])
    with pytest.raises(AttributeError, match="argument 'target'"):
        F.margin_ranking_loss(x, x, [1.0, -1.0, 1.0, 1.0])
    with pytest.raises(RuntimeError, match="1D target tensor expects 2D input tensors.*input1 of shape \\(4,\\)"):
        F.cosine_embedding_loss(x, x, x)
    with pytest.raises(RuntimeError, match="multi-target not supported"):
        F.cosine_embedding_loss(x[None], x[None], x[None, :1])
    with pytest.raises(RuntimeError, match="target of shape \\[3\\] is not broadcastable"):
        F.hinge_embedding_loss(x, x[:3])


@pytest.mark.parametrize("name", NAMES)
def test_margin_accepts_what_torchs_parser_accepts(name):
    x = torch.randn(3, 4, generator=_gen(10), dtype=D)
    args = {
        "margin_ranking_loss": (x[0], x[1], x[2].sign()),
        "hinge_embedding_loss": (x[0], x[2].sign()),
        "cosine_embedding_loss": (x[:2], x[1:], x[2, :2].sign()),
    }[name]
    for margin in (True, 1, 0.25, np.float32(0.25), np.int64(2), torch.tensor(0.25), torch.tensor(2), torch.tensor(0.5 + 0j)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _same(getattr(F, name)(*args, margin=margin), getattr(TF, name)(*args, margin=margin))


# --------------------------------------------------------------------------------------------
# Half precision


def _half_inputs(name, dtype):
    gen = _gen(11)
    if name == "margin_ranking_loss":
        args = (torch.randn(64, 32, generator=gen), torch.randn(64, 32, generator=gen), torch.randn(64, 32, generator=gen).sign())
        return tuple(a.to(dtype) for a in args), (0, 1, 2), {"margin": 0.1}
    if name == "hinge_embedding_loss":
        args = (torch.rand(64, 32, generator=gen) * 3, torch.randint(-1, 2, (64, 32), generator=gen).float())
        return (args[0].to(dtype), args[1]), (0,), {"margin": 1.3}
    args = (torch.randn(64, 32, generator=gen), torch.randn(64, 32, generator=gen), torch.randn(64, generator=gen).sign())
    return (args[0].to(dtype), args[1].to(dtype), args[2]), (0, 1), {"margin": 0.1}


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", NAMES)
def test_half_precision_computed_in_float32_and_rounded_once(name, dtype):
    args, wrt, kwargs = _half_inputs(name, dtype)
    up = tuple(a.float() if a.dtype == dtype else a for a in args)
    for reduction in REDUCTIONS:
        shape = getattr(F, name)(*args, reduction=reduction, **kwargs).shape
        upstream = (torch.rand(shape, generator=_gen()) + 0.5).to(dtype)
        out, g = _run(getattr(F, name), args, wrt, upstream, reduction=reduction, **kwargs)
        out32, g32 = _run(getattr(F, name), up, wrt, upstream.float(), reduction=reduction, **kwargs)
        assert out.dtype == dtype
        _same(out, out32.to(dtype))
        for a, b in zip(g, g32):
            assert a.dtype == dtype
            _same(a, b.to(dtype))
        # never less accurate than torch against a float64 evaluation
        exact = getattr(TF, name)(*(a.double() if a.is_floating_point() else a for a in args), reduction=reduction, **kwargs)
        theirs = getattr(TF, name)(*args, reduction=reduction, **kwargs)
        err, err_theirs = (out.double() - exact).abs(), (theirs.double() - exact).abs()
        assert (err <= err_theirs + torch.finfo(dtype).eps * exact.abs() / 2 + 1e-30).all()


# --------------------------------------------------------------------------------------------
# Memory kept for backward


def _memory_inputs(name, n=256, d=128):
    gen = _gen(12)
    if name == "margin_ranking_loss":
        return (torch.randn(n, d, generator=gen), torch.randn(n, d, generator=gen), torch.randn(n, d, generator=gen).sign()), (0, 1, 2)
    if name == "hinge_embedding_loss":
        return (torch.rand(n, d, generator=gen) * 2, torch.randn(n, d, generator=gen).sign()), (0,)
    return (torch.randn(n, d, generator=gen), torch.randn(n, d, generator=gen), torch.randn(n, generator=gen).sign()), (0, 1)


@pytest.mark.cpu_only
@pytest.mark.parametrize("name", NAMES)
def test_keeps_no_more_memory_than_torch(name):
    args, wrt = _memory_inputs(name)
    n, d = args[0].shape
    for reduction in REDUCTIONS:
        ours = saved_bytes(getattr(F, name), args, {"reduction": reduction}, wrt)
        theirs = saved_bytes(getattr(TF, name), args, {"reduction": reduction}, wrt)
        assert ours.total <= theirs.total and ours.extra <= theirs.extra
        if name == "margin_ranking_loss":
            # the three inputs, nothing allocated for the graph (torch: -y, x1 - x2, the result)
            assert ours.extra == 0 and theirs.extra >= 3 * n * d * 4
        elif name == "hinge_embedding_loss":
            # one int8 coefficient per element (torch: two bool masks and a float32 tensor)
            assert ours.total == ours.extra == n * d and theirs.extra >= 6 * n * d
        else:
            # the inputs and four float32 numbers per sample (not the target); torch keeps more
            # per-sample intermediates (and none of them is the size of the inputs either)
            assert ours.extra <= 4 * n * 4 < theirs.extra
            assert ours.total - ours.extra == 2 * n * d * 4


def test_cosine_backward_keeps_statistics_only_when_not_differentiated():
    # the saved per-sample statistics are used by a first-order backward; a differentiated one
    # recomputes them, so that higher derivatives see them as functions of the inputs (checked
    # against torch's Hessian)
    gen = _gen(13)
    a, b = torch.randn(3, 4, generator=gen, dtype=D), torch.randn(3, 4, generator=gen, dtype=D)
    y = torch.tensor([1.0, -1.0, -1.0], dtype=D)

    def f(fn):
        return lambda u, v: fn(u, v, y, margin=-0.4, reduction="sum")

    ours = torch.autograd.functional.hessian(f(F.cosine_embedding_loss), (a, b))
    ref = torch.autograd.functional.hessian(f(TF.cosine_embedding_loss), (a, b))
    for row, row_ref in zip(ours, ref):
        for h, h_ref in zip(row, row_ref):
            torch.testing.assert_close(h, h_ref)
    # forward-over-reverse (torch.func.hessian) agrees too
    fwd = torch.func.hessian(f(F.cosine_embedding_loss), argnums=(0, 1))(a, b)
    for row, row_ref in zip(fwd, ref):
        for h, h_ref in zip(row, row_ref):
            torch.testing.assert_close(h, h_ref)


def test_margin_ranking_hessian_matches_torch():
    gen = _gen(14)
    x1, x2 = torch.randn(5, generator=gen, dtype=D), torch.randn(5, generator=gen, dtype=D)
    y = torch.tensor([1.0, -1.0, 0.5, -2.0, 1.0], dtype=D)

    def f(fn):
        return lambda a, b, c: fn(a, b, c, margin=0.3, reduction="mean")

    ours = torch.func.hessian(f(F.margin_ranking_loss), argnums=(0, 1, 2))(x1, x2, y)
    ref = torch.autograd.functional.hessian(f(TF.margin_ranking_loss), (x1, x2, y))
    for row, row_ref in zip(ours, ref):
        for h, h_ref in zip(row, row_ref):
            torch.testing.assert_close(h, h_ref)
    assert ours[0][2].abs().sum() > 0  # the cross terms -s and s


# --------------------------------------------------------------------------------------------
# Transforms and compile


@pytest.mark.cpu_only
def test_vmap_over_the_selector_target():
    # hinge and cosine targets are not differentiable, so the generic vmap test does not batch
    # them; the eager shortcuts must step aside when only the target is batched
    gen = _gen(15)
    x = torch.randn(6, generator=gen, dtype=D)
    ys = torch.randint(-1, 2, (3, 6), generator=gen).to(D)
    out = torch.func.vmap(lambda t: F.hinge_embedding_loss(x, t, reduction="none"))(ys)
    torch.testing.assert_close(out, torch.stack([TF.hinge_embedding_loss(x, t, reduction="none") for t in ys]))
    a, b = torch.randn(6, 4, generator=gen, dtype=D), torch.randn(6, 4, generator=gen, dtype=D)
    out = torch.func.vmap(lambda t: F.cosine_embedding_loss(a, b, t, margin=-0.2))(ys)
    torch.testing.assert_close(out, torch.stack([TF.cosine_embedding_loss(a, b, t, margin=-0.2) for t in ys]))
    grads = torch.func.vmap(torch.func.grad(lambda u, t: F.cosine_embedding_loss(u, b, t, margin=-0.2)), in_dims=(None, 0))(a, ys)
    for g, t in zip(grads, ys):
        leaf = a.clone().requires_grad_()
        torch.testing.assert_close(g, torch.autograd.grad(TF.cosine_embedding_loss(leaf, b, t, margin=-0.2), leaf)[0])


@pytest.mark.cpu_only
@pytest.mark.parametrize("name", NAMES)
def test_torch_compile_fullgraph_values_and_gradients(name):
    torch._dynamo.reset()
    args, wrt = _memory_inputs(name, 16, 8)
    compiled = torch.compile(getattr(F, name), fullgraph=True, backend="aot_eager")
    for reduction in REDUCTIONS:
        ours, g = _run(compiled, args, wrt, reduction=reduction, margin=0.25)
        ref, g_ref = _run(getattr(TF, name), args, wrt, reduction=reduction, margin=0.25)
        torch.testing.assert_close(ours, ref)
        for a, b in zip(g, g_ref):
            torch.testing.assert_close(a, b)


@pytest.mark.cpu_only
@pytest.mark.parametrize("name", NAMES)
def test_one_graph_node_and_modules(name):
    args, wrt = _memory_inputs(name, 8, 4)
    leaves = [a.clone().requires_grad_() if i in wrt else a for i, a in enumerate(args)]
    out = getattr(F, name)(*leaves)
    nodes = [n for n in graph_functions(out) if n != "AccumulateGrad"]
    assert len(nodes) == 1 and nodes[0].__module__ == "torchloss._autograd.pair"
    module = {"margin_ranking_loss": "MarginRankingLoss", "hinge_embedding_loss": "HingeEmbeddingLoss", "cosine_embedding_loss": "CosineEmbeddingLoss"}[name]
    ours, ref = getattr(torchloss, module)(margin=0.5, reduction="sum"), getattr(torch.nn, module)(margin=0.5, reduction="sum")
    assert type(ours).__constants__ == type(ref).__constants__ == ["margin", "reduction"]
    assert repr(ours) == repr(ref) and list(ours.state_dict()) == list(ref.state_dict()) == []
    assert ours.margin == 0.5
    torch.testing.assert_close(ours(*args), ref(*args))
    default = getattr(torchloss, module)()
    assert default.margin == getattr(torch.nn, module)().margin


@pytest.mark.cpu_only
@pytest.mark.parametrize("dtype", [torch.float32, D])
def test_hinge_small_and_vectorised_eager_paths_agree(monkeypatch, dtype):
    # below pair._HE_SMALL elements the eager forward selects with masked_fill (few operations);
    # above, with clamp bounds (vectorised): the same loss and int8 coefficient, bit for bit
    from torchloss._autograd import pair

    _, args, wrt, kwargs = _path_inputs()[4]  # infinities, NaN, targets 0 and 2
    args = tuple(a.to(dtype) for a in args)
    results = []
    for small in (1 << 14, 0):
        monkeypatch.setattr(pair, "_HE_SMALL", small)
        for reduction in REDUCTIONS:
            results.append(_run(F.hinge_embedding_loss, args, wrt, reduction=reduction, **kwargs))
    half = len(results) // 2
    for (out_a, g_a), (out_b, g_b) in zip(results[:half], results[half:]):
        _same(out_a, out_b)
        _same(g_a[0], g_b[0])
