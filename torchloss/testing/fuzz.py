"""A differential fuzzer: random calls of every loss, compared with ``torch.nn.functional``.

For each loss a :class:`Spec` draws *valid* calls (every argument and keyword, shapes with 0-d,
empty, size-1 and broadcast dimensions, K-dimensional and unbatched forms, every floating dtype and
mixtures, non-contiguous and expanded operands, values at kinks and margins, ±inf, NaN, huge and
tiny magnitudes) with `hypothesis <https://hypothesis.readthedocs.io>`_; :func:`invalid` mutates a
valid call into a (usually) bad one: a wrong shape, dtype or type, an out-of-range target, a bad
reduction or scalar argument. :func:`compare` runs one call through torch and torchloss and
returns the disagreements:

* both raise: the same exception type;
* one raises: a disagreement (unless a deliberate difference says so);
* both return: the same result dtype and shape; values, and every input gradient under a random
  upstream gradient, judged against torch's own float64 evaluation of the same call: torchloss's
  error is no larger than torch's error in the same dtype plus a slack of a few ulps
  (:func:`_slack`), and NaN/inf appear only where the float64 result has them (or where the
  float64 value overflows the result's dtype);
* torchloss never mutates its inputs.

Deliberate differences (docs/differences.md) are :data:`DELIBERATE`: each a named predicate that
says exactly when a disagreement is expected. ``python -m torchloss fuzz --budget SECONDS`` runs
the fuzzer for a time budget (see docs/fuzzing.md); tests/test_fuzz.py runs a few derandomized
examples per loss in the default suite and a long run under ``pytest -m fuzz``.

Adding a loss is one :class:`Spec` in :data:`SPECS`: a strategy that draws valid calls.
"""

from __future__ import annotations

import functools
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from hypothesis import strategies as st

F64 = torch.float64
FLOATS = (torch.float64, torch.float32, torch.float16, torch.bfloat16)
INF, NAN = math.inf, math.nan
SPECIALS = (0.0, -0.0, 1.0, -1.0, INF, -INF, NAN, 1e30, -1e30, 1e-30, 1e-300, 65504.0, 1e4, -1e4)


# --------------------------------------------------------------------------------------------
# Calls: tensors as recipes, so that each side (torch, torchloss, the float64 reference) gets
# fresh tensors with identical values and layout.


@dataclass
class T:
    """A tensor recipe: ``values`` (float64 for floating dtypes, else of ``dtype``), made in
    ``dtype`` with a layout (``contiguous``, ``transposed``, ``strided``, ``expanded:<dim>:<n>``,
    where the values have size 1 at ``dim``, expanded to ``n``); ``requires_grad`` makes the
    made tensor's leaf require grad (the leaf whose gradient is compared)."""

    values: torch.Tensor
    dtype: torch.dtype
    layout: str = "contiguous"
    requires_grad: bool = False

    @property
    def shape(self) -> tuple:
        s = list(self.values.shape)
        if self.layout.startswith("expanded"):
            _, d, n = self.layout.split(":")
            s[int(d)] = int(n)
        return tuple(s)

    def make(self, dtype: torch.dtype | None = None):
        """``(tensor, leaf)``: the argument and the leaf its gradient is taken for (or None)."""
        # the values as the recipe's dtype holds them, then (for the reference) widened
        leaf = self.values.to(self.dtype)
        if leaf is self.values:  # (a fresh tensor every time: never the recipe's own values)
            leaf = leaf.clone()
        if dtype is not None:
            leaf = leaf.to(dtype)
        grad = self.requires_grad and (leaf.is_floating_point() or leaf.is_complex())
        leaf = leaf.requires_grad_(grad)
        t = leaf
        if self.layout == "transposed" and t.dim() >= 2:
            t = t.mT.contiguous().mT
        elif self.layout == "strided" and t.dim() >= 1:
            t = torch.stack([t, t], -1)[..., 0]
        elif self.layout.startswith("expanded"):
            t = t.expand(self.shape)
        return t, (leaf if grad else None)

    def __repr__(self) -> str:
        dt = str(self.dtype).replace("torch.", "")
        v = self.values
        vals = f", {v.tolist()}" if v.numel() <= 12 else ""
        extra = "" if self.layout == "contiguous" else f", {self.layout}"
        rg = ", rg" if self.requires_grad else ""
        return f"T({list(self.shape)}, {dt}{extra}{rg}{vals})"


@dataclass
class Call:
    loss: str
    args: tuple
    kwargs: dict = field(default_factory=dict)
    seed: int = 0  # of the upstream gradient
    # applied to the made arguments before the call (CTC: log_softmax of the logits)
    pre: Callable | None = None

    def __repr__(self) -> str:
        parts = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        return f"{self.loss}({', '.join(parts)})"

    def tensors(self):
        return [a for a in list(self.args) + list(self.kwargs.values()) if isinstance(a, T)]

    def materialize(self, dtype=None):
        """Arguments made fresh (floating ones in ``dtype`` when given), and the grad leaves."""
        leaves = []

        def one(a):
            if isinstance(a, T):
                d = dtype if (dtype is not None and a.dtype.is_floating_point) else None
                if dtype == torch.float64 and a.dtype.is_complex:
                    d = torch.complex128  # (the reference widens complex operands too)
                t, leaf = a.make(d)
                if leaf is not None:
                    leaves.append(leaf)
                return t
            return a

        args = [one(a) for a in self.args]
        kwargs = {k: one(v) for k, v in self.kwargs.items()}
        if self.pre is not None:
            args = self.pre(args)
        return args, kwargs, leaves


# --------------------------------------------------------------------------------------------
# Building blocks of the strategies


def _values(draw, shape, kind="normal", kinks=(), special=True):
    """float64 values of ``shape``: normal, 'unit' ([0, 1]), 'positive', 'signs' (±1), with some
    positions replaced by kinks or special values, or scaled to huge/tiny magnitudes."""
    seed = draw(st.integers(0, 2**20))
    modes = ["plain", "plain", "kinks"] + (["special", "scale"] if special else [])
    mode = draw(st.sampled_from(modes))
    g = torch.Generator().manual_seed(seed)
    if kind == "unit":
        v = torch.rand(shape, generator=g, dtype=F64)
    elif kind == "positive":
        v = torch.randn(shape, generator=g, dtype=F64).exp()
    elif kind == "signs":
        v = torch.randint(0, 2, shape, generator=g).to(F64) * 2 - 1
    else:
        v = torch.randn(shape, generator=g, dtype=F64)
    if mode == "scale" and kind != "unit":
        v = v * draw(st.sampled_from([1e-30, 1e-8, 1e-3, 1e3, 1e8, 1e30]))
    elif mode in ("kinks", "special"):
        pool = list(kinks) if mode == "kinks" else list(SPECIALS)
        if kind == "unit" and mode == "special":
            pool = [0.0, 1.0, 0.5, 1e-30, 1 - 1e-16, 1e-8, 1 - 1e-8, NAN]
        if pool:
            pick = torch.tensor(pool, dtype=F64)[torch.randint(0, len(pool), shape, generator=g)]
            v = torch.where(torch.rand(shape, generator=g) < 0.5, pick, v)
    return v


def tensor(draw, shape, dtype, kind="normal", kinks=(), special=True, grad=None, layout=True):
    """A :class:`T` of ``shape`` and ``dtype`` (see :func:`_values`)."""
    shape = tuple(shape)
    lay = "contiguous"
    if layout:
        choices = ["contiguous", "contiguous"]
        if len(shape) >= 2:
            choices.append("transposed")
        if len(shape) >= 1:
            choices.append("strided")
        ones = [i for i, s in enumerate(shape) if s != 1]
        if ones:
            choices.append("expanded")
        lay = draw(st.sampled_from(choices))
        if lay == "expanded":
            d = draw(st.sampled_from(ones))
            lay = f"expanded:{d}:{shape[d]}"
            shape = shape[:d] + (1,) + shape[d + 1 :]
    if dtype.is_floating_point or dtype.is_complex:
        v = _values(draw, shape, kind, kinks, special)
        rg = draw(st.booleans()) if grad is None else grad
    else:
        v = _values(draw, shape, kind, kinks, special=False).to(dtype)
        rg = False
    return T(v, dtype, lay, rg)


def int_tensor(draw, shape, low, high, dtype=torch.int64, layout=True):
    seed = draw(st.integers(0, 2**20))
    g = torch.Generator().manual_seed(seed)
    v = torch.randint(low, max(high, low + 1), tuple(shape), generator=g).to(dtype)
    lay = "contiguous"
    if layout and len(shape) >= 1:
        lay = draw(st.sampled_from(["contiguous", "contiguous", "strided"]))
    return T(v, dtype, lay, False)


SIZE = st.sampled_from([0, 1, 1, 2, 3, 3])
POS = st.sampled_from([1, 1, 2, 3, 4])


def shapes(draw, min_dims=0, max_dims=3, size=SIZE):
    n = draw(st.integers(min_dims, max_dims))
    return tuple(draw(size) for _ in range(n))


def broadcast_partner(draw, shape):
    """A shape that broadcasts with ``shape``: some sizes set to 1, leading dims dropped, or a
    leading dimension added (enlarging)."""
    s = [draw(st.sampled_from([d, d, d, 1])) for d in shape]
    cut = draw(st.integers(0, len(s)))
    s = s[cut:] if draw(st.booleans()) else s
    if len(s) == len(shape) and draw(st.integers(0, 5)) == 0:
        s = [draw(st.sampled_from([1, 2]))] + s
    return tuple(s)


def float_dtype(draw):
    return draw(st.sampled_from(FLOATS))


def partner_dtype(draw, dtype, shape):
    """Usually ``dtype``; sometimes another floating dtype (mixed precision), and for a 0-d operand
    sometimes an integer or bool dtype."""
    k = draw(st.integers(0, 9))
    if k < 6:
        return dtype
    if k < 9 or len(shape) > 0:
        return draw(st.sampled_from(FLOATS))
    return draw(st.sampled_from([torch.int64, torch.int32, torch.bool, torch.float64]))


def reduction(draw, legacy=True, extra=()):
    opts = ["default", "none", "mean", "sum"] + list(extra) + (["legacy"] if legacy else [])
    c = draw(st.sampled_from(opts))
    if c == "default":
        return {}
    if c == "legacy":
        kw = {
            "size_average": draw(st.sampled_from([None, True, False])),
            "reduce": draw(st.sampled_from([None, True, False])),
        }
        if draw(st.booleans()):
            kw["reduction"] = draw(st.sampled_from(["none", "mean", "sum"] + list(extra)))
        return kw
    return {"reduction": c}


def _seed(draw):
    return draw(st.integers(0, 2**16))


# --------------------------------------------------------------------------------------------
# One strategy of valid calls per loss


@st.composite
def _difference(draw, name, kinks=(0.0,), weight=False, legacy=True, extra=None):
    dtype = float_dtype(draw)
    xs = shapes(draw, 0, 3)
    ys = broadcast_partner(draw, xs) if draw(st.booleans()) else xs
    bshape = torch.broadcast_shapes(xs, ys)
    kw = dict(extra(draw) if extra else {})
    ks = kinks + tuple(-k for k in kinks) + tuple(kw.values())
    y = tensor(draw, ys, partner_dtype(draw, dtype, ys))
    d = _values(draw, bshape, kinks=tuple(k for k in ks if isinstance(k, float)))
    xv = (y.values.to(F64).expand(bshape) + d).sum_to_size(xs) if bshape == xs else None
    x = tensor(draw, xs, dtype)
    if xv is not None and y.layout == "contiguous" and x.layout == "contiguous" and draw(st.booleans()):
        x = T(xv.clone(), dtype, "contiguous", x.requires_grad)
    if weight and draw(st.booleans()):
        kw["weight"] = tensor(draw, xs, partner_dtype(draw, dtype, xs), kind="positive")
    kw.update(reduction(draw, legacy=legacy))
    return Call(name, (x, y), kw, _seed(draw))


def _beta(draw):
    return {} if draw(st.booleans()) else {"beta": draw(st.sampled_from([0.0, 0.5, 1.0, 2.0, 1e-3, INF]))}


def _delta(draw):
    return {} if draw(st.booleans()) else {"delta": draw(st.sampled_from([0.5, 1.0, 2.0, 1e-3, 1e3]))}


@st.composite
def _soft_margin(draw):
    dtype = float_dtype(draw)
    xs = shapes(draw, 0, 3)
    ys = broadcast_partner(draw, xs) if draw(st.integers(0, 3)) == 0 else xs
    x = tensor(draw, xs, dtype)
    y = tensor(draw, ys, partner_dtype(draw, dtype, ys), kind=draw(st.sampled_from(["signs", "normal"])))
    return Call("soft_margin_loss", (x, y), reduction(draw), _seed(draw))


