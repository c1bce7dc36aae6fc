"""Case-table entry of linear cross entropy (``linear_cross_entropy`` / ``LinearCrossEntropyLoss``).

Samples cover unbatched and batched inputs, a bias, class weights, ``ignore_index`` (default -100
and explicit, inside and outside ``[0, C)``), label smoothing, K-dimensional losses
(``linear_weight`` ``(C, d1, .., dK, in)``), probability targets (whose target and weight are
differentiable) and small memory budgets that split the vocabulary into several blocks (so the
online combination of block statistics runs in every generic check). All samples are
``module=False``: the module's constructor takes ``in_features``/``num_classes`` rather than the
functional's tensors, so it is tested in tests/test_linear_specific.py (repr, state_dict both
ways, values). torch's ``linear_cross_entropy`` (2.13) is the reference; on an older torch the
comparisons skip (``LookupError``) and torchloss's own checks still run.
"""

from __future__ import annotations

import torch

from ._base import ErrorCase, LossCase, Maker, Sample


def _reference():
    import torch.nn.functional as TF

    ref = getattr(TF, "linear_cross_entropy", None)
    if ref is None:
        raise LookupError(f"torch.nn.functional has no 'linear_cross_entropy' (torch {torch.__version__})")

    def reference(*args, options=None, **kwargs):
        # torch's reference path (options=None): the samples' options are torchloss's (a budget)
        return ref(*args, **kwargs)

    return reference


def _reference_module():
    cls = getattr(torch.nn, "LinearCrossEntropyLoss", None)
    if cls is None:
        raise LookupError(f"torch.nn has no 'LinearCrossEntropyLoss' (torch {torch.__version__})")
    return cls


def _budget(nbytes: int):
    from torchloss import LinearCrossEntropyOptions

    return LinearCrossEntropyOptions(memory_budget=nbytes)


def _labels(make: Maker, C: int, *shape, ignore=None, dtype=torch.int64):
    t = make.randint(0, C, *shape)
    if ignore is not None and t.numel() > 1:
        t.view(-1)[::3] = ignore
    return t.to(dtype)


def _probs(make: Maker, *shape, dim=1):
    return make.normal(*shape, dtype=torch.float64).softmax(dim).to(make.dtype)


def _samples(make: Maker) -> list[Sample]:
    N, K, C = 6, 4, 7

    def x(*shape):
        return make.normal(*shape)

    def w(*shape):
        return make.normal(*shape, scale=0.7)

    def cw():
        return make.uniform(C, low=0.2, high=2.0)

    # budgets small enough to split the vocabulary (a few hundred bytes) or the rows
    tiny = {"options": _budget(200)}
    return [
        Sample("plain", (x(N, K), w(C, K), _labels(make, C, N)), {}, wrt=(0, 1), module=False),
        Sample("unbatched", (x(K), w(C, K), _labels(make, C)), {"label_smoothing": 0.1}, wrt=(0, 1), module=False),
        Sample("bias-weight", (x(N, K), w(C, K), _labels(make, C, N)), {"linear_bias": make.normal(C), "weight": cw()},
               wrt=(0, 1, "linear_bias"), module=False),
        Sample("ignore-default", (x(N, K), w(C, K), _labels(make, C, N, ignore=-100)), {"weight": cw()}, wrt=(0, 1), module=False),
        Sample("ignore-in-range-smoothing", (x(N, K), w(C, K), _labels(make, C, N, ignore=2)),
               {"ignore_index": 2, "label_smoothing": 0.2, "weight": cw()}, wrt=(0, 1), module=False),
        Sample("vocab-blocks", (x(N, K), w(C, K), _labels(make, C, N, ignore=-1)),
               dict(tiny, ignore_index=-1, label_smoothing=0.15, linear_bias=make.normal(C)), wrt=(0, 1, "linear_bias"), module=False),
        Sample("kdim", (x(3, K), w(C, 2, 3, K), _labels(make, C, 3, 2, 3)), {"linear_bias": make.normal(C, 2, 3)},
               wrt=(0, 1, "linear_bias"), module=False),
        Sample("kdim-smoothing-blocks", (x(3, K), w(C, 2, K), _labels(make, C, 3, 2, ignore=-100)),
               dict(tiny, label_smoothing=0.1, weight=cw()), wrt=(0, 1), module=False),
        Sample("uint8-target", (x(N, K), w(C, K), _labels(make, C, N, dtype=torch.uint8)), {}, wrt=(0, 1), module=False),
        Sample("probs", (x(N, K), w(C, K), _probs(make, N, C)), {}, wrt=(0, 1, 2), module=False),
        Sample("probs-weight-smoothing-bias", (x(N, K), w(C, K), _probs(make, N, C)),
               {"weight": cw(), "label_smoothing": 0.2, "linear_bias": make.normal(C)}, wrt=(0, 1, 2, "weight", "linear_bias"), module=False),
        Sample("probs-unbatched", (x(K), w(C, K), _probs(make, C, dim=0)), {"weight": cw()}, wrt=(0, 1, 2, "weight"), module=False),
        Sample("probs-kdim-blocks", (x(3, K), w(C, 2, K), _probs(make, 3, C, 2)), dict(tiny, label_smoothing=0.1),
               wrt=(0, 1, 2), module=False),
    ]


