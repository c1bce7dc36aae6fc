"""PoissonNLL, GaussianNLL and KLDiv behaviour the case table cannot express: deliberate differences
from torch, straight-through var gradients, KL's 'batchmean' and warning quirks, dtype rules,
complex inputs, vmap over var, and the modules' signatures."""

import contextlib
import inspect
import itertools
import math
import warnings

import pytest
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as TF

import torchloss
import torchloss.functional as F
from torchloss.bench import peak_bytes
from torchloss.testing import graph_functions, parity, saved_bytes

# every test on each device of the device fixture (tests/conftest.py: on_device, cpu_only)
pytestmark = pytest.mark.usefixtures("on_device")


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _record(fn, *args, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fn(*args, **kwargs)
    return out, [(w.category, str(w.message)) for w in caught]


def _complex_parity(ours, ref, args, kwargs, wrt):
    """Values and gradients (under a complex upstream gradient) of a complex-valued loss."""
    leaves_a = [a.clone().requires_grad_() if i in wrt else a for i, a in enumerate(args)]
    leaves_b = [a.clone().requires_grad_() if i in wrt else a for i, a in enumerate(args)]
    out_a, out_b = ours(*leaves_a, **kwargs), ref(*leaves_b, **kwargs)
    assert out_a.dtype == out_b.dtype and out_a.shape == out_b.shape
    torch.testing.assert_close(out_a, out_b, rtol=1e-10, atol=1e-12)
    upstream = torch.randn(out_b.shape, generator=_gen(3), dtype=out_b.dtype)
    ga = torch.autograd.grad(out_a, [leaves_a[i] for i in wrt], upstream)
    gb = torch.autograd.grad(out_b, [leaves_b[i] for i in wrt], upstream)
    for a, b in zip(ga, gb):
        assert a.dtype == b.dtype
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def _quiet(fn):
    def call(*args, **kwargs):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fn(*args, **kwargs)

    return call


# --------------------------------------------------------------------------------------------
# Poisson


@pytest.mark.parametrize("log_input", [True, False])
def test_poisson_full_target_gradient_finite_at_nonpositive_targets(log_input, device):
    """torch's target gradient is NaN at y <= 0 with full=True (0·log 0 / log of a negative in its
    masked-out Stirling branch); torchloss gives the non-Stirling part, finite, in every order."""
    x = torch.tensor([0.3, 0.5, 1.2, 0.7, 2.0], dtype=torch.float64, device=device)
    y = torch.tensor([0.0, -0.5, 0.4, 2.5, 1.0], dtype=torch.float64, device=device)
    kwargs = dict(log_input=log_input, full=True, reduction="sum")
    xs, ys = x.clone().requires_grad_(), y.clone().requires_grad_()
    xt, yt = x.clone().requires_grad_(), y.clone().requires_grad_()
    ours = F.poisson_nll_loss(xs, ys, **kwargs)
    ref = TF.poisson_nll_loss(xt, yt, **kwargs)
    torch.testing.assert_close(ours, ref)
    gx, gy = torch.autograd.grad(ours, (xs, ys), create_graph=True)
    rx, ry = torch.autograd.grad(ref, (xt, yt))
    torch.testing.assert_close(gx, rx)
    assert ry[:2].isnan().all()  # torch's bug, at y == 0 and y < 0
    expected_y = -x if log_input else -torch.log(x + 1e-8)
    torch.testing.assert_close(gy[:3], expected_y[:3])  # y <= 1: no Stirling part
    torch.testing.assert_close(gy[2:], ry[2:])
    # second order and forward mode stay finite too
    hy = torch.autograd.grad(gy.sum(), ys)[0]
    assert hy.isfinite().all()
    _, t = torch.func.jvp(lambda b: F.poisson_nll_loss(x, b, **kwargs), (y,), (torch.ones_like(y),))
    assert t.isfinite()


def test_poisson_full_gradcheck_through_masked_targets():
    g = _gen()
    x = torch.rand(6, generator=g, dtype=torch.float64) + 0.2
    y = torch.tensor([0.0, -0.7, 0.3, 0.9, 1.6, 3.2], dtype=torch.float64)

    def f(a, b):
        return F.poisson_nll_loss(a, b, log_input=False, full=True, reduction="sum")

    args = (x.requires_grad_(), y.requires_grad_())
    torch.autograd.gradcheck(f, args)
    torch.autograd.gradgradcheck(f, args)
    torch.autograd.gradcheck(
        f, args, check_forward_ad=True, check_backward_ad=False, check_undefined_grad=False,
        check_batched_grad=False,
    )


def test_poisson_nan_target_propagates_like_torch():
    x = torch.tensor([0.1, 0.2])
    y = torch.tensor([float("nan"), 2.0])
    for full in (False, True):
        ours = F.poisson_nll_loss(x, y, full=full, reduction="none")
        ref = TF.poisson_nll_loss(x, y, full=full, reduction="none")
        torch.testing.assert_close(ours, ref, equal_nan=True)


def test_poisson_reduction_checked_before_shapes():
    with pytest.raises(ValueError, match="reduction"):
        F.poisson_nll_loss(torch.ones(3), torch.ones(4), reduction="bad")


# --------------------------------------------------------------------------------------------
# Gaussian


def test_gaussian_var_below_eps_is_straight_through(device):
    """The clamp at eps is invisible to autograd: the var gradient (and its derivatives) are those
    of the clamped value passed straight to var, exactly as torch's no_grad clamp of a clone."""
    g = _gen()
    x = torch.randn(4, 3, generator=g, dtype=torch.float64).to(device)
    y = torch.randn(4, 3, generator=g, dtype=torch.float64).to(device)
    v = (torch.rand(4, 3, generator=g, dtype=torch.float64) * 0.03 + 0.002).to(device)
    kwargs = {"eps": 0.01, "full": True}
    assert (v < 0.01).any() and (v > 0.01).any()
    for reduction in ("none", "mean", "sum"):
        kw = dict(kwargs, reduction=reduction)
        report = parity(
            F.gaussian_nll_loss, TF.gaussian_nll_loss, (x, y, v), kw, (0, 1, 2), rtol=1e-10, atol=1e-12
        )
        assert report.ok, report.problems

        def hvp(fn):
            leaves = [t.clone().requires_grad_() for t in (x, y, v)]
            out = fn(*leaves, **kw).sum()
            grads = torch.autograd.grad(out, leaves, create_graph=True)
            return torch.autograd.grad(sum(gr.sum() for gr in grads), leaves)

        for a, b in zip(hvp(F.gaussian_nll_loss), hvp(TF.gaussian_nll_loss)):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
        tangents = tuple(torch.randn(t.shape, generator=g, dtype=torch.float64).to(device) for t in (x, y, v))
        _, t_ours = torch.func.jvp(lambda *a: F.gaussian_nll_loss(*a, **kw), (x, y, v), tangents)
        # Forward mode is straight-through too, so it agrees with reverse mode (jacfwd == jacrev).
        # torch's does not: its in-place clamp under no_grad still updates the forward-mode
        # tangent, zeroing it below eps. Against torch, compare the input/target directions, and
        # the var direction through torch's reverse mode.
        no_var = (tangents[0], tangents[1], torch.zeros_like(v))
        _, t_ours_xy = torch.func.jvp(lambda *a: F.gaussian_nll_loss(*a, **kw), (x, y, v), no_var)
        _, t_ref_xy = torch.func.jvp(lambda *a: TF.gaussian_nll_loss(*a, **kw), (x, y, v), no_var)
        torch.testing.assert_close(t_ours_xy, t_ref_xy, rtol=1e-10, atol=1e-12)
        jac = torch.func.jacrev(lambda *a: TF.gaussian_nll_loss(*a, **kw), argnums=(0, 1, 2))(x, y, v)
        out_shape = t_ours.shape
        t_rev = sum(
            (j.reshape(out_shape.numel(), -1) @ t.reshape(-1)).reshape(out_shape)
            for j, t in zip(jac, tangents)
        )
        torch.testing.assert_close(t_ours, t_rev, rtol=1e-10, atol=1e-9)


def test_torch_gaussian_forward_mode_zeroes_var_tangent_below_eps():
    """For the record: torch's jacfwd and jacrev disagree below eps; torchloss's agree."""
    x, y = torch.ones(2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64)
    v = torch.tensor([1e-3, 0.5], dtype=torch.float64)
    for fn in (F.gaussian_nll_loss, TF.gaussian_nll_loss):
        f = lambda v_: fn(x, y, v_, eps=1e-2, reduction="none")  # noqa: E731
        rev, fwd = torch.func.jacrev(f)(v).diagonal(), torch.func.jacfwd(f)(v).diagonal()
        torch.testing.assert_close(rev, torch.tensor([-4950.0, -1.0], dtype=torch.float64))
        if fn is F.gaussian_nll_loss:
            torch.testing.assert_close(fwd, rev)
        else:
            torch.testing.assert_close(fwd, torch.tensor([0.0, -1.0], dtype=torch.float64))


def test_gaussian_reference_example_straight_through_value():
    v = torch.tensor([1e-8], requires_grad=True)
    loss = F.gaussian_nll_loss(torch.ones(1), torch.zeros(1), v, eps=1e-6)
    (grad,) = torch.autograd.grad(loss, v)
    torch.testing.assert_close(grad, torch.tensor([-4.999995e11]))


def test_gaussian_vmap_over_var(device):
    """torch's gaussian_nll_loss cannot be vmapped over var (its negativity check is a host sync);
    torchloss checks the unwrapped batch instead, so vmap and vmap(grad) work and still reject a
    negative var in any batch member."""
    g = _gen()
    x = torch.randn(5, 4, 3, generator=g, dtype=torch.float64).to(device)
    y = torch.randn(5, 4, 3, generator=g, dtype=torch.float64).to(device)
    v = (torch.rand(5, 4, generator=g, dtype=torch.float64) + 0.2).to(device)
    out = torch.func.vmap(F.gaussian_nll_loss)(x, y, v)
    expected = torch.stack([TF.gaussian_nll_loss(*a) for a in zip(x, y, v)])
    torch.testing.assert_close(out, expected)
    grads = torch.func.vmap(torch.func.grad(F.gaussian_nll_loss, argnums=2))(x, y, v)
    for i in range(5):
        vi = v[i].clone().requires_grad_()
        (ref,) = torch.autograd.grad(TF.gaussian_nll_loss(x[i], y[i], vi), vi)
        torch.testing.assert_close(grads[i], ref)
    with pytest.raises(RuntimeError, match="data-dependent"):
        torch.func.vmap(TF.gaussian_nll_loss)(x, y, v)  # torch's limitation, for the record
    bad = v.clone()
    bad[3, 1] = -1.0
    with pytest.raises(ValueError, match="var has negative entry/entries"):
        torch.func.vmap(F.gaussian_nll_loss)(x, y, bad)
    with pytest.raises(ValueError, match="var has negative entry/entries"):
        torch.func.vmap(torch.func.grad(F.gaussian_nll_loss, argnums=2))(x, y, bad)


@pytest.mark.cpu_only
def test_gaussian_negative_var_under_compile_is_checked_on_device():
    torch._dynamo.reset()
    compiled = torch.compile(F.gaussian_nll_loss, fullgraph=True, backend="aot_eager")
    x, y, v = torch.randn(4, 3), torch.randn(4, 3), torch.rand(4, 3) + 0.1
    torch.testing.assert_close(compiled(x, y, v), TF.gaussian_nll_loss(x, y, v))
    with pytest.raises(RuntimeError, match="var has negative"):
        compiled(x, y, -v)


_VAR_SHAPES = [
    (), (1,), (2,), (3,), (4,), (0,),
    (2, 3), (1, 3), (2, 1), (1, 1), (3, 1), (1, 0),
    (2, 3, 1), (2, 1, 4), (2, 3, 4), (1, 3, 4), (2, 1, 1), (1, 2, 3),
]


@pytest.mark.parametrize("in_shape", [(), (3,), (2, 3), (2, 3, 4), (2, 1), (0, 3)], ids=str)
def test_gaussian_var_shape_rules_match_torch(in_shape):
    x = torch.randn(in_shape)
    y = torch.randn(in_shape)
    for v_shape in _VAR_SHAPES:
        v = torch.rand(v_shape) + 0.5

        def run(fn):
            try:
                return fn(x, y, v, reduction="none")
            except Exception as e:  # noqa: BLE001
                return type(e)

        ours, ref = run(F.gaussian_nll_loss), run(TF.gaussian_nll_loss)
        if isinstance(ref, type):
            assert ours is ref, (in_shape, v_shape, ours, ref)
        else:
            assert not isinstance(ours, type), (in_shape, v_shape, ours)
            torch.testing.assert_close(ours, ref)


def test_gaussian_homoscedastic_graph_is_one_node():
    x = torch.randn(4, 3, requires_grad=True)
    v = (torch.rand(4) + 0.1).requires_grad_()
    out = F.gaussian_nll_loss(x, torch.randn(4, 3), v)
    nodes = [n for n in graph_functions(out) if n != "AccumulateGrad"]
    assert len(nodes) == 1
    (g,) = torch.autograd.grad(out, v)
    assert g.shape == v.shape


def test_gaussian_int_var_type_error_and_float_var_dtypes():
    x, y = torch.randn(3), torch.randn(3)
    with pytest.raises(TypeError):
        TF.gaussian_nll_loss(x, y, 1)
    with pytest.raises(TypeError, match="var"):
        F.gaussian_nll_loss(x, y, 1)
    i = torch.tensor([1, 2, 3])
    for args in [(i, i, 0.5), (i, i.double(), 0.5), (x.half(), x.half(), 0.3), (i, i, torch.rand(3))]:
        ours = F.gaussian_nll_loss(*args, reduction="none")
        ref = TF.gaussian_nll_loss(*args, reduction="none")
        assert ours.dtype == ref.dtype
        torch.testing.assert_close(ours, ref, rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("var_kind", ["tensor", "float"])
def test_gaussian_complex_input(var_kind):
    g = _gen()
    x = torch.randn(3, 4, generator=g, dtype=torch.complex128)
    y = torch.randn(3, 4, generator=g, dtype=torch.float64)
    v = torch.rand(3, 4, generator=g, dtype=torch.float64) + 0.3 if var_kind == "tensor" else 0.7
    wrt = (0, 1, 2) if var_kind == "tensor" else (0, 1)
    for reduction in ("none", "mean", "sum"):
        kwargs = {"reduction": reduction}
        if var_kind == "tensor":
            _complex_parity(F.gaussian_nll_loss, TF.gaussian_nll_loss, (x, y, v), kwargs, wrt)
        leaves = [x.clone().requires_grad_(), y.clone().requires_grad_()]
        if var_kind == "tensor":
            leaves.append(v.clone().requires_grad_())

        def f(*a):
            return F.gaussian_nll_loss(a[0], a[1], a[2] if var_kind == "tensor" else v, **kwargs)

        torch.autograd.gradcheck(f, leaves)
        torch.autograd.gradgradcheck(f, leaves)
    if var_kind == "float":
        # torch cannot clamp a complex var (var * ones_like(input)); torchloss applies the float
        with pytest.raises(NotImplementedError):
            TF.gaussian_nll_loss(x, y, v)
        expected = TF.gaussian_nll_loss(x, y, torch.full((3, 4), v, dtype=torch.float64))
        torch.testing.assert_close(F.gaussian_nll_loss(x, y, v), expected)


# --------------------------------------------------------------------------------------------
# Poisson complex (torch computes it; the gradient uses torch's conjugate convention)


@pytest.mark.parametrize("log_input", [True, False])
def test_poisson_complex_input(log_input):
    g = _gen()
    x = torch.randn(3, 4, generator=g, dtype=torch.complex128) + 2
    y = torch.rand(3, 4, generator=g, dtype=torch.float64) * 3 + 1.2
    for full in (False, True):
        for reduction in ("none", "mean", "sum"):
            kwargs = {"log_input": log_input, "full": full, "reduction": reduction}
            _complex_parity(F.poisson_nll_loss, TF.poisson_nll_loss, (x, y), kwargs, (0, 1))
    f = lambda a, b: F.poisson_nll_loss(a, b, log_input=log_input, full=True)  # noqa: E731
    torch.autograd.gradcheck(f, (x.requires_grad_(), y.requires_grad_()))
    with pytest.raises(NotImplementedError):  # a complex target cannot be compared with 1
        F.poisson_nll_loss(x, x, full=True)


# --------------------------------------------------------------------------------------------
# KL divergence


def test_kl_batchmean_empty_and_0d(device):
    """'batchmean' of an empty batch is 0/0 = NaN; a 0-d input is not divided at all."""
    x = torch.randn(0, 4, device=device, dtype=torch.float64)
    y = torch.rand(0, 4, device=device, dtype=torch.float64)
    report = parity(F.kl_div, TF.kl_div, (x, y), {"reduction": "batchmean"}, (0, 1))
    assert report.ok, report.problems
    assert F.kl_div(x, y, reduction="batchmean").isnan()
    x0 = torch.tensor(-0.4, dtype=torch.float64, device=device)
    y3 = torch.rand(3, dtype=torch.float64, device=device) + 0.1
    for target in (torch.tensor(0.6, dtype=torch.float64, device=device), y3):
        kw = {"reduction": "batchmean"}
        report = parity(F.kl_div, TF.kl_div, (x0, target), kw, (0, 1), rtol=1e-12, atol=1e-14)
        assert report.ok, report.problems
        torch.testing.assert_close(F.kl_div(x0, target, **kw), F.kl_div(x0, target, reduction="sum"))


@pytest.mark.parametrize(
    "size_average,reduce", [(True, None), (False, None), (None, False), (True, True), (False, False)]
)
def test_kl_legacy_arguments_with_literal_batchmean(size_average, reduce):
    """With legacy arguments torch takes the reduction from them, yet still divides by the batch
    size when the literal reduction is 'batchmean' (and never warns about 'mean')."""
    g = _gen()
    x = torch.randn(3, 4, generator=g, dtype=torch.float64).log_softmax(-1)
    y = torch.randn(3, 4, generator=g, dtype=torch.float64).softmax(-1)
    kwargs = dict(size_average=size_average, reduce=reduce, reduction="batchmean")
    a, wa = _record(F.kl_div, x, y, **kwargs)
    b, wb = _record(TF.kl_div, x, y, **kwargs)
    torch.testing.assert_close(a, b)
    assert wa == wb
    report = parity(_quiet(F.kl_div), _quiet(TF.kl_div), (x, y), kwargs, (0, 1))
    assert report.ok, report.problems
    # a bogus reduction string is never looked at when legacy arguments are given
    a, wa = _record(F.kl_div, x, y, size_average=size_average, reduce=reduce, reduction="bogus")
    b, wb = _record(TF.kl_div, x, y, size_average=size_average, reduce=reduce, reduction="bogus")
    torch.testing.assert_close(a, b)
    assert wa == wb


def test_kl_mean_warning_every_call_and_elementwise_mean():
    x, y = torch.randn(2, 3).log_softmax(-1), torch.rand(2, 3)
    for fn in (F.kl_div, TF.kl_div):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fn(x, y)
            fn(x, y, reduction="mean")
            fn(x, y, reduction="sum")
        assert len(caught) == 2
        assert all("'batchmean' divides only by the batch size" in str(w.message) for w in caught)
    a, wa = _record(F.kl_div, x, y, reduction="elementwise_mean")
    b, wb = _record(TF.kl_div, x, y, reduction="elementwise_mean")
    torch.testing.assert_close(a, b)
    assert wa == wb and len(wa) == 1
    # the module warns at forward, like torch's
    _, wa = _record(torchloss.KLDivLoss(), x, y)
    _, wb = _record(torch.nn.KLDivLoss(), x, y)
    assert wa == wb and len(wa) == 1


def test_kl_zero_target_values_and_nan_gradient_like_torch():
    x = torch.tensor([-1.0, float("-inf"), -0.5], dtype=torch.float64)
    y = torch.tensor([0.0, 0.0, 0.5], dtype=torch.float64)
    ours = F.kl_div(x, y, reduction="none")
    ref = TF.kl_div(x, y, reduction="none")
    torch.testing.assert_close(ours, ref, equal_nan=True)
    assert ours[0] == 0 and ours[1].isnan()
    xs, ys = x[[0, 2]].clone().requires_grad_(), y[[0, 2]].clone().requires_grad_()
    xt, yt = x[[0, 2]].clone().requires_grad_(), y[[0, 2]].clone().requires_grad_()
    ga = torch.autograd.grad(F.kl_div(xs, ys, reduction="sum"), (xs, ys))
    gb = torch.autograd.grad(TF.kl_div(xt, yt, reduction="sum"), (xt, yt))
    for a, b in zip(ga, gb):
        torch.testing.assert_close(a, b, equal_nan=True)
    assert ga[1][0].isnan() and ga[1][1].isfinite()


def test_kl_mixed_dtypes_promote_like_torch():
    floats = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
    for xd, yd, ys in itertools.product(floats, floats, [(), (3,)]):
        x = torch.randn(3).to(xd)
        y = (torch.rand(ys) + 0.1).to(yd)
        for log_target in (False, True):
            ours = F.kl_div(x, y, reduction="none", log_target=log_target)
            ref = TF.kl_div(x, y, reduction="none", log_target=log_target)
            assert ours.dtype == ref.dtype and ours.shape == ref.shape


# --------------------------------------------------------------------------------------------
# Result dtypes of mixed/integral inputs (torch's promotion through its chain of ops)


_DTYPES = [torch.float16, torch.float32, torch.float64, torch.int64, torch.bool]


def _make(dtype, shape):
    t = torch.rand(shape, generator=_gen(len(shape))) * 2 + 0.5
    return t > 0 if dtype == torch.bool else t.to(dtype)


@pytest.mark.parametrize("name,kwargs", [
    ("poisson_nll_loss", {}),
    ("poisson_nll_loss", {"log_input": False, "full": True}),
    ("gaussian_nll_loss", {"var": 0.5}),
    ("kl_div", {"reduction": "sum"}),
])
def test_result_dtypes_and_errors_match_torch(name, kwargs):
    for d1, d2, s1, s2 in itertools.product(_DTYPES, _DTYPES, [(), (3,)], [(), (3,)]):
        x, y = _make(d1, s1), _make(d2, s2)

        def run(fn):
            try:
                return _quiet(fn)(x, y, **kwargs)
            except Exception as e:  # noqa: BLE001
                return type(e)

        ours, ref = run(getattr(F, name)), run(getattr(TF, name))
        if isinstance(ref, type) or isinstance(ours, type):
            assert ours is ref, (d1, d2, s1, s2, ours, ref)
        else:
            assert ours.dtype == ref.dtype, (d1, d2, s1, s2)
            torch.testing.assert_close(ours.double(), ref.double(), rtol=2e-2, atol=1e-2)


def test_gaussian_tensor_var_dtypes_match_torch():
    for d1, d2, d3 in itertools.product(_DTYPES, _DTYPES, _DTYPES):
        for s1, s3 in [((3,), ()), ((), ()), ((3,), (3,)), ((), (1,))]:
            x, y, v = _make(d1, s1), _make(d2, s1), _make(d3, s3)

            def run(fn):
                try:
                    return fn(x, y, v, reduction="none")
                except Exception as e:  # noqa: BLE001
                    return type(e)

            ours, ref = run(F.gaussian_nll_loss), run(TF.gaussian_nll_loss)
            if isinstance(ref, type) or isinstance(ours, type):
                assert ours is ref, (d1, d2, d3, s1, s3, ours, ref)
            else:
                assert ours.dtype == ref.dtype, (d1, d2, d3, s1, s3)


# --------------------------------------------------------------------------------------------
# Modules


def _params(fn):
    """Names, kinds and defaults of a signature (annotations differ only in being strings)."""
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


@pytest.mark.parametrize("name", ["PoissonNLLLoss", "GaussianNLLLoss", "KLDivLoss"])
def test_module_signatures_and_constants(name):
    ours, ref = getattr(torchloss, name), getattr(torch.nn, name)
    assert _params(ours.__init__) == _params(ref.__init__)
    assert _params(ours.forward) == _params(ref.forward)
    assert ours.__constants__ == ref.__constants__
    m, r = ours(), ref()
    assert repr(m) == repr(r)
    assert {k: v for k, v in vars(m).items() if not k.startswith("_")} == {
        k: v for k, v in vars(r).items() if not k.startswith("_")
    }


def test_functional_signatures():
    for name in ["poisson_nll_loss", "gaussian_nll_loss", "kl_div"]:
        assert _params(getattr(F, name)) == _params(getattr(TF, name))


def test_gaussian_module_is_keyword_only():
    with pytest.raises(TypeError):
        torchloss.GaussianNLLLoss(True)
    with pytest.raises(TypeError):
        torchloss.GaussianNLLLoss(size_average=True)
    m = torchloss.GaussianNLLLoss(full=True, eps=1e-3, reduction="sum")
    x, y, v = torch.randn(4, 3), torch.randn(4, 3), torch.rand(4, 1)
    r = torch.nn.GaussianNLLLoss(full=True, eps=1e-3, reduction="sum")
    torch.testing.assert_close(m(x, y, v), r(x, y, v))
    torch.testing.assert_close(m(x, y, 0.4), r(x, y, 0.4))


def test_poisson_module_forward_keyword_log_input():
    m = torchloss.PoissonNLLLoss(log_input=False, full=True)
    r = torch.nn.PoissonNLLLoss(log_input=False, full=True)
    x, y = torch.rand(3, 4) + 0.1, torch.rand(3, 4) * 3
    torch.testing.assert_close(m(log_input=x, target=y), r(log_input=x, target=y))


def test_modules_validate_reduction_only_at_forward():
    for cls, args in [
        (torchloss.PoissonNLLLoss, (torch.randn(3), torch.rand(3))),
        (torchloss.GaussianNLLLoss, (torch.randn(3), torch.rand(3), torch.rand(3))),
        (torchloss.KLDivLoss, (torch.randn(3), torch.rand(3))),
    ]:
        m = cls(reduction="bogus")
        with pytest.raises(ValueError, match="reduction|not valid"):
            m(*args)


# --------------------------------------------------------------------------------------------
# The eager in-place paths against the differentiable one; memory against torch


def _generic(fn, *args, **kwargs):
    """``fn`` on the differentiable path: an open forward-AD level turns the eager paths off."""
    with fwAD.dual_level():
        return fn(*args, **kwargs)


def _grads(fn, args, wrt, kwargs, create_graph=False, generic=False):
    leaves = [a.detach().clone().requires_grad_() if i in wrt else a for i, a in enumerate(args)]
    with fwAD.dual_level() if generic else contextlib.nullcontext():
        out = fn(*leaves, **kwargs)
        upstream = (torch.rand(out.shape, generator=_gen(1), dtype=torch.float64) + 0.5).to(out.dtype)
        grads = torch.autograd.grad(out, [leaves[i] for i in wrt], upstream, create_graph=create_graph)
    return [g.detach() for g in grads]


def _eager_cases():
    g = _gen(5)
    inf, nan = float("inf"), float("nan")
    x = torch.randn(4, 6, generator=g, dtype=torch.float64)
    counts = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 7.0], dtype=torch.float64).repeat(4, 1)
    rates = torch.rand(4, 6, generator=g, dtype=torch.float64) * 3 + 0.1
    var = torch.rand(4, 6, generator=g, dtype=torch.float64) + 0.1
    var[0, :3] = torch.tensor([0.0, 1e-8, 1e-6])  # below, just below and at eps
    probs = torch.randn(4, 6, generator=g, dtype=torch.float64).softmax(-1)
    probs[1, 2] = probs[3, 0] = 0.0
    logp = torch.randn(4, 6, generator=g, dtype=torch.float64).log_softmax(-1)
    special = torch.tensor([inf, -inf, nan, 0.0, 1.0, -2.0], dtype=torch.float64)
    cases = []
    for log_input, full in itertools.product((True, False), (False, True)):
        cases.append(("poisson_nll_loss", (x if log_input else rates, counts), (0, 1), {"log_input": log_input, "full": full}))
        cases.append(("poisson_nll_loss", (x if log_input else rates, counts), (0,), {"log_input": log_input, "full": full}))
    cases.append(("poisson_nll_loss", (special, counts[0]), (0,), {}))
    for full in (False, True):
        cases.append(("gaussian_nll_loss", (x, x.flip(0), var), (0, 2), {"full": full}))
        cases.append(("gaussian_nll_loss", (x, x.flip(0), var), (0, 1, 2), {"full": full}))
    cases.append(("gaussian_nll_loss", (x, x.flip(0), var), (1,), {}))
    cases.append(("gaussian_nll_loss", (x, x.flip(0), var[:, 0]), (0, 1, 2), {}))  # homoscedastic
    cases.append(("gaussian_nll_loss", (x, x.flip(0), var[:1]), (0, 2), {}))  # one dimension of size 1
    cases.append(("gaussian_nll_loss", (x, x.flip(0), 0.3), (0, 1), {}))  # a Python-float var
    cases.append(("gaussian_nll_loss", (special, special.flip(0), var[1]), (0, 2), {}))
    for log_target in (False, True):
        target = probs.log() if log_target else probs
        cases.append(("kl_div", (logp, target), (0,), {"log_target": log_target}))
        cases.append(("kl_div", (logp, target), (0, 1), {"log_target": log_target}))
        cases.append(("kl_div", (logp[:1], target), (0,), {"log_target": log_target}))  # input broadcast
    cases.append(("kl_div", (logp, probs), (1,), {}))
    cases.append(("kl_div", (special, torch.tensor([0.0, 0.5, 0.0, 0.0, -1.0, nan], dtype=torch.float64)), (0,), {}))
    return cases


