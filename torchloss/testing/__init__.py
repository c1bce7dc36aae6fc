"""Helpers for testing a loss against a reference and checking its autograd, usable on your own losses.

The building blocks of torchloss's own test-suite and of ``python -m torchloss check``:

* :func:`parity` runs a loss and a reference on the same inputs and compares outputs and input
  gradients under one random upstream gradient;
* :func:`check_autograd` runs ``gradcheck`` (with batched gradients) / ``gradgradcheck``, the
  forward-mode check and :func:`check_vectorized_jacobian` (``jacobian(vectorize=True)``);
* :func:`check_jvp` and :func:`check_vmap` compare ``torch.func.jvp`` / ``torch.func.vmap``
  (including ``vmap(grad)``) against a reference or a plain Python loop;
* :func:`saved_bytes` measures the memory a call's autograd graph keeps for backward;
* :func:`graph_functions` lists the autograd ``Function`` classes between an output and its leaves.

Inputs are given as ``args`` (positional) and ``kwargs``; the differentiable ones are named by
``wrt``, a tuple of positions (ints) and keyword names (strs).
"""

from ._helpers import (
    Report,
    check_autograd,
    check_jvp,
    check_vectorized_jacobian,
    check_vmap,
    graph_functions,
    max_error,
    parity,
    saved_bytes,
)

__all__ = [
    "Report",
    "check_autograd",
    "check_jvp",
    "check_vectorized_jacobian",
    "check_vmap",
    "graph_functions",
    "max_error",
    "parity",
    "saved_bytes",
]