@st.composite
def _bce(draw):
    dtype = float_dtype(draw)
    xs = shapes(draw, 0, 3)
    x = tensor(draw, xs, dtype, kind="unit")
    y = tensor(draw, xs, partner_dtype(draw, dtype, xs), kind="unit")
    kw = {}
    if draw(st.booleans()):
        ws = broadcast_partner(draw, xs) if draw(st.booleans()) else xs
        kw["weight"] = tensor(draw, ws, partner_dtype(draw, dtype, ws), kind="positive", grad=False)
    kw.update(reduction(draw))
    return Call("binary_cross_entropy", (x, y), kw, _seed(draw))


@st.composite
def _bce_logits(draw):
    dtype = float_dtype(draw)
    xs = shapes(draw, 0, 3)
    x = tensor(draw, xs, dtype)
    y = tensor(draw, xs, partner_dtype(draw, dtype, xs), kind="unit")
    kw = {}
    if draw(st.booleans()):
        ws = broadcast_partner(draw, xs) if draw(st.booleans()) else xs
        kw["weight"] = tensor(draw, ws, partner_dtype(draw, dtype, ws), kind="positive")
    if draw(st.booleans()):
        ps = xs[-1:] if (xs and draw(st.booleans())) else broadcast_partner(draw, xs)
        kw["pos_weight"] = tensor(draw, ps, partner_dtype(draw, dtype, ps), kind="positive")
    kw.update(reduction(draw))
    return Call("binary_cross_entropy_with_logits", (x, y), kw, _seed(draw))


@st.composite
def _poisson(draw):
    dtype = float_dtype(draw)
    xs = shapes(draw, 0, 3)
    log_input = draw(st.booleans())
    ys = broadcast_partner(draw, xs) if draw(st.integers(0, 3)) == 0 else xs
    x = tensor(draw, xs, dtype, kind="normal" if log_input else "positive", kinks=(0.0,))
    y = tensor(draw, ys, partner_dtype(draw, dtype, ys), kind="positive", kinks=(0.0, 1.0))
    kw = {"log_input": log_input, "full": draw(st.booleans())}
    if draw(st.booleans()):
        kw["eps"] = draw(st.sampled_from([1e-8, 1e-3, 0.0, 1.0]))
    kw.update(reduction(draw))
    return Call("poisson_nll_loss", (x, y), kw, _seed(draw))


@st.composite
def _gaussian(draw):
    dtype = float_dtype(draw)
    xs = shapes(draw, 0, 3)
    x = tensor(draw, xs, dtype)
    ys = broadcast_partner(draw, xs) if draw(st.integers(0, 3)) == 0 else xs
    y = tensor(draw, ys, partner_dtype(draw, dtype, ys))
    form = draw(st.sampled_from(["same", "last1", "fewer", "float", "scalar"]))
    if form == "float":
        var = draw(st.sampled_from([1.0, 0.5, 1e-8, 2.0]))
    else:
        vs = {"same": xs, "last1": xs[:-1] + (1,) if xs else (), "fewer": xs[:-1], "scalar": ()}[form]
        var = tensor(draw, vs, partner_dtype(draw, dtype, vs), kind="positive", kinks=(1e-6, 1e-8))
    kw = {"full": draw(st.booleans())}
    if draw(st.booleans()):
        kw["eps"] = draw(st.sampled_from([1e-6, 1e-3, 1e-12]))
    kw.update(reduction(draw, legacy=False))
    return Call("gaussian_nll_loss", (x, y, var), kw, _seed(draw))


@st.composite
def _kl_div(draw):
    dtype = float_dtype(draw)
    xs = shapes(draw, 0, 3)
    ys = broadcast_partner(draw, xs) if draw(st.integers(0, 3)) == 0 else xs
    log_target = draw(st.booleans())
    x = tensor(draw, xs, dtype)
    y = tensor(draw, ys, partner_dtype(draw, dtype, ys), kind="normal" if log_target else "unit", kinks=(0.0,))
    kw = {"log_target": log_target}
    kw.update(reduction(draw, extra=("batchmean",)))
    return Call("kl_div", (x, y), kw, _seed(draw))


def _class_shapes(draw):
    """(input shape, index-target shape): (C), (N, C), (N, C, d1, ...)."""
    C = draw(POS)
    form = draw(st.sampled_from(["unbatched", "batched", "batched", "kdim"]))
    if form == "unbatched":
        return (C,), ()
    N = draw(SIZE)
    if form == "batched":
        return (N, C), (N,)
    ds = shapes(draw, 1, 2)
    return (N, C) + ds, (N,) + ds


