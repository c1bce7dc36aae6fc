"""Regression-loss behaviour the case table cannot express: complex L1, dtype rules, edge values,
the eager in-place paths against the differentiable ones, and the memory kept for backward."""

import warnings

import pytest
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as TF

import torchloss
import torchloss.functional as F
from torchloss import _native as native
from torchloss._autograd import regression as RG
from torchloss._autograd._base import constant
from torchloss.testing import parity, saved_bytes

# every test on each device of the device fixture (tests/conftest.py: on_device, cpu_only)
pytestmark = pytest.mark.usefixtures("on_device")


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_l1_complex(reduction, device):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, dtype=torch.complex128, generator=g).to(device)
    y = torch.randn(3, 4, dtype=torch.complex128, generator=g).to(device)
    report = parity(F.l1_loss, TF.l1_loss, (x, y), {"reduction": reduction}, (0, 1), rtol=1e-10, atol=1e-12)
    assert report.ok, report.problems
    torch.autograd.gradcheck(lambda a, b: F.l1_loss(a, b, reduction=reduction), (x.requires_grad_(), y.requires_grad_()))
    _, t = torch.func.jvp(lambda a: F.l1_loss(a, y.detach(), reduction=reduction), (x.detach(),), (torch.ones_like(x),))
    _, t_ref = torch.func.jvp(lambda a: TF.l1_loss(a, y.detach(), reduction=reduction), (x.detach(),), (torch.ones_like(x),))
    assert torch.allclose(t, t_ref)


