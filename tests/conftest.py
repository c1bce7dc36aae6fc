import pytest
import torch

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param


class _DefaultDevice(torch.overrides.TorchFunctionMode):
    """Factory functions without a ``device`` make their tensors on ``device`` (what
    ``torch.set_default_device`` does), except that a draw from a CPU ``generator`` is made on
    the CPU and then moved, so that seeded tests draw the same values on every device."""

    def __init__(self, device):
        super().__init__()
        self.device = torch.device(device)
        from torch.utils._device import _device_constructors

        self.factories = _device_constructors()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self.factories and kwargs.get("device") is None:
            generator = kwargs.get("generator")
            if generator is not None and generator.device.type == "cpu":
                return func(*args, **kwargs).to(self.device)
            kwargs["device"] = self.device
        return func(*args, **kwargs)


@pytest.fixture
def on_device(device, request):
    """Runs a test written for the CPU on each ``device``: tensors its factory calls make land on
    the device (``_DefaultDevice``). Tests marked ``cpu_only`` (native kernels, CPU eager paths,
    peak memory, NumPy) run on the CPU only. Family-specific test files use it for all their
    tests (``pytestmark = pytest.mark.usefixtures("on_device")``)."""
    if device == "cpu":
        yield device
        return
    if request.node.get_closest_marker("cpu_only"):
        pytest.skip("CPU only (native kernels, CPU eager paths, peak memory or NumPy)")
    with _DefaultDevice(device):
        yield device


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long-running; deselect with -m 'not slow'")
    config.addinivalue_line("markers", "cpu_only: runs on the CPU only under the on_device fixture")


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