@st.composite
def _nll(draw, name="nll_loss"):
    dtype = float_dtype(draw)
    xs, ys = _class_shapes(draw)
    C = xs[0] if len(xs) == 1 else xs[1]
    x = tensor(draw, xs, dtype)
    kw = {}
    ignore = draw(st.sampled_from([None, None, -100, 0, 1, -1]))
    if name == "cross_entropy" and draw(st.integers(0, 2)) == 0:
        # probability targets: the input's shape
        y = tensor(draw, xs, partner_dtype(draw, dtype, ()), kind="unit")
    else:
        y = int_tensor(draw, ys, 0, C, dtype=draw(st.sampled_from([torch.int64] * 3 + [torch.uint8, torch.int32])))
        if ignore is not None and ys and draw(st.booleans()):
            v = y.values.clone()
            if ignore >= 0 or y.dtype != torch.uint8:
                v.view(-1)[: max(1, v.numel() // 2)] = ignore
            y = T(v, y.dtype, y.layout)
    if ignore is not None:
        kw["ignore_index"] = ignore
    if draw(st.booleans()):
        kw["weight"] = tensor(draw, (C,), partner_dtype(draw, dtype, (C,)), kind="positive", kinks=(0.0,), grad=False)
    if name == "cross_entropy" and draw(st.booleans()):
        kw["label_smoothing"] = draw(st.sampled_from([0.0, 0.1, 0.5, 1.0, -0.1]))
    kw.update(reduction(draw))
    return Call(name, (x, y), kw, _seed(draw))


@st.composite
def _multi_margin(draw):
    dtype = float_dtype(draw)
    C = draw(POS)
    unbatched = draw(st.integers(0, 3)) == 0
    N = draw(SIZE)
    xs, ys = ((C,), ()) if unbatched else ((N, C), (N,))
    x = tensor(draw, xs, dtype, kinks=(0.0, 1.0, -1.0))
    y = int_tensor(draw, ys, 0, C)
    kw = {}
    if draw(st.booleans()):
        kw["p"] = draw(st.sampled_from([1, 2]))
    if draw(st.booleans()):
        kw["margin"] = draw(st.sampled_from([0.0, 0.5, 1.0, 2.0, -1.0]))
    if draw(st.booleans()):
        kw["weight"] = tensor(draw, (C,), partner_dtype(draw, dtype, (C,)), kind="positive", grad=False)
    kw.update(reduction(draw))
    return Call("multi_margin_loss", (x, y), kw, _seed(draw))


@st.composite
def _multilabel_margin(draw):
    dtype = float_dtype(draw)
    C = draw(POS)
    unbatched = draw(st.integers(0, 3)) == 0
    N = draw(SIZE)
    xs = (C,) if unbatched else (N, C)
    x = tensor(draw, xs, dtype, kinks=(0.0, 1.0, -1.0))
    y = int_tensor(draw, xs, -1, C)
    return Call("multilabel_margin_loss", (x, y), reduction(draw), _seed(draw))


@st.composite
def _multilabel_soft_margin(draw):
    dtype = float_dtype(draw)
    C = draw(POS)
    N = draw(SIZE)
    xs = (N, C) if draw(st.integers(0, 4)) else (C,)
    x = tensor(draw, xs, dtype)
    ys = xs if draw(st.integers(0, 4)) else broadcast_partner(draw, xs)
    y = tensor(draw, ys, partner_dtype(draw, dtype, ys), kind="unit")
    kw = {}
    if draw(st.booleans()):
        kw["weight"] = tensor(draw, (C,), partner_dtype(draw, dtype, (C,)), kind="positive")
    kw.update(reduction(draw))
    return Call("multilabel_soft_margin_loss", (x, y), kw, _seed(draw))


def _margin(draw, values=(0.0, 0.5, 1.0, -1.0, 2.0)):
    return {} if draw(st.booleans()) else {"margin": draw(st.sampled_from(values))}


@st.composite
def _margin_ranking(draw):
    dtype = float_dtype(draw)
    xs = shapes(draw, 0, 2)
    s2 = broadcast_partner(draw, xs) if draw(st.integers(0, 3)) == 0 else xs
    ys = broadcast_partner(draw, xs) if draw(st.integers(0, 3)) == 0 else xs
    a = tensor(draw, xs, dtype, kinks=(0.0, 1.0))
    b = tensor(draw, s2, partner_dtype(draw, dtype, s2), kinks=(0.0, 1.0))
    y = tensor(draw, ys, partner_dtype(draw, dtype, ys), kind="signs")
    kw = _margin(draw)
    kw.update(reduction(draw))
    return Call("margin_ranking_loss", (a, b, y), kw, _seed(draw))


@st.composite
def _hinge_embedding(draw):
    dtype = float_dtype(draw)
    xs = shapes(draw, 0, 3)
    ys = broadcast_partner(draw, xs) if draw(st.integers(0, 3)) == 0 else xs
    x = tensor(draw, xs, dtype, kind="positive", kinks=(0.0, 1.0, 0.5))
    y = tensor(draw, ys, partner_dtype(draw, dtype, ys), kind=draw(st.sampled_from(["signs", "signs", "normal"])))
    kw = _margin(draw)
    kw.update(reduction(draw))
    return Call("hinge_embedding_loss", (x, y), kw, _seed(draw))


@st.composite
def _cosine_embedding(draw):
    dtype = float_dtype(draw)
    D = draw(POS)
    unbatched = draw(st.integers(0, 3)) == 0
    N = draw(SIZE)
    xs, ys = ((D,), ()) if unbatched else ((N, D), (N,))
    a = tensor(draw, xs, dtype, kinks=(0.0,))
    b = tensor(draw, xs, partner_dtype(draw, dtype, xs), kinks=(0.0,))
    y = tensor(draw, ys, partner_dtype(draw, dtype, ys), kind="signs")
    kw = _margin(draw, (0.0, 0.5, -0.5, 1.0))
    kw.update(reduction(draw))
    return Call("cosine_embedding_loss", (a, b, y), kw, _seed(draw))


def _reduction_flags(kw: dict) -> tuple[bool, bool]:
    """``(none, mean)``: whether a call's reduction (legacy ``size_average``/``reduce`` too) is
    ``'none'`` and whether it is ``'mean'``."""
    if "size_average" in kw or "reduce" in kw:
        return kw.get("reduce") is False, kw.get("reduce") is not False and kw.get("size_average") is not False
    return kw.get("reduction") == "none", kw.get("reduction", "mean") == "mean"


def _upstream_per_term(call: Call, shape: tuple) -> float:
    """``max |upstream|`` of the call's seeded upstream gradient (``shape`` for ``'none'``, else
    0-d), divided by the elements of ``shape`` for ``'mean'``: the factor each term of a
    gradient carries."""
    none, mean = _reduction_flags(call.kwargs)
    up = torch.randn(tuple(shape) if none else (), generator=torch.Generator().manual_seed(call.seed), dtype=F64)
    n = math.prod(shape)
    return _finite_max(up) / (n if mean and n else 1)


def _inverse_norms(call: Call) -> float:
    """1/|x| of the smallest non-zero row of the two inputs (the scale of a cosine's gradient)."""
    out = 0.0
    for t in call.tensors()[:2]:
        if t.dtype.is_floating_point and t.values.numel():
            n = _rounded(t).reshape(-1, t.values.shape[-1] if t.values.dim() else 1).norm(dim=-1)
            n = n[(n > 0) & n.isfinite()]
            if n.numel():
                out = max(out, float(1 / n.min()))
    return out


def _cosine_gradient_terms(call: Call) -> float:
    """cosine embedding: ``|upstream| / rows`` (``'mean'``) times the larger of the two terms each
    input's gradient subtracts, ``|x_other| / d`` and ``|c| |x_own| / q_own`` per row (torch's
    squared norms: an integer input's in its own dtype, wrapping as torch's do), and at least
    :func:`_inverse_norms`. Where they cancel (collinear rows: a cosine of 1, one feature; a zero
    row beside others through an expanded operand, whose term is ``1/sqrt(eps)``) the float64
    gradient is tiny and either side's float32 result carries a rounding of the terms."""
    base = _inverse_norms(call)
    ts = [_tensor_arg(call, i) for i in range(2)]
    if any(t is None for t in ts):
        return base
    made = [t.make()[0].detach() for t in ts]
    if any(m.is_complex() for m in made):
        return base

    def squares(m):
        sq = (m * m).sum(-1) if not m.is_floating_point() else (m.double() * m.double()).sum(-1)
        return sq.double() + 1e-12

    try:
        a, b = torch.broadcast_tensors(made[0].double(), made[1].double())
        q1 = squares(made[0])
        q2 = squares(made[1])
        p = (a * b).sum(-1)
        d = (q1 * q2).sqrt()
        c = p / d
        t1 = torch.maximum(b.abs().amax(-1) / d, c.abs() * made[0].double().abs().amax(-1) / q1)
        t2 = torch.maximum(a.abs().amax(-1) / d, c.abs() * made[1].double().abs().amax(-1) / q2)
    except (RuntimeError, IndexError):
        return base
    terms = max(_finite_max(t1), _finite_max(t2))
    return max(base, _upstream_per_term(call, tuple(t1.shape)) * terms)


def _poisson_gradient_terms(call: Call) -> float:
    """poisson_nll_loss: the largest sum of term magnitudes that one element of an operand's
    gradient adds up over the dimensions it was broadcast along, times ``|upstream|`` (/ the
    elements for ``'mean'``): ``|e^x| + |y|`` or ``1 + |y / (x + eps)|`` for the input, ``|x|`` or
    ``|log(x + eps)|`` (and Stirling's ``|log y| + 1/(2y)`` with ``full``) for the target. A 0-d
    input beside targets of +-1e30 sums terms of 1e29 that cancel: any order of addition, torch's
    included, leaves a rounding of them."""
    ts = [_tensor_arg(call, i) for i in range(2)]
    if any(t is None for t in ts):
        return 0.0
    made = [t.make()[0].detach() for t in ts]
    if any(m.is_complex() for m in made):
        return 0.0
    kw = call.kwargs
    log_input = kw.get("log_input", True) is not False
    eps = kw.get("eps", 1e-8)
    eps = float(eps) if isinstance(eps, (int, float)) and not isinstance(eps, bool) else 1e-8
    try:
        x, y = torch.broadcast_tensors(made[0].double(), made[1].double())
        if log_input:
            dx, dy = x.exp().abs() + y.abs(), x.abs()
        else:
            dx, dy = 1 + (y / (x + eps)).abs(), (x + eps).log().abs()
        if kw.get("full") is True:
            dy = dy + torch.where(y > 1, y.log().abs() + 0.5 / y, 0)
        sums = []
        for d, m in ((dx, made[0]), (dy, made[1])):
            d = torch.where(d.isfinite(), d, 0)
            sums.append(_finite_max(d.sum_to_size(m.shape) if d.shape != m.shape else d))
    except (RuntimeError, IndexError):
        return 0.0
    return _upstream_per_term(call, tuple(x.shape)) * max(sums)


def _kl_gradient_terms(call: Call) -> float:
    """kl_div: as :func:`_poisson_gradient_terms`, the largest sum of term magnitudes one element
    of an operand's gradient adds up over its broadcast dimensions: ``|y|`` (``e^y``) for the
    input, ``|log y| + 1 + |x|`` (``e^y (|y| + |x| + 1)`` with ``log_target``) for the target,
    times ``|upstream|`` (/ the elements for ``'mean'``, / the batch for ``'batchmean'``)."""
    ts = [_tensor_arg(call, i) for i in range(2)]
    if any(t is None for t in ts):
        return 0.0
    made = [t.make()[0].detach() for t in ts]
    if any(m.is_complex() for m in made):
        return 0.0
    kw = call.kwargs
    try:
        x, y = torch.broadcast_tensors(made[0].double(), made[1].double())
        if kw.get("log_target") is True:
            dx, dy = y.exp(), y.exp() * (y.abs() + x.abs() + 1)
        else:
            dx, dy = y.abs(), y.log().abs() + 1 + x.abs()
        sums = []
        for d, m in ((dx, made[0]), (dy, made[1])):
            d = torch.where(d.isfinite(), d, 0)
            sums.append(_finite_max(d.sum_to_size(m.shape) if d.shape != m.shape else d))
    except (RuntimeError, IndexError):
        return 0.0
    if "size_average" in kw or "reduce" in kw:
        none, mean = _reduction_flags(kw)
        div = x.numel() if mean else 1
    else:
        red = kw.get("reduction", "mean")
        none = red == "none"
        div = x.numel() if red == "mean" else (x.shape[0] if red == "batchmean" and x.dim() else 1)
    up = torch.randn(tuple(x.shape) if none else (), generator=torch.Generator().manual_seed(call.seed), dtype=F64)
    return _finite_max(up) * max(sums) / (div if div else 1)


def _softmax_gradient_terms(call: Call) -> float:
    """cross_entropy: the magnitude of the terms each logit's gradient sums, ``|upstream|·max(1, |w|)``
    (the softmax times the total target weight, minus each class's own weight; probabilities are
    at most 1). Where they cancel exactly (one class, or a class beside an infinite logit) the
    float64 gradient is 0 or tiny, and either side's float32 result carries their rounding."""
    x, kw = _tensor_arg(call, 0), call.kwargs
    if x is None or not x.shape:
        return 0.0
    if "size_average" in kw or "reduce" in kw:
        none = kw.get("reduce") is False
    else:
        none = kw.get("reduction") == "none"
    cd = 0 if len(x.shape) == 1 else 1
    shape = tuple(x.shape[:cd]) + tuple(x.shape[cd + 1 :]) if none else ()
    up = torch.randn(shape, generator=torch.Generator().manual_seed(call.seed), dtype=F64)
    w = kw.get("weight")
    wmax = _finite_max(_rounded(w)) if isinstance(w, T) and w.dtype.is_floating_point else 1.0
    return _finite_max(up) * max(1.0, wmax)


def _weighted_mean_terms(call: Call) -> float:
    """weighted l1/mse/huber ``'mean'``: ``max(phi)/|W|``, the terms the weight gradient
    ``(phi - L)/W`` cancels (exactly 0 for one element); either side's result carries their
    rounding, also in float64, where torch's own result is the reference."""
    w = call.kwargs.get("weight")
    x, y = _tensor_arg(call, 0), _tensor_arg(call, 1)
    if not isinstance(w, T) or x is None or y is None or not w.dtype.is_floating_point or x.dtype.is_complex or y.dtype.is_complex:
        return 0.0
    try:
        d = (_rounded(x).double() - _rounded(y).double()).abs()
        W = float(torch.broadcast_to(_rounded(w), torch.broadcast_shapes(d.shape, w.values.shape)).sum())
    except (RuntimeError, TypeError):
        return 0.0
    if d.numel() == 0 or not W or W != W:
        return 0.0
    phi = torch.maximum(d, d * d)
    return _finite_max(phi) / abs(W)


def _linear_gradient_terms(call: Call) -> float:
    """linear cross entropy: ``|upstream|·max(1, |w|)·max(|x|, |W|)``, the magnitude of the terms
    ``(p - y) x`` and ``(p - y) W`` each gradient sums; where they cancel (equal logits through an
    expanded weight, one class) either side's result carries their rounding."""
    x, W = _tensor_arg(call, 0), _tensor_arg(call, 1)
    if x is None or W is None or not x.dtype.is_floating_point or not W.dtype.is_floating_point:
        return 0.0
    w = call.kwargs.get("weight")
    wmax = _finite_max(_rounded(w)) if isinstance(w, T) and w.dtype.is_floating_point else 1.0
    up = 1.0
    if call.kwargs.get("reduction") == "none" and len(x.shape) == 2:
        up = _finite_max(torch.randn((x.shape[0],), generator=torch.Generator().manual_seed(call.seed), dtype=F64))
    return up * max(1.0, wmax) * max(_finite_max(_rounded(x)), _finite_max(_rounded(W)))


def _triplet_gradient_terms(call: Call) -> float:
    """triplet losses: ``|upstream| / rows`` (``'mean'``), the size of the terms
    ``g u / |u|`` that the anchor's gradient sums from the two distances (for ``p >= 1`` each
    component of ``∂d/∂u`` is at most 1). Where they cancel (equal distance directions: the exact
    gradient 0) either side's float32 result carries a rounding of them."""
    ts = [_tensor_arg(call, i) for i in range(3)]
    if any(t is None for t in ts):
        return 0.0
    try:
        shape = torch.broadcast_shapes(*(tuple(t.values.shape) for t in ts))
    except RuntimeError:
        return 0.0
    rows = shape[:-1] if shape else ()
    return _upstream_per_term(call, rows)


def _ctc_logprob_terms(call: Call) -> float:
    """ctc_loss: ``|upstream| · T · max|log p|``, the size of the log-space sums (alpha, beta and
    the loss) whose differences the gradient exponentiates: each carries a rounding of about
    ``eps`` times it, and so does the gradient, relative to its terms (at most 1 times the
    upstream gradient). With logits of 1e9 that is a few 1e-7 in float64, on either side."""
    x = _tensor_arg(call, 0)
    if x is None or not x.dtype.is_floating_point or x.dtype.is_complex or len(x.shape) < 2:
        return 0.0
    lp = torch.log_softmax(_rounded(x).double(), -1).abs()
    lp = lp[lp.isfinite()]
    if lp.numel() == 0:
        return 0.0
    kw = call.kwargs
    none = kw.get("reduction") == "none"
    rows = (x.shape[1],) if none and len(x.shape) == 3 else ()
    up = torch.randn(rows, generator=torch.Generator().manual_seed(call.seed), dtype=F64)
    return _finite_max(up) * x.shape[0] * float(lp.max())


def _adaptive_logit_terms(call: Call) -> float:
    """adaptive softmax: ``|upstream| · M · G``, where ``M`` is the largest sum of product
    magnitudes a logit is formed from (head ``|x||W|``, clusters ``|x||P^T||O|``) and ``G`` the
    largest factor a logit's probability multiplies in a gradient (``|x|``, ``|h|``, ``|W|``,
    ``|O||x|``, ``|P||O|``). A float32 logit carries rounding of about ``eps·M``, and each
    gradient that much of ``G``, on both sides; where the terms are large and the exact gradient
    small (inputs of 1e4 and more) the float64 answer is a few ulps of this, not of itself."""
    # (the made tensors, in their layouts: an expanded operand has its full shape)
    ts = [t.make()[0].detach().double() if isinstance(t, T) and t.dtype.is_floating_point else None for t in call.args]
    x, W, b, tail = ts[0], ts[2], ts[3], ts[4:]
    if x is None or W is None or x.dim() == 0 or W.dim() != 2 or any(t is None or t.dim() != 2 for t in tail):
        return 0.0
    x = x.reshape(-1, x.shape[-1]).abs().nan_to_num(posinf=0.0)
    if x.shape[-1] != W.shape[-1]:
        return 0.0
    W = W.abs().nan_to_num(posinf=0.0)
    m = float((x @ W.T + (b.abs().nan_to_num(posinf=0.0) if b is not None else 0.0)).max()) if x.numel() and W.numel() else 0.0
    g = max(float(x.max()) if x.numel() else 0.0, float(W.max()) if W.numel() else 0.0)
    for P, O in zip(tail[::2], tail[1::2]):
        P, O = P.abs().nan_to_num(posinf=0.0), O.abs().nan_to_num(posinf=0.0)
        if P.shape[-1] != x.shape[-1] or O.shape[-1] != P.shape[0] or not (x.numel() and P.numel() and O.numel()):
            continue
        h = x @ P.T
        m = max(m, float((h @ O.T).max()))
        g = max(g, float(h.max()), float(O.max()) * float(x.max()), float(P.max()) * float(O.max()))
    up = torch.randn(_adaptive_result_shape(call), generator=torch.Generator().manual_seed(call.seed), dtype=F64)
    return _finite_max(up) * m * g


def _adaptive_result_shape(call: Call) -> tuple:
    """The result's shape of an adaptive softmax call (``(N)`` for ``'none'``, else ``()``)."""
    x = _tensor_arg(call, 0)
    if call.kwargs.get("reduction") == "none" and x is not None and len(x.shape) == 2:
        return (x.shape[0],)
    return ()


def pairwise(x, y):
    return torch.nn.functional.pairwise_distance(x, y)


def cosine_distance(x, y):
    return 1.0 - torch.nn.functional.cosine_similarity(x, y)


@st.composite
def _triplet(draw, name="triplet_margin_loss"):
    dtype = float_dtype(draw)
    D = draw(POS)
    N = draw(SIZE)
    base = (D,) if draw(st.integers(0, 3)) == 0 else (N, D)
    out = []
    for i in range(3):
        s = base if draw(st.integers(0, 3)) else broadcast_partner(draw, base)
        out.append(tensor(draw, s, dtype if i == 0 else partner_dtype(draw, dtype, s)))
    kw = _margin(draw, (0.0, 1.0, 0.5, 2.0))
    if draw(st.booleans()):
        kw["swap"] = draw(st.booleans())
    if name == "triplet_margin_loss":
        if draw(st.booleans()):
            kw["p"] = draw(st.sampled_from([2, 1, 1.5, 3, 0.5, INF]))
        if draw(st.booleans()):
            kw["eps"] = draw(st.sampled_from([1e-6, 0.0, 1e-3]))
        kw.update(reduction(draw))
    else:
        if draw(st.booleans()):
            kw["distance_function"] = draw(st.sampled_from([None, pairwise, cosine_distance]))
        kw.update(reduction(draw, legacy=False))
    return Call(name, tuple(out), kw, _seed(draw))


def _ctc_pre(args, dtype=None):
    args = list(args)
    lp = torch.log_softmax(args[0], -1)
    if dtype is not None and lp.dtype != dtype and lp.is_floating_point():
        # the reference (float64): the log-probabilities the call's dtype computes, which are
        # the loss's actual inputs (a float32 log-softmax gives 0 for a log p of -2.6e-10), with
        # the float64 log-softmax's gradient
        d = lp.detach()
        lp = lp + (torch.log_softmax(args[0].detach().to(dtype), -1).to(d.dtype) - d).nan_to_num(0.0, 0.0, 0.0)
    args[0] = lp
    return args


@st.composite
def _ctc(draw):
    dtype = float_dtype(draw)
    T_, C, N = draw(st.integers(1, 6)), draw(st.integers(2, 5)), draw(st.integers(1, 3))
    unbatched = draw(st.integers(0, 3)) == 0
    if unbatched:
        N = 1
    blank = draw(st.sampled_from([0, 0, C - 1]))
    S = draw(st.integers(0, 4))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**20)))
    labels = torch.randint(0, C - 1, (N, max(S, 1)), generator=g)[:, :S]
    labels = labels + (labels >= blank).long()  # never the blank
    il = torch.randint(0, T_ + 1, (N,), generator=g)
    il[0] = T_  # one full-length sample (torch requires max(il) <= T, not == T)
    tl = torch.randint(0, S + 1, (N,), generator=g)
    concatenated = draw(st.integers(0, 3)) == 0
    tdtype = draw(st.sampled_from([torch.int64, torch.int64, torch.int32]))
    if concatenated:
        tv = torch.cat([labels[n, : tl[n]] for n in range(N)])
    else:
        tv = labels
    if unbatched:
        tv = tv.reshape(-1) if concatenated else tv[0]
    x = tensor(draw, (T_, C) if unbatched else (T_, N, C), dtype, special=False)
    x = T(x.values, dtype, x.layout if not x.layout.startswith("expanded") else "contiguous", True)
    targets = T(tv.to(tdtype), tdtype, "contiguous")
    form = draw(st.sampled_from(["tensor", "list", "tuple"]))

    def lengths(v):
        if unbatched:
            return (
                T(v[0].clone(), tdtype)
                if form == "tensor"
                else [int(v[0])]
                if concatenated
                else T(v[0].clone(), tdtype)
            )
        return T(v.to(tdtype), tdtype) if form == "tensor" else (v.tolist() if form == "list" else tuple(v.tolist()))

    kw = {}
    if blank:
        kw["blank"] = blank
    if draw(st.booleans()):
        kw["zero_infinity"] = draw(st.booleans())
    kw.update(reduction(draw, legacy=False))
    return Call("ctc_loss", (x, targets, lengths(il), lengths(tl)), kw, _seed(draw), pre=functools.partial(_ctc_pre, dtype=dtype))


