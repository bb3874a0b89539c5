"""Fixtures of the estimator tests: the 8x8 digits and one classifier fitted on them."""

from __future__ import annotations

import pytest

from hybridflow.data import load_digits_data
from tests.estimators.common import TINY, tiny


@pytest.fixture(scope="package")
def digits():
    """8x8 digits as uint8 (N, 1, 8, 8), labels 0..9: train (1347) and test (450)."""
    train, test = load_digits_data(train=True), load_digits_data(train=False)
    return train.images.numpy(), train.labels.numpy(), test.images.numpy(), test.labels.numpy()


@pytest.fixture(scope="package")
def fitted_digits(digits):
    x, y, _, _ = digits
    return tiny(backbone_kwargs=dict(patch_size=2, **TINY), steps=100, lr=1e-2).fit(x, y)
