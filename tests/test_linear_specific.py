"""Linear cross entropy beyond the case table: memory (budget respected, no N x C buffer), the
module (repr, state_dict both ways with torch's), options, all-ignored targets, low precision,
K-dimensional and probability targets, vmap, compile, retain_graph, jvp, and the streaming API
that vocab-parallel linear cross entropy builds on."""

from __future__ import annotations

import warnings

import pytest
import torch

import torchloss
import torchloss.functional as F
from torchloss._autograd import linear as L
from torchloss.testing import saved_bytes

TF = torch.nn.functional
HAS_TORCH_LCE = hasattr(TF, "linear_cross_entropy")
needs_torch = pytest.mark.skipif(not HAS_TORCH_LCE, reason="torch has no linear_cross_entropy")


def _ref(*args, **kwargs):
    kwargs.pop("options", None)
    return TF.linear_cross_entropy(*args, **kwargs)


def _inputs(N=16, K=8, C=37, D=(), dtype=torch.float64, seed=0, probs=False, ignore=None):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, K, generator=g, dtype=torch.float64).to(dtype)
    w = (torch.randn(C, *D, K, generator=g, dtype=torch.float64) * 0.5).to(dtype)
    if probs:
        t = torch.randn(N, C, *D, generator=g, dtype=torch.float64).softmax(1).to(dtype)
    else:
        t = torch.randint(0, C, (N, *D), generator=g)
        if ignore is not None:
            t.view(-1)[::4] = ignore
    return x, w, t


def _opts(budget):
    return torchloss.LinearCrossEntropyOptions(memory_budget=budget)


# --------------------------------------------------------------------------------------------
# Memory


def _allocations(step):
    """``(peak, largest)``: the highest memory allocated during ``step()`` above the start and the
    largest single allocation (the profiler's memory events, CPU)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = step()
        del out
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"), key=lambda e: e.start_ns())
    current = top = largest = 0
    for e in events:
        current += e.nbytes()
        top = max(top, current)
        largest = max(largest, e.nbytes())
    return top, largest


MEMORY_CASES = {
    "plain-mean": {"kwargs": {}},
    "smoothing-weight-sum": {"kwargs": {"label_smoothing": 0.1, "reduction": "sum"}, "weight": True},
    "none": {"kwargs": {"reduction": "none"}},
    "kdim": {"kwargs": {}, "D": (2,)},
    "probs": {"kwargs": {}, "probs": True},
    "probs-target-grad": {"kwargs": {"label_smoothing": 0.1}, "probs": True, "target_grad": True},
}


@pytest.fixture
def one_thread():
    """Memory tests run many small block ops: on one thread they are quick even on a loaded
    machine (values do not depend on the thread count)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name", list(MEMORY_CASES))
@pytest.mark.parametrize("budget", [256 << 10, 2 << 20])
def test_memory_within_budget_and_no_full_logits(name, budget, one_thread):
    """The peak of a forward and backward beyond the gradients stays within the budget (plus the
    per-position vectors), and no allocation is anywhere near the N x C logits."""
    spec = MEMORY_CASES[name]
    N, K, C = 256, 16, 4096
    D = spec.get("D", ())
    x, w, t = _inputs(N, K, C, D, torch.float32, probs=spec.get("probs", False))
    kwargs = dict(spec["kwargs"], options=_opts(budget))
    if spec.get("weight"):
        kwargs["weight"] = torch.rand(C) + 0.5
    x.requires_grad_()
    w.requires_grad_()
    leaves = [x, w]
    if spec.get("target_grad"):
        t.requires_grad_()
        leaves.append(t)

    def step():
        loss = F.linear_cross_entropy(x, w, t, **kwargs)
        return torch.autograd.grad(loss, leaves, torch.ones_like(loss))

    step()
    peak, largest = _allocations(step)
    positions = N * max(1, int(torch.tensor(D).prod()) if D else 1)
    grads = sum(leaf.numel() for leaf in leaves) * 4
    logits = positions * C * 4
    slack = 64 * positions * 4 + (2 << 20) // 8  # per-position vectors, small bookkeeping
    if spec.get("target_grad"):
        assert largest <= logits, (largest, logits)  # the target's own gradient, and nothing else
    else:
        assert largest <= logits // 4, (largest, logits)  # (one block of rows: half the budget at most)
    assert peak - grads <= budget + slack, f"peak beyond gradients {peak - grads} > budget {budget} + {slack}"