@st.composite
def _linear_ce(draw):
    dtype = float_dtype(draw)
    D, C = draw(POS), draw(POS)
    unbatched = draw(st.integers(0, 3)) == 0
    N = draw(SIZE)
    xs = (D,) if unbatched else (N, D)
    x = tensor(draw, xs, dtype)
    w = tensor(draw, (C, D), partner_dtype(draw, dtype, (C, D)))
    kw = {}
    if draw(st.integers(0, 2)) == 0:
        y = tensor(draw, ((C,) if unbatched else (N, C)), partner_dtype(draw, dtype, ()), kind="unit", grad=False)
    else:
        y = int_tensor(draw, (() if unbatched else (N,)), 0, C)
        if draw(st.booleans()):
            kw["ignore_index"] = draw(st.sampled_from([None, -100, 0, 1]))
    if draw(st.booleans()):
        kw["linear_bias"] = tensor(draw, (C,), partner_dtype(draw, dtype, (C,)))
    if draw(st.booleans()):
        kw["weight"] = tensor(draw, (C,), partner_dtype(draw, dtype, (C,)), kind="positive", grad=False)
    if draw(st.booleans()):
        kw["label_smoothing"] = draw(st.sampled_from([0.0, 0.1, 1.0]))
    kw.update(reduction(draw, legacy=False))
    return Call("linear_cross_entropy", (x, w, y), kw, _seed(draw))


@st.composite
def _adaptive(draw):
    dtype = draw(st.sampled_from([torch.float64, torch.float32]))
    D = draw(POS)
    cutoffs = draw(st.sampled_from([[1], [2], [1, 3], [2, 3]]))
    last = draw(st.integers(1, 3))
    n_classes = cutoffs[-1] + last
    bounds = cutoffs + [n_classes]
    unbatched = draw(st.integers(0, 3)) == 0
    N = draw(SIZE)
    x = tensor(draw, (D,) if unbatched else (N, D), dtype)
    y = int_tensor(draw, () if unbatched else (N,), 0, n_classes)
    head = [tensor(draw, (cutoffs[0] + len(cutoffs), D), dtype, layout=False)]
    head.append(tensor(draw, (cutoffs[0] + len(cutoffs),), dtype, layout=False) if draw(st.booleans()) else None)
    tail = []
    for i in range(len(cutoffs)):
        h = draw(st.integers(1, 2))
        tail += [
            tensor(draw, (h, D), dtype, layout=False),
            tensor(draw, (bounds[i + 1] - bounds[i], h), dtype, layout=False),
        ]
    kw = {"cutoffs": list(cutoffs)}
    kw.update(reduction(draw, legacy=False))
    return Call("adaptive_log_softmax_with_loss", (x, y, *head, *tail), kw, _seed(draw))


def _adaptive_fns():
    from .cases.adaptive import _ours, _torch

    return _ours, _torch


@dataclass
class Spec:
    """How to fuzz one loss: ``valid`` draws valid calls (a hypothesis strategy); ``fns``, when
    set, returns ``(torchloss's function, torch's)`` (default: the functionals of the name)."""

    name: str
    valid: st.SearchStrategy
    fns: Callable | None = None
    # the natural magnitude of the call's gradients where it is not that of its value and
    # gradients (a cosine's gradient is 1/|x| even where it cancels to 0): part of the slack
    scale: Callable | None = None
    # the argument slots (positions, keyword names) an invalid call may change (default: all);
    # a loss torch has only as a module takes nothing else from its caller
    mutable: tuple | None = None


def _smooth_l1():
    return _difference("smooth_l1_loss", kinks=(0.0, 1.0, 0.5), extra=_beta)


SPECS: dict[str, Spec] = {
    s.name: s
    for s in [
        Spec("l1_loss", _difference("l1_loss", weight=True), scale=_weighted_mean_terms),
        Spec("mse_loss", _difference("mse_loss", weight=True), scale=_weighted_mean_terms),
        Spec("smooth_l1_loss", _smooth_l1()),
        Spec(
            "huber_loss",
            _difference("huber_loss", kinks=(0.0, 1.0, 0.5), weight=True, legacy=False, extra=_delta),
            scale=_weighted_mean_terms,
        ),
        Spec("soft_margin_loss", _soft_margin()),
        Spec("binary_cross_entropy", _bce()),
        Spec("binary_cross_entropy_with_logits", _bce_logits()),
        Spec("poisson_nll_loss", _poisson(), scale=_poisson_gradient_terms),
        Spec("gaussian_nll_loss", _gaussian()),
        Spec("kl_div", _kl_div(), scale=_kl_gradient_terms),
        Spec("nll_loss", _nll()),
        Spec("cross_entropy", _nll("cross_entropy"), scale=_softmax_gradient_terms),
        Spec("multi_margin_loss", _multi_margin()),
        Spec("multilabel_margin_loss", _multilabel_margin()),
        Spec("multilabel_soft_margin_loss", _multilabel_soft_margin()),
        Spec("margin_ranking_loss", _margin_ranking()),
        Spec("hinge_embedding_loss", _hinge_embedding()),
        Spec("cosine_embedding_loss", _cosine_embedding(), scale=_cosine_gradient_terms),
        Spec("triplet_margin_loss", _triplet(), scale=_triplet_gradient_terms),
        Spec("triplet_margin_with_distance_loss", _triplet("triplet_margin_with_distance_loss"), scale=_triplet_gradient_terms),
        Spec("ctc_loss", _ctc(), scale=_ctc_logprob_terms),
        Spec("linear_cross_entropy", _linear_ce(), scale=_linear_gradient_terms),
        # torch has no functional: its module's parameters have the module's form, and it has no
        # reduction argument, so only the input and the target are the caller's to get wrong
        Spec(
            "adaptive_log_softmax_with_loss", _adaptive(), fns=_adaptive_fns, mutable=(0, 1), scale=_adaptive_logit_terms
        ),
    ]
}


# --------------------------------------------------------------------------------------------
# Invalid calls: one mutation of a valid call

BAD_REDUCTIONS = ("bogus", "elementwise_mean", "batchmean", None, 1, "MEAN")
BAD_SCALARS = (NAN, INF, -INF, -1.0, 0.0, -1, 3, "a", None, True, 1j, "tensor", "tensor1")
BAD_VALUES = (1.5, 7, [1.0, 2.0], None, "x", 1j)


@st.composite
def invalid(draw, spec: Spec):
    """A valid call of ``spec`` with one thing changed (usually making it bad)."""
    call = draw(spec.valid)
    args, kwargs = list(call.args), dict(call.kwargs)
    slots = [("a", i) for i in range(len(args))] + [("k", k) for k in kwargs]
    kinds = ["shape", "dtype", "type", "range", "reduction", "scalar", "scalar"]
    if spec.mutable is not None:
        slots = [s for s in slots if s[1] in spec.mutable]
        kinds = [k for k in kinds if k not in ("reduction", "scalar")]
    what = draw(st.sampled_from(kinds))
    tslots = [s for s in slots if isinstance(args[s[1]] if s[0] == "a" else kwargs[s[1]], T)]
    sslots = [
        s
        for s in slots
        if s[0] == "k" and not isinstance(kwargs[s[1]], T) and s[1] not in ("reduction", "size_average", "reduce")
    ]
    if what == "reduction" or (what == "scalar" and not sslots) or not tslots:
        kwargs["reduction"] = draw(st.sampled_from(BAD_REDUCTIONS))
        return Call(call.loss, tuple(args), kwargs, call.seed, call.pre)
    if what == "scalar":
        kind, slot = draw(st.sampled_from(sslots))
        v = draw(st.sampled_from(BAD_SCALARS))
        if v == "tensor":
            v = T(torch.tensor(0.5, dtype=F64), torch.float32)
        elif v == "tensor1":
            v = T(torch.tensor([2], dtype=torch.int64), torch.int64)
        kwargs[slot] = v
        return Call(call.loss, tuple(args), kwargs, call.seed, call.pre)
    kind, slot = draw(st.sampled_from(tslots))
    t = args[slot] if kind == "a" else kwargs[slot]
    if what == "shape":
        s = shapes(draw, 0, 4, st.sampled_from([0, 1, 2, 3, 5]))
        new = (
            tensor(draw, s, t.dtype, layout=False) if t.dtype.is_floating_point else int_tensor(draw, s, 0, 3, t.dtype)
        )
    elif what == "dtype":
        d = draw(
            st.sampled_from(
                [torch.int64, torch.int32, torch.uint8, torch.bool, torch.complex64, torch.float64, torch.float16]
            )
        )
        v = t.values
        new = T(
            v.to(d) if not d.is_floating_point else v.to(F64),
            d,
            t.layout,
            t.requires_grad and (d.is_floating_point or d.is_complex),
        )
    elif what == "range":
        off = draw(st.sampled_from([5, 100, -2, -101, 2**31]))
        v = t.values + off if not t.dtype.is_floating_point else t.values * off
        new = T(
            v.to(t.values.dtype) if t.dtype != torch.uint8 else v.clamp(0, 255).to(torch.uint8),
            t.dtype,
            t.layout,
            t.requires_grad,
        )
    else:
        new = draw(st.sampled_from(BAD_VALUES))
    if kind == "a":
        args[slot] = new
    else:
        kwargs[slot] = new
    return Call(call.loss, tuple(args), kwargs, call.seed, call.pre)


