"""The declarative case table: for every loss, sample inputs covering its arguments.

One :class:`LossCase` per loss. The generic tests (``tests/``) and ``python -m torchloss check``
run every sample of every case through the same checks, so adding a loss means adding an entry
here. A case says:

* ``name``: the functional's name in both ``torchloss.functional`` and ``torch.nn.functional``;
  ``module``: the class name in both ``torchloss`` and ``torch.nn``;
* ``samples(make)``: a list of :class:`Sample`; ``make`` draws seeded random tensors on the test's
  device and dtype (see :class:`Maker`). Samples stay away from the loss's kinks, where finite
  differences and the two implementations' subgradients may legitimately disagree;
* ``reductions`` and whether the legacy ``size_average``/``reduce`` pair is accepted;
* ``errors(make)``: bad calls, as :class:`ErrorCase`, that must raise torch's exception type;
* ``empty(make)``: zero-size samples (N = 0);
* tolerances per dtype.

One module per family (``torchloss/testing/cases/<family>.py``, the family names of
``torchloss.functional`` and ``torchloss._autograd``); the shared dataclasses and :class:`Maker`
are in ``_base``. This package collects the families' entries into :data:`CASES`.
"""

from __future__ import annotations

from ._base import DEFAULT_TOL, REDUCTIONS, ErrorCase, LossCase, Maker, Sample
from .regression import _REGRESSION_CASES
from .binary import _BINARY_CASES
from .probabilistic import _PROBABILISTIC_CASES
from .classification import _CLASSIFICATION_CASES
from .margin import _MARGIN_CASES
from .pair import _PAIR_CASES
from .triplet import _TRIPLET_CASES
from .ctc import _CTC_CASES
from .linear import _LINEAR_CASES
from .adaptive import _ADAPTIVE_CASES

__all__ = ["CASES", "DEFAULT_TOL", "REDUCTIONS", "ErrorCase", "LossCase", "Maker", "Sample", "get"]

CASES: list[LossCase] = (
    _REGRESSION_CASES
    + _BINARY_CASES
    + _PROBABILISTIC_CASES
    + _CLASSIFICATION_CASES
    + _MARGIN_CASES
    + _PAIR_CASES
    + _TRIPLET_CASES
    + _CTC_CASES
    + _LINEAR_CASES
    + _ADAPTIVE_CASES
)


def get(name: str) -> LossCase:
    """The case of a loss, by functional or module name."""
    for case in CASES:
        if case.name == name or case.module == name:
            return case
    raise KeyError(name)
