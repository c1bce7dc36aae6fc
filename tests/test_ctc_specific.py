"""CTC loss against torch.nn.functional.ctc_loss, plus what torch lacks (double backward, jvp)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as TF

from torchloss import CTCLoss
from torchloss.functional import ctc_loss

# every test on each device of the device fixture (tests/conftest.py: on_device, cpu_only)
pytestmark = pytest.mark.usefixtures("on_device")

REDUCTIONS = ("none", "mean", "sum")


def _problem(T=12, N=4, C=6, S=5, seed=0, dtype=torch.float64, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, N, C, generator=g, dtype=dtype).log_softmax(-1).to(device)
    targets = torch.randint(1, C, (N, S), generator=g)
    if N > 1:
        targets[1, :3] = 2  # repeated labels
    il = torch.tensor([T, T - 2, T, T - 5][:N])
    tl = torch.tensor([S, 3, S - 2, 0][:N])  # one empty target
    return x, targets.to(device), il.to(device), tl.to(device)


def _value_and_grad(fn, x, *args, **kwargs):
    x = x.detach().clone().requires_grad_()
    out = fn(x, *args, **kwargs)
    (g,) = torch.autograd.grad(out.sum(), x)
    return out.detach(), g


def _same(a, b, rtol=1e-9, atol=1e-12):
    assert a.shape == b.shape and a.dtype == b.dtype, (a.shape, b.shape, a.dtype, b.dtype)
    assert torch.allclose(a, b, rtol=rtol, atol=atol, equal_nan=True), (a, b)


def _compare(x, *args, rtol=1e-9, atol=1e-12, **kwargs):
    out, g = _value_and_grad(ctc_loss, x, *args, **kwargs)
    ref, ref_g = _value_and_grad(TF.ctc_loss, x, *args, **kwargs)
    _same(out, ref, rtol, atol)
    _same(g, ref_g, rtol, atol)
    return out, g


def _concatenated(targets, tl):
    return torch.cat([targets[n, : int(tl[n])] for n in range(targets.shape[0])])


# --------------------------------------------------------------------------------------------
# Values and gradients against torch


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("zero_infinity", [False, True])
@pytest.mark.parametrize("layout", ["padded", "concatenated"])
def test_matches_torch(reduction, zero_infinity, layout, device):
    x, targets, il, tl = _problem(device=device)
    if layout == "concatenated":
        targets = _concatenated(targets, tl)
    _compare(x, targets, il, tl, reduction=reduction, zero_infinity=zero_infinity)


@pytest.mark.cpu_only
@pytest.mark.parametrize("kind", ["list", "tuple", "int32", "int64", "mixed"])
@pytest.mark.parametrize("layout", ["padded", "concatenated"])
def test_length_forms(kind, layout):
    x, targets, il, tl = _problem()
    if layout == "concatenated":
        targets = _concatenated(targets, tl)
    if kind == "list":
        il, tl = il.tolist(), tl.tolist()
    elif kind == "tuple":
        il, tl = tuple(il.tolist()), tuple(tl.tolist())
    elif kind == "int32":
        il, tl, targets = il.int(), tl.int(), targets.int()
    elif kind == "mixed":
        il = il.int()
    for reduction in REDUCTIONS:
        _compare(x, targets, il, tl, reduction=reduction)


@pytest.mark.cpu_only
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("layout", ["padded", "concatenated"])
def test_unbatched(reduction, layout):
    x, targets, il, tl = _problem(N=1)
    x, t = x[:, 0], targets[0]
    if layout == "concatenated":
        t = t[: int(tl[0])]
    out, _ = _compare(x, t, il[0], tl[0], reduction=reduction)
    assert out.shape == ()


@pytest.mark.cpu_only
@pytest.mark.parametrize("blank", [0, 3, 5])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_blank_not_zero(blank, reduction):
    x, targets, il, tl = _problem()
    targets = torch.where(targets == blank, (blank + 1) % 6, targets)
    _compare(x, targets, il, tl, blank=blank, reduction=reduction)


@pytest.mark.cpu_only
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_empty_targets_and_zero_input_lengths(reduction):
    x, targets, _, _ = _problem(N=4)
    il = torch.tensor([12, 0, 0, 7])
    tl = torch.tensor([0, 0, 2, 0])
    for zero_infinity in (False, True):
        _compare(x, targets, il, tl, reduction=reduction, zero_infinity=zero_infinity)
    _compare(x, torch.zeros(0, dtype=torch.long), il, torch.zeros(4, dtype=torch.long), reduction=reduction)


@pytest.mark.cpu_only
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("zero_infinity", [False, True])
def test_impossible_alignments(reduction, zero_infinity):
    x, _, _, _ = _problem(T=6, N=3)
    targets = torch.tensor([[1, 1, 1, 1], [1, 2, 3, 4], [2, 2, 0, 0]])
    il = torch.tensor([6, 3, 6])  # 1 1 1 1 needs 7 frames; 4 labels in 3 frames
    tl = torch.tensor([4, 4, 2])
    out, g = _compare(x, targets, il, tl, reduction=reduction, zero_infinity=zero_infinity)
    if reduction == "none":
        assert out[0] == (0 if zero_infinity else float("inf"))
    if not zero_infinity:
        assert g[:6, 0].isnan().all() and g[:3, 1].isnan().all() and (g[3:, 1] == 0).all()
        assert g[:, 2].isfinite().all()
    else:
        assert (g[:, :2] == 0).all()


@pytest.mark.cpu_only
def test_repeated_labels_need_blanks():
    x, _, _, _ = _problem(T=5, N=2)
    targets = torch.tensor([[3, 3, 3], [3, 4, 3]])
    for T in (3, 4, 5):
        _compare(x, targets, [T, T], [3, 3], reduction="none")


def test_unnormalised_log_probs_follow_torch():
    # torch's gradient is exp(x) - posterior for any x, normalised or not
    g = torch.Generator().manual_seed(3)
    x = torch.randn(8, 3, 5, generator=g, dtype=torch.float64)
    targets = torch.randint(1, 5, (3, 3), generator=g)
    _compare(x, targets, [8, 7, 8], [3, 2, 1], reduction="sum")


@pytest.mark.cpu_only
def test_module():
    x, targets, il, tl = _problem()
    for reduction in REDUCTIONS:
        mod = CTCLoss(blank=0, reduction=reduction, zero_infinity=True)
        ref = torch.nn.CTCLoss(blank=0, reduction=reduction, zero_infinity=True)
        _same(mod(x, targets, il, tl), ref(x, targets, il, tl))
    assert repr(CTCLoss()) == "CTCLoss()"


# --------------------------------------------------------------------------------------------
# Errors (torch's exception type for each bad call)


def _bad_calls():
    x, targets, il, tl = _problem(T=5, N=3, C=4, S=4)
    long_tl = torch.tensor([5, 3, 0])
    return [
        ("reduction", (x, targets, il, tl), {"reduction": "foo"}),
        ("half on cpu", (x.int(), targets, il, tl), {}),
        ("float lengths", (x, targets, il.float(), tl), {}),
        ("list and tensor", (x, targets, il.tolist(), tl), {}),
        ("int lengths", (x[:, 0], targets[0], 5, 4), {}),
        ("float blank", (x, targets, il, tl), {"blank": 1.0}),
        ("int zero_infinity", (x, targets, il, tl), {"zero_infinity": 1}),
        ("blank too large", (x, targets, il, tl), {"blank": 4}),
        ("negative blank", (x, targets, il, tl), {"blank": -1}),
        ("input_lengths size", (x, targets, il[:2], tl), {}),
        ("target_lengths size", (x, targets, il, tl[:2]), {}),
        ("input length > T", (x, targets, il + 1, tl), {}),
        ("negative input length", (x, targets, il - 6, tl), {}),
        ("negative target length", (x, targets, il, tl - 6), {}),
        ("target length > S", (x, targets, il, long_tl), {}),
        ("targets batch", (x, targets[:2], il, tl), {}),
        ("concatenated total", (x, targets.flatten()[:3], il, tl), {}),
        ("empty batch", (x[:, :0], targets[:0], il[:0], tl[:0]), {}),
        ("empty time", (x[:0], targets, il * 0, tl * 0), {}),
        ("rank 4", (x.unsqueeze(0), targets, il, tl), {}),
        ("rank 3 targets", (x, targets.unsqueeze(0), il, tl), {}),
    ]


@pytest.mark.parametrize("case", _bad_calls(), ids=lambda c: c[0])
def test_errors_match_torch(case):
    _, args, kwargs = case
    with pytest.raises(Exception) as ref:
        TF.ctc_loss(*args, **kwargs)
    with pytest.raises(ref.type):
        ctc_loss(*args, **kwargs)


# --------------------------------------------------------------------------------------------
# Higher derivatives, forward mode, vmap (beyond torch)


def _small():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(6, 3, 4, generator=g, dtype=torch.float64)
    targets = torch.tensor([[1, 2, 2], [3, 1, 0], [1, 1, 1]])
    return z, targets, torch.tensor([6, 5, 6]), torch.tensor([3, 2, 2])


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("zero_infinity", [False, True])
def test_gradcheck_and_gradgradcheck_through_log_softmax(reduction, zero_infinity):
    z, targets, il, tl = _small()
    z.requires_grad_()

    def f(z):
        return ctc_loss(z.log_softmax(-1), targets, il, tl, reduction=reduction, zero_infinity=zero_infinity)

    assert torch.autograd.gradcheck(f, (z,), check_forward_ad=True)
    assert torch.autograd.gradgradcheck(f, (z,), check_fwd_over_rev=True)


def test_double_backward_is_derivative_of_torchs_gradient():
    # on raw (unnormalised) log-probs the backward is G = exp(x) - posterior: its derivative
    # (double backward) is checked numerically, and is a symmetric Hessian (of the potential F)
    z, targets, il, tl = _small()
    x = z.requires_grad_()

    def f(x):
        return ctc_loss(x, targets, il, tl, reduction="sum")

    assert torch.autograd.gradgradcheck(f, (x,))
    H = torch.autograd.functional.hessian(f, x.detach()).reshape(x.numel(), -1)
    assert torch.allclose(H, H.T, atol=1e-12)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_jvp_matches_reverse_jacobian(reduction):
    z, targets, il, tl = _small()
    x = z.log_softmax(-1)

    def f(x):
        return ctc_loss(x, targets, il, tl, reduction=reduction)

    _same(torch.func.jacfwd(f)(x), torch.func.jacrev(f)(x))
    t = torch.randn_like(x)
    _, tangent = torch.func.jvp(f, (x,), (t,))
    _, vjp = torch.func.vjp(f, x)
    ones = torch.ones_like(f(x))
    (g,) = vjp(ones)
    _same((tangent * ones).sum(), (g * t).sum())


def test_vmap_over_log_probs():
    z, targets, il, tl = _small()
    xs = torch.randn(5, *z.shape, dtype=torch.float64).log_softmax(-1)
    for reduction in REDUCTIONS:
        out = torch.func.vmap(lambda x, r=reduction: ctc_loss(x, targets, il, tl, reduction=r))(xs)
        ref = torch.stack([TF.ctc_loss(x, targets, il, tl, reduction=reduction) for x in xs])
        _same(out, ref)
    grads = torch.func.vmap(torch.func.grad(lambda x: ctc_loss(x, targets, il, tl)))(xs)
    ref = torch.stack([_value_and_grad(TF.ctc_loss, x, targets, il, tl)[1] for x in xs])
    _same(grads, ref)


@pytest.mark.cpu_only
def test_fast_and_differentiable_paths_agree():
    x, targets, il, tl = _problem(dtype=torch.float32)
    x = x.requires_grad_()
    (fast,) = torch.autograd.grad(ctc_loss(x, targets, il, tl), x)
    (slow,) = torch.autograd.grad(ctc_loss(x, targets, il, tl), x, create_graph=True)
    _same(fast, slow.detach(), rtol=1e-5, atol=1e-7)


@pytest.mark.cpu_only
def test_inputs_not_mutated_and_one_node():
    x, targets, il, tl = _problem()
    x = x.requires_grad_()
    versions = [t._version for t in (x, targets, il, tl)]
    snapshot = [t.detach().clone() for t in (x, targets, il, tl)]
    out = ctc_loss(x, targets, il, tl)
    torch.autograd.grad(out, x, create_graph=True)
    torch.autograd.grad(ctc_loss(x, targets, il, tl), x)
    assert [t._version for t in (x, targets, il, tl)] == versions
    for t, s in zip((x, targets, il, tl), snapshot):
        assert torch.equal(t.detach(), s)
    # one node: the reference Function's, or the native kernel's (torchloss/_native/csrc/ctc.cpp)
    assert out.grad_fn.name() in ("CTCLossFunctionBackward", "torch::autograd::CppNode<torchloss::CTCLossNative>")
    assert all(fn is None or type(fn).__name__ == "AccumulateGrad" for fn, _ in out.grad_fn.next_functions)


# --------------------------------------------------------------------------------------------
# Numerics


@pytest.mark.slow
def test_long_sequences_are_finite():
    # T = 4000, S = 2500: |log p| ~ 1e4; finite where torch is, and in float32 no less accurate
    # than torch against a float64 evaluation (loss and gradient)
    g = torch.Generator().manual_seed(0)
    T, C, S = 4000, 30, 2500
    x = torch.randn(T, 1, C, generator=g).log_softmax(-1)
    targets = torch.randint(1, C, (1, S), generator=g)
    args = (targets, [T], [S])
    exact, exact_g = _value_and_grad(TF.ctc_loss, x.double(), *args, reduction="sum")
    out, grad = _value_and_grad(ctc_loss, x, *args, reduction="sum")
    ref, ref_g = _value_and_grad(TF.ctc_loss, x, *args, reduction="sum")
    assert out.isfinite() and ref.isfinite() and grad.isfinite().all()
    assert (out.double() - exact).abs() <= (ref.double() - exact).abs() + 1e-3
    assert (grad.double() - exact_g).abs().max() <= (ref_g.double() - exact_g).abs().max()


@pytest.mark.cpu_only
def test_float32_accuracy_no_worse_than_torch():
    x64, targets, il, tl = _problem(T=60, N=4, C=8, S=20, seed=5)
    x32 = x64.float()
    exact, exact_g = _value_and_grad(TF.ctc_loss, x32.double(), targets, il, tl, reduction="none")
    out, g = _value_and_grad(ctc_loss, x32, targets, il, tl, reduction="none")
    ref, ref_g = _value_and_grad(TF.ctc_loss, x32, targets, il, tl, reduction="none")
    ulp = torch.finfo(torch.float32).eps * exact.abs().float()
    assert ((out.double() - exact).abs() <= (ref.double() - exact).abs() + 2 * ulp).all()
    err, ref_err = (g.double() - exact_g).abs().max(), (ref_g.double() - exact_g).abs().max()
    assert err <= 2 * ref_err + 1e-6


@pytest.mark.cpu_only
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_computed_in_float32(dtype):
    x, targets, il, tl = _problem(dtype=torch.float32)
    xl = x.to(dtype)
    out, g = _value_and_grad(ctc_loss, xl, targets, il, tl, reduction="none")
    assert out.dtype == dtype and g.dtype == dtype
    ref, ref_g = _value_and_grad(TF.ctc_loss, xl.float(), targets, il, tl, reduction="none")
    _same(out, ref.to(dtype), rtol=0, atol=0)
    _same(g, ref_g.to(dtype), rtol=1e-2, atol=1e-3)


# --------------------------------------------------------------------------------------------
# The eager path's layout and reductions


@pytest.mark.cpu_only
@pytest.mark.parametrize("dense", [False, True])
@pytest.mark.parametrize("create_graph", [False, True])
def test_class_sums_both_ways(dense, create_graph, monkeypatch):
    # the scatter (CPU default) and the one-hot contraction (CUDA default, deterministic there)
    # give torch's gradient, on the eager path and the differentiable one
    from torchloss._autograd import ctc as ctc_mod

    monkeypatch.setattr(ctc_mod, "DENSE_CLASS_SUMS", dense)
    x, targets, il, tl = _problem()
    x = x.requires_grad_()
    (g,) = torch.autograd.grad(ctc_loss(x, targets, il, tl, reduction="sum"), x, create_graph=create_graph)
    _, ref_g = _value_and_grad(TF.ctc_loss, x, targets, il, tl, reduction="sum")
    _same(g.detach(), ref_g)


def test_deterministic(device):
    x, targets, il, tl = _problem(T=40, N=4, C=7, S=12, device=device)
    targets[:, 1::2] = targets[:, ::2]  # many repeated classes per sample
    runs = [_value_and_grad(ctc_loss, x, targets, il, tl) for _ in range(3)]
    for out, g in runs[1:]:
        assert torch.equal(out, runs[0][0]) and torch.equal(g, runs[0][1])


@pytest.mark.cpu_only
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_stays_in_its_sample(bad):
    # a NaN or +inf log-probability on a frame t < T_n spoils only sample n (torch: the same);
    # on a frame t >= T_n it is ignored
    x, targets, il, tl = _problem()
    x = x.clone()
    x[2, 1, int(targets[1, 0])] = bad  # sample 1, frame 2 < 10, a class of its target
    x[11, 3, 0] = bad  # sample 3, frame 11 >= T_3 = 7: ignored
    unused = int(torch.isin(torch.arange(6), targets[2, :3], invert=True).nonzero()[1])
    x[4, 2, unused] = bad  # sample 2, a class its target does not use: the loss ignores it
    out, g = _value_and_grad(ctc_loss, x, targets, il, tl, reduction="none")
    ref, ref_g = _value_and_grad(TF.ctc_loss, x, targets, il, tl, reduction="none")
    assert out[1].isnan() and not ref[1].isfinite()
    assert g[:10, 1].isnan().any() and ref_g[:10, 1].isnan().any()
    _same(out[[0, 2, 3]], ref[[0, 2, 3]])
    _same(g[:, [0, 2, 3]], ref_g[:, [0, 2, 3]])


def test_odd_shapes_match_torch():
    # one sample, one frame, one class besides the blank; labels longer than frames; S = 0
    for T, N, C, S in [(1, 1, 2, 1), (3, 2, 2, 4), (5, 3, 3, 0), (2, 5, 9, 1)]:
        g = torch.Generator().manual_seed(T * 100 + S)
        x = torch.randn(T, N, C, generator=g, dtype=torch.float64).log_softmax(-1)
        targets = torch.randint(1, C, (N, S), generator=g)
        il = torch.randint(0, T + 1, (N,), generator=g)
        tl = torch.randint(0, S + 1, (N,), generator=g)
        for zero_infinity in (False, True):
            _compare(x, targets, il, tl, reduction="none", zero_infinity=zero_infinity)


# --------------------------------------------------------------------------------------------
# The eager path's layout: alpha and beta' meet in the middle, the second half runs in chunks


@pytest.mark.cpu_only
@pytest.mark.parametrize("T", [1, 2, 3, 4, 5, 8, 11, 12, 13, 24, 25, 37, 50])
def test_eager_path_every_length(T):
    # odd T (an extra, invalid frame), the step where the passes meet, every chunk boundary, and
    # the forward-only recursion (its own chunks); float64 against torch
    g = torch.Generator().manual_seed(T)
    N, C, S = 5, 7, 6
    x = torch.randn(T, N, C, generator=g, dtype=torch.float64).log_softmax(-1)
    targets = torch.randint(1, C, (N, S), generator=g)
    il = torch.tensor([T, max(T - 1, 0), (T + 1) // 2, T // 2, 0])
    tl = torch.tensor([min(S, (T + 1) // 2), 2, 1, 0, 3])
    for zero_infinity in (False, True):
        _compare(x, targets, il, tl, reduction="none", zero_infinity=zero_infinity)
        with torch.no_grad():
            out = ctc_loss(x, targets, il, tl, reduction="none", zero_infinity=zero_infinity)
        _same(out, TF.ctc_loss(x, targets, il, tl, reduction="none", zero_infinity=zero_infinity))


@pytest.mark.cpu_only
@pytest.mark.parametrize("T", [7, 12, 13])
def test_eager_and_differentiable_paths_agree_any_length(T):
    x, targets, il, tl = _problem(T=T, dtype=torch.float32)
    x = x.requires_grad_()
    (fast,) = torch.autograd.grad(ctc_loss(x, targets, il, tl, reduction="sum"), x)
    (slow,) = torch.autograd.grad(ctc_loss(x, targets, il, tl, reduction="sum"), x, create_graph=True)
    _same(fast, slow.detach(), rtol=1e-5, atol=1e-6)


@pytest.mark.cpu_only
def test_targets_padded_beyond_the_longest():
    # the recursions are sized by the longest target, like torch's: extra padding changes nothing
    x, targets, il, tl = _problem()
    wide = torch.cat([targets, torch.randint(1, 6, (4, 9))], dim=1)
    out, g = _compare(x, wide, il, tl, reduction="none")
    ref, ref_g = _value_and_grad(ctc_loss, x, targets, il, tl, reduction="none")
    _same(out, ref)
    _same(g, ref_g)


@pytest.mark.cpu_only
@pytest.mark.parametrize("shape", [(50, 16, 20, 30), (61, 4, 9, 12)])
def test_memory_not_above_torch(shape):
    # bytes kept for backward and the peak of forward + backward (the returned gradient
    # included), the bench's measures, at most torch's
    from torchloss.bench import peak_bytes
    from torchloss.testing import saved_bytes

    T, N, C, S = shape
    g = torch.Generator().manual_seed(0)
    x = torch.randn(T, N, C, generator=g).log_softmax(-1)
    targets = torch.randint(1, C, (N, S), generator=g)
    il = torch.full((N,), T)
    tl = torch.randint(S // 2, S + 1, (N,), generator=g)
    tl[0] = S
    args = (x, targets, il, tl)
    ours, theirs = saved_bytes(ctc_loss, args), saved_bytes(TF.ctc_loss, args)
    assert ours.total <= theirs.total

    def step(fn):
        leaf = x.detach().requires_grad_()
        return lambda: torch.autograd.grad(fn(leaf, targets, il, tl), leaf)

    for fn in (ctc_loss, TF.ctc_loss):  # warm up
        step(fn)()
    assert peak_bytes(step(ctc_loss), x.device) <= peak_bytes(step(TF.ctc_loss), x.device)


def test_no_frame_with_a_target_is_inf_even_for_a_blank_label():
    """Fuzzer finding: a sample with input length 0 and a non-empty target cannot be aligned
    (inf, as torch), also when its label equals the blank (the eager recursions met there)."""
    lp = torch.randn(1, 2, 3, dtype=torch.float64).log_softmax(2)
    args = (lp, torch.tensor([0, 0]), torch.tensor([1, 0]), torch.tensor([1, 1]))
    loss = ctc_loss(*args, reduction="none")
    assert loss[1] == float("inf")
    assert ctc_loss(*args, reduction="none", zero_infinity=True)[1] == 0
