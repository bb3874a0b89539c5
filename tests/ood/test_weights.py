"""Sample weights (hybridflow.ood.weights): validation and the weighted threshold."""

from __future__ import annotations

import numpy as np
import pytest

from hybridflow.ood import check_sample_weight, weighted_percentile


@pytest.mark.parametrize("n", [1, 2, 7, 300])
@pytest.mark.parametrize("q", [1.0, 10.0, 25.0, 50.0, 95.0])
def test_unit_weights_are_numpys_averaged_inverted_cdf(n, q):
    values = np.random.default_rng(n).normal(size=n)
    assert weighted_percentile(values, None, q) == pytest.approx(np.percentile(values, q,
                                                                               method="averaged_inverted_cdf"))


def test_integer_weights_are_repeated_values():
    rng = np.random.default_rng(0)
    values, weights = rng.normal(size=40), rng.integers(0, 4, size=40)
    for q in (5.0, 10.0, 33.3, 50.0):
        repeated = np.percentile(np.repeat(values, weights), q, method="averaged_inverted_cdf")
        assert weighted_percentile(values, weights, q) == pytest.approx(repeated)


def test_contamination_flags_exactly_that_many():
    """300 scores at 10%: exactly 30 fall below the threshold (0.1 * 300 is not 30 in floating point)."""
    scores = np.random.default_rng(1).normal(size=300)
    assert (scores < weighted_percentile(scores, None, 100 * 0.1)).sum() == 30


@pytest.mark.parametrize("weights, message", [
    ([1.0, 2.0], r"shape == \(2,\), expected \(3,\)"), ([1.0, -1.0, 1.0], "non-negative"),
    ([1.0, np.nan, 1.0], "finite"), ([0, 0, 0], "zero for every sample"),
])
def test_bad_weights_are_refused(weights, message):
    with pytest.raises(ValueError, match=message):
        check_sample_weight(weights, 3)
