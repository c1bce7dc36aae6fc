"""Autocast as torch does it (torchloss/_autocast.py, docs/autocast.md).

* The policy table covers every public functional, and says what the installed torch does:
  every loss under ``torch.autocast('cpu', bfloat16/float16)`` (real tensors), and under CUDA
  autocast on *fake* CUDA tensors (``FakeTensorMode``, CUDA autocast switched on directly), which
  runs torch's real ``AutocastCUDA`` kernels for dtypes (no values) on a machine without a GPU.
* Every sample of the case table under autocast on each device (CPU always, CUDA when present),
  for bfloat16 and float16, with float32 and lower-precision inputs: torchloss's output dtype,
  value and gradient dtypes and values equal torch's.
* Autocast does not change what a torchloss Function computes inside: float32 inputs give the
  same bits inside and outside an autocast region, and a backward run inside the region gives
  the gradient of a backward run outside.
* CUDA's ban on ``binary_cross_entropy``: same exception type and message.
"""

from __future__ import annotations

import contextlib
import warnings

import pytest
import torch
from torch._subclasses import FakeTensorMode

import torchloss
import torchloss.functional as F
from torchloss import _autocast as A
from torchloss.testing import parity
from torchloss.testing.cases import CASES, Maker
from torchloss.testing.runner import functions, or_skip
from torchloss.testing.runner import quiet as _quiet

LOW = [torch.bfloat16, torch.float16]


def _ids(items):
    return [i[-1] for i in items]


def _functions(case):
    return or_skip(functions, case)


def _autocast(fn, device_type, dtype):
    def call(*args, **kwargs):
        with torch.autocast(device_type, dtype=dtype):
            return fn(*args, **kwargs)

    return call


@contextlib.contextmanager
def _fake_cuda_autocast(dtype):
    """CUDA autocast on, without ``torch.autocast``'s CUDA-availability check (fake CUDA)."""
    prev = torch.is_autocast_enabled("cuda"), torch.get_autocast_dtype("cuda")
    torch.set_autocast_enabled("cuda", True)
    torch.set_autocast_dtype("cuda", dtype)
    try:
        yield
    finally:
        torch.set_autocast_enabled("cuda", prev[0])
        torch.set_autocast_dtype("cuda", prev[1])


def _expected_dtype(kind: str, input_dtype: torch.dtype) -> torch.dtype:
    """The loss dtype the policy predicts for inputs of ``input_dtype`` (not float64)."""
    return torch.float32 if kind == A.FP32 else input_dtype


SAMPLES = [(case, i, f"{case.name}-{i}-{s.name}") for case in CASES for i, s in enumerate(case.samples(Maker()))]
WITH_REDUCTION = [(c, i, r, f"{n}-{r}") for c, i, n in SAMPLES for r in c.reductions]
FIRST = [(c, 0, c.name) for c in CASES]

# The parity matrix: every sample x reduction x autocast dtype x (float32, lower-precision)
# inputs. The default suite runs one reduction and one (dtype, inputs) pair a sample, in turn,
# so that each loss meets every combination; the rest is marked slow.
_PAIRS = [(torch.bfloat16, "float32"), (torch.bfloat16, "low"), (torch.float16, "float32"), (torch.float16, "low")]


def _matrix():
    out = []
    for k, (c, i, r, n) in enumerate(WITH_REDUCTION):
        default_r = c.reductions[i % len(c.reductions)]
        for j, (ac, inputs) in enumerate(_PAIRS):
            fast = r == default_r and j == (i + k) % len(_PAIRS) or r == default_r and i == 0
            marks = () if fast else (pytest.mark.slow,)
            out.append(pytest.param(c, i, r, ac, inputs, marks=marks, id=f"{n}-{str(ac)[6:]}-{inputs}"))
    return out


MATRIX = _matrix()


# ---------------------------------------------------------------------------------------------
# The table


def test_every_functional_has_a_policy():
    missing = [n for n in F.__all__ if n not in A.POLICIES]
    assert not missing, f"no autocast policy for {missing}: add them to torchloss/_autocast.py"
    missing = [c.name for c in CASES if c.name not in A.POLICIES]
    assert not missing
    for name in F.__all__:
        assert getattr(F, name).__wrapped__ is not None  # wrapped by the policy


def _float_sample(case, dtype, device="cpu"):
    return case.samples(Maker(device, dtype))[0]