def test_peak_far_below_torch(one_thread):
    """At a language-model-head shape (logits 16 MiB, a 4 MiB budget) the peak is at most an eighth
    of torch's reference path."""
    if not HAS_TORCH_LCE:
        pytest.skip("torch has no linear_cross_entropy")
    x, w, t = _inputs(512, 32, 8192, dtype=torch.float32)
    x.requires_grad_()
    w.requires_grad_()

    def step(fn):
        return lambda: torch.autograd.grad(fn(x, w, t), (x, w))

    ours, _ = _allocations(step(lambda *a: F.linear_cross_entropy(*a, options=_opts(4 << 20))))
    theirs, _ = _allocations(step(TF.linear_cross_entropy))
    assert ours * 8 <= theirs, (ours, theirs)


def test_saved_bytes_are_inputs_and_per_position_lse():
    x, w, t = _inputs(64, 8, 300)
    report = saved_bytes(F.linear_cross_entropy, (x, w, t), {"reduction": "none"}, wrt=(0, 1))
    assert report.extra <= 64 * 8  # the (N,) log-sum-exp, float64


def test_block_plan_respects_budget():
    for N, C, D, K, budget in [(4096, 32768, 1, 512, 64 << 20), (8, 10**6, 1, 64, 1 << 20), (3, 7, 4, 5, 100)]:
        rb, cb = L.block_plan(N, C, D, K, torch.float32, budget)
        assert 1 <= rb <= N and 1 <= cb <= C
        if rb * cb * D * 12 > budget:
            assert rb == 1 and cb == 1 or cb < 16  # only the minimum block may exceed a tiny budget
    assert L.block_plan(4096, 32768, 1, 512, torch.float32, 64 << 20)[1] == 32768  # whole vocabulary
    assert L.block_plan(64, 10**6, 1, 64, torch.float32, 16 << 20)[1] < 10**6  # vocabulary split


# --------------------------------------------------------------------------------------------
# Values and gradients


