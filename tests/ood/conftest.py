"""Fixtures shared by the OOD tests: digits and one trained detector (module-scoped: training is
the slow part)."""

from __future__ import annotations

import pytest
import torch

from hybridflow.data import load_digits_data
from hybridflow.ood import FlowDensity
from tests.ood.toys import TINY


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    return load_digits_data().images[:240]


@pytest.fixture(scope="module")
def fitted(digits) -> FlowDensity:
    return FlowDensity(backbone_kwargs=TINY, steps=5, random_state=0).fit(digits)
