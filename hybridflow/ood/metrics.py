"""OOD metrics from scikit-learn's: AUROC, AUPR-in, AUPR-out and the FPR at 95% TPR in both
conventions (inliers positive, and outliers positive as pytorch-ood reports it).

Example:
    >>> import numpy as np
    >>> metrics = evaluate(np.array([3.0, 2.0]), np.array([1.0, 0.0]))
    >>> metrics["auroc"], metrics["fpr_at_95_tpr_in"], metrics["fpr_at_95_tpr_out"]
    (1.0, 0.0, 0.0)
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve
from torch import Tensor

__all__ = ["check_scores", "labelled_scores", "evaluate"]


def check_scores(scores: Any, what: str) -> np.ndarray:
    """``scores`` (array-like or tensor) as a finite, non-empty 1-D float64 array; ``what`` names
    them in the error.

    Example:
        >>> check_scores([1, 2], "scores_in")
        array([1., 2.])
    """
    s = np.asarray(scores.detach().cpu() if isinstance(scores, Tensor) else scores, dtype=np.float64)
    if s.ndim != 1:
        raise ValueError(f"{what} must be 1-D (one score per example), got shape {s.shape}")
    if s.size == 0:
        raise ValueError(f"{what} is empty: need at least one score")
    if not np.isfinite(s).all():
        raise ValueError(f"{what} holds {int((~np.isfinite(s)).sum())} NaN or infinite value(s)")
    return s


def labelled_scores(scores_in: Any, scores_out: Any, higher_is_inlier: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``(labels, scores)``: labels 1 = inlier, 0 = outlier, and the concatenated scores oriented
    so that higher = inlier, as scikit-learn's metrics take them.

    Example:
        >>> labelled_scores([2.0], [5.0], higher_is_inlier=False)
        (array([1., 0.]), array([-2., -5.]))
    """
    s_in, s_out = check_scores(scores_in, "scores_in"), check_scores(scores_out, "scores_out")
    sign = 1.0 if higher_is_inlier else -1.0
    labels = np.r_[np.ones(len(s_in)), np.zeros(len(s_out))]
    return labels, sign * np.r_[s_in, s_out]


def _fpr_at_tpr(positive: np.ndarray, scores: np.ndarray, tpr_level: float) -> float:
    """The false-positive rate at the first ROC point (highest threshold) with TPR >= ``tpr_level``,
    ``positive`` the 0/1 labels of the positive class and ``scores`` higher for it."""
    fpr, tpr, _ = roc_curve(positive, scores, drop_intermediate=False)
    return float(fpr[np.searchsorted(tpr, tpr_level, side="left")])


def evaluate(scores_in: Any, scores_out: Any, higher_is_inlier: bool = True, plot: Any = None) -> dict:
    """OOD metrics of in-distribution scores against out-of-distribution scores.

    Returns a dict with

    - ``auroc``: area under the ROC curve (``roc_auc_score``); 1 = perfect, 0.5 = chance,
      0 = perfectly reversed (the scorer ranks outliers as more typical). The same number with
      either class positive,
    - ``aupr_in``: average precision with inliers as positives (``average_precision_score``),
    - ``aupr_out``: average precision with outliers as positives and negated scores,
    - ``fpr_at_95_tpr_in``: **inliers positive**: the fraction of outliers accepted at the
      threshold that accepts 95% of inliers. Precisely: ``t`` is the largest threshold with at
      least 95% of inliers scoring ``>= t``; this is the fraction of outliers scoring ``>= t``.
      The convention of Liang et al. (ODIN, 2018), Hendrycks et al.'s OOD papers and OpenOOD
      ("FPR@95": how many outliers slip through while 95% of real data is kept). Lower is better,
    - ``fpr_at_95_tpr_out``: **outliers positive**: the fraction of inliers flagged as outliers
      at the threshold that flags 95% of outliers (the largest outlier-score threshold with at
      least 95% of outliers at or above it). pytorch-ood's ``OODMetrics`` reports this one as
      ``"FPR95TPR"`` (labels < 0 are its positive class). Lower is better. The two differ
      whenever the score distributions are not mirror images, often by a lot,
    - ``n_in``, ``n_out``: the sample sizes.

    ``higher_is_inlier=False`` for scores where outliers score higher (pytorch-ood's, bits/dim).
    ``plot``: ``None``, a file path (saves a ROC plot, :func:`hybridflow.plots.plot_roc`) or a
    matplotlib ``Axes`` to draw on.

    Example:
        >>> round(evaluate([0.9, 0.8, 0.7], [0.1, 0.75])["auroc"], 4)   # 5 of 6 pairs ordered
        0.8333
    """
    labels, scores = labelled_scores(scores_in, scores_out, higher_is_inlier)
    metrics = {
        "auroc": float(roc_auc_score(labels, scores)),
        "aupr_in": float(average_precision_score(labels, scores)),
        "aupr_out": float(average_precision_score(1 - labels, -scores)),
        "fpr_at_95_tpr_in": _fpr_at_tpr(labels, scores, 0.95),
        "fpr_at_95_tpr_out": _fpr_at_tpr(1 - labels, -scores, 0.95),
        "n_in": int(labels.sum()),
        "n_out": int(len(labels) - labels.sum()),
    }
    if plot is not None:
        from ..plots import plot_roc  # matplotlib only when a plot is asked for

        plot_roc(scores_in, scores_out, higher_is_inlier=higher_is_inlier,
                 **({"path": plot} if isinstance(plot, (str, os.PathLike)) else {"ax": plot}))
    return metrics
