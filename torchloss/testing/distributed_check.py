"""Checking :mod:`torchloss.distributed` on real processes: gloo ranks on this machine.

:func:`spawn` starts ``world`` processes (``torch.multiprocessing``, the spawn method), joins them
into one gloo process group on 127.0.0.1, runs a module-level function on every rank and returns
what each rank returned, with a timeout on every wait (a hung rank is terminated and reported).
:func:`run_table` is what a rank runs for the test-suite and ``python -m torchloss check
--distributed``: every case of :data:`CASES` against the single-process
``torchloss.functional.cross_entropy`` of the gathered logits (values, every gradient, double
backward, jvp), the collectives counted, DTensor against torch's ``loss_parallel()``, the
linear-head version, and bad calls that must raise on every rank.
"""

from __future__ import annotations

import datetime
import math
import queue as _queue
import socket
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist

TIMEOUT = 120.0  # seconds, for the whole run of every rank
PG_TIMEOUT = 45.0  # seconds, for any one collective


# ============================================================================================
# Processes


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(fn, rank, world, port, q, args):
    try:
        torch.set_num_threads(1)
        dist.init_process_group(
            "gloo",
            init_method=f"tcp://127.0.0.1:{port}",
            rank=rank,
            world_size=world,
            timeout=datetime.timedelta(seconds=PG_TIMEOUT),
        )
        try:
            result = fn(rank, world, *args)
        finally:
            dist.destroy_process_group()
        q.put((rank, True, result))
    except BaseException:  # noqa: BLE001 - reported to the parent
        q.put((rank, False, traceback.format_exc()))


def _context():
    methods = torch.multiprocessing.get_all_start_methods()
    if "forkserver" not in methods:
        return torch.multiprocessing.get_context("spawn")
    ctx = torch.multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "torch.distributed", "torchloss", "torchloss.testing.distributed_check"])
    return ctx


def spawn(fn, world: int, *args, timeout: float = TIMEOUT) -> list:
    """``[fn(rank, world, *args) for every rank]``, each run in its own gloo process.

    The processes come from a fork server that imports torch and torchloss once (then forks a
    rank in milliseconds, from a process that never ran a parallel region), where the platform
    has one; else they are spawned (each importing torch itself)."""
    ctx = _context()
    q = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_entry, args=(fn, r, world, port, q, args), daemon=True) for r in range(world)]
    for p in procs:
        p.start()
    results, errors = {}, {}
    deadline = time.monotonic() + timeout
    try:
        while len(results) + len(errors) < world:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"ranks {sorted(set(range(world)) - set(results) - set(errors))} did not finish in {timeout} s")
            try:
                rank, ok, value = q.get(timeout=min(left, 1.0))
            except _queue.Empty:
                dead = [r for r, p in enumerate(procs) if not p.is_alive() and r not in results and r not in errors]
                if dead and all(procs[r].exitcode not in (0, None) for r in dead):
                    # give a dying rank's message a moment to arrive
                    try:
                        rank, ok, value = q.get(timeout=2.0)
                    except _queue.Empty:
                        raise RuntimeError(f"ranks {dead} exited with {[procs[r].exitcode for r in dead]}") from None
                else:
                    continue
            (results if ok else errors)[rank] = value
    finally:
        for p in procs:
            p.join(timeout=max(0.0, min(10.0, deadline - time.monotonic())))
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join(5)
    if errors:
        raise RuntimeError("\n".join(f"rank {r} failed:\n{tb}" for r, tb in sorted(errors.items())))
    return [results[r] for r in range(world)]


# ============================================================================================
# Counting collectives


@contextmanager
def count_collectives():
    """Counts the collectives torch.distributed runs in this process: yields a list to which
    ``(name, elements)`` is appended for each."""
    names = ("all_reduce", "all_gather_single", "all_gather_into_tensor", "all_gather", "broadcast",
             "reduce_scatter_tensor", "all_to_all_single")
    seen = []
    saved = {n: getattr(dist, n) for n in names if hasattr(dist, n)}

    def wrap(name, f):
        def counted(tensor, *a, **k):
            numel = tensor.numel() if isinstance(tensor, torch.Tensor) else sum(t.numel() for t in tensor)
            seen.append((name, numel))
            return f(tensor, *a, **k)

        return counted

    for n, f in saved.items():
        setattr(dist, n, wrap(n, f))
    try:
        yield seen
    finally:
        for n, f in saved.items():
            setattr(dist, n, f)


# ============================================================================================
# The case table


@dataclass(frozen=True)
class Case:
    name: str
    shape: tuple  # global logits shape (N, C, d...) or (C,)
    probs: bool = False
    weight: str | None = None  # None, 'full' or 'slice'
    ignore: bool = False  # some targets are ignore_index
    reduction: str = "mean"
    smoothing: float = 0.0
    dtype: torch.dtype = torch.float64
    full_target: bool = False  # probability targets of the whole vocabulary
    scale: float = 1.0  # logits scale (accuracy with large logits)
    neg_inf: bool = False  # -inf logits in the last slice (not at targets)
    all_ignored: bool = False
    dtensor: bool = False  # also through cross_entropy on a DTensor
    linear: bool = False  # also vocab_parallel_linear_cross_entropy


C = 7
CASES = (
    Case("mean", (6, C), dtensor=True, linear=True),
    Case("sum ignore", (6, C), ignore=True, reduction="sum", dtensor=True, linear=True),
    Case("none weight(C) ignore", (6, C), weight="full", ignore=True, reduction="none", dtensor=True, linear=True),
    Case("mean weight(C) ignore", (6, C), weight="full", ignore=True, dtensor=True),
    Case("mean weight(slice) ignore smooth", (6, C), weight="slice", ignore=True, smoothing=0.1, linear=True),
    Case("mean smooth", (6, C), smoothing=0.2, dtensor=True),
    Case("sum spatial weight smooth", (3, C, 4), weight="full", smoothing=0.15, reduction="sum", ignore=True,
         linear=True),
    Case("none spatial", (2, C, 3), reduction="none", dtensor=True),
    Case("unbatched sum", (C,), reduction="sum"),
    Case("all ignored mean", (5, C), weight="full", all_ignored=True),
    Case("large logits smooth", (6, C), smoothing=0.1, scale=1e4, dtype=torch.float32),
    Case("-inf logits", (6, C), neg_inf=True, reduction="none"),
    Case("float32 weight smooth", (8, C), weight="full", smoothing=0.1, ignore=True, dtype=torch.float32, linear=True),
    Case("float16 mean smooth", (8, C), smoothing=0.1, ignore=True, dtype=torch.float16),
    Case("bfloat16 none weight", (8, C), weight="full", reduction="none", dtype=torch.bfloat16),
    Case("probs mean", (6, C), probs=True, dtensor=True, linear=True),
    Case("probs(C) sum weight(C) smooth", (6, C), probs=True, full_target=True, weight="full", smoothing=0.1,
         reduction="sum", linear=True),
    Case("probs spatial none weight(slice)", (3, C, 2), probs=True, weight="slice", reduction="none", linear=True),
    Case("probs float16", (6, C), probs=True, dtype=torch.float16),
    Case("probs unbatched mean smooth", (C,), probs=True, smoothing=0.1),
)


