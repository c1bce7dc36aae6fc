"""``python -m torchloss``: the command line.

Subcommands:

* ``check`` -- a parity report of torchloss against the installed torch (see :mod:`torchloss.check`);
* ``bench`` -- speed and memory of every loss against torch.nn.functional (see :mod:`torchloss.bench`);
* ``build`` -- compile the optional native CPU kernels (see :mod:`torchloss._native`);
* ``fuzz`` -- differential fuzzing against torch.nn.functional (see :mod:`torchloss.testing.fuzz`;
  needs ``hypothesis``).

Each subcommand lives in its own module with an ``add_parser(subparsers)`` that registers it and
sets ``func`` (called with the parsed arguments, returning the exit status).
"""

from __future__ import annotations

import argparse
import sys


def _subcommands():
    from . import bench, build, check

    return [check, bench, build, _Fuzz]


class _Fuzz:
    """``fuzz``: registered here so that hypothesis is imported only when it runs."""

    @staticmethod
    def add_parser(subparsers) -> None:
        p = subparsers.add_parser("fuzz", help="differential fuzzing against torch.nn.functional")
        p.add_argument("--budget", type=float, default=60.0, help="seconds to run (default 60)")
        p.add_argument("--loss", action="append", help="a loss to fuzz (repeatable; default all)")
        p.add_argument("--seed", type=int, default=None, help="first round's seed (default 0)")
        p.add_argument("--examples", type=int, default=100, help="calls per loss and round (default 100)")
        p.set_defaults(func=lambda args: __import__("torchloss.testing.fuzz", fromlist=["main"]).main(args))


def build_parser() -> argparse.ArgumentParser:
    import torch

    from . import __version__

    parser = argparse.ArgumentParser(
        prog="python -m torchloss",
        description="torchloss: torch.nn's loss functions with hand-derived, differentiable backwards.",
    )
    parser.add_argument(
        "--version", action="version", version=f"torchloss {__version__} (torch {torch.__version__})"
    )
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for module in _subcommands():
        module.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