@needs_torch
@pytest.mark.parametrize("budget", [150, 2000, 1 << 20])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize(
    "kind",
    ["plain", "smoothing-weight-ignore", "kdim-bias", "probs-weight-smoothing", "probs-kdim"],
)
def test_matches_torch_every_budget(kind, reduction, budget):
    D = (2, 3) if "kdim" in kind else ()
    probs = kind.startswith("probs")
    x, w, t = _inputs(9, 5, 13, D, probs=probs, ignore=None if probs else 3)
    kwargs = {"reduction": reduction}
    if "smoothing" in kind:
        kwargs["label_smoothing"] = 0.2
    if "weight" in kind:
        kwargs["weight"] = torch.rand(13, dtype=torch.float64) + 0.5
    if "ignore" in kind:
        kwargs["ignore_index"] = 3
    if "bias" in kind:
        kwargs["linear_bias"] = torch.randn(13, *D, dtype=torch.float64).requires_grad_()
    leaves = [x.requires_grad_(), w.requires_grad_()] + ([kwargs["linear_bias"]] if "bias" in kind else [])
    if probs:
        leaves.append(t.requires_grad_())
    ours = F.linear_cross_entropy(x, w, t, options=_opts(budget), **kwargs)
    ref = _ref(x, w, t, **kwargs)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)
    up = torch.randn_like(ours)
    for a, b in zip(torch.autograd.grad(ours, leaves, up), torch.autograd.grad(ref, leaves, up)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


@needs_torch
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_all_targets_ignored(reduction):
    x, w, t = _inputs(6, 4, 9, dtype=torch.float32)
    t.fill_(-100)
    x.requires_grad_()
    w.requires_grad_()
    ours = F.linear_cross_entropy(x, w, t, reduction=reduction, label_smoothing=0.1)
    ref = TF.linear_cross_entropy(x, w, t, reduction=reduction, label_smoothing=0.1)
    torch.testing.assert_close(ours, ref, equal_nan=True)  # 'mean' is 0/0 = NaN, as torch
    gx, gw = torch.autograd.grad(ours.sum(), (x, w))
    assert torch.isfinite(gx).all() and torch.isfinite(gw).all()
    assert not gx.any() and not gw.any()
    # and in a differentiated backward
    ours = F.linear_cross_entropy(x, w, t, reduction=reduction, label_smoothing=0.1)
    gx, gw = torch.autograd.grad(ours.sum(), (x, w), create_graph=True)
    assert torch.isfinite(gx).all() and torch.isfinite(gw).all()


def test_large_logits_keep_digits():
    """Logits near 1e4 with smoothing: the loss agrees with a float64 log-softmax evaluation to
    float32 precision of the *loss* (no cancellation between lse and the logits)."""
    x, w, t = _inputs(8, 4, 50, dtype=torch.float32)
    x = x * 3000
    with torch.no_grad():
        logits = (x.double() @ w.double().T)
        logp = logits.log_softmax(1)
        exact = -(0.9 * logp.gather(1, t[:, None]).squeeze(1) + 0.1 * logp.mean(1))
    ours = F.linear_cross_entropy(x, w, t, reduction="none", label_smoothing=0.1, options=_opts(300))
    torch.testing.assert_close(ours.double(), exact, rtol=1e-4, atol=1e-3)


@needs_torch
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_accuracy(dtype):
    """Half inputs accumulate in float32: the error against float64 is within half an ulp of the
    loss plus torch's float32 error."""
    x, w, t = _inputs(256, 32, 3000, dtype=torch.float32)
    x, w = x.to(dtype), w.to(dtype)
    with torch.no_grad():
        exact = TF.linear_cross_entropy(x.double(), w.double(), t)
        f32 = TF.linear_cross_entropy(x.float(), w.float(), t)
        ours = F.linear_cross_entropy(x, w, t, options=_opts(1 << 18))
    assert ours.dtype == dtype
    half_ulp = torch.finfo(dtype).eps * abs(float(exact)) / 2
    assert abs(float(ours.double() - exact)) <= half_ulp + abs(float(f32.double() - exact)) + 1e-12


def test_low_precision_gradients_close_to_float64():
    x, w, t = _inputs(64, 16, 500, dtype=torch.float32)
    xb, wb = x.bfloat16().requires_grad_(), w.bfloat16().requires_grad_()
    gx, gw = torch.autograd.grad(F.linear_cross_entropy(xb, wb, t), (xb, wb))
    assert gx.dtype == wb.dtype == torch.bfloat16
    xd, wd = xb.detach().double().requires_grad_(), wb.detach().double().requires_grad_()
    ex, ew = torch.autograd.grad(F.linear_cross_entropy(xd, wd, t), (xd, wd))
    torch.testing.assert_close(gx.double(), ex, rtol=2e-2, atol=1e-4)
    torch.testing.assert_close(gw.double(), ew, rtol=2e-2, atol=1e-5)


# --------------------------------------------------------------------------------------------
# Autograd features


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_retain_graph_gives_the_same_bits(reduction):
    x, w, t = _inputs(10, 6, 21, ignore=-100)
    x.requires_grad_()
    w.requires_grad_()
    loss = F.linear_cross_entropy(x, w, t, reduction=reduction, label_smoothing=0.1).sum()
    first = torch.autograd.grad(loss, (x, w), retain_graph=True)
    second = torch.autograd.grad(loss, (x, w), retain_graph=True)
    third = torch.autograd.grad(loss, (x, w), create_graph=True)
    for a, b, c in zip(first, second, third):
        assert torch.equal(a, b)
        torch.testing.assert_close(a, c.detach())


def test_backward_accumulates_into_grad():
    x, w, t = _inputs(10, 6, 21)
    w.requires_grad_()
    F.linear_cross_entropy(x, w, t).backward()
    g1 = w.grad.clone()
    F.linear_cross_entropy(x, w, t).backward()
    torch.testing.assert_close(w.grad, 2 * g1)


def test_gradgradcheck_and_forward_ad_with_vocab_blocks():
    x, w, t = _inputs(5, 3, 11, D=(2,), probs=True)
    b = torch.randn(11, 2, dtype=torch.float64)
    wt = torch.rand(11, dtype=torch.float64) + 0.5
    args = [a.requires_grad_() for a in (x, w, t, b, wt)]

    def f(x, w, t, b, wt):
        return F.linear_cross_entropy(x, w, t, linear_bias=b, weight=wt, label_smoothing=0.1, options=_opts(100))

    assert torch.autograd.gradcheck(f, args, check_forward_ad=True, check_batched_grad=True)
    assert torch.autograd.gradgradcheck(f, args)


def test_jvp_gives_every_tangent():
    x, w, t = _inputs(6, 4, 9, ignore=-100)
    b = torch.randn(9, dtype=torch.float64)
    tangents = tuple(torch.randn_like(a) for a in (x, w, b))
    fn = lambda x, w, b: F.linear_cross_entropy(x, w, t, linear_bias=b, label_smoothing=0.1)
    out, tangent = torch.func.jvp(fn, (x, w, b), tangents)
    assert tangent is not None and tangent.shape == out.shape
    eps = 1e-6
    shifted = [a + eps * d for a, d in zip((x, w, b), tangents)]
    fd = (fn(*shifted) - fn(x, w, b)) / eps
    torch.testing.assert_close(tangent, fd, rtol=1e-4, atol=1e-6)


@needs_torch
def test_vmap_and_vmap_grad_over_the_weight():
    x, w, t = _inputs(7, 4, 15)
    ws = torch.stack([w, w * 0.5, w + 0.1])
    fn = lambda w: F.linear_cross_entropy(x, w, t, label_smoothing=0.05, options=_opts(200))
    ref = lambda w: TF.linear_cross_entropy(x, w, t, label_smoothing=0.05)
    torch.testing.assert_close(torch.func.vmap(fn)(ws), torch.stack([ref(v) for v in ws]))
    torch.testing.assert_close(torch.func.vmap(torch.func.grad(fn))(ws), torch.stack([torch.func.grad(ref)(v) for v in ws]))


@needs_torch
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_compile_fullgraph(reduction):
    torch._dynamo.reset()
    x, w, t = _inputs(8, 4, 19, D=(2,), dtype=torch.float32, ignore=-100)
    x.requires_grad_()
    w.requires_grad_()
    fn = lambda x, w: F.linear_cross_entropy(x, w, t, reduction=reduction, label_smoothing=0.1, options=_opts(300))
    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    out, ref = compiled(x, w), TF.linear_cross_entropy(x, w, t, reduction=reduction, label_smoothing=0.1)
    torch.testing.assert_close(out, ref)
    for a, b in zip(torch.autograd.grad(out.sum(), (x, w)), torch.autograd.grad(ref.sum(), (x, w))):
        torch.testing.assert_close(a, b)


# --------------------------------------------------------------------------------------------
# The module and options


@needs_torch
@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"bias": True, "label_smoothing": 0.1},
        {"out_features": (2, 3), "bias": True},
        {"weight": "w", "ignore_index": 1, "reduction": "sum"},
        {"options": "torch"},
        {"options": "ours"},
    ],
    ids=["plain", "bias-smoothing", "kdim", "weight-ignore-sum", "torch-options", "torchloss-options"],
)
def test_module_matches_torch_and_state_dict_both_ways(kwargs):
    kwargs = dict(kwargs)
    C, K = 7, 5
    if kwargs.get("weight") == "w":
        kwargs["weight"] = torch.rand(C) + 0.5
    ours_kwargs, torch_kwargs = dict(kwargs), dict(kwargs)
    if kwargs.get("options") == "torch":
        ours_kwargs["options"] = torch_kwargs["options"] = torch.nn.LinearCrossEntropyOptions()
    elif kwargs.get("options") == "ours":
        ours_kwargs["options"] = torchloss.LinearCrossEntropyOptions(memory_budget=1000)
        torch_kwargs["options"] = None
    torch.manual_seed(0)
    m = torchloss.LinearCrossEntropyLoss(K, C, **ours_kwargs)
    r = torch.nn.LinearCrossEntropyLoss(K, C, **torch_kwargs)
    if kwargs.get("options") != "ours":
        assert repr(m) == repr(r)
    assert list(m.state_dict()) == list(r.state_dict())
    assert [(n, p.shape) for n, p in m.named_parameters()] == [(n, p.shape) for n, p in r.named_parameters()]
    r.load_state_dict(m.state_dict())  # torchloss -> torch
    x = torch.randn(4, K)
    D = kwargs.get("out_features", ())
    t = torch.randint(0, C, (4, *D))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's "options ignored" warning for K-dim
        torch.testing.assert_close(m(x, t), r(x, t))
        with torch.no_grad():
            for p in r.parameters():
                p.add_(0.25)
        m.load_state_dict(r.state_dict())  # torch -> torchloss
        torch.testing.assert_close(m(x, t), r(x, t))
    m.reduction = "none"
    assert m(x, t).shape == (4, *D)


