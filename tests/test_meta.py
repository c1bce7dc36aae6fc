"""Every loss on the ``meta`` device and under ``FakeTensorMode``, driven by the case table.

For each sample and reduction the inputs are moved to ``meta`` (or made fake), the loss and the
gradient of every differentiable input are computed, and their shapes and dtypes are compared
with torch's loss on the CPU (its semantics; torch's own meta kernels are wrong in places, e.g.
``soft_margin_loss`` promotes to a float64 target's dtype on meta only, and several have no meta
backward at all: CTC, multi-margin, multi-label margin) and with torchloss on the CPU. Running at
all proves that nothing is read back to the host (a meta or fake tensor has no values: any
``.item()``/``bool()`` raises): value checks are skipped there, as torch's meta kernels skip
them (``torch._assert_async``, a no-op on meta).
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch._subclasses import FakeTensorMode

from torchloss.testing.cases import CASES, Maker
from torchloss.testing.runner import functions, or_skip

SAMPLES = [(case, i, f"{case.name}-{i}-{s.name}") for case in CASES for i, s in enumerate(case.samples(Maker()))]
WITH_REDUCTION = [(c, i, r, f"{n}-{r}") for c, i, n in SAMPLES for r in c.reductions]
# bfloat16: each case's first sample; FakeTensorMode (slower to set up): one reduction a sample,
# in turn
LOW = [(c, 0, r, f"{c.name}-{r}") for c in CASES for r in c.reductions]
ONE_REDUCTION = [(c, i, c.reductions[i % len(c.reductions)], f"{n}-{c.reductions[i % len(c.reductions)]}") for c, i, n in SAMPLES]


def _ids(items):
    return [i[-1] for i in items]


def _functions(case):
    return or_skip(functions, case)


def _shapes(fn, args, kwargs, wrt, convert=lambda t: t):
    """``(shape, dtype)`` of the output and of each ``wrt`` gradient of ``fn`` on converted inputs."""
    args = [convert(a) if isinstance(a, torch.Tensor) else a for a in args]
    kwargs = {k: convert(v) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
    leaves = []
    for slot in wrt:
        t = (kwargs[slot] if isinstance(slot, str) else args[slot]).detach().requires_grad_()
        if isinstance(slot, str):
            kwargs[slot] = t
        else:
            args[slot] = t
        leaves.append(t)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = fn(*args, **kwargs)
    grads = torch.autograd.grad(out, leaves, torch.ones_like(out), allow_unused=True) if out.requires_grad else [None] * len(leaves)
    return (tuple(out.shape), out.dtype, out.device.type), [
        None if g is None else (tuple(g.shape), g.dtype, g.device.type) for g in grads
    ]


def _on(device_type, result):
    (shape, dtype, _), grads = result
    return (shape, dtype, device_type), [None if g is None else (g[0], g[1], device_type) for g in grads]


def _expected(case, s, kwargs, wrt):
    ours, ref = _functions(case)
    mine = _shapes(ours, s.args, kwargs, wrt)
    try:
        theirs = _shapes(ref, s.args, kwargs, s.torch_wrt or s.wrt)
    except (RuntimeError, NotImplementedError):  # no CPU kernel for this dtype in torch
        return mine
    # torch's semantics for the output and the gradients it computes; torchloss's own elsewhere
    assert mine[0] == theirs[0]
    return mine


@pytest.mark.parametrize(
    "case,i,reduction,_,dtype",
    [pytest.param(*w, torch.float32, id=f"{w[-1]}-float32", marks=() if w in ONE_REDUCTION else (pytest.mark.slow,))
     for w in WITH_REDUCTION]
    + [pytest.param(*w, torch.bfloat16, id=f"{w[-1]}-bfloat16") for w in LOW],
)
def test_meta(case, i, reduction, _, dtype):
    """On meta: torch's output shape and dtype, and a gradient of each input's shape and dtype."""
    s = case.samples(Maker("cpu", dtype))[i]
    kwargs = dict(s.kwargs, reduction=reduction)
    expected = _expected(case, s, kwargs, s.wrt)
    ours, _ref = _functions(case)
    got = _shapes(ours, s.args, kwargs, s.wrt, lambda t: t.to("meta"))
    assert got == _on("meta", expected)


@pytest.mark.parametrize("case,i,reduction,_", ONE_REDUCTION, ids=_ids(ONE_REDUCTION))
def test_fake_tensor_mode(case, i, reduction, _):
    """Under ``FakeTensorMode`` (what ``torch.compile`` and ``torch.export`` trace with): the
    same shapes and dtypes as a real CPU call, with no data-dependent host read."""
    s = case.samples(Maker("cpu", torch.float32))[i]
    kwargs = dict(s.kwargs, reduction=reduction)
    expected = _expected(case, s, kwargs, s.wrt)
    ours, _ref = _functions(case)
    mode = FakeTensorMode()
    args = [mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in s.args]
    kw = {k: mode.from_tensor(v) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
    with mode:
        got = _shapes(ours, args, kw, s.wrt)
    assert got == expected


def test_meta_value_checks_are_skipped():
    """Value checks torch's CPU kernels make (targets in range, probabilities in [0, 1], a
    non-negative variance) cannot run on meta: skipped, as torch's meta kernels skip them."""
    import torchloss.functional as F

    x = torch.empty(4, 5, device="meta")
    t = torch.empty(4, dtype=torch.long, device="meta")
    assert F.cross_entropy(x, t).device.type == "meta"
    assert F.nll_loss(x, t, reduction="none").shape == (4,)
    assert F.binary_cross_entropy(x, x).shape == ()
    assert F.gaussian_nll_loss(x, x, x).shape == ()
    assert F.multi_margin_loss(x, t).shape == ()
    assert F.multilabel_margin_loss(x, t.new_empty(4, 5)).shape == ()
