"""NLL and cross entropy beyond the generic table: ignored targets, degenerate denominators,
extreme logits, memory kept for backward, torch's quirks and where torchloss deliberately differs."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as TF

import torchloss
import torchloss.functional as F
from torchloss.functional import classification as FC
from torchloss import _native as native
from torchloss.testing import check_autograd, graph_functions, saved_bytes

# every test on each device of the device fixture (tests/conftest.py: on_device, cpu_only)
pytestmark = pytest.mark.usefixtures("on_device")

REDUCTIONS = ("none", "mean", "sum")


def _grad(fn, x, *args, **kwargs):
    x = x.detach().clone().requires_grad_()
    out = fn(x, *args, **kwargs)
    (g,) = torch.autograd.grad(out.sum(), x)
    return out.detach(), g


def _both(name, x, *args, **kwargs):
    return _grad(getattr(F, name), x, *args, **kwargs), _grad(getattr(TF, name), x, *args, **kwargs)


def _same(a, b, rtol=1e-6, atol=1e-7):
    assert a.shape == b.shape and a.dtype == b.dtype
    assert torch.allclose(a, b, rtol=rtol, atol=atol, equal_nan=True), (a, b)


# --------------------------------------------------------------------------------------------
# Ignored targets and degenerate 'mean' denominators


@pytest.mark.parametrize("name", ["nll_loss", "cross_entropy"])
@pytest.mark.parametrize("extra", [{}, {"weight": torch.rand(5) + 0.5}, {"label_smoothing": 0.2}])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_all_ignored_gives_nan_mean_and_zero_gradient(name, extra, reduction, device):
    if name == "nll_loss" and "label_smoothing" in extra:
        pytest.skip("no smoothing in nll_loss")
    extra = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in extra.items()}
    x = torch.randn(4, 5, device=device)
    x[0, 1] = float("-inf")  # a -inf at an ignored position must not leak a NaN
    y = torch.full((4,), 1, device=device)
    (out, g), (ref, ref_g) = _both(name, x, y, ignore_index=1, reduction=reduction, **extra)
    _same(out, ref)
    _same(g, ref_g)
    assert torch.equal(g, torch.zeros_like(g))
    if reduction == "mean":
        assert out.isnan()


@pytest.mark.parametrize("name", ["nll_loss", "cross_entropy"])
def test_all_ignored_double_backward_is_finite(name, device):
    x = torch.randn(3, 4, device=device, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([2, 2, 2], device=device)
    out = getattr(F, name)(x, y, ignore_index=2)
    (g,) = torch.autograd.grad(out, x, create_graph=True)
    if g.requires_grad:
        (gg,) = torch.autograd.grad((g * torch.randn_like(g)).sum(), x, allow_unused=True)
        assert gg is None or torch.isfinite(gg).all()


@pytest.mark.parametrize("name", ["nll_loss", "cross_entropy"])
def test_zero_weights_on_present_targets_give_nan_like_torch(name, device):
    x = torch.randn(4, 5, device=device)
    y = torch.tensor([0, 0, 1, 1], device=device)
    w = torch.tensor([0.0, 0.0, 1.0, 1.0, 1.0], device=device)
    (out, g), (ref, ref_g) = _both(name, x, y, weight=w)
    assert out.isnan() and ref.isnan()
    assert torch.equal(g.isnan(), ref_g.isnan())


def test_unbatched_ignored_sample(device):
    x = torch.randn(5, device=device)
    t = torch.tensor(3, device=device)
    for name in ("nll_loss", "cross_entropy"):
        for reduction in REDUCTIONS:
            (out, g), (ref, ref_g) = _both(name, x, t, ignore_index=3, reduction=reduction)
            _same(out, ref)
            _same(g, ref_g)


# --------------------------------------------------------------------------------------------
# Unbatched input with a (1,) target: torch computes the loss but cannot run its backward


@pytest.mark.parametrize("name", ["nll_loss", "cross_entropy"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_unbatched_input_with_1d_target(name, reduction, device):
    x = torch.randn(5, device=device, dtype=torch.float64)
    kwargs = {"reduction": reduction}
    out = getattr(F, name)(x, torch.tensor([2], device=device), **kwargs)
    ref = getattr(TF, name)(x, torch.tensor([2], device=device), **kwargs)
    _same(out, ref)
    assert out.shape == ()
    # torch raises in backward here ("size mismatch"); torchloss's gradient is that of the 0-d target
    _, g = _grad(getattr(F, name), x, torch.tensor([2], device=device), **kwargs)
    _, g0 = _grad(getattr(F, name), x, torch.tensor(2, device=device), **kwargs)
    _same(g, g0)
    with pytest.raises(RuntimeError):
        _grad(getattr(TF, name), x, torch.tensor([2], device=device), **kwargs)
    check_autograd(getattr(F, name), (x, torch.tensor([2], device=device)), kwargs, (0,))


# --------------------------------------------------------------------------------------------
# Extreme logits


@pytest.mark.parametrize("scale", [1e2, 1e4, 3e4])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_large_logits_accurate_in_float32(scale, smoothing, device):
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(64, 10, generator=gen, dtype=torch.float64) * scale).to(device)
    y = torch.randint(0, 10, (64,), generator=gen).to(device)
    x32 = x.float()
    exact = TF.cross_entropy(x32.double(), y, label_smoothing=smoothing, reduction="none")
    ours = F.cross_entropy(x32, y, label_smoothing=smoothing, reduction="none")
    theirs = TF.cross_entropy(x32, y, label_smoothing=smoothing, reduction="none")
    assert torch.isfinite(ours).all()
    err, err_torch = (ours.double() - exact).abs(), (theirs.double() - exact).abs()
    ulp = torch.finfo(torch.float32).eps * exact.abs()
    assert bool((err <= err_torch + ulp + 1e-30).all())
    _, g = _grad(F.cross_entropy, x32, y, label_smoothing=smoothing)
    _, g_exact = _grad(TF.cross_entropy, x32.double(), y, label_smoothing=smoothing)
    assert torch.allclose(g.double(), g_exact, atol=1e-7)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_minus_inf_logits_match_torch(smoothing, device):
    x = torch.randn(4, 5, device=device)
    x[0, 2] = float("-inf")  # a non-target class: finite loss, zero gradient there
    x[1, 3] = float("-inf")  # the target class: infinite loss
    x[2] = float("-inf")  # a whole row: NaN, as torch
    y = torch.tensor([1, 3, 0, 4], device=device)
    (out, g), (ref, ref_g) = _both("cross_entropy", x, y, reduction="none", label_smoothing=smoothing)
    _same(out, ref)
    assert out[1] == float("inf") and out[2].isnan()
    if smoothing == 0:
        assert torch.isfinite(out[0]) and g[0, 2] == 0
    _same(g[[0, 1, 3]], ref_g[[0, 1, 3]])


def test_probability_target_zero_on_minus_inf_is_nan_like_torch(device):
    x = torch.tensor([[0.0, float("-inf"), 1.0]], device=device)
    p = torch.tensor([[0.5, 0.0, 0.5]], device=device)
    _same(F.cross_entropy(x, p), TF.cross_entropy(x, p))


# --------------------------------------------------------------------------------------------
# Memory kept for backward


@pytest.mark.parametrize(
    "target_kind,kwargs",
    [("index", {}), ("index", {"label_smoothing": 0.1, "weight": True}), ("probs", {}), ("index-3d", {})],
)
def test_cross_entropy_keeps_no_more_than_torch(target_kind, kwargs, device):
    N, C = 64, 1000
    x = torch.randn(N, C, device=device) if target_kind != "index-3d" else torch.randn(8, C, 8, device=device)
    if target_kind == "probs":
        y, wrt = torch.rand(N, C, device=device).softmax(1), (0, 1)
    elif target_kind == "index-3d":
        y, wrt = torch.randint(0, C, (8, 8), device=device), (0,)
    else:
        y, wrt = torch.randint(0, C, (N,), device=device), (0,)
    if kwargs.get("weight"):
        kwargs = dict(kwargs, weight=torch.rand(C, device=device))
    ours = saved_bytes(F.cross_entropy, (x, y), kwargs, wrt)
    theirs = saved_bytes(TF.cross_entropy, (x, y), kwargs, wrt)
    assert ours.total <= theirs.total
    # torch keeps an N x C log-softmax beside the logits; torchloss keeps nothing but its inputs
    assert ours.extra == 0
    assert theirs.extra >= x.numel() * x.element_size()


def test_nll_keeps_only_target_and_weight(device, monkeypatch):
    monkeypatch.setattr(native, "module", None)  # the reference (the weighted kernel saves the input, as torch)
    x, y, w = torch.randn(64, 100, device=device), torch.randint(0, 100, (64,), device=device), torch.rand(100, device=device)
    ours = saved_bytes(F.nll_loss, (x, y), {"weight": w})
    theirs = saved_bytes(TF.nll_loss, (x, y), {"weight": w})
    assert ours.total == y.numel() * 8 + w.numel() * 4
    assert ours.total < theirs.total


# --------------------------------------------------------------------------------------------
# torch's quirks and semantics


def test_uint8_targets_are_compared_as_integers(device):
    x = torch.randn(4, 300, device=device)
    y = torch.tensor([1, 255, 4, 2], dtype=torch.uint8, device=device)
    for name in ("nll_loss", "cross_entropy"):
        (out, g), (ref, ref_g) = _both(name, x, y, ignore_index=255)
        _same(out, ref)
        _same(g, ref_g)
        (out, g), (ref, ref_g) = _both(name, x, y)  # 255 is a class here, not ignored
        _same(out, ref)


def test_negative_smoothing_counts_as_zero(device):
    x, y = torch.randn(4, 5, device=device), torch.tensor([1, 0, 4, 2], device=device)
    _same(F.cross_entropy(x, y, label_smoothing=-0.5), F.cross_entropy(x, y))
    p = torch.rand(4, 5, device=device)
    _same(F.cross_entropy(x, p, label_smoothing=-0.5), F.cross_entropy(x, p))


def test_probability_targets_detected_by_shape_only(device):
    # a float target of another shape is taken as class indices and refused
    x = torch.randn(4, 5, device=device)
    with pytest.raises(RuntimeError, match="target dtype"):
        F.cross_entropy(x, torch.rand(4, device=device))
    # a (C) input and a (C) float target are probabilities
    p = torch.rand(5, device=device)
    _same(F.cross_entropy(x[0], p), TF.cross_entropy(x[0], p))


def test_probability_targets_mixed_dtypes_promote(device):
    x = torch.randn(4, 5, device=device)
    p64 = torch.rand(4, 5, device=device, dtype=torch.float64)
    w = torch.ones(5, dtype=torch.int64, device=device)
    for target, kwargs in [(p64, {}), (p64.float(), {"weight": w}), (p64.half(), {})]:
        out, ref = F.cross_entropy(x, target, **kwargs), TF.cross_entropy(x, target, **kwargs)
        assert out.dtype == ref.dtype
        assert torch.allclose(out.double(), ref.double(), rtol=1e-6)


def test_nllloss2d_is_a_deprecated_alias():
    with pytest.warns(FutureWarning, match="NLLLoss2d` has been deprecated"):
        m = torchloss.NLLLoss2d(ignore_index=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = torch.nn.NLLLoss2d(ignore_index=1)
    assert isinstance(m, torchloss.NLLLoss) and repr(m) == repr(r)
    x, y = torch.randn(2, 3, 4, 4).log_softmax(1), torch.randint(0, 3, (2, 4, 4))
    _same(m(x, y), r(x, y))


def test_modules_keep_weight_buffer_and_constants():
    w = torch.rand(5)
    for cls in ("NLLLoss", "CrossEntropyLoss"):
        ours, theirs = getattr(torchloss, cls)(weight=w), getattr(torch.nn, cls)(weight=w)
        assert list(ours.state_dict()) == list(theirs.state_dict()) == ["weight"]
        assert ours.__constants__ == theirs.__constants__
    m = torchloss.CrossEntropyLoss(label_smoothing=0.3, ignore_index=2)
    assert (m.label_smoothing, m.ignore_index) == (0.3, 2)


def test_ignore_index_accepts_integer_likes(device):
    x, y = torch.randn(4, 5, device=device), torch.tensor([1, 0, 4, 1], device=device)
    for ii in (torch.tensor(1), __import__("numpy").int64(1)):
        _same(F.cross_entropy(x, y, ignore_index=ii), TF.cross_entropy(x, y, ignore_index=ii))


# --------------------------------------------------------------------------------------------
# Beyond torch: transforms torch cannot run


def test_vmap_over_index_targets_with_smoothing(device):
    # torch's label-smoothing path fills in place and refuses a batched target under vmap
    x = torch.randn(4, 5, device=device, dtype=torch.float64)
    ys = torch.randint(0, 5, (3, 4), device=device)
    out = torch.func.vmap(lambda y: F.cross_entropy(x, y, label_smoothing=0.2))(ys)
    expected = torch.stack([TF.cross_entropy(x, y, label_smoothing=0.2) for y in ys])
    _same(out, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kwargs", [{}, {"label_smoothing": 0.2, "ignore_index": 0}, {"probs": True}])
def test_hessian_matches_torch(kwargs, device):
    kwargs = dict(kwargs)
    x = torch.randn(3, 4, device=device, dtype=torch.float64)
    y = torch.softmax(torch.randn(3, 4, device=device, dtype=torch.float64), 1) if kwargs.pop("probs", False) else torch.tensor([0, 1, 3], device=device)
    h = torch.func.hessian(lambda v: F.cross_entropy(v, y, **kwargs))(x)
    h_ref = torch.func.hessian(lambda v: TF.cross_entropy(v, y, **kwargs))(x)
    _same(h, h_ref, rtol=1e-10, atol=1e-12)


@pytest.mark.cpu_only
@pytest.mark.parametrize(
    "kwargs",
    [{"weight": True, "ignore_index": 1}, {"label_smoothing": 0.1}, {"probs": True, "weight": True}],
)
def test_compiles_to_one_graph_with_options(kwargs):
    torch._dynamo.reset()
    kwargs = dict(kwargs)
    x = torch.randn(6, 5)
    y = torch.rand(6, 5) if kwargs.pop("probs", False) else torch.tensor([0, 1, 2, 3, 4, 1])
    if kwargs.pop("weight", False):
        kwargs["weight"] = torch.rand(5) + 0.5
    compiled = torch.compile(F.cross_entropy, fullgraph=True, backend="aot_eager")
    (out, g), (ref, ref_g) = _grad(compiled, x, y, **kwargs), _grad(TF.cross_entropy, x, y, **kwargs)
    _same(out, ref, rtol=1e-5, atol=1e-6)
    _same(g, ref_g, rtol=1e-5, atol=1e-6)


def test_graph_is_one_node_for_every_path(monkeypatch):
    monkeypatch.setattr(native, "module", None)  # the reference's Functions (the kernels: test_native_*)
    x = torch.randn(4, 5, requires_grad=True)
    for y, kwargs in [
        (torch.tensor([1, 0, 4, 2]), {"label_smoothing": 0.1, "weight": torch.rand(5)}),
        (torch.rand(4, 5), {"label_smoothing": 0.1, "weight": torch.rand(5, requires_grad=True)}),
    ]:
        nodes = [n for n in graph_functions(F.cross_entropy(x, y, **kwargs)) if n != "AccumulateGrad"]
        assert len(nodes) == 1 and nodes[0].__module__.startswith("torchloss.")


# --------------------------------------------------------------------------------------------
# The plain Functions (no weight, smoothing or ignored target) against the general ones

from torchloss._autograd import classification as C  # noqa: E402

_CODES = {"none": 0, "mean": 1, "sum": 2}


def _node(out):
    (node,) = [n for n in graph_functions(out) if n != "AccumulateGrad"]
    return node.__name__


@pytest.mark.cpu_only
@pytest.mark.parametrize("name", ["nll_loss", "cross_entropy"])
@pytest.mark.parametrize("shape", [(6, 5), (3, 4, 2, 3)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_plain_matches_general_function(name, shape, dtype, reduction):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype)
    y = torch.randint(0, shape[1], shape[:1] + shape[2:], generator=gen)
    code = _CODES[reduction]
    if name == "nll_loss":
        plain, general = FC._nll_plain, lambda a: FC._nll(a, y, None, code, -100)
    else:
        plain, general = FC._ce_plain, lambda a: FC._ce(a, y, None, code, -100, 0.0)
    (out, g), (ref, ref_g) = _grad(plain, x, y.unsqueeze(1), code), _grad(general, x)
    assert out.dtype == ref.dtype == dtype and g.dtype == dtype
    tol = {"rtol": 1e-2, "atol": 1e-3} if dtype in (torch.float16, torch.bfloat16) else {}
    _same(out, ref, **tol)
    _same(g, ref_g, **tol)
    if dtype == torch.float64:
        check_autograd(plain, (x, y.unsqueeze(1), code), {}, (0,))


@pytest.mark.cpu_only
@pytest.mark.parametrize("name", ["nll_loss", "cross_entropy"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_plain_differentiable_backward_matches_eager(name, reduction, monkeypatch):
    monkeypatch.setattr(native, "module", None)  # the Python plain Functions (the kernels: test_native_*)
    # create_graph=True takes the out-of-place path; plain backward takes the in-place one
    x = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 3, 1, 1, 2])
    out = getattr(F, name)(x, y, reduction=reduction)
    assert _node(out) in ("NLLLossPlainFunction", "CrossEntropyPlainFunction")
    up = torch.rand_like(out)
    (g_eager,) = torch.autograd.grad(out, x, up, retain_graph=True)
    (g_graph,) = torch.autograd.grad(out, x, up, create_graph=True)
    _same(g_graph.detach(), g_eager, rtol=1e-12, atol=1e-14)
    ref_x = x.detach().clone().requires_grad_()
    (ref_g,) = torch.autograd.grad(getattr(TF, name)(ref_x, y, reduction=reduction), ref_x, up)
    _same(g_eager, ref_g, rtol=1e-12, atol=1e-14)


@pytest.mark.cpu_only
@pytest.mark.parametrize("name", ["nll_loss", "cross_entropy"])
def test_functional_picks_plain_only_when_nothing_is_ignored(name, monkeypatch):
    monkeypatch.setattr(native, "module", None)
    x = torch.randn(4, 5, requires_grad=True)
    fn, ref = getattr(F, name), getattr(TF, name)
    plain = "NLLLossPlainFunction" if name == "nll_loss" else "CrossEntropyPlainFunction"
    cases = [
        (torch.tensor([1, 0, 4, 2]), {}, True),
        (torch.tensor([1, 0, 1, 2]), {"ignore_index": 3}, True),  # a class index beyond the targets' range
        (torch.tensor([1, 0, 4, 2]), {"ignore_index": 3}, False),  # within their range: general path
        (torch.tensor([1, 0, 4, 2]), {"ignore_index": 5}, True),
        (torch.tensor([1, -100, 4, 2]), {}, False),  # the try path falls back
        (torch.tensor([1, 3, 4, 2]), {"ignore_index": 3}, False),  # the range path refuses
        (torch.tensor([1, 0, 4, 2], dtype=torch.uint8), {}, False),
        (torch.tensor([1, 0, 4, 2]), {"weight": torch.rand(5)}, False),
    ]
    if name == "cross_entropy":
        cases.append((torch.tensor([1, 0, 4, 2]), {"label_smoothing": 0.1}, False))
    for y, kwargs, is_plain in cases:
        out = fn(x, y, **kwargs)
        assert (_node(out) == plain) == is_plain, (y, kwargs)
        _same(out.detach(), ref(x, y, **kwargs).detach(), rtol=1e-5, atol=1e-6)


@pytest.mark.cpu_only
@pytest.mark.parametrize("name", ["nll_loss", "cross_entropy"])
@pytest.mark.parametrize("bad", [5, -1, -100])
def test_plain_candidates_out_of_range_raise_torchs_error(name, bad):
    x, y = torch.randn(4, 5), torch.tensor([1, bad, 4, 2])
    kwargs = {"ignore_index": 0} if bad == -100 else {}
    with pytest.raises(IndexError):
        getattr(TF, name)(x, y, **kwargs)
    with pytest.raises(IndexError):
        getattr(F, name)(x, y, **kwargs)


def test_cross_entropy_large_input_reads_the_range_first(monkeypatch):
    monkeypatch.setattr(native, "module", None)  # the reference's general path
    # above the probe limit a failed attempt would waste the log-softmax: the range is read first
    x = torch.randn(100, 50, requires_grad=True)
    y = torch.randint(0, 50, (100,))
    y[7] = -100
    calls = []
    monkeypatch.setattr(C, "_log_softmax", lambda *a: calls.append(1) or torch.log_softmax(*a))
    out = F.cross_entropy(x, y)
    assert _node(out) == "CrossEntropyLossFunction" and calls == [1]  # the general path's only
    _same(out.detach(), TF.cross_entropy(x, y).detach(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", [(37, 11), (9, 6, 5, 2)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_blocked_log_softmax_matches_one_pass(monkeypatch, shape, dtype):
    gen = torch.Generator().manual_seed(2)
    x = (torch.randn(shape, generator=gen) * 4).to(dtype)
    y = torch.randint(0, shape[1], shape[:1] + shape[2:], generator=gen).unsqueeze(1)
    one_pass = C._picked_log_softmax(x, y)
    monkeypatch.setattr(C, "_BLOCK", 3 * x[0].numel() + 1)  # blocks of 3 samples, a short last one
    blocked = C._picked_log_softmax(x, y)
    assert torch.equal(blocked, one_pass) and blocked.dtype == C.opmath_dtype(dtype)
    for reduction in REDUCTIONS:
        _same(F.cross_entropy(x, y.squeeze(1), reduction=reduction), TF.cross_entropy(x, y.squeeze(1), reduction=reduction),
              rtol=1e-3 if dtype == torch.float16 else 1e-6, atol=1e-3 if dtype == torch.float16 else 1e-6)
    # a differentiated or transformed forward keeps the one-pass form
    out = torch.func.vmap(lambda v: F.cross_entropy(v, y.squeeze(1)))(x.double().unsqueeze(0).expand(2, *shape))
    _same(out, TF.cross_entropy(x.double(), y.squeeze(1)).expand(2), rtol=1e-12, atol=1e-12)


@pytest.mark.cpu_only
def test_plain_nll_keeps_only_the_target(monkeypatch):
    monkeypatch.setattr(native, "module", None)
    x, y = torch.randn(64, 100), torch.randint(0, 100, (64,))
    ours = saved_bytes(F.nll_loss, (x, y))
    theirs = saved_bytes(TF.nll_loss, (x, y))
    assert ours.total == y.numel() * 8 and ours.extra == 0
    assert ours.total < theirs.total


@pytest.mark.cpu_only
@pytest.mark.parametrize("name", ["nll_loss", "cross_entropy"])
def test_plain_vmap_over_targets_and_inputs(name):
    x = torch.randn(3, 4, 5, dtype=torch.float64)
    ys = torch.randint(0, 5, (3, 4))
    out = torch.func.vmap(lambda a, y: getattr(F, name)(a, y))(x, ys)
    expected = torch.stack([getattr(TF, name)(a, y) for a, y in zip(x, ys)])
    _same(out, expected, rtol=1e-12, atol=1e-12)
    g = torch.func.vmap(torch.func.grad(lambda a, y: getattr(F, name)(a, y)))(x, ys)
    g_ref = torch.stack([torch.func.grad(lambda a: getattr(TF, name)(a, y))(a) for a, y in zip(x, ys)])
    _same(g, g_ref, rtol=1e-12, atol=1e-12)


@pytest.mark.cpu_only
@pytest.mark.parametrize("name", ["nll_loss", "cross_entropy"])
@pytest.mark.parametrize("shape", [(6, 5), (3, 4, 2, 3)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_plain_cached_constants_match_fresh_ones(monkeypatch, name, shape, dtype, reduction):
    # small inputs take cached constants in the backward (NLL: a zero template, CE: a column of
    # -1); the same step without them gives the very same gradient, and a caller writing into
    # the gradient never reaches the cache
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(shape, generator=gen, dtype=dtype)
    y = torch.randint(0, shape[1], shape[:1] + shape[2:], generator=gen)
    up = torch.rand((), generator=gen, dtype=dtype) + 0.5
    fn = getattr(F, name)

    def grads():
        a = x.clone().requires_grad_()
        out = fn(a, y, reduction=reduction)
        (g,) = torch.autograd.grad(out, a, up.expand_as(out) if reduction == "none" else up)
        return out.detach(), g

    (_, g), (out2, g2) = grads(), grads()
    g.fill_(7.0)  # the caller's to write into: a fresh tensor, not the cached template
    assert torch.equal(g2, grads()[1])
    monkeypatch.setattr(C, "_TEMPLATE_LIMIT", 0)
    out_fresh, g_fresh = grads()
    assert torch.equal(out2, out_fresh) and torch.equal(g2, g_fresh)
    ref_x = x.clone().requires_grad_()
    ref = getattr(TF, name)(ref_x, y, reduction=reduction)
    (ref_g,) = torch.autograd.grad(ref, ref_x, up.expand_as(ref) if reduction == "none" else up)
    _same(g2, ref_g, rtol=1e-5 if dtype == torch.float32 else 1e-12, atol=1e-7 if dtype == torch.float32 else 1e-14)


@pytest.mark.parametrize("name", ["cross_entropy", "nll_loss"])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_vectorized_jacobian_and_batched_gradients(name, reduction, device):
    # issue 17: the eager in-place backward (mul_/scatter_) and the native kernels refused the
    # BatchedTensor upstream gradient of is_grads_batched (jacobian(vectorize=True),
    # gradcheck(check_batched_grad=True)); float64 here takes the native kernel where built
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0, 1, 2, 0])

    def ours(a):
        return getattr(F, name)(a, t, reduction=reduction)

    def ref(a):
        return getattr(TF, name)(a, t, reduction=reduction)

    got = torch.autograd.functional.jacobian(ours, x.detach(), vectorize=True)
    torch.testing.assert_close(got, torch.autograd.functional.jacobian(ref, x.detach()))
    torch.autograd.gradcheck(ours, (x,), check_batched_grad=True)
    h = torch.autograd.functional.hessian(lambda a: ours(a).sum(), x.detach(), vectorize=True)
    torch.testing.assert_close(h, torch.autograd.functional.hessian(lambda a: ref(a).sum(), x.detach()))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_uint8_targets_with_weight_and_smoothing_refused_only_where_torch_gathers(reduction):
    # torch's 'mean' of the smoothing term gathers the class weights at the non-ignored targets
    # (after its NLL's checks): only there is a uint8 index refused
    x = torch.randn(3, 4, dtype=torch.float64)
    w = torch.rand(4, dtype=torch.float64) + 0.5
    kw = {"weight": w, "label_smoothing": 0.1, "reduction": reduction}
    cases = [
        (x, torch.tensor([0, 3, 1], dtype=torch.uint8), {}),
        (x, torch.tensor([2, 2, 2], dtype=torch.uint8), {"ignore_index": 2}),  # all ignored
        (x[:0], torch.zeros(0, dtype=torch.uint8), {}),  # empty
        (x, torch.tensor([0, 9, 1], dtype=torch.uint8), {}),  # out of range: the NLL's IndexError first
    ]
    for xi, y, extra in cases:
        try:
            expected = TF.cross_entropy(xi, y, **kw, **extra)
        except Exception as e:  # noqa: BLE001
            with pytest.raises(type(e)):
                F.cross_entropy(xi, y, **kw, **extra)
            continue
        _same(F.cross_entropy(xi, y, **kw, **extra), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["nll_loss", "cross_entropy"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_no_classes_with_every_target_ignored(name, reduction):
    # a (0) or (N, 0) input accepts only ignore_index targets; torch computes NaN ('mean') or 0,
    # and with label smoothing NaN everywhere (its 0 * (ε/0))
    smoothing = [0.0, 0.3] if name == "cross_entropy" else [0.0]
    for x, y in ((torch.zeros(0), torch.tensor(-100)), (torch.zeros(2, 0), torch.tensor([-100, -100]))):
        for s in smoothing:
            for w in (None, torch.zeros(0)):
                kw = {"reduction": reduction, "weight": w, **({"label_smoothing": s} if s else {})}
                xo, xt = x.clone().requires_grad_(), x.clone().requires_grad_()
                ours, expected = getattr(F, name)(xo, y, **kw), getattr(TF, name)(xt, y, **kw)
                _same(ours.detach(), expected.detach(), rtol=0, atol=0)
                (g,) = torch.autograd.grad(ours.sum(), xo)
                assert g.shape == x.shape


def test_empty_integer_input_with_probability_targets():
    # torch checks the input's dtype only when its log-softmax has an element to compute
    x = torch.zeros(0, 3, dtype=torch.int64)
    for y in (torch.zeros(0, 3, dtype=torch.float64), torch.zeros(0, 3, dtype=torch.float16)):
        for reduction in ("mean", "sum", "none"):
            ours, expected = F.cross_entropy(x, y, reduction=reduction), TF.cross_entropy(x, y, reduction=reduction)
            assert ours.dtype == expected.dtype and ours.shape == expected.shape
    with pytest.raises(NotImplementedError):
        F.cross_entropy(torch.zeros(2, 3, dtype=torch.int64), torch.zeros(2, 3))
    with pytest.raises(RuntimeError):  # an index target: the NLL's dtype check first
        F.cross_entropy(x, torch.zeros(0))
