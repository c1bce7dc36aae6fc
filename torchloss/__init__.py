"""torchloss: torch.nn's loss functions, re-implemented with hand-derived, differentiable backwards.

``torchloss.functional`` mirrors ``torch.nn.functional``'s losses and the module classes here
mirror ``torch.nn``'s, with the same names, signatures and semantics.
"""

from . import functional
from .modules import *  # noqa: F403
from .modules import __all__ as _modules_all
from .adaptive import AdaptiveLogSoftmaxWithLoss

__version__ = "0.1.0"

__all__ = ["functional", *_modules_all, "AdaptiveLogSoftmaxWithLoss"]
