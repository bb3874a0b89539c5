"""Sample weights for the detector: :func:`check_sample_weight` validates them and
:func:`weighted_percentile` sets a threshold from weighted scores, so that a weight of k counts
exactly as k repeated samples.

Example:
    >>> check_sample_weight([1, 2], 2)
    array([1., 2.])
    >>> weighted_percentile(np.array([1.0, 2.0, 3.0, 4.0]), None, 25.0)
    1.5
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["check_sample_weight", "weighted_percentile"]


def check_sample_weight(sample_weight: Any, n: int) -> np.ndarray | None:
    """``sample_weight`` as a float64 ``(n,)`` array (a scalar is broadcast; ``None`` stays
    ``None``); ``ValueError`` for a wrong shape, negative or non-finite weights, or all zeros.

    Example:
        >>> check_sample_weight(None, 3) is None, check_sample_weight(2, 3).tolist()
        (True, [2.0, 2.0, 2.0])
    """
    if sample_weight is None:
        return None
    w = np.asarray(sample_weight, dtype=np.float64)
    if w.ndim == 0:
        w = np.full(n, float(w))
    if w.shape != (n,):
        raise ValueError(f"sample_weight.shape == {w.shape}, expected ({n},): one weight per sample")
    if not np.isfinite(w).all() or (w < 0).any():
        raise ValueError("sample_weight must be finite and non-negative")
    if w.sum() <= 0:
        raise ValueError("sample_weight is zero for every sample: at least one weight must be positive")
    return w


def weighted_percentile(values: np.ndarray, weights: np.ndarray | None, q: float) -> float:
    """The ``q``-th percentile of ``values`` with weights: NumPy's ``"averaged_inverted_cdf"``
    method generalised to weights. Integer weights give exactly the percentile of the values
    repeated that many times, and a ``q`` of n values that is a multiple of 100/n falls halfway
    between two order statistics (so ``contamination * n`` outliers are flagged exactly).

    Example:
        >>> weighted_percentile(np.array([1.0, 2.0]), np.array([3, 1]), 50.0)   # = 1, 1, 1, 2
        1.0
    """
    values = np.asarray(values, dtype=np.float64)
    weights = np.ones_like(values) if weights is None else np.asarray(weights, dtype=np.float64)
    keep = weights > 0
    order = np.argsort(values[keep], kind="stable")
    v, cumulative = values[keep][order], np.cumsum(weights[keep][order])
    target = q / 100.0 * cumulative[-1]
    tol = 1e-9 * cumulative[-1]  # 0.1 * 300 is 30.000000000000004 in floating point
    k = min(int(np.searchsorted(cumulative, target - tol, side="left")), len(v) - 1)
    if abs(cumulative[k] - target) <= tol and k + 1 < len(v):
        return float((v[k] + v[k + 1]) / 2)
    return float(v[k])