def test_module_constructor_errors_match_torch():
    for kwargs, exc in [({"weight": torch.ones(3)}, RuntimeError), ({"label_smoothing": 1.5}, RuntimeError)]:
        with pytest.raises(exc, match="weight|label_smoothing"):
            torchloss.LinearCrossEntropyLoss(4, 5, **kwargs)
        if HAS_TORCH_LCE:
            with pytest.raises(exc):
                torch.nn.LinearCrossEntropyLoss(4, 5, **kwargs)


def test_options():
    x, w, t = _inputs(12, 6, 40)
    base = F.linear_cross_entropy(x, w, t)
    for options in (
        torchloss.LinearCrossEntropyOptions(memory_budget=300),
        torchloss.LinearCrossEntropyOptions(precompute_gradients=False),
        *([torch.nn.LinearCrossEntropyOptions(batch_chunk_size=4)] if hasattr(torch.nn, "LinearCrossEntropyOptions") else []),
    ):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # torchloss never falls back, so never warns about it
            torch.testing.assert_close(F.linear_cross_entropy(x, w, t, options=options), base)
    with pytest.raises(ValueError, match="memory_budget"):
        torchloss.LinearCrossEntropyOptions(memory_budget=0)
    with pytest.raises(TypeError, match="options"):
        F.linear_cross_entropy(x, w, t, options={"memory_budget": 10})
    assert torchloss.LinearCrossEntropyOptions is torchloss.functional.LinearCrossEntropyOptions