@pytest.mark.parametrize("name", ["l1_loss", "mse_loss", "smooth_l1_loss", "huber_loss"])
@pytest.mark.parametrize(
    "in_dtype,tgt_dtype,tgt_shape",
    [
        (torch.float32, torch.float64, (3,)),
        (torch.float64, torch.float32, (3,)),
        (torch.float16, torch.float32, ()),  # a 0-dim operand of the same category does not promote
        (torch.float32, torch.int64, (3,)),
        (torch.bfloat16, torch.float16, (3,)),
    ],
)
def test_result_dtype_matches_torch(name, in_dtype, tgt_dtype, tgt_shape):
    x = torch.rand(3).to(in_dtype)
    y = (torch.rand(tgt_shape) * 3).to(tgt_dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for reduction in ("none", "sum"):
            ours = getattr(F, name)(x, y, reduction=reduction)
            ref = getattr(TF, name)(x, y, reduction=reduction)
            assert ours.dtype == ref.dtype
            assert ours.shape == ref.shape


def test_l1_integer_sum_and_none():
    x = torch.tensor([1, 5, -2])
    y = torch.tensor([2, 2, 2])
    for reduction in ("none", "sum"):
        assert torch.equal(F.l1_loss(x, y, reduction=reduction), TF.l1_loss(x, y, reduction=reduction))
    with pytest.raises(RuntimeError):
        F.l1_loss(x, y)


def test_weighted_target_broadcast_enlarges():
    # weight has input's size; a target that broadcasts the loss larger is still fine (torch too)
    x = torch.randn(3, 1, dtype=torch.float64)
    y = torch.randn(1, 4, dtype=torch.float64)
    w = torch.rand(3, 1, dtype=torch.float64) + 0.5
    for name in ("l1_loss", "mse_loss", "huber_loss"):
        for reduction in ("none", "mean", "sum"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                report = parity(
                    getattr(F, name), getattr(TF, name), (x, y), {"weight": w, "reduction": reduction},
                    (0, 1, "weight"), rtol=1e-10, atol=1e-12,
                )
            assert report.ok, (name, reduction, report.problems)


def test_smooth_l1_beta_zero_is_l1_node():
    x = torch.randn(4, requires_grad=True)
    out = F.smooth_l1_loss(x, torch.zeros(4), beta=0.0)
    assert type(out.grad_fn).__name__ == "L1LossFunctionBackward"


def test_huber_delta_type_check():
    with pytest.raises(TypeError):
        torchloss.HuberLoss(delta="1")
    with pytest.raises(TypeError):
        torch.nn.HuberLoss(delta="1")
    assert torchloss.HuberLoss(delta=2).delta == 2


def test_kink_subgradients_match_torch():
    # exactly at the kinks: L1 at d = 0 (0), Huber/SmoothL1 at |d| = delta (±delta / ±1)
    x = torch.tensor([0.0, 1.0, -1.0, 2.0], dtype=torch.float64)
    y = torch.zeros(4, dtype=torch.float64)
    for name, kw in [("l1_loss", {}), ("huber_loss", {"delta": 1.0}), ("smooth_l1_loss", {"beta": 1.0})]:
        report = parity(getattr(F, name), getattr(TF, name), (x, y), dict(kw, reduction="sum"), (0, 1))
        assert report.ok, (name, report.problems)


# --------------------------------------------------------------------------------------------
# The eager paths (in place, chunked) against the differentiable code

EAGER_CASES = [
    ("l1_loss", {}),
    ("mse_loss", {}),
    ("huber_loss", {"delta": 0.7}),
    ("smooth_l1_loss", {"beta": 0.7}),
    ("smooth_l1_loss", {"beta": 1.0}),
    ("smooth_l1_loss", {"beta": float("inf")}),
]


def _pair(kind, dtype, n=35):
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(n, generator=g, dtype=torch.float64) * 2).to(dtype)
    y = torch.randn(n, generator=g, dtype=torch.float64).to(dtype)
    x[:4] = y[:4] + torch.tensor([0.0, 0.7, -1.0, 1.0], dtype=dtype)  # at the kinks
    if kind == "flat":
        return x, y
    if kind == "matrix":
        return x.view(5, 7), y.view(5, 7)
    if kind == "broadcast":
        return x.view(5, 7), y[:7]
    return x.view(7, 5).t(), y.view(5, 7)  # non-contiguous input


def _value_and_grads(name, kw, x, y, reduction, create_graph=False):
    x, y = x.detach().clone().requires_grad_(), y.detach().clone().requires_grad_()
    out = getattr(F, name)(x, y, reduction=reduction, **kw)
    upstream = torch.linspace(0.5, 1.5, out.numel(), dtype=out.dtype).view(out.shape)
    return (out, *torch.autograd.grad(out, (x, y), upstream, create_graph=create_graph))


@pytest.mark.cpu_only
@pytest.mark.filterwarnings("ignore:Using a target size")
@pytest.mark.parametrize("chunk", [None, 16])
@pytest.mark.parametrize("kind", ["flat", "matrix", "broadcast", "noncontiguous"])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("name,kw", EAGER_CASES)
def test_eager_matches_differentiable_path(name, kw, reduction, kind, chunk, monkeypatch):
    # chunk=16 runs the chunked forward/backward on 35 elements (two full chunks and a partial
    # one) where the pair is contiguous and of one shape
    if chunk is not None:
        monkeypatch.setattr(RG, "_CHUNK", chunk)
    x, y = _pair(kind, torch.float64)
    x0, y0 = x.clone(), y.clone()
    eager = _value_and_grads(name, kw, x, y, reduction)
    # create_graph=True runs the differentiable backward; a forward-AD level the differentiable
    # forward
    general = _value_and_grads(name, kw, x, y, reduction, create_graph=True)
    with fwAD.dual_level():
        general = (getattr(F, name)(x, y, reduction=reduction, **kw), *general[1:])
    ref = (getattr(TF, name)(x, y, reduction=reduction, **kw),)
    for a, b in zip(eager, general):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-13, atol=1e-15, equal_nan=True)
    torch.testing.assert_close(eager[0], ref[0], rtol=1e-13, atol=1e-15)
    assert torch.equal(x, x0) and torch.equal(y, y0)


@pytest.mark.cpu_only
@pytest.mark.parametrize("chunk", [None, 16])
@pytest.mark.parametrize("name,kw", EAGER_CASES)
def test_eager_float32_matches_torch(name, kw, chunk, monkeypatch):
    if chunk is not None:
        monkeypatch.setattr(RG, "_CHUNK", chunk)
    x, y = _pair("matrix", torch.float32)
    for reduction in ("none", "mean", "sum"):
        report = parity(getattr(F, name), getattr(TF, name), (x, y), dict(kw, reduction=reduction), (0, 1))
        assert report.ok, (reduction, report.problems)


@pytest.mark.cpu_only
@pytest.mark.parametrize("n", [1, 35, 300])
@pytest.mark.parametrize("name,kw", EAGER_CASES[2:])
def test_eager_dot_reduction_matches_product_and_sum(name, kw, n, monkeypatch):
    # at most _DOT_MAX elements, Huber/SmoothL1 'mean'/'sum' end in one dot product: the same
    # value (to rounding) as the product-and-sum path, and torch's
    x, y = _pair("flat", torch.float32, n=max(n, 4))
    x, y = x[:n], y[:n]
    for reduction in ("mean", "sum"):
        fn = getattr(F, name)
        with_dot = fn(x, y, reduction=reduction, **kw)
        monkeypatch.setattr(RG, "_DOT_MAX", -1)
        without = fn(x, y, reduction=reduction, **kw)
        monkeypatch.undo()
        torch.testing.assert_close(with_dot, without, rtol=1e-6, atol=0)
        torch.testing.assert_close(with_dot, getattr(TF, name)(x, y, reduction=reduction, **kw), rtol=1e-6, atol=0)


