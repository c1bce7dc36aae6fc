"""Regression-loss behaviour the case table cannot express: complex L1, dtype rules, edge values."""

import warnings

import pytest
import torch
import torch.nn.functional as TF

import torchloss
import torchloss.functional as F
from torchloss.testing import parity


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_l1_complex(reduction, device):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, dtype=torch.complex128, generator=g).to(device)
    y = torch.randn(3, 4, dtype=torch.complex128, generator=g).to(device)
    report = parity(F.l1_loss, TF.l1_loss, (x, y), {"reduction": reduction}, (0, 1), rtol=1e-10, atol=1e-12)
    assert report.ok, report.problems
    torch.autograd.gradcheck(lambda a, b: F.l1_loss(a, b, reduction=reduction), (x.requires_grad_(), y.requires_grad_()))
    _, t = torch.func.jvp(lambda a: F.l1_loss(a, y.detach(), reduction=reduction), (x.detach(),), (torch.ones_like(x),))
    _, t_ref = torch.func.jvp(lambda a: TF.l1_loss(a, y.detach(), reduction=reduction), (x.detach(),), (torch.ones_like(x),))
    assert torch.allclose(t, t_ref)


@pytest.mark.parametrize("name", ["l1_loss", "mse_loss", "smooth_l1_loss", "huber_loss"])
@pytest.mark.parametrize(
    "in_dtype,tgt_dtype,tgt_shape",
    [
        (torch.float32, torch.float64, (3,)),
        (torch.float64, torch.float32, (3,)),
        (torch.float16, torch.float32, ()),  # a 0-dim operand of the same category does not promote
        (torch.float32, torch.int64, (3,)),
        (torch.bfloat16, torch.float16, (3,)),
    ],
)
def test_result_dtype_matches_torch(name, in_dtype, tgt_dtype, tgt_shape):
    x = torch.rand(3).to(in_dtype)
    y = (torch.rand(tgt_shape) * 3).to(tgt_dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for reduction in ("none", "sum"):
            ours = getattr(F, name)(x, y, reduction=reduction)
            ref = getattr(TF, name)(x, y, reduction=reduction)
            assert ours.dtype == ref.dtype
            assert ours.shape == ref.shape


def test_l1_integer_sum_and_none():
    x = torch.tensor([1, 5, -2])
    y = torch.tensor([2, 2, 2])
    for reduction in ("none", "sum"):
        assert torch.equal(F.l1_loss(x, y, reduction=reduction), TF.l1_loss(x, y, reduction=reduction))
    with pytest.raises(RuntimeError):
        F.l1_loss(x, y)


def test_weighted_target_broadcast_enlarges():
    # weight has input's size; a target that broadcasts the loss larger is still fine (torch too)
    x = torch.randn(3, 1, dtype=torch.float64)
    y = torch.randn(1, 4, dtype=torch.float64)
    w = torch.rand(3, 1, dtype=torch.float64) + 0.5
    for name in ("l1_loss", "mse_loss", "huber_loss"):
        for reduction in ("none", "mean", "sum"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                report = parity(
                    getattr(F, name), getattr(TF, name), (x, y), {"weight": w, "reduction": reduction},
                    (0, 1, "weight"), rtol=1e-10, atol=1e-12,
                )
            assert report.ok, (name, reduction, report.problems)


def test_smooth_l1_beta_zero_is_l1_node():
    x = torch.randn(4, requires_grad=True)
    out = F.smooth_l1_loss(x, torch.zeros(4), beta=0.0)
    assert type(out.grad_fn).__name__ == "L1LossFunctionBackward"


def test_huber_delta_type_check():
    with pytest.raises(TypeError):
        torchloss.HuberLoss(delta="1")
    with pytest.raises(TypeError):
        torch.nn.HuberLoss(delta="1")
    assert torchloss.HuberLoss(delta=2).delta == 2


def test_kink_subgradients_match_torch():
    # exactly at the kinks: L1 at d = 0 (0), Huber/SmoothL1 at |d| = delta (±delta / ±1)
    x = torch.tensor([0.0, 1.0, -1.0, 2.0], dtype=torch.float64)
    y = torch.zeros(4, dtype=torch.float64)
    for name, kw in [("l1_loss", {}), ("huber_loss", {"delta": 1.0}), ("smooth_l1_loss", {"beta": 1.0})]:
        report = parity(getattr(F, name), getattr(TF, name), (x, y), dict(kw, reduction="sum"), (0, 1))
        assert report.ok, (name, report.problems)