def test_precompute_and_recompute_agree():
    x, w, t = _inputs(12, 6, 40, ignore=-100)
    grads = []
    for pre in (True, False):
        xx, ww = x.clone().requires_grad_(), w.clone().requires_grad_()
        opts = torchloss.LinearCrossEntropyOptions(memory_budget=500, precompute_gradients=pre)
        grads.append(torch.autograd.grad(F.linear_cross_entropy(xx, ww, t, label_smoothing=0.1, options=opts), (xx, ww)))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


# --------------------------------------------------------------------------------------------
# The streaming API (vocab-parallel linear cross entropy builds on it)


def test_shards_combine_to_the_whole():
    """Statistics of two vocabulary shards, rebased to the global maximum and summed, give the
    loss; each shard's gradients from the global lse are the slices of the whole's."""
    x, w, t = _inputs(10, 6, 30, D=(2,), ignore=-100)
    w3 = w
    _N, C, _D = 10, 30, 2
    valid = t != -100
    idx = torch.where(valid, t, 0)
    r = torch.ones(C, dtype=torch.float64)
    shards = [(0, 13), (13, 30)]
    parts = [L.shard_stats(x, w3[a:b], None, idx, valid, r[a:b], vocab_start=a, budget=400) for a, b in shards]
    M = torch.maximum(parts[0].m, parts[1].m)
    rebased = [p.rebase(M) for p in parts]
    total = L.Stats(M, *(sum(getattr(p, f) for p in rebased) for f in ("s", "zt", "r", "rho")))
    whole = L.shard_stats(x, w3, None, idx, valid, r, budget=1 << 20)
    lse = total.lse()
    torch.testing.assert_close(lse, whole.lse())
    torch.testing.assert_close(total.zt, whole.zt)
    torch.testing.assert_close(total.rho * torch.log(total.s) + total.r, whole.rho * torch.log(whole.s) + whole.r)
    wt = valid.double()
    co = L.Coefs(wt * 0.9 + wt * 0.1 / C * C, wt * 0.9, wt * 0.1 / C)
    g_whole = L.shard_grads(x, w3, None, lse, co, idx, valid, r, need=(True, True, False), budget=1 << 20)
    gx = 0
    for a, b in shards:
        g = L.shard_grads(x, w3[a:b], None, lse, co, idx, valid, r[a:b], need=(True, True, False), vocab_start=a, budget=300)
        torch.testing.assert_close(g.w, g_whole.w[a:b])
        gx = gx + g.x
    torch.testing.assert_close(gx, g_whole.x)


