"""Case-table entry of AdaptiveLogSoftmaxWithLoss.

torch has no functional for it, and its module returns ``(output, loss)`` with parameters in
submodules, so the entry runs flat wrappers on both sides: ``(input, target, head_weight,
head_bias, P_1, O_1, ..., P_K, O_K, cutoffs=..., reduction=...)`` returning one tensor, the loss
reduced as asked (``'mean'``: the module's ``loss``; ``'none'``: ``-output``; ``'sum'``: its sum).
torch's side is its module (built on the meta device) run with these tensors as its parameters
(``torch.func.functional_call``), so every weight's gradient is compared with torch's. Every
sample has targets in every tail cluster whose weights it differentiates: torch leaves the
gradient of an unused cluster undefined (None) where torchloss gives zeros. The module itself
(``state_dict`` both ways, ``repr``, ``log_prob``, ``predict``) is tested in
tests/test_adaptive_specific.py, hence ``module=False`` on every sample.
"""

from __future__ import annotations

import torch

from ._base import ErrorCase, LossCase, Maker, Sample

# small, as gradgradcheck's cost grows with the square of the number of elements differentiated
_D = 4
_CUTOFFS = [2, 4]
_N_CLASSES = 7
_HIDDEN = [2, 1]  # any sizes fit the functional (torch's module computes them from div_value)
_REDUCTIONS = ("none", "mean", "sum")


def _pairs(tail):
    return [(tail[2 * i], tail[2 * i + 1]) for i in range(len(tail) // 2)]


def _ours(input, target, head_weight, head_bias, *tail, cutoffs, reduction="mean"):
    import torchloss.functional as F

    return F.adaptive_log_softmax_with_loss(input, target, head_weight, head_bias, _pairs(tail), cutoffs, reduction).loss


def _torch(input, target, head_weight, head_bias, *tail, cutoffs, reduction="mean", div_value=1.0):
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{reduction} is not a valid value for reduction")
    n_classes = cutoffs[-1] + tail[-1].shape[0]
    module = torch.nn.AdaptiveLogSoftmaxWithLoss(
        head_weight.shape[-1], n_classes, cutoffs, div_value=div_value, head_bias=head_bias is not None, device="meta"
    )
    params = {"head.weight": head_weight}
    if head_bias is not None:
        params["head.bias"] = head_bias
    for i, (P, O) in enumerate(_pairs(tail)):
        params[f"tail.{i}.0.weight"], params[f"tail.{i}.1.weight"] = P, O
    output, loss = torch.func.functional_call(module, params, (input, target))
    if reduction == "mean":
        return loss
    return -output if reduction == "none" else -output.sum()


def _weights(make: Maker, bias: bool):
    head = [make.normal(_CUTOFFS[0] + len(_CUTOFFS), _D, scale=0.5), make.normal(_CUTOFFS[0] + len(_CUTOFFS)) if bias else None]
    bounds = _CUTOFFS + [_N_CLASSES]
    tail = []
    for i, h in enumerate(_HIDDEN):
        tail += [make.normal(h, _D, scale=0.5), make.normal(bounds[i + 1] - bounds[i], h)]
    return head, tail


def _targets(make: Maker, n: int):
    t = make.randint(0, _N_CLASSES, n)
    t[:3] = torch.tensor([0, 2, 6])[: min(n, 3)]  # the shortlist and every cluster
    return t


_ALL = (0, 2, 4, 5, 6, 7)


def _samples(make: Maker) -> list[Sample]:
    kw = {"cutoffs": list(_CUTOFFS)}
    (hw, _), tail = _weights(make, False)
    (hwb, hb), tail_b = _weights(make, True)
    one = torch.tensor([3])
    return [
        Sample("batch", (make.normal(5, _D), _targets(make, 5), hw, None, *tail), dict(kw), wrt=_ALL, module=False),
        Sample("head-bias", (make.normal(6, _D), _targets(make, 6), hwb, hb, *tail_b), dict(kw), wrt=_ALL + (3,), module=False),
        # one target, in the first tail cluster: the other' weights are unused
        Sample("unbatched", (make.normal(_D), one[0].clone(), hwb, hb, *tail_b), dict(kw), wrt=(0, 2, 3, 4, 5), module=False),
        Sample("one-row", (make.normal(1, _D), one.clone(), hw, None, *tail), dict(kw), wrt=(0, 2, 4, 5), module=False),
        Sample(
            "shortlist-only",
            (make.normal(4, _D), make.randint(0, _CUTOFFS[0], 4), hw, None, *tail),
            dict(kw),
            wrt=(0, 2),
            module=False,
        ),
    ]


def _empty(make: Maker) -> list[Sample]:
    (hw, _), tail = _weights(make, False)
    return [
        Sample(
            "empty",
            (make.normal(0, _D), make.randint(0, _N_CLASSES, 0), hw, None, *tail),
            {"cutoffs": list(_CUTOFFS)},
            wrt=(0, 2),
            module=False,
        )
    ]


def _errors(make: Maker) -> list[ErrorCase]:
    (hw, _), tail = _weights(make, False)
    x, t = make.normal(4, _D), _targets(make, 4)
    kw = {"cutoffs": list(_CUTOFFS)}
    return [
        ErrorCase("2d-target", (x, t.view(2, 2), hw, None, *tail), kw, RuntimeError, "multi-target not supported"),
        ErrorCase("batch-mismatch", (x, t[:3], hw, None, *tail), kw, RuntimeError, "same size in the batch dimension"),
        ErrorCase("1d-target-3d-input", (x.view(4, 2, 2), t, hw, None, *tail), kw, RuntimeError, "1D target tensor expects 2D input"),
        ErrorCase("0d-target-2d-input", (x, t[0], hw, None, *tail), kw, RuntimeError, "0D target tensor expects 1D input"),
        ErrorCase("target-too-large", (x, t + 6, hw, None, *tail), kw, RuntimeError, r"Target values should be in \[0, 6\]"),
        ErrorCase("negative-target", (x, t - 1, hw, None, *tail), kw, RuntimeError, r"Target values should be in \[0, 6\]"),
        ErrorCase("feature-mismatch", (make.normal(4, _D + 1), t, hw, None, *tail), kw, RuntimeError, "shapes"),
    ]


_ADAPTIVE_CASES = [
    LossCase(
        name="adaptive_log_softmax_with_loss",
        module="AdaptiveLogSoftmaxWithLoss",
        samples=_samples,
        errors=_errors,
        empty=_empty,
        reductions=_REDUCTIONS,
        legacy=False,
        functional=lambda: _ours,
        reference=lambda: _torch,
        notes=(
            "torch has no functional: both sides are flat wrappers returning the loss reduced as "
            "asked ('mean' is the module's loss, 'none' -output); torch's side is its module run "
            "with the sample's tensors as parameters. The module is tested in "
            "tests/test_adaptive_specific.py."
        ),
    )
]
