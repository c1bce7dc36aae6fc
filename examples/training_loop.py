"""Train the same tiny regression model twice, once with torch.nn's losses and once with
torchloss's, and print both losses step by step: torchloss is a drop-in replacement.

Two losses are shown side by side: ``MSELoss`` (on clean data) and ``HuberLoss`` (on data with
outliers, where Huber's linear tails matter). Runs in a few seconds on a CPU:

    python examples/training_loop.py
"""

from __future__ import annotations

import copy

import torch
from torch import nn

import torchloss


def make_data(n: int = 256, outliers: bool = False, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=gen)
    true_w = torch.tensor([[1.5], [-2.0], [0.5]])
    y = x @ true_w + 0.3 + 0.1 * torch.randn(n, 1, generator=gen)
    if outliers:
        idx = torch.randperm(n, generator=gen)[: n // 20]
        y[idx] += 20 * torch.randn(len(idx), 1, generator=gen)
    return x, y


def train_side_by_side(name: str, ours: nn.Module, theirs: nn.Module, data, steps: int = 20) -> float:
    x, y = data
    torch.manual_seed(0)
    model_a = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 1))
    model_b = copy.deepcopy(model_a)
    opt_a = torch.optim.SGD(model_a.parameters(), lr=0.05)
    opt_b = torch.optim.SGD(model_b.parameters(), lr=0.05)

    print(f"\n{name}: torchloss.{type(ours).__name__} vs torch.nn.{type(theirs).__name__}")
    print(f"{'step':>4}  {'torchloss':>12}  {'torch.nn':>12}  {'|difference|':>12}")
    worst = 0.0
    for step in range(steps):
        for model, opt, loss_fn in ((model_a, opt_a, ours), (model_b, opt_b, theirs)):
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            if model is model_a:
                loss_a = loss.item()
            else:
                loss_b = loss.item()
        diff = abs(loss_a - loss_b)
        worst = max(worst, diff)
        if step % 4 == 0 or step == steps - 1:
            print(f"{step:>4}  {loss_a:>12.6f}  {loss_b:>12.6f}  {diff:>12.2e}")
    params_diff = max(
        (pa - pb).abs().max().item() for pa, pb in zip(model_a.parameters(), model_b.parameters())
    )
    print(f"largest loss difference {worst:.2e}; "
          f"largest parameter difference after training {params_diff:.2e}")
    return max(worst, params_diff)


def main() -> int:
    worst = 0.0
    worst = max(worst, train_side_by_side("MSE", torchloss.MSELoss(), nn.MSELoss(), make_data()))
    worst = max(
        worst,
        train_side_by_side(
            "Huber (delta=1, data with outliers)",
            torchloss.HuberLoss(delta=1.0),
            nn.HuberLoss(delta=1.0),
            make_data(outliers=True),
        ),
    )
    ok = worst < 1e-5
    print(f"\n{'identical' if worst == 0 else 'equal up to float32 rounding' if ok else 'DIFFERENT'}: "
          f"largest difference {worst:.2e}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
