"""``python -m torchloss bench``: speed and memory of every loss against torch.nn.functional.

For each loss and size, one *step* is a forward and backward pass,
``torch.autograd.grad(loss(*inputs), differentiable_inputs)``, with the default ``'mean'``
reduction. torchloss and torch are timed in the same process with ``torch.utils.benchmark``, on
the process's intra-op thread count (``torch.get_num_threads()``, what users run with; the
Timer's own default would be 1) or the one ``--threads N`` names, and the report states it with
the CPU's capability (``torch.backends.cpu.get_cpu_capability()``); interleaved: in each round both are timed (``blocked_autorange``), torch first in even rounds and
torchloss first in odd ones, so that drifts of the machine (frequency, other processes, allocator
state) hit both alike. The report gives the median over rounds of each one's median time, the
ratio torchloss/torch, and the spread of the ratio over the rounds.

Memory, per step:

* *saved*: the bytes the autograd graph keeps for backward, measured with
  :func:`torchloss.testing.saved_bytes` (``saved_tensors_hooks``), in total and beyond the call's
  own inputs (what exists only because of the graph);
* *peak*: the highest memory allocated during one step above what was allocated before it:
  ``torch.cuda.max_memory_allocated`` on CUDA, the profiler's memory events
  (``profile_memory=True``) on the CPU.

Sizes: ``small`` (about 32 elements: what a call costs in Python and dispatch) and ``large``
(about 4M elements, memory-bound; cross entropy and NLL at 4096 x 8192). Each loss's inputs are
built by :data:`BENCHMARKS` below, from an explicit shape, so that any shape of the same layout
works.

``--sweep K`` also measures every chosen loss at ``K`` shapes from its small to its large one
(:func:`interpolate_shapes`: each dimension interpolated geometrically, rounded, repeats dropped),
labelled ``sweep-1`` .. ``sweep-K``: a second table, CSV rows, and with ``--plot`` a grid of time
against number of elements (log-log). An end point already measured in the table is reused. Sweep
points are timed more cheaply than the table (``--sweep-rounds``, default 3, and
``--sweep-min-time``, default 0.05 s, each capped by ``--rounds`` / ``--min-time``): each new point
costs about ``2 * rounds * min_time`` (0.3 s) plus building the inputs, one warm-up step each, the
saved-bytes pass and two profiled steps, i.e. well under a second below the large size; with the
table at both sizes, ``--sweep K`` adds ``K - 2`` points per loss, about 8 s per extra size over all
21 losses (measured on 2 cores: ``--sweep 4`` adds about 16 s to the table's 2 minutes).

``--markdown PATH`` writes the report as a Markdown page (:func:`format_markdown`): the machine
(:func:`machine_info`), the table with a *target* column marking the rows that miss one of the
targets (:func:`target_misses`; the targets are stated in :data:`MARKDOWN_INTRO`), the summary,
the sweep table and links to the ``--plot`` images. ``docs/benchmarks.md`` is generated this way.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TextIO

import torch
import torch.nn.functional as TF

from . import functional as F
from .testing import saved_bytes

SIZES = ("small", "large")


@dataclass
class Inputs:
    args: tuple
    kwargs: dict
    wrt: tuple


@dataclass
class Benchmark:
    """How to build one loss's inputs: ``make(shape, device, dtype, gen) -> Inputs``.

    ``name`` is the function's name in ``torchloss.functional`` and ``torch.nn.functional``.
    ``shapes`` maps each size of :data:`SIZES` the row is measured at to its shape (the layout of a
    shape is the maker's: ``(n,)`` for the elementwise losses, ``(N, C)``, ``(N, D)``, or
    ``(T, N, C, S)`` for CTC); any shape of the same layout works, e.g. those of
    :func:`interpolate_shapes`. A *variant* row (``variant``, e.g. ``'label_smoothing=0.1'``) times
    the same function with other arguments or shapes; its row is labelled ``name[variant]``.
    ``targets`` maps a size to this row's own time-ratio limit, where it is stricter than the
    size's (:func:`target_misses`).
    """

    name: str
    make: Callable[[tuple, torch.device, torch.dtype, torch.Generator], Inputs]
    shapes: dict
    variant: str = ""
    targets: dict = dataclasses.field(default_factory=dict)
    # ``() -> (ours, torch's)`` where the pair is not ``F.<name>``/``TF.<name>`` (the adaptive
    # softmax, which torch has only as a module)
    functions: Callable | None = None

    @property
    def label(self) -> str:
        return f"{self.name}[{self.variant}]" if self.variant else self.name


def _rand(gen, *shape, device, dtype, low=-1.0, high=1.0):
    return (torch.rand(shape, generator=gen) * (high - low) + low).to(device, dtype)


def _randn(gen, *shape, device, dtype, scale=1.0):
    return (torch.randn(shape, generator=gen) * scale).to(device, dtype)


def _elementwise(kind: str):
    def make(shape, device, dtype, gen):
        shape = tuple(shape)
        kw = {"device": device, "dtype": dtype}
        x = _randn(gen, *shape, **kw)
        if kind in ("l1_loss", "mse_loss", "smooth_l1_loss", "huber_loss"):
            return Inputs((x, _randn(gen, *shape, **kw)), {}, (0,))
        if kind == "soft_margin_loss":
            return Inputs((x, _randn(gen, *shape, **kw).sign()), {}, (0,))
        if kind == "binary_cross_entropy":
            return Inputs((_rand(gen, *shape, low=0.05, high=0.95, **kw), _rand(gen, *shape, low=0, high=1, **kw)), {}, (0,))
        if kind == "binary_cross_entropy_with_logits":
            return Inputs((x, _rand(gen, *shape, low=0, high=1, **kw)), {}, (0,))
        if kind == "poisson_nll_loss":
            return Inputs((x, _rand(gen, *shape, low=0, high=4, **kw)), {}, (0,))
        if kind == "gaussian_nll_loss":
            return Inputs((x, _randn(gen, *shape, **kw), _rand(gen, *shape, low=0.2, high=2, **kw)), {}, (0, 2))
        if kind == "kl_div":
            return Inputs((x.log_softmax(-1), _randn(gen, *shape, **kw).softmax(-1)), {"reduction": "batchmean"}, (0,))
        if kind in ("margin_ranking_loss",):
            return Inputs((x, _randn(gen, *shape, **kw), _randn(gen, *shape, **kw).sign()), {}, (0, 1))
        if kind == "hinge_embedding_loss":
            return Inputs((x.abs(), _randn(gen, *shape, **kw).sign()), {}, (0,))
        raise KeyError(kind)

    return make


def _classification(kind: str):
    def make(shape, device, dtype, gen):
        N, C = shape
        kw = {"device": device, "dtype": dtype}
        x = _randn(gen, N, C, **kw)
        labels = torch.randint(0, C, (N,), generator=gen).to(device)
        if kind == "nll_loss":
            return Inputs((x.log_softmax(1), labels), {}, (0,))
        if kind in ("cross_entropy", "multi_margin_loss"):
            return Inputs((x, labels), {}, (0,))
        if kind == "multilabel_margin_loss":
            # a few labels per row, then the -1 terminator
            t = torch.randint(0, C, (N, C), generator=gen)
            t[:, 4:] = -1
            return Inputs((x, t.to(device)), {}, (0,))
        if kind == "multilabel_soft_margin_loss":
            return Inputs((x, (_rand(gen, N, C, **kw) > 0).to(dtype)), {}, (0,))
        raise KeyError(kind)

    return make


def _embedding(kind: str):
    def make(shape, device, dtype, gen):
        N, D = shape
        kw = {"device": device, "dtype": dtype}
        a, p, n = (_randn(gen, N, D, **kw) for _ in range(3))
        if kind == "cosine_embedding_loss":
            return Inputs((a, p, _randn(gen, N, **kw).sign()), {}, (0, 1))
        return Inputs((a, p, n), {}, (0, 1, 2))

    return make


def _with_kwargs(make, **extra):
    """``make`` with more keyword arguments for the loss (a variant row)."""

    def wrapped(shape, device, dtype, gen):
        inputs = make(shape, device, dtype, gen)
        return dataclasses.replace(inputs, kwargs={**inputs.kwargs, **extra})

    return wrapped


def _class_weight(make):
    """``make`` with a ``(C,)`` class ``weight`` in [0.5, 1.5) (the classes: the last dimension of
    the shape)."""

    def wrapped(shape, device, dtype, gen):
        inputs = make(shape, device, dtype, gen)
        w = _rand(gen, shape[-1], low=0.5, high=1.5, device=device, dtype=dtype)
        return dataclasses.replace(inputs, kwargs={**inputs.kwargs, "weight": w})

    return wrapped


def _ctc(kind: str):
    def make(shape, device, dtype, gen):
        T, N, C, S = shape
        x = _randn(gen, T, N, C, device=device, dtype=dtype).log_softmax(-1)
        targets = torch.randint(1, C, (N, S), generator=gen).to(device)
        il = torch.full((N,), T, dtype=torch.long, device=device)
        tl = torch.randint(S // 2, S + 1, (N,), generator=gen).to(device)
        return Inputs((x, targets, il, tl), {}, (0,))

    return make


_LARGE_1D = (4 * 1024 * 1024,)
BENCH_SHAPES: dict[str, dict[str, tuple]] = {
    **{
        k: {"small": (32,), "large": _LARGE_1D}
        for k in (
            "l1_loss", "mse_loss", "smooth_l1_loss", "huber_loss", "soft_margin_loss",
            "binary_cross_entropy", "binary_cross_entropy_with_logits", "poisson_nll_loss",
            "gaussian_nll_loss", "margin_ranking_loss", "hinge_embedding_loss",
        )
    },
    "kl_div": {"small": (4, 8), "large": (4096, 1024)},
    "nll_loss": {"small": (32, 10), "large": (4096, 8192)},
    "cross_entropy": {"small": (32, 10), "large": (4096, 8192)},
    "multi_margin_loss": {"small": (32, 10), "large": (4096, 1024)},
    "multilabel_margin_loss": {"small": (32, 10), "large": (4096, 1024)},
    "multilabel_soft_margin_loss": {"small": (32, 10), "large": (4096, 1024)},
    **{
        k: {"small": (32, 16), "large": (4096, 1024)}
        for k in ("cosine_embedding_loss", "triplet_margin_loss", "triplet_margin_with_distance_loss")
    },
    # (T, N, C, S)
    "ctc_loss": {"small": (50, 16, 20, 30), "large": (500, 32, 40, 100)},
}


def _make_for(name: str):
    if name in ("nll_loss", "cross_entropy", "multi_margin_loss", "multilabel_margin_loss", "multilabel_soft_margin_loss"):
        return _classification(name)
    if name in ("cosine_embedding_loss", "triplet_margin_loss", "triplet_margin_with_distance_loss"):
        return _embedding(name)
    if name == "ctc_loss":
        return _ctc(name)
    return _elementwise(name)


# The adaptive softmax (torch: a module only): ``(N, d, n_classes, *cutoffs)``, Zipf-distributed
# targets (P(t) ∝ 1/(t+1): 70% in the shortlist at the large size), div_value 4, no head bias;
# both sides run as flat functions of (input, target, head weight, None, P_1, O_1, ...)
# (torch's: its module on the meta device given these tensors by functional_call).
def _adaptive(shape, device, dtype, gen):
    n, d, n_classes, *cutoffs = shape
    bounds = [*cutoffs, n_classes]
    u = torch.rand(n, generator=gen, dtype=torch.float64)
    target = ((n_classes + 1.0) ** u).floor().long().sub(1).clamp(0, n_classes - 1).to(device)
    tail = []
    for i in range(len(cutoffs)):
        h = int(d // 4.0 ** (i + 1))
        tail += [_randn(gen, h, d, device=device, dtype=dtype, scale=d**-0.5), _randn(gen, bounds[i + 1] - bounds[i], h, device=device, dtype=dtype, scale=h**-0.5)]
    head = _randn(gen, cutoffs[0] + len(cutoffs), d, device=device, dtype=dtype, scale=d**-0.5)
    args = (_randn(gen, n, d, device=device, dtype=dtype), target, head, None, *tail)
    return Inputs(args, {"cutoffs": list(cutoffs)}, (0, 2, *range(4, 4 + len(tail))))


def _adaptive_functions():
    from .testing.cases.adaptive import _ours, _torch

    return _ours, lambda *a, **k: _torch(*a, div_value=4.0, **k)


# CTC's own time targets (issue 15): its torch kernel is slow, so torchloss's must be well ahead
_CTC_TARGETS = {"small": 1.2, "large": 0.6}

# Variant rows: a loss with other arguments (class weights, label smoothing) or at other shapes
# (CTC's large batch and long sequences); each comes right after its loss's main row. To add one:
# Benchmark(name, maker, {size: shape, ...}, variant="what differs"[, targets={size: limit}]).
VARIANTS: list[Benchmark] = [
    Benchmark("nll_loss", _class_weight(_classification("nll_loss")), BENCH_SHAPES["nll_loss"], "weight"),
    Benchmark("cross_entropy", _class_weight(_classification("cross_entropy")), BENCH_SHAPES["cross_entropy"], "weight"),
    Benchmark(
        "cross_entropy", _with_kwargs(_classification("cross_entropy"), label_smoothing=0.1),
        BENCH_SHAPES["cross_entropy"], "label_smoothing=0.1",
    ),
    Benchmark("ctc_loss", _ctc("ctc_loss"), {"large": (200, 256, 60, 50)}, "N=256", {"large": 0.6}),
    Benchmark("ctc_loss", _ctc("ctc_loss"), {"large": (2000, 8, 30, 400)}, "T=2000", {"large": 0.6}),
    Benchmark(
        "adaptive_log_softmax_with_loss", _adaptive,
        {"small": (32, 16, 100, 20, 50), "large": (4096, 512, 50000, 2000, 10000)}, functions=_adaptive_functions,
    ),
]



# Linear cross entropy (issue 13): ``(N, in, C)``, logits of scale ~1. The main row in the bench
# dtype; a bfloat16 row (target: 5x faster than torch's reference path where that path's bfloat16
# products are emulated, as on an AVX2 CPU; where the CPU multiplies bfloat16 natively torch's
# time is the three bfloat16 products torchloss runs too, and the row's target is torch's time,
# see _BF16_TARGET); rows against torch's
# chunked path (``options=LinearCrossEntropyOptions(batch_chunk_size=B)``, B = N is one chunk).
def _linear(dtype=None):
    def make(shape, device, dt, gen):
        N, K, C = shape
        kw = {"device": device, "dtype": dtype or dt}
        x, w = _randn(gen, N, K, **kw), _randn(gen, C, K, scale=K**-0.5, **kw)
        return Inputs((x, w, torch.randint(0, C, (N,), generator=gen).to(device)), {}, (0, 1))

    return make


def _linear_chunked(chunk):
    def functions():
        options = torch.nn.LinearCrossEntropyOptions(batch_chunk_size=chunk)
        return F.linear_cross_entropy, lambda *a, **k: TF.linear_cross_entropy(*a, options=options, **k)

    return functions


_LCE_SHAPES = {"small": (32, 16, 100), "large": (4096, 512, 32768)}


def _bf16_target() -> float:
    from ._autograd.linear import native_half_products

    return 1.0 if native_half_products(torch.bfloat16) else 0.2


_BF16_TARGET = _bf16_target()
if hasattr(TF, "linear_cross_entropy"):
    VARIANTS += [
        Benchmark("linear_cross_entropy", _linear(), _LCE_SHAPES, targets={"large": 1.0}),
        Benchmark("linear_cross_entropy", _linear(torch.bfloat16), {"small": (32, 16, 100), "large": (2048, 128, 16000)},
                  "bfloat16", {"large": _BF16_TARGET}),
        *(Benchmark("linear_cross_entropy", _linear(), {"large": _LCE_SHAPES["large"]}, f"vs chunked B={b}", {"large": 1.0},
                    functions=_linear_chunked(b)) for b in (256, 1024)),
    ]

def _registry() -> list[Benchmark]:
    main = [Benchmark(n, _make_for(n), s, targets=_CTC_TARGETS if n == "ctc_loss" else {}) for n, s in BENCH_SHAPES.items()]
    out = []
    for b in main:
        out.append(b)
        out.extend(v for v in VARIANTS if v.name == b.name)
    return out + [v for v in VARIANTS if v.name not in BENCH_SHAPES]


BENCHMARKS: list[Benchmark] = _registry()


def interpolate_shapes(small: Sequence[int], large: Sequence[int], k: int) -> list[tuple[int, ...]]:
    """``k`` shapes from ``small`` to ``large``, both included, for a time-vs-size sweep.

    Point ``j`` of ``0 .. k-1`` takes every dimension at ``small[i] * (large[i] / small[i]) ** (j / (k-1))``
    (geometric interpolation: evenly spaced on a log scale), rounded to an int; the end points are
    ``small`` and ``large`` exactly. Shapes that come out equal after rounding are kept once, so
    fewer than ``k`` may come back (e.g. ``k`` beyond the range of a small dimension).
    """
    small, large = tuple(int(d) for d in small), tuple(int(d) for d in large)
    if len(small) != len(large):
        raise ValueError(f"shapes of different lengths: {small} and {large}")
    if any(d < 1 for d in small + large):
        raise ValueError(f"dimensions must be positive: {small} and {large}")
    if k < 2:
        raise ValueError(f"a sweep needs at least 2 points (k={k})")
    shapes: list[tuple[int, ...]] = []
    for j in range(k):
        if j == 0:
            shape = small
        elif j == k - 1:
            shape = large
        else:
            t = j / (k - 1)
            shape = tuple(
                min(max(round(math.exp((1 - t) * math.log(a) + t * math.log(b))), min(a, b)), max(a, b))
                for a, b in zip(small, large)
            )
        if shape not in shapes:
            shapes.append(shape)
    return shapes


# --------------------------------------------------------------------------------------------
# Measuring


def _step(fn, inputs: Inputs):
    args = list(inputs.args)
    leaves = []
    for i in inputs.wrt:
        args[i] = args[i].detach().requires_grad_()
        leaves.append(args[i])

    def step():
        return torch.autograd.grad(fn(*args, **inputs.kwargs), leaves)

    return step


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_bytes(step: Callable[[], object], device: torch.device) -> int:
    """Highest memory allocated during ``step()`` above what was allocated before it."""
    if device.type == "cuda":
        _sync(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        out = step()
        _sync(device)
        del out
        return torch.cuda.max_memory_allocated(device) - base
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = step()
        del out
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events.sort(key=lambda e: e.start_ns())
    current = top = 0
    for e in events:
        current += e.nbytes()
        top = max(top, current)
    return top


@dataclass
class Result:
    loss: str
    size: str
    shape: tuple
    device: str
    dtype: str
    torch_s: float
    ours_s: float
    spread: float  # (max - min) / median of the per-round ratios
    saved_total: tuple[int, int]  # (ours, torch)
    saved_extra: tuple[int, int]
    peak: tuple[int, int]
    target: float | None = None  # this row's own time-ratio limit (Benchmark.targets), if any

    @property
    def name(self) -> str:
        """The function's name (``loss`` without a variant's ``[...]``)."""
        return self.loss.split("[", 1)[0]

    @property
    def ratio(self) -> float:
        return self.ours_s / self.torch_s

    @property
    def elements(self) -> int:
        """Elements of the first input (the x axis of the sweep plots)."""
        return math.prod(self.shape)


def run_one(
    bench: Benchmark,
    size: str,
    device: str,
    dtype: torch.dtype,
    rounds: int,
    min_time: float,
    shape: tuple | None = None,
    threads: int | None = None,
) -> Result:
    """Measure one loss at one shape: ``bench.shapes[size]``, or ``shape`` when given (``size`` is
    then only the label of the result, e.g. ``'sweep-2'``). The timers run on ``threads`` intra-op
    threads (default: the process's, ``torch.get_num_threads()``; ``torch.utils.benchmark``'s
    own default would be 1)."""
    from torch.utils import benchmark as tb

    threads = torch.get_num_threads() if threads is None else threads

    dev = torch.device(device)
    shape = tuple(bench.shapes[size]) if shape is None else tuple(shape)
    inputs = bench.make(shape, dev, dtype, torch.Generator().manual_seed(0))
    ours, theirs = bench.functions() if bench.functions else (getattr(F, bench.name), getattr(TF, bench.name))
    steps = {"ours": _step(ours, inputs), "torch": _step(theirs, inputs)}
    for s in steps.values():  # warm up (allocator, lazy initialisation)
        s()
    times: dict[str, list[float]] = {"ours": [], "torch": []}
    for r in range(rounds):
        order = ("torch", "ours") if r % 2 == 0 else ("ours", "torch")
        for who in order:
            timer = tb.Timer("step()", globals={"step": steps[who]}, num_threads=threads)
            times[who].append(timer.blocked_autorange(min_run_time=min_time).median)
    ratios = [o / t for o, t in zip(times["ours"], times["torch"])]
    med_ratio = statistics.median(ratios)
    spread = (max(ratios) - min(ratios)) / med_ratio if med_ratio else float("nan")
    s_ours = saved_bytes(ours, inputs.args, inputs.kwargs, inputs.wrt)
    s_torch = saved_bytes(theirs, inputs.args, inputs.kwargs, inputs.wrt)
    peak = (peak_bytes(steps["ours"], dev), peak_bytes(steps["torch"], dev))
    return Result(
        bench.label,
        size,
        tuple(inputs.args[0].shape),
        device,
        str(dtype).replace("torch.", ""),
        statistics.median(times["torch"]),
        statistics.median(times["ours"]),
        spread,
        (s_ours.total, s_torch.total),
        (s_ours.extra, s_torch.extra),
        peak,
        bench.targets.get(size),
    )


# --------------------------------------------------------------------------------------------
# Reporting


def _fmt_time(s: float) -> str:
    if s < 1e-3:
        return f"{s * 1e6:.1f} us"
    return f"{s * 1e3:.2f} ms"


def _fmt_bytes(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    if n < 1024**2:
        return f"{n / 1024:.1f} KiB"
    return f"{n / 1024**2:.1f} MiB"


COLUMNS = ("loss", "size", "shape", "torch", "torchloss", "ratio", "spread", "saved (ours/torch)", "beyond inputs", "peak (ours/torch)")


def _cells(r: Result) -> tuple[str, ...]:
    """A result's cells after the loss name, as the terminal table and the Markdown page show them."""
    return (
        r.size,
        "x".join(map(str, r.shape)),
        _fmt_time(r.torch_s),
        _fmt_time(r.ours_s),
        f"{r.ratio:.2f}",
        f"±{r.spread / 2:.0%}",
        f"{_fmt_bytes(r.saved_total[0])} / {_fmt_bytes(r.saved_total[1])}",
        f"{_fmt_bytes(r.saved_extra[0])} / {_fmt_bytes(r.saved_extra[1])}",
        f"{_fmt_bytes(r.peak[0])} / {_fmt_bytes(r.peak[1])}",
    )


