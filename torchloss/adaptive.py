r"""``AdaptiveLogSoftmaxWithLoss``: torch's module of the same name, on torchloss's Functions.

The parameters live in the same submodules under the same names as torch's (``head``, a
``Linear``; ``tail``, a ``ModuleList`` of ``Sequential(Linear, Linear)``), so a ``state_dict``
moves between the two either way; the math runs through
:class:`torchloss._autograd.adaptive.AdaptiveLogSoftmaxFunction` (one autograd node for
``output`` and ``loss``) and :class:`~torchloss._autograd.adaptive.AdaptiveLogProbFunction`. See
docs/adaptive.md.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from torch import Tensor
from torch.nn import Linear, Module, ModuleList, Sequential

# (the public functions, which torchloss/_autocast.py wraps, so that the module autocasts as torch's)
from . import functional as FA
from .functional.adaptive import _ASMoutput

__all__ = ["AdaptiveLogSoftmaxWithLoss"]


class AdaptiveLogSoftmaxWithLoss(Module):
    r"""Efficient softmax approximation (Grave et al., https://arxiv.org/abs/1609.04309).

    Classes ``[0, cutoffs[0])`` (the shortlist) are scored by the head, a ``Linear(in_features,
    cutoffs[0] + K)`` whose last ``K`` outputs score the tail clusters; cluster ``i`` (classes
    ``[cutoffs[i], cutoffs[i+1])``, the last ending at ``n_classes``) is scored by
    ``Linear(in_features, in_features // div_value**(i+1))`` then ``Linear(.., size)``, both
    without bias. Targets should be sorted by frequency (0 the most frequent).

    ``forward(input, target)`` returns ``(output, loss)``: each row's target log-probability and
    the mean negative log-likelihood. ``log_prob(input)`` gives every class's, ``predict(input)``
    the most probable class. Shapes: input ``(N, in_features)`` or ``(in_features)``, target
    ``(N)`` or ``()``. Drop-in for :class:`torch.nn.AdaptiveLogSoftmaxWithLoss`, with
    ``torch.compile(fullgraph=True)``, ``vmap``, forward-mode AD and double backward besides.
    """

    in_features: int
    n_classes: int
    cutoffs: list[int]
    div_value: float
    head_bias: bool
    head: Linear
    tail: ModuleList

    def __init__(
        self,
        in_features: int,
        n_classes: int,
        cutoffs: Sequence[int],
        div_value: float = 4.0,
        head_bias: bool = False,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        cutoffs = list(cutoffs)
        if not cutoffs:
            raise ValueError("cutoffs should be a sequence of length larger than 0")
        increasing = all(a < b for a, b in itertools.pairwise(cutoffs))
        if not increasing or cutoffs[0] <= 0 or cutoffs[-1] > n_classes - 1 or any(int(c) != c for c in cutoffs):
            raise ValueError(
                "cutoffs should be a sequence of unique, positive integers sorted in an increasing "
                "order, where each value is between 1 and n_classes-1"
            )
        self.in_features = in_features
        self.n_classes = n_classes
        self.cutoffs = cutoffs + [n_classes]
        self.div_value = div_value
        self.head_bias = head_bias
        self.shortlist_size = self.cutoffs[0]
        self.n_clusters = len(self.cutoffs) - 1
        self.head_size = self.shortlist_size + self.n_clusters
        factory = {"device": device, "dtype": dtype}
        self.head = Linear(in_features, self.head_size, bias=head_bias, **factory)
        self.tail = ModuleList()
        for i in range(self.n_clusters):
            hidden = int(in_features // (div_value ** (i + 1)))
            size = self.cutoffs[i + 1] - self.cutoffs[i]
            self.tail.append(
                Sequential(Linear(in_features, hidden, bias=False, **factory), Linear(hidden, size, bias=False, **factory))
            )

    def reset_parameters(self) -> None:
        """Re-initialise every ``Linear`` as at construction."""
        self.head.reset_parameters()
        for projection, output in self.tail:
            projection.reset_parameters()
            output.reset_parameters()

    def _weights(self):
        return [(projection.weight, output.weight) for projection, output in self.tail]

    def forward(self, input_: Tensor, target_: Tensor) -> _ASMoutput:
        """``(output, loss)``: target log-probabilities and their mean negative."""
        return FA.adaptive_log_softmax_with_loss(
            input_, target_, self.head.weight, self.head.bias, self._weights(), self.cutoffs[:-1]
        )

    def log_prob(self, input: Tensor) -> Tensor:
        """Log-probabilities of all ``n_classes`` classes, ``(N, n_classes)``."""
        return FA.adaptive_log_prob(input, self.head.weight, self.head.bias, self._weights(), self.cutoffs[:-1])

    def predict(self, input: Tensor) -> Tensor:
        """The most probable class of each row, ``(N)`` (``log_prob(input).argmax(dim=1)``)."""
        return FA.adaptive_predict(input, self.head.weight, self.head.bias, self._weights(), self.cutoffs[:-1])
