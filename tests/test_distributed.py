"""torchloss.distributed on real processes: gloo ranks on 127.0.0.1 (torch.multiprocessing).

One spawn of 2 ranks and one of 4 ranks (uneven slices, one of them empty) run the whole case
table of :mod:`torchloss.testing.distributed_check` once per module; the tests below assert on
what the ranks returned: values and every gradient against the single-process ``cross_entropy``
of the gathered logits, double backward and jvp, the number of collectives, ``torch.compile``
with ``fullgraph=True``, DTensor (against torch's ``loss_parallel()`` where torch computes the
case), the linear-head version, and bad calls that must raise on every rank without hanging
(host-side and device-side validation). Every wait has a timeout (see
``distributed_check.spawn``).
"""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="needs torch.distributed with gloo"
)

WORLDS = (2, 4)
_RESULTS: dict[int, list[list[dict]]] = {}


@pytest.fixture(scope="module", params=WORLDS, ids=[f"{w}ranks" for w in WORLDS])
def ranks(request):
    """Every rank's rows for one world size (spawned once per module and world size)."""
    from torchloss.testing.distributed_check import run_table, spawn

    world = request.param
    if world not in _RESULTS:
        _RESULTS[world] = spawn(run_table, world, timeout=240)
    return world, _RESULTS[world]


def _failures(per_rank, select):
    bad = []
    for rank, rows in enumerate(per_rank):
        for row in rows:
            if select(row) and not row["ok"]:
                bad.append(f"rank {rank}: {row['case']} / {row['check']}: error {row['error']:.3g} {row['detail']}")
    return bad


def _checked(per_rank, select) -> int:
    return sum(1 for rows in per_rank for row in rows if select(row))


def _assert(per_rank, select, at_least=1):
    assert _checked(per_rank, select) >= at_least
    bad = _failures(per_rank, select)
    assert not bad, "\n".join(bad)


def test_no_case_crashed(ranks):
    _, per_rank = ranks
    _assert(per_rank, lambda r: r["check"] == "run", at_least=0)


def test_values_and_gradients(ranks):
    from torchloss.testing.distributed_check import CASES

    _, per_rank = ranks
    checks = {"value", "grad input", "grad target", "grad weight", "bitwise identical on every rank",
              "graph: one torchloss node"}
    _assert(per_rank, lambda r: r["check"] in checks, at_least=len(CASES) * 3)
    for rows in per_rank:  # every case ran
        assert {r["case"] for r in rows if r["check"] == "value"} == {c.name for c in CASES}


def test_double_backward_and_jvp(ranks):
    _, per_rank = ranks
    _assert(per_rank, lambda r: r["check"] in ("double backward (hvp)", "jvp"), at_least=10)


def test_linear_head_double_backward_and_jvp(ranks):
    """Hessian-vector products in every operand of the linear head (input, head rows, bias, and
    the target and weight of probabilities, 2-D and 3-D inputs) against the single-process ones
    of the whole head; jvp for class indices and probabilities."""
    from torchloss.testing.distributed_check import CASES

    _, per_rank = ranks
    linear = [c for c in CASES if c.linear]
    hvp = [c for c in linear if c.dtype == torch.float64]
    _assert(per_rank, lambda r: r["check"] == "linear double backward (hvp)", at_least=len(hvp) * len(per_rank))
    _assert(per_rank, lambda r: r["check"] == "linear jvp", at_least=len(linear) * len(per_rank))
    probs = {c.name for c in linear if c.probs}
    assert any(c.probs and len(c.shape) == 3 for c in linear)  # probabilities with a 3-D input
    for rows in per_rank:
        assert probs <= {r["case"] for r in rows if r["check"] in ("linear jvp", "linear double backward (hvp)")}


def test_dtensor_double_backward_and_jvp(ranks):
    from torchloss.testing.distributed_check import CASES

    _, per_rank = ranks
    n = sum(1 for c in CASES if c.dtensor and c.dtype == torch.float64) * len(per_rank)
    _assert(per_rank, lambda r: r["check"] in ("dtensor double backward (hvp)", "dtensor jvp"), at_least=2 * n)


def test_collective_counts(ranks):
    """Forward: three all-reduces, the fixed-size metadata table (world x fields int64), the
    maxima (N) and every sum packed (2N to 4N+1): never N x C; backward: none; double backward:
    one all-reduce (N); jvp: one all-gather (1 or N a rank); linear head: one all-reduce of the
    input's gradient in backward, and in a differentiated backward two more (the cotangents of
    ℓ, N, and of the input, N x in; a third, of A, N, for probabilities with a differentiable
    target or weight); DTensor double backward: one all-reduce."""
    _, per_rank = ranks
    checks = ("linear collectives", "linear collectives double backward", "dtensor collectives double backward")
    _assert(per_rank, lambda r: r["check"].startswith("collectives") or r["check"] in checks, at_least=20)
    for check in checks:
        assert _checked(per_rank, lambda r, c=check: r["check"] == c) >= len(per_rank)
    for check in ("collectives forward", "collectives backward", "collectives double backward", "collectives jvp"):
        assert _checked(per_rank, lambda r, c=check: r["check"] == c) >= 5 * len(per_rank)


