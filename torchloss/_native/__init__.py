"""torchloss's native CPU kernels: an optional fast path beside the Python reference.

A loss called eagerly on small CPU tensors costs mostly call overhead: a Python
``autograd.Function`` alone costs about 17 us per forward and backward, more than torch's whole
``nll_loss`` step (about 14 us), and every torch op in its forward or backward costs 1-2 us more.
The kernels in ``csrc/`` are ``torch::autograd::Function`` s written in C++ as plain loops over
contiguous float/double CPU tensors, for the losses whose torch counterpart is one fused kernel
(where the reference, a few ops in Python, cannot come close at small sizes).

They are an optional fast path, never the definition:

* The Python Functions of ``torchloss/_autograd`` remain the reference. They run every call a kernel
  does not take: CUDA, float16/bfloat16, ``torch.compile``, ``torch.func`` transforms, forward-mode
  AD, and any layout or argument a kernel does not handle. The tests compare every kernel with
  them.
* A kernel's backward is a loop, not differentiable ops. When a backward runs with
  ``create_graph=True``, the node hands its saved inputs to :func:`_reference_backward`, which
  recomputes the loss with the reference Function and differentiates it with
  ``create_graph=True``. Double backward then sees exactly the reference's graph.
* The kernels are compiled on this machine, against the installed torch, by
  ``python -m torchloss build`` (about 30-60 s; it needs a C++ compiler and ninja). Until then, or
  with ``TORCHLOSS_NATIVE=0`` in the environment, every call runs the reference. A build is cached
  under ``~/.cache/torchloss`` (or ``$TORCHLOSS_CACHE``), keyed by the sources, the torch version
  and the Python version, and loaded at import when present.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import os
import sys
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor
from torch._subclasses.fake_tensor import FakeTensor as _FakeTensor

__all__ = ["module", "state", "build", "load", "enabled", "eager"]

_CSRC = Path(__file__).with_name("csrc")
# -fopenmp: at::parallel_for is inline OpenMP code; the extension then needs libgomp.so.1, which
# is the one torch has loaded already (one OpenMP runtime, torch's thread settings).
# -ffp-contract=off: no fused multiply-adds behind the code's back, so that the ISA clones of a
# loop (and every machine) round alike (torch's -std=c++20 implies it for GCC; this makes it sure).
_CFLAGS = ["-O3", "-fopenmp", "-ffp-contract=off"]
_LDFLAGS = ["-fopenmp"]

#: The loaded extension module, or None (not built, disabled, or failed to load).
module = None
#: One line on the kernels' state, for reports: "loaded from ...", "not built ...", "disabled ...".
state = "not loaded"


def _sources() -> list[Path]:
    """The C++ files to build: all of them, or (for working on one family) bindings.cpp and the
    families named in ``TORCHLOSS_NATIVE_FILES`` (comma-separated, e.g. ``margin,binary``)."""
    only = os.environ.get("TORCHLOSS_NATIVE_FILES", "").strip()
    files = sorted(_CSRC.glob("*.cpp"))
    if only:
        keep = {"bindings"} | {name.strip() for name in only.split(",")}
        files = [f for f in files if f.stem in keep]
    return files


def _key() -> str:
    """What a build depends on: the sources, the compiler flags, torch's and Python's versions."""
    h = hashlib.sha256()
    for path in sorted(_CSRC.glob("*.h")) + _sources():
        h.update(path.name.encode())
        h.update(path.read_bytes())
    h.update(" ".join(_CFLAGS + _LDFLAGS).encode())
    h.update(torch.__version__.encode())
    h.update(sys.version.encode())
    return h.hexdigest()[:12]


def _cache_dir() -> Path:
    root = os.environ.get("TORCHLOSS_CACHE")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "torchloss"


def _names() -> tuple[str, Path]:
    key = _key()
    return f"torchloss_native_{key}", _cache_dir() / f"native-{key}"


def enabled() -> bool:
    """False when ``TORCHLOSS_NATIVE`` is ``0``, ``off``, ``false`` or ``no``."""
    return os.environ.get("TORCHLOSS_NATIVE", "1").strip().lower() not in ("0", "off", "false", "no")


def _install(mod, where: str):
    global module, state
    mod.set_reference(_reference_backward)
    module = mod
    state = f"loaded from {where}"
    return mod


def load():
    """Load a cached build for this torch and these sources, if there is one (never compiles).
    Returns the module, or None."""
    global module, state
    module = None
    if not enabled():
        state = "disabled (TORCHLOSS_NATIVE=0)"
        return None
    name, directory = _names()
    path = directory / f"{name}{importlib.machinery.EXTENSION_SUFFIXES[0]}"
    if not path.exists():
        path = directory / f"{name}.so"
    if not path.exists():
        state = "not built (python -m torchloss build)"
        return None
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    except Exception as exc:  # a stale or broken build: the reference runs everything
        state = f"failed to load {path}: {exc}"
        return None
    return _install(mod, str(directory))


def build(verbose: bool = False):
    """Compile the kernels for the installed torch (or load the cached build) and use them.
    Raises when there is no compiler; returns the module."""
    from torch.utils.cpp_extension import load as _load

    name, directory = _names()
    directory.mkdir(parents=True, exist_ok=True)
    mod = _load(
        name,
        [str(p) for p in _sources()],
        extra_cflags=_CFLAGS,
        extra_ldflags=_LDFLAGS,
        build_directory=str(directory),
        verbose=verbose,
    )
    if not enabled():
        global state
        state = "built, but disabled (TORCHLOSS_NATIVE=0)"
        return mod
    return _install(mod, str(directory))


# --- when a call may take a kernel ----------------------------------------------------------

_transforms_active = torch._C._are_functorch_transforms_active
_wrapped = torch._C._functorch.is_functorch_wrapped_tensor
_forward_ad = torch.autograd.forward_ad
_FLOAT = (torch.float32, torch.float64)


def eager(*tensors: Tensor) -> bool:
    """Whether a call on ``tensors`` is plain eager CPU work a kernel may take: nothing compiles,
    transforms or forward-differentiates it, and every tensor is a plain CPU tensor (the kernels
    check dtypes, layouts and values themselves, and raise for what they do not handle)."""
    if torch.compiler.is_compiling() or _transforms_active() or _forward_ad._current_level >= 0:
        return False
    for t in tensors:
        if not t.is_cpu or _wrapped(t) or isinstance(t, _FakeTensor):  # (fake: no data to loop over)
            return False
    return True


# --- the create_graph backward ---------------------------------------------------------------

# name -> (tensors, scalars) -> the loss from the reference Function, on the same arguments as
# the kernel's; filled by torchloss.functional, next to the calls of each kernel.
REFERENCES: dict[str, Callable[[list[Tensor], list[float]], Tensor]] = {}


def _reference_backward(name: str, tensors: list[Tensor], scalars: list[float], grad: Tensor):
    """Called by a kernel's backward when grad mode is on (``create_graph=True``) or ``grad`` is
    batched (``is_grads_batched=True``: a loop cannot read it): the gradients of the reference
    loss at the saved ``tensors`` (which carry the forward's graph), with ``create_graph`` as the
    backward runs (on for create_graph); None where a tensor does not require grad."""
    create_graph = torch.is_grad_enabled()
    with torch.enable_grad():
        loss = REFERENCES[name](tensors, scalars)
        wrt = [i for i, t in enumerate(tensors) if t.requires_grad]
        if not wrt:
            return [None] * len(tensors)
        got = torch.autograd.grad(loss, [tensors[i] for i in wrt], grad, create_graph=create_graph, allow_unused=True)
    out: list[Tensor | None] = [None] * len(tensors)
    for i, g in zip(wrt, got):
        out[i] = g
    return out


load()