def calls(spec: Spec) -> st.SearchStrategy:
    """Valid calls three times in four, mutated ones otherwise."""
    return st.one_of(spec.valid, spec.valid, spec.valid, invalid(spec))


# --------------------------------------------------------------------------------------------
# Deliberate differences (docs/differences.md): each says exactly when a disagreement of the
# given kind is expected.


def _floats_in(call: Call):
    return [t for t in call.tensors() if t.dtype.is_floating_point]


def _rounded(t: T) -> torch.Tensor:
    """The values of ``t`` as its dtype holds them (float64 for comparisons)."""
    v = t.values.to(t.dtype)
    return v.double() if v.is_floating_point() else v


def _has_half(call: Call) -> bool:
    return any(t.dtype in (torch.float16, torch.bfloat16) for t in _floats_in(call))


def _tensor_arg(call: Call, i: int):
    a = call.args[i] if i < len(call.args) else None
    return a if isinstance(a, T) else None


def half_where_torch_has_no_cpu_kernel(call: Call, kind: str, torch_exc, ours_exc) -> bool:
    """MultiMargin, MultiLabelMargin and CTC in float16/bfloat16 on the CPU: torch's kernels raise,
    torchloss computes in float32 (differences.md: 'float16/bfloat16 for the two hinge losses',
    'CTC: float16/bfloat16 on the CPU')."""
    return (
        call.loss in ("multi_margin_loss", "multilabel_margin_loss", "ctc_loss")
        and _has_half(call)
        and (
            kind == "torch-refuses"
            # torch checks the dtype first: a half call that is bad in another way too
            or (kind == "exception-type" and isinstance(torch_exc, NotImplementedError))
        )
    )


def ctc_torch_unsafe(call: Call) -> bool:
    """CTC calls torch's CPU kernel cannot take safely (out-of-range labels: out-of-bounds reads;
    non-contiguous targets: a segfault was observed): torch is not called, torchloss must not
    crash (differences.md, CTC)."""
    if call.loss != "ctc_loss":
        return False
    tg = _tensor_arg(call, 1)
    lp = _tensor_arg(call, 0)
    if tg is None or lp is None:
        return False
    if tg.layout != "contiguous" or tg.dtype.is_floating_point or tg.dtype.is_complex or tg.dtype == torch.bool:
        return True
    C = lp.shape[-1] if lp.shape else 0
    v = tg.values
    return bool(v.numel() and ((v < 0) | (v >= C)).any())


def margin_empty_reduction(call: Call, kind: str, torch_exc, ours_exc) -> bool:
    """MultiMargin/MultiLabelMargin with N = 0 and 'mean'/'sum': torch returns uninitialised
    memory (differences.md, 'Empty batch')."""
    x = _tensor_arg(call, 0)
    return (
        kind.startswith(("value", "nonfinite"))
        and call.loss in ("multi_margin_loss", "multilabel_margin_loss")
        and x is not None
        and 0 in x.shape
    )


def margin_dtype_check_on_empty(call: Call, kind: str, torch_exc, ours_exc) -> bool:
    """torch skips its dtype checks for an empty input of the hinge losses; torchloss raises the
    error of a non-empty one (differences.md, 'Dtype checks also apply to empty inputs')."""
    x = _tensor_arg(call, 0)
    return (
        # (or torch raises another error first: a complex output that requires grad)
        kind in ("torch-accepts", "exception-type")
        and call.loss in ("multi_margin_loss", "multilabel_margin_loss")
        and x is not None
        and 0 in x.shape
    )


def complex_refused(call: Call, kind: str, torch_exc, ours_exc) -> bool:
    """A complex operand where torch returns a complex "loss" (soft margin, BCE with logits,
    multilabel soft margin; mse with a weight, through its Python formula, where the unweighted
    call raises): torchloss raises NotImplementedError (differences.md)."""
    return (
        # (torch raises only when the complex "loss" would need a gradient)
        kind in ("torch-accepts", "exception-type")
        and isinstance(ours_exc, NotImplementedError)
        and call.loss in ("soft_margin_loss", "binary_cross_entropy_with_logits", "multilabel_soft_margin_loss",
                          "linear_cross_entropy", "cross_entropy", "mse_loss")
        and (
            any(t.dtype.is_complex for t in call.tensors())
            or any(isinstance(a, complex) for a in list(call.args) + list(call.kwargs.values()))
        )
    )


def soft_margin_no_overflow(call: Call, kind: str, torch_exc, ours_exc) -> bool:
    """soft_margin_loss where ``-y*x`` is large: torch overflows to inf/NaN, torchloss is finite
    (differences.md, 'SoftMarginLoss does not overflow')."""
    return call.loss == "soft_margin_loss" and kind.startswith(("nonfinite", "value", "grad"))


def bce_logits_no_cancellation(call: Call, kind: str, torch_exc, ours_exc) -> bool:
    """binary_cross_entropy_with_logits with a large ``|x|``: torch's float64 result (our
    reference) cancels, torchloss's does not (differences.md, 'no cancellation')."""
    x = _tensor_arg(call, 0)
    return (
        call.loss == "binary_cross_entropy_with_logits"
        and kind.startswith(("value", "grad", "nonfinite"))
        and x is not None
        and bool((_rounded(x).abs() > 30).any())
    )


def poisson_full_target_gradient(call: Call, kind: str, torch_exc, ours_exc) -> bool:
    """poisson_nll_loss(full=True): torch's target gradient is NaN at targets <= 0, torchloss's
    finite (differences.md)."""
    y = _tensor_arg(call, 1)
    return (
        call.loss == "poisson_nll_loss"
        and call.kwargs.get("full") is True
        and kind.startswith("grad-nonfinite")
        and y is not None
        and bool((_rounded(y) <= 0).any())
    )


def cosine_half_or_overflow(call: Call, kind: str, torch_exc, ours_exc) -> bool:
    """cosine_embedding_loss: a float16 zero vector (torch NaN, torchloss cosine 0) and squared
    norms whose product overflows (torch's cosine becomes 0) (differences.md, Pair)."""
    if call.loss != "cosine_embedding_loss" or not kind.startswith(("nonfinite", "value", "grad")):
        return False
    xs = [t for t in call.tensors()[:2] if t.dtype.is_floating_point]
    half = any(t.dtype == torch.float16 for t in xs) and any(bool((_rounded(t) == 0).any()) for t in xs)
    return half or any(bool((_rounded(t).abs() > 1e9).any()) for t in xs)


def user_distance_in_half(call: Call, kind: str, torch_exc, ours_exc) -> bool:
    """triplet_margin_with_distance_loss with a user ``distance_function`` and a float16/bfloat16
    operand: the user's half-precision distances (which overflow or lose precision) dominate,
    and torchloss's node rounds exactly where torch's expression does (differences.md, Triplet)."""
    return (
        call.loss == "triplet_margin_with_distance_loss"
        and call.kwargs.get("distance_function") is not None
        and _has_half(call)
        and kind.replace("grad-", "").startswith(("nonfinite", "value", "grad"))
    )


def linear_bias_dtype_by_layout(call: Call, kind: str, torch_exc, ours_exc) -> bool:
    """linear_cross_entropy with an unbatched ``(in,)`` input and a ``linear_bias`` of another
    dtype: torch's ``F.linear`` takes ``matmul`` + in-place ``add_`` (which casts the bias) when
    the input or the bias is not contiguous, and ``addmm`` (which refuses the mix) when both are;
    torchloss refuses the mix whatever the layout (differences.md, linear cross entropy)."""
    b = call.kwargs.get("linear_bias")
    x = _tensor_arg(call, 0)
    return (
        call.loss == "linear_cross_entropy"
        and (kind == "torch-accepts" or (kind == "exception-type" and "(linear_bias and linear_weight)" in str(ours_exc)))
        and isinstance(b, T)
        and x is not None
        and x.values.dim() == 1
        and b.dtype != x.dtype
    )


def linear_expanded_leaf_cancellation(call: Call, kind: str, torch_exc, ours_exc) -> bool:
    """linear_cross_entropy with an expanded operand, in float16/bfloat16 or float64: equal
    classes (an expanded weight) or an expanded leaf make a gradient a sum that cancels to about
    0 (autograd sums an expanded leaf's gradient in its dtype, after torchloss rounded each
    element), which shows the roundings of its terms. In float16/bfloat16 torch's
    cruder roundings sometimes cancel better by chance (over 300 random such calls torchloss's
    error averaged a third of torch's, and was larger in 48); in float64 the reference is torch
    itself (no more precise), so any other rounding counts as an error (the exact gradient of
    the fuzzer's case was 0: torchloss 2.98e-8, torch 3.35e-8)."""
    dts = {t.dtype for t in _floats_in(call)}
    return (
        call.loss == "linear_cross_entropy"
        and kind == "grad"
        and (_has_half(call) or dts == {torch.float64})
        and any(t.layout.startswith("expanded") for t in call.tensors())
    )


DELIBERATE: list[Callable] = [
    linear_bias_dtype_by_layout,
    linear_expanded_leaf_cancellation,
    half_where_torch_has_no_cpu_kernel,
    margin_empty_reduction,
    margin_dtype_check_on_empty,
    complex_refused,
    soft_margin_no_overflow,
    bce_logits_no_cancellation,
    poisson_full_target_gradient,
    cosine_half_or_overflow,
    user_distance_in_half,
]


def logsigmoid_difference_no_cancellation(call: Call, kind: str, torch_exc, ours_exc) -> bool:
    """multilabel_soft_margin_loss's target gradient ``-w (log σ(x) - log σ(-x)) / C = -w x / C``:
    torch evaluates the difference of the two logs, which cancels to 0 for tiny ``|x|`` even in
    float64 (our reference); torchloss's is ``x`` itself (differences.md, MultiLabelSoftMargin)."""
    x = _tensor_arg(call, 0)
    return (
        call.loss == "multilabel_soft_margin_loss"
        and kind == "grad"
        and x is not None
        and bool(((_rounded(x).abs() < 1e-7) & (_rounded(x) != 0)).any())
    )


def empty_reduction_gradient(call: Call, kind: str, torch_exc, ours_exc) -> bool:
    """A loss whose operands broadcast to an empty shape: the gradient of an empty sum or mean is
    0 for every operand, also where an operand is NaN (torch: NaN there, from ``0 * NaN``)
    (differences.md, All losses)."""
    if not kind.startswith("grad-nonfinite"):
        return False
    shapes_ = [t.shape for t in call.tensors() if t.dtype.is_floating_point]
    try:
        return math.prod(torch.broadcast_shapes(*shapes_)) == 0
    except RuntimeError:
        return any(math.prod(s) == 0 for s in shapes_)


def integer_target_wraparound(call: Call, kind: str, torch_exc, ours_exc) -> bool:
    """An integer target of multilabel_soft_margin_loss for which ``1 - target`` overflows its
    dtype (near the int64 or int32 limits, uint8 above 1): torch's ``1 - target`` wraps around,
    torchloss computes in floating point (differences.md, MultiLabelSoftMargin)."""
    y = _tensor_arg(call, 1)
    if (
        call.loss != "multilabel_soft_margin_loss"
        or not kind.startswith(("value", "grad"))
        or y is None
        or y.dtype.is_floating_point
        or y.dtype.is_complex
        or y.dtype == torch.bool
    ):
        return False
    info, v = torch.iinfo(y.dtype), y.values.double()
    return bool(((1 - v > info.max) | (1 - v < info.min) | (v.abs() >= 2.0**62)).any())


