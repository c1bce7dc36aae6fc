"""Triplet losses: behaviour the generic case table cannot express.

The subgradients at the hinge's kink and at a swap tie (torch's: clamp_min passes the gradient at
0, minimum splits it ½/½), eps at zero difference vectors, the norms torch accepts (negative, 0,
±inf), complex and integer inputs, half precision against a float64 reference, the memory kept
for backward, the user's distance function called as given with its graph below the one
torchloss node, the module's default distance, double backward against torch's, and
torch.compile(fullgraph=True).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as TF
from torch.autograd import forward_ad as fwAD

import torchloss
import torchloss.functional as F
from torchloss._autograd.triplet import (
    TripletDistanceHingeFunction,
    TripletMarginLossFunction,
)
from torchloss.testing import graph_functions, saved_bytes

# every test on each device of the device fixture (tests/conftest.py: on_device, cpu_only)
pytestmark = pytest.mark.usefixtures("on_device")

D = torch.float64
REDUCTIONS = ("none", "mean", "sum")
NORMS = [2.0, 1.0, 3.0, 1.5, 0.5, -1.0, -2.5, math.inf, -math.inf]


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _randn(*shape, seed=0, dtype=D):
    return torch.randn(shape, generator=_gen(seed), dtype=D).to(dtype)


def _grads(fn, inputs, reduction="sum", upstream=None, **kwargs):
    leaves = [t.detach().clone().requires_grad_(t.is_floating_point() or t.is_complex()) for t in inputs]
    out = fn(*leaves, reduction=reduction, **kwargs)
    if upstream is None:
        upstream = torch.ones_like(out)
    wrt = [t for t in leaves if t.requires_grad]
    grads = torch.autograd.grad(out, wrt, upstream, allow_unused=True)
    return out.detach(), grads


def _both(inputs, reduction="sum", fn="triplet_margin_loss", **kwargs):
    return _grads(getattr(F, fn), inputs, reduction, **kwargs), _grads(getattr(TF, fn), inputs, reduction, **kwargs)


def _t(rows, dtype=D):
    return torch.tensor(rows, dtype=dtype)


# --------------------------------------------------------------------------------------------
# Subgradients at the kinks


# Rows with integer components and eps = 0, so that every distance is exact in both
# implementations: row 0 sits exactly on the hinge's kink (z = margin + d(a,p) - d(a,n) = 0),
# row 1 is active, row 2 inactive.
KINKS = {
    # p: (anchor, positive, negative, margin)
    2.0: ([[0, 0], [1, 1], [0, 0]], [[3, 4], [2, 1], [0, 1]], [[8, 6], [1, 3], [9, 9]], 5.0),
    1.0: ([[0, 0], [1, 1], [0, 0]], [[1, 2], [2, 1], [0, 1]], [[3, -4], [1, 3], [9, 9]], 4.0),
    math.inf: ([[0, 0], [1, 1], [0, 0]], [[1, 3], [2, 1], [0, 1]], [[7, 2], [1, 3], [9, 9]], 4.0),
}


@pytest.mark.parametrize("dtype", [torch.float32, D])
@pytest.mark.parametrize("q", list(KINKS))
def test_hinge_kink_passes_the_gradient_as_torch(q, dtype):
    a, p, n, margin = KINKS[q]
    inputs = (_t(a, dtype), _t(p, dtype), _t(n, dtype))
    for reduction in REDUCTIONS:
        (out, g), (ref, g_ref) = _both(inputs, reduction, p=q, eps=0.0, margin=margin)
        assert torch.equal(out, ref)
        if reduction == "none":
            assert out[0] == 0 and out[1] > 0 and out[2] == 0
        for x, y in zip(g, g_ref):
            torch.testing.assert_close(x, y, rtol=1e-6, atol=0)
    # clamp_min passes the gradient at exactly 0: the kink row has a non-zero gradient
    (_, (ga, gp, _)), _ = _both(inputs, "none", p=q, eps=0.0, margin=margin)
    assert ga[0].abs().sum() > 0 and gp[0].abs().sum() > 0 and ga[2].abs().sum() == 0


@pytest.mark.parametrize("dtype", [torch.float32, D])
@pytest.mark.parametrize("q", [2.0, 1.0, math.inf])
def test_swap_tie_splits_the_gradient_as_torch(q, dtype):
    # d(a, n) == d(p, n) exactly (n is equidistant from a and p in every norm here)
    a, p, n = _t([[0, 0], [0, 0]], dtype), _t([[6, 0], [0, 4]], dtype), _t([[3, 4], [-3, 2]], dtype)
    ours = F.triplet_margin_loss(a, p, n, p=q, eps=0.0, swap=True, reduction="none")
    assert torch.equal(TF.pairwise_distance(a, n, q, 0.0), TF.pairwise_distance(p, n, q, 0.0))
    torch.testing.assert_close(ours, TF.triplet_margin_loss(a, p, n, p=q, eps=0.0, swap=True, reduction="none"))
    for reduction in REDUCTIONS:
        (out, g), (ref, g_ref) = _both((a, p, n), reduction, p=q, eps=0.0, swap=True, margin=1.0)
        torch.testing.assert_close(out, ref, rtol=0, atol=0)
        for x, y in zip(g, g_ref):
            torch.testing.assert_close(x, y, rtol=1e-6, atol=0)
    (_, (ga, gp, gn)), _ = _both((a, p, n), "sum", p=q, eps=0.0, swap=True)
    torch.testing.assert_close(ga + gp + gn, torch.zeros_like(ga), atol=1e-6, rtol=0)
    if q == 2:
        # row 0: -(½ ∂d(a,n)/∂n + ½ ∂d(p,n)/∂n) = -(½ (0.6, 0.8) + ½ (-0.6, 0.8)) = (0, -0.8)
        torch.testing.assert_close(gn[0], _t([0.0, -0.8], dtype))


def test_swap_tie_jvp_is_the_backward_jacobian():
    # at a tie the jvp averages the two distances' tangents, as torch's forward AD of minimum
    # does: it is the Jacobian the ½/½ backward uses, applied to the tangent
    a, p, n = _t([[0.0, 0.0]]), _t([[6.0, 0.0]]), _t([[3.0, 4.0]])
    tangents = tuple(_randn(1, 2, seed=s) for s in (1, 2, 3))

    def f(*x):
        return F.triplet_margin_loss(*x, eps=0.0, swap=True, reduction="sum")

    _, jvp = torch.func.jvp(f, (a, p, n), tangents)
    jac = torch.func.jacrev(f, argnums=(0, 1, 2))(a, p, n)
    torch.testing.assert_close(jvp, sum((j * t).sum() for j, t in zip(jac, tangents)))
    _, jvp_torch = torch.func.jvp(
        lambda *x: TF.triplet_margin_loss(*x, eps=0.0, swap=True, reduction="sum"), (a, p, n), tangents
    )
    torch.testing.assert_close(jvp, jvp_torch)
    # the user-distance path too
    kw = {"distance_function": lambda x, y: TF.pairwise_distance(x, y, 2.0, 0.0), "swap": True}
    _, ours = torch.func.jvp(lambda *x: F.triplet_margin_with_distance_loss(*x, **kw), (a, p, n), tangents)
    _, ref = torch.func.jvp(lambda *x: TF.triplet_margin_with_distance_loss(*x, **kw), (a, p, n), tangents)
    torch.testing.assert_close(ours, ref)


# --------------------------------------------------------------------------------------------
# eps, zero differences and the norms torch accepts


@pytest.mark.parametrize("eps", [1e-6, 0.0, 1e-2])
@pytest.mark.parametrize("q", NORMS + [0.0])
def test_zero_difference_vectors_match_torch(q, eps):
    # a == p: u = eps exactly (eps is added to the difference vector), d(a, a) = eps * D^(1/q);
    # with eps = 0 the distance is 0 and torch's gradient there is 0 (masked), never NaN
    a = _randn(4, 5, seed=1)
    p = a.clone()
    p[3] = _randn(5, seed=2)  # one ordinary row
    n = _randn(4, 5, seed=3)
    for swap in (False, True):
        (out, g), (ref, g_ref) = _both((a, p, n), "none", p=q, eps=eps, swap=swap)
        torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
        for x, y in zip(g, g_ref):
            if y is None:  # p = 0 has no gradient, in torch and in torchloss
                assert x is None
                continue
            assert torch.isfinite(x).all()
            torch.testing.assert_close(x, y, rtol=1e-9, atol=1e-12)


def test_eps_is_added_to_the_difference_vector():
    # d(a, a) = ||eps·1|| = eps·sqrt(D) = 2e-3 and d(a, a + 0.5) = ||(-0.5 + eps)·1|| = 2·0.499,
    # not ||a - n|| + eps
    a = _randn(3, 4)
    loss = F.triplet_margin_loss(a, a.clone(), a + 0.5, margin=5.0, eps=1e-3, reduction="none")
    expected = torch.full((3,), 5.0 + 2e-3 - 2 * (0.5 - 1e-3), dtype=D)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(loss, TF.triplet_margin_loss(a, a.clone(), a + 0.5, margin=5.0, eps=1e-3, reduction="none"))


@pytest.mark.parametrize("q", NORMS)
def test_norms_torch_accepts_values_gradients_and_double_backward(q):
    # negative p, fractional p, ±inf, compared with torch including double backward (torch's
    # composite supports it), on inputs away from zero components and ties
    gen = _gen(7)
    a = torch.randn(5, 4, generator=gen, dtype=D)
    p = a + (torch.rand(5, 4, generator=gen, dtype=D) + 0.2) * torch.randn(5, 4, generator=gen, dtype=D).sign()
    n = a + (torch.rand(5, 4, generator=gen, dtype=D) + 0.4) * torch.randn(5, 4, generator=gen, dtype=D).sign() * 2
    for swap in (False, True):
        hvps = []
        for fn in (F.triplet_margin_loss, TF.triplet_margin_loss):
            leaves = [t.clone().requires_grad_() for t in (a, p, n)]
            out = fn(*leaves, p=q, swap=swap, margin=2.0, reduction="sum")
            grads = torch.autograd.grad(out, leaves, create_graph=True)
            dot = sum((g * torch.ones_like(g).cumsum(-1)).sum() for g in grads)
            hvp = torch.autograd.grad(dot, leaves, allow_unused=True, materialize_grads=True)
            hvps.append((out.detach(), [g.detach() for g in grads], hvp))
        (o1, g1, h1), (o2, g2, h2) = hvps
        torch.testing.assert_close(o1, o2)
        for x, y in zip(g1 + list(h1), g2 + list(h2)):
            torch.testing.assert_close(x, y)


def test_p0_counts_non_zeros_and_has_no_gradient():
    a = _t([[1.0, 2.0, 3.0], [0.0, 0.0, 1.0]])
    p = _t([[1.0, 0.0, 3.0], [0.0, 0.0, 1.0]])
    n = _t([[0.0, 0.0, 0.0], [5.0, 0.0, 1.0]])
    (out, g), (ref, g_ref) = _both((a, p, n), "none", p=0.0, eps=0.0, margin=2.0)
    assert torch.equal(out, ref)  # (2 + 1 - 3, 2 + 0 - 1) clamped
    assert out.tolist() == [0.0, 1.0]
    assert all(x is None for x in g) and all(y is None for y in g_ref)
    # the jvp is 0 (torch's forward AD agrees)
    _, t = torch.func.jvp(lambda x: F.triplet_margin_loss(x, p, n, p=0.0), (a,), (torch.ones_like(a),))
    assert t == 0


def test_empty_feature_dimension():
    x = torch.zeros(3, 0, dtype=D, requires_grad=True)
    for q in (2.0, 1.0, 0.5, 0.0):
        out = F.triplet_margin_loss(x, x, x, p=q, margin=0.7, reduction="none")
        torch.testing.assert_close(out, torch.full((3,), 0.7, dtype=D))
    for q in (-1.0, math.inf, -math.inf):
        for fn in (F.triplet_margin_loss, TF.triplet_margin_loss):
            with pytest.raises(RuntimeError, match="norm"):
                fn(x, x, x, p=q)


def test_empty_batch():
    x = torch.zeros(0, 4, dtype=D, requires_grad=True)
    for fn in (F.triplet_margin_loss, F.triplet_margin_with_distance_loss):
        assert torch.isnan(fn(x, x, x)) and fn(x, x, x, reduction="sum") == 0
        assert fn(x, x, x, reduction="none").shape == (0,)
        (g,) = torch.autograd.grad(fn(x, x, x, swap=True), x)
        assert g.shape == (0, 4)


# --------------------------------------------------------------------------------------------
# dtypes


def test_integer_complex_and_mixed_dtypes_as_torch():
    gen = _gen(3)
    ints = [torch.randint(-5, 6, (4, 3), generator=gen) for _ in range(3)]
    cases = [
        tuple(ints),
        (ints[0].int(), ints[1], ints[2].to(torch.int16)),
        (ints[0], ints[1].double(), ints[2]),
        (ints[0].float(), ints[1].half(), ints[2].float()),
        (ints[0].bfloat16(), ints[1].bfloat16(), ints[2].double()),
    ]
    for inputs in cases:
        for swap in (False, True):
            ours = F.triplet_margin_loss(*inputs, swap=swap, reduction="none")
            ref = TF.triplet_margin_loss(*inputs, swap=swap, reduction="none")
            assert ours.dtype == ref.dtype
            torch.testing.assert_close(ours, ref, rtol=1e-2, atol=1e-2)  # torch rounds x - y to half
    # complex inputs: a real loss, torch's gradients (the real part for a real input)
    a = torch.randn(4, 3, generator=gen, dtype=torch.complex128)
    p = torch.randn(4, 3, generator=gen, dtype=D)
    n = torch.randn(4, 3, generator=gen, dtype=torch.complex128)
    for q in (2.0, 1.0, 3.0, 1.5, math.inf):
        for swap in (False, True):
            (out, g), (ref, g_ref) = _both((a, p, n), "none", p=q, swap=swap, margin=3.0)
            assert out.dtype == ref.dtype == D
            torch.testing.assert_close(out, ref)
            for x, y in zip(g, g_ref):
                assert x.dtype == y.dtype
                torch.testing.assert_close(x, y)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("swap", [False, True])
@pytest.mark.parametrize("q", [2.0, 1.0, 3.0])
def test_low_precision_is_more_accurate_than_torch(q, swap, dtype):
    # computed in float32 from the half-precision inputs and rounded once: against a float64
    # evaluation of the same inputs the error is within half an ulp, and never above torch's
    gen = _gen(11)
    a, p, n = (torch.randn(256, 128, generator=gen).to(dtype) for _ in range(3))
    kwargs = {"p": q, "swap": swap, "margin": 4.0 if q != 1 else 16.0}
    for reduction in REDUCTIONS:
        exact = TF.triplet_margin_loss(a.double(), p.double(), n.double(), reduction=reduction, **kwargs)
        ours = F.triplet_margin_loss(a, p, n, reduction=reduction, **kwargs)
        theirs = TF.triplet_margin_loss(a, p, n, reduction=reduction, **kwargs)
        assert ours.dtype == theirs.dtype == dtype
        err, err_torch = (ours.double() - exact).abs(), (theirs.double() - exact).abs()
        half_ulp = torch.finfo(dtype).eps * exact.abs() / 2
        assert bool((err <= err_torch + half_ulp).all())
        assert float(err.mean()) <= float(err_torch.mean())
        if reduction != "none":
            assert float(err) <= float(err_torch)
    # gradients too: float32 arithmetic, one rounding
    leaves = [t.clone().requires_grad_() for t in (a, p, n)]
    grads = torch.autograd.grad(F.triplet_margin_loss(*leaves, reduction="sum", **kwargs), leaves)
    leaves64 = [t.double().requires_grad_() for t in (a, p, n)]
    exact = torch.autograd.grad(TF.triplet_margin_loss(*leaves64, reduction="sum", **kwargs), leaves64)
    for g, e in zip(grads, exact):
        assert g.dtype == dtype
        torch.testing.assert_close(g.double(), e, rtol=torch.finfo(dtype).eps, atol=torch.finfo(dtype).eps * e.abs().max())


def test_large_values_overflow_where_torch_does():
    # the norms are unscaled, as torch's: the same finite range
    base = _randn(3, 8, seed=5, dtype=torch.float32)
    for scale in (1e15, 1e18):
        x = base * scale
        args = (x, x.flip(0), x.roll(1, 0))
        ours, ref = F.triplet_margin_loss(*args, reduction="none"), TF.triplet_margin_loss(*args, reduction="none")
        torch.testing.assert_close(ours, ref, rtol=1e-5, atol=0)
        assert torch.isfinite(ours).all()


# --------------------------------------------------------------------------------------------
# Memory kept for backward


@pytest.mark.parametrize("kwargs", [{}, {"p": 1}, {"p": 3}, {"swap": True}, {"p": 1.5, "swap": True}, {"p": math.inf}])
def test_keeps_difference_vectors_and_per_row_weights_only(kwargs):
    N, Dm = 256, 128
    args = tuple(torch.randn(N, Dm, generator=_gen(s)) for s in range(3))
    ours = saved_bytes(F.triplet_margin_loss, args, kwargs, (0, 1, 2))
    theirs = saved_bytes(TF.triplet_margin_loss, args, kwargs, (0, 1, 2))
    distances = 3 if kwargs.get("swap") else 2
    # the difference vectors (as torch), not the inputs, and one weight per row and distance
    # (none for the ±inf norms, whose backward recomputes the distances)
    weights = 0 if math.isinf(kwargs.get("p", 2)) else distances * N * 4
    assert ours.total == ours.extra
    assert distances * N * Dm * 4 <= ours.total <= distances * N * Dm * 4 + weights
    assert ours.total <= theirs.total and ours.extra <= theirs.extra


def test_user_distance_hinge_keeps_only_the_distances():
    args = tuple(torch.randn(64, 32, generator=_gen(s)) for s in range(3))
    for swap in (False, True):
        kwargs = {"distance_function": lambda x, y: ((x - y) ** 2).sum(-1), "swap": swap}
        ours = saved_bytes(F.triplet_margin_with_distance_loss, args, kwargs, (0, 1, 2))
        theirs = saved_bytes(TF.triplet_margin_with_distance_loss, args, kwargs, (0, 1, 2))
        assert ours.total <= theirs.total  # the user's ops save the same in both; the hinge less


def test_backward_twice_and_saved_tensors_untouched():
    # the first-order backward works in place on its own temporaries only: a retained graph
    # gives the same gradients twice, and the inputs are unchanged
    a, p, n = (torch.randn(8, 6, generator=_gen(s), requires_grad=True) for s in range(3))
    before = [t.detach().clone() for t in (a, p, n)]
    for kwargs in ({}, {"p": 1}, {"swap": True, "p": 1.5}, {"p": math.inf}):
        out = F.triplet_margin_loss(a, p, n, margin=3.0, **kwargs)
        g1 = torch.autograd.grad(out, (a, p, n), retain_graph=True)
        g2 = torch.autograd.grad(out, (a, p, n))
        for x, y in zip(g1, g2):
            assert torch.equal(x, y)
    for t, b in zip((a, p, n), before):
        assert torch.equal(t, b) and t._version == 0


# --------------------------------------------------------------------------------------------
# TripletMarginWithDistanceLoss: the user's distance function


class _Counting:
    def __init__(self, fn):
        self.fn, self.calls = fn, []

    def __call__(self, x, y):
        self.calls.append((x, y))
        return self.fn(x, y)


def _cosine(x, y):
    return 1.0 - TF.cosine_similarity(x, y)


@pytest.mark.parametrize("swap", [False, True])
def test_distance_function_called_as_given(swap):
    a, p, n = (_randn(5, 4, seed=s).requires_grad_() for s in range(3))
    ours, theirs = _Counting(_cosine), _Counting(_cosine)
    out = F.triplet_margin_with_distance_loss(a, p, n, distance_function=ours, swap=swap, margin=0.5)
    ref = TF.triplet_margin_with_distance_loss(a, p, n, distance_function=theirs, swap=swap, margin=0.5)
    torch.testing.assert_close(out, ref)
    # the same calls, in torch's order, on the caller's own tensors
    expected = [(a, p), (a, n)] + ([(p, n)] if swap else [])
    assert len(ours.calls) == len(theirs.calls) == len(expected)
    for (x, y), (ex, ey) in zip(ours.calls, expected):
        assert x is ex and y is ey
    # backward does not call it again: autograd differentiates the user's graph
    g = torch.autograd.grad(out, (a, p, n))
    assert len(ours.calls) == len(expected)
    g_ref = torch.autograd.grad(ref, (a, p, n))
    for x, y in zip(g, g_ref):
        torch.testing.assert_close(x, y)


def test_user_distance_graph_is_below_one_torchloss_node():
    a, p, n = (_randn(5, 4, seed=s).requires_grad_() for s in range(3))
    out = F.triplet_margin_with_distance_loss(a, p, n, distance_function=_cosine, swap=True)
    assert out.grad_fn._forward_cls is TripletDistanceHingeFunction
    nodes = graph_functions(out)
    ours = [x for x in nodes if str(getattr(x, "__module__", "")).startswith("torchloss.")]
    assert ours == [TripletDistanceHingeFunction]
    # below it: the user's own ops (three cosine distances), nothing of torch's loss
    user_nodes = graph_functions(_cosine(a, p))
    assert set(user_nodes) <= set(nodes)
    assert not any("ClampMin" in str(x) or "Minimum" in str(x) for x in nodes)
    # the default distance is a single fused node
    default = F.triplet_margin_with_distance_loss(a, p, n, swap=True)
    assert [x for x in graph_functions(default) if x != "AccumulateGrad"] == [TripletMarginLossFunction]


def test_user_distance_double_backward_and_forward_ad_match_torch():
    a, p, n = (_randn(4, 3, seed=s) for s in range(3))
    tangents = tuple(_randn(4, 3, seed=10 + s) for s in range(3))
    for fn in (_cosine, lambda x, y: ((x - y) ** 2).sum(-1)):
        for swap in (False, True):
            kw = {"distance_function": fn, "swap": swap, "margin": 0.7}
            res = []
            for impl in (F, TF):

                def f(*x, impl=impl, kw=kw):
                    return impl.triplet_margin_with_distance_loss(*x, **kw)

                _, jvp = torch.func.jvp(f, (a, p, n), tangents)
                hvp = torch.func.jvp(torch.func.grad(f, argnums=(0, 1, 2)), (a, p, n), tangents)[1]
                res.append((jvp, hvp))
            torch.testing.assert_close(res[0][0], res[1][0])
            for x, y in zip(res[0][1], res[1][1]):
                torch.testing.assert_close(x, y)


def test_user_distance_low_precision_is_bit_identical_to_torch():
    # the user's half-precision distances carry their own errors; the hinge rounds where torch's
    # Python expression rounds (including torch's rounding of the margin to the distances' dtype)
    for dtype in (torch.float16, torch.bfloat16):
        a, p, n = (_randn(64, 8, seed=s, dtype=dtype) for s in range(3))
        for margin in (0.4, 1.0, 0.1):
            for swap in (False, True):
                kw = {"distance_function": lambda x, y: (x - y).abs().sum(-1) / 8, "swap": swap, "margin": margin}
                ours = F.triplet_margin_with_distance_loss(a, p, n, reduction="none", **kw)
                ref = TF.triplet_margin_with_distance_loss(a, p, n, reduction="none", **kw)
                assert torch.equal(ours, ref)


def test_user_distance_of_any_shape_and_dtype():
    a, p, n = (_randn(3, 4, seed=s) for s in range(3))
    # a distance per element: the loss is reduced over whatever shape it returns
    for fn in (lambda x, y: (x - y).abs(), lambda x, y: ((x - y) ** 2).sum(-1, keepdim=True)):
        for reduction in REDUCTIONS:
            (out, g), (ref, g_ref) = _both((a, p, n), reduction, "triplet_margin_with_distance_loss", distance_function=fn)
            torch.testing.assert_close(out, ref)
            for x, y in zip(g, g_ref):
                torch.testing.assert_close(x, y)
    # integer distances (a count) give a float loss of the default dtype, as torch's
    def count(x, y):
        return (x > y).sum(-1)

    ours = F.triplet_margin_with_distance_loss(a, p, n, distance_function=count, reduction="none")
    ref = TF.triplet_margin_with_distance_loss(a, p, n, distance_function=count, reduction="none")
    assert ours.dtype == ref.dtype == torch.get_default_dtype()
    torch.testing.assert_close(ours, ref)


# --------------------------------------------------------------------------------------------
# The module's default distance


def test_module_default_distance_is_fused_and_drop_in():
    ours, ref = torchloss.TripletMarginWithDistanceLoss(swap=True), torch.nn.TripletMarginWithDistanceLoss(swap=True)
    assert repr(ours) == repr(ref)
    assert isinstance(ours.distance_function, torch.nn.PairwiseDistance)
    assert list(ours.state_dict()) == list(ref.state_dict()) == []
    a, p, n = (_randn(5, 4, seed=s).requires_grad_() for s in range(3))
    out = ours(a, p, n)
    torch.testing.assert_close(out, ref(a, p, n))
    assert [x for x in graph_functions(out) if x != "AccumulateGrad"] == [TripletMarginLossFunction]
    # its settings are honoured: p and eps changed after construction
    ours.distance_function.norm, ref.distance_function.norm = 1.0, 1.0
    ours.distance_function.eps, ref.distance_function.eps = 0.1, 0.1
    torch.testing.assert_close(ours(a, p, n), ref(a, p, n))
    # calling it is calling torch's module
    torch.testing.assert_close(ours.distance_function(a, p), ref.distance_function(a, p))


def test_module_default_distance_with_hooks_or_keepdim_is_called():
    a, p, n = (_randn(5, 4, seed=s) for s in range(3))
    m = torchloss.TripletMarginWithDistanceLoss()
    seen = []
    handle = m.distance_function.register_forward_hook(lambda mod, args, out: seen.append(out.shape))
    out = m(a, p, n)
    handle.remove()
    assert seen == [(5,), (5,)]
    torch.testing.assert_close(out, torch.nn.TripletMarginWithDistanceLoss()(a, p, n))
    m.distance_function.keepdim = True  # (N, 1) distances: the module is called as given
    ref = torch.nn.TripletMarginWithDistanceLoss()
    ref.distance_function.keepdim = True
    torch.testing.assert_close(m(a, p, n), ref(a, p, n))
    assert m(a.requires_grad_(), p, n).grad_fn._forward_cls is TripletDistanceHingeFunction


def test_module_constructors_validate_margin_as_torch():
    for cls in ("TripletMarginLoss", "TripletMarginWithDistanceLoss"):
        for margin in (0, -1.0):
            with pytest.raises(ValueError, match="margin") as ours:
                getattr(torchloss, cls)(margin=margin)
            with pytest.raises(ValueError) as theirs:
                getattr(torch.nn, cls)(margin=margin)
            assert str(ours.value) == str(theirs.value)
    with pytest.raises(TypeError):
        torchloss.TripletMarginWithDistanceLoss(None)  # keyword-only, as torch
    assert torchloss.TripletMarginLoss.__constants__ == torch.nn.TripletMarginLoss.__constants__
    assert torchloss.TripletMarginWithDistanceLoss.__constants__ == torch.nn.TripletMarginWithDistanceLoss.__constants__


# --------------------------------------------------------------------------------------------
# Forward-mode through the backward, vmap, compile


def test_forward_ad_dual_tensors_through_backward():
    # a backward run on forward-mode dual tensors (grad mode off) recomputes the distances, so
    # the tangent of the gradient (a Hessian-vector product) is exact
    a, p, n = (_randn(4, 5, seed=s) for s in range(3))
    t = _randn(4, 5, seed=9)
    results = []
    for fn in (F.triplet_margin_loss, TF.triplet_margin_loss):
        leaf = a.clone().requires_grad_()
        with fwAD.dual_level():
            dual = fwAD.make_dual(leaf, t)
            out = fn(dual, p, n, swap=True, margin=2.0, reduction="sum")
            (g,) = torch.autograd.grad(out, leaf)
            results.append(fwAD.unpack_dual(g).tangent)
    torch.testing.assert_close(results[0], results[1])


def test_per_sample_gradients_with_vmap():
    a, p, n = (_randn(6, 3, 4, seed=s) for s in range(3))
    for kwargs in ({}, {"p": 1, "swap": True}):

        def loss(fn, kwargs=kwargs):
            return lambda u, v, w: fn(u, v, w, margin=2.0, **kwargs)

        ours = torch.func.vmap(torch.func.grad(loss(F.triplet_margin_loss), argnums=(0, 1, 2)))(a, p, n)
        ref = torch.func.vmap(torch.func.grad(loss(TF.triplet_margin_loss), argnums=(0, 1, 2)))(a, p, n)
        for x, y in zip(ours, ref):
            torch.testing.assert_close(x, y)


COMPILED = [
    ("triplet_margin_loss", {}),
    ("triplet_margin_loss", {"p": 1, "swap": True, "margin": 0.5}),
    ("triplet_margin_loss", {"p": 3, "eps": 1e-3, "reduction": "none"}),
    ("triplet_margin_with_distance_loss", {}),
    ("triplet_margin_with_distance_loss", {"swap": True, "reduction": "sum"}),
    ("triplet_margin_with_distance_loss", {"distance_function": _cosine, "swap": True, "margin": 0.3}),
]


@pytest.mark.cpu_only
@pytest.mark.parametrize("name,kwargs", COMPILED)
def test_compiles_to_one_graph(name, kwargs):
    torch._dynamo.reset()
    compiled = torch.compile(getattr(F, name), fullgraph=True, backend="aot_eager")
    inputs = tuple(_randn(6, 5, seed=s, dtype=torch.float32) for s in range(3))
    kwargs = dict(kwargs)
    reduction = kwargs.pop("reduction", "mean")
    out, g = _grads(compiled, inputs, reduction, **kwargs)
    ref, g_ref = _grads(getattr(TF, name), inputs, reduction, **kwargs)
    torch.testing.assert_close(out, ref)
    for x, y in zip(g, g_ref):
        torch.testing.assert_close(x, y)


@pytest.mark.cpu_only
def test_modules_compile_to_one_graph():
    inputs = tuple(_randn(6, 5, seed=s, dtype=torch.float32) for s in range(3))
    for ours, ref in (
        (torchloss.TripletMarginLoss(p=1, swap=True), torch.nn.TripletMarginLoss(p=1, swap=True)),
        (torchloss.TripletMarginWithDistanceLoss(swap=True), torch.nn.TripletMarginWithDistanceLoss(swap=True)),
    ):
        torch._dynamo.reset()
        compiled = torch.compile(ours, fullgraph=True, backend="aot_eager")
        leaves = [t.clone().requires_grad_() for t in inputs]
        out = compiled(*leaves)
        g = torch.autograd.grad(out, leaves)
        leaves_ref = [t.clone().requires_grad_() for t in inputs]
        expected = ref(*leaves_ref)
        g_ref = torch.autograd.grad(expected, leaves_ref)
        torch.testing.assert_close(out, expected)
        for x, y in zip(g, g_ref):
            torch.testing.assert_close(x, y)


@pytest.mark.parametrize("kwargs", [{}, {"p": 1}, {"p": 3}, {"p": 1.5, "swap": True}, {"swap": True}, {"p": math.inf}])
def test_first_order_weights_agree_with_the_differentiated_backward(kwargs):
    # a first-order backward uses the per-row weights the forward prepared; a differentiated one
    # (create_graph=True) recomputes distances and hinge from the saved difference vectors
    a, p, n = (_randn(6, 5, seed=s) for s in range(3))
    n[0] = a[0]  # a row with d(a, n) = eps * 5 ** (1 / q)
    for reduction in REDUCTIONS:
        grads = []
        for create_graph in (False, True):
            leaves = [t.clone().requires_grad_() for t in (a, p, n)]
            out = F.triplet_margin_loss(*leaves, margin=1.5, reduction=reduction, **kwargs)
            upstream = torch.rand(out.shape, generator=_gen(5), dtype=D) + 0.5
            grads.append(torch.autograd.grad(out, leaves, upstream, create_graph=create_graph))
        for x, y in zip(*grads):
            torch.testing.assert_close(x, y.detach(), rtol=1e-13, atol=1e-15)


# shapes where the distance dimension broadcasts within some distances only (issue 17): one
# difference vector has one component, another D, so an input's gradient terms must each be
# summed over that dimension before they are added
FEATURE_BROADCAST = [
    ((1, 1), (1, 1), (1, 2)),
    ((4, 1), (4, 1), (4, 3)),
    ((4, 3), (4, 1), (4, 1)),
    ((4, 1), (4, 3), (4, 1)),
    ((4, 1), (1, 3), (4, 1)),
    ((1,), (1,), (3,)),
]


@pytest.mark.cpu_only
@pytest.mark.parametrize("swap", [False, True])
@pytest.mark.parametrize("q", [2.0, 1.0, 3.0, 1.5, math.inf])
@pytest.mark.parametrize("shapes", FEATURE_BROADCAST, ids=str)
def test_feature_dimension_broadcast_gradients_match_torch(shapes, q, swap):
    inputs = [_randn(*s, seed=i).requires_grad_() for i, s in enumerate(shapes)]
    for reduction in REDUCTIONS:
        kw = {"p": q, "swap": swap, "reduction": reduction}
        ref = TF.triplet_margin_loss(*inputs, **kw)
        calls = [F.triplet_margin_loss(*inputs, **kw)]
        if q == 2.0:  # the fused default distance of the with-distance loss
            calls.append(F.triplet_margin_with_distance_loss(*inputs, swap=swap, reduction=reduction))
        g = _randn(*ref.shape, seed=7)
        expect = torch.autograd.grad(ref, inputs, g, create_graph=True)
        hvp = torch.autograd.grad(sum((e * e).sum() for e in expect), inputs)
        tangents = [_randn(*s, seed=10 + i) for i, s in enumerate(shapes)]
        _, jvp_ref = torch.func.jvp(lambda *x, kw=kw: TF.triplet_margin_loss(*x, **kw), tuple(t.detach() for t in inputs), tuple(tangents))
        for out in calls:
            torch.testing.assert_close(out, ref)
            got = torch.autograd.grad(out, inputs, g, create_graph=True)  # eager first order below
            for a, b in zip(got, expect):
                torch.testing.assert_close(a, b)
            got_hvp = torch.autograd.grad(sum((e * e).sum() for e in got), inputs)
            for a, b in zip(got_hvp, hvp):
                torch.testing.assert_close(a, b)
        first = torch.autograd.grad(F.triplet_margin_loss(*inputs, **kw), inputs, g)
        for a, b in zip(first, expect):
            torch.testing.assert_close(a, b)
        _, jvp = torch.func.jvp(lambda *x, kw=kw: F.triplet_margin_loss(*x, **kw), tuple(t.detach() for t in inputs), tuple(tangents))
        torch.testing.assert_close(jvp, jvp_ref)


def test_feature_broadcast_example_of_issue_17():
    a = torch.tensor([[1.0]], requires_grad=True)
    p, n = torch.tensor([[0.0]]), torch.tensor([[0.5, -0.5]])
    (expect,) = torch.autograd.grad(TF.triplet_margin_loss(a, p, n), a)
    (got,) = torch.autograd.grad(F.triplet_margin_loss(a, p, n), a)
    torch.testing.assert_close(got, expect)  # was off by exactly 1 (the positive term counted twice)
