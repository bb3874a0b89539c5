"""The expected calibration error against a hand computation and a per-example brute force."""

from __future__ import annotations

import numpy as np
import pytest

from hybridflow.estimators import expected_calibration_error


def _brute_force(p: np.ndarray, y: np.ndarray, n_bins: int) -> float:
    total = 0.0
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        rows = [i for i in range(len(p)) if lo < p[i].max() <= hi or (b == 0 and p[i].max() == 0)]
        if rows:
            acc = np.mean([p[i].argmax() == y[i] for i in rows])
            conf = np.mean([p[i].max() for i in rows])
            total += len(rows) / len(p) * abs(acc - conf)
    return total


def test_hand_computed_case():
    # confidences 0.95 (right), 0.55 (wrong), 0.75 (right), 0.65 (right) in 5 bins of width 0.2:
    # bin [0.4, 0.6): 0.55 wrong -> |0 - 0.55|; bin [0.6, 0.8): 0.75, 0.65 right -> |1 - 0.7|; bin [0.8, 1]: |1 - 0.95|
    p = np.array([[0.95, 0.05], [0.55, 0.45], [0.25, 0.75], [0.65, 0.35]])
    y = np.array([0, 1, 1, 0])
    expected = (1 * 0.55 + 2 * 0.30 + 1 * 0.05) / 4
    assert expected_calibration_error(p, y, n_bins=5) == pytest.approx(expected, abs=1e-12)


def test_matches_a_brute_force_on_random_probabilities():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(500, 10)) * 3
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    y = rng.integers(0, 10, 500)
    for n_bins in (1, 7, 15):
        assert expected_calibration_error(p, y, n_bins) == pytest.approx(_brute_force(p, y, n_bins), abs=1e-9)


def test_a_perfectly_calibrated_and_an_overconfident_classifier():
    y = np.array([0] * 8 + [1] * 2)
    calibrated = np.tile([0.8, 0.2], (10, 1))  # 80% confident, 80% right
    assert expected_calibration_error(calibrated, y) == pytest.approx(0.0, abs=1e-12)
    assert expected_calibration_error(np.tile([1.0, 0.0], (10, 1)), y) == pytest.approx(0.2)


@pytest.mark.parametrize("probs, labels, words", [
    (np.ones((2, 2)), [0, 1], "sum to 1"),
    (np.array([[np.nan, 1.0]]), [0], "finite"),
    (np.zeros((0, 2)), [], "N >= 1"),
    (np.array([[0.5, 0.5]]), [0, 1], "N labels"),
])
def test_bad_input_is_named(probs, labels, words):
    with pytest.raises(ValueError, match=words):
        expected_calibration_error(probs, np.array(labels))
