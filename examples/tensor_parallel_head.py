"""Train a small model whose output head is split across two ranks (tensor parallelism), with
``torchloss.distributed.vocab_parallel_linear_cross_entropy``, next to the same model trained in
one process: the losses agree, and no rank ever holds the logits.

Each rank holds the whole trunk (replicated) and its own rows of the output head (half of the
vocabulary). The loss streams the head block by block, exchanges ``O(N)`` statistics per step,
and all-reduces the trunk output's gradient in backward, so the trunk's parameters get the same
gradient on every rank. Run on a CPU with gloo:

    torchrun --nproc-per-node 2 examples/tensor_parallel_head.py
    python examples/tensor_parallel_head.py        # spawns the two ranks itself

It prints the loss of every step next to the single-process run's, and each rank's peak memory
for one loss forward and backward against gathering the logits and calling ``cross_entropy``.
"""

from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist
from torch import nn

import torchloss
from torchloss.distributed import vocab_parallel_linear_cross_entropy

VOCAB, HIDDEN, FEATURES, TOKENS, STEPS, LR = 16384, 64, 32, 256, 6, 0.5
BUDGET = 1 << 20  # bytes of logits blocks at a time


def make_model(seed: int = 0):
    torch.manual_seed(seed)
    trunk = nn.Sequential(nn.Linear(FEATURES, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, HIDDEN))
    head = nn.Parameter(torch.randn(VOCAB, HIDDEN) / HIDDEN**0.5)
    return trunk, head


def batch(step: int):
    g = torch.Generator().manual_seed(100 + step)
    x = torch.randn(TOKENS, FEATURES, generator=g)
    y = torch.randint(0, VOCAB, (TOKENS,), generator=g)
    y[::7] = -100  # some ignored positions (padding)
    return x, y


def train_parallel(rank: int, world: int) -> list[float]:
    """The tensor-parallel run: rank ``rank`` keeps head rows [lo, hi)."""
    trunk, head = make_model()
    lo, hi = VOCAB * rank // world, VOCAB * (rank + 1) // world
    local_head = nn.Parameter(head.detach()[lo:hi].clone())
    opt = torch.optim.SGD([*trunk.parameters(), local_head], lr=LR)
    losses = []
    for step in range(STEPS):
        x, y = batch(step)
        loss = vocab_parallel_linear_cross_entropy(trunk(x), local_head, y, label_smoothing=0.1, budget=BUDGET)
        opt.zero_grad()
        loss.backward()  # the trunk output's gradient is all-reduced inside: same trunk update everywhere
        opt.step()
        losses.append(loss.item())
    return losses


def train_single() -> list[float]:
    """The same model and batches in one process, with the whole head."""
    trunk, head = make_model()
    opt = torch.optim.SGD([*trunk.parameters(), head], lr=LR)
    losses = []
    for step in range(STEPS):
        x, y = batch(step)
        loss = torchloss.functional.cross_entropy(trunk(x) @ head.t(), y, label_smoothing=0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def peak_memory(rank: int, world: int) -> tuple[int, int]:
    """Peak bytes of one loss forward and backward: vocab-parallel, and gather-then-cross_entropy."""
    from torchloss.bench import peak_bytes

    trunk, head = make_model()
    lo, hi = VOCAB * rank // world, VOCAB * (rank + 1) // world
    h = trunk(batch(0)[0]).detach().requires_grad_()
    w = head.detach()[lo:hi].clone().requires_grad_()
    y = batch(0)[1]

    def parallel():
        vocab_parallel_linear_cross_entropy(h, w, y, label_smoothing=0.1, budget=BUDGET).backward()

    def gathered():
        local = h @ w.t()  # (N, V / world) logits
        parts = [torch.empty_like(local) for _ in range(world)]
        dist.all_gather(parts, local.detach())
        full = torch.cat(parts, 1).requires_grad_()
        torchloss.functional.cross_entropy(full, y, label_smoothing=0.1).backward()
        local.backward(full.grad[:, lo:hi])

    dist.barrier()
    a = peak_bytes(parallel, torch.device("cpu"))
    dist.barrier()
    b = peak_bytes(gathered, torch.device("cpu"))
    return a, b


def rank_main(rank: int, world: int):
    torch.set_num_threads(1)
    losses = train_parallel(rank, world)
    memory = peak_memory(rank, world)
    reference = train_single() if rank == 0 else None
    return losses, memory, reference


def report(results) -> int:
    losses, _, reference = results[0]
    print(f"vocabulary {VOCAB} split over {len(results)} ranks, {TOKENS} tokens a step, label smoothing 0.1\n")
    print(f"{'step':>4}  {'tensor parallel':>16}  {'one process':>12}  {'|difference|':>12}")
    worst = 0.0
    for step, (a, b) in enumerate(zip(losses, reference)):
        worst = max(worst, abs(a - b))
        print(f"{step:>4}  {a:>16.6f}  {b:>12.6f}  {abs(a - b):>12.2e}")
    same = all(r[0] == losses for r in results)
    print(f"\nevery rank saw the same losses: {same}")
    print("\npeak memory of one loss forward + backward, per rank:")
    for rank, (_, (ours, gathered), _) in enumerate(results):
        print(f"  rank {rank}: vocab_parallel_linear_cross_entropy {ours / 2**20:6.1f} MiB,"
              f" gather logits + cross_entropy {gathered / 2**20:6.1f} MiB ({gathered / max(ours, 1):.0f}x)")
    ok = same and worst < 1e-4 and all(m[1][0] < m[1][1] for m in results)
    print("\nOK" if ok else "\nMISMATCH")
    return 0 if ok else 1


def _spawned(rank: int, world: int):
    return rank_main(rank, world)


if __name__ == "__main__":
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:  # torchrun
        dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))
        rank, world = dist.get_rank(), dist.get_world_size()
        mine = rank_main(rank, world)
        everyone = [None] * world
        dist.all_gather_object(everyone, mine)
        code = report(everyone) if rank == 0 else 0
        dist.barrier()  # leave together (a rank that tears its group down early aborts the other)
        dist.destroy_process_group()
        raise SystemExit(code)
    from torchloss.testing.distributed_check import spawn

    raise SystemExit(report(spawn(_spawned, 2, timeout=110)))
