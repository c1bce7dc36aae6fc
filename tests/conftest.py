import pytest
import torch

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long-running; deselect with -m 'not slow'")


def _build_native():
    """Build torchloss's native kernels once per machine (cached; about a minute the first time),
    so that the suite runs them; without a compiler, or with TORCHLOSS_NATIVE=0, it runs the
    reference only and the kernels' own tests are skipped."""
    from torchloss import _native

    if _native.module is None and _native.enabled():
        try:
            _native.build()
        except Exception as exc:  # no compiler or ninja: the reference runs everything
            _native.state = f"not built ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"


_build_native()


def pytest_report_header(config):
    from torchloss import _native

    return f"torchloss native kernels: {_native.state}"