# --------------------------------------------------------------------------------------------
# The lean single-block path (and its native twin) against the streamed Function


def _node_name(loss):
    return loss.grad_fn.name() if loss.grad_fn is not None else ""


_LEAN_CASES = [
    {},
    {"reduction": "sum", "weight": True, "ignore_index": 3, "label_smoothing": 0.2},
    {"reduction": "none", "ignore_index": -100, "label_smoothing": 0.1},
    {"reduction": "none", "weight": True},
    {"bias": True, "label_smoothing": 0.3},
    {"probs": True},
    {"probs": True, "weight": True, "label_smoothing": 0.1, "reduction": "sum"},
    {"probs": True, "reduction": "none", "bias": True},
    {"D": (3,), "weight": True, "ignore_index": 2, "label_smoothing": 0.1},
    {"D": (2,), "probs": True, "reduction": "none"},
    {"unbatched": True},
    {"unbatched": True, "probs": True, "bias": True},
]


def _lean_call(case, dtype, budget=None, seed=0):
    case = dict(case)
    probs, D, unb = case.pop("probs", False), case.pop("D", ()), case.pop("unbatched", False)
    bias, weight = case.pop("bias", False), case.pop("weight", False)
    x, w, t = _inputs(9, 5, 13, D=D, dtype=dtype, seed=seed, probs=probs, ignore=case.get("ignore_index"))
    g = torch.Generator().manual_seed(seed + 1)
    kw = dict(case)
    if bias:
        kw["linear_bias"] = torch.randn(13, *D, generator=g, dtype=torch.float64).to(dtype).requires_grad_()
    if weight:
        kw["weight"] = (torch.rand(13, generator=g, dtype=torch.float64) + 0.5).to(dtype)
    if unb:
        x, t = x[0], t[0]
    if budget is not None:
        kw["options"] = _opts(budget)
    x.requires_grad_()
    w.requires_grad_()
    return (x, w, t), kw


@pytest.mark.parametrize("native", [True, False])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", range(len(_LEAN_CASES)))
def test_lean_path_matches_streamed(case, dtype, native, monkeypatch):
    from torchloss import _native

    if native and _native.module is None:
        pytest.skip("native kernels not built")
    if not native:
        monkeypatch.setattr(_native, "module", None)
    results = []
    for budget in (None, 100):  # one block (lean), then blocks of a few rows and classes (streamed)
        args, kw = _lean_call(_LEAN_CASES[case], dtype, budget)
        loss = F.linear_cross_entropy(*args, **kw)
        name = _node_name(loss)
        if budget is None:
            assert "Lean" in name or "LinearCrossEntropyBlock" in name, name
            if not native:
                assert "Lean" in name
        else:
            assert "LinearCrossEntropyFunction" in name, name
        wrt = [args[0], args[1]] + ([kw["linear_bias"]] if "linear_bias" in kw else [])
        up = torch.linspace(0.5, 1.5, loss.numel(), dtype=loss.dtype).view(loss.shape)
        results.append((loss.detach(), torch.autograd.grad(loss, wrt, up)))
    (l0, g0), (l1, g1) = results
    tol = {"rtol": 1e-12, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 2e-5, "atol": 2e-6}
    torch.testing.assert_close(l0, l1, **tol)
    for a, b in zip(g0, g1):
        torch.testing.assert_close(a, b, **tol)


