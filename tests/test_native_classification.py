"""Native kernels of the classification family (NLL, cross entropy) against the reference."""

import pytest
import torch

import torchloss.functional as TF
from native_util import check_double_backward, check_kernel, kernel_nodes, requires_native, takes_kernel

pytestmark = requires_native

REDUCTIONS = ["none", "mean", "sum"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("shape", [(1, 1), (32, 10), (7, 1000)], ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_nll_matches_reference(shape, reduction, dtype):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g, dtype=dtype).log_softmax(1)
    t = torch.randint(0, shape[1], shape[:1], generator=g)
    check_kernel(TF.nll_loss, (x, t), {"reduction": reduction}, node="NLLPlain")


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_nll_double_backward(reduction):
    x = torch.randn(6, 4, dtype=torch.float64)
    t = torch.tensor([0, 3, 1, 1, 2, 0])
    check_double_backward(TF.nll_loss, (x, t), {"reduction": reduction})


def test_nll_reference_takes_the_rest():
    x = torch.randn(6, 4)
    t = torch.tensor([0, 3, 1, 1, 2, 0])
    assert not takes_kernel(TF.nll_loss, (x.t().contiguous().t(), t))  # non-contiguous
    assert not takes_kernel(TF.nll_loss, (x.half(), t))
    # weights and an ignore_index among the classes: the weighted kernel (below)
    assert takes_kernel(TF.nll_loss, (x, t), {"weight": torch.rand(4)}) == ["NLLWeighted"]
    assert takes_kernel(TF.nll_loss, (x, t), {"ignore_index": 1}) == ["NLLWeighted"]
    assert not takes_kernel(TF.nll_loss, (x.reshape(6, 4, 1), t.reshape(6, 1)))
    with pytest.raises(IndexError, match="out of bounds"):
        TF.nll_loss(x, torch.tensor([0, 4, 1, 1, 2, 0]))
    # the ignored index outside [0, C): the kernel's bounds check sends it to the reference
    t2 = torch.tensor([0, -100, 1, 1, 2, 0])
    torch.testing.assert_close(TF.nll_loss(x, t2), torch.nn.functional.nll_loss(x, t2))


# --- cross entropy, plain index targets ---------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("shape", [(1, 1), (5, 3), (32, 10), (7, 1000), (50, 2000), (300, 37)], ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_ce_matches_reference(shape, reduction, dtype):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(shape, generator=g, dtype=dtype) * 4
    t = torch.randint(0, shape[1], shape[:1], generator=g)
    check_kernel(TF.cross_entropy, (x, t), {"reduction": reduction}, node="CrossEntropyPlain")


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_ce_extreme_logits(reduction):
    # a dominating logit (tiny loss: formed as (x_t - m) - log S), very negative logits (exp
    # underflow) and large spreads
    x = torch.tensor([[100.0, 0.0, -100.0], [0.0, 30.0, -30.0], [-1e4, 0.0, 1e4], [5.0, 5.0, 5.0]])
    t = torch.tensor([0, 1, 0, 2])
    check_kernel(TF.cross_entropy, (x, t), {"reduction": reduction}, node="CrossEntropyPlain")


def test_ce_non_finite_like_torch():
    nan, inf = float("nan"), float("inf")
    x = torch.tensor([[nan, 1.0, 2.0], [0.0, inf, 1.0], [-inf, 0.0, 1.0], [1.0, 2.0, nan]])
    t = torch.tensor([1, 0, 2, 0])
    assert takes_kernel(TF.cross_entropy, (x, t))
    got = TF.cross_entropy(x, t, reduction="none")
    want = torch.nn.functional.cross_entropy(x, t, reduction="none")
    torch.testing.assert_close(got, want, equal_nan=True)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_ce_parallel_blocks_do_not_depend_on_threads(reduction):
    # more rows than one block: the parallel path; the same bits on 1 and 2 threads
    g = torch.Generator().manual_seed(2)
    x = torch.randn(400, 300, generator=g).requires_grad_()
    t = torch.randint(0, 300, (400,), generator=g)
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            loss = TF.cross_entropy(x, t, reduction=reduction)
            (gx,) = torch.autograd.grad(loss, x, torch.ones_like(loss))
            results.append((loss, gx))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])