def test_vmap(ranks):
    """torch.func.vmap of vocab_parallel_cross_entropy and of the linear head (the batch rules
    fold the vmapped dimension into the positions: the same three all-reduces, of B times the
    elements): values, vmap(grad), jvp of the vmapped loss and per-sample Hessian-vector products
    (the double backward's all-reduces run once on the whole batch), for every float64 case."""
    from torchloss.testing.distributed_check import CASES

    _, per_rank = ranks
    n = sum(1 for c in CASES if c.dtype == torch.float64) * len(per_rank)
    for check in ("vmap", "vmap(grad)", "jvp(vmap)", "vmap hvp", "collectives vmap"):
        _assert(per_rank, lambda r, c=check: r["check"] == c, at_least=n)
    linear = sum(1 for c in CASES if c.linear and c.dtype == torch.float64) * len(per_rank)
    _assert(per_rank, lambda r: r["check"] == "linear vmap", at_least=linear)


def test_compile_fullgraph(ranks):
    """``torch.compile(fullgraph=True)`` (aot_eager) of vocab_parallel_cross_entropy (class
    indices with a weight slice and smoothing, probabilities) and of the linear head: value and
    gradients; a bad call of a compiled function raises on every rank (at 2 ranks only: compiling
    is slow)."""
    world, per_rank = ranks
    if world > 2:
        pytest.skip("compiled at 2 ranks only")
    _assert(per_rank, lambda r: r["check"] == "torch.compile fullgraph", at_least=3 * world)
    _assert(per_rank, lambda r: r["check"] == "linear torch.compile fullgraph", at_least=world)
    _assert(per_rank, lambda r: r["check"].startswith("compiled:"), at_least=3 * world)
    for check in ("compiled: target out of range on one rank", "compiled: local error on one rank"):
        details = {row["detail"].splitlines()[-1] for rows in per_rank for row in rows if row["check"] == check}
        assert len(details) == 1 and "vocab_parallel_cross_entropy" in details.pop()


def test_device_validation(ranks):
    """The device-side validation (GPUs, torch.compile), forced on the CPU: good calls agree with
    the single-process cross_entropy; bad calls raise the same RuntimeError on every rank (the rank
    whose own argument was bad: its own exception)."""
    world, per_rank = ranks
    _assert(per_rank, lambda r: r["check"].startswith("device validation"), at_least=8 * world)
    for check in ("vocab_start disagrees with the slices", "target out of range on one rank", "N differs between ranks",
                  "weight of a wrong size", "targets differ between ranks"):
        details = {row["detail"] for rows in per_rank for row in rows if row["check"] == f"device validation: {check}"}
        assert len(details) == 1 and details.pop().startswith("RuntimeError"), check


def test_library_never_calls_torch_loss_kernels():
    """torchloss.distributed (the library path) names none of torch's loss kernels; the check
    harness that compares against them lives in torchloss.testing.distributed_check."""
    import ast
    import pathlib

    import torchloss.distributed

    banned = {"cross_entropy", "nll_loss", "loss_parallel", "linear_cross_entropy", "log_softmax", "_nn"}
    root = pathlib.Path(torchloss.distributed.__file__).parent
    files = sorted(root.glob("*.py"))
    assert files and not (root / "runner.py").exists()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Attribute):
                names.append(node.attr)
            elif isinstance(node, ast.Name):
                names.append(node.id)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names += [a.name.split(".")[-1] for a in node.names]
            assert not banned & set(names), f"{path.name}:{node.lineno}: {banned & set(names)}"


def test_dtensor(ranks):
    _, per_rank = ranks
    _assert(per_rank, lambda r: r["check"].startswith("dtensor"), at_least=8)
    assert _checked(per_rank, lambda r: r["check"] == "dtensor vs loss_parallel") >= 3


def test_linear_head(ranks):
    _, per_rank = ranks
    _assert(per_rank, lambda r: r["check"].startswith("linear"), at_least=6)


def test_bad_input_raises_on_every_rank(ranks):
    world, per_rank = ranks
    _assert(per_rank, lambda r: r["case"] == "bad input", at_least=world * 12)
    # the same exception on every rank (except the rank whose own argument was bad)
    for check in ("vocab_start disagrees with the slices", "target out of range on one rank", "N differs between ranks",
                  "vmap batch size differs between ranks"):
        details = {row["detail"] for rows in per_rank for row in rows if row["check"] == check}
        assert len(details) == 1, details
    for rows in per_rank:
        row = next(r for r in rows if r["check"] == "target out of range on one rank")
        assert row["detail"].startswith("IndexError")


# --------------------------------------------------------------------------------------------
# In this process (no process group)


def test_uninitialized_group_raises():
    from torchloss.distributed import vocab_parallel_cross_entropy

    if dist.is_initialized():
        pytest.skip("a process group exists in this process")
    with pytest.raises(RuntimeError, match="not initialized"):
        vocab_parallel_cross_entropy(torch.randn(2, 3), torch.tensor([0, 1]))


def test_plain_tensors_are_not_dtensors():
    from torchloss.distributed import is_dtensor

    assert not is_dtensor(torch.randn(2))
    assert not is_dtensor(torch.nn.Parameter(torch.randn(2)))


def test_check_table(ranks):
    """``python -m torchloss check --distributed`` prints this table (from the same rows)."""
    from torchloss.testing.distributed_check import CASES, format_table

    _, per_rank = ranks
    text = format_table(per_rank, unicode=False)
    lines = text.splitlines()
    assert lines[0].split()[:2] == ["case", "value"]
    assert len(lines) == 2 + len(CASES) + 1  # header, rule, one line per case, bad input
    assert "FAIL" not in text
