"""Generic tests driven by the case table (``torchloss.testing.cases``).

Every sample of every loss goes through the same checks against torch.nn.functional: values and
gradients for each reduction and dtype, gradcheck / gradgradcheck / forward AD in float64, jvp and
vmap via torch.func, errors, empty batches, legacy arguments, modules, non-contiguous inputs,
unmutated inputs, graph purity, and low-precision accuracy against a float64 reference.
"""

from __future__ import annotations

import warnings

import pytest
import torch

import torchloss
import torchloss.functional as F
from torchloss.testing import (
    check_autograd,
    check_jvp,
    check_vmap,
    graph_functions,
    parity,
)
from torchloss.testing.cases import CASES, Maker
from torchloss.testing.runner import functions, or_skip, ours_function, torch_or_ours
from torchloss.testing.runner import quiet as _quiet

FLOATS = [torch.float32, torch.float64]


def _ids(items):
    return [i[-1] for i in items]


def _samples(kind="samples"):
    out = []
    for case in CASES:
        for i, s in enumerate(getattr(case, kind)(Maker())):
            out.append((case, i, f"{case.name}-{i}-{s.name}"))
    return out


SAMPLES = _samples()
EMPTY = _samples("empty")
ERRORS = [
    (case, i, f"{case.name}-{e.name}") for case in CASES for i, e in enumerate(case.errors(Maker()))
]
WITH_REDUCTION = [(c, i, r, f"{n}-{r}") for c, i, n in SAMPLES for r in c.reductions]


def _get_sample(case, i, device="cpu", dtype=torch.float64, seed=0, kind="samples"):
    return getattr(case, kind)(Maker(device, dtype, seed))[i]


def _fns(case):
    """The case's functionals (composed with ``case.compose``), or a skip on a torch without it."""
    return or_skip(functions, case)


def _torch_functional(case):
    return or_skip(case.torch_functional)


def _torch_module(case):
    return or_skip(case.torch_module)


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
@pytest.mark.parametrize("case,i,reduction,_", WITH_REDUCTION, ids=_ids(WITH_REDUCTION))
def test_values_and_gradients(case, i, reduction, _, dtype, device):
    s = _get_sample(case, i, device, dtype)
    ours, ref = _fns(case)
    rtol, atol = case.tolerance(dtype)
    kwargs = dict(s.kwargs, reduction=reduction)
    report = parity(_quiet(ours), _quiet(ref), s.args, kwargs, s.torch_wrt or s.wrt, rtol=rtol, atol=atol)
    assert report.ok, report.problems


@pytest.mark.parametrize("case,i,reduction,_", WITH_REDUCTION, ids=_ids(WITH_REDUCTION))
def test_gradcheck(case, i, reduction, _, device):
    s = _get_sample(case, i, device)
    ours = ours_function(case)  # torchloss's own feature: no torch needed
    check_autograd(_quiet(ours), s.args, dict(s.kwargs, reduction=reduction), s.wrt)


