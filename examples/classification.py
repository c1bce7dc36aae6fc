"""Cross entropy as a drop-in: train a small classifier with torch.nn.CrossEntropyLoss and with
torchloss.CrossEntropyLoss (class weights, label smoothing, ignored labels) and compare; then show
what torchloss keeps for backward and what it can do that torch cannot.

    python examples/classification.py
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as TF
from torch import nn

import torchloss
import torchloss.functional as F
from torchloss.testing import saved_bytes

IGNORE = -1  # the label of unlabelled samples


def make_data(n: int = 512, classes: int = 4, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    centers = 2.5 * torch.randn(classes, 2, generator=gen)
    y = torch.randint(0, classes, (n,), generator=gen)
    x = centers[y] + torch.randn(n, 2, generator=gen)
    y[torch.rand(n, generator=gen) < 0.1] = IGNORE  # 10% unlabelled
    return x, y


def train(loss_fn: nn.Module, model: nn.Module, x, y, steps: int = 30) -> list[float]:
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def main() -> int:
    x, y = make_data()
    weight = torch.tensor([1.0, 2.0, 0.5, 1.0])
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 32), nn.ReLU(), nn.Linear(32, 4))
    twin = copy.deepcopy(model)
    kwargs = dict(weight=weight, ignore_index=IGNORE, label_smoothing=0.1)
    ours = train(torchloss.CrossEntropyLoss(**kwargs), model, x, y)
    theirs = train(nn.CrossEntropyLoss(**kwargs), twin, x, y)
    print("step  torchloss     torch.nn")
    for step in (0, 9, 19, 29):
        print(f"{step:>4}  {ours[step]:.7f}  {theirs[step]:.7f}")
    worst = max(abs(a - b) for a, b in zip(ours, theirs))
    worst = max(worst, *((p - q).abs().max().item() for p, q in zip(model.parameters(), twin.parameters())))
    accuracy = (model(x).argmax(1) == y)[y != IGNORE].float().mean().item()
    print(f"largest loss/parameter difference {worst:.1e}; accuracy on the labelled samples {accuracy:.1%}")

    # Memory kept for backward by one call on 256 x 10000 logits.
    logits, labels = torch.randn(256, 10_000), torch.randint(0, 10_000, (256,))
    mine, torch_ = saved_bytes(F.cross_entropy, (logits, labels)), saved_bytes(TF.cross_entropy, (logits, labels))
    print(
        f"\nkept for backward beyond the logits: torchloss {mine.extra / 2**20:.1f} MiB, "
        f"torch {torch_.extra / 2**20:.1f} MiB (its log-softmax)"
    )

    # Beyond torch: per-sample gradients with label smoothing (torch's vmap refuses a batched
    # target there) and a Hessian of the loss in the logits.
    z = torch.randn(5, 4, dtype=torch.float64)
    labels = torch.tensor([0, 3, IGNORE, 1, 2])
    per_sample = torch.func.vmap(
        torch.func.grad(lambda row, t: F.cross_entropy(row, t, ignore_index=IGNORE, label_smoothing=0.1))
    )(z, labels)
    print(f"\nper-sample gradients {tuple(per_sample.shape)}; the unlabelled row is zero: "
          f"{bool((per_sample[2] == 0).all())}")
    hessian = torch.func.hessian(lambda v: F.cross_entropy(v, labels, ignore_index=IGNORE))(z)
    print(f"Hessian {tuple(hessian.shape)}, symmetric: "
          f"{torch.allclose(hessian.reshape(20, 20), hessian.reshape(20, 20).T)}")
    ok = worst < 1e-5 and mine.extra < torch_.extra and bool((per_sample[2] == 0).all())
    print("\nOK" if ok else "\nMISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
