"""Multi-class margin losses: behaviour the generic case table cannot express.

Empty batches (torch returns uninitialised memory), the strict subgradient at the kinks, double
backward and forward AD where torch has neither, the -1 terminator and duplicate labels of
MultiLabelMargin, overflow-free MultiLabelSoftMargin, the non-differentiable MultiMargin weight,
half precision (which torch's CPU kernels refuse), the target range checks under
torch.func transforms and torch.compile, MultiLabelMargin's two counting formulations (pairwise
and sorted, wide rows and eager chunks, its float32 accuracy and memory) and MultiMargin's eager
in-place path.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from torchloss import _native as native
import torch.nn.functional as TF

import torchloss
import torchloss.functional as F
from torchloss._autograd import margin as _margin
from torchloss.testing import saved_bytes

# every test on each device of the device fixture (tests/conftest.py: on_device, cpu_only)
pytestmark = pytest.mark.usefixtures("on_device")

D = torch.float64
HINGES = ["multi_margin_loss", "multilabel_margin_loss"]


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _lattice(*shape, seed=0, dtype=D):
    # scores whose pairwise differences stay >= 0.06 away from the kinks at margin 1 (see
    # torchloss/testing/cases/margin.py)
    gen = _gen(seed)
    a = torch.randint(-6, 7, shape, generator=gen).to(D)
    u = (torch.rand(shape, generator=gen, dtype=D) - 0.5) * 0.04
    return (0.3 * a + u).to(dtype)


def _ml_target(n=3):
    rows = [[2, 0, -1, 3, 1], [-1, 4, 4, 0, 2], [1, 1, 3, -1, -1], [4, 3, 2, 1, 0]]
    return torch.tensor(rows[:n])


def _call(name, x, reduction="mean", **kwargs):
    if name == "multi_margin_loss":
        y = torch.arange(x.shape[0]) % x.shape[-1] if x.dim() == 2 else torch.tensor(0)
    else:
        y = _ml_target(x.shape[0]) if x.dim() == 2 else torch.tensor([1, -1, 0, 0, 0])
    return getattr(F, name)(x, y, reduction=reduction, **kwargs)


# --------------------------------------------------------------------------------------------
# Empty batch


@pytest.mark.parametrize("dtype", [torch.float32, D, torch.float16])
@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("multi_margin_loss", {}),
        ("multi_margin_loss", {"p": 2, "margin": 0.5}),
        ("multi_margin_loss", {"weight": "w"}),
        ("multilabel_margin_loss", {}),
    ],
)
def test_empty_batch_is_nan_for_mean_and_zero_for_sum(name, kwargs, dtype):
    # torch returns uninitialised memory for 'mean' and 'sum' here; torchloss follows the rule of
    # every other loss: the mean of nothing is 0/0 = NaN, the sum 0.
    kwargs = {k: (torch.rand(4, dtype=dtype) if v == "w" else v) for k, v in kwargs.items()}
    x = torch.zeros(0, 4, dtype=dtype, requires_grad=True)
    y = torch.zeros(0, dtype=torch.int64) if name == "multi_margin_loss" else torch.zeros(0, 4, dtype=torch.int64)
    fn = getattr(F, name)
    none = fn(x, y, reduction="none", **kwargs)
    assert none.shape == (0,) and none.dtype == dtype
    mean, total = fn(x, y, reduction="mean", **kwargs), fn(x, y, reduction="sum", **kwargs)
    assert mean.shape == total.shape == () and mean.dtype == total.dtype == dtype
    assert torch.isnan(mean) and total.item() == 0.0
    for out in (none.sum(), mean, total):
        (g,) = torch.autograd.grad(out, x, create_graph=True)
        assert g.shape == (0, 4) and g.dtype == dtype
    # torch agrees on 'none'
    torch.testing.assert_close(none, getattr(TF, name)(x, y, reduction="none", **kwargs))


# --------------------------------------------------------------------------------------------
# Subgradient at the kink


@pytest.mark.parametrize("dtype", [torch.float32, D])
@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("margin", [1.0, 0.3, 2])
def test_multi_margin_subgradient_at_kink_matches_torch(margin, p, dtype):
    # x[1] makes z = (margin - x[y]) + x[1] exactly 0 in the dtype (torch's order of operations):
    # a strict inequality gives it no gradient. x[2] is inactive, x[3] active, x[4] another kink.
    xy = torch.tensor(0.7, dtype=dtype)
    kink = -(margin - xy)
    x = torch.stack([xy, kink, kink - 0.25, kink + 0.5, kink]).reshape(1, 5)
    y = torch.tensor([0])
    assert ((margin - x[0, 0]) + x[0, 1]).item() == 0.0
    w = torch.tensor([1.5, 1.0, 1.0, 1.0, 1.0], dtype=dtype)
    for reduction in ("none", "mean", "sum"):
        ours_in, ref_in = x.clone().requires_grad_(), x.clone().requires_grad_()
        ours = F.multi_margin_loss(ours_in, y, p=p, margin=margin, weight=w, reduction=reduction)
        ref = TF.multi_margin_loss(ref_in, y, p=p, margin=margin, weight=w, reduction=reduction)
        torch.testing.assert_close(ours, ref, rtol=1e-14, atol=0)
        (g,) = torch.autograd.grad(ours.sum(), ours_in)
        (g_ref,) = torch.autograd.grad(ref.sum(), ref_in)
        # the same active set (exact zeros), the same values up to the order of the products
        assert torch.equal(g == 0, g_ref == 0)
        torch.testing.assert_close(g, g_ref, rtol=1e-14, atol=0)
        assert g[0, 1] == g[0, 4] == g[0, 2] == 0.0 and g[0, 3] > 0
        # forward mode sees the same subgradient
        t = torch.randn(1, 5, generator=_gen(), dtype=dtype)
        _, jvp = torch.func.jvp(
            lambda v: F.multi_margin_loss(v, y, p=p, margin=margin, weight=w, reduction="sum"), (x,), (t,)
        )
        torch.testing.assert_close(jvp, (g * t).sum())


@pytest.mark.parametrize("dtype", [torch.float32, D])
def test_multilabel_margin_subgradient_at_kink_matches_torch(dtype):
    # labels {0, 3}; z = 1 - x[j] + x[i] is exactly 0 for (j=0, i=1) and (j=3, i=2), and the
    # only other active pair is (j=0, i=2)
    x = torch.tensor([[2.0, 1.0, 1.25, 2.25, -1.0], [0.5, 0.5, -0.5, 3.0, 1.0]], dtype=dtype)
    y = torch.tensor([[0, 3, -1, 2, 1], [3, -1, 0, 0, 0]])
    for reduction in ("none", "mean", "sum"):
        ours_in, ref_in = x.clone().requires_grad_(), x.clone().requires_grad_()
        ours = F.multilabel_margin_loss(ours_in, y, reduction=reduction)
        ref = TF.multilabel_margin_loss(ref_in, y, reduction=reduction)
        assert torch.equal(ours, ref)
        upstream = torch.rand(ref.shape, generator=_gen(), dtype=dtype) + 0.5
        (g,) = torch.autograd.grad(ours, ours_in, upstream)
        (g_ref,) = torch.autograd.grad(ref, ref_in, upstream)
        assert torch.equal(g, g_ref)
    leaf = x.clone().requires_grad_()
    (g,) = torch.autograd.grad(F.multilabel_margin_loss(leaf, y, reduction="sum"), leaf)
    # row 0: the pair (0, 2) alone is active: +1/C for class 2, -1/C for label 0; the kinks
    # (0, 1) and (3, 2) contribute nothing, so class 1 and label 3 get 0
    assert g[0].tolist() == torch.tensor([-0.2, 0.0, 0.2, 0.0, 0.0], dtype=dtype).tolist()


# --------------------------------------------------------------------------------------------
# Double backward and forward AD (torch implements neither)


HINGE_CALLS = [
    ("multi_margin_loss", {"p": 1}),
    ("multi_margin_loss", {"p": 2}),
    ("multi_margin_loss", {"p": 2, "margin": 0.45, "weight": "w"}),
    ("multilabel_margin_loss", {}),
]


def _hinge_f(name, kwargs, reduction):
    kwargs = {k: (torch.rand(5, generator=_gen(3), dtype=D) + 0.2 if v == "w" else v) for k, v in kwargs.items()}
    return lambda x: _call(name, x, reduction, **kwargs)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("name,kwargs", HINGE_CALLS)
def test_hinge_double_backward_and_forward_ad_vs_finite_differences(name, kwargs, reduction):
    f = _hinge_f(name, kwargs, reduction)
    x = _lattice(4, 5).requires_grad_()
    assert torch.autograd.gradcheck(f, (x,))
    assert torch.autograd.gradgradcheck(f, (x,))
    assert torch.autograd.gradcheck(
        f, (x,), check_forward_ad=True, check_backward_ad=False, check_undefined_grad=False, check_batched_grad=False
    )
    # unbatched too
    assert torch.autograd.gradgradcheck(f, (_lattice(5, seed=1).requires_grad_(),))


@pytest.mark.parametrize("name", HINGES)
def test_torch_has_no_double_backward_or_forward_ad_here(name):
    x = _lattice(4, 5).requires_grad_()
    y = torch.tensor([0, 1, 2, 3]) if name == "multi_margin_loss" else _ml_target(4)
    ref = getattr(TF, name)
    (g,) = torch.autograd.grad(ref(x, y, reduction="sum"), x, create_graph=True)
    with pytest.raises(RuntimeError, match="is not implemented"):
        torch.autograd.grad(g.sum(), x)
    with pytest.raises(NotImplementedError, match="forward AD"):
        torch.func.jvp(lambda v: ref(v, y), (x.detach(),), (torch.ones_like(x),))
    # torchloss does both
    ours = getattr(F, name)
    (g,) = torch.autograd.grad(ours(x, y, reduction="sum"), x, create_graph=True)
    torch.autograd.grad(g.sum(), x)
    torch.func.jvp(lambda v: ours(v, y), (x.detach(),), (torch.ones_like(x),))


def test_multi_margin_p2_hessian_is_exact():
    # ℓ = Σ_{i≠y} (w_y/C) z_i² [z_i > 0]: the Hessian is Σ_active (2 w_y/C)(e_i - e_y)(e_i - e_y)ᵀ
    x = _lattice(6, seed=4)
    y, margin = int(x.argmin()), 0.45  # the lowest score: some terms are active
    w = torch.rand(6, generator=_gen(), dtype=D) + 0.2

    def f(v):
        return F.multi_margin_loss(v, torch.tensor(y), p=2, margin=margin, weight=w)

    expected = torch.zeros(6, 6, dtype=D)
    for i in range(6):
        if i != y and margin - x[y] + x[i] > 0:
            e = torch.zeros(6, dtype=D)
            e[i], e[y] = 1.0, -1.0
            expected += 2 * w[y] / 6 * torch.outer(e, e)
    assert expected.abs().sum() > 0
    torch.testing.assert_close(torch.func.hessian(f)(x), expected)  # forward-over-reverse
    torch.testing.assert_close(torch.autograd.functional.hessian(f, x), expected)  # reverse-over-reverse


@pytest.mark.parametrize("name,kwargs", [("multi_margin_loss", {"p": 1}), ("multilabel_margin_loss", {})])
def test_piecewise_linear_hessian_is_zero_not_an_error(name, kwargs):
    f = _hinge_f(name, kwargs, "sum")
    x = _lattice(3, 5)
    assert torch.count_nonzero(torch.func.hessian(f)(x)) == 0
    leaf = x.clone().requires_grad_()
    (g,) = torch.autograd.grad(f(leaf), leaf, create_graph=True)
    (h,) = torch.autograd.grad(g.sum(), leaf)  # connected to x, with value 0
    assert torch.count_nonzero(h) == 0


# --------------------------------------------------------------------------------------------
# MultiLabelMargin targets


def _reference_multilabel(x, target):
    """The definition, by loops: ℓ = Σ_{k before -1} Σ_{i not a label} max(0, 1 - x[t_k] + x[i]) / C."""
    out = []
    for row, t in zip(x.tolist(), target.tolist()):
        labels = []
        for v in t:
            if v < 0:
                break
            labels.append(v)
        total = sum(max(0.0, 1 - row[j] + row[i]) for j in labels for i in range(len(row)) if i not in labels)
        out.append(total / len(row))
    return torch.tensor(out, dtype=x.dtype)


def test_multilabel_terminator_semantics():
    x = _lattice(4, 6, seed=5)
    base = torch.tensor([[1, 4, -1, 0, 0, 0], [-1, 0, 0, 0, 0, 0], [5, 3, 1, 0, 2, -1], [0, 1, 2, 3, 4, 5]])
    ours = F.multilabel_margin_loss(x, base, reduction="none")
    torch.testing.assert_close(ours, _reference_multilabel(x, base))
    torch.testing.assert_close(ours, TF.multilabel_margin_loss(x, base, reduction="none"))
    # the entries after the terminator are ignored (any values in [-1, C-1]) ...
    changed = base.clone()
    changed[0, 3:] = torch.tensor([5, -1, 3])
    changed[1, 1:] = torch.tensor([5, 4, -1, 2, 1])
    leaves = [x.clone().requires_grad_() for _ in range(2)]
    outs = [F.multilabel_margin_loss(v, t, reduction="none") for v, t in zip(leaves, (base, changed))]
    assert torch.equal(outs[0], outs[1])
    grads = [torch.autograd.grad(o.sum(), v)[0] for o, v in zip(outs, leaves)]
    assert torch.equal(grads[0], grads[1])
    # ... yet still range-checked, as in torch
    bad = base.clone()
    bad[0, 4] = 6
    for fn in (F.multilabel_margin_loss, TF.multilabel_margin_loss):
        with pytest.raises(RuntimeError, match="out of range"):
            fn(x, bad)
    # a row without labels, and a row whose labels cover every class, cost nothing
    assert ours[1] == 0.0 and ours[3] == 0.0


def test_multilabel_duplicate_labels_counted_twice():
    x = _lattice(1, 5, seed=6)
    once = torch.tensor([[3, -1, 0, 0, 0]])
    twice = torch.tensor([[3, 3, -1, 0, 0]])
    leaves = [x.clone().requires_grad_() for _ in range(2)]
    l1, l2 = (F.multilabel_margin_loss(v, t) for v, t in zip(leaves, (once, twice)))
    assert l1 > 0
    torch.testing.assert_close(l2, 2 * l1)
    torch.testing.assert_close(l2, TF.multilabel_margin_loss(x, twice))
    g1, g2 = (torch.autograd.grad(loss, v)[0] for loss, v in zip((l1, l2), leaves))
    torch.testing.assert_close(g2, 2 * g1)


# --------------------------------------------------------------------------------------------
# MultiLabelSoftMargin


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, D])
def test_multilabel_soft_margin_large_logits_finite_and_exact(dtype):
    x = torch.tensor([[1e4, -1e4, 1e4, -1e4]], dtype=dtype, requires_grad=True)
    y = torch.tensor([[1.0, 0.0, 0.0, 1.0]], dtype=dtype, requires_grad=True)
    w = torch.tensor([1.0, 2.0, 0.5, 1.0], dtype=dtype, requires_grad=True)
    v = x[0, 0].item()  # 1e4 as the dtype holds it (bfloat16: 9984)
    loss = F.multilabel_soft_margin_loss(x, y, weight=w, reduction="none")
    # e = [0, 0, 0.5·v, v], divided by C = 4
    assert loss.tolist() == [1.5 * v / 4]
    gx, gy, gw = torch.autograd.grad(loss.sum(), (x, y, w))
    # ∂/∂x = w(σ(x) - y)/C, ∂/∂y = -w x/C, ∂/∂w = e/C
    assert gx.tolist() == [[0.0, 0.0, 0.5 / 4, -1 / 4]]
    assert gy.tolist() == [[-v / 4, 2 * v / 4, -0.5 * v / 4, v / 4]]
    assert gw.tolist() == [0.0, 0.0, v / 4, v / 4]
    if dtype in (torch.float32, D):
        torch.testing.assert_close(loss, TF.multilabel_soft_margin_loss(x, y, weight=w, reduction="none"))


def test_multilabel_soft_margin_no_cancellation():
    # y = 1, x = 40: the loss sp(-40) = 4.2e-18 and gradient -σ(-40) survive (a form like
    # sp(x) - y·x or σ(x) - y would give 0)
    x = torch.tensor([[40.0, -40.0]], dtype=D, requires_grad=True)
    y = torch.tensor([[1.0, 0.0]], dtype=D)
    loss = F.multilabel_soft_margin_loss(x, y, reduction="sum")
    tiny = torch.log1p(torch.exp(torch.tensor(-40.0, dtype=D)))
    torch.testing.assert_close(loss, tiny, rtol=1e-14, atol=0)
    (g,) = torch.autograd.grad(loss, x)
    s = torch.sigmoid(torch.tensor(-40.0, dtype=D))
    torch.testing.assert_close(g, torch.stack([-s, s]).reshape(1, 2) / 2, rtol=1e-14, atol=0)


def test_multilabel_soft_margin_complex_refused_where_torch_returns_complex():
    x, y, w = torch.randn(3, 4, dtype=D), torch.rand(3, 4, dtype=D), torch.rand(4, dtype=D)
    assert TF.multilabel_soft_margin_loss(x, y.to(torch.complex128)).is_complex()
    assert TF.multilabel_soft_margin_loss(x, y, weight=w.to(torch.complex128)).is_complex()
    with pytest.raises(NotImplementedError, match="target"):
        F.multilabel_soft_margin_loss(x, y.to(torch.complex128))
    with pytest.raises(NotImplementedError, match="weight"):
        F.multilabel_soft_margin_loss(x, y, weight=w.to(torch.complex128))


def test_multilabel_soft_margin_reduction_handling_like_torch():
    x, y = torch.randn(3, 4, dtype=D), torch.rand(3, 4, dtype=D)
    for fn in (F.multilabel_soft_margin_loss, TF.multilabel_soft_margin_loss):
        # 'elementwise_mean' is rejected, silently (no deprecation warning first)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with pytest.raises(ValueError, match="elementwise_mean is not valid"):
                fn(x, y, reduction="elementwise_mean")
        # the legacy arguments override a bad reduction
        with pytest.warns(UserWarning, match="reduction='sum'"):
            out = fn(x, y, size_average=False, reduction="bad")
        torch.testing.assert_close(out, TF.multilabel_soft_margin_loss(x, y, reduction="sum"))


def test_multilabel_soft_margin_weight_is_differentiable_like_torch():
    gen = _gen(7)
    x, y = torch.randn(3, 4, generator=gen, dtype=D), torch.rand(3, 4, generator=gen, dtype=D)
    w = (torch.rand(3, 1, generator=gen, dtype=D) + 0.2).requires_grad_()
    wt = w.detach().clone().requires_grad_()
    (g,) = torch.autograd.grad(F.multilabel_soft_margin_loss(x, y, weight=w), w)
    (g_ref,) = torch.autograd.grad(TF.multilabel_soft_margin_loss(x, y, weight=wt), wt)
    torch.testing.assert_close(g, g_ref)


# --------------------------------------------------------------------------------------------
# MultiMargin weight


def test_multi_margin_weight_not_differentiable():
    x, y = _lattice(3, 4), torch.tensor([0, 3, 1])
    w = (torch.rand(4, dtype=D) + 0.5).requires_grad_()
    message = (
        "The function 'multi_margin_loss' is not differentiable with respect to argument 'weight'. "
        "This input cannot have requires_grad True."
    )
    for fn in (F.multi_margin_loss, TF.multi_margin_loss):
        with pytest.raises(RuntimeError) as info:
            fn(x, y, weight=w)
        assert str(info.value) == message
    # accepted under no_grad, as torch
    with torch.no_grad():
        torch.testing.assert_close(F.multi_margin_loss(x, y, weight=w), TF.multi_margin_loss(x, y, weight=w))
    # forward mode: a weight tangent is dropped
    _, t = torch.func.jvp(lambda v: F.multi_margin_loss(x, y, weight=v), (w.detach(),), (torch.ones(4, dtype=D),))
    assert t.item() == 0.0


def test_multi_margin_module_validation_and_buffers():
    w = torch.rand(4)
    for cls in (torchloss.MultiMarginLoss, torch.nn.MultiMarginLoss):
        with pytest.raises(ValueError, match="only p == 1 and p == 2 supported"):
            cls(p=3)
        with pytest.raises(ValueError, match="expected weight to be None or 1D tensor, got 2D instead"):
            cls(weight=w[None])
        with pytest.raises(ValueError, match="got 0D instead"):
            cls(weight=w[0])
    ours, ref = torchloss.MultiMarginLoss(p=2, margin=0.5, weight=w), torch.nn.MultiMarginLoss(p=2, margin=0.5, weight=w)
    assert repr(ours) == repr(ref)
    assert list(ours.state_dict()) == list(ref.state_dict()) == ["weight"]
    assert torchloss.MultiMarginLoss.__constants__ == torch.nn.MultiMarginLoss.__constants__
    assert ours.to(D).weight.dtype == D
    x, y = _lattice(3, 4), torch.tensor([0, 3, 1])
    torch.testing.assert_close(ours(x, y), ref.to(D)(x, y))
    for name in ("MultiLabelMarginLoss", "MultiLabelSoftMarginLoss"):
        assert getattr(torchloss, name).__constants__ == getattr(torch.nn, name).__constants__


# --------------------------------------------------------------------------------------------
# Half precision


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name,kwargs", HINGE_CALLS)
def test_hinge_half_precision_computed_in_float32(name, kwargs, dtype):
    # torch's CPU kernels refuse half precision (its CUDA kernels support it); torchloss computes
    # in float32 on every device and rounds once.
    x = _lattice(4, 5, dtype=dtype)
    if kwargs.get("weight") == "w":
        kwargs = dict(kwargs, weight=(torch.rand(5, generator=_gen(3), dtype=D) + 0.2).to(dtype))
    with pytest.raises(NotImplementedError, match="not implemented for"):
        getattr(TF, name)(x, *_call_args(name, x), **kwargs)
    up = {k: (v.float() if isinstance(v, torch.Tensor) else v) for k, v in kwargs.items()}
    for reduction in ("none", "mean", "sum"):
        leaf = x.clone().requires_grad_()
        out = _call(name, leaf, reduction, **kwargs)
        assert out.dtype == dtype
        leaf32 = x.float().requires_grad_()
        exact = _call(name, leaf32, reduction, **up)
        assert torch.equal(out, exact.to(dtype))
        (g,) = torch.autograd.grad(out.sum(), leaf)
        (g32,) = torch.autograd.grad(exact.sum(), leaf32)
        assert g.dtype == dtype and torch.equal(g, g32.to(dtype))


def _call_args(name, x):
    if name == "multi_margin_loss":
        return (torch.arange(x.shape[0]) % x.shape[-1],)
    return (_ml_target(x.shape[0]),)


# --------------------------------------------------------------------------------------------
# Range checks under torch.func transforms and torch.compile


def _mm_sum(x, y):
    return F.multi_margin_loss(x, y, reduction="sum")


def _ml_sum(x, y):
    return F.multilabel_margin_loss(x, y, reduction="sum")


@pytest.mark.parametrize(
    "f,good,bad,match",
    [
        (_mm_sum, torch.tensor([[0, 3], [1, 2]]), torch.tensor([[0, 3], [5, 2]]), "target out of range"),
        (_ml_sum, _ml_target(2)[None].expand(2, 2, 5).clone(), None, "out of range"),
    ],
)
def test_target_range_check_under_func_transforms(f, good, bad, match):
    x = _lattice(2, 2, 5)
    if bad is None:
        bad = good.clone()
        bad[1, 0, 4] = 5  # after the terminator of the first row of the second batch member
    # in range: vmap over input and target, grad, jvp, hessian run the check without syncing
    out = torch.func.vmap(f)(x, good)
    torch.testing.assert_close(out, torch.stack([f(x[i], good[i]) for i in range(2)]))
    torch.func.vmap(torch.func.grad(f))(x, good)
    torch.func.jvp(lambda v: f(v, good[0]), (x[0],), (torch.ones_like(x[0]),))
    torch.func.hessian(lambda v: f(v, good[0]))(x[0])
    for run in (
        lambda: f(x[1], bad[1]),
        lambda: torch.func.vmap(f)(x, bad),
        lambda: torch.func.vmap(torch.func.grad(f))(x, bad),
        lambda: torch.func.jvp(lambda v: f(v, bad[1]), (x[1],), (x[1],)),
    ):
        with pytest.raises(RuntimeError, match=match):
            run()


@pytest.mark.cpu_only
def test_target_range_check_under_compile():
    torch._dynamo.reset()
    x = _lattice(3, 4, dtype=torch.float32)
    mm = torch.compile(F.multi_margin_loss, fullgraph=True, backend="aot_eager")
    y = torch.tensor([0, 3, 1])
    torch.testing.assert_close(mm(x, y), TF.multi_margin_loss(x, y))
    with pytest.raises(RuntimeError, match="target out of range"):
        mm(x, torch.tensor([0, 4, 1]))
    ml = torch.compile(F.multilabel_margin_loss, fullgraph=True, backend="aot_eager")
    t = torch.tensor([[0, 1, -1, 2], [3, -1, 1, 2], [-1, 0, 0, 0]])
    torch.testing.assert_close(ml(x, t), TF.multilabel_margin_loss(x, t))
    bad = t.clone()
    bad[2, 3] = -2
    with pytest.raises(RuntimeError, match="out of range"):
        ml(x, bad)


# --------------------------------------------------------------------------------------------
# MultiLabelMargin: the two counting formulations, the eager chunks, accuracy, memory
#
# Narrow rows compare all pairs, wider rows sort (_ml_pairwise_rows). The generic case table only
# has narrow rows, so these tests force each formulation on every shape (monkeypatching the
# thresholds), and cover the sort's eager int64-key variant (float32 scores), its general
# variant (float64, torch.func, torch.compile) and the eager chunking.

# (pairwise threshold, label-loop limit per bit of C): "labels" loops over the label positions
# wherever the functional can read the label count (eager CPU calls), and sorts elsewhere
_PATHS = {"pairwise": (10**9, 0), "sorted": (0, 0), "labels": (0, 10**9)}


def _force(monkeypatch, path):
    pairwise, per_bit = _PATHS[path]
    monkeypatch.setattr(_margin, "_ML_PAIRWISE_ALWAYS_C", pairwise)
    monkeypatch.setattr(_margin, "_ML_PAIRWISE_MAX_C", pairwise)
    monkeypatch.setattr(_margin, "_ML_LOOP_PER_BIT", per_bit)


@pytest.fixture(params=sorted(_PATHS))
def ml_path(request, monkeypatch):
    _force(monkeypatch, request.param)
    return request.param


def _ml_rows(gen, n, c, duplicates=True):
    """``n`` target rows: a random number of labels (with repeats if ``duplicates``), a -1 when
    fewer than ``c``, then random entries in [-1, c-1]."""
    rows = []
    for _ in range(n):
        k = int(torch.randint(0, c + 1, (), generator=gen))
        if duplicates:
            labels = torch.randint(0, c, (k,), generator=gen).tolist()
        else:
            labels = torch.randperm(c, generator=gen)[:k].tolist()
        tail = torch.randint(-1, c, (c,), generator=gen).tolist()
        rows.append((labels + [-1] + tail)[:c])
    return torch.tensor(rows, dtype=torch.int64).reshape(n, c)


def _ml_scores(gen, n, c, dtype, kind):
    if kind == "lattice":  # multiples of 1/4: many scores exactly at a threshold (kinks, ties)
        return (torch.randint(-6, 7, (n, c), generator=gen) * 0.25).to(dtype)
    x = torch.randn(n, c, generator=gen, dtype=torch.float64).to(dtype)
    if kind == "special":  # signed zeros, exact kinks, NaN and infinities
        u = torch.rand(n, c, generator=gen)
        x[u < 0.15] = -0.0
        x[(u >= 0.15) & (u < 0.3)] = 1.0
        x[(u >= 0.3) & (u < 0.35)] = float("nan")
        x[(u >= 0.35) & (u < 0.4)] = float("inf")
        x[(u >= 0.4) & (u < 0.45)] = -float("inf")
    return x


def _torch_ml(x, t, reduction):
    leaf = x.detach().clone().requires_grad_()
    out = TF.multilabel_margin_loss(leaf, t, reduction=reduction)
    (g,) = torch.autograd.grad(out.sum(), leaf)
    return out.detach(), g


# N x C: one row, narrow and wide rows, and batches large enough to be processed in chunks
ML_SHAPES = [(1, 1), (4, 2), (6, 7), (5, 40), (3, 200), (700, 30), (90, 300)]


@pytest.mark.parametrize("kind", ["lattice", "normal", "special"])
@pytest.mark.parametrize("dtype", [torch.float32, D], ids=str)
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_multilabel_formulations_match_torch(ml_path, reduction, dtype, kind):
    gen = _gen(11)
    for n, c in ML_SHAPES:
        x = _ml_scores(gen, n, c, dtype, kind)
        t = _ml_rows(gen, n, c, duplicates=(n + c) % 2 == 0)
        leaf = x.clone().requires_grad_()
        out = F.multilabel_margin_loss(leaf, t, reduction=reduction)
        (g,) = torch.autograd.grad(out.sum(), leaf)
        ref, _ = _torch_ml(x, t, reduction)
        # torch's float32 gradient adds ±1/C (or 1/(NC)) once per active pair, in float32;
        # torchloss divides the exact count once: compare with torch in float64
        _, g_ref = _torch_ml(x.double(), t, reduction)
        assert out.dtype == dtype and g.dtype == dtype
        tol = {"rtol": 1e-6, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 1e-12, "atol": 1e-12}
        torch.testing.assert_close(out, ref, equal_nan=True, **tol)
        torch.testing.assert_close(g.double(), g_ref, **tol)
        # the same active pairs: zero exactly where torch's gradient is zero
        assert torch.equal(g == 0, g_ref == 0)


@pytest.mark.cpu_only
@pytest.mark.parametrize("dtype", [torch.float32, D], ids=str)
def test_multilabel_formulations_agree_under_transforms(ml_path, dtype):
    # torch.func (vmap, grad, jvp: the general sort, not the eager int64 keys, and no chunks)
    # gives the eager values; so does a double backward's first derivative
    gen = _gen(12)
    x = _ml_scores(gen, 3, 4, dtype, "lattice").repeat(1, 10)  # C = 40: ties across the row
    t = _ml_rows(gen, 3, 40)
    leaf = x.clone().requires_grad_()
    eager = F.multilabel_margin_loss(leaf, t, reduction="sum")
    (g_eager,) = torch.autograd.grad(eager, leaf)

    def f(v, y):
        return F.multilabel_margin_loss(v, y, reduction="sum")

    torch.testing.assert_close(torch.func.vmap(f)(x, t).sum(), eager)
    torch.testing.assert_close(torch.func.vmap(torch.func.grad(f))(x, t), g_eager, rtol=0, atol=0)
    tangent = torch.randn(x.shape, generator=gen, dtype=torch.float64).to(dtype)
    _, jvp = torch.func.jvp(lambda v: f(v, t), (x,), (tangent,))
    torch.testing.assert_close(jvp, (g_eager * tangent).sum())
    leaf = x.clone().requires_grad_()
    (g,) = torch.autograd.grad(f(leaf, t), leaf, create_graph=True)
    torch.testing.assert_close(g, g_eager, rtol=0, atol=0)
    (h,) = torch.autograd.grad((g * tangent).sum(), leaf)
    assert torch.count_nonzero(h) == 0


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_multilabel_sorted_double_backward_and_forward_ad(monkeypatch, reduction):
    _force(monkeypatch, "sorted")
    f = _hinge_f("multilabel_margin_loss", {}, reduction)
    for x in (_lattice(4, 5, seed=7), _lattice(5, seed=8)):
        x = x.requires_grad_()
        assert torch.autograd.gradcheck(f, (x,))
        assert torch.autograd.gradgradcheck(f, (x,))
        assert torch.autograd.gradcheck(
            f, (x,), check_forward_ad=True, check_backward_ad=False, check_undefined_grad=False, check_batched_grad=False
        )
    x = _lattice(3, 5)
    assert torch.count_nonzero(torch.func.hessian(_hinge_f("multilabel_margin_loss", {}, "sum"))(x)) == 0


@pytest.mark.cpu_only
def test_multilabel_sorted_compiles(monkeypatch):
    _force(monkeypatch, "sorted")
    torch._dynamo.reset()
    gen = _gen(13)
    x = _ml_scores(gen, 6, 30, torch.float32, "lattice")
    t = _ml_rows(gen, 6, 30)
    compiled = torch.compile(F.multilabel_margin_loss, fullgraph=True, backend="aot_eager")
    leaf, ref_leaf = x.clone().requires_grad_(), x.clone().requires_grad_()
    out, ref = compiled(leaf, t), TF.multilabel_margin_loss(ref_leaf, t)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(torch.autograd.grad(out, leaf)[0], torch.autograd.grad(ref, ref_leaf)[0])


@pytest.mark.parametrize("labels", [1, 10, 100, 600])
@pytest.mark.parametrize("offset", [0.0, 100.0])
def test_multilabel_float32_at_least_as_accurate_as_torch(labels, offset):
    # C = 1000 (the sort, chunked): against a float64 evaluation of the same float32 scores,
    # torchloss's float32 error is never above torch's (which sums each float32 z in a double),
    # up to half a unit in the last place of the result
    gen = _gen(14)
    n, c = 48, 1000
    x = (torch.randn(n, c, generator=gen) * 3 + offset).float()
    t = torch.stack([torch.randperm(c, generator=gen) for _ in range(n)])
    t[:, labels:] = -1
    for reduction in ("none", "mean", "sum"):
        exact = TF.multilabel_margin_loss(x.double(), t, reduction=reduction)
        mine = F.multilabel_margin_loss(x, t, reduction=reduction)
        theirs = TF.multilabel_margin_loss(x, t, reduction=reduction)
        err_mine = (mine.double() - exact).abs()
        err_theirs = (theirs.double() - exact).abs()
        half_ulp = torch.finfo(torch.float32).eps * exact.abs() / 2
        assert bool((err_mine <= err_theirs + half_ulp).all())


@pytest.mark.cpu_only
def test_multilabel_memory_is_linear_in_classes(monkeypatch):
    monkeypatch.setattr(native, "module", None)  # the reference's memory (the kernel saves less)
    # N = 64, C = 1000 (the old all-pairs formulation: ~0.3 GB of temporaries): torchloss keeps
    # the inputs and the N x C gradient coefficients (torch: the inputs and an N x C is_target),
    # and its peak stays within that of torch plus one N x C buffer
    from torchloss.bench import peak_bytes

    gen = _gen(15)
    x = torch.randn(64, 1000, generator=gen)
    t = torch.randint(0, 1000, (64, 1000), generator=gen)
    t[:, 10:] = -1
    ours = saved_bytes(F.multilabel_margin_loss, (x, t))
    theirs = saved_bytes(TF.multilabel_margin_loss, (x, t))
    assert ours.total <= theirs.total
    assert ours.extra == x.numel() * x.element_size()  # the coefficients

    def step(fn):
        leaf = x.clone().requires_grad_()
        return lambda: torch.autograd.grad(fn(leaf, t), leaf)

    cpu = torch.device("cpu")
    assert peak_bytes(step(F.multilabel_margin_loss), cpu) <= peak_bytes(step(TF.multilabel_margin_loss), cpu) + x.numel() * 4
    # no gradient needed: no coefficients kept, and the forward alone still matches
    with torch.no_grad():
        torch.testing.assert_close(F.multilabel_margin_loss(x, t), TF.multilabel_margin_loss(x, t))
    assert saved_bytes(F.multilabel_margin_loss, (x, t), wrt=()).total == 0


def test_multilabel_forward_ad_without_saved_coefficients():
    # forward AD alone (nothing requires grad): the forward skips the coefficients and the jvp
    # recomputes them
    gen = _gen(16)
    for c in (5, 40):
        x = _ml_scores(gen, 4, c, D, "lattice")
        t = _ml_rows(gen, 4, c)
        tangent = torch.randn(x.shape, generator=gen, dtype=D)
        with torch.autograd.forward_ad.dual_level():
            dual = torch.autograd.forward_ad.make_dual(x, tangent)
            out = F.multilabel_margin_loss(dual, t, reduction="sum")
            jvp = torch.autograd.forward_ad.unpack_dual(out).tangent
        leaf = x.clone().requires_grad_()
        (g,) = torch.autograd.grad(F.multilabel_margin_loss(leaf, t, reduction="sum"), leaf)
        torch.testing.assert_close(jvp, (g * tangent).sum())


# --------------------------------------------------------------------------------------------
# MultiMargin: the eager in-place path against the differentiable one and torch


@pytest.mark.cpu_only
@pytest.mark.parametrize("dtype", [torch.float32, D], ids=str)
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("p,margin,weighted", [(1, 1.0, False), (1, 0.7, True), (2, 1.0, False), (2, 0.45, True)])
def test_multi_margin_eager_and_differentiable_paths_match_torch(p, margin, weighted, reduction, dtype):
    gen = _gen(17)
    for kind in ("lattice", "normal", "special"):
        x = _ml_scores(gen, 40, 30, dtype, kind)
        y = torch.randint(0, 30, (40,), generator=gen)
        w = (torch.rand(30, generator=gen, dtype=D) + 0.2).to(dtype) if weighted else None
        kwargs = {"p": p, "margin": margin, "weight": w, "reduction": reduction}
        leaf, ref_leaf = x.clone().requires_grad_(), x.clone().requires_grad_()
        out = F.multi_margin_loss(leaf, y, **kwargs)
        ref = TF.multi_margin_loss(ref_leaf, y, **kwargs)
        upstream = torch.rand(ref.shape, generator=gen, dtype=D).to(dtype) + 0.5
        (g,) = torch.autograd.grad(out, leaf, upstream, retain_graph=True)  # eager, in place
        (g_graph,) = torch.autograd.grad(out, leaf, upstream, create_graph=True)  # differentiable
        (g_ref,) = torch.autograd.grad(ref, ref_leaf, upstream)
        tol = {"rtol": 2e-6, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 1e-12, "atol": 1e-12}
        torch.testing.assert_close(out, ref, equal_nan=True, **tol)
        torch.testing.assert_close(g, g_ref, equal_nan=True, **tol)
        torch.testing.assert_close(g_graph, g_ref, equal_nan=True, **tol)
        assert torch.equal(g == 0, g_ref == 0)
        # the differentiable forward (under torch.func) gives the eager value
        if reduction == "sum" and not weighted:
            vm = torch.func.vmap(lambda v, t: F.multi_margin_loss(v[None], t[None], p=p, margin=margin, reduction="sum"))(x, y)
            torch.testing.assert_close(vm.sum(), out, equal_nan=True, **tol)


@pytest.mark.cpu_only
def test_multi_margin_peak_is_one_buffer():
    # the eager forward and backward each allocate one N x C buffer: torch's peak
    from torchloss.bench import peak_bytes

    gen = _gen(18)
    x, y = torch.randn(256, 500, generator=gen), torch.randint(0, 500, (256,), generator=gen)

    def step(fn):
        leaf = x.clone().requires_grad_()
        return lambda: torch.autograd.grad(fn(leaf, y), leaf)

    cpu = torch.device("cpu")
    slack = 4 * 256 * 8  # a few (N, 1) temporaries
    assert peak_bytes(step(F.multi_margin_loss), cpu) <= peak_bytes(step(TF.multi_margin_loss), cpu) + slack


# --------------------------------------------------------------------------------------------
# MultiLabelMargin: the label loop (the functional's label count)


def test_multilabel_label_count_read_by_the_functional():
    from torchloss.functional.margin import _ml_label_count

    gen = _gen(19)
    for n, c, labels in [(5, 40, 0), (5, 40, 3), (7, 40, 4), (6, 40, 9), (4, 40, 40), (0, 40, 0)]:
        t = torch.randint(0, c, (n, c), generator=gen)
        if n:
            t[0, labels:] = -1  # the longest row
            t[1:, min(labels, 2) :] = -1
            t[1:, min(labels, 2) + 1 :] = torch.randint(-1, c, (max(n - 1, 0), c - min(labels, 2) - 1), generator=gen)
        assert _ml_label_count(t, 100) == labels
        assert _ml_label_count(t, labels) == labels
        if labels > 4:
            assert _ml_label_count(t, labels // 2 - 1) == -1


@pytest.mark.cpu_only
def test_multilabel_label_loop_taken_and_matches_sort(monkeypatch):
    monkeypatch.setattr(native, "module", None)  # the reference's label loop
    # the bench's layout (a few labels among many classes): the eager forward loops over the
    # label positions, with the values and gradients of the sort and of torch
    gen = _gen(20)
    calls = []
    loop = _margin._ml_label_loop
    monkeypatch.setattr(_margin, "_ml_label_loop", lambda *a: calls.append(a[2]) or loop(*a))
    for kind in ("lattice", "normal", "special"):
        x = _ml_scores(gen, 300, 64, torch.float32, kind)
        t = torch.randint(0, 64, (300, 64), generator=gen)
        t[:, 5:] = -1
        t[::3, 2:] = -1
        t[1, 0] = -1  # a row without labels
        t[2, :5] = 7  # a label listed five times
        for reduction in ("none", "mean", "sum"):
            calls.clear()
            leaf = x.clone().requires_grad_()
            out = F.multilabel_margin_loss(leaf, t, reduction=reduction)
            (g,) = torch.autograd.grad(out.sum(), leaf)
            assert calls == [5]
            with monkeypatch.context() as m:
                m.setattr(_margin, "_ML_LOOP_PER_BIT", 0)  # the sort
                sleaf = x.clone().requires_grad_()
                sorted_out = F.multilabel_margin_loss(sleaf, t, reduction=reduction)
                (sg,) = torch.autograd.grad(sorted_out.sum(), sleaf)
            assert calls == [5]
            torch.testing.assert_close(out, sorted_out, rtol=0, atol=0, equal_nan=True)
            torch.testing.assert_close(g, sg, rtol=0, atol=0)
            ref, _ = _torch_ml(x, t, reduction)
            torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6, equal_nan=True)
    # no label count where reading it is not free: under torch.func or for many labels
    calls.clear()
    x = torch.randn(40, 64, generator=gen)
    t = torch.randint(0, 64, (40, 64), generator=gen)
    t[:, 3:] = -1
    torch.func.vmap(lambda v, y: F.multilabel_margin_loss(v[None], y[None]))(x, t)
    t[0, 3:30] = 1
    F.multilabel_margin_loss(x, t)
    assert calls == []


@pytest.mark.cpu_only
def test_multilabel_label_loop_memory():
    # the bench's layout at a smaller size: saved bytes as torch, peak within torch's
    from torchloss.bench import peak_bytes

    gen = _gen(21)
    x = torch.randn(512, 256, generator=gen)
    t = torch.randint(0, 256, (512, 256), generator=gen)
    t[:, 4:] = -1
    assert saved_bytes(F.multilabel_margin_loss, (x, t)).total <= saved_bytes(TF.multilabel_margin_loss, (x, t)).total

    def step(fn):
        leaf = x.clone().requires_grad_()
        return lambda: torch.autograd.grad(fn(leaf, t), leaf)

    cpu = torch.device("cpu")
    assert peak_bytes(step(F.multilabel_margin_loss), cpu) <= peak_bytes(step(TF.multilabel_margin_loss), cpu)


# --------------------------------------------------------------------------------------------
# MultiLabelSoftMargin: the eager in-place path


@pytest.mark.cpu_only
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_multilabel_soft_margin_eager_matches_differentiable_path(reduction, weighted):
    gen = _gen(22)
    x = torch.randn(40, 30, generator=gen, dtype=D) * 8
    x[0, :6] = torch.tensor([0.0, -0.0, 40.0, -40.0, 1e4, -1e4], dtype=D)
    y = torch.rand(40, 30, generator=gen, dtype=D)
    y[0, :6] = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0, 1.0], dtype=D)
    y[1] = (y[1] > 0.5).to(D)
    w = torch.rand(30, generator=gen, dtype=D) + 0.2 if weighted else None
    leaf = x.clone().requires_grad_()
    out = F.multilabel_soft_margin_loss(leaf, y, weight=w, reduction=reduction)
    upstream = torch.rand(out.shape, generator=gen, dtype=D) + 0.5
    (g,) = torch.autograd.grad(out, leaf, upstream, retain_graph=True)  # eager, in place
    (g_graph,) = torch.autograd.grad(out, leaf, upstream, create_graph=True)  # differentiable
    with torch.autograd.forward_ad.dual_level():  # the differentiable forward
        dual = torch.autograd.forward_ad.make_dual(x, torch.zeros_like(x))
        out_graph = torch.autograd.forward_ad.unpack_dual(
            F.multilabel_soft_margin_loss(dual, y, weight=w, reduction=reduction)
        ).primal
    # the loss up to rounding (the eager form groups its terms differently), the gradient
    # exactly (with a weight: up to the order of the two scalings)
    torch.testing.assert_close(out, out_graph, rtol=1e-13, atol=0)
    torch.testing.assert_close(g, g_graph, rtol=1e-15 if weighted else 0, atol=0)
    ref = TF.multilabel_soft_margin_loss(x, y, weight=w, reduction=reduction)
    torch.testing.assert_close(out, ref, rtol=1e-13, atol=0)


@pytest.mark.cpu_only
def test_multilabel_soft_margin_float32_eager_at_least_as_accurate_as_torch():
    # against float64 of the same float32 logits and targets: the eager loss is within torch's
    # error plus two units in the last place (its gradient has the differentiable path's bits)
    gen = _gen(23)
    x = (torch.randn(256, 64, generator=gen) * 6).float()
    y = torch.rand(256, 64, generator=gen).float()
    y[::2] = (y[::2] > 0.5).float()
    for reduction in ("none", "sum"):
        exact = TF.multilabel_soft_margin_loss(x.double(), y.double(), reduction=reduction)
        mine = F.multilabel_soft_margin_loss(x, y, reduction=reduction)
        theirs = TF.multilabel_soft_margin_loss(x, y, reduction=reduction)
        ulp = torch.finfo(torch.float32).eps * exact.abs()
        assert bool(((mine.double() - exact).abs() <= (theirs.double() - exact).abs() + 2 * ulp).all())


@pytest.mark.cpu_only
def test_multilabel_soft_margin_memory_below_torch():
    from torchloss.bench import peak_bytes

    gen = _gen(24)
    x, y = torch.randn(256, 128, generator=gen), (torch.rand(256, 128, generator=gen) > 0.5).float()

    def step(fn):
        leaf = x.clone().requires_grad_()
        return lambda: torch.autograd.grad(fn(leaf, y), leaf)

    cpu = torch.device("cpu")
    # the loss buffer and one temporary (forward), the gradient and one temporary (backward)
    assert peak_bytes(step(F.multilabel_soft_margin_loss), cpu) <= 2 * x.numel() * 4 + 4096
    assert peak_bytes(step(F.multilabel_soft_margin_loss), cpu) <= peak_bytes(step(TF.multilabel_soft_margin_loss), cpu)
    assert saved_bytes(F.multilabel_soft_margin_loss, (x, y)).total <= saved_bytes(TF.multilabel_soft_margin_loss, (x, y)).total


@pytest.mark.parametrize("c", [11, 12, 16])
def test_multilabel_pairwise_counts_at_their_dtype_limits(monkeypatch, c):
    # the pairwise counts are summed in int8 while C (C - 1) <= 127, then int16: a row whose
    # every position names class 0, below every other score, reaches m_0 G_0 = C (C - 1)
    _force(monkeypatch, "pairwise")
    x = torch.randn(3, c, generator=_gen(31)).requires_grad_()
    with torch.no_grad():
        x[:, 0] = -10.0
    t = torch.zeros(3, c, dtype=torch.int64)
    t[1, 1:] = -1  # one position: m_0 = 1
    for reduction in ("none", "sum"):
        out = F.multilabel_margin_loss(x, t, reduction=reduction)
        (g,) = torch.autograd.grad(out.sum(), x)
        ref, ref_g = _torch_ml(x, t, reduction)
        torch.testing.assert_close(out, ref)
        torch.testing.assert_close(g, ref_g)


@pytest.mark.cpu_only
def test_multilabel_pairwise_peak_small_batch():
    # the pairwise block (N, C, C) is summed without converting it to int64 (8 times its size)
    from torchloss.bench import peak_bytes

    gen = _gen(32)
    x = torch.randn(32, 10, generator=gen).requires_grad_()
    t = torch.randint(0, 10, (32, 10), generator=gen)
    t[:, 4:] = -1
    peak = peak_bytes(lambda: torch.autograd.grad(F.multilabel_margin_loss(x, t), x), torch.device("cpu"))
    assert peak < 32 * 10 * 10 * 8
