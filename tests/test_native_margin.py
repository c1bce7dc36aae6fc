"""Native kernel of the margin family (multi_margin_loss) against the reference."""

import pytest
import torch

import torchloss.functional as TF
from native_util import check_double_backward, check_kernel, reference_only, requires_native, takes_kernel

pytestmark = requires_native

REDUCTIONS = ["none", "mean", "sum"]
DTYPES = [torch.float32, torch.float64]
# one element, the bench's small shape, and above one block (kBlock = 16384: the parallel path)
SHAPES = [(1, 1), (32, 10), (100, 1000)]
NODE = "MultiMargin"


def _inputs(shape, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=dtype)
    t = torch.randint(0, shape[-1], shape[:-1], generator=g)
    w = torch.rand(shape[-1], generator=g, dtype=dtype) + 0.1
    return x, t, w


@pytest.mark.parametrize("weighted", [False, True], ids=["plain", "weight"])
@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_multi_margin_matches_reference(shape, reduction, dtype, p, weighted):
    x, t, w = _inputs(shape, dtype)
    for margin in (1.0, 0.3):
        kw = {"reduction": reduction, "p": p, "margin": margin}
        if weighted:
            kw["weight"] = w
        check_kernel(TF.multi_margin_loss, (x, t), kw, node=NODE)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_multi_margin_unbatched_and_scalar_targets(reduction):
    x, t, w = _inputs((1, 7), torch.float32, seed=3)
    for p in (1, 2):
        kw = {"reduction": reduction, "p": p, "weight": w}
        check_kernel(TF.multi_margin_loss, (x[0], t[0]), kw, node=NODE)  # (C) input, () target
        check_kernel(TF.multi_margin_loss, (x[0], t), kw, node=NODE)  # (C) input, (1,) target
        check_kernel(TF.multi_margin_loss, (x, t[0]), kw, node=NODE)  # (1, C) input, () target


def test_multi_margin_kinks_and_non_finite_values_match_reference():
    # exact kinks (z = 0: no term, gradient 0), negative and zero margins, infinities, NaN
    x = torch.tensor([[0.0, 1.0, -1.0, 0.0], [2.0, 1.0, 3.0, 2.0], [0.5, -0.5, 0.5, 1.5],
                      [float("inf"), 0.0, 1.0, 2.0], [0.0, float("-inf"), 1.0, 0.0], [1.0, float("nan"), 0.0, 2.0]])
    t = torch.tensor([1, 0, 3, 0, 2, 3])
    for dtype in DTYPES:
        for margin in (1.0, 0.0, -0.5, 2.0):
            for p in (1, 2):
                for reduction in REDUCTIONS:
                    kw = {"reduction": reduction, "p": p, "margin": margin}
                    check_kernel(TF.multi_margin_loss, (x.to(dtype), t), kw, node=NODE)
                    check_kernel(TF.multi_margin_loss, (x[:3].to(dtype), t[:3]), kw, node=NODE)
                    # torch agrees where everything is finite
                    ours = TF.multi_margin_loss(x[:3].to(dtype), t[:3], **kw)
                    torch.testing.assert_close(ours, torch.nn.functional.multi_margin_loss(x[:3].to(dtype), t[:3], **kw))


def test_multi_margin_empty_batch():
    x, t = torch.empty(0, 5), torch.empty(0, dtype=torch.long)
    for reduction in REDUCTIONS:
        for weight in (None, torch.rand(5)):
            xr = x.clone().requires_grad_()
            out = TF.multi_margin_loss(xr, t, reduction=reduction, weight=weight)
            assert NODE in out.grad_fn.name()
            with reference_only():
                ref = TF.multi_margin_loss(x, t, reduction=reduction, weight=weight)
            torch.testing.assert_close(out, ref, equal_nan=True)
            (g,) = torch.autograd.grad(out.sum(), xr)
            assert g.shape == (0, 5)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_multi_margin_double_backward(reduction):
    # away from the kinks (gradcheck's finite differences must not cross one)
    x = torch.tensor([[0.1, 0.9, -0.7, 0.35], [1.2, 0.4, 2.6, 1.9], [0.3, -0.55, 0.45, 1.1]], dtype=torch.float64)
    t = torch.tensor([1, 0, 3])
    w = torch.tensor([0.5, 1.5, 2.0, 0.8], dtype=torch.float64)
    for p in (1, 2):
        check_double_backward(TF.multi_margin_loss, (x, t), {"reduction": reduction, "p": p})
        check_double_backward(TF.multi_margin_loss, (x, t), {"reduction": reduction, "p": p, "weight": w, "margin": 0.7})


def test_multi_margin_none_reduction_with_strided_upstream_gradients():
    x, t, w = _inputs((6, 5), torch.float32, seed=1)
    for p in (1, 2):
        for up in [torch.tensor(0.7).expand(6), torch.randn(12)[::2], torch.randn(6)]:
            xr = x.clone().requires_grad_()
            out = TF.multi_margin_loss(xr, t, p=p, weight=w, reduction="none")
            assert NODE in out.grad_fn.name()
            (got,) = torch.autograd.grad(out, xr, up)
            with reference_only():
                (want,) = torch.autograd.grad(TF.multi_margin_loss(xr, t, p=p, weight=w, reduction="none"), xr, up)
            torch.testing.assert_close(got, want)