def _reductions(name):
    return ("none", "mean", "sum", "batchmean") if name == "kl_div" else ("none", "mean", "sum")


@pytest.mark.cpu_only
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
@pytest.mark.parametrize("i", range(len(_eager_cases())))
def test_eager_path_agrees_with_differentiable_path(i, dtype):
    name, args, wrt, kwargs = _eager_cases()[i]
    args = tuple(a.to(dtype) if isinstance(a, torch.Tensor) else a for a in args)
    fn = _quiet(getattr(F, name))
    tol = {"rtol": 2e-3, "atol": 1e-3} if dtype == torch.float16 else {}
    for reduction in _reductions(name):
        kw = dict(kwargs, reduction=reduction)
        fast, slow = fn(*args, **kw), _generic(fn, *args, **kw)
        assert fast.dtype == slow.dtype and fast.shape == slow.shape
        torch.testing.assert_close(fast, slow, equal_nan=True, **tol)
        if dtype != torch.float16:  # (torch rounds float16 after every op of its chain)
            ref = _quiet(getattr(TF, name))(*args, **kw)
            torch.testing.assert_close(fast, ref, equal_nan=True)
        # grad mode off in backward: the eager path; create_graph=True, or an open forward-AD
        # level: the differentiable one
        g_fast = _grads(fn, args, wrt, kw)
        g_slow = _grads(fn, args, wrt, kw, create_graph=True)
        g_generic = _grads(fn, args, wrt, kw, generic=True)
        for a, b, c in zip(g_fast, g_slow, g_generic):
            assert a.dtype == b.dtype == c.dtype and a.shape == b.shape == c.shape
            torch.testing.assert_close(a, b, equal_nan=True, **tol)
            torch.testing.assert_close(b, c, rtol=0, atol=0, equal_nan=True)