def slice_sizes(world: int, classes: int = C) -> list[int]:
    """Uneven slices, one empty at 4 ranks: 2 ranks (4, 3); 4 ranks (3, 0, 2, 2)."""
    if world == 2:
        return [4, classes - 4]
    if world == 4:
        return [3, 0, 2, classes - 5]
    base = [classes // world] * world
    base[0] += classes - sum(base)
    return base


def _tol(dtype):
    return {
        torch.float64: (1e-9, 1e-11),
        torch.float32: (2e-5, 1e-6),
        torch.float16: (4e-3, 1e-4),
        torch.bfloat16: (2e-2, 1e-3),
    }[dtype]


def _err(a, b) -> float:
    """Max abs difference, NaN/inf compared as equal when both agree."""
    a, b = a.detach().double(), b.detach().double()
    if a.shape != b.shape:
        return math.inf
    same = (a == b) | (a.isnan() & b.isnan())
    d = torch.where(same, 0.0, (a - b).abs())
    return float(d.max()) if d.numel() else 0.0


def _close(a, b, dtype) -> tuple[bool, float]:
    rtol, atol = _tol(dtype)
    e = _err(a, b)
    scale = float(b.detach().double().abs().nan_to_num(0, 0, 0).max()) if b.numel() else 0.0
    return e <= atol + rtol * scale, e


def _inputs(case: Case, seed: int):
    g = torch.Generator().manual_seed(seed)
    shape = case.shape
    cd = 0 if len(shape) == 1 else 1
    x = (torch.randn(shape, generator=g, dtype=torch.float64) * 2 * case.scale)
    pos = shape[:cd] + shape[cd + 1 :]
    if case.probs:
        t = torch.rand(shape, generator=g, dtype=torch.float64)
        t = t / t.sum(cd, keepdim=True)
    else:
        t = torch.randint(0, shape[cd], pos, generator=g)
        if case.ignore:
            t = torch.where(torch.rand(pos, generator=g) < 0.3, -100, t)
            t.view(-1)[0] = 1  # at least one valid
        if case.all_ignored:
            t = torch.full(pos, -100, dtype=torch.long)
    w = torch.rand(shape[cd], generator=g, dtype=torch.float64) + 0.5 if case.weight else None
    gout = torch.randn(pos, generator=g, dtype=torch.float64) if case.reduction == "none" else torch.tensor(1.3, dtype=torch.float64)
    v = torch.randn(shape, generator=g, dtype=torch.float64)  # direction of jvp / hvp
    return x, t, w, gout, v


def _sl(t, lo, hi, cd):
    return t.narrow(cd, lo, hi - lo)


class _Rows:
    def __init__(self):
        self.rows = []

    def add(self, case, check, ok, error=0.0, detail=""):
        self.rows.append({"case": case, "check": check, "ok": bool(ok), "error": float(error), "detail": detail})


def run_table(rank: int, world: int, cases=None, quick: bool = False) -> list[dict]:
    """Run every case on this rank; one row per check (identical calls on every rank). ``quick``
    skips double backward and jvp."""
    cases = CASES if cases is None else cases
    import torchloss
    from torchloss.distributed import vocab_parallel_cross_entropy

    torch.manual_seed(0)
    rows = _Rows()
    sizes = slice_sizes(world)
    lo, hi = sum(sizes[:rank]), sum(sizes[: rank + 1])
    for k, case in enumerate(cases):
        try:
            _run_case(case, k, rank, world, lo, hi, rows, quick)
        except Exception:  # noqa: BLE001
            rows.add(case.name, "run", False, math.inf, traceback.format_exc()[-1200:])
    try:
        _bad_inputs(rank, world, rows)
    except Exception:  # noqa: BLE001
        rows.add("bad input", "run", False, math.inf, traceback.format_exc(limit=6))
    try:
        _device_validation(rank, world, rows)
    except Exception:  # noqa: BLE001
        rows.add("bad input", "run", False, math.inf, traceback.format_exc(limit=6))
    if not quick and world <= 2:  # (compiling is slow: at 2 ranks only)
        try:
            _compile_bad_inputs(rank, world, rows)
        except Exception:  # noqa: BLE001
            rows.add("bad input", "run", False, math.inf, traceback.format_exc(limit=6))
    del torchloss, vocab_parallel_cross_entropy
    return rows.rows


def _run_case(case: Case, seed: int, rank: int, world: int, lo: int, hi: int, rows: _Rows, quick: bool):
    import torchloss.functional as TF
    from torchloss.distributed import vocab_parallel_cross_entropy as vpce

    x64, t, w64, gout64, v64 = _inputs(case, seed)
    dt = case.dtype
    cd = 0 if len(case.shape) == 1 else 1
    x = x64.to(dt)
    if case.neg_inf:
        x = x.clone()
        last_lo = sum(slice_sizes(world)[:-1])
        x.narrow(cd, last_lo, C - last_lo).fill_(float("-inf"))
        if not case.probs:
            t = t.clamp(max=last_lo - 1)  # targets outside the -inf slice
    w = None if w64 is None else w64.to(dt)
    tgt = t.to(dt) if case.probs else t
    gout = gout64.to(dt)
    eps = case.smoothing
    kw = {"ignore_index": -100, "reduction": case.reduction, "label_smoothing": eps}

    # the reference: one process, the gathered logits
    X = x.clone().requires_grad_()
    Tref = tgt.clone().requires_grad_() if case.probs else tgt
    Wref = None if w is None else w.clone().requires_grad_(case.probs)
    ref = TF.cross_entropy(X, Tref, weight=Wref, **kw)
    wrt = [X] + ([Tref] + ([Wref] if Wref is not None else []) if case.probs else [])
    ref_grads = torch.autograd.grad(ref, wrt, gout)

    # this rank
    xl = _sl(x, lo, hi, cd).clone().requires_grad_()
    if case.probs:
        tl = (tgt if case.full_target else _sl(tgt, lo, hi, cd)).clone().requires_grad_()
    else:
        tl = tgt
    wl = None
    if w is not None:
        wl = (w if case.weight == "full" else w[lo:hi]).clone().requires_grad_(case.probs)
    with count_collectives() as fwd:
        out = vpce(xl, tl, weight=wl, **kw)
    ok, e = _close(out, ref.detach(), dt)
    rows.add(case.name, "value", ok, e)
    everyone = [torch.empty_like(out) for _ in range(world)]
    dist.all_gather(everyone, out.detach().contiguous())
    mine = out.detach()
    same = all(torch.equal(o.isnan(), mine.isnan()) and torch.equal(o.nan_to_num(), mine.nan_to_num()) for o in everyone)
    rows.add(case.name, "bitwise identical on every rank", same)
    node = out.grad_fn
    pure = node is not None and "VocabParallel" in node.name() and all(
        n is None or type(n).__name__ == "AccumulateGrad" for n, _ in node.next_functions
    )
    rows.add(case.name, "graph: one torchloss node", pure, 0.0, node.name() if node is not None else "no grad_fn")
    mine_wrt = [xl] + ([tl] + ([wl] if wl is not None else []) if case.probs else [])
    with count_collectives() as bwd:
        grads = torch.autograd.grad(out, mine_wrt, gout)
    ok, e = _close(grads[0], _sl(ref_grads[0], lo, hi, cd), dt)
    rows.add(case.name, "grad input", ok, e)
    if case.probs:
        gt_ref = ref_grads[1] if case.full_target else _sl(ref_grads[1], lo, hi, cd)
        if case.full_target:  # each rank: its own classes' part; the sum over ranks is the gradient
            gt_sum = grads[1].detach().clone()
            dist.all_reduce(gt_sum)
            ok, e = _close(gt_sum, gt_ref, dt)
        else:
            ok, e = _close(grads[1], gt_ref, dt)
        rows.add(case.name, "grad target", ok, e)
        if wl is not None:
            gw = grads[2].detach().clone()
            if case.weight == "full":
                dist.all_reduce(gw)
                ok, e = _close(gw, ref_grads[2], dt)
            else:
                ok, e = _close(gw, ref_grads[2][lo:hi], dt)
            rows.add(case.name, "grad weight", ok, e)
    positions = max(1, x.numel() // x.shape[cd]) if x.shape[cd] else 1
    rows.add(case.name, "collectives forward", _forward_counts_ok(fwd, world, positions, _stats_per_position(case)),
             len(fwd), f"{fwd}")
    rows.add(case.name, "collectives backward", len(bwd) == 0, len(bwd), f"{bwd}")

    if dt == torch.float64 and not quick:
        # double backward: Hessian-vector products against the gathered logits'
        Xh = x.clone().requires_grad_()
        (gX,) = torch.autograd.grad(TF.cross_entropy(Xh, tgt, weight=w, **kw), Xh, gout, create_graph=True)
        (hv_ref,) = torch.autograd.grad(gX, Xh, v64)
        xh = _sl(x, lo, hi, cd).clone().requires_grad_()
        with count_collectives() as dbl:
            out1 = vpce(xh, (tgt if case.full_target or not case.probs else _sl(tgt, lo, hi, cd)),
                        weight=None if w is None else (w if case.weight == "full" else w[lo:hi]), **kw)
            n_fwd = len(dbl)
            (gx,) = torch.autograd.grad(out1, xh, gout, create_graph=True)
            (hv,) = torch.autograd.grad(gx, xh, _sl(v64, lo, hi, cd))
        ok, e = _close(hv, _sl(hv_ref, lo, hi, cd), dt)
        rows.add(case.name, "double backward (hvp)", ok, e)
        # (the forward's 3, then one all-reduce of the per-rank cotangents of log S)
        rows.add(case.name, "collectives double backward", n_fwd == 3 and [n for n, _ in dbl[n_fwd:]] == ["all_reduce"],
                 len(dbl), f"{dbl}")
        # ... and in the upstream gradient (gradgradcheck's second input): replicated, so its
        # per-rank cotangents are summed over the ranks (one more all-reduce)
        go_ref = gout.clone().requires_grad_()
        (gX,) = torch.autograd.grad(TF.cross_entropy(Xh, tgt, weight=w, **kw), Xh, go_ref, create_graph=True)
        (hg_ref,) = torch.autograd.grad(gX, go_ref, v64)
        go = gout.clone().requires_grad_()
        out2 = vpce(xh, (tgt if case.full_target or not case.probs else _sl(tgt, lo, hi, cd)),
                    weight=None if w is None else (w if case.weight == "full" else w[lo:hi]), **kw)
        with count_collectives() as dg:
            (gx,) = torch.autograd.grad(out2, xh, go, create_graph=True)
            (hg,) = torch.autograd.grad(gx, go, _sl(v64, lo, hi, cd))
        ok, e = _close(hg, hg_ref, dt)
        rows.add(case.name, "double backward (grad output)", ok and [n for n, _ in dg] == ["all_reduce"], e, f"{dg}")
        # forward-mode AD
        import torch.autograd.forward_ad as fwad

        ref_t = torch.func.jvp(lambda a: TF.cross_entropy(a, tgt, weight=w, **kw), (x,), (v64,))[1]
        tl2 = tgt if case.full_target or not case.probs else _sl(tgt, lo, hi, cd)
        wl2 = None if w is None else (w if case.weight == "full" else w[lo:hi])
        with fwad.dual_level(), count_collectives() as jv:
            dual = fwad.make_dual(_sl(x, lo, hi, cd).clone(), _sl(v64, lo, hi, cd).clone())
            out_j = vpce(dual, tl2, weight=wl2, **kw)
            tangent = fwad.unpack_dual(out_j).tangent
        ok, e = _close(tangent, ref_t, dt)
        rows.add(case.name, "jvp", ok, e)
        # (the forward's 3; the tangent: one all-gather of each rank's share, 1 or N elements)
        tan_n = 1 if case.reduction != "none" else positions
        rows.add(case.name, "collectives jvp", len(jv) == 4 and jv[3:] == [("all_gather_single", world * tan_n)],
                 len(jv), f"{jv}")

    if case.name in ("mean", "probs mean", "mean weight(slice) ignore smooth") and not quick and world <= 2:
        _compile_case(x, tgt, w, kw, gout, ref.detach(), ref_grads[0], lo, hi, cd, rows, case)
    if dt == torch.float64 and not quick:
        _vmap_case(case, x, tgt, w, kw, lo, hi, cd, rows, world)
    if case.dtensor:
        _dtensor_case(case, x, tgt, w, gout, ref.detach(), ref_grads, lo, hi, cd, rows, v64, quick)
    if case.linear:
        _linear_case(case, seed, lo, hi, rows, quick)


def _compile_case(x, tgt, w, kw, gout, ref, ref_gx, lo, hi, cd, rows, case):
    """``torch.compile(fullgraph=True)`` (``aot_eager``: the compiler's tracing, functionalization
    and autograd without code generation, which is what takes the time) of
    ``vocab_parallel_cross_entropy`` and, for the 'mean' case, of
    ``vocab_parallel_linear_cross_entropy``: one graph (the collectives are the traceable
    functional ones, the validation device-side asserts), the same value and gradient."""
    from torchloss.distributed import vocab_parallel_cross_entropy as vpce
    from torchloss.distributed import vocab_parallel_linear_cross_entropy as vplce

    tl = _sl(tgt, lo, hi, cd) if case.probs and not case.full_target else tgt
    wl = None if w is None else (w if case.weight == "full" else w[lo:hi])
    xl = _sl(x, lo, hi, cd).clone().requires_grad_()
    torch._dynamo.reset()
    try:
        fn = torch.compile(lambda a, b: vpce(a, b, weight=wl, **kw), backend="aot_eager", fullgraph=True)
        out = fn(xl, tl)
        (gx,) = torch.autograd.grad(out, xl, gout)
        o1, e1 = _close(out, ref, case.dtype)
        o2, e2 = _close(gx, _sl(ref_gx, lo, hi, cd), case.dtype)
        rows.add(case.name, "torch.compile fullgraph", o1 and o2, max(e1, e2))
        if case.name == "mean":
            import torchloss.functional as TF

            g = torch.Generator().manual_seed(7)
            H = 5
            hid = torch.randn(x.shape[0], H, generator=g, dtype=x.dtype)
            Wh = torch.randn(C, H, generator=g, dtype=x.dtype)
            h_ref, W_ref = hid.clone().requires_grad_(), Wh.clone().requires_grad_()
            ref_l = TF.cross_entropy(h_ref @ W_ref.t(), tgt, **kw)
            ref_g = torch.autograd.grad(ref_l, (h_ref, W_ref), gout)
            h_mine, W_mine = hid.clone().requires_grad_(), Wh[lo:hi].clone().requires_grad_()
            fl = torch.compile(lambda a, b, c: vplce(a, b, c, budget=64, **kw), backend="aot_eager", fullgraph=True)
            out_l = fl(h_mine, W_mine, tgt)
            g_l = torch.autograd.grad(out_l, (h_mine, W_mine), gout)
            errs = [_close(out_l, ref_l.detach(), case.dtype), _close(g_l[0], ref_g[0], case.dtype),
                    _close(g_l[1], ref_g[1][lo:hi], case.dtype)]
            rows.add(case.name, "linear torch.compile fullgraph", all(o for o, _ in errs), max(e for _, e in errs))
    finally:
        torch._dynamo.reset()


def _vmap_case(case, x, tgt, w, kw, lo, hi, cd, rows, world):
    """``torch.func.vmap`` over a batch of two problems (logits and targets batched, the weight
    shared): values, ``vmap(grad)`` and ``jvp`` of the vmapped loss against a loop over the
    single-process ``cross_entropy``; the batch rule's collectives (the forward's three
    all-reduces, of twice the elements)."""
    import torchloss.functional as TF
    from torchloss.distributed import vocab_parallel_cross_entropy as vpce

    B = 2
    xb = torch.stack([x, x * 0.5 + 1])
    tb = torch.stack([tgt, tgt.flip(cd) if case.probs else tgt])
    wl = None if w is None else (w if case.weight == "full" else w[lo:hi])
    refs = [TF.cross_entropy(xb[i], tb[i], weight=w, **kw) for i in range(B)]
    ref = torch.stack(refs)
    xl = _sl(xb, lo, hi, cd + 1).contiguous()
    tl = _sl(tb, lo, hi, cd + 1).contiguous() if case.probs and not case.full_target else tb

    def loss(a, b):
        return vpce(a, b, weight=wl, **kw)

    with count_collectives() as vc:
        out = torch.func.vmap(loss)(xl, tl)
    o1, e1 = _close(out, ref, case.dtype)
    rows.add(case.name, "vmap", o1, e1)
    positions = max(1, x.numel() // x.shape[cd])
    k, extra = _stats_per_position(case)
    want = [("all_reduce", world * _meta_fields()), ("all_reduce", B * positions),
            ("all_reduce", B * k * positions + extra)]
    rows.add(case.name, "collectives vmap", vc == want, len(vc), f"{vc}")
    X = xb.clone().requires_grad_()
    (gX,) = torch.autograd.grad(sum(TF.cross_entropy(X[i], tb[i], weight=w, **kw).sum() for i in range(B)), X)
    gx = torch.func.vmap(torch.func.grad(lambda a, b: loss(a, b).sum()))(xl, tl)
    o2, e2 = _close(gx, _sl(gX, lo, hi, cd + 1), case.dtype)
    rows.add(case.name, "vmap(grad)", o2, e2)
    v = torch.randn(xb.shape, generator=torch.Generator().manual_seed(5), dtype=xb.dtype)
    ref_t = torch.stack([torch.func.jvp(lambda a, i=i: TF.cross_entropy(a, tb[i], weight=w, **kw), (xb[i],), (v[i],))[1]
                         for i in range(B)])
    tan = torch.func.jvp(lambda a: torch.func.vmap(loss)(a, tl), (xl,), (_sl(v, lo, hi, cd + 1).contiguous(),))[1]
    o3, e3 = _close(tan, ref_t, case.dtype)
    rows.add(case.name, "jvp(vmap)", o3, e3)
    # per-sample Hessian-vector products: the double backward's all-reduces on the whole batch
    ref_h = torch.stack([_hvp(lambda a, i=i: TF.cross_entropy(a, tb[i], weight=w, **kw), xb[i], v[i]) for i in range(B)])
    hv = torch.func.vmap(lambda a, b, d: _hvp(lambda q: loss(q, b), a, d))(xl, tl, _sl(v, lo, hi, cd + 1).contiguous())
    o4, e4 = _close(hv, _sl(ref_h, lo, hi, cd + 1), case.dtype)
    rows.add(case.name, "vmap hvp", o4, e4)


def _hvp(f, a, v):
    """The Hessian-vector product of the scalar ``f(a).sum()`` at ``a`` along ``v`` (torch.func)."""
    return torch.func.grad(lambda q: (torch.func.grad(lambda r: f(r).sum())(q) * v).sum())(a)


def _stats_per_position(case: Case, linear: bool = False) -> tuple[int, int]:
    """``(per position, extra)``: the elements of the forward's packed sum all-reduce: ``S`` and
    the target logit (+ its weight with class weights; + the smoothing sum per position and the
    weight total); probabilities ``S``, ``P`` and ``A``."""
    if case.probs:
        return 3, 0
    k, extra = 2 + (case.weight is not None), 0
    if case.smoothing > 0:
        k, extra = k + 1, 1
    if linear and case.smoothing > 0:  # (the linear head sends the weight total per position)
        extra = 0
        k += 1
    return k, extra


def _forward_counts_ok(fwd, world: int, positions: int, per) -> bool:
    """The forward: three all-reduces: the metadata table (``world x fields`` int64), the
    maxima (``N``), every sum packed (``k N (+1)``)."""
    k, extra = per
    return fwd == [("all_reduce", world * _meta_fields()), ("all_reduce", positions),
                   ("all_reduce", k * positions + extra)]


def _meta_fields() -> int:
    from torchloss.distributed import _FIELDS

    return _FIELDS


def _dtensor_case(case, x, tgt, w, gout, ref, ref_grads, lo, hi, cd, rows, v64=None, quick=False):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor, Replicate, Shard, distribute_tensor

    import torchloss.functional as TF

    world = dist.get_world_size()
    mesh = init_device_mesh("cpu", (world,))
    kw = {"reduction": case.reduction, "label_smoothing": case.smoothing}
    # Shard(-1) of an (N, C) input is its class dimension too
    dx = distribute_tensor(x.detach(), mesh, [Shard(-1 if x.dim() == 2 and case.ignore else cd)]).requires_grad_()
    dt_ = distribute_tensor(tgt, mesh, [Shard(cd)]) if case.probs else tgt
    out = TF.cross_entropy(dx, dt_, weight=w, **kw)
    ok = isinstance(out, DTensor) and out.placements == (Replicate(),)
    o, e = _close(out.full_tensor(), ref, case.dtype)
    rows.add(case.name, "dtensor value", ok and o, e)
    gd = distribute_tensor(gout, mesh, [Replicate()])
    (gx,) = torch.autograd.grad(out, dx, gd)
    o, e = _close(gx.full_tensor(), ref_grads[0], case.dtype)
    rows.add(case.name, "dtensor grad", o and gx.placements == dx.placements, e)
    if case.dtype == torch.float64 and not quick:
        _dtensor_higher_order(case, x, tgt, w, gout, v64, mesh, dx, dt_, gd, cd, rows)
    if case.name == "mean":  # sharded on the batch: a clear error on every rank
        try:
            TF.cross_entropy(distribute_tensor(x.detach(), mesh, [Shard(0)]), tgt)
        except NotImplementedError as exc:
            rows.add(case.name, "dtensor batch-sharded raises", True, 0.0, str(exc)[:200])
        else:
            rows.add(case.name, "dtensor batch-sharded raises", False, 0.0, "no error")
    # against torch's loss_parallel, where torch computes it
    torch_ok = not case.probs and case.smoothing == 0 and not (case.weight and case.ignore)
    if torch_ok:
        from torch.distributed.tensor.parallel import loss_parallel

        dx2 = distribute_tensor(x.detach(), mesh, [Shard(cd)]).requires_grad_()
        with loss_parallel():
            tout = torch.nn.functional.cross_entropy(dx2, tgt, weight=w, **kw)
            (tgx,) = torch.autograd.grad(tout, dx2, gd)
        o1, e1 = _close(out.full_tensor(), tout.full_tensor(), case.dtype)
        o2, e2 = _close(gx.full_tensor(), tgx.full_tensor(), case.dtype)
        rows.add(case.name, "dtensor vs loss_parallel", o1 and o2 and tout.placements == out.placements, max(e1, e2))


def _dtensor_higher_order(case, x, tgt, w, gout, v64, mesh, dx, dt_, gd, cd, rows):
    """Double backward (Hessian-vector products in the input) and the tangent of the DTensor
    path, against the single-process ones of the whole logits. DTensors cannot carry forward-mode
    tangents in torch 2.13 (``fwad.make_dual`` and ``torch.func.jvp`` of a DTensor fail in its
    sharding propagation), so the Function's ``jvp`` is called directly on the saved context."""
    from torch.distributed.tensor import DTensor, Replicate, distribute_tensor

    import torchloss.functional as TF
    from torchloss.distributed import DTensorCrossEntropyFunction

    kw = {"reduction": case.reduction, "label_smoothing": case.smoothing}
    Xh = x.clone().requires_grad_()
    (gX,) = torch.autograd.grad(TF.cross_entropy(Xh, tgt, weight=w, **kw), Xh, gout, create_graph=True)
    (hv_ref,) = torch.autograd.grad(gX, Xh, v64)
    dv = distribute_tensor(v64, mesh, list(dx.placements))
    with count_collectives() as dbl:
        out = TF.cross_entropy(dx, dt_, weight=w, **kw)
        n_fwd = len(dbl)
        (gx,) = torch.autograd.grad(out, dx, gd, create_graph=True)
        (hv,) = torch.autograd.grad(gx, dx, dv)
    o, e = _close(hv.full_tensor(), hv_ref, case.dtype)
    rows.add(case.name, "dtensor double backward (hvp)", o and hv.placements == dx.placements, e)
    coll = dbl[n_fwd:]
    N = max(1, x.numel() // x.shape[cd])
    rows.add(case.name, "dtensor collectives double backward", coll == [("all_reduce", N)], len(coll), f"{coll}")
    ref_t = torch.func.jvp(lambda a: TF.cross_entropy(a, tgt, weight=w, **kw), (x,), (v64,))[1]
    with count_collectives() as jv, torch.no_grad():
        tan = DTensorCrossEntropyFunction.jvp(out.grad_fn, dv, None, None, None, None)
    ok = isinstance(tan, DTensor) and tan.placements == (Replicate(),)
    o, e = _close(tan.full_tensor(), ref_t, case.dtype)
    rows.add(case.name, "dtensor jvp", ok and o and len(jv) == 1, e, f"{jv}")


def _linear_case(case, seed, lo, hi, rows, quick=False):
    """The linear head: ``hidden @ W.T (+ b)`` with W's rows split over the ranks, against
    ``cross_entropy`` of the whole logits. Hidden states of the target's shape plus ``H``;
    a bias with label smoothing; tiny blocks (several per shard)."""
    import torch.autograd.forward_ad as fwad

    import torchloss.functional as TF
    from torchloss.distributed import vocab_parallel_linear_cross_entropy as vplce

    g = torch.Generator().manual_seed(1000 + seed)
    H, dt = 5, case.dtype
    _, t, w64, gout64, _ = _inputs(case, seed)
    pos = case.shape[:1] + case.shape[2:] if len(case.shape) > 1 else ()
    hid = torch.randn(*pos, H, generator=g, dtype=torch.float64).to(dt)
    Wh = torch.randn(C, H, generator=g, dtype=torch.float64).to(dt)
    bh = torch.randn(C, generator=g, dtype=torch.float64).to(dt) if case.smoothing > 0 else None
    w = None if w64 is None else w64.to(dt)
    gout = gout64.to(dt)
    kw = {"reduction": case.reduction, "label_smoothing": case.smoothing}

    def logits(p, q, b):
        z = p @ q.t() + (0 if b is None else b)
        return z.movedim(-1, 1) if z.dim() > 2 else z  # classes along dimension 1

    if case.probs:
        t = t.to(dt)
    ref_in = [hid.clone().requires_grad_(), Wh.clone().requires_grad_()] + ([bh.clone().requires_grad_()] if bh is not None else [])
    ref_t = t.clone().requires_grad_(case.probs)
    ref_w = None if w is None else w.clone().requires_grad_(case.probs)
    ref = TF.cross_entropy(logits(*ref_in[:2], ref_in[2] if bh is not None else None), ref_t, weight=ref_w, **kw)
    extra = [ref_t] + ([ref_w] if ref_w is not None else []) if case.probs else []
    ref_g = torch.autograd.grad(ref, ref_in + extra, gout)
    mine = [hid.clone().requires_grad_(), Wh[lo:hi].clone().requires_grad_()] + ([bh[lo:hi].clone().requires_grad_()] if bh is not None else [])
    tl = t if not case.probs or case.full_target else t[:, lo:hi]
    tl = tl.clone().requires_grad_(case.probs)
    wl = None if w is None else (w if case.weight == "full" else w[lo:hi]).clone().requires_grad_(case.probs)
    mine_extra = [tl] + ([wl] if wl is not None else []) if case.probs else []

    def call(p, q, b):
        return vplce(p, q, tl, local_linear_bias=b, weight=wl, budget=64, **kw)

    with count_collectives() as fwd:
        out = call(mine[0], mine[1], mine[2] if bh is not None else None)
    with count_collectives() as bwd:
        my_g = torch.autograd.grad(out, mine + mine_extra, gout)
    o, e = _close(out, ref.detach(), dt)
    rows.add(case.name, "linear value", o, e)
    errs = [_close(my_g[0], ref_g[0], dt), _close(my_g[1], ref_g[1][lo:hi], dt)]
    if bh is not None:
        errs.append(_close(my_g[2], ref_g[2][lo:hi], dt))
    if case.probs:  # target and weight: a whole-vocabulary operand's part sums over the ranks
        k = len(mine)
        for j, (mg, rg, full) in enumerate(zip(my_g[k:], ref_g[k:], (case.full_target, case.weight == "full"))):
            if full:
                mg = mg.detach().clone()
                dist.all_reduce(mg)
                errs.append(_close(mg, rg, dt))
            else:
                errs.append(_close(mg, rg[:, lo:hi] if j == 0 else rg[lo:hi], dt))
    rows.add(case.name, "linear grads", all(o for o, _ in errs), max(e for _, e in errs))
    N_lin = hid.numel() // H
    rows.add(case.name, "linear collectives",
             _forward_counts_ok(fwd, dist.get_world_size(), N_lin, _stats_per_position(case, linear=True))
             and bwd == [("all_reduce", N_lin * H)],
             len(fwd) + len(bwd), f"{fwd} {bwd}")
    if dt == torch.float64 and not quick:
        _linear_double_backward(case, g, hid, Wh, bh, t, w, tl, wl, gout, kw, logits, call, lo, hi, rows)
        _linear_vmap(case, hid, Wh, bh, t, w, wl, kw, logits, lo, hi, rows)
    # forward-mode AD in every operand of this rank (and the target and weight for probabilities)
    th = torch.randn(hid.shape, generator=g, dtype=torch.float64).to(dt)
    tW = torch.randn(Wh.shape, generator=g, dtype=torch.float64).to(dt)
    tb = torch.randn(C, generator=g, dtype=torch.float64).to(dt)
    if case.probs:
        tT = torch.randn(t.shape, generator=g, dtype=torch.float64).to(dt)
        tw_ = None if w is None else torch.randn(w.shape, generator=g, dtype=torch.float64).to(dt)
    prim, tans = [hid, Wh] + ([bh] if bh is not None else []), [th, tW] + ([tb] if bh is not None else [])
    if case.probs:
        prim, tans = prim + [t] + ([w] if w is not None else []), tans + [tT] + ([tw_] if w is not None else [])

    def ref_fn(*a):
        b = a[2] if bh is not None else None
        k = 3 if bh is not None else 2
        tt_ = a[k] if case.probs else t
        ww_ = (a[k + 1] if w is not None else None) if case.probs else w
        return TF.cross_entropy(logits(a[0], a[1], b), tt_, weight=ww_, **kw)

    ref_t = torch.func.jvp(ref_fn, tuple(prim), tuple(tans))[1]
    with fwad.dual_level(), count_collectives() as jv:
        duals = [fwad.make_dual(hid, th), fwad.make_dual(Wh[lo:hi].clone(), tW[lo:hi].clone())]
        duals.append(None if bh is None else fwad.make_dual(bh[lo:hi].clone(), tb[lo:hi].clone()))
        if case.probs:
            tdual = fwad.make_dual(tl.detach(), (tT if case.full_target else tT[:, lo:hi]).clone())
            wdual = None if wl is None else fwad.make_dual(
                wl.detach(), (tw_ if case.weight == "full" else tw_[lo:hi]).clone())
            out_t = fwad.unpack_dual(vplce(*duals[:2], tdual, local_linear_bias=duals[2], weight=wdual, budget=64,
                                           **kw)).tangent
        else:
            out_t = fwad.unpack_dual(call(*duals)).tangent
    o, e = _close(out_t, ref_t, dt)
    rows.add(case.name, "linear jvp", o and len(jv) == 4 and jv[3][0] == "all_gather_single", e, f"{jv}")


def _linear_vmap(case, hid, Wh, bh, t, w, wl, kw, logits, lo, hi, rows):
    """``torch.func.vmap`` of the linear head over a batch of two sets of hidden states and
    targets (the head's rows, bias and class weight shared): values, ``vmap(grad)`` in the hidden
    states, ``jvp`` of the vmapped loss, and the batch rule's collectives."""
    import torchloss.functional as TF
    from torchloss.distributed import vocab_parallel_linear_cross_entropy as vplce

    B = 2
    world = dist.get_world_size()
    hb = torch.stack([hid, hid * 0.5 + 0.3])
    tb = torch.stack([t.detach(), t.detach().flip(1) if case.probs else t])
    w_ = None if w is None else w.detach()
    wl_ = None if wl is None else wl.detach()
    Wl, bl = Wh[lo:hi], None if bh is None else bh[lo:hi]
    tl = tb[:, :, lo:hi] if case.probs and not case.full_target else tb

    def ref(i, a):
        return TF.cross_entropy(logits(a, Wh, bh), tb[i], weight=w_, **kw)

    def loss(a, b):
        return vplce(a, Wl, b, local_linear_bias=bl, weight=wl_, budget=64, **kw)

    with count_collectives() as vc:
        out = torch.func.vmap(loss)(hb, tl)
    errs = [_close(out, torch.stack([ref(i, hb[i]) for i in range(B)]), case.dtype)]
    gref = torch.stack([torch.func.grad(lambda a, i=i: ref(i, a).sum())(hb[i]) for i in range(B)])
    errs.append(_close(torch.func.vmap(torch.func.grad(lambda a, b: loss(a, b).sum()))(hb, tl), gref, case.dtype))
    v = torch.randn(hb.shape, generator=torch.Generator().manual_seed(6), dtype=hb.dtype)
    rj = torch.stack([torch.func.jvp(lambda a, i=i: ref(i, a), (hb[i],), (v[i],))[1] for i in range(B)])
    errs.append(_close(torch.func.jvp(lambda a: torch.func.vmap(loss)(a, tl), (hb,), (v,))[1], rj, case.dtype))
    ref_h = torch.stack([_hvp(lambda a, i=i: ref(i, a), hb[i], v[i]) for i in range(B)])
    errs.append(_close(torch.func.vmap(lambda a, b, d: _hvp(lambda q: loss(q, b), a, d))(hb, tl, v), ref_h, case.dtype))
    P = hid.numel() // hid.shape[-1]
    k, extra = _stats_per_position(case, linear=True)
    want = [("all_reduce", world * _meta_fields()), ("all_reduce", B * P), ("all_reduce", B * k * P + extra)]
    rows.add(case.name, "linear vmap", all(o for o, _ in errs) and vc == want, max(e for _, e in errs), f"{vc}")


def _linear_double_backward(case, g, hid, Wh, bh, t, w, tl, wl, gout, kw, logits, call, lo, hi, rows):
    """Hessian-vector products of the linear head (every operand of this rank: input, head rows,
    bias, and the target and weight of probabilities) against the single-process ones of the
    whole head; the collectives of the differentiated backward counted."""
    import torchloss.functional as TF
    from torchloss.distributed import vocab_parallel_linear_cross_entropy as vplce

    world = dist.get_world_size()
    ref_in = [hid.clone().requires_grad_(), Wh.clone().requires_grad_()] + ([bh.clone().requires_grad_()] if bh is not None else [])
    ref_t = t.clone().requires_grad_(case.probs)
    ref_w = None if w is None else w.clone().requires_grad_(case.probs)
    extra = [ref_t] + ([ref_w] if ref_w is not None else []) if case.probs else []
    wrt = ref_in + extra
    ref = TF.cross_entropy(logits(*ref_in[:2], ref_in[2] if bh is not None else None), ref_t, weight=ref_w, **kw)
    vs = [torch.randn(a.shape, generator=g, dtype=torch.float64) for a in wrt]
    go_ref = gout.clone().requires_grad_()  # (and in the upstream gradient, as gradgradcheck)
    gr = torch.autograd.grad(ref, wrt, go_ref, create_graph=True)
    ref_h = torch.autograd.grad(sum((a * v).sum() for a, v in zip(gr, vs)), wrt + [go_ref])
    mine = [hid.clone().requires_grad_(), Wh[lo:hi].clone().requires_grad_()] + ([bh[lo:hi].clone().requires_grad_()] if bh is not None else [])
    mt = tl.detach().clone().requires_grad_(case.probs)
    mw = None if wl is None else wl.detach().clone().requires_grad_(case.probs)
    mine_all = mine + ([mt] + ([mw] if mw is not None else []) if case.probs else [])
    # each rank's directions: the input's whole (replicated), its own rows of the head, bias,
    # target and weight (a whole-vocabulary operand's whole direction: its gradient is this
    # rank's classes' part)
    my_vs = [vs[0], vs[1][lo:hi]] + ([vs[2][lo:hi]] if bh is not None else [])
    if case.probs:
        k = len(my_vs)
        my_vs.append(vs[k] if case.full_target else vs[k][:, lo:hi])
        if mw is not None:
            my_vs.append(vs[k + 1] if case.weight == "full" else vs[k + 1][lo:hi])
    with count_collectives() as dbl:
        out = vplce(mine[0], mine[1], mt, local_linear_bias=mine[2] if bh is not None else None, weight=mw,
                    budget=64, **kw)
        n_fwd = len(dbl)
        go = gout.clone().requires_grad_()
        gm = torch.autograd.grad(out, mine_all, go, create_graph=True)
        hv = torch.autograd.grad(sum((a * v).sum() for a, v in zip(gm, my_vs)), mine_all + [go])
    errs = [_close(hv[0], ref_h[0], torch.float64), _close(hv[1], ref_h[1][lo:hi], torch.float64),
            _close(hv[-1], ref_h[-1], torch.float64)]
    if bh is not None:
        errs.append(_close(hv[2], ref_h[2][lo:hi], torch.float64))
    if case.probs:
        k = len(mine)
        for j, full in enumerate((case.full_target, case.weight == "full")[: len(mine_all) - k]):
            h = hv[k + j].detach().clone()
            if full:
                dist.all_reduce(h)
                errs.append(_close(h, ref_h[k + j], torch.float64))
            else:
                errs.append(_close(h, ref_h[k + j][:, lo:hi] if j == 0 else ref_h[k + j][lo:hi], torch.float64))
    rows.add(case.name, "linear double backward (hvp)", all(o for o, _ in errs), max(e for _, e in errs))
    # first backward: the input gradient's all-reduce; second: the cotangents of ℓ (N), of the
    # input (N x in) and of the upstream gradient (1 or N), and of A (N) for probabilities with a
    # differentiable target or weight
    coll = dbl[n_fwd:]
    N = hid.numel() // hid.shape[-1]
    want = [("all_reduce", N * hid.shape[-1]), ("all_reduce", N), ("all_reduce", N * hid.shape[-1]),
            ("all_reduce", gout.numel())]
    if case.probs:
        want.append(("all_reduce", N))
    rows.add(case.name, "linear collectives double backward",
             sorted(coll) == sorted(want), len(coll), f"{coll}")
    del world


# ============================================================================================
# Bad input: the same error on every rank, no hang


def _bad_inputs(rank: int, world: int, rows: _Rows):
    from torchloss.distributed import vocab_parallel_cross_entropy as vpce
    from torchloss.distributed import vocab_parallel_linear_cross_entropy as vplce

    sizes = slice_sizes(world)
    lo, hi = sum(sizes[:rank]), sum(sizes[: rank + 1])
    x = torch.randn(4, C, dtype=torch.float64)
    t = torch.tensor([0, 1, 2, 6])
    xl = x[:, lo:hi]
    calls = {
        "vocab_start disagrees with the slices": lambda: vpce(xl, t, vocab_start=lo + (1 if rank == world - 1 else 0)),
        "vocab_start on one rank only": lambda: vpce(xl, t, vocab_start=lo if rank == 0 else None),
        "target out of range": lambda: vpce(xl, torch.tensor([0, 1, 2, C])),
        "target out of range on one rank": lambda: vpce(xl, torch.tensor([0, 1, 2, C if rank == 1 else 3])),
        "N differs between ranks": lambda: vpce(x[: 4 - (rank == 1), lo:hi], t[: 4 - (rank == 1)]),
        "local error on one rank": lambda: vpce(xl, t, reduction="bad" if rank == 1 else "mean"),
        "dtype differs": lambda: vpce(xl.float() if rank == 0 else xl, t),
        "reduction differs": lambda: vpce(xl, t, reduction="sum" if rank == 0 else "mean"),
        "weight of a wrong size": lambda: vpce(xl, t, weight=torch.ones(C + 1 if rank == 0 else C, dtype=torch.float64)),
        "targets differ between ranks": lambda: vpce(xl, t if rank else t.flip(0)),
        "vmap batch size differs between ranks": lambda: torch.func.vmap(vpce)(
            xl.expand(2 + (rank == 1), *xl.shape), t.expand(2 + (rank == 1), *t.shape)),
        "linear head: input requires grad on one rank only": lambda: vplce(
            torch.randn(4, 3, dtype=torch.float64, requires_grad=rank == 0), torch.randn(hi - lo, 3, dtype=torch.float64), t),
        "linear head: in_features differs on one rank": lambda: vplce(
            torch.randn(4, 3 + (rank == 1), dtype=torch.float64), torch.randn(hi - lo, 3, dtype=torch.float64), t),
    }
    for name, call in calls.items():
        start = time.monotonic()
        try:
            call()
        except Exception as exc:  # noqa: BLE001
            rows.add("bad input", name, True, time.monotonic() - start, f"{type(exc).__name__}: {str(exc)[:300]}")
        else:
            rows.add("bad input", name, False, time.monotonic() - start, "no error")
    # still in step afterwards: a good call works
    out = vpce(xl, t)
    import torchloss.functional as TF

    ok, e = _close(out, TF.cross_entropy(x, t), torch.float64)
    rows.add("bad input", "a good call afterwards", ok, e)


def _device_validation(rank: int, world: int, rows: _Rows):
    """The device-side validation (what runs on GPUs and under ``torch.compile``: the exchanged
    records checked by ``torch._assert_async``, nothing read back), forced on the CPU: good
    calls agree with the single-process ``cross_entropy``, bad calls raise on every rank."""
    import torchloss.distributed as D
    import torchloss.functional as TF

    sizes = slice_sizes(world)
    lo, hi = sum(sizes[:rank]), sum(sizes[: rank + 1])
    g = torch.Generator().manual_seed(11)
    x = torch.randn(4, C, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 1, -100, 6])
    w = torch.rand(C, generator=g, dtype=torch.float64) + 0.5
    p = torch.softmax(torch.randn(4, C, generator=g, dtype=torch.float64), 1)
    xl = x[:, lo:hi]
    D._DEVICE_VALIDATION = True
    try:
        # good calls: values and gradients (a whole-vocabulary weight and target: the layout's first
        # class is a tensor here)
        kw = {"weight": w, "label_smoothing": 0.1}
        X = x.clone().requires_grad_()
        ref = TF.cross_entropy(X, t, **kw)
        (gX,) = torch.autograd.grad(ref, X)
        mine = xl.clone().requires_grad_()
        out = D.vocab_parallel_cross_entropy(mine, t, vocab_start=lo, **kw)
        (gx,) = torch.autograd.grad(out, mine)
        errs = [_close(out, ref.detach(), torch.float64), _close(gx, gX[:, lo:hi], torch.float64)]
        Xp, Pp, Wp = x.clone().requires_grad_(), p.clone().requires_grad_(), w.clone().requires_grad_()
        ref = TF.cross_entropy(Xp, Pp, weight=Wp, label_smoothing=0.1, reduction="sum")
        ref_g = torch.autograd.grad(ref, (Xp, Pp, Wp))
        mine, mp, mw = xl.clone().requires_grad_(), p.clone().requires_grad_(), w.clone().requires_grad_()
        out = D.vocab_parallel_cross_entropy(mine, mp, weight=mw, label_smoothing=0.1, reduction="sum")
        gm = [v.detach().clone() for v in torch.autograd.grad(out, (mine, mp, mw))]
        dist.all_reduce(gm[1])
        dist.all_reduce(gm[2])
        errs += [_close(out, ref.detach(), torch.float64), _close(gm[0], ref_g[0][:, lo:hi], torch.float64),
                 _close(gm[1], ref_g[1], torch.float64), _close(gm[2], ref_g[2], torch.float64)]
        hid = torch.randn(4, 3, generator=g, dtype=torch.float64)
        Wh = torch.randn(C, 3, generator=g, dtype=torch.float64)
        ref = TF.cross_entropy(hid @ Wh.t(), t, **kw)
        out = D.vocab_parallel_linear_cross_entropy(hid, Wh[lo:hi], t, budget=64, **kw)
        errs.append(_close(out, ref, torch.float64))
        rows.add("bad input", "device validation: good calls", all(o for o, _ in errs), max(e for _, e in errs))
        calls = {
            "vocab_start disagrees with the slices": lambda: D.vocab_parallel_cross_entropy(
                xl, t, vocab_start=lo + (1 if rank == world - 1 else 0)),
            "target out of range on one rank": lambda: D.vocab_parallel_cross_entropy(
                xl, torch.tensor([0, 1, 2, C if rank == 1 else 3])),
            "N differs between ranks": lambda: D.vocab_parallel_cross_entropy(
                x[: 4 - (rank == 1), lo:hi], t[: 4 - (rank == 1)]),
            "weight of a wrong size": lambda: D.vocab_parallel_cross_entropy(
                xl, t, weight=torch.ones(C + 1 if rank == 0 else C, dtype=torch.float64)),
            "targets differ between ranks": lambda: D.vocab_parallel_cross_entropy(xl, t if rank else t.flip(0)),
            "local error on one rank": lambda: D.vocab_parallel_cross_entropy(
                xl, t, reduction="bad" if rank == 1 else "mean"),
        }
        for name, call in calls.items():
            start = time.monotonic()
            try:
                call()
            except Exception as exc:  # noqa: BLE001
                # (the rank whose own argument was bad raises its own exception; the others the assert's)
                own = name == "local error on one rank" and rank == 1
                ok = own or (type(exc) is RuntimeError and "vocab_parallel_cross_entropy" in str(exc))
                rows.add("bad input", f"device validation: {name}", ok, time.monotonic() - start,
                         f"{type(exc).__name__}: {str(exc)[:300]}")
            else:
                rows.add("bad input", f"device validation: {name}", False, time.monotonic() - start, "no error")
        out = D.vocab_parallel_cross_entropy(xl, t)
        ok, e = _close(out, TF.cross_entropy(x, t), torch.float64)
        rows.add("bad input", "device validation: a good call afterwards", ok, e)
    finally:
        D._DEVICE_VALIDATION = False


def _compile_bad_inputs(rank: int, world: int, rows: _Rows):
    """Bad calls of a compiled ``vocab_parallel_cross_entropy`` (``fullgraph=True``): the
    compiled program's asserts stop every rank (no hang), including a rank whose own argument
    was bad while tracing (its program fails the same assert)."""
    import torchloss.functional as TF
    from torchloss.distributed import vocab_parallel_cross_entropy as vpce

    sizes = slice_sizes(world)
    lo, hi = sum(sizes[:rank]), sum(sizes[: rank + 1])
    x = torch.randn(4, C, generator=torch.Generator().manual_seed(12), dtype=torch.float64)
    xl = x[:, lo:hi]
    t = torch.tensor([0, 1, 2, 6])
    cases = {
        "compiled: target out of range on one rank": (torch.tensor([0, 1, 2, C if rank == 1 else 3]), "mean"),
        "compiled: local error on one rank": (t, "bad" if rank == 1 else "mean"),
    }
    torch._dynamo.reset()
    try:
        for name, (tgt, red) in cases.items():
            fn = torch.compile(lambda a, b, red=red: vpce(a, b, reduction=red), backend="aot_eager", fullgraph=True)
            start = time.monotonic()
            try:
                fn(xl, tgt)
            except Exception as exc:  # noqa: BLE001
                rows.add("bad input", name, "vocab_parallel_cross_entropy" in str(exc), time.monotonic() - start,
                         f"{type(exc).__name__}: {str(exc)[-300:]}")
            else:
                rows.add("bad input", name, False, time.monotonic() - start, "no error")
        fn = torch.compile(lambda a, b: vpce(a, b), backend="aot_eager", fullgraph=True)
        ok, e = _close(fn(xl, t), TF.cross_entropy(x, t), torch.float64)
        rows.add("bad input", "compiled: a good call afterwards", ok, e)
    finally:
        torch._dynamo.reset()


# ============================================================================================
# python -m torchloss check --distributed

_COLUMNS = (
    ("value", ("value", "bitwise identical on every rank", "graph: one torchloss node")),
    ("gradients", ("grad input", "grad target", "grad weight")),
    ("double bwd", ("double backward (hvp)", "double backward (grad output)")),
    ("jvp", ("jvp",)),
    ("collectives", ("collectives forward", "collectives backward", "collectives double backward", "collectives jvp")),
    ("vmap", ("vmap", "vmap(grad)", "jvp(vmap)", "vmap hvp", "collectives vmap", "linear vmap")),
    ("compile", ("torch.compile fullgraph", "linear torch.compile fullgraph")),
    ("DTensor", ("dtensor value", "dtensor grad", "dtensor vs loss_parallel", "dtensor batch-sharded raises",
                 "dtensor double backward (hvp)", "dtensor collectives double backward", "dtensor jvp")),
    ("linear head", ("linear value", "linear grads", "linear collectives", "linear jvp",
                     "linear double backward (hvp)", "linear collectives double backward")),
)


def format_table(per_rank: list[list[dict]], unicode: bool = True) -> str:
    """One line per case: a mark per column (every rank's checks of it), the max errors."""
    good, bad = ("✓", "✗") if unicode else ("ok", "FAIL")
    names = []
    for row in per_rank[0]:
        if row["case"] not in names:
            names.append(row["case"])
    header = ["case", *(c for c, _ in _COLUMNS), "max value err", "max grad err"]
    lines = []
    for name in names:
        rows = [r for rank_rows in per_rank for r in rank_rows if r["case"] == name]
        cells = [name]
        for _, checks in _COLUMNS:
            sel = [r for r in rows if r["check"] in checks]
            if name == "bad input":
                sel = rows if checks == _COLUMNS[0][1] else []
            failed = sum(not r["ok"] for r in sel)
            cells.append("-" if not sel else (good if not failed else f"{bad} {failed}"))
        crashed = [r for r in rows if r["check"] == "run"]
        if crashed:
            cells[1] = f"{bad} crashed"
        verr = max((r["error"] for r in rows if r["check"] in ("value", "dtensor value", "linear value")), default=0.0)
        gerr = max((r["error"] for r in rows if r["check"] in ("grad input", "grad target", "grad weight",
                                                                  "dtensor grad", "linear grads")), default=0.0)
        cells += [f"{verr:.1e}" if name != "bad input" else "-", f"{gerr:.1e}" if name != "bad input" else "-"]
        lines.append(cells)
    widths = [max(len(h), *(len(c[j]) for c in lines)) for j, h in enumerate(header)]

    def line(cells):
        return "  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(cells, widths))).rstrip()

    rule = ("─" if unicode else "-") * len(line(header))
    return "\n".join([line(header), rule, *(line(c) for c in lines)])


def check_main(out, quick: bool = False, unicode: bool = True, world: int = 2) -> int:
    """Run the table on ``world`` gloo ranks and print it; 0 when every check passed."""
    import torchloss

    start = time.perf_counter()
    per_rank = spawn(run_table, world, None, quick, timeout=300)
    elapsed = time.perf_counter() - start
    failures = [(rank, r) for rank, rows in enumerate(per_rank) for r in rows if not r["ok"]]
    checks = sum(len(rows) for rows in per_rank)
    print(file=out)
    print(format_table(per_rank, unicode), file=out)
    print(file=out)
    verdict = "all passed" if not failures else f"{len(failures)} checks FAILED"
    print(
        f"torchloss {torchloss.__version__}, torch {torch.__version__}: torchloss.distributed on {world} gloo ranks "
        f"(slices {slice_sizes(world)} of {C} classes) against the single-process cross_entropy of the gathered "
        f"logits; {checks} checks{' (quick)' if quick else ''} in {elapsed:.1f} s: {verdict}",
        file=out,
    )
    for rank, r in failures[:50]:
        print(f"  rank {rank}: {r['case']} / {r['check']}: error {r['error']:.3g} {r['detail'][:300]}", file=out)
    out.flush()
    return 0 if not failures else 1


# ============================================================================================
# python -m torchloss bench --distributed

BENCH_SHAPES = {"logits": (1024, 32768), "linear": (1024, 512, 32768)}  # (N, C) and (N, hidden, C)


def _bench_rank(rank: int, world: int, reps: int, threads: int, shapes: dict):
    """Per-rank median time and peak memory of one forward+backward: torchloss.distributed
    against gathering the logits and calling cross_entropy (the rank's slice of its gradient)."""
    import statistics

    import torchloss.functional as TF
    from torchloss.bench import peak_bytes
    from torchloss.distributed import (
        vocab_parallel_cross_entropy,
        vocab_parallel_linear_cross_entropy,
    )

    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    out = []
    N, Cn = shapes["logits"]
    lo, hi = Cn * rank // world, Cn * (rank + 1) // world
    x = torch.randn(N, hi - lo, generator=g).requires_grad_()
    t = torch.randint(0, Cn, (N,), generator=g)

    def gather(local):
        parts = [torch.empty_like(local) for _ in range(world)]
        dist.all_gather(parts, local.detach().contiguous())
        return torch.cat(parts, 1).requires_grad_()

    def vp_logits():
        x.grad = None
        vocab_parallel_cross_entropy(x, t).backward()

    def gather_logits():
        x.grad = None
        full = gather(x)
        TF.cross_entropy(full, t).backward()
        x.backward(full.grad[:, lo:hi])

    N2, H, C2 = shapes["linear"]
    lo2, hi2 = C2 * rank // world, C2 * (rank + 1) // world
    h = torch.randn(N2, H, generator=g).requires_grad_()
    w = (torch.randn(hi2 - lo2, H, generator=g) / H**0.5).requires_grad_()
    t2 = torch.randint(0, C2, (N2,), generator=g)

    def vp_linear():
        h.grad = w.grad = None
        vocab_parallel_linear_cross_entropy(h, w, t2).backward()

    def gather_linear():
        h.grad = w.grad = None
        local = h @ w.t()
        full = gather(local)
        TF.cross_entropy(full, t2).backward()
        local.backward(full.grad[:, lo2:hi2])
        dist.all_reduce(h.grad)  # the input's gradient, as the vocab-parallel version gives it

    for name, shape, ours, theirs in (
        ("vocab_parallel_cross_entropy", (N, Cn), vp_logits, gather_logits),
        ("vocab_parallel_linear_cross_entropy", (N2, H, C2), vp_linear, gather_linear),
    ):
        times = {}
        for label, step in (("ours", ours), ("gather", theirs)):
            step()  # warm-up
            ts = []
            for _ in range(reps):
                dist.barrier()
                t0 = time.perf_counter()
                step()
                ts.append(time.perf_counter() - t0)
            times[label] = statistics.median(ts)
        dist.barrier()
        peaks = {}
        for label, step in (("ours", ours), ("gather", theirs)):
            dist.barrier()
            peaks[label] = peak_bytes(step, torch.device("cpu"))
        out.append({"function": name, "shape": shape, "rank": rank, "time": times, "peak": peaks})
    return out


def bench_main(out, world: int = 2, reps: int = 5, threads: int = 1, shapes: dict | None = None) -> int:
    """``python -m torchloss bench --distributed``: per-rank time and peak memory at ``world``
    gloo ranks against gather-then-cross_entropy."""
    import torchloss
    from torchloss.bench import _cpu_model

    per_rank = spawn(_bench_rank, world, reps, threads, shapes or BENCH_SHAPES, timeout=590)
    print(
        f"\ntorchloss {torchloss.__version__}, torch {torch.__version__}, {_cpu_model()}; {world} gloo ranks on this "
        f"machine, {threads} thread(s) each; forward+backward, median of {reps}; float32; peak = highest memory "
        "allocated during the step above what was allocated before it (the rank's inputs not counted)\n",
        file=out,
    )
    header = f"{'function':<36} {'shape':<18} {'rank':>4} {'ours':>9} {'gather':>9} {'ratio':>6} {'peak ours':>10} {'peak gather':>12} {'ratio':>6}"
    print(header, file=out)
    print("-" * len(header), file=out)
    for rows in zip(*per_rank):
        for r in rows:
            ta, tb = r["time"]["ours"], r["time"]["gather"]
            pa, pb = r["peak"]["ours"], r["peak"]["gather"]
            print(
                f"{r['function']:<36} {'x'.join(map(str, r['shape'])):<18} {r['rank']:>4} {ta * 1e3:>7.1f}ms {tb * 1e3:>7.1f}ms "
                f"{ta / tb:>6.2f} {pa / 2**20:>8.1f}Mi {pb / 2**20:>10.1f}Mi {pa / max(pb, 1):>6.3f}",
                file=out,
            )
    print("\nshape: (N, C) logits, or (N, hidden, C) for the linear head; C split evenly over the ranks", file=out)
    out.flush()
    return 0
