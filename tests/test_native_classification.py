"""Native kernels of the classification family (NLL, cross entropy) against the reference."""

import pytest
import torch

import torchloss.functional as TF
from native_util import check_double_backward, check_kernel, requires_native, takes_kernel

pytestmark = requires_native

REDUCTIONS = ["none", "mean", "sum"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("shape", [(1, 1), (32, 10), (7, 1000)], ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_nll_matches_reference(shape, reduction, dtype):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g, dtype=dtype).log_softmax(1)
    t = torch.randint(0, shape[1], shape[:1], generator=g)
    check_kernel(TF.nll_loss, (x, t), {"reduction": reduction}, node="NLLPlain")


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_nll_double_backward(reduction):
    x = torch.randn(6, 4, dtype=torch.float64)
    t = torch.tensor([0, 3, 1, 1, 2, 0])
    check_double_backward(TF.nll_loss, (x, t), {"reduction": reduction})


def test_nll_reference_takes_the_rest():
    x = torch.randn(6, 4)
    t = torch.tensor([0, 3, 1, 1, 2, 0])
    assert not takes_kernel(TF.nll_loss, (x.t().contiguous().t(), t))  # non-contiguous
    assert not takes_kernel(TF.nll_loss, (x.half(), t))
    assert not takes_kernel(TF.nll_loss, (x, t), {"weight": torch.rand(4)})
    assert not takes_kernel(TF.nll_loss, (x, t), {"ignore_index": 1})
    assert not takes_kernel(TF.nll_loss, (x.reshape(6, 4, 1), t.reshape(6, 1)))
    with pytest.raises(IndexError, match="out of bounds"):
        TF.nll_loss(x, torch.tensor([0, 4, 1, 1, 2, 0]))
    # the ignored index outside [0, C): the kernel's bounds check sends it to the reference
    t2 = torch.tensor([0, -100, 1, 1, 2, 0])
    torch.testing.assert_close(TF.nll_loss(x, t2), torch.nn.functional.nll_loss(x, t2))
