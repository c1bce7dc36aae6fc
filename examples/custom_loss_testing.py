"""Test your own loss with torchloss.testing: a hand-differentiated log-cosh loss.

``LogCosh`` below is written the way torchloss writes its losses: a ``torch.autograd.Function``
whose ``backward`` is made of ordinary torch ops on the saved inputs (so it can be differentiated
again), with a ``jvp`` for forward-mode AD and ``generate_vmap_rule`` for ``torch.func.vmap``.
The reference is the same loss composed of plain torch ops, which autograd differentiates for us.

torchloss.testing then checks it:

* ``parity``          values and input gradients against the reference (float32 and float64);
* ``check_autograd``  gradcheck, gradgradcheck and forward-mode AD against finite differences;
* ``check_jvp``       ``torch.func.jvp`` against the reference's;
* ``check_vmap``      ``torch.func.vmap`` and ``vmap(grad)`` against a Python loop.

Finally a deliberately wrong backward shows what a failed check looks like.

    python examples/custom_loss_testing.py
"""

from __future__ import annotations

import math

import torch
from torch.autograd.gradcheck import GradcheckError

from torchloss.testing import check_autograd, check_jvp, check_vmap, parity

LOG2 = math.log(2.0)


def _log_cosh(d):
    # log(cosh d) = |d| + log1p(exp(-2|d|)) - log 2: no overflow of cosh for large |d|.
    a = d.abs()
    return a + torch.log1p(torch.exp(-2 * a)) - LOG2


class LogCosh(torch.autograd.Function):
    """mean(log(cosh(input - target))); d/d input = tanh(input - target)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(input, target):
        return _log_cosh(input - target).mean()

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)  # inputs only: backward recomputes, so it is differentiable
        ctx.save_for_forward(*inputs)

    @staticmethod
    def backward(ctx, grad):
        input, target = ctx.saved_tensors
        g = torch.tanh(input - target) * (grad / input.numel())
        return g, -g

    @staticmethod
    def jvp(ctx, t_input, t_target):
        input, target = ctx.saved_tensors
        return (torch.tanh(input - target) * (t_input - t_target)).mean()


def log_cosh_loss(input, target):
    return LogCosh.apply(input, target)


def reference(input, target):
    return torch.log(torch.cosh(input - target)).mean()


class BuggyLogCosh(LogCosh):
    @staticmethod
    def backward(ctx, grad):
        input, target = ctx.saved_tensors
        g = torch.tanh(input - target) * (grad / input.numel())
        return g, g  # wrong sign for target


def main() -> int:
    gen = torch.Generator().manual_seed(0)
    x64 = torch.randn(8, 5, generator=gen, dtype=torch.float64)
    y64 = torch.randn(8, 5, generator=gen, dtype=torch.float64)
    ok = True

    # parity: forward values and gradients of input and target (wrt=(0, 1))
    for dtype, (rtol, atol) in ((torch.float32, (2e-5, 1e-6)), (torch.float64, (1e-7, 1e-10))):
        args = (x64.to(dtype), y64.to(dtype))
        report = parity(log_cosh_loss, reference, args, wrt=(0, 1), rtol=rtol, atol=atol)
        print(f"parity {dtype!s:14}  forward error {report.forward_error:.1e}  "
              f"gradient error {report.gradient_error:.1e}  {'ok' if report else report.problems}")
        ok &= report.ok

    # gradcheck / gradgradcheck / forward AD (float64); raises GradcheckError on failure
    done = check_autograd(log_cosh_loss, (x64, y64), wrt=(0, 1))
    print(f"check_autograd: {', '.join(done)} passed")

    # jvp against the reference's (torch composes its forward-mode AD from the plain ops)
    err = check_jvp(log_cosh_loss, reference, (x64, y64), wrt=(0, 1), rtol=1e-7, atol=1e-10)
    print(f"check_jvp: max error {err:.1e}")

    # vmap over a batch of 4 (input, target) pairs
    batch = [((torch.randn(8, 5, generator=gen, dtype=torch.float64),
               torch.randn(8, 5, generator=gen, dtype=torch.float64)), {}) for _ in range(4)]
    err = check_vmap(log_cosh_loss, reference, batch, wrt=(0, 1), rtol=1e-7, atol=1e-10)
    print(f"check_vmap: max error {err:.1e}")

    # A wrong backward is caught by parity and by gradcheck.
    report = parity(BuggyLogCosh.apply, reference, (x64, y64), wrt=(0, 1), rtol=1e-7, atol=1e-10)
    print(f"\nbuggy backward: parity ok={report.ok}: {report.problems}")
    try:
        check_autograd(BuggyLogCosh.apply, (x64, y64), wrt=(0, 1))
        caught = False
    except GradcheckError as exc:
        caught = True
        print(f"buggy backward: gradcheck raised {type(exc).__name__}: {str(exc).splitlines()[0]}")
    ok &= (not report.ok) and caught

    print("\nall checks behaved as expected" if ok else "\nUNEXPECTED RESULT")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
