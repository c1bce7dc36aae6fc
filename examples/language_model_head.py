"""Train a small language-model head with ``torchloss.LinearCrossEntropyLoss`` and compare it with
torch's: the same losses step by step, at a fraction of the peak memory.

The model is a bigram-ish next-token predictor: an embedding, a small MLP, then the output layer
(``hidden -> vocab``) and its cross entropy fused in one ``LinearCrossEntropyLoss``, which never
forms the ``tokens x vocab`` logits (docs/linear.md). torch's ``nn.LinearCrossEntropyLoss`` (torch
>= 2.13) is trained side by side from the same weights (its state dict loads ours), and the peak
memory of one training step is printed for both. Runs in a few seconds on a CPU:

    python examples/language_model_head.py
"""

from __future__ import annotations

import copy

import torch
from torch import nn

import torchloss
from torchloss.bench import peak_bytes

VOCAB, HIDDEN, TOKENS = 8192, 64, 1024


class Model(nn.Module):
    def __init__(self, head: nn.Module):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, HIDDEN)
        self.mlp = nn.Sequential(nn.Linear(HIDDEN, HIDDEN), nn.GELU(), nn.Linear(HIDDEN, HIDDEN))
        self.head = head  # a LinearCrossEntropyLoss: the output layer and the loss in one

    def forward(self, tokens: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        h = self.embed(tokens)
        return self.head(h + self.mlp(h), targets)


def make_batch(seed: int):
    """Token sequences whose next token follows a fixed random permutation 70% of the time."""
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(VOCAB, generator=torch.Generator().manual_seed(1234))
    tokens = torch.randint(0, VOCAB, (TOKENS,), generator=gen)
    noise = torch.randint(0, VOCAB, (TOKENS,), generator=gen)
    follow = torch.rand(TOKENS, generator=gen) < 0.7
    targets = torch.where(follow, perm[tokens], noise)
    targets[::50] = -100  # padding: ignored (ignore_index=None means -100, as in torch)
    return tokens, targets


def step_peak(model: nn.Module, batch) -> int:
    def step():
        model.zero_grad(set_to_none=True)
        model(*batch).backward()

    step()  # warm up
    return peak_bytes(step, torch.device("cpu"))


def main() -> int:
    torch.manual_seed(0)
    # at most 8 MiB of logits blocks at a time (the default budget is 128 MiB)
    options = torchloss.LinearCrossEntropyOptions(memory_budget=8 << 20)
    ours = Model(torchloss.LinearCrossEntropyLoss(HIDDEN, VOCAB, bias=True, label_smoothing=0.05, options=options))
    has_torch = hasattr(nn, "LinearCrossEntropyLoss")
    theirs = None
    if has_torch:
        theirs = Model(nn.LinearCrossEntropyLoss(HIDDEN, VOCAB, bias=True, label_smoothing=0.05))
        theirs.load_state_dict(copy.deepcopy(ours.state_dict()))  # the same parameter names and shapes
    models = [m for m in (ours, theirs) if m is not None]
    opts = [torch.optim.Adam(m.parameters(), lr=3e-3) for m in models]

    print(f"vocabulary {VOCAB}, hidden {HIDDEN}, {TOKENS} tokens a step (logits: {TOKENS * VOCAB * 4 / 2**20:.0f} MiB in float32)")
    print(f"{'step':>4}  {'torchloss':>10}" + (f"  {'torch':>10}  {'|diff|':>9}" if has_torch else ""))
    worst, first, last = 0.0, None, None
    for step in range(12):
        batch = make_batch(step)
        losses = []
        for model, opt in zip(models, opts):
            opt.zero_grad(set_to_none=True)
            loss = model(*batch)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        first = losses[0] if first is None else first
        last = losses[0]
        line = f"{step:>4}  {losses[0]:>10.5f}"
        if has_torch:
            diff = abs(losses[0] - losses[1])
            worst = max(worst, diff)
            line += f"  {losses[1]:>10.5f}  {diff:>9.2e}"
        print(line)

    batch = make_batch(100)
    peak_ours = step_peak(ours, batch)
    print(f"\npeak memory of one training step: torchloss {peak_ours / 2**20:.1f} MiB", end="")
    if has_torch:
        peak_torch = step_peak(theirs, batch)
        print(f", torch {peak_torch / 2**20:.1f} MiB ({peak_torch / peak_ours:.1f}x)")
    else:
        print(" (torch has no LinearCrossEntropyLoss to compare with)")

    ok = last < first and worst < 1e-3 and (not has_torch or peak_ours < peak_torch)
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
