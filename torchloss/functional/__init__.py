"""The public loss functions, mirroring ``torch.nn.functional``.

Each function validates its arguments in the order torch does (so the same bad call raises the
same exception type first), translates the legacy ``size_average``/``reduce`` pair, and calls one
hand-differentiated ``torch.autograd.Function`` from :mod:`torchloss._autograd`; the reduction
happens inside that Function, so the autograd graph of a loss is a single torchloss node.

One module per family (the same family names as ``torchloss._autograd`` and
``torchloss._native/csrc``): a loss's validation, legacy arguments and dispatch live in
``torchloss/functional/<family>.py``; this package re-exports the public functions.
"""

from .regression import (
    l1_loss,
    mse_loss,
    smooth_l1_loss,
    huber_loss,
)
from .binary import (
    soft_margin_loss,
    binary_cross_entropy,
    binary_cross_entropy_with_logits,
)
from .probabilistic import (
    poisson_nll_loss,
    gaussian_nll_loss,
    kl_div,
)
from .classification import nll_loss, cross_entropy
from .margin import (
    multi_margin_loss,
    multilabel_margin_loss,
    multilabel_soft_margin_loss,
)
from .pair import (
    margin_ranking_loss,
    hinge_embedding_loss,
    cosine_embedding_loss,
)
from .triplet import triplet_margin_loss, triplet_margin_with_distance_loss
from .ctc import ctc_loss
from .linear import LinearCrossEntropyOptions as LinearCrossEntropyOptions  # (for torchloss.LinearCrossEntropyOptions)
from .linear import linear_cross_entropy
from .adaptive import adaptive_log_prob, adaptive_log_softmax_with_loss, adaptive_predict

__all__ = [
    "l1_loss",
    "mse_loss",
    "smooth_l1_loss",
    "huber_loss",
    "soft_margin_loss",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "poisson_nll_loss",
    "gaussian_nll_loss",
    "kl_div",
    "nll_loss",
    "cross_entropy",
    "multi_margin_loss",
    "multilabel_margin_loss",
    "multilabel_soft_margin_loss",
    "margin_ranking_loss",
    "hinge_embedding_loss",
    "cosine_embedding_loss",
    "triplet_margin_loss",
    "triplet_margin_with_distance_loss",
    "ctc_loss",
    "linear_cross_entropy",
    "adaptive_log_softmax_with_loss",
    "adaptive_log_prob",
    "adaptive_predict",
]

# Autocast as torch does it (torchloss/_autocast.py, docs/autocast.md): every public functional,
# and so every module (they call these), gets its torch twin's cast policy from one table, and
# runs with autocast disabled inside. A name without a policy is left as it is (and fails
# tests/test_autocast.py's coverage test).
from .._autocast import POLICIES as _POLICIES
from .._autocast import wrap as _autocast_wrap

for _name in __all__:
    if _name in _POLICIES:
        globals()[_name] = _autocast_wrap(_name, globals()[_name])
del _name
