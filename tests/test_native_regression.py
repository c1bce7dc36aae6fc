"""Native kernels of the regression family (Huber, SmoothL1) against the reference."""

import math
import warnings

import pytest
import torch

import torchloss.functional as TF
from native_util import check_double_backward, check_kernel, requires_native, reference_only, takes_kernel

pytestmark = requires_native

REDUCTIONS = ["none", "mean", "sum"]
DTYPES = [torch.float32, torch.float64]
# small (the bench's), one element, a 2-d one, and above kBlock (16K) elements: the parallel path
SHAPES = [(32,), (1,), (7, 13), (100_003,)]
LOSSES = {
    "huber_loss": (TF.huber_loss, "delta", "HuberNative"),
    "smooth_l1_loss": (TF.smooth_l1_loss, "beta", "SmoothL1Native"),
}


def _pair(shape, dtype, seed=0, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=dtype) * scale
    t = torch.randn(shape, generator=g, dtype=dtype)
    return x, t


def _tol(shape, dtype):
    # the kernel sums in double, the reference in its dtype (torch's cascade sum): at 100K float32
    # elements the reference's own error is a few 1e-7 of the total
    if dtype == torch.float32 and math.prod(shape) > 10_000:
        return {"rtol": 1e-5, "atol": 1e-6}
    return {}


@pytest.mark.parametrize("loss", list(LOSSES))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_matches_reference(loss, shape, reduction, dtype):
    fn, _, node = LOSSES[loss]
    x, t = _pair(shape, dtype)
    check_kernel(fn, (x, t), {"reduction": reduction}, node=node, **_tol(shape, dtype))


@pytest.mark.parametrize("loss", list(LOSSES))
@pytest.mark.parametrize("p", [0.25, 1.0, 4.0, 3.0, 1e-3, 2.0**-20, math.inf])  # powers of two: 1/beta exact
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_parameter(loss, p, reduction):
    fn, name, node = LOSSES[loss]
    x, t = _pair((64,), torch.float32)
    if loss == "smooth_l1_loss" and p == math.inf:
        # beta = inf stays on the reference (its gradient at d = ±inf is sign(d), torch's
        # |d| >= beta branch; the kernel's clamp(d)/beta would be NaN there)
        assert not takes_kernel(fn, (x, t), {"reduction": reduction, name: p}, (0,))
        return
    check_kernel(fn, (x, t), {"reduction": reduction, name: p}, node=node)


@pytest.mark.parametrize("loss", list(LOSSES))
@pytest.mark.parametrize("shape", [(32,), (40_000,)], ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_target_gradient(loss, shape, reduction):
    fn, _, node = LOSSES[loss]
    x, t = _pair(shape, torch.float32)
    check_kernel(fn, (x, t), {"reduction": reduction}, wrt=(0, 1), node=node, **_tol(shape, torch.float32))
    check_kernel(fn, (x, t), {"reduction": reduction}, wrt=(1,), node=node, **_tol(shape, torch.float32))


@pytest.mark.parametrize("loss", list(LOSSES))
def test_kinks_and_nan(loss):
    # |d| exactly at the threshold, d = 0, infinities and NaN: values and gradients as the reference
    fn, name, node = LOSSES[loss]
    x = torch.tensor([0.0, 1.0, -1.0, 2.0, -2.0, 0.5, math.inf, -math.inf, math.nan, 3.0])
    t = torch.tensor([0.0, 0.0, 0.0, 1.0, -1.0, 0.0, 0.0, 0.0, 0.0, math.nan])
    for reduction in REDUCTIONS:
        for p in (1.0, 0.5):
            check_kernel(fn, (x, t), {"reduction": reduction, name: p}, wrt=(0, 1), node=node)


@pytest.mark.parametrize("loss", list(LOSSES))
def test_strided_upstream_gradients(loss):
    fn, _, _ = LOSSES[loss]
    x, t = _pair((6, 5), torch.float64)
    for make in (
        lambda out: out.sum(),  # an expanded (stride 0) gradient
        lambda out: (out * torch.arange(30.0, dtype=out.dtype).reshape(5, 6).t()).sum(),  # transposed
        lambda out: out[:, ::2].sum() + out.pow(2).sum(),  # a contiguous one again
    ):
        grads = []
        for ref in (False, True):
            xx, tt = x.clone().requires_grad_(), t.clone().requires_grad_()
            if ref:
                with reference_only():
                    out = fn(xx, tt, reduction="none")
            else:
                out = fn(xx, tt, reduction="none")
            grads.append(torch.autograd.grad(make(out), (xx, tt)))
        for a, b in zip(*grads):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("loss", list(LOSSES))
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_double_backward(loss, reduction):
    fn, name, _ = LOSSES[loss]
    x, t = _pair((9,), torch.float64, scale=1.0)
    check_double_backward(fn, (x, t), {"reduction": reduction, name: 0.7})
    check_double_backward(fn, (x, t), {"reduction": reduction}, wrt=(0, 1))


@pytest.mark.parametrize("loss", list(LOSSES))
def test_parallel_sum_is_thread_independent(loss):
    fn, _, _ = LOSSES[loss]
    x, t = _pair((300_001,), torch.float32)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = fn(x, t, reduction="sum")
        torch.set_num_threads(max(threads, 2))
        many = fn(x, t, reduction="sum")
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, many)
    exact = fn(x.double(), t.double(), reduction="sum")
    torch.testing.assert_close(one.double(), exact, rtol=1e-7, atol=0)


