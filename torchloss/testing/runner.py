"""Driving the case table: the plumbing shared by ``python -m torchloss check`` and the tests.

The case table (:mod:`torchloss.testing.cases`) says *what* to run; this module turns a
:class:`~torchloss.testing.cases.LossCase` into calls:

* :func:`functions` -- the torchloss functional and torch's, looked up by the case's name (and
  composed with ``case.compose`` when the case has one);
* :func:`quiet` -- a wrapper that silences warnings (broadcasting, deprecations) inside a call;
* :func:`samples` / :func:`combos` -- a case's samples on a device and dtype, and every
  ``(index, sample, reduction)`` combination with the keyword arguments of the call;
* :func:`vmap_batch` -- the batch :func:`~torchloss.testing.check_vmap` runs on: one sample drawn
  with several seeds, sharing everything but the differentiable inputs.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Iterator, Sequence

import torch

from .cases import LossCase, Maker, Sample

__all__ = ["call_kwargs", "combos", "functions", "get_slot", "or_skip", "ours_function", "quiet", "samples", "torch_or_ours", "vmap_batch"]


def functions(case: LossCase) -> tuple[Callable, Callable]:
    """``(torchloss.functional.<name>, torch.nn.functional.<name>)`` for a case.

    Raises ``LookupError`` naming the side that lacks the function (a case added before its
    functional, or a torch too old to have the loss).
    """
    ours = case.torchloss_functional()
    ref = case.torch_functional()
    if case.compose is not None:
        ours, ref = _composed(ours, case.compose), _composed(ref, case.compose)
    return ours, ref


def ours_function(case: LossCase) -> Callable:
    """torchloss's functional for a case, composed as the generic checks call it: what the checks
    of torchloss's own features (gradcheck, jvp, vmap, compile) need, whatever torch has."""
    ours = case.torchloss_functional()
    return _composed(ours, case.compose) if case.compose is not None else ours


def torch_or_ours(case: LossCase) -> Callable:
    """torch's functional for a case where the installed torch has it, else torchloss's own (a
    reference for checks that compare a transform with the eager loss: vmap, compile)."""
    try:
        return functions(case)[1]
    except LookupError:
        return ours_function(case)


def or_skip(get: Callable, *args):
    """``get(*args)``, or a pytest skip when it raises ``LookupError`` (a side that lacks the
    loss: e.g. ``functions``, ``LossCase.torch_functional`` on a torch without it)."""
    try:
        return get(*args)
    except LookupError as e:
        import pytest

        pytest.skip(str(e))


def _composed(fn: Callable, inner: Callable) -> Callable:
    """``fn(inner(x), *rest)``: the loss as the generic checks call it (see ``LossCase.compose``)."""

    @functools.wraps(fn)
    def call(x, *args, **kwargs):
        return fn(inner(x), *args, **kwargs)

    return call


def quiet(fn: Callable) -> Callable:
    """``fn`` with every warning it emits ignored (torch's and torchloss's alike)."""

    @functools.wraps(fn)
    def call(*args, **kwargs):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fn(*args, **kwargs)

    return call


def samples(
    case: LossCase,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float64,
    seed: int = 0,
    kind: str = "samples",
) -> list[Sample]:
    """The case's samples (``kind="empty"`` for its zero-size ones) drawn on ``device``/``dtype``.

    The tensors are drawn in float64 and then cast, so one seed gives the same values (up to
    rounding) in every dtype.
    """
    return getattr(case, kind)(Maker(device, dtype, seed))


def call_kwargs(sample: Sample, reduction: str) -> dict:
    """The keyword arguments of the call of ``sample`` under ``reduction``."""
    return dict(sample.kwargs, reduction=reduction)


def combos(case: LossCase, drawn: Sequence[Sample]) -> Iterator[tuple[int, Sample, str]]:
    """Every ``(index, sample, reduction)`` of a case, in table order."""
    for i, s in enumerate(drawn):
        for reduction in case.reductions:
            yield i, s, reduction


def get_slot(sample: Sample, slot: int | str):
    """The input of ``sample`` at ``slot`` (a position in ``args`` or a key of ``kwargs``)."""
    return sample.kwargs[slot] if isinstance(slot, str) else sample.args[slot]


def vmap_batch(per_seed: Sequence[Sample], reduction: str) -> tuple[list[tuple[list, dict]], tuple]:
    """The batch and ``wrt`` for :func:`~torchloss.testing.check_vmap` from one sample drawn with
    several seeds (``per_seed[0]`` is the base).

    Every element of the batch is the base sample's call with its differentiable inputs (the ones
    the reference differentiates: ``torch_wrt``, else ``wrt``) taken from one seed's draw, so the
    batch shares every non-batched argument, as ``vmap`` needs.
    """
    base = per_seed[0]
    wrt = tuple(base.torch_wrt or base.wrt)
    batch = []
    for s in per_seed:
        args, kwargs = list(base.args), call_kwargs(base, reduction)
        for slot in wrt:
            if isinstance(slot, str):
                kwargs[slot] = get_slot(s, slot)
            else:
                args[slot] = get_slot(s, slot)
        batch.append((args, kwargs))
    return batch, wrt
