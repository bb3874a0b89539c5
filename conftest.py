"""Settings for every test and doctest (``python -m pytest`` collects ``tests/`` and the docstring
examples in ``hybridflow/``)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_limits


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