@pytest.mark.parametrize("loss", list(LOSSES))
def test_reference_takes_the_rest(loss):
    fn, name, _ = LOSSES[loss]
    x, t = _pair((6, 4), torch.float32)
    assert takes_kernel(fn, (x, t))
    assert not takes_kernel(fn, (x.t().contiguous().t(), t))  # non-contiguous input
    assert not takes_kernel(fn, (x, t.t().contiguous().t()))  # non-contiguous target
    assert not takes_kernel(fn, (x.half(), t.half()))
    assert not takes_kernel(fn, (x.bfloat16(), t.bfloat16()))
    assert not takes_kernel(fn, (x, t.double()))  # mixed dtypes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert not takes_kernel(fn, (x, t[:1]))  # broadcasting
    with pytest.raises(RuntimeError):  # a NaN beta/delta is refused before any kernel, as by torch
        fn(x, t, **{name: math.nan})
    if loss == "huber_loss":
        assert not takes_kernel(fn, (x, t), {"weight": torch.rand(6, 4)})
    else:
        # beta == 0 is L1, computed by L1's Function
        out = fn(x.detach().requires_grad_(), t, beta=0.0)
        torch.testing.assert_close(out, torch.nn.functional.l1_loss(x, t))
    # nothing to differentiate: the kernel still runs the forward
    with torch.no_grad():
        torch.testing.assert_close(fn(x, t), getattr(torch.nn.functional, loss)(x, t))
    # forward AD and torch.func go to the reference
    from torch.func import grad

    xr = x.detach().requires_grad_()
    g = grad(lambda a: fn(a, t))(x.detach())
    torch.testing.assert_close(g, torch.autograd.grad(getattr(torch.nn.functional, loss)(xr, t), xr)[0])
    with torch.autograd.forward_ad.dual_level():
        dual = torch.autograd.forward_ad.make_dual(x.detach(), torch.ones_like(x))
        tangent = torch.autograd.forward_ad.unpack_dual(fn(dual, t)).tangent
    torch.testing.assert_close(tangent, g.sum())


@pytest.mark.parametrize("loss", list(LOSSES))
def test_errors(loss):
    fn, name, _ = LOSSES[loss]
    x, t = _pair((5,), torch.float32)
    with pytest.raises(RuntimeError, match="does not support"):
        fn(x, t, **{name: -1.0})
    with pytest.raises(ValueError):
        fn(x, t, reduction="average")
    with pytest.raises(RuntimeError), pytest.warns(UserWarning, match="target size"):
        fn(x, torch.randn(3))
    # the kernels' own checks (never reached from torchloss.functional)
    from torchloss import _native as native

    kernel = getattr(native.module, loss)
    with pytest.raises(RuntimeError, match="one shape"):
        kernel(x, torch.randn(6), 1, 1.0)
    with pytest.raises(RuntimeError, match="one dtype"):
        kernel(x, t.double(), 1, 1.0)
    with pytest.raises(RuntimeError, match="float32 or float64"):
        kernel(x.half(), t.half(), 1, 1.0)
    with pytest.raises(RuntimeError):
        kernel(x, t, 1, 0.0)
    with pytest.raises(RuntimeError, match="reduction"):
        kernel(x, t, 7, 1.0)


@pytest.mark.parametrize("loss", list(LOSSES))
def test_empty(loss):
    fn, _, _ = LOSSES[loss]
    x, t = torch.empty(0, requires_grad=True), torch.empty(0)
    ref = getattr(torch.nn.functional, loss)
    for reduction in REDUCTIONS:
        out = fn(x, t, reduction=reduction)
        torch.testing.assert_close(out, ref(x, t, reduction=reduction), equal_nan=True)
        (g,) = torch.autograd.grad(out.sum(), x)
        assert g.shape == (0,)


# --- L1 and MSE (issue 15) ------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("loss,node", [("l1_loss", "L1Native"), ("mse_loss", "MSENative")])
@pytest.mark.parametrize("wrt", [(0,), (1,), (0, 1)], ids=str)
def test_l1_mse_match_reference(loss, node, reduction, dtype, wrt):
    g = torch.Generator().manual_seed(5)
    fn = getattr(TF, loss)
    for shape in ((1,), (32,), (7, 5), (3 * (1 << 14) + 5,)):
        x = torch.randn(shape, generator=g, dtype=dtype)
        y = torch.randn(shape, generator=g, dtype=dtype)
        y.view(-1)[:3] = x.view(-1)[:3]  # d = 0: L1's subgradient 0
        check_kernel(fn, (x, y), {"reduction": reduction}, wrt, node=node)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_l1_mse_double_backward(reduction):
    x = torch.randn(6, dtype=torch.float64)
    y = torch.randn(6, dtype=torch.float64)
    for loss in ("l1_loss", "mse_loss"):
        check_double_backward(getattr(TF, loss), (x, y), {"reduction": reduction}, (0, 1))


def test_l1_saves_the_sign_only():
    from torchloss.testing import saved_bytes

    x, y = torch.randn(32), torch.randn(32)
    ours = saved_bytes(TF.l1_loss, (x, y), {}, (0,))
    theirs = saved_bytes(torch.nn.functional.l1_loss, (x, y), {}, (0,))
    assert ours.total == 32 and ours.total <= theirs.total


def test_l1_mse_reference_takes_the_rest():
    x, y = torch.randn(6), torch.randn(6)
    for loss in ("l1_loss", "mse_loss"):
        fn = getattr(TF, loss)
        assert takes_kernel(fn, (x, y))
        assert not takes_kernel(fn, (x, y), {"weight": torch.rand(6)})
        assert not takes_kernel(fn, (x, y.double()))
        assert not takes_kernel(fn, (x.half(), y.half()))
        assert not takes_kernel(fn, (x[::2], y[::2]))
        with pytest.warns(UserWarning):
            assert not takes_kernel(fn, (x, y[:1]))
