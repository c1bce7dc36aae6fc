"""Binary losses: behaviour the generic case table cannot express.

Overflow-free soft margin, exact BCE-with-logits at huge logits, BCE's clamps and torch's
backward at them, dtype rules, the non-differentiable arguments in forward mode, and the [0, 1]
value check under torch.func transforms and torch.compile.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as TF

import torchloss
import torchloss.functional as F
from torchloss.testing import graph_functions

# every test on each device of the device fixture (tests/conftest.py: on_device, cpu_only)
pytestmark = pytest.mark.usefixtures("on_device")

D = torch.float64


def _leaf(values, dtype=D):
    return torch.tensor(values, dtype=dtype, requires_grad=True)


# --------------------------------------------------------------------------------------------
# SoftMargin


@pytest.mark.parametrize("dtype,margin", [(torch.float32, 200.0), (torch.float64, 800.0)])
def test_soft_margin_does_not_overflow(dtype, margin):
    # -y·x = margin: log(1 + e^margin) = margin (+ e^-margin), gradient d/dx = -y·σ(-yx) = -y.
    x = _leaf([margin, -margin, 3.0], dtype)
    y = torch.tensor([-1.0, 1.0, 1.0], dtype=dtype)
    loss = F.soft_margin_loss(x, y, reduction="none")
    expected = torch.tensor([margin, margin, math.log1p(math.exp(-3.0))], dtype=dtype)
    torch.testing.assert_close(loss, expected)
    (gx,) = torch.autograd.grad(loss.sum(), x)
    torch.testing.assert_close(gx, torch.tensor([1.0, -1.0, -1 / (1 + math.exp(3.0))], dtype=dtype))
    # torch overflows there (documented difference): inf loss, NaN gradient
    xt = x.detach().clone().requires_grad_()
    ref = TF.soft_margin_loss(xt, y, reduction="none")
    assert torch.isinf(ref[0]) and torch.isinf(ref[1])
    assert torch.isnan(torch.autograd.grad(ref.sum(), xt)[0][:2]).all()
    # and the mean stays finite and is exact
    torch.testing.assert_close(F.soft_margin_loss(x, y), expected.mean())


def test_soft_margin_bool_target():
    # torch's forward takes a bool target as 0/1, but its backward then fails (it negates the
    # bool target); torchloss differentiates it like the equivalent float target.
    x = _leaf([0.5, -1.0, 2.0, 0.0])
    y = torch.tensor([True, False, True, True])
    ours = F.soft_margin_loss(x, y)
    ref_in = x.detach().clone().requires_grad_()
    ref = TF.soft_margin_loss(ref_in, y)
    torch.testing.assert_close(ours, ref)
    with pytest.raises(RuntimeError):
        torch.autograd.grad(ref, ref_in)
    (g,) = torch.autograd.grad(ours, x)
    x2 = x.detach().clone().requires_grad_()
    (g2,) = torch.autograd.grad(F.soft_margin_loss(x2, y.to(D)), x2)
    torch.testing.assert_close(g, g2)


def test_soft_margin_target_not_differentiable():
    x = torch.randn(3, 4, dtype=D)
    y = torch.randn(3, 4, dtype=D).sign().requires_grad_()
    # refused with grad mode on (as torch), accepted under no_grad (as torch)
    with pytest.raises(RuntimeError, match="argument 'target'"):
        F.soft_margin_loss(x, y)
    with torch.no_grad():
        torch.testing.assert_close(F.soft_margin_loss(x, y), TF.soft_margin_loss(x, y))
    # forward mode: a target tangent is dropped, as torch.func.jvp of torch's loss does
    yd = y.detach()
    t = torch.randn(3, 4, dtype=D)
    _, ours = torch.func.jvp(lambda v: F.soft_margin_loss(x, v), (yd,), (t,))
    _, ref = torch.func.jvp(lambda v: TF.soft_margin_loss(x, v), (yd,), (t,))
    assert float(ours) == float(ref) == 0.0


def test_soft_margin_hessian_where_torch_has_none():
    x = torch.randn(5, dtype=D)
    y = torch.randn(5, dtype=D).sign()
    with pytest.raises(NotImplementedError), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's slow vmap fallback
        torch.func.hessian(lambda v: TF.soft_margin_loss(v, y, reduction="sum"))(x)
    h = torch.func.hessian(lambda v: F.soft_margin_loss(v, y, reduction="sum"))(x)
    s = torch.sigmoid(y * x)
    torch.testing.assert_close(h, torch.diag(y * y * s * (1 - s)))


# --------------------------------------------------------------------------------------------
# BCEWithLogits


def test_bce_with_logits_huge_logits_exact():
    x = _leaf([1000.0, 1000.0, -1000.0, -1000.0])
    y = torch.tensor([1.0, 0.0, 1.0, 0.0], dtype=D)
    loss = F.binary_cross_entropy_with_logits(x, y, reduction="none")
    assert loss.tolist() == [0.0, 1000.0, 1000.0, 0.0]
    assert loss.tolist() == TF.binary_cross_entropy_with_logits(x, y, reduction="none").tolist()
    (g,) = torch.autograd.grad(loss.sum(), x)
    assert g.tolist() == [0.0, 1.0, -1.0, 0.0]
    # with pos_weight 2: the positive terms double
    pw = torch.tensor(2.0, dtype=D)
    loss = F.binary_cross_entropy_with_logits(x, y, reduction="none", pos_weight=pw)
    assert loss.tolist() == [0.0, 1000.0, 2000.0, 0.0]


def test_bce_with_logits_no_cancellation():
    # y = 0, x = -37.5: the loss is sp(-37.5) = 5.18e-17. torch's (1-y)x + sp(-x) cancels to 0
    # even in float64; torchloss's symmetric form keeps it (and its gradient σ(x)).
    x = torch.tensor([-37.5, 40.0], dtype=D, requires_grad=True)
    y = torch.tensor([0.0, 1.0], dtype=D)
    loss = F.binary_cross_entropy_with_logits(x, y, reduction="none")
    exact = math.log1p(math.exp(-37.5)), math.log1p(math.exp(-40.0))
    assert loss.tolist() == pytest.approx(exact, rel=1e-14)
    assert TF.binary_cross_entropy_with_logits(x, y, reduction="none")[0].item() == 0.0
    (g,) = torch.autograd.grad(loss.sum(), x)
    # σ(-37.5) and -σ(-40): torch's σ(x) - y gives exactly 0 for the second
    assert g.tolist() == pytest.approx([1 / (1 + math.exp(37.5)), -1 / (1 + math.exp(40.0))], rel=1e-14)


@pytest.mark.parametrize(
    "in_dtype,tgt_dtype",
    [
        (torch.float64, torch.float32),
        (torch.float32, torch.float64),
        (torch.float16, torch.float32),
        (torch.bfloat16, torch.float64),
        (torch.float32, torch.float16),
    ],
)
def test_bce_with_logits_result_dtype_follows_target(in_dtype, tgt_dtype):
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(3, 4, generator=gen, dtype=D) * 3).to(in_dtype).requires_grad_()
    y = torch.rand(3, 4, generator=gen, dtype=D).to(tgt_dtype).requires_grad_()
    pw = torch.rand(4, generator=gen, dtype=D) + 0.5
    for reduction in ("none", "mean", "sum"):
        ours = F.binary_cross_entropy_with_logits(x, y, reduction=reduction, pos_weight=pw)
        ref = TF.binary_cross_entropy_with_logits(x, y, reduction=reduction, pos_weight=pw)
        assert ours.dtype == ref.dtype == tgt_dtype
        exact = TF.binary_cross_entropy_with_logits(x.double(), y.double(), reduction=reduction, pos_weight=pw)
        tol = 1e-2 if tgt_dtype in (torch.float16, torch.bfloat16) else 1e-5
        torch.testing.assert_close(ours.double(), exact, rtol=tol, atol=tol)
        gx, gy = torch.autograd.grad(ours.sum(), (x, y))
        assert gx.dtype == in_dtype and gy.dtype == tgt_dtype


def test_bce_with_logits_forward_ad_through_weights_matches_torch():
    # torch refuses weight/pos_weight gradients in reverse mode but propagates their tangents in
    # forward mode; torchloss does the same.
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(3, 4, generator=gen, dtype=D), torch.rand(3, 4, generator=gen, dtype=D)
    w, pw = torch.rand(4, generator=gen, dtype=D), torch.rand(3, 1, generator=gen, dtype=D) + 0.5
    tangents = tuple(torch.randn(t.shape, generator=gen, dtype=D) for t in (x, y, w, pw))
    for reduction in ("none", "mean", "sum"):

        def f(fn):
            return lambda a, b, c, d: fn(a, b, weight=c, pos_weight=d, reduction=reduction)

        _, ours = torch.func.jvp(f(F.binary_cross_entropy_with_logits), (x, y, w, pw), tangents)
        _, ref = torch.func.jvp(f(TF.binary_cross_entropy_with_logits), (x, y, w, pw), tangents)
        torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("fn", ["binary_cross_entropy_with_logits", "binary_cross_entropy"])
def test_weights_refused_with_grad_but_fine_under_no_grad(fn):
    x = torch.rand(3, 4, dtype=D) * 0.9 + 0.05
    y = torch.rand(3, 4, dtype=D)
    w = torch.rand(4, dtype=D, requires_grad=True)
    with pytest.raises(RuntimeError, match="argument 'weight'"):
        getattr(F, fn)(x, y, weight=w)
    with torch.no_grad():
        torch.testing.assert_close(getattr(F, fn)(x, y, weight=w), getattr(TF, fn)(x, y, weight=w))


def test_bce_with_logits_second_derivatives_at_zero_logit():
    # Zero logits are common (zero-initialised heads). The mixed derivative there is
    # -w(σ(0) + p·σ(0)) = -(1 + p)/2; a softplus written with max/abs would give autograd's
    # subgradient and lose the 1/2.
    x = torch.zeros(4, dtype=D, requires_grad=True)
    y = torch.tensor([0.2, 0.5, 0.9, 1.0], dtype=D, requires_grad=True)
    pw = torch.tensor([1.0, 2.0, 3.0, 0.5], dtype=D)
    for fn in (F.binary_cross_entropy_with_logits, TF.binary_cross_entropy_with_logits):
        gx, gy = torch.autograd.grad(fn(x, y, pos_weight=pw, reduction="sum"), (x, y), create_graph=True)
        (dxy,) = torch.autograd.grad(gy.sum(), x, retain_graph=True)
        torch.testing.assert_close(dxy, -(1 + pw) / 2)
        (dyx,) = torch.autograd.grad(gx.sum(), y)
        torch.testing.assert_close(dyx, -(1 + pw) / 2)


def test_bce_with_logits_module_buffers():
    w, pw = torch.rand(4), torch.rand(4) + 0.5
    ours, ref = torchloss.BCEWithLogitsLoss(weight=w, pos_weight=pw), torch.nn.BCEWithLogitsLoss(weight=w, pos_weight=pw)
    assert list(ours.state_dict()) == list(ref.state_dict()) == ["weight", "pos_weight"]
    assert repr(ours) == repr(ref)
    ours = ours.to(D)
    assert ours.weight.dtype == ours.pos_weight.dtype == D
    only_pw = torchloss.BCEWithLogitsLoss(pos_weight=pw)
    assert list(only_pw.state_dict()) == list(torch.nn.BCEWithLogitsLoss(pos_weight=pw).state_dict())
    x, y = torch.randn(3, 4), torch.rand(3, 4)
    torch.testing.assert_close(only_pw(x, y), torch.nn.BCEWithLogitsLoss(pos_weight=pw)(x, y))


# --------------------------------------------------------------------------------------------
# BCE


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bce_clamps_and_torch_backward_at_them(dtype):
    tiny = 1e-50 if dtype == D else 1e-44  # log(tiny) < -100: the forward clamp is active
    xs = [0.0, 1.0, 0.0, 1.0, tiny, 1e-13]
    ys = [1.0, 1.0, 0.0, 0.0, 1.0, 0.0]
    x, y = _leaf(xs, dtype), _leaf(ys, dtype)
    xt, yt = _leaf(xs, dtype), _leaf(ys, dtype)
    w = torch.tensor([1.0, 2.0, 0.5, 3.0, 1.0, 1.0], dtype=dtype)
    ours = F.binary_cross_entropy(x, y, weight=w, reduction="none")
    ref = TF.binary_cross_entropy(xt, yt, weight=w, reduction="none")
    assert ours[:5].tolist() == [100.0, 0.0, 0.0, 300.0, 100.0]
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=0)
    # backward: x-gradient w(x-y)/max(x(1-x), float32(1e-12)) (about -1e12 at x = 0, y = 1,
    # ignoring the forward clamp, as torch), y-gradient -w·logit(x), unclamped (±inf at 0 and 1)
    upstream = torch.arange(1.0, 7.0, dtype=dtype)
    gx, gy = torch.autograd.grad(ours, (x, y), upstream)
    gxt, gyt = torch.autograd.grad(ref, (xt, yt), upstream)
    torch.testing.assert_close(gx, gxt, rtol=1e-6, atol=0)
    torch.testing.assert_close(gy, gyt, rtol=1e-6, atol=0)
    eps = float(torch.tensor(1e-12, dtype=torch.float32))
    assert gx[0].item() == pytest.approx(-1.0 / eps, rel=1e-6)
    assert gy[0].item() == math.inf and gy[1].item() == -math.inf


def test_bce_mean_ignores_weights_in_denominator():
    x = torch.tensor([0.2, 0.7], dtype=D)
    y = torch.tensor([0.0, 1.0], dtype=D)
    w = torch.tensor([3.0, 5.0], dtype=D)
    expected = (-3 * math.log(0.8) - 5 * math.log(0.7)) / 2
    assert F.binary_cross_entropy(x, y, weight=w).item() == pytest.approx(expected, rel=1e-14)


def test_bce_weight_tangent_dropped_like_torch():
    x = torch.rand(3, 4, dtype=D) * 0.9 + 0.05
    y = torch.rand(3, 4, dtype=D)
    w = torch.rand(4, dtype=D)
    t = torch.randn(4, dtype=D)
    _, ours = torch.func.jvp(lambda v: F.binary_cross_entropy(x, y, weight=v), (w,), (t,))
    _, ref = torch.func.jvp(lambda v: TF.binary_cross_entropy(x, y, weight=v), (w,), (t,))
    assert float(ours) == float(ref) == 0.0


def _bce_sum(x, y):
    return F.binary_cross_entropy(x, y, reduction="sum")


def test_bce_value_check_under_func_transforms():
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(3, 4, generator=gen, dtype=D) * 0.9 + 0.05
    y = torch.rand(3, 4, generator=gen, dtype=D)
    bad = x.clone()
    bad[1, 2] = 1.5
    # in range: vmap, grad, vmap(grad), jvp, jacrev, hessian all run the check without syncing
    out = torch.func.vmap(_bce_sum)(x, y)
    torch.testing.assert_close(out, TF.binary_cross_entropy(x, y, reduction="none").sum(1))
    torch.func.vmap(torch.func.grad(_bce_sum))(x, y)
    torch.func.jvp(_bce_sum, (x, y), (torch.ones_like(x), torch.ones_like(y)))
    torch.func.jacrev(_bce_sum, argnums=(0, 1))(x, y)
    torch.func.hessian(_bce_sum)(x[0], y[0])
    # out of range: every transform raises torch's RuntimeError
    for run in (
        lambda: _bce_sum(bad, y),
        lambda: torch.func.vmap(_bce_sum)(bad, y),
        lambda: torch.func.vmap(torch.func.grad(_bce_sum))(bad, y),
        lambda: torch.func.grad(_bce_sum)(bad, y),
        lambda: torch.func.jvp(_bce_sum, (bad, y), (x, y)),
    ):
        with pytest.raises(RuntimeError, match="input should be between 0 and 1"):
            run()
    with pytest.raises(RuntimeError, match="target should be between 0 and 1"):
        torch.func.vmap(_bce_sum)(x, bad)


@pytest.mark.cpu_only
def test_bce_value_check_under_compile():
    torch._dynamo.reset()
    compiled = torch.compile(F.binary_cross_entropy, fullgraph=True, backend="aot_eager")
    x = torch.tensor([0.2, 0.7, 0.4])
    y = torch.tensor([0.0, 1.0, 0.5])
    torch.testing.assert_close(compiled(x, y), TF.binary_cross_entropy(x, y))
    with pytest.raises(RuntimeError, match="input should be between 0 and 1"):
        compiled(torch.tensor([0.2, 1.7, 0.4]), y)
    with pytest.raises(RuntimeError, match="target should be between 0 and 1"):
        compiled(x, torch.tensor([0.0, -1.0, 0.5]))


def test_bce_weight_broadcast_keeps_one_node():
    x = (torch.rand(3, 4, dtype=D) * 0.9 + 0.05).requires_grad_()
    y = torch.rand(3, 4, dtype=D).requires_grad_()
    out = F.binary_cross_entropy(x, y, weight=torch.rand(3, 1, dtype=D), reduction="none")
    nodes = [n for n in graph_functions(out) if n != "AccumulateGrad"]
    assert len(nodes) == 1 and nodes[0].__module__.startswith("torchloss.")


# --------------------------------------------------------------------------------------------
# All three


CALLS = {
    "binary_cross_entropy": lambda make: (make(3, 4).sigmoid(), make(3, 4).sigmoid()),
    "binary_cross_entropy_with_logits": lambda make: (make(3, 4), make(3, 4).sigmoid()),
    "soft_margin_loss": lambda make: (make(3, 4), make(3, 4).sign()),
}


@pytest.mark.parametrize("name", list(CALLS))
def test_elementwise_mean_alias(name):
    gen = torch.Generator().manual_seed(3)
    args = CALLS[name](lambda *s: torch.randn(*s, generator=gen, dtype=D))
    caught = []
    for fn in (getattr(F, name), getattr(TF, name)):
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            out = fn(*args, reduction="elementwise_mean")
        caught.append([(x.category, str(x.message)) for x in w])
        torch.testing.assert_close(out, getattr(TF, name)(*args))
    assert caught[0] == caught[1] and caught[0]


def test_complex_refused_where_torch_returns_complex():
    # Deliberate difference: torch computes a complex "loss" for a complex soft-margin input or a
    # complex BCE-with-logits target; torchloss supports real losses only.
    x = torch.randn(3, dtype=D)
    y = torch.rand(3, dtype=D)
    assert TF.soft_margin_loss(x.to(torch.complex128), y.sign()).is_complex()
    assert TF.binary_cross_entropy_with_logits(x, y.to(torch.complex128)).is_complex()
    with pytest.raises(NotImplementedError, match="input"):
        F.soft_margin_loss(x.to(torch.complex128), y.sign())
    with pytest.raises(NotImplementedError, match="target"):
        F.binary_cross_entropy_with_logits(x, y.to(torch.complex128))


# --------------------------------------------------------------------------------------------
# Eager path (in-place, at most two full-size buffers) against the differentiable one


def _eager_and_differentiable(fn, x, args, kwargs):
    """(loss, gradient) through the eager path (a plain call and first-order backward) and
    through the differentiable one (a forward-AD level disables the eager forward,
    ``create_graph=True`` the eager backward)."""
    import torch.autograd.forward_ad as fwad

    xe = x.detach().clone().requires_grad_()
    loss_e = fn(xe, *args, **kwargs)
    (g_e,) = torch.autograd.grad(loss_e.sum(), xe)
    xd = x.detach().clone().requires_grad_()
    with fwad.dual_level():
        loss_d = fn(xd, *args, **kwargs)
    (g_d,) = torch.autograd.grad(loss_d.sum(), xd, create_graph=True)
    return (loss_e, g_e), (loss_d.detach(), g_d.detach())


def _binary_inputs(name, dtype, gen, n=64):
    x = torch.randn(n, generator=gen, dtype=D) * 4
    y = torch.rand(n, generator=gen, dtype=D)
    y[::4] = 0.0
    y[1::4] = 1.0
    if name == "binary_cross_entropy":
        x = x.sigmoid()
        x[:3] = torch.tensor([0.0, 1.0, 1e-30], dtype=D)  # the clamps
    elif name == "soft_margin_loss":
        y = torch.randn(n, generator=gen, dtype=D).sign()
        x[:2] = torch.tensor([200.0, -200.0], dtype=D)  # beyond torch's overflow
    else:
        x[:4] = torch.tensor([40.0, -40.0, 0.0, -0.0], dtype=D)
    return x.to(dtype), y.to(dtype)


@pytest.mark.cpu_only
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", list(CALLS))
def test_eager_path_matches_differentiable_path(name, dtype, reduction):
    gen = torch.Generator().manual_seed(4)
    x, y = _binary_inputs(name, dtype, gen)
    fn = getattr(F, name)
    (le, ge), (ld, gd) = _eager_and_differentiable(fn, x, (y,), {"reduction": reduction})
    tol = {"rtol": 4e-6, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 1e-12, "atol": 1e-14}
    torch.testing.assert_close(le, ld, **tol)
    torch.testing.assert_close(ge, gd, **tol)
    ref = getattr(TF, name)(x.double(), y.double(), reduction=reduction)
    if name != "soft_margin_loss":  # torch overflows there
        torch.testing.assert_close(le.double(), ref, **tol)


@pytest.mark.cpu_only
@pytest.mark.parametrize("reduction", ["none", "mean"])
def test_bce_eager_weighted_and_target_gradient(reduction):
    gen = torch.Generator().manual_seed(5)
    x, y = _binary_inputs("binary_cross_entropy", torch.float64, gen)
    x = x.clamp(1e-6, 1 - 1e-6)  # a finite target gradient (±inf at 0 and 1)
    w = torch.rand(64, generator=gen, dtype=D)
    xs, ys = (x.clone().requires_grad_(), y.clone().requires_grad_())
    xt, yt = (x.clone().requires_grad_(), y.clone().requires_grad_())
    ours = F.binary_cross_entropy(xs, ys, weight=w, reduction=reduction)
    ref = TF.binary_cross_entropy(xt, yt, weight=w, reduction=reduction)
    torch.testing.assert_close(ours, ref)
    up = torch.rand(ours.shape, generator=gen, dtype=D)
    for a, b in zip(torch.autograd.grad(ours, (xs, ys), up), torch.autograd.grad(ref, (xt, yt), up)):
        torch.testing.assert_close(a, b)


@pytest.mark.cpu_only
def test_bce_with_logits_eager_infinite_logits_like_torch():
    x = torch.tensor([math.inf, -math.inf, math.inf, -math.inf, math.inf])
    y = torch.tensor([0.3, 0.7, 0.0, 1.0, 1.0])
    ours = F.binary_cross_entropy_with_logits(x, y, reduction="none")
    # +inf where torch gives it (and where torch's (1-y)x - log σ(x) is -inf + inf, the exact
    # value, as the differentiable path); NaN for an infinite logit with a zero factor
    assert ours[0].item() == math.inf and ours[1].item() == math.inf
    assert ours[2].item() == math.inf and ours[3].item() == math.inf
    assert math.isnan(ours[4].item())
    assert TF.binary_cross_entropy_with_logits(x, y, reduction="none")[0].item() == math.inf


@pytest.mark.cpu_only
@pytest.mark.parametrize("name", list(CALLS))
@pytest.mark.parametrize("n", [32, 4096])
def test_memory_not_above_torch(name, n):
    from torchloss.bench import peak_bytes
    from torchloss.testing import saved_bytes

    gen = torch.Generator().manual_seed(6)
    x, y = _binary_inputs(name, torch.float32, gen, n)
    fn, ref = getattr(F, name), getattr(TF, name)
    assert saved_bytes(fn, (x, y)).total <= saved_bytes(ref, (x, y)).total

    def step(f):
        xr = x.clone().requires_grad_()
        return lambda: torch.autograd.grad(f(xr, y), xr)

    assert peak_bytes(step(fn), torch.device("cpu")) <= peak_bytes(step(ref), torch.device("cpu"))


def test_bce_range_check_cpu_fast_path():
    x = torch.tensor([0.2, 0.7, 0.4])
    y = torch.tensor([0.0, 1.0, 0.5])
    for bad, which in ((torch.tensor([0.2, math.nan, 0.4]), "input"), (torch.tensor([-1e-30, 0.5, 1.0]), "input")):
        with pytest.raises(RuntimeError, match=f"{which} should be between 0 and 1"):
            F.binary_cross_entropy(bad, y)
        with pytest.raises(RuntimeError, match=f"{which} should be between 0 and 1"):
            TF.binary_cross_entropy(bad, y)
    with pytest.raises(RuntimeError, match="target should be between 0 and 1"):
        F.binary_cross_entropy(x, torch.tensor([0.0, 1.0 + 2**-23, 0.5]))
    # exactly 0 and 1 are fine; an empty batch has nothing to check (mean of nothing: NaN)
    F.binary_cross_entropy(torch.tensor([0.0, 1.0]), torch.tensor([1.0, 0.0]))
    empty = torch.empty(0, requires_grad=True)
    assert math.isnan(F.binary_cross_entropy(empty, torch.empty(0)).item())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "converting a tensor that requires grad" warning
        F.binary_cross_entropy(x.requires_grad_(), y)


@pytest.mark.cpu_only
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_bce_range_check_deferred_to_forward(reduction):
    # plain CPU calls check inside the forward (the input after the fact, from a NaN loss):
    # every reduction, a weight that would hide nothing, and torch's order (input first)
    y = torch.tensor([0.0, 1.0, 0.5])
    w = torch.tensor([0.0, 2.0, 1.0])
    for bad in (torch.tensor([0.2, 1.5, 0.4]), torch.tensor([-0.1, 0.5, 0.4]), torch.tensor([0.2, math.nan, 0.4])):
        for weight in (None, w):
            with pytest.raises(RuntimeError, match="input should be between 0 and 1"):
                F.binary_cross_entropy(bad.requires_grad_(), y, weight=weight, reduction=reduction)
            with pytest.raises(RuntimeError, match="input should be between 0 and 1"):
                F.binary_cross_entropy(bad.half(), y.half(), reduction=reduction)  # not the eager path
        with pytest.raises(RuntimeError, match="input should be between 0 and 1"):
            F.binary_cross_entropy(bad, torch.tensor([0.0, 2.0, 0.5]), reduction=reduction)
    x = torch.tensor([0.2, 0.7, 0.4])
    with pytest.raises(RuntimeError, match="target should be between 0 and 1"):
        F.binary_cross_entropy(x, torch.tensor([0.0, math.nan, 0.5]), reduction=reduction)
    # a NaN loss from an infinite weight is not an error
    out = F.binary_cross_entropy(torch.tensor([1.0, 0.5]), torch.tensor([1.0, 0.5]), weight=torch.tensor([math.inf, 1.0]), reduction=reduction)
    ref = TF.binary_cross_entropy(torch.tensor([1.0, 0.5]), torch.tensor([1.0, 0.5]), weight=torch.tensor([math.inf, 1.0]), reduction=reduction)
    torch.testing.assert_close(out, ref, equal_nan=True)


@pytest.mark.cpu_only
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_bce_with_logits_chunked_eager_matches(reduction):
    # above one chunk (2**17 elements, not a multiple of it): the chunked eager forward and
    # backward against the differentiable path and torch's values
    gen = torch.Generator().manual_seed(7)
    n = (1 << 17) * 2 + 123
    x = torch.randn(n, generator=gen) * 6
    y = torch.rand(n, generator=gen)
    y[::5] = 0.0
    y[1::5] = 1.0
    (le, ge), (ld, gd) = _eager_and_differentiable(F.binary_cross_entropy_with_logits, x, (y,), {"reduction": reduction})
    torch.testing.assert_close(le, ld, rtol=2e-5, atol=1e-6)
    torch.testing.assert_close(ge, gd, rtol=4e-6, atol=1e-7)  # lerp vs two products: an ulp
    ref = TF.binary_cross_entropy_with_logits(x.double(), y.double(), reduction=reduction)
    torch.testing.assert_close(le.double(), ref, rtol=2e-5, atol=1e-6)
    if reduction == "none":  # an upstream gradient of the full shape, chunked too
        up = torch.rand(n, generator=gen)
        xe = x.clone().requires_grad_()
        (g,) = torch.autograd.grad(F.binary_cross_entropy_with_logits(xe, y, reduction="none"), xe, up)
        xt = x.double().requires_grad_()
        (gt,) = torch.autograd.grad(TF.binary_cross_entropy_with_logits(xt, y.double(), reduction="none"), xt, up.double())
        torch.testing.assert_close(g.double(), gt, rtol=4e-6, atol=1e-7)
