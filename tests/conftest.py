"""Shared test settings."""

from __future__ import annotations

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