@pytest.mark.cpu_only
def test_kl_vectorised_y_log_y_on_large_inputs():
    """From ``_VECTOR_XLOGY_MIN`` elements on, the eager KL forward computes ``y log y`` as
    ``log(y).clamp_(finite).mul_(y)``: 0 at y = 0, NaN for negative and NaN targets, as xlogy."""
    from torchloss._autograd.probabilistic import _VECTOR_XLOGY_MIN

    g = _gen(7)
    for dtype in (torch.float32, torch.float64):
        y = torch.rand(2 * _VECTOR_XLOGY_MIN, generator=g, dtype=dtype)
        y[::7] = 0.0
        y[1] = -0.5
        y[2] = float("nan")
        y[3] = float("inf")
        y[4] = torch.finfo(dtype).tiny / 8  # subnormal
        x = torch.randn(y.shape, generator=g, dtype=dtype)
        x[7] = float("-inf")  # 0·(-inf): NaN, as torch
        ours = F.kl_div(x, y, reduction="none")
        ref = TF.kl_div(x, y, reduction="none")
        torch.testing.assert_close(ours, ref, equal_nan=True)
        assert (ours[::7][2:] == 0).all() and ours[1:3].isnan().all() and ours[7].isnan()
        torch.testing.assert_close(F.kl_div(x[8:], y[8:], reduction="sum"), TF.kl_div(x[8:], y[8:], reduction="sum"))


