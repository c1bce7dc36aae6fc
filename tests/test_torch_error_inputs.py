"""torch's own error tests, run on torchloss: the ``error_inputs`` of torch's OpInfos
(``torch.testing._internal.common_methods_invocations``) and the ``module_error_inputs`` of its
ModuleInfos (``common_modules``) for every loss torchloss has. torch's test_ops/test_modules
match these messages with ``assertRaisesRegex`` (a search): torchloss's messages start with
torch's words and add their own details after them, so the same regexes match (issue 17)."""

from __future__ import annotations

import re
import warnings

import pytest
import torch

import torchloss
import torchloss.functional as F


def _op_errors():
    try:
        from torch.testing._internal.common_methods_invocations import op_db
    except Exception:  # noqa: BLE001 (a torch without its test internals)
        return []
    out = []
    for op in op_db:
        name = op.name.split(".")[-1]
        if not op.name.startswith("nn.functional.") or op.error_inputs_func is None or not hasattr(F, name):
            continue
        for i, ei in enumerate(op.error_inputs(torch.device("cpu"))):
            out.append(pytest.param(name, ei, id=f"{name}-{op.variant_test_name or ''}{i}"))
    return out


def _module_errors():
    try:
        from torch.testing._internal.common_modules import module_db
    except Exception:  # noqa: BLE001
        return []
    out = []
    for info in module_db:
        cls = info.module_cls
        if info.module_error_inputs_func is None or not hasattr(torchloss, cls.__name__) or not cls.__name__.endswith("Loss"):
            continue
        inputs = info.module_error_inputs_func(info, device="cpu", dtype=torch.float32, requires_grad=False, training=True)
        for i, ei in enumerate(inputs):
            out.append(pytest.param(cls.__name__, ei, id=f"{cls.__name__}-{i}"))
    return out


@pytest.mark.parametrize("name,error", _op_errors())
def test_opinfo_error_inputs(name, error):
    s = error.sample_input
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(error.error_type) as info:
            getattr(F, name)(s.input, *s.args, **s.kwargs)
    assert re.search(error.error_regex, str(info.value)), (error.error_regex, str(info.value))


@pytest.mark.parametrize("name,error", _module_errors())
def test_moduleinfo_error_inputs(name, error):
    e = error.module_error_input
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(error.error_type) as info:
            module = getattr(torchloss, name)(*e.constructor_input.args, **e.constructor_input.kwargs)
            module(*e.forward_input.args, **e.forward_input.kwargs)
    assert re.search(error.error_regex, str(info.value)), (error.error_regex, str(info.value))