@pytest.mark.parametrize("case,i,reduction,_", WITH_REDUCTION, ids=_ids(WITH_REDUCTION))
def test_jvp(case, i, reduction, _, device):
    s = _get_sample(case, i, device)
    ours = ours_function(case)
    kwargs = dict(s.kwargs, reduction=reduction)
    reference = _quiet(torch_or_ours(case)) if case.torch_forward_ad else None
    check_jvp(_quiet(ours), reference, s.args, kwargs, s.torch_wrt or s.wrt, rtol=1e-7, atol=1e-10)
    if s.torch_wrt is not None and s.torch_wrt != s.wrt:
        check_jvp(_quiet(ours), None, s.args, kwargs, s.wrt, rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("case,i,reduction,_", WITH_REDUCTION, ids=_ids(WITH_REDUCTION))
def test_vmap(case, i, reduction, _, device):
    s0 = _get_sample(case, i, device)
    wrt = s0.torch_wrt or s0.wrt
    batch = []
    for seed in range(3):
        s = _get_sample(case, i, device, seed=seed)
        args, kwargs = list(s0.args), dict(s0.kwargs, reduction=reduction)
        for slot in wrt:
            src = s.kwargs[slot] if isinstance(slot, str) else s.args[slot]
            if isinstance(slot, str):
                kwargs[slot] = src
            else:
                args[slot] = src
        batch.append((args, kwargs))
    ours, ref = ours_function(case), torch_or_ours(case)
    check_vmap(_quiet(ours), _quiet(ref), batch, wrt, rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("case,i,_", ERRORS, ids=_ids(ERRORS))
def test_errors(case, i, _, device):
    e = case.errors(Maker(device))[i]
    ours, ref = case.torchloss_functional(), _torch_functional(case)  # the bad call as written
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(e.exc):
            ref(*e.args, **e.kwargs)
        with pytest.raises(e.exc, match=e.match):
            ours(*e.args, **e.kwargs)


EMPTY_WITH_REDUCTION = [(c, i, r, f"{n}-{r}") for c, i, n in EMPTY for r in c.reductions]


@pytest.mark.parametrize("case,i,reduction,_", EMPTY_WITH_REDUCTION, ids=_ids(EMPTY_WITH_REDUCTION))
def test_empty_batch(case, i, reduction, _, device):
    s = _get_sample(case, i, device, kind="empty")
    ours, ref = _fns(case)
    ref = case.empty_reference or ref
    report = parity(_quiet(ours), _quiet(ref), s.args, dict(s.kwargs, reduction=reduction), s.torch_wrt or s.wrt)
    assert report.ok, report.problems


def _legacy_combos():
    return [(sa, rd) for sa in (None, True, False) for rd in (None, True, False) if (sa, rd) != (None, None)]


def _record(fn, *args, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fn(*args, **kwargs)
    return out, [(w.category, str(w.message)) for w in caught]


LEGACY = [c for c in CASES if c.legacy]


@pytest.mark.parametrize("case", LEGACY, ids=[c.name for c in LEGACY])
@pytest.mark.parametrize("size_average,reduce", _legacy_combos())
def test_legacy_arguments(case, size_average, reduce, device):
    s = _get_sample(case, 0, device)
    ours, ref = _fns(case)
    # An explicit reduction is overridden by the legacy pair, in both.
    kwargs = dict(s.kwargs, size_average=size_average, reduce=reduce, reduction="sum")
    a, wa = _record(ours, *s.args, **kwargs)
    b, wb = _record(ref, *s.args, **kwargs)
    assert torch.allclose(a, b, equal_nan=True)
    assert wa == wb
    mod_kwargs = dict(s.kwargs) if s.module else {}
    m_ours, wa = _record(getattr(torchloss, case.module), size_average=size_average, reduce=reduce, **mod_kwargs)
    m_ref, wb = _record(_torch_module(case), size_average=size_average, reduce=reduce, **mod_kwargs)
    assert wa == wb
    assert m_ours.reduction == m_ref.reduction


@pytest.mark.parametrize("case,i,_", SAMPLES, ids=_ids(SAMPLES))
def test_warnings_match_torch(case, i, _, device):
    s = _get_sample(case, i, device)
    ours, ref = _fns(case)
    for reduction in case.reductions:
        _, wa = _record(ours, *s.args, **dict(s.kwargs, reduction=reduction))
        _, wb = _record(ref, *s.args, **dict(s.kwargs, reduction=reduction))
        assert wa == wb


@pytest.mark.parametrize("case,i,_", SAMPLES, ids=_ids(SAMPLES))
def test_module_matches_functional_and_torch(case, i, _, device):
    s = _get_sample(case, i, device)
    if not s.module:
        pytest.skip("functional-only arguments")
    ours_cls, ref_cls = getattr(torchloss, case.module), _torch_module(case)
    for reduction in case.reductions:
        m, r = ours_cls(reduction=reduction, **s.kwargs), ref_cls(reduction=reduction, **s.kwargs)
        assert repr(m) == repr(r)
        assert list(m.state_dict()) == list(r.state_dict())
        assert [n for n, _ in m.named_buffers()] == [n for n, _ in r.named_buffers()]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = m(*s.args)
            expected = getattr(F, case.name)(*s.args, reduction=reduction, **s.kwargs)
            assert torch.equal(out, expected) or torch.allclose(out, expected, equal_nan=True)
            assert torch.allclose(out, r(*s.args), rtol=1e-7, atol=1e-10, equal_nan=True)
    # reduction is mutable after construction, as in torch
    m = ours_cls(**s.kwargs)
    m.reduction = "sum"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert torch.allclose(m(*s.args), getattr(F, case.name)(*s.args, reduction="sum", **s.kwargs))


def _noncontiguous(t):
    if not isinstance(t, torch.Tensor) or t.dim() == 0:
        return t
    out = torch.empty(t.shape + (2,), dtype=t.dtype, device=t.device).select(-1, 0)
    out.copy_(t)
    assert not out.is_contiguous() or t.numel() <= 1
    return out


@pytest.mark.parametrize("case,i,_", SAMPLES, ids=_ids(SAMPLES))
def test_noncontiguous_inputs(case, i, _, device):
    s = _get_sample(case, i, device)
    ours, ref = _fns(case)
    args = tuple(_noncontiguous(a) for a in s.args)
    kwargs = {k: _noncontiguous(v) for k, v in s.kwargs.items()}

    def contiguous(t):
        return t.contiguous() if isinstance(t, torch.Tensor) else t

    def reference(*a, **k):
        # torch is given contiguous copies: its CTC reads non-contiguous concatenated targets out
        # of bounds (a segfault in torch 2.13)
        return ref(*[contiguous(t) for t in a], **{n: contiguous(t) for n, t in k.items()})

    for reduction in case.reductions:
        report = parity(_quiet(ours), _quiet(reference), args, dict(kwargs, reduction=reduction), s.torch_wrt or s.wrt)
        assert report.ok, report.problems


def _is_own(node) -> bool:
    """A torchloss node: a Function class of the package, or a native kernel's C++ node."""
    if isinstance(node, str):
        return node.startswith("torch::autograd::CppNode<torchloss::")
    return str(getattr(node, "__module__", "")).startswith("torchloss.")


@pytest.mark.parametrize("case,i,_", SAMPLES, ids=_ids(SAMPLES))
def test_inputs_not_mutated_and_graph_pure(case, i, _, device):
    s = _get_sample(case, i, device)
    ours = ours_function(case)
    tensors = [a for a in s.args if isinstance(a, torch.Tensor)]
    tensors += [v for v in s.kwargs.values() if isinstance(v, torch.Tensor)]
    before = [t.clone() for t in tensors]
    versions = [t._version for t in tensors]
    leaves = []
    args, kwargs = list(s.args), dict(s.kwargs)
    for slot in s.wrt:
        if isinstance(slot, str):
            kwargs[slot] = kwargs[slot].detach().requires_grad_()
            leaves.append(kwargs[slot])
        else:
            args[slot] = args[slot].detach().requires_grad_()
            leaves.append(args[slot])
    for reduction in case.reductions:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = ours(*args, **dict(kwargs, reduction=reduction))
        nodes = graph_functions(out)
        own = [n for n in nodes if _is_own(n)]
        if s.user_graph or case.compose is not None:
            # a user's function (or the case's composition): its own ops are in the graph by
            # design, below one torchloss node
            assert own == [getattr(out.grad_fn, "_forward_cls", None) or out.grad_fn.name()]
        else:
            foreign = [n for n in nodes if n != "AccumulateGrad" and n not in own]
            assert not foreign, f"graph holds non-torchloss nodes: {foreign}"
            assert sum(1 for n in nodes if n != "AccumulateGrad") == 1
        torch.autograd.grad(out, leaves, torch.ones_like(out), create_graph=True, allow_unused=True)
    for t, b, v in zip(tensors, before, versions):
        assert torch.equal(t, b) or torch.allclose(t, b, equal_nan=True)
        assert t._version == v


LOW = [torch.float16, torch.bfloat16]


@pytest.mark.parametrize("dtype", LOW, ids=str)
@pytest.mark.parametrize("case,i,reduction,_", WITH_REDUCTION, ids=_ids(WITH_REDUCTION))
def test_low_precision_accuracy(case, i, reduction, _, dtype, device):
    """Against a float64 evaluation of the same (rounded) inputs, torchloss's error in float16 and
    bfloat16 is no larger than torch's (up to half a unit in the last place of the result)."""
    s = _get_sample(case, i, device, dtype)
    ours, ref = _fns(case)
    kwargs = dict(s.kwargs, reduction=reduction)
    up = lambda t: t.double() if isinstance(t, torch.Tensor) and t.is_floating_point() else t
    exact = _quiet(ref)(*[up(a) for a in s.args], **{k: up(v) for k, v in kwargs.items()})
    try:
        theirs = _quiet(ref)(*s.args, **kwargs)
    except (RuntimeError, NotImplementedError):
        pytest.skip(f"torch has no {dtype} kernel here")
    mine = _quiet(ours)(*s.args, **kwargs)
    assert mine.dtype == theirs.dtype
    err_mine = (mine.double() - exact).abs()
    err_theirs = (theirs.double() - exact).abs()
    half_ulp = torch.finfo(dtype).eps * exact.abs() / 2
    assert bool((err_mine <= err_theirs + half_ulp + 1e-30).all()), (
        f"max error {float(err_mine.max()):.3g} vs torch {float(err_theirs.max()):.3g}"
    )


@pytest.mark.parametrize("case,i,reduction,_", WITH_REDUCTION, ids=_ids(WITH_REDUCTION))
def test_forward_over_reverse(case, i, reduction, _, device):
    """``jvp(grad(f))`` (forward-over-reverse) equals the Hessian-vector product from double
    backward, including for losses where torch has no forward-over-reverse (Huber, SoftMargin)."""
    s = _get_sample(case, i, device)
    ours = ours_function(case)
    wrt = s.wrt
    kwargs = dict(s.kwargs, reduction=reduction)

    def f(*tensors):
        args, kw = list(s.args), dict(kwargs)
        for slot, t in zip(wrt, tensors):
            if isinstance(slot, str):
                kw[slot] = t
            else:
                args[slot] = t
        return _quiet(ours)(*args, **kw).sum()

    primals = tuple((s.kwargs[w] if isinstance(w, str) else s.args[w]).detach() for w in wrt)
    gen = torch.Generator().manual_seed(1)
    tangents = tuple(torch.randn(p.shape, generator=gen, dtype=p.dtype).to(p.device) for p in primals)
    _, hvp_fwd = torch.func.jvp(torch.func.grad(f, argnums=tuple(range(len(wrt)))), primals, tangents)
    leaves = [p.clone().requires_grad_() for p in primals]
    grads = torch.autograd.grad(f(*leaves), leaves, create_graph=True)
    dot = sum((g * t).sum() for g, t in zip(grads, tangents))
    if dot.requires_grad:
        hvp_rev = torch.autograd.grad(dot, leaves, allow_unused=True)
    else:  # the gradient does not depend on the inputs (NLL is linear): a zero Hessian
        hvp_rev = [None] * len(leaves)
    for a, b in zip(hvp_fwd, hvp_rev):
        b = torch.zeros_like(a) if b is None else b
        assert torch.allclose(a, b, rtol=1e-7, atol=1e-10, equal_nan=True)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_torch_compile_fullgraph(case):
    """The loss traces as one graph under ``torch.compile(fullgraph=True)`` (no host syncs, no
    graph breaks) and gives torch's values and gradients."""
    torch._dynamo.reset()
    s = _get_sample(case, 0, "cpu", torch.float32)
    ours, ref = ours_function(case), torch_or_ours(case)
    compiled = _quiet(torch.compile(ours, fullgraph=True, backend="aot_eager"))
    report = parity(compiled, _quiet(ref), s.args, dict(s.kwargs), s.torch_wrt or s.wrt, rtol=1e-5, atol=1e-6)
    assert report.ok, report.problems
