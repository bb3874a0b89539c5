"""Calibration of predicted class probabilities: the expected calibration error (ECE).

ECE (Naeini et al. 2015; Guo et al. 2017) bins the examples by their top-class confidence into
``n_bins`` equal-width bins and averages ``|accuracy - confidence|`` over the bins, weighted by
the fraction of examples in each: 0 for a perfectly calibrated classifier.

Example:
    >>> import numpy as np
    >>> probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]])
    >>> round(expected_calibration_error(probs, np.array([0, 1, 1]), n_bins=10), 4)
    0.3
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["expected_calibration_error"]


def expected_calibration_error(probabilities: Any, labels: Any, n_bins: int = 15) -> float:
    """ECE of ``probabilities`` ``(N, K)`` (rows summing to 1) against integer ``labels`` ``(N,)``
    in ``0..K-1``, with ``n_bins`` equal-width confidence bins of [0, 1] (confidence 1 in the last)."""
    p = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(labels)
    if p.ndim != 2 or len(p) == 0 or len(y) != len(p):
        raise ValueError(f"need probabilities (N, K) and N labels with N >= 1, got shapes {p.shape} and {y.shape}")
    if not np.isfinite(p).all() or (p < 0).any() or not np.allclose(p.sum(axis=1), 1.0, atol=1e-4):
        raise ValueError("probabilities must be finite, non-negative and sum to 1 in each row")
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    confidence, correct = p.max(axis=1), (p.argmax(axis=1) == y)
    bins = np.minimum((confidence * n_bins).astype(int), n_bins - 1)  # a confidence of 1.0 joins the last bin
    total = 0.0
    for b in np.unique(bins):  # a loop over at most n_bins bins, not over examples
        member = bins == b
        total += member.mean() * abs(correct[member].mean() - confidence[member].mean())
    return float(total)
