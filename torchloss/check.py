"""``python -m torchloss check``: a parity report of torchloss against this machine's torch.

Every case of the case table (:data:`torchloss.testing.cases.CASES`) runs on every chosen device
through the checks the test-suite runs, for every sample and reduction:

* **parity** (float32 and float64): values and input gradients, under a random upstream gradient,
  against ``torch.nn.functional``, within the case's tolerance for the dtype;
* **gradcheck**, **gradgradcheck** and forward-mode AD against finite differences (float64);
* **jvp**: ``torch.func.jvp`` against torch's (or against torchloss's own reverse mode, for a loss
  torch cannot differentiate forwards); the forward-AD gradcheck is counted in this column too;
* **vmap**: ``torch.func.vmap`` and ``vmap(grad)`` over a batch of samples against a Python loop
  of torch's loss.

The result is a table per loss and device, a summary line and, if anything failed, the list of
failures; :func:`main` returns 0 when everything passed and 1 otherwise. :func:`run_checks` is
the same without the printing.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TextIO

import torch

from .testing import check_autograd, check_jvp, check_vmap, parity
from .testing.cases import CASES, LossCase
from .testing.runner import call_kwargs, combos, functions, quiet, samples, vmap_batch

DTYPES = (torch.float32, torch.float64)
VMAP_SEEDS = (0, 1, 2)
# jvp and vmap compare two float64 evaluations of the same math (as tests/test_losses.py does).
FUNC_TOL = (1e-7, 1e-10)
# The status columns of the table, in order.
COLUMNS = ("gradcheck", "gradgradcheck", "jvp", "vmap")
MAX_LISTED_FAILURES = 50


# --------------------------------------------------------------------------------------------
# Results


@dataclass
class Failure:
    device: str
    loss: str
    sample: str | None
    reduction: str | None
    dtype: str | None
    check: str
    problem: str

    def line(self) -> str:
        where = [self.device, self.loss]
        if self.sample is not None:
            where.append(f"sample {self.sample}")
        if self.reduction is not None:
            where.append(f"reduction={self.reduction}")
        if self.dtype is not None:
            where.append(self.dtype)
        return f"{'  '.join(where)}  {self.check}: {self.problem}"


@dataclass
class LossResult:
    """Everything checked for one loss on one device."""

    loss: str
    device: str
    combos: int = 0  # sample x reduction x dtype combinations run through parity
    forward_error: float = 0.0
    gradient_error: float = 0.0
    forward_ok: bool = True
    gradient_ok: bool = True
    # column -> [passed, failed]; a column absent here did not run (e.g. gradgradcheck in --quick)
    counts: dict[str, list[int]] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)  # one per check, for --csv
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def checks(self) -> int:
        return sum(p + f for p, f in self.counts.values())

    def record(self, column, check, sample, reduction, dtype, problem=None, fwd=None, grad=None):
        passed, failed = self.counts.setdefault(column, [0, 0])
        self.counts[column] = [passed + (problem is None), failed + (problem is not None)]
        label = None if sample is None else sample
        dname = None if dtype is None else str(dtype).replace("torch.", "")
        if problem is not None:
            failure = Failure(self.device, self.loss, label, reduction, dname, check, problem)
            self.failures.append(failure)
        self.rows.append(
            {
                "device": self.device,
                "loss": self.loss,
                "sample": label or "",
                "reduction": reduction or "",
                "dtype": dname or "",
                "check": check,
                "result": "ok" if problem is None else "FAIL",
                "forward_error": "" if fwd is None else repr(fwd),
                "gradient_error": "" if grad is None else repr(grad),
                "problem": problem or "",
            }
        )


def _problem(exc: BaseException) -> str:
    """One line for an exception: its type and the first line of its message."""
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    if len(first) > 200:
        first = first[:197] + "..."
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


# --------------------------------------------------------------------------------------------
# Running one loss on one device


def _autograd(fn, s, kwargs, quick: bool) -> dict[str, str | None]:
    """gradcheck / gradgradcheck / forward AD of one call: ``{check: None (passed) or problem}``.

    One :func:`check_autograd` call runs them all; only when it fails are they rerun one by one to
    say which failed (``check_autograd`` always runs gradcheck first, so when gradcheck itself
    fails the other two are not run).
    """
    run_gradgrad = not quick
    try:
        check_autograd(fn, s.args, kwargs, s.wrt, gradgrad=run_gradgrad, forward_ad=True)
    except Exception as exc:  # noqa: BLE001 - any exception is a failed check
        first = exc
    else:
        done = {"gradcheck": None, "forward AD": None}
        if run_gradgrad:
            done["gradgradcheck"] = None
        return done
    try:
        check_autograd(fn, s.args, kwargs, s.wrt, gradgrad=False, forward_ad=False)
    except Exception as exc:  # noqa: BLE001
        return {"gradcheck": _problem(exc)}
    done = {"gradcheck": None}
    parts = [("forward AD", {"gradgrad": False, "forward_ad": True})]
    if run_gradgrad:
        parts.insert(0, ("gradgradcheck", {"gradgrad": True, "forward_ad": False}))
    for name, flags in parts:
        try:
            check_autograd(fn, s.args, kwargs, s.wrt, **flags)
        except Exception as exc:  # noqa: BLE001
            done[name] = _problem(exc)
        else:
            done[name] = None
    if all(v is None for v in done.values()):
        # Failed together, passed apart (nondeterminism?): report the first failure as is.
        done["gradcheck"] = _problem(first)
    return done


_AUTOGRAD_COLUMN = {"gradcheck": "gradcheck", "gradgradcheck": "gradgradcheck", "forward AD": "jvp"}


def run_case(
    case: LossCase,
    device: str,
    *,
    quick: bool = False,
    progress: Callable[[str], None] | None = None,
) -> LossResult:
    """Run every check of ``case`` on ``device``; ``progress`` is called with a short status."""
    start = time.perf_counter()
    result = LossResult(case.name, device)
    try:
        ours, ref = (quiet(f) for f in functions(case))
        drawn = {dtype: samples(case, device, dtype) for dtype in DTYPES}
        per_seed = [drawn[torch.float64]]
        per_seed += [samples(case, device, torch.float64, seed) for seed in VMAP_SEEDS[1:]]
    except Exception as exc:  # noqa: BLE001
        result.record("setup", "setup", None, None, None, _problem(exc))
        result.seconds = time.perf_counter() - start
        return result

    n = sum(1 for _ in combos(case, drawn[torch.float64]))
    total, step = n * (len(DTYPES) + 3), 0

    def tick(what: str) -> None:
        nonlocal step
        step += 1
        if progress is not None:
            progress(f"{what} {step}/{total}")

    # (a) parity, in float32 and float64
    for dtype in DTYPES:
        rtol, atol = case.tolerance(dtype)
        for i, s, reduction in combos(case, drawn[dtype]):
            tick("parity")
            result.combos += 1
            label = f"{i}-{s.name}"
            try:
                kwargs = call_kwargs(s, reduction)
                rep = parity(ours, ref, s.args, kwargs, s.torch_wrt or s.wrt, rtol=rtol, atol=atol)
            except Exception as exc:  # noqa: BLE001
                result.forward_ok = result.gradient_ok = False
                result.forward_error = result.gradient_error = math.inf
                result.record("parity", "parity", label, reduction, dtype, _problem(exc))
                continue
            result.forward_error = max(result.forward_error, rep.forward_error)
            result.gradient_error = max(result.gradient_error, rep.gradient_error)
            if any(not p.startswith("gradient") for p in rep.problems):
                result.forward_ok = False
            if any(p.startswith("gradient") for p in rep.problems):
                result.gradient_ok = False
            problem = "; ".join(rep.problems) if not rep.ok else None
            errors = rep.forward_error, rep.gradient_error
            result.record("parity", "parity", label, reduction, dtype, problem, *errors)

    # (b)-(d) in float64
    f64 = torch.float64
    rtol, atol = FUNC_TOL
    for i, s, reduction in combos(case, drawn[f64]):
        label = f"{i}-{s.name}"
        kwargs = call_kwargs(s, reduction)

        tick("gradcheck")
        for name, problem in _autograd(ours, s, kwargs, quick).items():
            result.record(_AUTOGRAD_COLUMN[name], name, label, reduction, f64, problem)

        tick("jvp")
        if case.torch_forward_ad:
            jvps = [("jvp vs torch", ref, s.torch_wrt or s.wrt)]
        else:
            jvps = [("jvp vs reverse mode", None, s.torch_wrt or s.wrt)]
        if s.torch_wrt is not None and tuple(s.torch_wrt) != tuple(s.wrt):
            jvps.append(("jvp vs reverse mode", None, s.wrt))
        for name, reference, wrt in jvps:
            try:
                check_jvp(ours, reference, s.args, kwargs, wrt, rtol=rtol, atol=atol)
            except Exception as exc:  # noqa: BLE001
                result.record("jvp", name, label, reduction, f64, _problem(exc))
            else:
                result.record("jvp", name, label, reduction, f64)

        tick("vmap")
        try:
            batch, wrt = vmap_batch([seeds[i] for seeds in per_seed], reduction)
            check_vmap(ours, ref, batch, wrt, rtol=rtol, atol=atol)
        except Exception as exc:  # noqa: BLE001
            result.record("vmap", "vmap", label, reduction, f64, _problem(exc))
        else:
            result.record("vmap", "vmap", label, reduction, f64)

    result.seconds = time.perf_counter() - start
    return result


def _status(progress, k, total, case, device, status):
    progress(k, total, case, device, status, None)


def run_checks(
    cases: Sequence[LossCase] | None = None,
    devices: Sequence[str] = ("cpu",),
    *,
    quick: bool = False,
    progress: Callable[[int, int, LossCase, str, str | None, LossResult | None], None] | None = None,
) -> list[LossResult]:
    """Run :func:`run_case` for every case on every device, with all warnings silenced.

    ``progress(index, total, case, device, status, result)`` is called while a loss runs (with a
    status string) and once when it is done (with its result).
    """
    cases = list(CASES if cases is None else cases)
    jobs = [(device, case) for device in devices for case in cases]
    results = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for k, (device, case) in enumerate(jobs, 1):
            cb = None if progress is None else partial(_status, progress, k, len(jobs), case, device)
            result = run_case(case, device, quick=quick, progress=cb)
            results.append(result)
            if progress is not None:
                progress(k, len(jobs), case, device, None, result)
    return results


# --------------------------------------------------------------------------------------------
# Output


class _Progress:
    """One line per loss on ``stream``: rewritten in place on a terminal, printed once otherwise."""

    def __init__(self, stream: TextIO, marks: dict[bool, str]):
        self.stream = stream
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.marks = marks
        self.last = 0.0

    def __call__(self, k, total, case, device, status, result):
        head = f"[{k:>{len(str(total))}}/{total}] {device:<4} {case.name:<34}"
        if result is None:
            now = time.monotonic()
            if self.tty and now - self.last > 0.05:
                self.last = now
                self.stream.write(f"\r{head} {status}\x1b[K")
                self.stream.flush()
            return
        verdict = self.marks[True] if result.ok else f"{self.marks[False]} {len(result.failures)} failed"
        line = f"{head} {verdict} ({_plural(result.checks, 'check')}, {result.seconds:.1f} s)"
        self.stream.write(f"\r{line}\x1b[K\n" if self.tty else f"{line}\n")
        self.stream.flush()


def _plural(n: int, word: str, words: str | None = None) -> str:
    return f"{n} {word if n == 1 else (words or word + 's')}"


def _can_encode(stream: TextIO, text: str) -> bool:
    encoding = getattr(stream, "encoding", None)
    if encoding is None:  # an in-memory text stream (io.StringIO) holds any text
        return True
    try:
        text.encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def _fmt_error(value: float, ok: bool, bad: str) -> str:
    text = "0" if value == 0 else ("inf" if math.isinf(value) else f"{value:.1e}")
    return text if ok else f"{text} {bad}"


def format_table(results: Sequence[LossResult], unicode: bool = True, quick: bool = False) -> str:
    good, bad = ("✓", "✗") if unicode else ("ok", "FAIL")
    header = ["device", "loss", "cases", "max fwd err", "max grad err", *COLUMNS]
    rows = []
    for r in results:
        cells = [r.device, r.loss, str(r.combos)]
        if "setup" in r.counts:
            cells = [r.device, r.loss, bad, "-", "-"]
        else:
            cells.append(_fmt_error(r.forward_error, r.forward_ok, bad))
            cells.append(_fmt_error(r.gradient_error, r.gradient_ok, bad))
        for column in COLUMNS:
            if column not in r.counts:
                skipped = quick and column == "gradgradcheck" and "setup" not in r.counts
                cells.append("skip" if skipped else "-")
                continue
            _, failed = r.counts[column]
            cells.append(good if not failed else f"{bad} {failed}")
        rows.append(cells)
    widths = [max([len(h)] + [len(row[j]) for row in rows]) for j, h in enumerate(header)]
    numeric = {2, 3, 4}

    def line(cells):
        padded = (c.rjust(w) if j in numeric else c.ljust(w) for j, (c, w) in enumerate(zip(cells, widths)))
        return "  ".join(padded).rstrip()

    rule = ("─" if unicode else "-") * len(line(header))
    return "\n".join([line(header), rule, *(line(row) for row in rows)])


def write_csv(path: str, results: Sequence[LossResult]) -> None:
    fields = ["device", "loss", "sample", "reduction", "dtype", "check", "result"]
    fields += ["forward_error", "gradient_error", "problem"]
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for r in results:
            writer.writerows(r.rows)


# --------------------------------------------------------------------------------------------
# Command line


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "check",
        help="compare every loss with torch.nn.functional on this machine",
        description=(
            "Run every loss of the case table through parity with torch.nn.functional (values and "
            "gradients, float32 and float64), gradcheck, gradgradcheck, forward AD, jvp and vmap, "
            "and print a table. Exit status: 0 if everything passed, 1 on any mismatch, "
            "2 on a usage error."
        ),
    )
    p.add_argument(
        "--loss",
        action="append",
        metavar="NAME",
        help="a loss to check, by functional name (l1_loss) or module name (L1Loss); repeatable, "
        "or comma-separated (default: every loss in the case table)",
    )
    p.add_argument(
        "--device",
        choices=("cpu", "cuda", "all"),
        help="where to run: cpu, cuda, or all (cpu and cuda) (default: cpu, plus cuda when available)",
    )
    p.add_argument("--quick", action="store_true", help="fewer checks: skip gradgradcheck")
    p.add_argument("--csv", metavar="PATH", help="also write one row per individual check to PATH")
    p.add_argument(
        "--distributed",
        action="store_true",
        help="check torchloss.distributed instead: 2 gloo ranks on this machine against the single-process "
        "cross_entropy of the gathered logits",
    )
    p.set_defaults(func=main, parser=p)
    return p


def _select(parser: argparse.ArgumentParser, names: list[str] | None) -> list[LossCase]:
    if not names:
        return list(CASES)
    by_name = {c.name: c for c in CASES} | {c.module: c for c in CASES}
    chosen, unknown = [], []
    for name in (n.strip() for arg in names for n in arg.split(",")):
        if not name:
            continue
        case = by_name.get(name)
        if case is None:
            unknown.append(name)
        elif case not in chosen:
            chosen.append(case)
    if unknown:
        known = ", ".join(c.name for c in CASES) or "(none)"
        parser.error(f"unknown loss {', '.join(map(repr, unknown))}; choose from: {known}")
    return chosen


def _devices(parser: argparse.ArgumentParser, choice: str | None) -> list[str]:
    cuda = torch.cuda.is_available()
    if choice is None:
        return ["cpu", "cuda"] if cuda else ["cpu"]
    if choice in ("cuda", "all") and not cuda:
        parser.error(f"--device {choice}: CUDA is not available with this torch ({torch.__version__})")
    return {"cpu": ["cpu"], "cuda": ["cuda"], "all": ["cpu", "cuda"]}[choice]


def main(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    from . import __version__

    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    if getattr(args, "distributed", False):
        from .testing.distributed_check import check_main

        return check_main(out, quick=args.quick, unicode=_can_encode(out, "✓✗─"))
    cases = _select(args.parser, args.loss)
    devices = _devices(args.parser, args.device)
    if not cases:
        args.parser.error("the case table is empty")
    unicode = _can_encode(out, "✓✗─") and _can_encode(err, "✓✗")
    marks = {True: "✓" if unicode else "ok", False: "✗" if unicode else "FAIL"}

    start = time.perf_counter()
    results = run_checks(cases, devices, quick=args.quick, progress=_Progress(err, marks))
    elapsed = time.perf_counter() - start

    failures = [f for r in results for f in r.failures]
    checks = sum(r.checks for r in results)
    names = []
    for d in devices:
        names.append(f"cuda ({torch.cuda.get_device_name()})" if d == "cuda" else d)
    print(file=out)
    print(format_table(results, unicode, args.quick), file=out)
    print(file=out)
    verdict = "all passed" if not failures else f"{_plural(len(failures), 'check')} FAILED"
    print(
        f"torchloss {__version__}, torch {torch.__version__}, device: {', '.join(names)}; "
        f"{_plural(len(cases), 'loss', 'losses')}, {_plural(checks, 'check')}"
        f"{' (quick)' if args.quick else ''} in {elapsed:.1f} s: {verdict}",
        file=out,
    )
    from . import _native

    print(f"native CPU kernels: {_native.state.replace(str(Path.home()), '~')}", file=out)
    if failures:
        print(f"\nFailures ({len(failures)}):", file=out)
        for f in failures[:MAX_LISTED_FAILURES]:
            print(f"  {f.line()}", file=out)
        if len(failures) > MAX_LISTED_FAILURES:
            more = len(failures) - MAX_LISTED_FAILURES
            print(f"  ... and {more} more{'' if args.csv else ' (--csv PATH lists them all)'}", file=out)
    if args.csv:
        write_csv(args.csv, results)
        print(f"\nwrote {args.csv}", file=out)
    out.flush()
    return 0 if not failures else 1
