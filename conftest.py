"""Settings for every test and doctest (``python -m pytest`` collects ``tests/`` and the docstring
examples in ``hybridflow/``).

``--device`` picks the device of the device-parametrised tests (``tests/devices/``; the
``device`` fixture): ``cpu`` by default, ``cuda`` (or ``cuda:1``, ``mps``...) on a machine that has
it. A device the machine lacks skips those tests with the reason; the rest of the suite runs on
the CPU as always. Example: ``python -m pytest -q tests/devices --device cuda``.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_limits


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--device", default="cpu",
                     help="device of the device-parametrised tests (tests/devices/): cpu (default), cuda, cuda:1, mps")


def pytest_configure(config: pytest.Config) -> None:
    spec = config.getoption("--device")
    try:
        torch.device(spec)
    except RuntimeError as error:  # stop the run before collecting: every device test would fail alike
        raise pytest.UsageError(f"--device {spec!r} is not a torch device: {error}") from None


def _missing_device(device: torch.device) -> str | None:
    """Why ``device`` cannot run here, or ``None`` if it can."""
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return f"--device {device} asked for, but CUDA is not available on this machine"
        if device.index is not None and device.index >= torch.cuda.device_count():
            return f"--device {device} asked for, but this machine has {torch.cuda.device_count()} CUDA device(s)"
    elif device.type == "mps" and not torch.backends.mps.is_available():
        return f"--device {device} asked for, but MPS is not available on this machine"
    elif device.type not in ("cpu", "cuda", "mps"):
        return f"--device {device}: only cpu, cuda and mps are supported by these tests"
    return None


@pytest.fixture(scope="session")
def device(request: pytest.FixtureRequest) -> torch.device:
    """The ``--device`` of this run (skips the test, with the reason, where the machine lacks it)."""
    chosen = torch.device(request.config.getoption("--device"))
    reason = _missing_device(chosen)
    if reason is not None:
        pytest.skip(reason)
    return chosen


@pytest.fixture(autouse=True)
def one_thread():
    """Every test runs torch and BLAS on one thread: the models under test are tiny, and on a shared
    2-core machine spinning OpenMP/OpenBLAS threads made them many times slower than one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1, "blas"):
        yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def seeded_doctests(request):
    """Docstring examples draw random weights and images: seed them so every run is the same."""
    if isinstance(request.node, pytest.DoctestItem):
        torch.manual_seed(0)
        np.random.seed(0)
        random.seed(0)
    yield
