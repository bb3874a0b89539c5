"""Fixtures shared by the hybridflow.data tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def nchw() -> torch.Tensor:
    return torch.randint(0, 256, (5, 3, 6, 4), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