def test_multi_margin_does_not_depend_on_the_thread_count():
    x, t, w = _inputs((300, 1000), torch.float32, seed=2)
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 3):
            torch.set_num_threads(n)
            xr = x.clone().requires_grad_()
            outs = [TF.multi_margin_loss(xr, t, p=p, weight=w, reduction=r) for p in (1, 2) for r in REDUCTIONS]
            grads = torch.autograd.grad(sum(o.sum() for o in outs), xr)
            results.append([o.detach() for o in outs] + list(grads))
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(*results):
        assert torch.equal(a, b)


def test_multi_margin_reference_takes_the_rest():
    x, t, w = _inputs((6, 4), torch.float32)
    assert takes_kernel(TF.multi_margin_loss, (x, t))
    assert not takes_kernel(TF.multi_margin_loss, (x.t().contiguous().t(), t))  # non-contiguous input
    assert not takes_kernel(TF.multi_margin_loss, (x, (torch.arange(12) % 4)[::2]))  # non-contiguous target
    assert not takes_kernel(TF.multi_margin_loss, (x, t), {"weight": torch.rand(8)[::2]})  # non-contiguous weight
    assert not takes_kernel(TF.multi_margin_loss, (x.half(), t))
    assert not takes_kernel(TF.multi_margin_loss, (x.bfloat16(), t))
    assert not takes_kernel(TF.multi_margin_loss, (torch.tensor(0.5), torch.tensor(0)))  # 0-d input
    # forward AD and torch.func take the reference
    with torch.autograd.forward_ad.dual_level():
        dual = torch.autograd.forward_ad.make_dual(x, torch.ones_like(x))
        out = TF.multi_margin_loss(dual, t)
        assert torch.autograd.forward_ad.unpack_dual(out).tangent is not None
    g = torch.func.grad(lambda v: TF.multi_margin_loss(v, t))(x)
    with reference_only():
        torch.testing.assert_close(g, torch.func.grad(lambda v: TF.multi_margin_loss(v, t))(x))
    # no grad: the kernel still computes the value
    with torch.no_grad():
        torch.testing.assert_close(TF.multi_margin_loss(x, t), torch.nn.functional.multi_margin_loss(x, t))


def test_multi_margin_errors_match_reference():
    x, t, w = _inputs((6, 4), torch.float32)
    bad = [
        ((x, torch.tensor([0, 4, 1, 1, 2, 0])), {}),  # out of range (the kernel's check)
        ((x, torch.tensor([0, -1, 1, 1, 2, 0])), {}),
        ((x[0], torch.tensor(4)), {"weight": w}),
        ((x, t), {"p": 3}),
        ((x, t), {"weight": w.double()}),
        ((x, t), {"weight": torch.rand(5)}),
        ((x, t), {"reduction": "bogus"}),
        ((x, t[:5]), {}),
        ((x, t.int()), {}),
        ((x.reshape(6, 4, 1), t), {}),
    ]
    for args, kw in bad:
        with pytest.raises(Exception) as ours:
            TF.multi_margin_loss(*args, **kw)
        with reference_only(), pytest.raises(Exception) as ref:
            TF.multi_margin_loss(*args, **kw)
        assert type(ours.value) is type(ref.value) and str(ours.value) == str(ref.value), (ours.value, ref.value)
    with pytest.raises(RuntimeError, match=r"target out of range \(class indices must be in \[0, 3\]\)"):
        TF.multi_margin_loss(x, torch.tensor([0, 4, 1, 1, 2, 0]))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("p", [1, 2])
def test_multi_margin_infinite_weight_multiplies_active_terms_only(p, reduction):
    # torch's `if (z > 0) h *= w[y]`: a row without an active term is 0, also when w[y] is
    # infinite (the kernel once multiplied the row's zero sum, and its backward's zero count)
    inf = float("inf")
    for dtype in DTYPES:
        x = torch.tensor([[-1.605, 0.2325, 2.2399], [3.0, 0.4, -0.3], [0.1, 0.2, 0.3]], dtype=dtype)
        t = torch.tensor([2, 0, 1])
        w = torch.tensor([inf, 1.3, inf], dtype=dtype)
        kw = {"reduction": reduction, "p": p, "weight": w}
        check_kernel(TF.multi_margin_loss, (x[:2], t[:2]), kw, node=NODE)
        ours = TF.multi_margin_loss(x, t, **kw)
        torch.testing.assert_close(ours, torch.nn.functional.multi_margin_loss(x, t, **kw))
        xr = x.clone().requires_grad_()
        (g,) = torch.autograd.grad(TF.multi_margin_loss(xr, t, **kw).sum(), xr)
        xt = x.clone().requires_grad_()
        (gt,) = torch.autograd.grad(torch.nn.functional.multi_margin_loss(xt, t, **kw).sum(), xt)
        torch.testing.assert_close(g[:2], gt[:2])