def _memory_cases(n=64 * 1024):
    """The benchmark's inputs and differentiated arguments (torchloss.bench), at n elements."""
    g = _gen(9)
    x = torch.randn(n, generator=g)
    return [
        ("poisson_nll_loss", (x, torch.rand(n, generator=g) * 4), (0,), {}),
        ("gaussian_nll_loss", (x, torch.randn(n, generator=g), torch.rand(n, generator=g) * 1.8 + 0.2), (0, 2), {}),
        ("kl_div", (x.view(64, -1).log_softmax(-1), torch.randn(64, n // 64, generator=g).softmax(-1)), (0,), {"reduction": "batchmean"}),
    ]


@pytest.mark.cpu_only
@pytest.mark.parametrize("i", range(3))
def test_memory_no_more_than_torch(i):
    name, args, wrt, kwargs = _memory_cases()[i]
    ours = saved_bytes(getattr(F, name), args, kwargs, wrt)
    theirs = saved_bytes(getattr(TF, name), args, kwargs, wrt)
    assert ours.total <= theirs.total and ours.extra <= theirs.extra == theirs.extra
    assert ours.extra == 0  # nothing allocated for the graph: only inputs are kept
    if name == "kl_div":  # the input's gradient needs only the target, as in torch
        assert ours.total == theirs.total == args[1].nbytes

    def step(fn):
        leaves = [a.detach().requires_grad_() if j in wrt else a for j, a in enumerate(args)]
        return lambda: torch.autograd.grad(fn(*leaves, **kwargs), [leaves[j] for j in wrt])

    # peak memory of a forward and backward step: the eager paths keep at most two full-size
    # buffers alive (Gaussian: the two gradients), torch several
    peak_ours, peak_torch = peak_bytes(step(getattr(F, name)), torch.device("cpu")), peak_bytes(step(getattr(TF, name)), torch.device("cpu"))
    assert peak_ours <= peak_torch
    assert peak_ours <= len(wrt) * args[0].nbytes + 4096


def test_kl_saves_both_when_the_target_needs_a_gradient():
    x, y = torch.randn(3, 4).log_softmax(-1), torch.rand(3, 4)
    assert saved_bytes(F.kl_div, (x, y), {"reduction": "sum"}, (1,)).total == x.nbytes + y.nbytes
    assert saved_bytes(F.kl_div, (x, y), {"reduction": "sum"}, (0, 1)).total == x.nbytes + y.nbytes


@pytest.mark.cpu_only
def test_poisson_integer_input_is_computed_in_the_result_dtype():
    # torch takes log(x + eps) of an integer x in float32 even beside a float64 target
    # (docs/differences.md; the fuzzer's poisson_integer_operand_in_float32): torchloss is exact
    x = torch.tensor([1])
    y = torch.tensor([4.67], dtype=torch.float64, requires_grad=True)
    loss = F.poisson_nll_loss(x, y, log_input=False)
    (gy,) = torch.autograd.grad(loss, y)
    exact_log = torch.log1p(torch.tensor(1e-8, dtype=torch.float64))
    assert loss.dtype == torch.float64
    torch.testing.assert_close(loss, 1 - 4.67 * exact_log, rtol=1e-15, atol=0)
    torch.testing.assert_close(gy, -exact_log.reshape(1), rtol=1e-7, atol=0)  # (1 + 1e-8 rounds)
    assert TF.poisson_nll_loss(x, y, log_input=False).item() == 1.0  # torch's float32 log: 0
    # full=True with an integer target: the Stirling term in the result's dtype
    xf = torch.tensor(4.669239022757736, dtype=torch.float64)
    yi = torch.tensor(9)
    exact = xf - 9 * torch.log(xf + 1e-8) + 9 * math.log(9) - 9 + 0.5 * math.log(2 * math.pi * 9)
    torch.testing.assert_close(F.poisson_nll_loss(xf, yi, log_input=False, full=True), exact, rtol=1e-14, atol=0)