@pytest.mark.parametrize("ac", LOW, ids=str)
@pytest.mark.parametrize("case,i,_", FIRST, ids=_ids(FIRST))
def test_cpu_policy_is_torchs(case, i, _, ac):
    """The CPU column says what torch 2.13 does under ``torch.autocast('cpu')``."""
    kind = A.policy(case.name, "cpu")
    if kind in (A.LINEAR, A.DISTANCE):
        pytest.skip("checked through the parity tests")
    _ours, ref = _functions(case)
    for input_dtype in (torch.float32, ac):
        s = _float_sample(case, input_dtype)
        out = _quiet(_autocast(ref, "cpu", ac))(*s.args, **s.kwargs)
        assert out.dtype == _expected_dtype(kind, input_dtype), (kind, input_dtype, out.dtype)


def _to_fake_cuda(a):
    if isinstance(a, torch.Tensor):
        return torch.empty_strided(a.shape, a.stride(), dtype=a.dtype, device="cuda")
    return a


def _fake_cuda_call(fn, s, ac, reduction="mean"):
    """``fn`` on fake CUDA copies of the sample, under CUDA autocast: the output, or the exception."""
    with FakeTensorMode(allow_non_fake_inputs=True):
        args = [_to_fake_cuda(a) for a in s.args]
        kwargs = {k: _to_fake_cuda(v) for k, v in s.kwargs.items()}
        with _fake_cuda_autocast(ac), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                out = fn(*args, **kwargs, reduction=reduction)
                return out.dtype, None
            except Exception as e:  # noqa: BLE001 - the exception is the result
                return None, e


@pytest.mark.parametrize("ac", LOW, ids=str)
@pytest.mark.parametrize("case,i,_", FIRST, ids=_ids(FIRST))
def test_cuda_policy_is_torchs(case, i, _, ac):
    """The CUDA column says what torch's ``AutocastCUDA`` kernels do (run on fake CUDA tensors),
    and torchloss under the same fake CUDA autocast gives the same dtype (or torch's error)."""
    kind = A.policy(case.name, "cuda")
    if kind == A.LINEAR:
        pytest.skip("checked through the parity tests")
    ours, ref = _functions(case)
    for input_dtype in (torch.float32, ac):
        s = _float_sample(case, input_dtype)
        theirs, their_error = _fake_cuda_call(ref, s, ac)
        mine, my_error = _fake_cuda_call(ours, s, ac)
        if kind == A.BANNED:
            assert isinstance(their_error, RuntimeError) and "unsafe to autocast" in str(their_error)
            assert type(my_error) is type(their_error) and str(my_error) == str(their_error)
            continue
        if my_error is not None and their_error is not None:
            pytest.skip("neither runs on fake CUDA tensors in this build (CTC: host-side lengths)")
        assert my_error is None, f"{type(my_error).__name__}: {my_error}"
        expected = _expected_dtype(A.FP32 if kind == A.DISTANCE else kind, input_dtype)
        assert mine == expected
        if their_error is None:  # torch runs on fake CUDA tensors (not CTC, Gaussian NLL's host check)
            assert theirs == expected


def test_ops_with_a_cuda_policy_are_those_of_the_table():
    """The installed build registers the policies the table cites (``AutocastCPU``/``AutocastCUDA``
    kernels; the lists are registered in CPU-only builds too)."""
    has = torch._C._dispatch_has_kernel_for_dispatch_key
    for name, (cpu, cuda) in A.POLICIES.items():
        if "[" in name:  # a Python variant (weight=): its inner ops are checked below
            continue
        op = {"nll_loss": "nll_loss", "cross_entropy": "cross_entropy_loss", "ctc_loss": "ctc_loss.IntList"}.get(name, name)
        if cpu == A.FP32:
            assert has(f"aten::{op}", "AutocastCPU"), name
        if cuda in (A.FP32, A.BANNED) and name not in ("cross_entropy", "gaussian_nll_loss", "multilabel_soft_margin_loss"):
            assert has(f"aten::{op}", "AutocastCUDA"), name
    # the composites' inner ops
    for op in ("log", "pow.Tensor_Scalar", "log_softmax.int", "sum", "sum.dim_IntList", "norm.ScalarOpt_dim"):
        assert has(f"aten::{op}", "AutocastCUDA") and not has(f"aten::{op}", "AutocastCPU"), op
    assert not has("aten::cross_entropy_loss", "AutocastCUDA")
    assert not has("aten::ctc_loss.IntList", "AutocastCUDA")


# ---------------------------------------------------------------------------------------------
# Parity with torch under autocast, every sample