def integer_weight_total_wraparound(call: Call, kind: str, torch_exc, ours_exc) -> bool:
    """Weighted l1/mse/huber with an integer weight whose total ``sum(w)`` overflows its dtype:
    torch sums the weights in their integer dtype (wrapping around), torchloss in the result's
    floating dtype (differences.md, Regression)."""
    w = call.kwargs.get("weight")
    if (
        call.loss not in ("l1_loss", "mse_loss", "huber_loss")
        or not kind.replace("grad-", "").startswith(("value", "grad", "nonfinite"))
        or not isinstance(w, T)
        or w.dtype.is_floating_point
        or w.dtype.is_complex
        or w.dtype == torch.bool
    ):
        return False
    info, v = torch.iinfo(w.dtype), w.values.double()
    total = float(v.sum())
    return total > info.max or total < info.min or bool((v.abs() >= 2.0**52).any())


def torch_undecodable_error_message(call: Call, kind: str, torch_exc, ours_exc) -> bool:
    """nll_loss/cross_entropy with an out-of-range uint8 target of 128 or more (``'none'``):
    torch formats the target as a character into its IndexError message, which is not UTF-8, and
    raises UnicodeDecodeError; torchloss raises the IndexError (differences.md, Classification)."""
    return kind == "exception-type" and isinstance(torch_exc, UnicodeDecodeError) and isinstance(ours_exc, IndexError)


def gaussian_complex_input_float_var(call: Call, kind: str, torch_exc, ours_exc) -> bool:
    """gaussian_nll_loss with a complex input and a Python-float var: torch fails clamping the
    var it broadcast to the complex input (NotImplementedError), torchloss applies the float as a
    constant (differences.md, GaussianNLL precision)."""
    x = _tensor_arg(call, 0)
    return (
        call.loss == "gaussian_nll_loss"
        and kind == "torch-refuses"
        and isinstance(torch_exc, NotImplementedError)
        and x is not None
        and x.dtype.is_complex
        and len(call.args) > 2
        and isinstance(call.args[2], (int, float))
    )


def uint8_pos_weight_wraparound(call: Call, kind: str, torch_exc, ours_exc) -> bool:
    """binary_cross_entropy_with_logits with an integer ``pos_weight`` holding its dtype's
    minimum (0 in uint8, -2**63 in int64, ...): torch's ``pos_weight - 1`` wraps around (to 255,
    to 2**63 - 1), torchloss uses the value minus 1 (differences.md, BCEWithLogits)."""
    pw = call.kwargs.get("pos_weight")
    if (
        call.loss != "binary_cross_entropy_with_logits"
        or not isinstance(pw, T)
        or pw.dtype.is_floating_point
        or pw.dtype.is_complex
        or pw.dtype == torch.bool
        or not kind.startswith(("value", "grad", "nonfinite"))
    ):
        return False
    return bool((pw.values.to(pw.dtype) == torch.iinfo(pw.dtype).min).any())


def complex_half_reduction(call: Call, kind: str, torch_exc, ours_exc) -> bool:
    """A loss whose result is complex32 (a complex operand beside float16 ones) with
    ``'mean'``/``'sum'``: torch's CPU has no sum for ComplexHalf (NotImplementedError),
    torchloss reduces in complex64 and rounds once (differences.md, Likelihoods)."""
    return (
        call.loss in ("poisson_nll_loss", "gaussian_nll_loss", "l1_loss", "mse_loss", "huber_loss", "smooth_l1_loss")
        and kind == "torch-refuses"
        and isinstance(torch_exc, NotImplementedError)
        and "ComplexHalf" in str(torch_exc)
    )


def poisson_integer_operand_in_float32(call: Call, kind: str, torch_exc, ours_exc) -> bool:
    """poisson_nll_loss with an integer input (or, with ``full=True``, an integer target): torch
    takes ``exp``/``log`` of the integer tensor in the default dtype (float32) and rounds there,
    also beside float64 operands; torchloss computes in the result's dtype (differences.md,
    PoissonNLL)."""

    def integral(t):
        return t is not None and not t.dtype.is_floating_point and not t.dtype.is_complex

    return (
        call.loss == "poisson_nll_loss"
        and kind.replace("grad-", "").startswith(("value", "grad", "nonfinite"))
        and (integral(_tensor_arg(call, 0)) or (call.kwargs.get("full") is True and integral(_tensor_arg(call, 1))))
    )


def triplet_norm_overflow_like_torch(call: Call, kind: str, torch_exc, ours_exc) -> bool:
    """Triplet losses whose distance overflows as torch's does (inf/NaN in both, finite in
    float64): the fused distance ``||x - y + eps||_q`` is torch's own unscaled ``vector_norm``
    (bit-identical distances), so a row whose ``sum |u_k|^q`` exceeds the largest number of the
    dtype it is computed in overflows in both; a user ``distance_function`` is called as given,
    so where it returns a non-finite distance both do (differences.md, Triplet)."""
    if not call.loss.startswith("triplet") or not kind.endswith("nonfinite-as-torch"):
        return False
    ts = [_tensor_arg(call, i) for i in range(3)]
    if any(t is None for t in ts):
        return False
    pairs = [(0, 1), (0, 2)] + ([(1, 2)] if call.kwargs.get("swap") is True else [])
    dist = call.kwargs.get("distance_function")
    try:
        if call.loss == "triplet_margin_with_distance_loss" and dist is not None:
            args, _, _ = call.materialize()
            with torch.no_grad():
                return any(not bool(torch.isfinite(dist(args[i], args[j])).all()) for i, j in pairs)
        fused = call.loss == "triplet_margin_loss"
        q = float(call.kwargs.get("p", 2.0)) if fused else 2.0
        eps = float(call.kwargs.get("eps", 1e-6)) if fused else 1e-6
    except Exception:  # noqa: BLE001 - a bad argument: not this class
        return False
    if not 0 < q < INF:
        return False
    for i, j in pairs:
        x, y = ts[i], ts[j]
        dt = torch.promote_types(x.dtype, y.dtype)
        dt = {torch.complex64: torch.float32, torch.complex128: torch.float64}.get(dt, dt)
        dt = torch.float32 if not dt.is_floating_point or dt in (torch.float16, torch.bfloat16) else dt
        vx, vy = _rounded(x), _rounded(y)
        vx, vy = (vx if vx.is_complex() else vx.double()), (vy if vy.is_complex() else vy.double())
        u = (vx - vy) + eps
        s = u.abs().pow(q).reshape(-1, u.shape[-1] if u.dim() else 1).sum(-1)
        if bool((s >= torch.finfo(dt).max).any()):
            return True
    return False


