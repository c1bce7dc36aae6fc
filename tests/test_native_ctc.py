"""The native CTC kernel (torchloss/_native/csrc/ctc.cpp) against the Python reference."""

import pytest
import torch
from native_util import (
    check_kernel,
    kernel_nodes,
    reference_only,
    requires_native,
    takes_kernel,
)

import torchloss.functional as TF
from torchloss.testing import saved_bytes

pytestmark = requires_native

REDUCTIONS = ["none", "mean", "sum"]
NODE = "CTCLossNative"
TOL = {torch.float32: {"rtol": 1e-4, "atol": 2e-5}, torch.float64: {"rtol": 1e-10, "atol": 1e-12}}


def make(T, N, C, S, *, seed=0, dtype=torch.float32, normalised=True, short=True):
    """log-probabilities (T, N, C), padded targets (N, S) of labels in [1, C), lengths: inputs of
    T or less (every other sample shorter when ``short``), targets of S/2 .. S."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, N, C, generator=g, dtype=torch.float64) * 2
    x = (x.log_softmax(-1) if normalised else x).to(dtype)
    targets = torch.randint(1, C, (N, S), generator=g)
    il = torch.full((N,), T, dtype=torch.long)
    if short:
        il[1::2] = torch.randint(max(T // 2, 1), T + 1, (N // 2,), generator=g)
    tl = torch.randint(S // 2, S + 1, (N,), generator=g)
    return x, targets, il, tl


def _check(args, kwargs=None, dtype=torch.float32):
    check_kernel(TF.ctc_loss, args, kwargs or {}, node=NODE, **TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("shape", [(1, 1, 2, 1), (12, 3, 5, 4), (50, 16, 20, 30), (40, 4, 60, 6)], ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_matches_reference(shape, reduction, dtype):
    # (40, 4, 60, 6): more classes than extended states (G computed in the backward, not saved)
    _check(make(*shape, dtype=dtype), {"reduction": reduction}, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("zero_infinity", [False, True])
def test_impossible_empty_and_zero_length(reduction, zero_infinity, dtype):
    # sample 0 impossible (a 6-label target in 3 frames), 1 an empty target, 2 no frame and an
    # empty target, 3 no frame and a non-empty target (impossible), 4 repeated labels (a blank
    # between them needed), 5 ordinary
    x, targets, _, _ = make(6, 6, 5, 6, seed=3, dtype=dtype, short=False)
    targets[4] = torch.tensor([2, 2, 2, 3, 3, 1])
    il = torch.tensor([3, 6, 0, 0, 6, 5])
    tl = torch.tensor([6, 0, 0, 2, 5, 3])
    _check((x, targets, il, tl), {"reduction": reduction, "zero_infinity": zero_infinity}, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_concatenated_targets_and_list_lengths(reduction, dtype):
    x, targets, il, tl = make(30, 5, 7, 8, seed=4, dtype=dtype)
    flat = torch.cat([targets[n, : tl[n]] for n in range(5)])
    _check((x, flat, il, tl), {"reduction": reduction}, dtype)
    _check((x, targets, il.tolist(), tl.tolist()), {"reduction": reduction}, dtype)
    _check((x, targets.int(), il.int(), tl.int()), {"reduction": reduction}, dtype)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_unbatched_blank_and_unnormalised(reduction):
    x, targets, il, tl = make(20, 1, 6, 5, seed=5)
    _check((x[:, 0], targets[0, : tl[0]], il[:1], tl[:1]), {"reduction": reduction})
    # blank = the last class, labels anywhere else; log-probabilities that are not normalised
    # (the gradient is torch's exp(x) - posterior, as the reference's)
    x, targets, il, tl = make(25, 4, 6, 5, seed=6, normalised=False)
    _check((x, targets - 1, il, tl), {"reduction": reduction, "blank": 5})


def test_non_finite_like_the_reference():
    x, targets, il, tl = make(10, 4, 5, 3, seed=7, short=False)
    il[3] = 6
    x[2, 0, targets[0, 0]] = float("nan")  # read by sample 0: NaN loss and gradient
    x[4, 1, :] = float("-inf")  # every class impossible on a frame of sample 1
    x[8, 3, 0] = float("nan")  # beyond sample 3's input length: not read
    for zero_infinity in (False, True):
        _check((x, targets, il, tl), {"reduction": "none", "zero_infinity": zero_infinity})
    got = TF.ctc_loss(x, targets, il, tl, reduction="none")
    want = torch.nn.functional.ctc_loss(x, targets, il, tl, reduction="none")
    torch.testing.assert_close(got, want, equal_nan=True, rtol=1e-4, atol=1e-5)


def test_saves_no_more_than_torch():
    for shape in ((50, 16, 20, 30), (40, 4, 60, 6)):
        x, targets, il, tl = make(*shape)
        args = (x, targets, il, tl)
        ours = saved_bytes(TF.ctc_loss, args, {}, (0,))
        theirs = saved_bytes(torch.nn.functional.ctc_loss, args, {}, (0,))
        assert ours.total <= theirs.total and ours.extra <= theirs.extra, (shape, ours, theirs)
    # more classes than 2S+1: only the inputs are kept, the backward recomputes
    x, targets, il, tl = make(40, 4, 60, 6)
    assert saved_bytes(TF.ctc_loss, (x, targets, il, tl), {}, (0,)).extra == 0


def test_backward_twice_and_upstream_gradients():
    x, targets, il, tl = make(20, 6, 8, 5, seed=8)
    x.requires_grad_()
    for shape_args in ((x, targets, il, tl), make(20, 6, 30, 3, seed=9)):
        xx = shape_args[0].detach().requires_grad_()
        loss = TF.ctc_loss(xx, *shape_args[1:], reduction="none")
        assert kernel_nodes(loss) == [NODE]
        go = torch.randn(12)[::2]  # strided
        (g1,) = torch.autograd.grad(loss, xx, go, retain_graph=True)
        (g2,) = torch.autograd.grad(loss, xx, go)
        assert torch.equal(g1, g2)
        with reference_only():
            (want,) = torch.autograd.grad(TF.ctc_loss(xx, *shape_args[1:], reduction="none"), xx, go)
        torch.testing.assert_close(g1, want, **TOL[torch.float32])


def test_forward_without_grad():
    x, targets, il, tl = make(30, 5, 7, 8, seed=10)
    for reduction in REDUCTIONS:
        with torch.no_grad():
            got = TF.ctc_loss(x.requires_grad_(), targets, il, tl, reduction=reduction)
        with reference_only():
            want = TF.ctc_loss(x.detach(), targets, il, tl, reduction=reduction)
        torch.testing.assert_close(got, want, **TOL[torch.float32])


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gradcheck_and_gradgradcheck_through_the_hand_over(reduction):
    # through log_softmax, where torch's gradient is the true one; gradgradcheck's create_graph
    # backward hands the kernel's saved inputs to the reference
    g = torch.Generator().manual_seed(11)
    z = torch.randn(6, 3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([[1, 2, 2], [3, 1, 0], [2, 0, 0]])
    il, tl = torch.tensor([6, 5, 4]), torch.tensor([3, 2, 1])

    def f(z):
        return TF.ctc_loss(z.log_softmax(-1), targets, il, tl, reduction=reduction)

    assert kernel_nodes(f(z)) == [NODE]
    assert torch.autograd.gradcheck(f, (z,))
    assert torch.autograd.gradgradcheck(f, (z,))


def test_threads_do_not_change_the_result():
    x, targets, il, tl = make(60, 9, 12, 10, seed=12)
    x.requires_grad_()
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            loss = TF.ctc_loss(x, targets, il, tl, reduction="none")
            (gx,) = torch.autograd.grad(loss, x, torch.ones_like(loss))
            results.append((loss, gx))
    finally:
        torch.set_num_threads(threads)
    for loss, gx in results[1:]:
        assert torch.equal(loss, results[0][0]) and torch.equal(gx, results[0][1])


def test_reference_takes_the_rest():
    x, targets, il, tl = make(10, 4, 5, 3, seed=13)
    assert takes_kernel(TF.ctc_loss, (x, targets, il, tl))
    assert not takes_kernel(TF.ctc_loss, (x.half(), targets, il, tl))
    assert not takes_kernel(TF.ctc_loss, (x.bfloat16(), targets, il, tl))
    assert not takes_kernel(TF.ctc_loss, (x.transpose(0, 1).contiguous().transpose(0, 1), targets, il, tl))
    # torch.func and forward-mode AD run the reference (no kernel in their graphs)
    xr = x.clone().requires_grad_()
    gfun = torch.func.grad(lambda v: TF.ctc_loss(v, targets, il, tl))(x)
    (want,) = torch.autograd.grad(TF.ctc_loss(xr, targets, il, tl), xr)
    torch.testing.assert_close(gfun, want, **TOL[torch.float32])
    import torch.autograd.forward_ad as fwAD

    tangent = torch.randn_like(x)
    with fwAD.dual_level():
        out = TF.ctc_loss(fwAD.make_dual(x, tangent), targets, il, tl)
        jvp = fwAD.unpack_dual(out).tangent
        assert not kernel_nodes(out)
    torch.testing.assert_close(jvp, (want * tangent).sum(), rtol=1e-4, atol=1e-5)
    # validation stays torch's, in the functional layer
    with pytest.raises(RuntimeError, match="input_lengths"):
        TF.ctc_loss(x, targets, il + 1, tl)