def _tolerance(case, kind, input_dtype, ac):
    if kind == A.FP32 and input_dtype == torch.float32:
        return case.tolerance(torch.float32)
    rtol, atol = case.tolerance(ac if input_dtype == torch.float32 else input_dtype)
    if kind != A.FP32:
        # torch rounds its intermediate values to the low dtype, torchloss computes in float32
        # (opmath) and rounds once: both within the dtype's rounding of the exact value
        rtol, atol = 2 * rtol, 2 * atol
    return rtol, atol


@pytest.mark.parametrize("case,i,reduction,ac,input_dtype", MATRIX)
def test_autocast_matches_torch(case, i, reduction, ac, input_dtype, device):
    """Output dtype and value, gradient dtypes and values, as torch under the same autocast."""
    if device == "cpu" and ac == torch.float16 and not hasattr(torch.backends.cpu, "get_cpu_capability"):
        pytest.skip("no CPU float16 autocast")
    dtype = torch.float32 if input_dtype == "float32" else ac
    s = case.samples(Maker(device, dtype))[i]
    ours, ref = _functions(case)
    kwargs = dict(s.kwargs, reduction=reduction)
    kind = A.call_policy(case.name, device, s.args, kwargs)
    try:
        _quiet(_autocast(ref, device, ac))(*s.args, **kwargs)
    except Exception as e:  # noqa: BLE001
        if kind == A.BANNED:
            with pytest.raises(type(e), match="unsafe to autocast"):
                _quiet(_autocast(ours, device, ac))(*s.args, **kwargs)
            return
        # torch fails where torchloss does the right thing (documented in docs/differences.md):
        # the adaptive softmax under CPU autocast, CTC's CUDA kernels in half precision
        out = _quiet(_autocast(ours, device, ac))(*s.args, **kwargs)
        if kind != A.LINEAR:
            assert out.dtype == _expected_dtype(kind, dtype)
        pytest.skip(f"torch fails here ({type(e).__name__}); torchloss's dtype checked")
    rtol, atol = _tolerance(case, kind, dtype, ac)
    report = parity(
        _quiet(_autocast(ours, device, ac)), _quiet(_autocast(ref, device, ac)), s.args, kwargs,
        s.torch_wrt or s.wrt, rtol=rtol, atol=atol,
    )
    assert report.ok, report.problems
    # gradient dtypes: each input's own (the casts are differentiable)
    args, kw = list(s.args), dict(kwargs)
    leaves = []
    for slot in s.torch_wrt or s.wrt:
        t = (kw[slot] if isinstance(slot, str) else args[slot]).detach().requires_grad_()
        if isinstance(slot, str):
            kw[slot] = t
        else:
            args[slot] = t
        leaves.append(t)
    out = _quiet(_autocast(ours, device, ac))(*args, **kw)
    grads = torch.autograd.grad(out.sum(), leaves, allow_unused=True)
    for leaf, g in zip(leaves, grads):
        assert g is None or g.dtype == leaf.dtype


@pytest.mark.parametrize("ac", LOW, ids=str)
@pytest.mark.parametrize("case,i,_", FIRST, ids=_ids(FIRST))
def test_modules_under_autocast(case, i, _, ac, device):
    """Modules call the functionals: the same dtype and value as torch's module."""
    s = case.samples(Maker(device, torch.float32))[0]
    if not s.module or case.compose is not None:
        pytest.skip("functional-only arguments")
    ref_cls = or_skip(case.torch_module)
    ours_cls = getattr(torchloss, case.module)
    args = s.args[: case.forward_arity]
    with torch.autocast(device, dtype=ac), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            expected = ref_cls(**s.kwargs)(*args)
        except Exception as e:  # noqa: BLE001
            pytest.skip(f"torch fails here ({type(e).__name__})")
        out = ours_cls(**s.kwargs)(*args)
    assert out.dtype == expected.dtype
    rtol, atol = case.tolerance(ac)
    assert torch.allclose(out.double(), expected.double(), rtol=rtol, atol=atol, equal_nan=True)


# ---------------------------------------------------------------------------------------------
# Autocast does not reach inside a Function