def test_ce_upstream_grad_non_contiguous():
    x = torch.randn(6, 4, requires_grad=True)
    t = torch.tensor([0, 3, 1, 1, 2, 0])
    loss = TF.cross_entropy(x, t, reduction="none")
    assert kernel_nodes(loss) == ["CrossEntropyPlain"]
    go = torch.randn(12)[::2]
    (got,) = torch.autograd.grad(loss, x, go)
    (want,) = torch.autograd.grad(torch.nn.functional.cross_entropy(x, t, reduction="none"), x, go)
    torch.testing.assert_close(got, want)
    (got,) = torch.autograd.grad(TF.cross_entropy(x, t, reduction="none"), x, torch.tensor(2.0).expand(6))
    (want,) = torch.autograd.grad(torch.nn.functional.cross_entropy(x, t, reduction="none"), x, torch.full((6,), 2.0))
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_ce_double_backward(reduction):
    x = torch.randn(6, 4, dtype=torch.float64)
    t = torch.tensor([0, 3, 1, 1, 2, 0])
    check_double_backward(TF.cross_entropy, (x, t), {"reduction": reduction})


def test_ce_no_input_grad():
    x = torch.randn(6, 4)
    t = torch.tensor([0, 3, 1, 1, 2, 0])
    torch.testing.assert_close(TF.cross_entropy(x, t), torch.nn.functional.cross_entropy(x, t))


def test_ce_reference_takes_the_rest():
    x = torch.randn(6, 4)
    t = torch.tensor([0, 3, 1, 1, 2, 0])
    assert not takes_kernel(TF.cross_entropy, (x.t().contiguous().t(), t))  # non-contiguous
    assert not takes_kernel(TF.cross_entropy, (x.half(), t))
    # weights, smoothing and an ignore_index among the classes: the weighted kernel (below)
    for kw in ({"weight": torch.rand(4)}, {"label_smoothing": 0.1}, {"ignore_index": 1}):
        assert takes_kernel(TF.cross_entropy, (x, t), kw) == ["CrossEntropyWeighted"]
    assert not takes_kernel(TF.cross_entropy, (x.reshape(6, 4, 1), t.reshape(6, 1)))
    assert not takes_kernel(TF.cross_entropy, (x, torch.softmax(x, 1)))  # probabilities
    assert not takes_kernel(TF.cross_entropy, (x[0], t[0]))  # unbatched
    with pytest.raises(IndexError, match="out of bounds"):
        TF.cross_entropy(x, torch.tensor([0, 4, 1, 1, 2, 0]))
    with pytest.raises(IndexError, match="out of bounds"):
        TF.cross_entropy(torch.randn(100, 50), torch.full((100,), 50))  # range read first
    # the ignored index outside [0, C): the kernel's bounds check sends it to the reference
    for n, c in ((6, 4), (100, 50)):
        x2 = torch.randn(n, c)
        t2 = torch.randint(0, c, (n,))
        t2[1] = -100
        torch.testing.assert_close(TF.cross_entropy(x2, t2), torch.nn.functional.cross_entropy(x2, t2))
        assert takes_kernel(TF.cross_entropy, (x2, t2)) == ["CrossEntropyWeighted"]  # ignored: the weighted kernel


# --- class weights, ignore_index, label smoothing (issue 15) ------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(
    "kwargs",
    [{"label_smoothing": 0.1}, {"weight": True}, {"weight": True, "label_smoothing": 0.3}, {"ignore_index": 1},
     {"weight": True, "ignore_index": 2, "label_smoothing": 0.2}],
    ids=str,
)
def test_ce_weighted_matches_reference(kwargs, reduction, dtype):
    g = torch.Generator().manual_seed(3)
    for N, C in ((1, 1), (32, 10), (7, 300)):
        x = torch.randn(N, C, generator=g, dtype=dtype) * 3
        t = torch.randint(0, C, (N,), generator=g)
        if kwargs.get("ignore_index", -1) >= C:  # no class ignored: the plain kernel's call
            continue
        if "ignore_index" in kwargs:
            t[0] = kwargs["ignore_index"]  # (one ignored target at least)
        kw = dict(kwargs, reduction=reduction)
        if kw.get("weight"):
            kw["weight"] = torch.rand(C, generator=g, dtype=dtype) + 0.5
        check_kernel(TF.cross_entropy, (x, t), kw, node="CrossEntropyWeighted")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("kwargs", [{"weight": True}, {"ignore_index": 3}, {"weight": True, "ignore_index": 0}], ids=str)
