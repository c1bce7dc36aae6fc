"""Case-table entries of CTC."""

from __future__ import annotations

import torch
from torch import Tensor

from ._base import ErrorCase, LossCase, Maker, Sample

# --------------------------------------------------------------------------------------------
# Connectionist temporal classification
#
# The samples hold logits; the generic tests call ``ctc_loss(log_softmax(z), ...)`` on both sides
# (LossCase.compose), the composition on which torch's gradient is the true one, so gradcheck,
# gradgradcheck, jvp and vmap(grad) see exact derivatives. Lengths come as tensors (int64,
# int32), lists and tuples; targets padded (int64, int32) and concatenated.


def _ctc_log_softmax(z: Tensor) -> Tensor:
    return z.log_softmax(-1)


def _ctc_samples(make: Maker) -> list[Sample]:
    T, N, C = 7, 3, 5

    def z(*shape):
        return make.normal(*shape, scale=1.5)

    padded = make.randint(1, C, N, 3)
    il, tl = torch.tensor([7, 5, 6]), torch.tensor([3, 2, 1])
    dev = make.device
    concat = torch.cat([padded[n, : int(tl[n])] for n in range(N)])
    repeated = torch.tensor([[2, 2, 3], [4, 4, 4], [1, 3, 1]], device=dev)
    impossible = torch.tensor([[1, 1, 1], [2, 3, 4], [1, 2, 0]], device=dev)
    blank_last = make.randint(0, C - 1, N, 3)
    return [
        Sample("padded", (z(T, N, C), padded, il.to(dev), tl.to(dev)), wrt=(0,)),
        Sample("concatenated", (z(T, N, C), concat, il.to(dev), tl.to(dev)), wrt=(0,)),
        Sample("lists", (z(T, N, C), padded, [7, 5, 6], [3, 2, 1]), wrt=(0,)),
        Sample("tuples-concatenated", (z(T, N, C), concat, (7, 5, 6), (3, 2, 1)), wrt=(0,)),
        Sample("int32", (z(T, N, C), padded.int(), il.int().to(dev), tl.int().to(dev)), wrt=(0,)),
        Sample("blank-last", (z(T, N, C), blank_last, il.to(dev), tl.to(dev)), {"blank": C - 1}, wrt=(0,)),
        Sample("blank-middle", (z(T, N, C), torch.where(padded == 2, 1, padded), il.to(dev), tl.to(dev)),
               {"blank": 2}, wrt=(0,)),
        Sample("repeated-labels", (z(T, N, C), repeated, il.to(dev), torch.tensor([3, 3, 3], device=dev)), wrt=(0,)),
        Sample("empty-targets", (z(T, N, C), padded, il.to(dev), torch.tensor([0, 2, 0], device=dev)), wrt=(0,)),
        Sample("zero-input-length", (z(T, N, C), padded, torch.tensor([7, 0, 0], device=dev),
                                     torch.tensor([3, 0, 0], device=dev)), wrt=(0,)),
        Sample("zero-infinity", (z(T, N, C), impossible, torch.tensor([4, 2, 7], device=dev),
                                 torch.tensor([3, 3, 2], device=dev)), {"zero_infinity": True}, wrt=(0,)),
        Sample("unbatched", (z(T, C), padded[0], torch.tensor(6, device=dev), torch.tensor(3, device=dev)), wrt=(0,)),
        Sample("unbatched-concatenated", (z(T, C), padded[0, :2], torch.tensor([7], device=dev),
                                          torch.tensor([2], device=dev)), wrt=(0,)),
        Sample("long-time", (z(24, 2, 4), make.randint(1, 4, 2, 6), torch.tensor([24, 19], device=dev),
                             torch.tensor([6, 4], device=dev)), wrt=(0,)),
    ]


def _ctc_errors(make: Maker) -> list[ErrorCase]:
    T, N, C = 5, 3, 4
    x = make.normal(T, N, C).log_softmax(-1)
    targets = make.randint(1, C, N, 4)
    il, tl = torch.tensor([5, 4, 5], device=make.device), torch.tensor([3, 2, 0], device=make.device)
    errors = [
        ErrorCase("bad-reduction", (x, targets, il, tl), {"reduction": "batchmean"}, ValueError, "reduction"),
        ErrorCase("integer-log-probs", (x.long(), targets, il, tl), {}, RuntimeError, "log_probs"),
        ErrorCase("float-lengths", (x, targets, il.double(), tl), {}, RuntimeError, "input_lengths"),
        ErrorCase("list-and-tensor-lengths", (x, targets, [5, 4, 5], tl), {}, TypeError, "input_lengths"),
        ErrorCase("float-blank", (x, targets, il, tl), {"blank": 1.0}, TypeError, "blank"),
        ErrorCase("blank-too-large", (x, targets, il, tl), {"blank": C}, RuntimeError, "blank"),
        ErrorCase("negative-blank", (x, targets, il, tl), {"blank": -1}, RuntimeError, "blank"),
        ErrorCase("input-lengths-size", (x, targets, il[:2], tl), {}, RuntimeError, "input_lengths"),
        ErrorCase("target-lengths-size", (x, targets, il, tl[:2]), {}, RuntimeError, "target_lengths"),
        ErrorCase("targets-batch", (x, targets[:2], il, tl), {}, RuntimeError, "targets"),
        ErrorCase("targets-rank-3", (x, targets.unsqueeze(0), il, tl), {}, RuntimeError, "targets"),
        ErrorCase("log-probs-rank-4", (x.unsqueeze(0), targets, il, tl), {}, RuntimeError, "log_probs"),
        ErrorCase("empty-batch", (x[:, :0], targets[:0], il[:0], tl[:0]), {}, RuntimeError, "log_probs"),
        # found by the differential fuzzer (torchloss/testing/fuzz.py)
        ErrorCase("0d-log-probs", (x[0, 0, 0], targets[0, :0], il[0], tl[2]), {}, IndexError, "log_probs"),
        ErrorCase("blank-1-element-tensor", (x, targets, il, tl), {"blank": torch.tensor([0])}, TypeError, "blank"),
    ]
    if make.device.type == "cpu":
        errors += [
            ErrorCase("input-length-above-T", (x, targets, il + 1, tl), {}, RuntimeError, "input_lengths"),
            ErrorCase("negative-target-length", (x, targets, il, tl - 3), {}, RuntimeError, "target_lengths"),
            ErrorCase("target-length-above-S", (x, targets, il, torch.tensor([5, 0, 0])), {}, RuntimeError, "targets"),
            ErrorCase("concatenated-total", (x, targets.flatten()[:3], il, tl), {}, RuntimeError, "targets"),
            # an unbatched call's 1-d target is the concatenated form: its length must be the
            # target length (found by the fuzzer)
            ErrorCase("unbatched-target-longer", (x[:, 0], targets[0], il[0], tl[0]), {}, RuntimeError, "targets"),
        ]
    return errors


_CTC_CASES: list[LossCase] = [
    LossCase(
        "ctc_loss",
        "CTCLoss",
        samples=_ctc_samples,
        errors=_ctc_errors,
        legacy=False,
        torch_forward_ad=False,
        forward_arity=4,
        compose=_ctc_log_softmax,
        notes="log-space alpha/beta in one batched recursion; torch's gradient exp(x) - posterior, "
        "exact after log_softmax, with double backward and jvp (torch has neither); "
        "float16/bfloat16 computed in float32 (torch's CPU refuses them)",
    ),
]