def format_table(results: list[Result]) -> str:
    rows = [COLUMNS]
    for r in results:
        rows.append((r.loss, *_cells(r)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    for size in SIZES:
        ratios = [r.ratio for r in results if r.size == size]
        if ratios:
            geo = math.exp(sum(math.log(x) for x in ratios) / len(ratios))
            lines.append(f"{size}: geometric mean of the ratios {geo:.2f} over {len(ratios)} rows, worst {max(ratios):.2f}")
    return "\n".join(lines)


def write_csv(path: str, results: list[Result]) -> None:
    import os

    if os.path.dirname(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([
            "loss", "size", "shape", "device", "dtype", "torch_s", "torchloss_s", "ratio", "ratio_spread",
            "saved_bytes_torchloss", "saved_bytes_torch", "saved_extra_torchloss", "saved_extra_torch",
            "peak_bytes_torchloss", "peak_bytes_torch",
        ])
        for r in results:
            w.writerow([
                r.loss, r.size, "x".join(map(str, r.shape)), r.device, r.dtype, f"{r.torch_s:.9g}",
                f"{r.ours_s:.9g}", f"{r.ratio:.4f}", f"{r.spread:.4f}", *r.saved_total, *r.saved_extra, *r.peak,
            ])


def _pyplot(out: TextIO):
    """matplotlib's pyplot on the non-interactive Agg backend, or None (and a line on ``out``)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("--plot: matplotlib is not installed (pip install 'torchloss[bench]'); no plots written", file=out)
        return None
    return plt


def write_plots(directory: str, results: list[Result], out: TextIO, sweep: Sequence[Result] = ()) -> list[str]:
    """One PNG per size: the torchloss/torch time ratio of every loss; with ``sweep`` results, one
    more: a grid of time against number of elements (log-log), torch and torchloss, one panel per
    loss. Needs matplotlib; returns the paths written (none without matplotlib)."""
    plt = _pyplot(out)
    if plt is None:
        return []
    import os

    os.makedirs(directory, exist_ok=True)
    written = []
    for size in SIZES:
        rs = [r for r in results if r.size == size]
        if not rs:
            continue
        fig, ax = plt.subplots(figsize=(8, 0.35 * len(rs) + 1.2))
        ax.barh([r.loss for r in rs], [r.ratio for r in rs], color=["tab:green" if r.ratio <= 1 else "tab:red" for r in rs])
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.set_xlabel("time ratio torchloss / torch (forward + backward; < 1 is faster)")
        ax.set_title(f"{size} size, {rs[0].device}, {rs[0].dtype}")
        ax.invert_yaxis()
        fig.tight_layout()
        path = os.path.join(directory, f"ratio_{size}_{rs[0].device}.png")
        fig.savefig(path, dpi=120)
        plt.close(fig)
        print(f"wrote {path}", file=out)
        written.append(path)
    if sweep:
        path = _plot_sweep(plt, directory, sweep)
        print(f"wrote {path}", file=out)
        written.append(path)
    return written


def _decades(values: Sequence[float]) -> tuple[float, float]:
    """The powers of ten around ``values`` (at least one decade apart)."""
    lo = math.floor(math.log10(min(values)))
    hi = max(math.ceil(math.log10(max(values))), lo + 1)
    return 10.0**lo, 10.0**hi


def _plot_sweep(plt, directory: str, sweep: Sequence[Result]) -> str:
    import os

    from matplotlib import ticker

    losses = list(dict.fromkeys(r.loss for r in sweep))
    ncols = min(4, len(losses))
    nrows = math.ceil(len(losses) / ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(3.6 * ncols, 2.9 * nrows + 0.8), squeeze=False, layout="constrained"
    )
    flat = list(axes.flat)
    for ax, loss in zip(flat, losses):
        rs = sorted((r for r in sweep if r.loss == loss), key=lambda r: r.elements)
        x = [r.elements for r in rs]
        ax.loglog(x, [r.torch_s for r in rs], "o-", color="tab:blue", label="torch", markersize=4)
        ax.loglog(x, [r.ours_s for r in rs], "s-", color="tab:orange", label="torchloss", markersize=4)
        ax.set_title(f"{loss}  (ratio {rs[0].ratio:.2f} .. {rs[-1].ratio:.2f})", fontsize=8)
        # whole decades, labelled at the powers of ten only: minor labels collide in a narrow panel
        ys = [t for r in rs for t in (r.torch_s, r.ours_s)]
        ax.set_xlim(*_decades(x))
        ax.set_ylim(*_decades(ys))
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.yaxis.set_minor_formatter(ticker.NullFormatter())
        ax.tick_params(which="both", labelsize=7)
        ax.grid(True, which="major", alpha=0.3)
    for ax in flat[len(losses):]:
        ax.set_axis_off()
    flat[0].legend(fontsize=7)
    fig.supxlabel("elements of the first input", fontsize=9)
    fig.supylabel("forward + backward time (s)", fontsize=9)
    fig.suptitle(f"time against size, {sweep[0].device}, {sweep[0].dtype} (log-log)", fontsize=10)
    path = os.path.join(directory, f"sweep_{sweep[0].device}.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------------------------
# Targets and the Markdown report

TARGET_LARGE_RATIO = 1.25  # every loss, large size
TARGET_LARGE_GEOMEAN = 1.0  # geometric mean of the ratios, large size
TARGET_SMALL_RATIO = 1.3  # every loss, small size
# torch computes these as a chain of small ops: torchloss's single node should beat it (large size)
FASTER_THAN_TORCH = frozenset({
    "cosine_embedding_loss", "triplet_margin_loss", "triplet_margin_with_distance_loss", "margin_ranking_loss",
    "hinge_embedding_loss", "soft_margin_loss", "multilabel_soft_margin_loss", "poisson_nll_loss",
    "gaussian_nll_loss", "kl_div",
})

MARKDOWN_INTRO = """\
Each row times one *step* of a loss, a forward and a backward pass with the default `'mean'`
reduction (`torch.autograd.grad(loss(*inputs), inputs)`), of `torchloss.functional` against
`torch.nn.functional`, interleaved in one process with `torch.utils.benchmark`, on the number of
threads named under *Machine* (by default the process's own, `torch.get_num_threads()`, what a
user's training loop runs with; `--threads N` chooses another): *torch* and
*torchloss* are the medians over the rounds of each one's median time, *ratio* is torchloss / torch
(below 1: torchloss is faster) and *spread* half the range of the per-round ratios, relative to
their median. *saved* is the bytes the autograd graph keeps for backward (ours / torch; *beyond
inputs*: the part that exists only because of the graph), *peak* the highest memory allocated
during a step above what was allocated before it. Sizes: *small* (about 32 elements: the cost of a
call in Python and dispatch) and *large* (about 4M elements, memory-bound); the shapes are
`BENCH_SHAPES` in `torchloss/bench.py`. A row named `loss[...]` is a variant of a loss: other
arguments (class `weight`, `label_smoothing`) or other shapes (CTC's large batch, `N=256`, and
long sequences, `T=2000`), listed in `VARIANTS` there.

Regenerate this page (at the default thread count) and its single-threaded twin with

```bash
python -m torchloss bench --sweep 4 --markdown docs/benchmarks.md --plot docs/img/bench
python -m torchloss bench --threads 1 --markdown docs/benchmarks-1thread.md --plot docs/img/bench-1thread
```

(on an otherwise idle machine; a few minutes each on 2 cores; the PNGs, committed beside these
pages, need the `bench` extra, matplotlib).
Timings depend on the machine, its CPU capability (AVX2, AVX512), its thread count and its load:
compare ratios, not absolute times, and only between runs on the same machine.

*The allocator* (*CPU allocator* under *Machine*). A large step allocates tens of MiB of fresh
buffers. With glibc's malloc as it comes, whether they come back as memory already mapped or as
new page faults (about 1.5 us per 4 KiB page on this project's VMs: 20-30 ms for the 80 MiB of a
large triplet step, more than its arithmetic) depends on which small allocation happens to sit at
the top of the heap when the step frees them (glibc trims the heap's top, and moves its mmap
threshold with the sizes freed): a large triplet row's torchloss time moved between 9 and 39 ms
from run to run, torch's between 14 and 26 ms, with no change in the code. So by default the
benchmark pins glibc's malloc (`--malloc steady`: mmap threshold 32 MiB, glibc's ceiling, and no
trimming): every buffer up to 32 MiB is reused from step to step, as a caching allocator
(jemalloc, tcmalloc, torch's CUDA allocator) reuses it, and larger ones (cross entropy's
128 MiB logits, linear cross entropy's) are fresh mappings every step, for torch and torchloss
alike. `--malloc system` measures with glibc's defaults instead.

## Targets

On the CPU, in float32, at the thread count the page names (the default one, and one thread),
whatever the CPU:

- **large** size: every loss's time ratio <= {large_ratio}, and their geometric mean <= {large_geomean};
  the losses that torch computes as a chain of small ops ({faster}) faster than torch (ratio < 1);
- **small** size: every ratio <= {small_ratio};
- `ctc_loss`: ratio <= {ctc_small} at the small size, <= {ctc_large} at the large one and at its
  `N=256` and `T=2000` rows;
- `linear_cross_entropy[bfloat16]` (large): ratio <= 0.2 (issue 13: 5x faster than torch's
  reference path, whose bfloat16 products are emulated on a CPU without native bfloat16, such as
  an AVX2 one); on a CPU that multiplies bfloat16 natively (`avx512_bf16`, AMX) torch's time is
  itself three bfloat16 products, which torchloss must run too, so there the row's target is
  <= 1.0 (this page: {bf16_target});
- **memory**, at every size: no loss keeps more bytes for backward beyond its inputs (*beyond
  inputs*: a reference to an input costs nothing), or peaks higher (*peak*), than torch.
  (torch's chunked linear cross entropy keeps its precomputed gradients as attributes of its
  autograd context, which `saved_tensors_hooks` do not see: 0 B in its column; torchloss keeps
  the same gradients the same way, and references to the inputs.)

The *target* column marks a row that misses one with ✗ and what it misses: `time`, `saved` or
`peak`.
""".format(
    bf16_target=_BF16_TARGET,
    large_ratio=TARGET_LARGE_RATIO,
    large_geomean=TARGET_LARGE_GEOMEAN,
    small_ratio=TARGET_SMALL_RATIO,
    ctc_small=_CTC_TARGETS["small"],
    ctc_large=_CTC_TARGETS["large"],
    faster=", ".join(f"`{n}`" for n in sorted(FASTER_THAN_TORCH)),
)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "es" if word.endswith("s") else "s")


def _geomean(xs: Sequence[float]) -> float:
    return math.exp(sum(math.log(x) for x in xs) / len(xs))


def target_misses(r: Result) -> list[str]:
    """The targets ``r`` misses: ``'time'`` (the ratio limit of its size, or the row's own stricter
    one, ``r.target``; none for sweep points),
    ``'saved'`` (more bytes kept for backward than torch beyond the inputs: what the graph costs),
    ``'peak'`` (higher peak than torch)."""
    misses = []
    if r.size == "large":
        slow = r.ratio >= 1.0 if r.name in FASTER_THAN_TORCH else r.ratio > TARGET_LARGE_RATIO
    elif r.size == "small":
        slow = r.ratio > TARGET_SMALL_RATIO
    else:
        slow = False
    if r.size in SIZES and r.target is not None and r.ratio > r.target:
        slow = True
    if slow:
        misses.append("time")
    if r.saved_extra[0] > r.saved_extra[1]:  # (references to the inputs cost no memory)
        misses.append("saved")
    if r.peak[0] > r.peak[1]:
        misses.append("peak")
    return misses


def _cpu_model() -> str:
    import platform

    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


class _Empty(torch.autograd.Function):
    """The cheapest custom Function a loss can be: ``x.sum()`` forward, an expand backward."""

    @staticmethod
    def forward(x):
        return x.sum()

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.shape = inputs[0].shape

    @staticmethod
    def backward(ctx, grad):
        return grad.expand(ctx.shape)


def function_floor(device: str, dtype: torch.dtype, min_time: float = 0.2, threads: int | None = None) -> tuple[float, float]:
    """``(torch, custom)``: seconds per forward+backward step of ``x.sum()`` at 32 elements, plain
    and through an empty ``autograd.Function`` (:class:`_Empty`). The second is the least a
    torchloss loss can cost at the small size (the Python forward, ``setup_context`` and backward
    calls), which puts a bound on the small-size ratios of losses whose whole torch step is
    about as cheap."""
    from torch.utils import benchmark

    x = torch.randn(32, device=device, dtype=dtype, requires_grad=True)
    apply = super(torch.autograd.Function, _Empty).apply  # the C apply, as Dispatch calls it
    threads = torch.get_num_threads() if threads is None else threads
    timers = [
        benchmark.Timer("grad(x.sum(), x)", globals={"grad": torch.autograd.grad, "x": x}, num_threads=threads),
        benchmark.Timer(
            "grad(apply(x), x)", globals={"grad": torch.autograd.grad, "x": x, "apply": apply}, num_threads=threads
        ),
    ]
    medians = [[], []]
    for timer in timers:  # warm-up (the first calls of a process are slower)
        timer.timeit(1000)
    for _ in range(3):
        for i, timer in enumerate(timers):
            medians[i].append(timer.blocked_autorange(min_run_time=min_time).median)
    return tuple(statistics.median(m) for m in medians)


def cpu_capability() -> str:
    """torch's CPU capability (``torch.backends.cpu.get_cpu_capability()``: the vector ISA its
    kernels dispatch to, e.g. ``AVX2`` or ``AVX512``), or ``'unknown'``."""
    capability = getattr(getattr(torch.backends, "cpu", None), "get_cpu_capability", None)
    return capability() if capability is not None else "unknown"


# glibc's malloc, pinned for the timings (``--malloc steady``, the default): its default mmap
# threshold moves with the sizes freed and it trims the heap's top whenever more than twice that
# is free there, so whether a step's fresh buffers of a few MiB come back as mapped pages or as new
# page faults (about 1.5 us per 4 KiB page here: 20-30 ms for a triplet step's 80 MiB) depends on
# which small allocation happens to sit at the heap's top. Measured: a large triplet row's
# torchloss median moved between 9 ms and 39 ms from run to run (torch's between 14 and 26 ms),
# with no change in the code. Pinned (mmap threshold 32 MiB, glibc's ceiling; no trimming), every
# buffer up to 32 MiB is reused from the heap, as a caching allocator (jemalloc, tcmalloc, torch's
# CUDA allocator) would, and larger ones are fresh mappings every step, for both sides alike.
MALLOC_MMAP_THRESHOLD = 32 << 20
MALLOC_TRIM_THRESHOLD = 1 << 40


def pin_malloc() -> str:
    """Pin glibc's malloc thresholds (see above) in this process; returns what the page says
    about the allocator. Does nothing (and says so) where the C library is not glibc."""
    import ctypes
    import platform

    libc_name, version = platform.libc_ver()
    if libc_name != "glibc":
        return f"the C library's own ({libc_name or 'not glibc'}; not pinned)"
    libc = ctypes.CDLL(None)
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    ok = libc.mallopt(m_mmap_threshold, MALLOC_MMAP_THRESHOLD) == 1
    ok = libc.mallopt(m_trim_threshold, MALLOC_TRIM_THRESHOLD) == 1 and ok
    if not ok:
        return f"glibc {version} (pinning failed: its defaults)"
    return (f"glibc {version}, pinned (`--malloc steady`): mmap threshold 32 MiB, no trimming; "
            "buffers up to 32 MiB reused, larger ones fresh mappings every step")


def malloc_text() -> str:
    """What the page says about the allocator under ``--malloc system``."""
    import platform

    libc_name, version = platform.libc_ver()
    return f"{libc_name or 'unknown'} {version}".strip() + ", its defaults (`--malloc system`: dynamic mmap threshold, trimming)"


def machine_info(
    device: str, dtype: str, floor: tuple[float, float] | None = None, threads: int | None = None,
    allocator: str | None = None,
) -> list[tuple[str, str]]:
    """(name, value) pairs describing where and how the benchmark ran, for the report's header
    (``floor``: :func:`function_floor`'s result, when measured; ``threads``: the intra-op threads
    the timings ran on, default the process's)."""
    import datetime
    import os
    import platform

    from . import __version__

    cpu = f"{_cpu_model()} ({cpu_capability()})"
    threads = torch.get_num_threads() if threads is None else threads
    cores = f"{os.cpu_count()}"
    if hasattr(os, "sched_getaffinity"):
        cores += f" ({len(os.sched_getaffinity(0))} usable by this process)"
    default = f"{torch.get_num_threads()} intra-op, {torch.get_num_interop_threads()} inter-op"
    env = [f"{k}={os.environ[k]}" for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if k in os.environ]
    if env:
        default += f" ({', '.join(env)})"
    build = []
    if torch.version.cuda:
        build.append(f"CUDA {torch.version.cuda}")
    elif getattr(torch.version, "hip", None):
        build.append(f"ROCm {torch.version.hip}")
    else:
        build.append("CPU only")
    for name, backend in (("MKL", "mkl"), ("oneDNN", "mkldnn"), ("OpenMP", "openmp")):
        if getattr(torch.backends, backend).is_available():
            build.append(name)
    git = getattr(torch.version, "git_version", None)
    if git:
        build.append(f"git {git[:10]}")
    if getattr(torch.version, "debug", False):
        build.append("debug build")
    dev = torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else device
    return [
        ("CPU", cpu),
        ("CPU capability", cpu_capability()),
        ("cores", cores),
        ("threads timed", f"{threads} ({'the default' if threads == torch.get_num_threads() else '--threads'})"),
        ("torch threads", default),
        ("torch", f"{torch.__version__} ({', '.join(build)})"),
        ("torchloss", __version__),
        ("native kernels", _native_text()),
        *([("CPU allocator", allocator)] if allocator else []),
        ("OS", platform.platform()),
        ("Python", f"{platform.python_version()} ({platform.python_implementation()})"),
        ("device", dev),
        ("dtype", dtype),
        ("date", datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")),
    ] + ([("autograd.Function floor", _floor_text(floor))] if floor else [])


def _native_text() -> str:
    from . import _native

    mod = _native.module
    names = sorted(
        n for n in dir(mod) if not n.startswith("_") and n != "set_reference" and callable(getattr(mod, n))
    ) if mod else []
    where = _native.state.replace(str(__import__("pathlib").Path.home()), "~")
    return f"{where}: {', '.join(names)}" if names else where


def _floor_text(floor: tuple[float, float]) -> str:
    plain, custom = floor
    return (
        f"{_fmt_time(custom)} per forward+backward of `x.sum()` (32 elements) through an empty "
        f"custom `autograd.Function`, against {_fmt_time(plain)} without one: the least any "
        "torchloss loss costs at the small size"
    )


MD_COLUMNS = (
    "loss", "size", "shape", "torch", "torchloss", "ratio", "spread", "saved (ours / torch)",
    "beyond inputs (ours / torch)", "peak (ours / torch)", "target",
)


def _md_table(results: Sequence[Result]) -> list[str]:
    lines = [
        "| " + " | ".join(MD_COLUMNS) + " |",
        "|" + "|".join("---:" if c in ("torch", "torchloss", "ratio", "spread") else "---" for c in MD_COLUMNS) + "|",
    ]
    for r in results:
        misses = target_misses(r)
        mark = "✗ " + ", ".join(misses) if misses else "✓"
        lines.append("| " + " | ".join((f"`{r.loss}`", *_cells(r), mark)) + " |")
    return lines


def markdown_summary(results: Sequence[Result]) -> list[str]:
    """The summary lines: per size the geometric mean and the worst ratio, with the time targets;
    then the memory targets."""
    lines = []
    for size in SIZES:
        rs = [r for r in results if r.size == size]
        if not rs:
            continue
        geo = _geomean([r.ratio for r in rs])
        worst = max(rs, key=lambda r: r.ratio)
        slow = [r.loss for r in rs if "time" in target_misses(r)]
        line = (
            f"**{size}**: geometric mean of the ratios {geo:.2f} over {len(rs)} rows, "
            f"worst {worst.ratio:.2f} (`{worst.loss}`)"
        )
        if size == "large":
            met = "met" if geo <= TARGET_LARGE_GEOMEAN else "missed ✗"
            line += f"; geometric mean target (<= {TARGET_LARGE_GEOMEAN}): {met}"
        line += f"; time target missed by {len(slow)} of {len(rs)}"
        if slow:
            line += ": " + ", ".join(f"`{n}`" for n in slow)
        lines.append(line)
    if results:
        saved = [r for r in results if "saved" in target_misses(r)]
        peak = [r for r in results if "peak" in target_misses(r)]

        def which(rs):
            return ": " + ", ".join(f"`{r.loss}` ({r.size})" for r in rs) if rs else ""

        lines.append(
            f"**memory**: {len(saved)} of {len(results)} rows keep more bytes for backward than torch{which(saved)}; "
            f"{len(peak)} peak higher{which(peak)}"
        )
    return lines


def format_markdown(
    results: Sequence[Result],
    sweep: Sequence[Result] = (),
    *,
    machine: Sequence[tuple[str, str]],
    settings: str = "",
    sweep_settings: str = "",
    plots: Sequence[str] = (),
    plots_missing: bool = False,
    note: str | None = None,
    base_dir: str = ".",
) -> str:
    """The Markdown report. ``plots`` are image paths, linked relative to ``base_dir`` (the
    directory of the page); ``plots_missing``: plots were asked for but none could be written."""
    import os

    lines = ["# torchloss benchmarks", ""]
    if note:
        lines += [f"> **Note:** {note}", ""]
    lines += [MARKDOWN_INTRO.rstrip(), ""]
    info = dict(machine)
    if info.get("device", "cpu").split(":")[0] != "cpu" or info.get("dtype", "float32") != "float32":
        lines += [
            (
                f"*This run is on {info.get('device')} in {info.get('dtype')}: the targets are set for the CPU "
                "in float32, the marks below are for reference only.*"
            ),
            "",
        ]
    lines += ["## Machine", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in machine]
    if settings:
        lines.append(f"| settings | {settings} |")
    lines += ["", "## Results", ""]
    lines += _md_table(results)
    lines += [""]
    lines += [f"- {line}" for line in markdown_summary(results)]
    if sweep:
        lines += ["", "## Time against size", ""]
        if sweep_settings:
            lines += [sweep_settings, ""]
        lines += _md_table(sweep)
    if plots or plots_missing:
        lines += ["", "## Plots", ""]
        if not plots:
            lines.append("Plots were asked for but not written: matplotlib is not installed.")
        for p in plots:
            rel = os.path.relpath(os.path.abspath(p), os.path.abspath(base_dir)).replace(os.sep, "/")
            name = os.path.splitext(os.path.basename(p))[0]
            lines += [f"![{name}]({rel})", ""]
    return "\n".join(lines).rstrip() + "\n"


def write_markdown(path: str, text: str) -> None:
    import os

    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


# --------------------------------------------------------------------------------------------
# Command line

SWEEP_ROUNDS = 3  # default rounds per sweep point (at most --rounds)
SWEEP_MIN_TIME = 0.05  # default seconds per blocked_autorange at a sweep point (at most --min-time)


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "bench",
        help="time and memory of every loss against torch.nn.functional",
        description=(
            "Forward+backward time (interleaved with torch, torch.utils.benchmark), bytes kept for "
            "backward and peak memory of every loss at a small and a large size."
        ),
    )
    p.add_argument("--loss", action="append", metavar="NAME", help="a loss by functional name; repeatable (default: all)")
    p.add_argument("--size", choices=(*SIZES, "both"), default="both", help="which size (default: both)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument("--dtype", default="float32", choices=("float32", "float64", "float16", "bfloat16"))
    p.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (default: 5)")
    p.add_argument("--min-time", type=float, default=0.2, help="seconds per blocked_autorange (default: 0.2)")
    p.add_argument(
        "--threads", type=int, metavar="N",
        help="intra-op threads to time on (default: the process's, torch.get_num_threads(); 1 for "
        "single-threaded figures)",
    )
    p.add_argument(
        "--malloc", choices=("steady", "system"), default="steady",
        help="steady (default): pin glibc's malloc (mmap threshold 32 MiB, no trimming) so that a step's "
        "buffers up to 32 MiB are reused instead of page-faulted afresh at random (the figures then "
        "reproduce); system: glibc's defaults, whose page faults move large rows by up to 3x between runs",
    )
    p.add_argument("--csv", metavar="PATH", help="also write the results to PATH")
    p.add_argument("--plot", metavar="DIR", help="also write PNG plots to DIR (needs matplotlib)")
    p.add_argument(
        "--sweep", type=int, metavar="K", default=0,
        help="also time every chosen loss at K sizes from its small to its large shape (geometric "
        "interpolation of each dimension; end points already measured are reused), for time-vs-size "
        "plots (default: off). Costs about K-2 extra measurements per loss, most of it at the larger points",
    )
    p.add_argument(
        "--sweep-rounds", type=int, metavar="N",
        help=f"interleaved rounds per sweep point (default: {SWEEP_ROUNDS}, or --rounds if fewer)",
    )
    p.add_argument(
        "--sweep-min-time", type=float, metavar="S",
        help=f"seconds per blocked_autorange at a sweep point (default: {SWEEP_MIN_TIME}, or --min-time if less)",
    )
    p.add_argument(
        "--markdown", metavar="PATH",
        help="also write the report as a Markdown page (machine, results with the targets each row misses, "
        "summary, links to the --plot images)",
    )
    p.add_argument("--note", metavar="TEXT", help="a note for the top of the --markdown page")
    p.add_argument(
        "--distributed", action="store_true",
        help="instead: torchloss.distributed's per-rank time and peak memory at 2 gloo ranks against gathering "
        "the logits and calling cross_entropy (--rounds sets the repetitions)",
    )
    p.set_defaults(func=main, parser=p)
    return p


def run_sweep(
    benchmarks: Sequence[Benchmark],
    k: int,
    device: str,
    dtype: torch.dtype,
    rounds: int,
    min_time: float,
    measured: Sequence[Result] = (),
    threads: int | None = None,
) -> list[Result]:
    """Every benchmark with both sizes and no variant at the shapes of :func:`interpolate_shapes`
    (``k`` points), labelled ``'sweep-1'``, ``'sweep-2'``, ...; an end point whose size is among
    ``measured`` reuses that result instead of timing it again."""
    done = {(r.loss, r.size): r for r in measured if r.size in SIZES}
    results = []
    for b in benchmarks:
        if b.variant or not all(size in b.shapes for size in SIZES):
            continue
        for j, shape in enumerate(interpolate_shapes(b.shapes["small"], b.shapes["large"], k), 1):
            label = f"sweep-{j}"
            same = [done[(b.name, s)] for s in SIZES if (b.name, s) in done and tuple(b.shapes[s]) == shape]
            if same:
                results.append(dataclasses.replace(same[0], size=label))
                continue
            print(f"  {b.name} ({label}: {'x'.join(map(str, shape))}) ...", file=sys.stderr, flush=True)
            results.append(run_one(b, label, device, dtype, rounds, min_time, shape=shape, threads=threads))
    return results


def main(args: argparse.Namespace, out: TextIO | None = None) -> int:
    from . import __version__

    out = sys.stdout if out is None else out
    if getattr(args, "distributed", False):
        from .testing.distributed_check import bench_main

        return bench_main(out, reps=args.rounds, threads=getattr(args, "threads", None) or 1)
    known = {b.name for b in BENCHMARKS} | {b.label for b in BENCHMARKS}
    names = [n.strip() for arg in (args.loss or []) for n in arg.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        args.parser.error(
            f"unknown loss {', '.join(map(repr, unknown))}; choose from: {', '.join(b.label for b in BENCHMARKS)}"
        )
    threads = getattr(args, "threads", None)
    if threads is not None and threads < 1:
        args.parser.error(f"--threads {threads}: must be at least 1")
    threads = torch.get_num_threads() if threads is None else threads
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        args.parser.error("--device cuda: CUDA is not available with this torch")
    sweep_k = getattr(args, "sweep", 0) or 0
    if sweep_k and sweep_k < 2:
        args.parser.error(f"--sweep {sweep_k}: a sweep needs at least 2 sizes")
    sweep_rounds = getattr(args, "sweep_rounds", None)
    sweep_rounds = min(args.rounds, SWEEP_ROUNDS) if sweep_rounds is None else sweep_rounds
    sweep_min_time = getattr(args, "sweep_min_time", None)
    sweep_min_time = min(args.min_time, SWEEP_MIN_TIME) if sweep_min_time is None else sweep_min_time
    if sweep_k and (sweep_rounds < 1 or sweep_min_time <= 0):
        args.parser.error("--sweep-rounds must be at least 1 and --sweep-min-time positive")
    allocator = pin_malloc() if getattr(args, "malloc", "steady") == "steady" else malloc_text()
    # a function's name picks its main row and its variants; a label (name[variant]) one row
    chosen = [b for b in BENCHMARKS if b.name in names or b.label in names] if names else BENCHMARKS
    sizes = SIZES if args.size == "both" else (args.size,)
    dtype = getattr(torch, args.dtype)
    # the floor first: measured after the large sizes, in a process whose heap they have grown,
    # even plain small steps come out slower
    floor = function_floor(args.device, dtype, args.min_time, threads) if "small" in sizes else None
    results = []
    start = time.perf_counter()
    for size in sizes:
        for b in chosen:
            if size not in b.shapes:
                continue
            print(f"  {b.label} ({size}) ...", file=sys.stderr, flush=True)
            results.append(run_one(b, size, args.device, dtype, args.rounds, args.min_time, threads=threads))
    elapsed = time.perf_counter() - start
    device = (
        torch.cuda.get_device_name()
        if args.device.startswith("cuda")
        else f"cpu ({cpu_capability()}), {_plural(threads, 'thread')} timed"
    )
    print(format_table(results), file=out)
    print(
        f"\ntorchloss {__version__}, torch {torch.__version__}, {device}, {args.dtype}; "
        f"{args.rounds} interleaved rounds in {elapsed:.0f} s; CPU allocator: {allocator}",
        file=out,
    )
    if floor:
        print(f"autograd.Function floor: {_floor_text(floor)}", file=out)
    sweep: list[Result] = []
    sweep_settings = ""
    if sweep_k:
        start = time.perf_counter()
        sweep = run_sweep(
            chosen, sweep_k, args.device, dtype, sweep_rounds, sweep_min_time, measured=results, threads=threads
        )
        sweep_elapsed = time.perf_counter() - start
        print("\n" + format_table(sweep), file=out)
        measured = {(r.loss, r.shape) for r in results}
        reused = sum((r.loss, r.shape) in measured for r in sweep)
        sweep_settings = (
            f"{len(sweep)} points for {_plural(len({r.loss for r in sweep}), 'loss')}, up to {sweep_k} sizes from the small to the large "
            f"shape (geometric interpolation of each dimension); {_plural(sweep_rounds, 'interleaved round')} of "
            f"min-time {sweep_min_time:g} s per point; {_plural(len(sweep) - reused, 'point')} measured in "
            f"{sweep_elapsed:.0f} s, {_plural(reused, 'end point')} reused from the table"
        )
        print(f"\nsweep: {sweep_settings}", file=out)
    if args.csv:
        write_csv(args.csv, results + sweep)
        print(f"wrote {args.csv}", file=out)
    plots = write_plots(args.plot, results, out, sweep=sweep) if args.plot else []
    markdown = getattr(args, "markdown", None)
    if markdown:
        import os

        text = format_markdown(
            results,
            sweep,
            machine=machine_info(args.device, args.dtype, floor, threads, allocator),
            settings=(
                f"{_plural(args.rounds, 'interleaved round')} of `blocked_autorange(min_run_time={args.min_time:g})` "
                f"per loss and size, on {_plural(threads, 'thread')}; {elapsed:.0f} s"
            ),
            sweep_settings=sweep_settings,
            plots=plots,
            plots_missing=bool(args.plot) and not plots,
            note=getattr(args, "note", None),
            base_dir=os.path.dirname(os.path.abspath(markdown)),
        )
        write_markdown(markdown, text)
        print(f"wrote {markdown}", file=out)
    return 0
