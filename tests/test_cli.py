"""``python -m torchloss``: the command line, end to end (subprocess) and in-process."""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest

import torchloss
import torchloss.functional as F
from torchloss.__main__ import main

ROOT = Path(__file__).resolve().parent.parent


def _run(*args, timeout=120):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run(
        [sys.executable, "-m", "torchloss", *args],
        cwd=ROOT,
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_check_one_loss_quick():
    r = _run("check", "--loss", "l1_loss", "--quick")
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    header = next(line for line in lines if line.startswith("device"))
    for column in ("loss", "cases", "max fwd err", "max grad err", "gradcheck", "gradgradcheck", "jvp", "vmap"):
        assert column in header
    row = next(line for line in lines if line.split()[:2] == ["cpu", "l1_loss"])
    assert "skip" in row  # gradgradcheck under --quick
    assert "all passed" in r.stdout
    assert "l1_loss" in r.stderr  # progress goes to stderr


def test_unknown_loss_is_a_clean_error():
    r = _run("check", "--loss", "no_such_loss")
    assert r.returncode == 2
    assert "unknown loss 'no_such_loss'" in r.stderr
    assert "l1_loss" in r.stderr  # lists the valid names
    assert "Traceback" not in r.stderr


def test_version():
    r = _run("--version")
    assert r.returncode == 0
    assert r.stdout.strip().startswith(f"torchloss {torchloss.__version__}")


def test_no_arguments_prints_help(capsys):
    assert main([]) == 0
    assert "check" in capsys.readouterr().out


def test_csv(tmp_path, capsys):
    path = tmp_path / "report.csv"
    assert main(["check", "--loss", "MSELoss", "--quick", "--device", "cpu", "--csv", str(path)]) == 0
    out = capsys.readouterr().out
    rows = list(csv.DictReader(path.open()))
    assert {r["loss"] for r in rows} == {"mse_loss"}
    assert {r["check"] for r in rows} >= {"parity", "gradcheck", "forward AD", "vmap"}
    assert all(r["result"] == "ok" for r in rows)
    assert "mse_loss" in out


def test_ascii_when_the_terminal_cannot_encode_unicode():
    from torchloss import check
    from torchloss.__main__ import build_parser

    out = io.TextIOWrapper(io.BytesIO(), encoding="ascii")
    err = io.TextIOWrapper(io.BytesIO(), encoding="ascii")
    args = build_parser().parse_args(["check", "--loss", "l1_loss", "--quick"])
    assert check.main(args, out=out, err=err) == 0  # would raise UnicodeEncodeError otherwise
    out.seek(0)
    text = out.read()
    assert " ok " in text and "all passed" in text


def test_mismatch_exits_1_and_lists_failures(monkeypatch, capsys):
    good = F.l1_loss

    def off_by_a_bit(input, target, *args, **kwargs):
        return good(input, target, *args, **kwargs) * 1.001

    monkeypatch.setattr(F, "l1_loss", off_by_a_bit)
    assert main(["check", "--loss", "l1_loss", "--quick"]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out
    assert "reduction=mean" in out and "float32" in out and "forward differs" in out


def test_cuda_unavailable_is_a_clean_error(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available")
    with pytest.raises(SystemExit) as exc:
        main(["check", "--device", "cuda"])
    assert exc.value.code == 2
    assert "CUDA is not available" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# bench: a smoke test only (nothing here is timed or compared)


def test_bench_smoke(tmp_path):
    path = tmp_path / "bench.csv"
    r = _run("bench", "--loss", "mse_loss,cross_entropy", "--size", "small", "--rounds", "1",
             "--min-time", "0.01", "--csv", str(path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ratio" in r.stdout and "geometric mean" in r.stdout
    rows = list(csv.DictReader(path.open()))
    # a loss's name picks its variant rows too
    assert [row["loss"] for row in rows] == [
        "mse_loss", "cross_entropy", "cross_entropy[weight]", "cross_entropy[label_smoothing=0.1]"
    ]
    for row in rows:
        assert float(row["torch_s"]) > 0 and float(row["torchloss_s"]) > 0
        assert int(row["saved_bytes_torchloss"]) > 0 and int(row["peak_bytes_torch"]) > 0


def test_bench_covers_every_loss_of_the_case_table():
    from torchloss.bench import BENCHMARKS
    from torchloss.testing.cases import CASES

    assert {b.name for b in BENCHMARKS} == {c.name for c in CASES}


def test_bench_rejects_unknown_loss():
    r = _run("bench", "--loss", "nope")
    assert r.returncode == 2 and "unknown loss" in r.stderr


def test_interpolate_shapes():
    from torchloss.bench import interpolate_shapes

    assert interpolate_shapes((32,), (4194304,), 4) == [(32,), (1625,), (82570,), (4194304,)]
    assert interpolate_shapes((32, 10), (4096, 10), 3) == [(32, 10), (362, 10), (4096, 10)]
    assert interpolate_shapes((50, 16, 20, 30), (500, 32, 40, 100), 2) == [(50, 16, 20, 30), (500, 32, 40, 100)]
    assert interpolate_shapes((2,), (3,), 5) == [(2,), (3,)]  # equal after rounding: kept once
    assert interpolate_shapes((8, 4), (2, 4), 3) == [(8, 4), (4, 4), (2, 4)]  # decreasing works too
    shapes = interpolate_shapes((32, 16), (4096, 1024), 7)
    assert len(shapes) == 7 and shapes[0] == (32, 16) and shapes[-1] == (4096, 1024)
    assert all(all(a <= b for a, b in zip(s, t)) for s, t in itertools.pairwise(shapes))
    assert all(isinstance(d, int) for s in shapes for d in s)
    for bad in (((32,), (64,), 1), ((32,), (64, 2), 3), ((0,), (64,), 3)):
        with pytest.raises(ValueError):
            interpolate_shapes(*bad)


def test_bench_makers_take_any_shape():
    import torch

    from torchloss.bench import BENCHMARKS, interpolate_shapes

    for b in BENCHMARKS:
        if "small" not in b.shapes:  # a variant at one size (CTC's N=256, T=2000): its own shape
            inputs = b.make(b.shapes["large"], torch.device("cpu"), torch.float32, torch.Generator().manual_seed(0))
            first = tuple(inputs.args[0].shape)
            assert first == b.shapes["large"][: len(first)], b.label
            continue
        _, middle, _ = interpolate_shapes(b.shapes["small"], b.shapes["large"], 3)
        inputs = b.make(middle, torch.device("cpu"), torch.float32, torch.Generator().manual_seed(0))
        first = tuple(inputs.args[0].shape)
        assert first == middle[: len(first)], (b.name, first, middle)
        ours = b.functions()[0] if b.functions is not None else getattr(F, b.name)
        assert torch.isfinite(ours(*inputs.args, **inputs.kwargs)), b.name


def test_bench_sweep_smoke(tmp_path, capsys):
    path = tmp_path / "bench.csv"
    argv = ["bench", "--malloc", "system", "--loss", "mse_loss", "--size", "small", "--rounds", "1", "--min-time", "0.01", "--sweep", "2",
            "--csv", str(path)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "sweep-2" in out and "sweep: " in out
    rows = [(row["size"], row["shape"]) for row in csv.DictReader(path.open())]
    # the small end point is reused from the table, the large one measured
    assert rows == [("small", "32"), ("sweep-1", "32"), ("sweep-2", "4194304")]


def test_bench_threads_and_variants(tmp_path, capsys):
    import torch

    from torchloss.bench import BENCHMARKS

    labels = [b.label for b in BENCHMARKS]
    for row in ("cross_entropy[label_smoothing=0.1]", "cross_entropy[weight]", "nll_loss[weight]",
                "ctc_loss[N=256]", "ctc_loss[T=2000]"):
        assert row in labels
    # a variant comes right after its loss's main row
    assert labels.index("nll_loss[weight]") == labels.index("nll_loss") + 1
    path = tmp_path / "bench.md"
    threads = torch.get_num_threads()
    argv = ["bench", "--malloc", "system", "--loss", "cross_entropy", "--size", "small", "--rounds", "1", "--min-time", "0.01",
            "--threads", "1", "--markdown", str(path), "--csv", str(tmp_path / "b.csv")]
    assert main(argv) == 0
    assert torch.get_num_threads() == threads  # the process's setting is left alone
    out = capsys.readouterr().out
    assert "1 thread timed" in out and torch.backends.cpu.get_cpu_capability() in out
    text = path.read_text(encoding="utf-8")
    assert "| threads timed | 1" in text and "on 1 thread;" in text
    rows = [row["loss"] for row in csv.DictReader((tmp_path / "b.csv").open())]
    assert rows == ["cross_entropy", "cross_entropy[weight]", "cross_entropy[label_smoothing=0.1]"]
    with pytest.raises(SystemExit):
        main(["bench", "--loss", "mse_loss", "--threads", "0"])


def test_bench_names_its_allocator(tmp_path, capsys):
    import platform

    path = tmp_path / "bench.md"
    argv = ["bench", "--loss", "mse_loss", "--size", "small", "--rounds", "1", "--min-time", "0.01",
            "--malloc", "system", "--markdown", str(path)]
    assert main(argv) == 0
    assert "CPU allocator:" in capsys.readouterr().out
    assert "| CPU allocator |" in path.read_text(encoding="utf-8")
    if platform.libc_ver()[0] == "glibc":  # (pinned in a child process: this one is left alone)
        code = "from torchloss.bench import pin_malloc; print(pin_malloc())"
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
        assert "pinned" in r.stdout


def test_bench_sweep_needs_two_sizes(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--loss", "mse_loss", "--sweep", "1"])
    assert exc.value.code == 2 and "at least 2" in capsys.readouterr().err


def test_bench_markdown(tmp_path, capsys):
    import torch

    path = tmp_path / "docs" / "bench.md"
    argv = ["bench", "--malloc", "system", "--loss", "mse_loss,kl_div", "--size", "small", "--rounds", "1", "--min-time", "0.01",
            "--markdown", str(path), "--note", "A placeholder."]
    assert main(argv) == 0
    assert f"wrote {path}" in capsys.readouterr().out
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    assert lines[0] == "# torchloss benchmarks"
    assert "> **Note:** A placeholder." in lines[:4]
    assert "## Targets" in lines and "every ratio <= 1.3" in text
    machine = lines[lines.index("## Machine"):lines.index("## Results")]
    for key in ("CPU", "cores", "torch threads", "torch", "OS", "Python", "device", "dtype", "date"):
        assert any(line.startswith(f"| {key} | ") for line in machine), key
    assert f"| torch threads | {torch.get_num_threads()} intra-op" in text and torch.__version__ in text
    assert f"| threads timed | {torch.get_num_threads()} (the default) |" in text
    assert f"| CPU capability | {torch.backends.cpu.get_cpu_capability()} |" in text
    table = [line for line in lines[lines.index("## Results"):] if line.startswith("|")]
    assert table[0].startswith("| loss | size | shape | torch | torchloss | ratio | spread | saved")
    assert table[0].rstrip(" |").endswith("target")
    assert [row.split(" | ")[0] for row in table[2:]] == ["| `mse_loss`", "| `kl_div`"]
    assert all(row.count("|") == table[0].count("|") for row in table)
    assert all(row.endswith(("| ✓ |", " |")) and ("✓" in row or "✗" in row) for row in table[2:])
    summary = [line for line in lines[lines.index("## Results"):] if line.startswith("- **")]
    assert summary[0].startswith("- **small**: geometric mean of the ratios") and "worst" in summary[0]
    assert summary[-1].startswith("- **memory**")
    assert "## Plots" not in text and "## Time against size" not in text


def _result(loss="mse_loss", size="large", ratio=1.0, saved=(8, 8), peak=(8, 8), extra=None):
    from torchloss.bench import Result

    extra = saved if extra is None else extra
    return Result(loss, size, (4, 8), "cpu", "float32", 1e-3, ratio * 1e-3, 0.1, saved, extra, peak)


def test_bench_targets_and_markdown_links():
    from torchloss.bench import format_markdown, target_misses

    assert target_misses(_result(ratio=1.2)) == []
    assert target_misses(_result(ratio=1.3)) == ["time"]
    assert target_misses(_result("kl_div", ratio=0.99)) == []
    assert target_misses(_result("kl_div", ratio=1.0)) == ["time"]  # must be faster than torch
    assert target_misses(_result(size="small", ratio=1.3)) == []
    assert target_misses(_result(size="small", ratio=1.35)) == ["time"]
    # a row's own stricter target (CTC's), also for its variant rows
    assert target_misses(dataclasses.replace(_result("ctc_loss", ratio=0.7), target=0.6)) == ["time"]
    assert target_misses(dataclasses.replace(_result("ctc_loss[N=256]", ratio=0.5), target=0.6)) == []
    assert target_misses(_result("kl_div[x]", ratio=1.0)) == ["time"]  # a variant of a must-be-faster loss
    assert target_misses(_result(size="small", ratio=1.6, saved=(9, 8), peak=(9, 8))) == ["time", "saved", "peak"]
    # references to the inputs cost nothing: only the bytes beyond them count
    assert target_misses(_result(saved=(9, 0), extra=(0, 0))) == []
    assert target_misses(_result(size="sweep-2", ratio=9.0, peak=(9, 8))) == ["peak"]  # no time target between sizes

    results = [_result(ratio=1.3), _result("l1_loss", ratio=0.9)]
    sweep = [_result(size="sweep-1"), _result(size="sweep-2")]
    base = os.path.join(os.sep, "proj", "docs")
    text = format_markdown(
        results, sweep, machine=[("device", "cpu"), ("dtype", "float32")], note=None, base_dir=base,
        plots=[os.path.join(base, "img", "bench", name) for name in ("ratio_large_cpu.png", "sweep_cpu.png")],
    )
    assert "Note:" not in text and "for reference only" not in text
    assert "| `mse_loss` | large |" in text and "✗ time |" in text
    assert "geometric mean target (<= 1.0): missed ✗" in text  # sqrt(1.3 * 0.9) = 1.08
    assert "## Time against size" in text and "| `mse_loss` | sweep-2 |" in text
    assert "](img/bench/ratio_large_cpu.png)" in text and "](img/bench/sweep_cpu.png)" in text
    text = format_markdown(results, machine=[("device", "cuda"), ("dtype", "float16")], plots_missing=True)
    assert "for reference only" in text and "matplotlib is not installed" in text


def test_bench_plots(tmp_path):
    pytest.importorskip("matplotlib")
    from torchloss.bench import write_plots

    results = [_result(size="small", ratio=1.4), _result(size="large", ratio=0.8)]
    sweep = [
        _result(loss, size=f"sweep-{j}", ratio=r)
        for loss in ("mse_loss", "kl_div", "ctc_loss", "l1_loss", "nll_loss")
        for j, r in enumerate((1.4, 1.1, 0.8), 1)
    ]
    for j, r in enumerate(sweep):
        r.shape = (4 ** (j % 3 + 1), 8)
    out = io.StringIO()
    paths = write_plots(str(tmp_path / "img"), results, out, sweep=sweep)
    assert [os.path.basename(p) for p in paths] == ["ratio_small_cpu.png", "ratio_large_cpu.png", "sweep_cpu.png"]
    for p in paths:
        assert Path(p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"wrote {p}" in out.getvalue()