def test_nll_weighted_matches_reference(kwargs, reduction, dtype):
    g = torch.Generator().manual_seed(4)
    for N, C in ((1, 1), (32, 10), (7, 300)):
        x = torch.randn(N, C, generator=g, dtype=dtype).log_softmax(1)
        t = torch.randint(0, C, (N,), generator=g)
        if kwargs.get("ignore_index", -1) >= C:  # no class ignored: the plain kernel's call
            continue
        if "ignore_index" in kwargs:
            t[0] = kwargs["ignore_index"]  # (one ignored target at least)
        kw = dict(kwargs, reduction=reduction)
        if kw.get("weight"):
            kw["weight"] = torch.rand(C, generator=g, dtype=dtype) + 0.5
        check_kernel(TF.nll_loss, (x, t), kw, node="NLLWeighted")


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_weighted_all_ignored_and_zero_weights(reduction):
    # every target ignored ('mean': NaN loss, zero gradient) and a zero total weight
    x = torch.randn(4, 3, dtype=torch.float64)
    for fn, node in ((TF.cross_entropy, "CrossEntropyWeighted"), (TF.nll_loss, "NLLWeighted")):
        t = torch.tensor([1, 1, 1, 1])
        check_kernel(fn, (x, t), {"ignore_index": 1, "reduction": reduction}, node=node, rtol=1e-12, atol=1e-14)
        w = torch.tensor([1.0, 0.0, 2.0], dtype=torch.float64)
        check_kernel(fn, (x, t), {"weight": w, "reduction": reduction}, node=node, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_weighted_double_backward(reduction):
    x = torch.randn(6, 4, dtype=torch.float64)
    t = torch.tensor([0, 3, 1, 1, 2, 0])
    w = torch.rand(4, dtype=torch.float64) + 0.5
    check_double_backward(TF.cross_entropy, (x, t), {"weight": w, "label_smoothing": 0.2, "reduction": reduction})
    check_double_backward(TF.nll_loss, (x, t), {"weight": w, "ignore_index": 1, "reduction": reduction})


def test_weighted_reference_takes_the_rest():
    x = torch.randn(6, 4)
    t = torch.tensor([0, 3, 1, 1, 2, 0])
    w = torch.rand(4)
    assert takes_kernel(TF.cross_entropy, (x, t), {"weight": w}) == ["CrossEntropyWeighted"]
    assert not takes_kernel(TF.cross_entropy, (x, t), {"weight": torch.rand(8)[::2]})  # non-contiguous weight
    assert not takes_kernel(TF.cross_entropy, (x.reshape(6, 4, 1), t.reshape(6, 1)), {"weight": w})
    assert not takes_kernel(TF.nll_loss, (x.half(), t), {"weight": w.half()})
    assert not takes_kernel(TF.cross_entropy, (x, t.to(torch.uint8)), {"label_smoothing": 0.1})
    with pytest.raises(IndexError, match="out of bounds"):
        TF.cross_entropy(x, torch.tensor([0, 4, 1, 1, 2, 0]), weight=w)
    with pytest.raises(IndexError, match="out of bounds"):
        TF.nll_loss(x, torch.tensor([0, -1, 1, 1, 2, 0]), weight=w)
    with pytest.raises(RuntimeError):  # torch's dtype error, before any kernel
        TF.cross_entropy(x, t, weight=w.double())


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_weighted_smoothing_without_weight_on_any_target_is_nan(reduction):
    # with label smoothing, 'mean' divides torch's two terms by the total target weight D
    # separately: D = 0 gives NaN (the first term's 0/0), not inf (the fuzzer's class 34)
    x = torch.randn(3, 4, dtype=torch.float64)
    t = torch.tensor([1, 2, 3])
    w = torch.tensor([1.9, 0.0, 0.0, 0.0], dtype=torch.float64)
    kw = {"weight": w, "label_smoothing": 0.1, "reduction": reduction}
    check_kernel(TF.cross_entropy, (x, t), kw, node="CrossEntropyWeighted", rtol=1e-12, atol=1e-14)
    ours = TF.cross_entropy(x, t, **kw)
    torch.testing.assert_close(ours, torch.nn.functional.cross_entropy(x, t, **kw), equal_nan=True)
    if reduction == "mean":
        assert ours.isnan()


def test_weighted_no_classes_takes_the_reference():
    # an (N, 0) input (every target ignored): the kernels refuse it, the reference computes it
    x = torch.zeros(2, 0, requires_grad=True)
    t = torch.tensor([-100, -100])
    for fn in (TF.cross_entropy, TF.nll_loss):
        assert not takes_kernel(fn, (x, t), {"weight": torch.zeros(0)})
        ours = fn(x, t, reduction="sum")
        assert ours.item() == 0
        (g,) = torch.autograd.grad(ours, x)
        assert g.shape == (2, 0)
