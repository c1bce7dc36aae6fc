"""Forward+backward CPU float32 timings of torchloss's ctc_loss against torch's native kernel.

Run: ``python benchmarks/ctc_bench.py [--threads N ...]`` (default: the process's thread count,
then 1). The two are measured interleaved (alternating blocks of torch.utils.benchmark runs, on
the given number of threads), and the ratio torchloss / torch is reported per shape, with the
peak memory of one forward + backward step of each (:func:`torchloss.bench.peak_bytes`). The
targets (issue 15): ratio <= 1.2 at the small shape, <= 0.6 at the others, at every thread count.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as TF
from torch.utils import benchmark

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from torchloss.bench import peak_bytes
from torchloss.functional import ctc_loss

# (T, N, C, S): bench.py's large and small CTC rows, its large batch and its long sequences
SHAPES = [(500, 32, 40, 100), (50, 16, 20, 30), (200, 256, 60, 50), (2000, 8, 30, 400)]


def make(T, N, C, S, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, N, C, generator=g).log_softmax(-1).requires_grad_()
    targets = torch.randint(1, C, (N, S), generator=g)
    il = torch.full((N,), T, dtype=torch.long)
    tl = torch.randint(S // 2, S + 1, (N,), generator=g)
    return x, targets, il, tl


def step(fn, x, targets, il, tl):
    x.grad = None
    fn(x, targets, il, tl).backward()


def main(rounds: int = 5, min_run_time: float = 0.5, threads: int | None = None) -> None:
    threads = torch.get_num_threads() if threads is None else threads
    capability = torch.backends.cpu.get_cpu_capability()
    print(f"torch {torch.__version__}, {capability}, {threads} threads")
    for shape in SHAPES:
        args = make(*shape)
        times = {"torch": [], "torchloss": []}
        for _ in range(rounds):
            for name, fn in (("torch", TF.ctc_loss), ("torchloss", ctc_loss)):
                t = benchmark.Timer(
                    "step(fn, *args)", globals={"step": step, "fn": fn, "args": args}, num_threads=threads
                ).blocked_autorange(min_run_time=min_run_time)
                times[name].append(t.median)
        ref, ours = min(times["torch"]), min(times["torchloss"])
        peak = {}
        for name, fn in (("torch", TF.ctc_loss), ("torchloss", ctc_loss)):
            args[0].grad = None  # freed before the profiler starts, allocated (and counted) inside
            peak[name] = peak_bytes(lambda fn=fn, args=args: step(fn, *args), args[0].device) / 2**20
        print(
            f"T,N,C,S={shape}: torch {ref * 1e3:.2f} ms, torchloss {ours * 1e3:.2f} ms, "
            f"ratio {ours / ref:.2f}; peak torch {peak['torch']:.2f} MiB, torchloss {peak['torchloss']:.2f} MiB"
        )


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="*", help="thread counts (default: the process's, then 1)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--min-time", type=float, default=0.5)
    args = parser.parse_args()
    for n in args.threads or sorted({torch.get_num_threads(), 1}, reverse=True):
        main(args.rounds, args.min_time, n)
