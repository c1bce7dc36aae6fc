"""``python -m torchloss build``: compile torchloss's optional native CPU kernels (see
:mod:`torchloss._native`) for the installed torch, and report where they are."""

from __future__ import annotations

import argparse
import time
import warnings


def run(args: argparse.Namespace) -> int:
    from . import _native

    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            # torch's extension builder imports modules that warn when NumPy is not installed
            warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
            _native.build(verbose=args.verbose)
    except Exception as exc:  # no compiler, no ninja, a compile error: the reference still works
        print(f"torchloss: could not build the native kernels ({type(exc).__name__}: {exc})")
        print("torchloss works without them: every call runs the Python reference Functions.")
        return 1
    print(f"torchloss native kernels: {_native.state} ({time.perf_counter() - start:.1f} s)")
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "build",
        help="compile the optional native CPU kernels (the fast path of small eager calls)",
        description=(
            "Compile torchloss's native CPU kernels against the installed torch (needs a C++ "
            "compiler and ninja; about a minute) and cache them; later imports load them. "
            "TORCHLOSS_NATIVE=0 turns them off."
        ),
    )
    p.add_argument("-v", "--verbose", action="store_true", help="show the compiler's output")
    p.set_defaults(func=run)