@pytest.mark.parametrize("case", [0, 1, 2, 5, 8])
def test_lean_path_double_backward(case):
    args, kw = _lean_call(_LEAN_CASES[case], torch.float64)
    wrt = (args[0], args[1])
    assert torch.autograd.gradcheck(lambda x, w: F.linear_cross_entropy(x, w, args[2], **kw), wrt)
    assert torch.autograd.gradgradcheck(lambda x, w: F.linear_cross_entropy(x, w, args[2], **kw), wrt)


def test_lean_path_retain_graph_and_inplace_check():
    args, kw = _lean_call(_LEAN_CASES[1], torch.float64)
    loss = F.linear_cross_entropy(*args, **kw)
    first = torch.autograd.grad(loss, args[:2], retain_graph=True)
    second = torch.autograd.grad(loss, args[:2], retain_graph=True)
    for a, b in zip(first, second):
        assert torch.equal(a, b)
    with torch.no_grad():
        args[1].add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        torch.autograd.grad(loss, args[:2], create_graph=True)


@pytest.mark.parametrize("budget", [None, 8])
def test_large_logits_softmax_keeps_digits(budget):
    # a common bias of 1.5e8 (fuzzer): ℓ = M + log S rounded at 1.5e8 lost the softmax's digits;
    # exp((z - M) - log S) keeps them (the gradient of the shared bias is exactly 0)
    x = torch.tensor([1.5409961082440433], dtype=torch.float64)
    w = torch.tensor([[1.5409961082440433], [-0.2934289057609464]], dtype=torch.float64)
    t = torch.tensor([0.9700530018065531, 0.707819864399788], dtype=torch.float64)
    b = torch.tensor([154099610.82440433], dtype=torch.float64, requires_grad=True)
    kw = {} if budget is None else {"options": _opts(budget)}
    loss = F.linear_cross_entropy(x, w, t, linear_bias=b.expand(2), reduction="none", **kw)
    (g,) = torch.autograd.grad(loss, b)
    assert abs(g.item()) < 1e-15


def test_argument_types_as_torch():
    x, w, t = _inputs(4, 3, 5)
    with pytest.raises(TypeError, match="'weight' \\(position 3\\) must be Tensor, not float"):
        F.linear_cross_entropy(x, w, t, weight=1.5)
    with pytest.raises(TypeError, match="'label_smoothing' \\(position 6\\) must be float, not Tensor"):
        F.linear_cross_entropy(x, w, t, label_smoothing=torch.tensor([2]))
    torch.testing.assert_close(F.linear_cross_entropy(x, w, t, label_smoothing=torch.tensor(0.2)),
                               F.linear_cross_entropy(x, w, t, label_smoothing=0.2))
    with pytest.raises(IndexError):  # torch's error for an empty batch with a 0-d target
        F.linear_cross_entropy(x[:0], w, t[0], weight=torch.ones(5))
    p = torch.rand(4, 5, dtype=torch.float64)
    with pytest.raises(NotImplementedError, match="weight"):
        F.linear_cross_entropy(x, w, p, weight=torch.ones(5, dtype=torch.complex128))


@pytest.mark.parametrize("reduction", ["none", "mean"])
def test_lean_path_promotes_probability_operands(reduction):
    # float32 input and weights, float64 class weights: the loss and its computation are float64
    # (torch's promotion), the gradients float32, also in the 'none' backward (fuzzer)
    x, w, _ = _inputs(3, 2, 4, dtype=torch.float32)
    p = torch.rand(3, 4)
    weight = torch.rand(4, dtype=torch.float64) + 0.5
    w.requires_grad_()
    loss = F.linear_cross_entropy(x, w, p, weight=weight, reduction=reduction)
    assert loss.dtype == torch.float64
    (g,) = torch.autograd.grad(loss, w, torch.full_like(loss, 0.3))
    assert g.dtype == torch.float32
    if HAS_TORCH_LCE:
        w2 = w.detach().requires_grad_()
        ref = TF.linear_cross_entropy(x, w2, p, weight=weight, reduction=reduction)
        torch.testing.assert_close(loss, ref)
        torch.testing.assert_close(g, torch.autograd.grad(ref, w2, torch.full_like(ref, 0.3))[0])


