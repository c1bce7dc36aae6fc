"""``python -m torchloss``: the command line, end to end (subprocess) and in-process."""

from __future__ import annotations

import csv
import io
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
    assert [row["loss"] for row in rows] == ["mse_loss", "cross_entropy"]
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
