"""``python -m torchloss bench``: speed and memory of every loss against torch.nn.functional.

For each loss and size, one *step* is a forward and backward pass,
``torch.autograd.grad(loss(*inputs), differentiable_inputs)``, with the default ``'mean'``
reduction. torchloss and torch are timed in the same process with ``torch.utils.benchmark``,
interleaved: in each round both are timed (``blocked_autorange``), torch first in even rounds and
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
built by :data:`BENCHMARKS` below.
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import sys
import time
from collections.abc import Callable
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
    """How to build one loss's inputs: ``make(size, device, dtype, gen) -> Inputs``."""

    name: str
    make: Callable[[str, torch.device, torch.dtype, torch.Generator], Inputs]
    shapes: dict


def _rand(gen, *shape, device, dtype, low=-1.0, high=1.0):
    return (torch.rand(shape, generator=gen) * (high - low) + low).to(device, dtype)


def _randn(gen, *shape, device, dtype, scale=1.0):
    return (torch.randn(shape, generator=gen) * scale).to(device, dtype)


def _elementwise(kind: str):
    def make(size, device, dtype, gen):
        shape = BENCH_SHAPES[kind][size]
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
    def make(size, device, dtype, gen):
        N, C = BENCH_SHAPES[kind][size]
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
    def make(size, device, dtype, gen):
        N, D = BENCH_SHAPES[kind][size]
        kw = {"device": device, "dtype": dtype}
        a, p, n = (_randn(gen, N, D, **kw) for _ in range(3))
        if kind == "cosine_embedding_loss":
            return Inputs((a, p, _randn(gen, N, **kw).sign()), {}, (0, 1))
        return Inputs((a, p, n), {}, (0, 1, 2))

    return make


def _ctc(kind: str):
    def make(size, device, dtype, gen):
        T, N, C, S = BENCH_SHAPES[kind][size]
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
    # O(N C^2) in torchloss for now: a narrower large size
    "multilabel_margin_loss": {"small": (32, 10), "large": (4096, 128)},
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


BENCHMARKS: list[Benchmark] = [Benchmark(n, _make_for(n), s) for n, s in BENCH_SHAPES.items()]


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

    @property
    def ratio(self) -> float:
        return self.ours_s / self.torch_s


def run_one(bench: Benchmark, size: str, device: str, dtype: torch.dtype, rounds: int, min_time: float) -> Result:
    from torch.utils import benchmark as tb

    dev = torch.device(device)
    inputs = bench.make(size, dev, dtype, torch.Generator().manual_seed(0))
    ours, theirs = getattr(F, bench.name), getattr(TF, bench.name)
    steps = {"ours": _step(ours, inputs), "torch": _step(theirs, inputs)}
    for s in steps.values():  # warm up (allocator, lazy initialisation)
        s()
    times: dict[str, list[float]] = {"ours": [], "torch": []}
    for r in range(rounds):
        order = ("torch", "ours") if r % 2 == 0 else ("ours", "torch")
        for who in order:
            timer = tb.Timer("step()", globals={"step": steps[who]})
            times[who].append(timer.blocked_autorange(min_run_time=min_time).median)
    ratios = [o / t for o, t in zip(times["ours"], times["torch"])]
    med_ratio = statistics.median(ratios)
    spread = (max(ratios) - min(ratios)) / med_ratio if med_ratio else float("nan")
    s_ours = saved_bytes(ours, inputs.args, inputs.kwargs, inputs.wrt)
    s_torch = saved_bytes(theirs, inputs.args, inputs.kwargs, inputs.wrt)
    peak = (peak_bytes(steps["ours"], dev), peak_bytes(steps["torch"], dev))
    return Result(
        bench.name,
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


def format_table(results: list[Result]) -> str:
    rows = [COLUMNS]
    for r in results:
        rows.append((
            r.loss,
            r.size,
            "x".join(map(str, r.shape)),
            _fmt_time(r.torch_s),
            _fmt_time(r.ours_s),
            f"{r.ratio:.2f}",
            f"±{r.spread / 2:.0%}",
            f"{_fmt_bytes(r.saved_total[0])} / {_fmt_bytes(r.saved_total[1])}",
            f"{_fmt_bytes(r.saved_extra[0])} / {_fmt_bytes(r.saved_extra[1])}",
            f"{_fmt_bytes(r.peak[0])} / {_fmt_bytes(r.peak[1])}",
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    for size in SIZES:
        ratios = [r.ratio for r in results if r.size == size]
        if ratios:
            geo = math.exp(sum(math.log(x) for x in ratios) / len(ratios))
            lines.append(f"{size}: geometric mean of the ratios {geo:.2f} over {len(ratios)} losses, worst {max(ratios):.2f}")
    return "\n".join(lines)


def write_csv(path: str, results: list[Result]) -> None:
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


def write_plots(directory: str, results: list[Result], out: TextIO) -> None:
    """One PNG per size: the torchloss/torch time ratio of every loss (needs matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("--plot: matplotlib is not installed (pip install 'torchloss[bench]'); no plots written", file=out)
        return
    import os

    os.makedirs(directory, exist_ok=True)
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


# --------------------------------------------------------------------------------------------
# Command line


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
    p.add_argument("--csv", metavar="PATH", help="also write the results to PATH")
    p.add_argument("--plot", metavar="DIR", help="also write PNG plots to DIR (needs matplotlib)")
    p.set_defaults(func=main, parser=p)
    return p


def main(args: argparse.Namespace, out: TextIO | None = None) -> int:
    from . import __version__

    out = sys.stdout if out is None else out
    known = {b.name: b for b in BENCHMARKS}
    names = [n.strip() for arg in (args.loss or []) for n in arg.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        args.parser.error(f"unknown loss {', '.join(map(repr, unknown))}; choose from: {', '.join(known)}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        args.parser.error("--device cuda: CUDA is not available with this torch")
    chosen = [known[n] for n in names] if names else BENCHMARKS
    sizes = SIZES if args.size == "both" else (args.size,)
    dtype = getattr(torch, args.dtype)
    results = []
    start = time.perf_counter()
    for size in sizes:
        for b in chosen:
            print(f"  {b.name} ({size}) ...", file=sys.stderr, flush=True)
            results.append(run_one(b, size, args.device, dtype, args.rounds, args.min_time))
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"cpu, {torch.get_num_threads()} threads"
    print(format_table(results), file=out)
    print(
        f"\ntorchloss {__version__}, torch {torch.__version__}, {device}, {args.dtype}; "
        f"{args.rounds} interleaved rounds in {time.perf_counter() - start:.0f} s",
        file=out,
    )
    if args.csv:
        write_csv(args.csv, results)
        print(f"wrote {args.csv}", file=out)
    if args.plot:
        write_plots(args.plot, results, out)
    return 0