# --------------------------------------------------------------------------------------------
# bfloat16 on a CPU with native bfloat16 products: the logits product in bfloat16, the rest in
# float32 (_half_logits_block), against float64 and torch's reference path


@pytest.mark.parametrize("case", [{}, {"bias": True, "reduction": "sum"}, {"weight": True, "ignore_index": 3}])
def test_half_logits_block(case, monkeypatch):
    from torchloss._autograd import linear as L

    monkeypatch.setattr(L, "native_half_products", lambda dtype: True)  # (the path on any CPU)
    calls = []
    real = L._half_logits_block
    monkeypatch.setattr(L, "_half_logits_block", lambda *a, **k: calls.append(1) or real(*a, **k))
    N, K, C = 256, 16, 300
    x, w, t = _inputs(N, K, C, dtype=torch.bfloat16, ignore=case.get("ignore_index"))
    kw = {k: v for k, v in case.items() if k in ("reduction", "ignore_index")}
    g = torch.Generator().manual_seed(5)
    b = (torch.randn(C, generator=g) * 0.1).bfloat16() if case.get("bias") else None
    wt = (torch.rand(C, generator=g) + 0.5).bfloat16() if case.get("weight") else None
    x.requires_grad_()
    w.requires_grad_()
    # a budget that the one-block lean path does not fit but G in bfloat16 does (two row blocks)
    loss = F.linear_cross_entropy(x, w, t, linear_bias=b, weight=wt, options=_opts(2000 * C), **kw)
    gx, gw = torch.autograd.grad(loss, (x, w))
    assert len(calls) == 2, "the half-logits path did not run"
    assert loss.dtype == torch.bfloat16 and gx.dtype == gw.dtype == torch.bfloat16
    xd, wd = x.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    ref = torch.nn.functional.cross_entropy(
        xd @ wd.t() + (0 if b is None else b.double()), t, weight=None if wt is None else wt.double(), **kw
    )
    rx, rw = torch.autograd.grad(ref, (xd, wd))
    # the loss to its bfloat16 rounding (plus the rounded logits' effect), the gradients to G's
    torch.testing.assert_close(loss.double(), ref, rtol=8e-3, atol=1e-3)
    for got, want in ((gx, rx), (gw, rw)):
        assert float((got.double() - want).norm() / want.norm()) < 1e-2


def test_half_logits_block_under_autocast(monkeypatch):
    """float32 operands inside CPU bfloat16 autocast: cast to bfloat16 for the product (torch's
    ``linear`` policy), so the half-logits path runs; the loss comes out in float32 and the
    gradients in the leaves' float32, as torch's reference path."""
    from torchloss._autograd import linear as L

    monkeypatch.setattr(L, "native_half_products", lambda dtype: True)
    calls = []
    real = L._half_logits_block
    monkeypatch.setattr(L, "_half_logits_block", lambda *a, **k: calls.append(1) or real(*a, **k))
    N, K, C = 256, 16, 300
    x, w, t = _inputs(N, K, C, dtype=torch.float32)
    x.requires_grad_()
    w.requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = F.linear_cross_entropy(x, w, t, options=_opts(2000 * C))
        gx, gw = torch.autograd.grad(loss, (x, w))
    assert calls, "the half-logits path did not run"
    assert loss.dtype == torch.float32 and gx.dtype == gw.dtype == torch.float32
    xd, wd = x.detach().bfloat16().double().requires_grad_(), w.detach().bfloat16().double().requires_grad_()
    ref = torch.nn.functional.cross_entropy(xd @ wd.t(), t)
    rx, rw = torch.autograd.grad(ref, (xd, wd))
    torch.testing.assert_close(loss.double(), ref, rtol=8e-3, atol=1e-3)
    for got, want in ((gx, rx), (gw, rw)):
        assert float((got.double() - want).norm() / want.norm()) < 1e-2
    if HAS_TORCH_LCE:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            theirs = TF.linear_cross_entropy(x, w, t)
        assert theirs.dtype == loss.dtype