@pytest.mark.cpu_only
def test_eager_elementwise_loss_is_torchs_bit_for_bit():
    # L1, MSE, Huber and SmoothL1 with beta = 1 round as torch's kernels do, chunked or not;
    # SmoothL1 with another beta differs by an ulp or two inside |d| < beta, where both round
    # twice (see _smooth_l1_)
    x, y = _pair("flat", torch.float32, n=4096)
    for name, kw in EAGER_CASES[:3] + [("smooth_l1_loss", {"beta": 1.0}), ("huber_loss", {"delta": 1.0})]:
        ref = getattr(TF, name)(x, y, reduction="none", **kw)
        assert torch.equal(getattr(F, name)(x, y, reduction="none", **kw), ref), name
    ref = TF.smooth_l1_loss(x, y, reduction="none", beta=0.7)
    torch.testing.assert_close(F.smooth_l1_loss(x, y, reduction="none", beta=0.7), ref, rtol=2.5e-7, atol=0)


@pytest.mark.cpu_only
def test_smooth_l1_tiny_beta_backward_matches_torch():
    # below 1e-30 the eager backward would overflow 1/beta in float32: the general code runs
    x, y = _pair("flat", torch.float32)
    report = parity(F.smooth_l1_loss, TF.smooth_l1_loss, (x, y), {"beta": 1e-35}, (0, 1))
    assert report.ok, report.problems


# --------------------------------------------------------------------------------------------
# Memory kept for backward


@pytest.mark.parametrize("wrt", [(0,), (0, 1)])
@pytest.mark.parametrize("name", ["l1_loss", "mse_loss", "smooth_l1_loss", "huber_loss"])
def test_saved_bytes_at_most_torchs(name, wrt):
    x, y = _pair("flat", torch.float32, n=1000)
    ours = saved_bytes(getattr(F, name), (x, y), {}, wrt)
    theirs = saved_bytes(getattr(TF, name), (x, y), {}, wrt)
    assert ours.total <= theirs.total, (ours, theirs)
    if name == "l1_loss":
        # only the int8 sign of x - y (torch keeps the float difference)
        assert ours.total == ours.extra == 1000


def test_l1_sign_path_double_backward_and_jvp(monkeypatch):
    monkeypatch.setattr(native, "module", None)  # the Python sign path (the L1 kernel: test_native_regression)
    # the saved sign is a constant of the backward: second derivatives are 0, and the backward
    # stays linear in (differentiable with respect to) the upstream gradient
    g = torch.Generator().manual_seed(0)
    x, y = (torch.randn(5, 7, generator=g, dtype=torch.float64).requires_grad_() for _ in range(2))
    fn = lambda a, b: F.l1_loss(a, b, reduction="sum")  # noqa: E731
    torch.autograd.gradgradcheck(fn, (x, y))
    out = fn(x, y)
    assert type(out.grad_fn).__name__ == "L1LossFunctionBackward"
    gx, = torch.autograd.grad(out, x, create_graph=True)
    assert torch.equal(gx, (x - y).sign())
    tx = torch.randn_like(x)
    _, t = torch.func.jvp(lambda a: F.l1_loss(a, y.detach()), (x.detach(),), (tx,))
    torch.testing.assert_close(t, ((x - y).sign() * tx).mean().detach())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_l1_sign_path_low_precision_mean_matches_torch(dtype):
    # 'mean' over more elements than float16 holds exactly (or at all: 70000 > 65504)
    g = torch.Generator().manual_seed(0)
    x, y = (torch.randn(70001, generator=g).to(dtype) for _ in range(2))
    report = parity(F.l1_loss, TF.l1_loss, (x, y), {}, (0, 1), rtol=1e-2, atol=1e-6)
    assert report.ok, report.problems