def _errors(make: Maker) -> list[ErrorCase]:
    N, K, C = 4, 3, 5
    x, w, y = make.normal(N, K), make.normal(C, K), make.randint(0, C, N)
    p = make.uniform(N, C, low=0.0, high=1.0)
    other = torch.float32 if make.dtype == torch.float64 else torch.float64
    errors = [
        ErrorCase("input-3d", (x.unsqueeze(0), w, y), {}, RuntimeError, "input with dimensionality"),
        ErrorCase("linear-weight-1d", (x, w[0], y), {}, RuntimeError, "linear_weight with dimensionality"),
        ErrorCase("in-features", (x, w[:, :2], y), {}, RuntimeError, "in_features"),
        ErrorCase("bias-shape", (x, w, y), {"linear_bias": make.normal(C - 1)}, RuntimeError, "linear_bias shape"),
        ErrorCase("kdim-unbatched", (x[0], w.unsqueeze(1), y[0]), {}, RuntimeError, "requires batched input"),
        ErrorCase("probs-ignore-index", (x, w, p), {"ignore_index": -100}, RuntimeError, "ignore_index"),
        ErrorCase("weight-dtype-mismatch", (x, w.to(other), y), {}, RuntimeError, "linear_weight"),
        ErrorCase("bias-dtype-mismatch", (x, w, y), {"linear_bias": make.normal(C, dtype=other)}, RuntimeError, "linear_bias"),
        ErrorCase("integer-input", (x.long(), w.long(), y), {}, NotImplementedError, "input"),
        ErrorCase("bad-reduction", (x, w, y), {"reduction": "batchmean"}, ValueError, "reduction"),
        ErrorCase("smoothing-above-1", (x, w, y), {"label_smoothing": 1.5}, RuntimeError, "label_smoothing"),
        ErrorCase("batch-mismatch", (x, w, y[:3]), {}, ValueError, "batch_size"),
        ErrorCase("int32-target", (x, w, y.int()), {}, RuntimeError, "target dtype"),
        ErrorCase("weight-size", (x, w, y), {"weight": make.uniform(C - 1)}, RuntimeError, "weight"),
        ErrorCase("weight-dtype", (x, w, y), {"weight": make.uniform(C, dtype=other)}, RuntimeError, "weight"),
        ErrorCase("weight-requires-grad", (x, w, y), {"weight": make.uniform(C).requires_grad_()}, RuntimeError,
                  "not differentiable with respect to argument 'weight'"),
    ]
    if make.device.type == "cpu":
        errors.append(ErrorCase("target-above-C", (x, w, torch.tensor([1, 0, 5, 2])), {}, IndexError, "out of bounds"))
    return errors


def _empty(make: Maker) -> list[Sample]:
    K, C = 4, 5
    return [
        Sample("empty", (make.normal(0, K), make.normal(C, K), make.randint(0, C, 0)), {}, wrt=(0, 1), module=False),
        Sample("empty-smoothing-bias", (make.normal(0, K), make.normal(C, K), make.randint(0, C, 0)),
               {"label_smoothing": 0.1, "linear_bias": make.normal(C)}, wrt=(0, 1, "linear_bias"), module=False),
        Sample("empty-probs", (make.normal(0, K), make.normal(C, K), make.uniform(0, C)), {}, wrt=(0, 1, 2), module=False),
    ]


_LINEAR_CASES: list[LossCase] = [
    LossCase(
        "linear_cross_entropy",
        "LinearCrossEntropyLoss",
        samples=_samples,
        errors=_errors,
        empty=_empty,
        legacy=False,
        reference=_reference,
        reference_module=_reference_module,
        notes=(
            "streamed: the logits are formed block by block within options.memory_budget bytes "
            "(samples with a 200-byte budget split the vocabulary); module tests are in "
            "tests/test_linear_specific.py (the constructor takes in_features/num_classes)"
        ),
    ),
]
