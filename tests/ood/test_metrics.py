"""OOD metrics (hybridflow.ood.metrics) against scikit-learn and cases worked by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from hybridflow.ood import evaluate
from hybridflow.ood.metrics import check_scores, labelled_scores


def test_evaluate_perfect_and_reversed():
    inliers, outliers = np.arange(10.0, 20.0), np.arange(0.0, 10.0)
    perfect = evaluate(inliers, outliers)
    assert perfect["auroc"] == 1.0
    assert perfect["aupr_in"] == pytest.approx(1.0) and perfect["aupr_out"] == pytest.approx(1.0)
    assert perfect["fpr95"] == 0.0 and (perfect["n_in"], perfect["n_out"]) == (10, 10)
    reversed_ = evaluate(outliers, inliers)
    assert reversed_["auroc"] == 0.0 and reversed_["fpr95"] == 1.0
    assert evaluate(outliers, inliers, higher_is_inlier=False) == perfect


def test_evaluate_identical_distributions_is_chance():
    rng = np.random.default_rng(0)
    metrics = evaluate(rng.normal(size=20000), rng.normal(size=20000))
    assert metrics["auroc"] == pytest.approx(0.5, abs=0.01)
    assert metrics["fpr95"] == pytest.approx(0.95, abs=0.01)


def test_evaluate_matches_sklearn_on_random_scores():
    rng = np.random.default_rng(3)
    s_in, s_out = rng.normal(1.0, 1.0, 300), rng.normal(0.0, 1.5, 200)
    y = np.r_[np.ones(300), np.zeros(200)]
    s = np.r_[s_in, s_out]
    metrics = evaluate(s_in, s_out)
    assert metrics["auroc"] == pytest.approx(roc_auc_score(y, s))
    assert metrics["aupr_in"] == pytest.approx(average_precision_score(y, s))
    assert metrics["aupr_out"] == pytest.approx(average_precision_score(1 - y, -s))
    # FPR95 by brute force: the largest threshold accepting >= 95% of inliers.
    t = max(v for v in s_in if (s_in >= v).mean() >= 0.95)
    assert metrics["fpr95"] == pytest.approx((s_out >= t).mean())


def test_fpr95_by_hand():
    inliers = np.arange(1.0, 21.0)             # 20 inliers: accepting 19 puts the threshold at 2
    outliers = np.array([0.5, 1.5, 2.5, 3.0, 10.0])
    assert evaluate(inliers, outliers)["fpr95"] == pytest.approx(3 / 5)


@pytest.mark.parametrize("bad, message", [
    ([], "empty"), ([1.0, np.nan], "NaN"), ([[1.0, 2.0]], "1-D"), ([1.0, np.inf], "infinite"),
])
def test_evaluate_rejects_bad_scores(bad, message):
    with pytest.raises(ValueError, match=message):
        evaluate(bad, [0.0, 1.0])
    with pytest.raises(ValueError, match=message):
        evaluate([0.0, 1.0], bad)


def test_labelled_scores_orient_inliers_higher():
    labels, scores = labelled_scores(torch.tensor([2.0, 3.0]), [5.0], higher_is_inlier=False)
    np.testing.assert_array_equal(labels, [1.0, 1.0, 0.0])
    np.testing.assert_array_equal(scores, [-2.0, -3.0, -5.0])
    assert check_scores(torch.tensor([1, 2]), "s").dtype == np.float64
    with pytest.raises(ValueError, match="scores_out must be 1-D"):
        labelled_scores([1.0], [[1.0]])
