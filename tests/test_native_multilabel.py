"""Native kernel of multilabel_margin_loss against the reference."""

import pytest
import torch

import torchloss.functional as TF
from native_util import check_double_backward, check_kernel, requires_native, takes_kernel

pytestmark = requires_native

REDUCTIONS = ["none", "mean", "sum"]
F = TF.multilabel_margin_loss


def _target(n, c, labels, generator, ragged=False):
    """Labels drawn with repeats, then -1; with ``ragged``, each row ends at its own length and
    the entries after the terminator are arbitrary classes or -1."""
    t = torch.randint(0, c, (n, c), generator=generator)
    if ragged:
        ends = torch.randint(0, min(labels, c) + 1, (n,), generator=generator)
        for r in range(n):
            if ends[r] < c:
                t[r, ends[r]] = -1
                t[r, ends[r] + 1 :: 2] = -1
    elif labels < c:
        t[:, labels:] = -1
    return t


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize(
    "shape,labels",
    [((1, 1), 1), ((32, 10), 4), ((5, 7), 7), ((6, 200), 120), ((100, 1000), 4), ((64, 1024), 300)],
    ids=str,
)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_matches_reference(shape, labels, reduction, dtype):
    # (100, 1000): the parallel path; (6, 200) and (64, 1024) with many labels: the sorted counts
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g, dtype=dtype)
    t = _target(*shape, labels, g, ragged=True)
    check_kernel(F, (x, t), {"reduction": reduction}, node="MultiLabelMargin")
    t = _target(*shape, labels, g)
    check_kernel(F, (x, t), {"reduction": reduction}, node="MultiLabelMargin")


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_unbatched_and_empty(reduction):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(9, generator=g)
    t = torch.tensor([3, 0, 3, -1, 8, 2, -1, 5, 1])
    check_kernel(F, (x, t), {"reduction": reduction}, node="MultiLabelMargin")
    assert F(x, t, reduction=reduction).shape == ()
    e = torch.empty(0, 5)
    check_kernel(F, (e, torch.empty(0, 5, dtype=torch.long)), {"reduction": reduction}, node="MultiLabelMargin")


@pytest.mark.parametrize("linear", [True, False], ids=["passes", "sorted"])
def test_ties_and_non_finite(linear):
    # scores exactly one apart (a kink: inactive), infinities and NaN, in both counting modes
    c = 8 if linear else 400
    x = torch.zeros(3, c)
    x[0, :8] = torch.tensor([1.0, 0.0, 0.0, 2.0, 1.0, float("inf"), -float("inf"), 0.5])
    x[1, :8] = torch.tensor([float("nan"), 0.0, 1.0, -float("inf"), 3.0, 2.0, float("nan"), 0.0])
    x[2, :8] = torch.tensor([float("inf"), 1.0, 0.0, -float("inf"), float("nan"), 0.0, 1.0, 2.0])
    labels = 3 if linear else 150
    g = torch.Generator().manual_seed(2)
    t = torch.randint(0, c, (3, c), generator=g)
    t[:, :3] = torch.tensor([[0, 6, 0], [0, 2, 3], [6, 1, 7]])
    t[:, labels:] = -1
    for reduction in REDUCTIONS:
        check_kernel(F, (x, t), {"reduction": reduction}, node="MultiLabelMargin")


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_double_backward(reduction):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(5, 6, dtype=torch.float64, generator=g)
    t = torch.tensor([[3, 0, -1, 1, 1, 1], [5, -1, 0, 0, 0, 0], [-1, 2, 2, 2, 2, 2],
                      [0, 1, 2, 3, 4, 5], [2, 2, 4, -1, -1, -1]])
    check_double_backward(F, (x, t), {"reduction": reduction})


def test_agrees_with_torch():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(32, 10, generator=g, requires_grad=True)
    t = _target(32, 10, 4, g, ragged=True)
    for reduction in REDUCTIONS:
        ours = F(x, t, reduction=reduction)
        theirs = torch.nn.functional.multilabel_margin_loss(x, t, reduction=reduction)
        torch.testing.assert_close(ours, theirs)
        w = torch.randn_like(ours)
        torch.testing.assert_close(torch.autograd.grad(ours, x, w)[0], torch.autograd.grad(theirs, x, w)[0])


def test_reference_takes_the_rest():
    x = torch.randn(6, 4)
    t = torch.tensor([[0, 3, -1, 0]] * 6)
    assert takes_kernel(F, (x, t))
    assert not takes_kernel(F, (x.t().contiguous().t(), t))  # non-contiguous input
    assert not takes_kernel(F, (x, t.t().contiguous().t()))  # non-contiguous target
    assert not takes_kernel(F, (x.half(), t))
    assert not takes_kernel(F, (x.bfloat16(), t))
    assert not takes_kernel(F, (torch.randn(()), torch.tensor(0)))  # 0-d input
    assert not takes_kernel(F, (torch.randn(1), torch.tensor(0)))  # (1) input, 0-d target
    # a large batch with more than max(64, C/4) labels a row: the reference (faster there)
    g = torch.Generator().manual_seed(5)
    big = torch.randn(80, 1024, generator=g)
    many = torch.randint(0, 1024, (80, 1024), generator=g)
    assert not takes_kernel(F, (big, many))
    few = many.clone()
    few[:, 256:] = -1
    assert takes_kernel(F, (big, few))
    wide = 40000
    assert not takes_kernel(F, (torch.randn(1, wide), torch.full((1, wide), -1)))


def test_errors():
    x = torch.randn(4, 5)
    t = torch.tensor([[0, 3, -1, 0, 0]] * 4)
    message = r"argument #2 'target' is out of range .* \[0, 4\] or -1\)"
    for bad in (5, -2):
        t2 = t.clone()
        t2[2, 4] = bad  # after the terminator: still checked
        with pytest.raises(RuntimeError, match=message):
            F(x, t2)
        with pytest.raises(RuntimeError, match=message):
            F(x.requires_grad_(), t2, reduction="none")
        x = x.detach()
    with pytest.raises(RuntimeError, match=message):
        F(torch.randn(5), torch.tensor([0, 7, -1, 0, 0]))
    with pytest.raises(RuntimeError, match="inconsistent target size"):
        F(x, t[:, :4])
    # a non-int64 target is checked after the range, by the reference path
    with pytest.raises(RuntimeError, match="out of range"):
        F(x, t.int() + 9)
    with pytest.raises(RuntimeError):
        F(x, t.int())
    with pytest.raises(NotImplementedError):
        F(x.long(), t)