@pytest.mark.parametrize(
    "case,i,ac",
    [pytest.param(c, i, ac, id=f"{n}-{str(ac)[6:]}", marks=() if (i + k) % 2 == 0 else (pytest.mark.slow,))
     for c, i, n in SAMPLES for k, ac in enumerate(LOW)],
)
def test_float32_inputs_compute_the_same_inside_autocast(case, i, ac, device):
    """float32 inputs: the loss and its gradients are the same bits inside an autocast region as
    outside (fp32 casts nothing, and nothing inside the Function is autocast), and a backward run
    inside the region equals one run outside."""
    kind = A.policy(case.name, device)
    s = case.samples(Maker(device, torch.float32))[i]
    ours, _ref = _functions(case)
    if kind == A.LINEAR or (kind == A.DISTANCE and s.kwargs.get("distance_function") is not None):
        pytest.skip("matmul operands are cast / user code runs under autocast, as in torch")
    if case.compose is not None:
        ours = getattr(F, case.name)  # the composition (log_softmax) is user code
    wrt = s.wrt

    def run(inside: bool):
        args, kw = list(s.args), dict(s.kwargs)
        leaves = []
        for slot in wrt:
            t = (kw[slot] if isinstance(slot, str) else args[slot]).detach().requires_grad_()
            if isinstance(slot, str):
                kw[slot] = t
            else:
                args[slot] = t
            leaves.append(t)
        ctx = torch.autocast(device, dtype=ac) if inside else contextlib.nullcontext()
        with ctx, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = ours(*args, **kw)
            grads = torch.autograd.grad(out.sum(), leaves, allow_unused=True)
        return out, grads

    out0, g0 = run(False)
    out1, g1 = run(True)
    assert out1.dtype == out0.dtype and torch.equal(out0, out1) or torch.allclose(out0, out1, rtol=0, atol=0, equal_nan=True)
    for a, b in zip(g0, g1):
        assert (a is None) == (b is None)
        if a is not None:
            assert a.dtype == b.dtype and (torch.equal(a, b) or torch.allclose(a, b, rtol=0, atol=0, equal_nan=True))


def test_cross_entropy_regression_from_the_issue():
    """Issue 16: bfloat16 CPU autocast gave a bfloat16 cross entropy of a different value."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(8, 10, generator=gen)
    t = torch.randint(0, 10, (8,), generator=gen)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        a = torch.nn.functional.cross_entropy(x, t)
        b = F.cross_entropy(x, t)
        c = F.cross_entropy(x.bfloat16(), t)
        d = torch.nn.functional.cross_entropy(x.bfloat16(), t)
    assert a.dtype == b.dtype == c.dtype == d.dtype == torch.float32
    assert torch.allclose(a, b, rtol=1e-6, atol=0) and torch.allclose(c, d, rtol=1e-6, atol=0)


def test_torch_compile_under_autocast():
    """The policy traces: ``torch.compile(fullgraph=True)`` inside an autocast region gives the
    eager result (float32 for a bfloat16 cross entropy)."""
    torch._dynamo.reset()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(8, 10, generator=gen).bfloat16()
    t = torch.randint(0, 10, (8,), generator=gen)
    compiled = torch.compile(F.cross_entropy, fullgraph=True, backend="aot_eager")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        eager = F.cross_entropy(x, t)
        out = compiled(x, t)
    assert out.dtype == eager.dtype == torch.float32
    assert torch.allclose(out, eager, rtol=1e-6, atol=0)


def test_binary_cross_entropy_banned_under_cuda_autocast():
    """torch's ``binary_cross_entropy_banned``: the same RuntimeError and message."""
    p = torch.tensor([0.25, 0.5])
    with FakeTensorMode(allow_non_fake_inputs=True):
        x = torch.empty(2, device="cuda")
        with _fake_cuda_autocast(torch.float16):
            with pytest.raises(RuntimeError) as theirs:
                torch.nn.functional.binary_cross_entropy(x, x)
            with pytest.raises(RuntimeError) as mine:
                F.binary_cross_entropy(x, x)
            with pytest.raises(RuntimeError) as module:
                torchloss.BCELoss()(x, x)
    assert str(mine.value) == str(theirs.value) == str(module.value) == A.BCE_BANNED_MESSAGE
    with torch.autocast("cpu", dtype=torch.bfloat16):  # CPU: fp32, allowed
        assert F.binary_cross_entropy(p, p).dtype == torch.float32


def test_cuda_autocast_leaves_cpu_tensors_alone():
    """Autocast is per device: a CPU loss inside a (fake) CUDA autocast region is not cast."""
    x = torch.randn(4, 3).bfloat16()
    with _fake_cuda_autocast(torch.float16):
        assert F.mse_loss(x, x).dtype == torch.bfloat16
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert F.mse_loss(x, x).dtype == torch.float32


def test_float64_is_not_cast():
    """torch's eligibility: float64 tensors are never cast (the loss stays float64)."""
    x = torch.randn(4, 3, dtype=torch.float64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert F.l1_loss(x, x).dtype == torch.nn.functional.l1_loss(x, x).dtype == torch.float64


def test_result_dtype_outside_autocast():
    assert A.result_dtype(torch.bfloat16) == torch.bfloat16
