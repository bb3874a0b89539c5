"""Fixtures of the training tests."""

from __future__ import annotations

import numpy as np
import pytest

from hybridflow.data import ImageData, load_digits_data


@pytest.fixture(scope="module")
def digits() -> tuple[ImageData, ImageData]:
    """256 training and 64 validation digits (8x8)."""
    data = load_digits_data(train=True)
    return data.subset(np.arange(256)), data.subset(np.arange(256, 320))