def _triplet_z(call: Call, dtype=None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(z, m + d(a, p) + delta)`` per row: the hinge argument ``(margin + d(a, p)) - delta`` as
    torch forms it (its distances, in the call's dtypes, or with ``dtype`` floating operands in
    that dtype), and the magnitude it is the difference of."""
    args, kwargs, _ = call.materialize(dtype)
    a, p, n = (t.detach() for t in args[:3])
    dist = kwargs.get("distance_function")
    if dist is None:
        q = float(kwargs.get("p", 2.0)) if call.loss == "triplet_margin_loss" else 2.0
        eps = float(kwargs.get("eps", 1e-6)) if call.loss == "triplet_margin_loss" else 1e-6

        def dist(x, y):
            return torch.nn.functional.pairwise_distance(x, y, q, eps)

    margin = kwargs.get("margin", 1.0)
    margin = margin.detach() if isinstance(margin, torch.Tensor) else float(margin)
    with torch.no_grad():
        delta = dist(a, n)
        if kwargs.get("swap") is True:
            delta = torch.minimum(delta, dist(p, n))
        d_pos = dist(a, p)
        return (margin + d_pos) - delta, (abs(margin) + d_pos.abs()) + delta.abs()


def _triplet_swap_tie(call: Call) -> bool:
    """With ``swap``: a row whose ``d(a, n)`` and ``d(p, n)`` are equal to within the rounding
    of the coarser of the two (in the dtypes torch computes them): which one the minimum takes is
    decided by rounding (torchloss computes a half-precision distance in float32, torch in half)."""
    if call.kwargs.get("swap") is not True or call.kwargs.get("distance_function") is not None:
        return False
    q = float(call.kwargs.get("p", 2.0)) if call.loss == "triplet_margin_loss" else 2.0
    e = float(call.kwargs.get("eps", 1e-6)) if call.loss == "triplet_margin_loss" else 1e-6
    dists = []
    for dtype in (None, F64):
        args, _, _ = call.materialize(dtype)
        a, p, n = (t.detach() for t in args[:3])
        with torch.no_grad():
            dists.append((torch.nn.functional.pairwise_distance(a, n, q, e),
                          torch.nn.functional.pairwise_distance(p, n, q, e)))
    (an, pn), (an64, pn64) = dists
    if not (an.dtype.is_floating_point and pn.dtype.is_floating_point):
        return False
    tol = 4 * max(torch.finfo(an.dtype).eps, torch.finfo(pn.dtype).eps)
    return bool(((an64 - pn64).abs() <= tol * (an64.abs() + pn64.abs())).any())


def triplet_hinge_decided_by_rounding(call: Call, kind: str, torch_exc, ours_exc) -> bool:
    """Triplet losses with a row whose hinge argument ``z = (m + d(a, p)) - delta`` is below the
    rounding of its distances in the call's dtype (a difference of two large, nearly equal
    distances: ``|z| <= 4 eps (m + d(a, p) + delta)`` in float64), or that rounding puts on the
    other side of the hinge than float64: torch's and torchloss's values and gradients there are
    rounding noise of the distances (torchloss computes half precision in float32, torch in
    half; for p = 2 the gradient term is ``u·(g/d)``, torch's ``g·(u/d)``: as accurate, not
    always the same last bit), and either may be closer by chance; likewise a swap whose two
    candidate distances tie to within their rounding (:func:`_triplet_swap_tie`) (differences.md,
    Triplet)."""
    if not call.loss.startswith("triplet") or kind not in ("value", "grad"):
        return False
    try:
        (z, _), (z64, size64) = _triplet_z(call), _triplet_z(call, F64)
        if not z.dtype.is_floating_point:
            return False
        # the rounding of the coarsest distance: with mixed dtypes z has the finest one (a
        # bfloat16 d(a, p) beside a float64 d(a, n) gives a float64 z)
        eps = max([torch.finfo(t.dtype).eps for t in call.tensors()[:3] if t.dtype.is_floating_point]
                  + [torch.finfo(z.dtype).eps])
        noise = (z64.abs() <= 4 * eps * size64) | ((z >= 0) != (z64 >= 0))
        return bool(noise.any()) or _triplet_swap_tie(call)
    except Exception:  # noqa: BLE001 - a bad argument: not this class
        return False


def triplet_rows_no_less_accurate(call: Call, kind: str, torch_exc, ours_exc) -> bool:
    """A reduced triplet loss that torch gets closer to float64 than torchloss only because its
    rows' errors cancel in the sum: with ``reduction='none'`` no torchloss row is further from
    float64 than torch's worst row. (With a half pair beside a float64 operand torch rounds that
    pair's distance to half, torchloss computes it in float32: torch's rows are off by up to half
    an ulp of the distance, e.g. +-0.09 at 1185 in float16, and an expanded negative can make two
    of those errors cancel exactly in the mean.) Checked by running both with ``'none'``."""
    if not call.loss.startswith("triplet") or kind != "value" or "size_average" in call.kwargs or "reduce" in call.kwargs:
        return False
    if call.kwargs.get("reduction", "mean") not in ("mean", "sum"):
        return False
    import torch.nn.functional as TF

    import torchloss.functional as F

    rows = Call(call.loss, call.args, {**call.kwargs, "reduction": "none"}, call.seed, call.pre)
    ours = _run(getattr(F, call.loss), rows)
    theirs = _run(getattr(TF, call.loss), rows)
    ref = _run(getattr(TF, call.loss), rows, dtype=F64)
    outs = (ours.out, theirs.out, ref.out)
    if any(not isinstance(o, torch.Tensor) or not o.dtype.is_floating_point for o in outs):
        return False
    o, t, r = (x.detach().double() for x in outs)
    if not (o.shape == t.shape == r.shape) or not bool(r.isfinite().all()):
        return False
    return bool((o - r).abs().max() <= (t - r).abs().max())


def multilabel_margin_decided_by_rounding(call: Call, kind: str, torch_exc, ours_exc) -> bool:
    """multilabel_margin_loss of float32 scores with a (label, non-label) pair that float32's
    ``z = (1 - x_c) + x_i`` puts on the other side of 0 than the exact ``z`` (scores of 1e8 and
    more: equal scores give z = 0 instead of 1): torch and torchloss take the same pairs (torch's
    order of rounding), the float64 reference others, and torch's rounded z's sum can land on the
    reference's value by chance where torchloss's exact sum over the float32 pairs does not
    (differences.md, MultiLabelMargin)."""
    x, t = _tensor_arg(call, 0), _tensor_arg(call, 1)
    if (
        call.loss != "multilabel_margin_loss"
        or kind not in ("value", "grad")
        or x is None
        or t is None
        or x.dtype != torch.float32
        or t.dtype.is_floating_point
    ):
        return False
    try:
        args, _, _ = call.materialize()
        x32 = args[0].detach().reshape(-1, args[0].shape[-1] if args[0].dim() else 1)
        tt = args[1].to(torch.int64).reshape(x32.shape)
    except RuntimeError:
        return False
    for row, trow in zip(x32, tt):
        labels = []
        for v in trow.tolist():
            if v < 0:
                break
            labels.append(v)
        if not labels or any(v >= row.numel() for v in labels):
            continue
        others = torch.ones(row.numel(), dtype=torch.bool)
        others[labels] = False
        xi = row[others]
        for c in labels:
            z32 = (1 - row[c]) + xi  # float32, torch's order
            z64 = (1 - row[c].double()) + xi.double()
            if bool(((z32 > 0) != (z64 > 0)).any()):
                return True
    return False


def triplet_integer_with_half(call: Call, kind: str, torch_exc, ours_exc) -> bool:
    """Triplet losses with an integer operand whose values float16/bfloat16 cannot hold, in a
    distance with a half-precision operand: torch subtracts in half precision (rounding the
    integer, or overflowing to inf and a NaN loss), torchloss in float32 (differences.md,
    Triplet, Errors)."""
    if not call.loss.startswith("triplet") or not kind.replace("grad-", "").startswith(("value", "grad", "nonfinite")):
        return False
    ts = [_tensor_arg(call, i) for i in range(3)]
    if any(t is None for t in ts):
        return False
    pairs = [(0, 1), (0, 2)] + ([(1, 2)] if call.kwargs.get("swap") is True else [])
    for i, j in pairs:
        for x, y in ((ts[i], ts[j]), (ts[j], ts[i])):
            if x.dtype.is_floating_point or x.dtype.is_complex or y.dtype not in (torch.float16, torch.bfloat16):
                continue
            v = x.values.double()
            if bool((v.to(y.dtype).double() != v).any()):
                return True
    return False


def weighted_mean_float64_ill_conditioned(call: Call, kind: str, torch_exc, ours_exc) -> bool:
    """l1/mse weighted ``'mean'`` in float64 with a tiny total weight ``W``: the weight gradient
    ``(φ - L)/W`` magnifies the rounding of ``L`` by ``1/W`` in torch's float64 evaluation (the
    reference itself) as in torchloss's, which round differently (a single element: torchloss's
    exact 0, torch's ``1e14``); float32 and half calls are computed in float64 and judged
    (differences.md, Regression)."""
    w = call.kwargs.get("weight")
    if call.loss not in ("l1_loss", "mse_loss") or not isinstance(w, T) or kind != "grad":
        return False
    # (calls without a float64 operand too: torchloss computes this gradient in float64, whose
    # noise is the reference's, 2^47 at W = 1e-30, of either sign; torch's float32 evaluation is
    # float32 noise or, for one element, an exact 0 by luck: w|d|/w == |d|)
    return float(_rounded(w).double().sum().abs()) < 1e-6


def weighted_mse_integer_operands(call: Call, kind: str, torch_exc, ours_exc) -> bool:
    """mse_loss with a weight whose input and target are both integer (or bool) tensors: torch's
    weighted Python formula computes them (a default-dtype mean), where the same call without a
    weight raises NotImplementedError in its kernel ("mse_cpu" not implemented for 'Long');
    torchloss refuses both (differences.md, Regression)."""
    x, y = _tensor_arg(call, 0), _tensor_arg(call, 1)
    return (
        call.loss == "mse_loss"
        and kind == "torch-accepts"
        and isinstance(ours_exc, NotImplementedError)
        and isinstance(call.kwargs.get("weight"), T)
        and x is not None and y is not None
        and not (x.dtype.is_floating_point or x.dtype.is_complex)
        and not (y.dtype.is_floating_point or y.dtype.is_complex)
    )


def kdim3_empty_classes(call: Call, kind: str, torch_exc, ours_exc) -> bool:
    """cross_entropy/nll_loss of a 3-d ``(N, 0, d)`` input (no classes) with a non-empty target:
    torch views the empty input as ``(N, 0, 1, -1)``, gets ``[N, 0, 0, 0]`` and raises
    RuntimeError 'size mismatch'; its 2-d and 4-d forms raise the out-of-bounds IndexError,
    which torchloss raises for all three (differences.md, CrossEntropy)."""
    x = _tensor_arg(call, 0)
    return (
        call.loss in ("cross_entropy", "nll_loss")
        and kind == "exception-type"
        and isinstance(torch_exc, RuntimeError)
        and isinstance(ours_exc, IndexError)
        and "size mismatch" in str(torch_exc)
        and x is not None
        and len(x.shape) == 3
        and x.shape[1] == 0
    )


def ctc_label_equals_blank(call: Call, kind: str, torch_exc, ours_exc) -> bool:
    """CTC targets holding the blank index: invalid (torch's documentation: targets cannot be
    blank), unchecked by torch; the value is undefined and torchloss's eager Python recursions
    (which meet in the middle) count such a path twice (differences.md, CTC)."""
    if call.loss != "ctc_loss" or not kind.replace("grad-", "").startswith(("value", "grad", "nonfinite")):
        return False
    tg = _tensor_arg(call, 1)
    blank = call.kwargs.get("blank", 0)
    return tg is not None and not tg.dtype.is_floating_point and bool((tg.values == blank).any())


def unbatched_one_element_target(call: Call, kind: str, torch_exc, ours_exc) -> bool:
    """cross_entropy (and linear_cross_entropy, whose reference path is it) of an unbatched
    ``(C)`` input with a ``(1,)`` index target and label smoothing: torch's smoothing path fails
    on the shapes (``output with shape [] doesn't match the broadcast shape [1]``) where it
    accepts the call without smoothing; torchloss reads the ``(1,)`` target as the 0-d one
    either way (differences.md, CrossEntropy)."""
    x, t = _tensor_arg(call, 0), _tensor_arg(call, 2 if call.loss == "linear_cross_entropy" else 1)
    return (
        call.loss in ("cross_entropy", "linear_cross_entropy")
        and kind == "torch-refuses"
        and isinstance(torch_exc, RuntimeError)
        and "broadcast shape" in str(torch_exc)
        and x is not None
        and t is not None
        and len(x.shape) == 1
        and tuple(t.shape) == (1,)
        and not t.dtype.is_floating_point
    )


def nll_empty_kdim_weight_unchecked(call: Call, kind: str, torch_exc, ours_exc) -> bool:
    """nll_loss/cross_entropy of an empty ``(0, C, 0)`` input with a class weight of the wrong
    shape: torch's 1-d spatial path returns without checking the weight; torchloss checks it
    (differences.md, NLLLoss)."""
    x = _tensor_arg(call, 0)
    return (
        call.loss in ("nll_loss", "cross_entropy")
        and kind == "torch-accepts"
        and isinstance(ours_exc, RuntimeError)
        and "weight tensor should be defined" in str(ours_exc)
        and x is not None
        and len(x.shape) == 3
        and x.shape[0] == 0
    )


DELIBERATE += [
    weighted_mse_integer_operands,
    kdim3_empty_classes,
    integer_weight_total_wraparound,
    ctc_label_equals_blank,
    nll_empty_kdim_weight_unchecked,
    unbatched_one_element_target,
    weighted_mean_float64_ill_conditioned,
    triplet_hinge_decided_by_rounding,
    triplet_rows_no_less_accurate,
    multilabel_margin_decided_by_rounding,
    triplet_integer_with_half,
    triplet_norm_overflow_like_torch,
    poisson_integer_operand_in_float32,
    complex_half_reduction,
    uint8_pos_weight_wraparound,
    gaussian_complex_input_float_var,
    logsigmoid_difference_no_cancellation,
    empty_reduction_gradient,
    integer_target_wraparound,
    torch_undecodable_error_message,
]


# Known disagreements being fixed elsewhere (issue 17, point 1, another helper): excused so the
# fuzzer keeps finding *other* classes; remove each one when its fix lands.
# Losses for which the two predicates below no longer apply (issue 17 point 3: fuzzed clean
# without them): their disagreements of these kinds are reported.
_CHECKED_STRICTLY = (
    "l1_loss", "mse_loss", "smooth_l1_loss", "huber_loss", "margin_ranking_loss", "hinge_embedding_loss",
    "cosine_embedding_loss", "triplet_margin_loss", "triplet_margin_with_distance_loss",
)


def mixed_precision_operands(call: Call, kind: str, torch_exc, ours_exc) -> bool:
    """(pending) Operands of different floating dtypes (a 0-d float64 target of a float32 input,
    float16 weights, ...): torchloss computes some of them at the lower precision, torch at the
    promoted one."""
    if call.loss in _CHECKED_STRICTLY:
        return False
    dts = {t.dtype for t in _floats_in(call)}
    return len(dts) > 1 and kind in ("value", "grad")


def _computed_below_float64(call: Call) -> bool:
    """Whether torch computes the call in a dtype narrower than float64: no float64/complex128
    operand (then torch's own result in that dtype overflows where the float64 reference does
    not, as ``exp(85)`` times 85 in float32, or CTC's sums of huge float32 log-probabilities)."""
    dts = [t.dtype for t in call.tensors() if t.dtype.is_floating_point or t.dtype.is_complex]
    return bool(dts) and all(d not in (torch.float64, torch.complex128) for d in dts)


def overflow_like_torch(call: Call, kind: str, torch_exc, ours_exc) -> bool:
    """Intermediate overflow in the call's dtype, NaN/inf in torch too but finite in float64:
    float16/bfloat16 results (a weight gradient ``l/sum(w)`` with tiny weights, ...), or operands
    of magnitude 1e18 and more in float32 (``(1e30)**2 * -0.0``), or any call without a
    float64/complex128 operand (``exp(85)`` in float32). torchloss computes in the
    dtype torch does and overflows where torch does: not a difference from torch (the project's
    rule is no NaN/inf where torch is finite), only from the float64 reference."""
    if not kind.endswith("nonfinite-as-torch"):
        return False
    if _computed_below_float64(call):
        return True
    huge = any(bool((_rounded(t).abs() >= 1e18).any()) for t in _floats_in(call) if t.dtype != torch.float64)
    # (an int64 operand of 1e18 and more promotes to a float32 that overflows the same way)
    huge = huge or any(
        bool((t.values.double().abs() >= 1e18).any())
        for t in call.tensors()
        if t.dtype == torch.int64 and any(f.dtype != torch.float64 for f in _floats_in(call))
    )
    return _has_half(call) or huge


PENDING: list[Callable] = [
    mixed_precision_operands,
]
DELIBERATE.append(overflow_like_torch)


def excused(call: Call, kind: str, torch_exc=None, ours_exc=None, pending: bool = True) -> str | None:
    """The name of the deliberate difference (or, with ``pending``, the known disagreement being
    fixed elsewhere) that covers this disagreement, if any."""
    for p in DELIBERATE + (PENDING if pending else []):
        if p(call, kind, torch_exc, ours_exc):
            return p.__name__
    return None


# --------------------------------------------------------------------------------------------
# Running and judging one call


@dataclass
class Outcome:
    out: Any = None
    exc: BaseException | None = None
    grads: list | None = None
    grad_exc: BaseException | None = None
    args: list | None = None  # the tensors the function was given (to check they are unchanged)


def _run(fn, call: Call, dtype=None, upstream_seed=0) -> Outcome:
    try:
        args, kwargs, leaves = call.materialize(dtype)
    except Exception as e:  # noqa: BLE001 - the pre-step (CTC's log_softmax) on a bad argument
        return Outcome(exc=e)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            out = fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001
            return Outcome(exc=e)
        o = Outcome(out=out, args=[a for a in list(args) + list(kwargs.values()) if isinstance(a, torch.Tensor)])
        if isinstance(out, torch.Tensor) and out.requires_grad and leaves:
            g = torch.Generator().manual_seed(upstream_seed)
            up = torch.randn(out.shape, generator=g, dtype=F64).to(out.dtype)
            try:
                o.grads = list(torch.autograd.grad(out, leaves, up, allow_unused=True))
                o.grads = [torch.zeros_like(l) if gr is None else gr for gr, l in zip(o.grads, leaves)]
            except Exception as e:  # noqa: BLE001
                o.grad_exc = e
    return o


def _eps(dtype) -> float:
    return torch.finfo(dtype).eps if dtype.is_floating_point else 0.0


def _slack(dtype) -> float:
    return 16 * _eps(dtype)


def _judge(what: str, ours, theirs, ref, problems: list, scale: float = 0.0, upstream=None):
    """Append ``(kind, text)`` to ``problems`` if ``ours`` is worse than ``theirs`` against ``ref``.

    ``scale`` is the magnitude of the call's other results (the value and every gradient): a
    result that cancels to about 0 is allowed an error of a few ulps of it."""
    if not isinstance(ours, torch.Tensor) or not isinstance(theirs, torch.Tensor):
        if type(ours) is not type(theirs):
            problems.append(("type", f"{what}: torchloss {type(ours).__name__}, torch {type(theirs).__name__}"))
        return
    if ours.dtype != theirs.dtype:
        problems.append(("dtype", f"{what}: torchloss {ours.dtype}, torch {theirs.dtype}"))
        return
    if ours.shape != theirs.shape:
        problems.append(("shape", f"{what}: torchloss {list(ours.shape)}, torch {list(theirs.shape)}"))
        return
    if ours.numel() == 0 or ours.is_complex() or not ours.dtype.is_floating_point:
        if not ours.dtype.is_floating_point and not ours.is_complex() and not torch.equal(ours, theirs):
            problems.append(("value", f"{what}: integer results differ"))
        return
    o, t = ours.detach().double(), theirs.detach().double()
    prefix = "grad-" if what != "value" else ""
    if ref is None or not isinstance(ref, torch.Tensor) or ref.shape != ours.shape or ref.is_complex():
        tol = _slack(ours.dtype) * 64
        ok = torch.isclose(
            o, t, rtol=tol, atol=tol * float(t[t.isfinite()].abs().max()) if t.isfinite().any() else tol, equal_nan=True
        )
        if not bool(ok.all()):
            problems.append(
                (
                    prefix + "value" if not prefix else "grad",
                    f"{what}: max |torchloss - torch| = {float((o - t).abs().nan_to_num(INF).max()):.3g} (no float64 reference)",
                )
            )
        return
    r = ref.detach().double()
    rr = r.to(ours.dtype).double()  # the reference rounded to the result's dtype (overflows to inf)
    bad_nf = ~o.isfinite() & r.isfinite() & rr.isfinite()
    # where the reference is NaN/inf, torchloss must agree with it unless torch (same dtype) does not
    # where the reference is NaN/inf, torchloss must be too, unless torch (same dtype) is not
    bad_nf |= ~r.isfinite() & o.isfinite() & ~t.isfinite()
    if bool(bad_nf.any()):
        i = int(bad_nf.flatten().nonzero()[0])
        as_torch = not bool(t.flatten()[i].isfinite())
        problems.append(
            (
                prefix + ("nonfinite-as-torch" if as_torch else "nonfinite"),
                f"{what}: torchloss {o.flatten()[i].item()}, torch {t.flatten()[i].item()}, float64 {r.flatten()[i].item()} at flat index {i}",
            )
        )
        return
    fin = r.isfinite() & rr.isfinite()
    if not bool(fin.any()):
        return
    err_o = torch.where(fin, (o - r).abs(), 0.0).nan_to_num(INF)
    err_t = torch.where(fin, (t - r).abs(), 0.0).nan_to_num(INF)
    scale = max(scale, float(r[fin].abs().max()))
    s = _slack(ours.dtype)
    if upstream is not None and upstream.is_floating_point and _eps(upstream) > _eps(ours.dtype):
        # a gradient is the upstream gradient (in the result's dtype, rounded there, while the
        # reference's is float64) times the rest: no more precise than that dtype
        s = _slack(upstream)
    # (a floor of s * 1e-6: a result that is 0 up to rounding in a half-precision computation)
    limit = err_t + s * r.abs() + s * max(scale, 1e-6)
    if ours.dtype == torch.float64:
        # torch's float64 result is the reference itself: any other evaluation order "loses" to
        # it, so float64 is held to the case table's float64 tolerance instead (rtol 1e-7, atol
        # 1e-10: rounding noise of O(1) intermediates in a result that cancels to ~0)
        limit = torch.maximum(limit, 1e-10 + 1e-7 * r.abs())
    worse = fin & (err_o > limit)
    if bool(worse.any()):
        i = int(worse.flatten().nonzero()[0])
        problems.append(
            (
                "grad" if prefix else "value",
                f"{what}: torchloss {o.flatten()[i].item()!r}, torch {t.flatten()[i].item()!r}, float64 {r.flatten()[i].item()!r} at flat index {i}",
            )
        )


@dataclass
class Disagreement:
    call: Call
    kind: str
    detail: str

    def __str__(self) -> str:
        return f"[{self.kind}] {self.call!r}: {self.detail}"


def _mutated(call: Call, outcome: Outcome) -> bool:
    """Whether the function changed one of the tensors it was given (compared with fresh ones)."""
    if outcome.args is None:
        return False
    args, kwargs, _ = call.materialize()
    fresh = [a for a in list(args) + list(kwargs.values()) if isinstance(a, torch.Tensor)]

    def same(a, b):
        if a.shape != b.shape or a.dtype != b.dtype:
            return False
        a, b = a.detach(), b.detach()
        if a.is_complex():
            a, b = torch.view_as_real(a.resolve_conj()), torch.view_as_real(b.resolve_conj())
        if a.is_floating_point():
            return bool(((a == b) | (a.isnan() & b.isnan())).all())
        return torch.equal(a, b)

    return not all(same(a, b) for a, b in zip(outcome.args, fresh))


def compare(call: Call) -> list[Disagreement]:
    """Every unexcused disagreement between torchloss and torch on ``call``."""
    import torch.nn.functional as TF

    import torchloss.functional as F

    spec = SPECS.get(call.loss)
    if spec is not None and spec.fns is not None:
        ours_fn, torch_fn = spec.fns()
    else:
        ours_fn, torch_fn = getattr(F, call.loss), getattr(TF, call.loss, None)
    if torch_fn is None:  # a torch without this loss: nothing to compare with
        return []
    found: list[Disagreement] = []

    def report(kind, detail, texc=None, oexc=None):
        if excused(call, kind, texc, oexc) is None:
            found.append(Disagreement(call, kind, detail))

    # torchloss first: mutation of its inputs is checked on the very tensors it got
    ours = _run(ours_fn, call, upstream_seed=call.seed)
    if _mutated(call, ours):
        report("mutated-input", "torchloss changed a tensor it was given")
    if ctc_torch_unsafe(call):
        return found  # torch is not called; torchloss did not crash
    theirs = _run(torch_fn, call, upstream_seed=call.seed)
    if theirs.exc is not None or ours.exc is not None:
        te, oe = theirs.exc, ours.exc
        if te is not None and oe is not None:
            if type(te) is not type(oe):
                report(
                    "exception-type",
                    f"torch {type(te).__name__}: {str(te)[:200]!r}; torchloss {type(oe).__name__}: {str(oe)[:200]!r}",
                    te,
                    oe,
                )
        elif te is not None:
            report("torch-refuses", f"torch raises {type(te).__name__}: {str(te)[:200]!r}; torchloss returns", te, None)
        else:
            report("torch-accepts", f"torch returns; torchloss raises {type(oe).__name__}: {str(oe)[:200]!r}", None, oe)
        return found
    ref = _run(torch_fn, call, dtype=F64, upstream_seed=call.seed)
    refs = [ref.out] + list(ref.grads or []) if ref.exc is None else []
    scale = max([_finite_max(r) for r in refs] + [0.0])
    if spec is not None and spec.scale is not None:
        scale = max(scale, spec.scale(call))
    problems: list = []
    # a reduced loss may cancel: allow rounding of the sum of its terms' magnitudes
    vscale = max(scale, _term_scale(torch_fn, call, ours.out))
    _judge("value", ours.out, theirs.out, ref.out if ref.exc is None else None, problems, vscale)
    if not problems:
        if ours.grad_exc is not None and theirs.grad_exc is None:
            problems.append(
                (
                    "backward-refuses",
                    f"torchloss backward raises {type(ours.grad_exc).__name__}: {str(ours.grad_exc)[:200]!r}",
                )
            )
        elif theirs.grad_exc is not None:
            pass  # torch's backward raises (a gradient torch lacks): nothing to compare with
        elif (ours.grads is None) != (theirs.grads is None):
            problems.append(
                (
                    "requires-grad",
                    f"torchloss result requires grad: {ours.grads is not None}, torch: {theirs.grads is not None}",
                )
            )
        elif ours.grads is not None and theirs.grads is not None:
            refg = ref.grads if (ref.exc is None and ref.grads is not None) else [None] * len(ours.grads)
            for i, (go, gt, gr) in enumerate(zip(ours.grads, theirs.grads, refg)):
                _judge(f"grad of leaf {i}", go, gt, gr, problems, scale, upstream=ours.out.dtype)
    for kind, detail in problems:
        report(kind, detail)
    return found


def _term_scale(torch_fn, call: Call, out) -> float:
    """The sum of the magnitudes of a reduced loss's terms (torch's float64 ``'none'`` result)."""
    if not isinstance(out, torch.Tensor) or out.dim() != 0 or call.kwargs.get("reduction") == "none":
        return 0.0
    kwargs = {k: v for k, v in call.kwargs.items() if k not in ("size_average", "reduce")}
    kwargs["reduction"] = "none"
    terms = _run(torch_fn, Call(call.loss, call.args, kwargs, call.seed, call.pre), dtype=F64)
    t = terms.out
    if terms.exc is not None or not isinstance(t, torch.Tensor) or not t.dtype.is_floating_point:
        return 0.0
    t = t.detach().double()
    return float(t[t.isfinite()].abs().sum())


def _finite_max(t) -> float:
    if isinstance(t, torch.Tensor) and t.is_complex():
        t = t.detach().abs()  # (a complex value's magnitude is part of the call's scale too)
    if not isinstance(t, torch.Tensor) or not t.dtype.is_floating_point or t.numel() == 0:
        return 0.0
    t = t.detach().double()
    f = t[t.isfinite()]
    return float(f.abs().max()) if f.numel() else 0.0


# --------------------------------------------------------------------------------------------
# Running under a budget


def check(call: Call) -> None:
    """Raise AssertionError listing the disagreements on ``call`` (for hypothesis tests)."""
    found = compare(call)
    if found:
        raise AssertionError("\n".join(str(d) for d in found))


def _one_round(name: str, examples: int, counts: dict):
    """A hypothesis test of ``examples`` calls of one loss, counting the calls it makes."""
    from hypothesis import HealthCheck, given, settings

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=False,
        suppress_health_check=list(HealthCheck),
        print_blob=False,
        report_multiple_bugs=False,
    )
    @given(calls(SPECS[name]))
    def one(call):
        counts[name] += 1
        check(call)

    return one


def run(budget: float, losses=None, seed: int | None = None, examples: int = 100, out=print) -> dict:
    """Fuzz ``losses`` (default all) round-robin until ``budget`` seconds have passed; returns
    ``{loss: [shrunk failure messages]}``. Each round is one hypothesis run of ``examples`` calls
    per loss with its own seed; a failing run is shrunk and reported, and the loss carries on."""
    from hypothesis import seed as hseed

    names = list(losses or SPECS)
    for n in names:
        if n not in SPECS:
            raise KeyError(n)
    failures: dict[str, list[str]] = {n: [] for n in names}
    start = time.monotonic()
    rnd = 0 if seed is None else seed
    counts = dict.fromkeys(names, 0)
    while time.monotonic() - start < budget:
        for n in names:
            if time.monotonic() - start >= budget:
                break

            one = _one_round(n, examples, counts)
            try:
                hseed(rnd * 1000 + names.index(n))(one)()
            except AssertionError as e:
                msg = str(e).split("\n")
                msg = "\n".join(line for line in msg if line.startswith("["))
                if msg not in failures[n]:
                    failures[n].append(msg)
                    out(f"{n} (seed {rnd}): {msg}")
        rnd += 1
    elapsed = time.monotonic() - start
    total = sum(len(v) for v in failures.values())
    out(f"fuzz: {sum(counts.values())} calls over {len(names)} losses in {elapsed:.0f}s, {total} failure(s)")
    return failures


def main(args) -> int:
    """``python -m torchloss fuzz`` (registered in torchloss/__main__.py)."""
    try:
        failures = run(args.budget, args.loss, args.seed, args.examples)
    except KeyError as e:
        print(f"unknown loss {e}; known: {', '.join(SPECS)}")
        return 2
    return 1 if any(failures.values()) else 0