@pytest.mark.cpu_only
def test_cached_constants_made_under_inference_mode_serve_create_graph():
    # the eager paths cache 0-d constants (_base.constant); one first made inside
    # torch.inference_mode must still be a normal tensor that a create_graph backward may save
    with torch.inference_mode():
        F.mse_loss(torch.randn(8), torch.randn(8))
    c = constant(8, torch.float32, torch.device("cpu"))
    assert not c.is_inference()
    g = torch.ones(3, requires_grad=True)
    (gg,) = torch.autograd.grad((g / c).sum(), g)
    torch.testing.assert_close(gg, torch.full((3,), 1 / 8))


# --- issue 17: precision of mixed dtypes, weight dtypes, batched gradients ---------------------


def _exact(name, *args, **kwargs):
    up = lambda t: t.double() if isinstance(t, torch.Tensor) else t
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return getattr(TF, name)(*[up(a) for a in args], **{k: up(v) for k, v in kwargs.items()})


@pytest.mark.parametrize("name", ["l1_loss", "mse_loss", "smooth_l1_loss", "huber_loss"])
def test_0d_float64_operand_is_computed_in_float64(name, device):
    # torch broadcasts the pair first, so a 0-d float64 operand promotes like any other; the
    # result was float64 but only float32-accurate (2.031249761581421 vs 2.031249807775025)
    x = torch.tensor(0.1, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0.35, 2.1], requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for a, b in ((x, y), (y, x)):
            for reduction in ("none", "sum"):
                out = getattr(F, name)(a, b, reduction=reduction)
                ref = getattr(TF, name)(a, b, reduction=reduction)
                assert out.dtype == ref.dtype
                exact = _exact(name, a, b, reduction=reduction)
                # (Huber keeps a float32 input's dtype: the float64 value rounded once)
                torch.testing.assert_close(out.double(), exact, rtol=torch.finfo(out.dtype).eps, atol=0)
                ga, gb = torch.autograd.grad(out.sum(), (a, b))
                ea, eb = torch.autograd.grad(exact.sum(), (a, b))
                assert ga.dtype == a.dtype and gb.dtype == b.dtype
                for got, exp, t in ((ga, ea, a), (gb, eb, b)):
                    rtol = 1e-6 if t.dtype == torch.float32 or out.dtype == torch.float32 else 1e-15
                    torch.testing.assert_close(got.double(), exp.double(), rtol=rtol, atol=1e-300)


@pytest.mark.parametrize("name", ["l1_loss", "mse_loss", "huber_loss"])
@pytest.mark.parametrize("dtypes", [(torch.float32, torch.float64), (torch.bfloat16, torch.float32)], ids=str)
def test_weight_dtype_promotes_and_is_computed_in_it(name, dtypes, device):
    # huber_loss ignored the weight's dtype (torch multiplies its loss by the weight); the
    # weight gradient of l1/mse with a float64 weight was only float32-accurate
    low, high = dtypes
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, generator=g).to(device, low)
    y = torch.randn(3, 4, generator=g).to(device, low)
    w = torch.rand(3, 4, generator=g).add(0.2).to(device, high).requires_grad_()
    for reduction in ("none", "mean", "sum"):
        out = getattr(F, name)(x, y, weight=w, reduction=reduction)
        assert out.dtype == getattr(TF, name)(x, y, weight=w, reduction=reduction).dtype == high
        exact = _exact(name, x, y, weight=w, reduction=reduction)
        eps = torch.finfo(high).eps
        torch.testing.assert_close(out.double(), exact, rtol=4 * eps, atol=0)
        (gw,) = torch.autograd.grad(out.sum(), w)
        (ew,) = torch.autograd.grad(exact.sum(), w)
        torch.testing.assert_close(gw.double(), ew.double(), rtol=4 * eps, atol=eps)


@pytest.mark.parametrize("name", ["l1_loss", "mse_loss", "smooth_l1_loss", "huber_loss"])
def test_batched_gradients(name, device):
    # the eager in-place backward (mul_) refused the BatchedTensor of is_grads_batched
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    y = torch.randn(4, 3, dtype=torch.float64)
    out = getattr(F, name)(x, y, reduction="none")
    eye = torch.eye(12, dtype=torch.float64).view(12, 4, 3)
    (jac,) = torch.autograd.grad(out, x, eye, is_grads_batched=True)
    expect = torch.autograd.functional.jacobian(lambda a: getattr(TF, name)(a, y, reduction="none"), x)
    torch.testing.assert_close(jac.view(4, 3, 4, 3), expect)
    for reduction in ("mean", "sum"):
        torch.autograd.gradcheck(lambda a, r=reduction: getattr(F, name)(a, y, reduction=r), (x,), check_batched_grad=True)
