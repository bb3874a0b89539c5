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
    assert perfect["fpr_at_95_tpr_in"] == perfect["fpr_at_95_tpr_out"] == 0.0
    assert (perfect["n_in"], perfect["n_out"]) == (10, 10) and "fpr95" not in perfect  # the ambiguous name is gone
    reversed_ = evaluate(outliers, inliers)
    assert reversed_["auroc"] == 0.0 and reversed_["fpr_at_95_tpr_in"] == reversed_["fpr_at_95_tpr_out"] == 1.0
    assert evaluate(outliers, inliers, higher_is_inlier=False) == perfect


def test_evaluate_identical_distributions_is_chance():
    rng = np.random.default_rng(0)
    metrics = evaluate(rng.normal(size=20000), rng.normal(size=20000))
    assert metrics["auroc"] == pytest.approx(0.5, abs=0.01)
    assert metrics["fpr_at_95_tpr_in"] == pytest.approx(0.95, abs=0.01)
    assert metrics["fpr_at_95_tpr_out"] == pytest.approx(0.95, abs=0.01)


def test_evaluate_matches_sklearn_on_random_scores():
    rng = np.random.default_rng(3)
    s_in, s_out = rng.normal(1.0, 1.0, 300), rng.normal(0.0, 1.5, 200)
    y = np.r_[np.ones(300), np.zeros(200)]
    s = np.r_[s_in, s_out]
    metrics = evaluate(s_in, s_out)
    assert metrics["auroc"] == pytest.approx(roc_auc_score(y, s))
    assert metrics["aupr_in"] == pytest.approx(average_precision_score(y, s))
    assert metrics["aupr_out"] == pytest.approx(average_precision_score(1 - y, -s))
    # By brute force: inliers positive, the largest threshold accepting >= 95% of inliers ...
    t = max(v for v in s_in if (s_in >= v).mean() >= 0.95)
    assert metrics["fpr_at_95_tpr_in"] == pytest.approx((s_out >= t).mean())
    # ... outliers positive, the largest outlier-score threshold flagging >= 95% of outliers.
    t = max(v for v in -s_out if (-s_out >= v).mean() >= 0.95)
    assert metrics["fpr_at_95_tpr_out"] == pytest.approx((-s_in >= t).mean())


def test_both_fprs_by_hand():
    inliers = np.arange(1.0, 21.0)             # 20 inliers: accepting 19 puts the threshold at 2
    outliers = np.array([0.5, 1.5, 2.5, 3.0, 10.0])
    metrics = evaluate(inliers, outliers)
    assert metrics["fpr_at_95_tpr_in"] == pytest.approx(3 / 5)   # 2.5, 3 and 10 are accepted
    # Outliers positive: flagging 95% of 5 outliers means flagging all, so everything <= 10 is
    # flagged: 10 of the 20 inliers (1..10).
    assert metrics["fpr_at_95_tpr_out"] == pytest.approx(10 / 20)


def test_the_two_conventions_match_pytorch_oods_and_each_other():
    """pytorch-ood's FPR95TPR (outliers positive, outlier scores) is fpr_at_95_tpr_out; with the
    roles swapped (inliers labelled OOD, scores negated) it is fpr_at_95_tpr_in."""
    pytest.importorskip("pytorch_ood")
    try:  # pytorch-ood >= 0.4; before, its metrics lived in utils
        from pytorch_ood.metrics import OODMetrics
    except ImportError:
        from pytorch_ood.utils import OODMetrics

    rng = np.random.default_rng(4)
    s_in, s_out = rng.normal(1.0, 1.0, 400), rng.gamma(2.0, 0.5, 300)  # skewed: the two FPRs differ
    ours = evaluate(s_in, s_out)
    assert abs(ours["fpr_at_95_tpr_in"] - ours["fpr_at_95_tpr_out"]) > 0.05
    scores = torch.as_tensor(np.r_[-s_in, -s_out])  # outlier scores
    labels = torch.as_tensor(np.r_[np.zeros(400), -np.ones(300)]).long()
    theirs = OODMetrics().update(scores, labels).compute()
    assert theirs["FPR95TPR"] == pytest.approx(ours["fpr_at_95_tpr_out"], abs=1e-12)
    assert theirs["AUROC"] == pytest.approx(ours["auroc"], abs=1e-12)
    # pytorch-ood integrates the PR curve by trapezoids, scikit-learn's average precision by steps.
    assert theirs["AUPR-IN"] == pytest.approx(ours["aupr_in"], abs=5e-3)
    assert theirs["AUPR-OUT"] == pytest.approx(ours["aupr_out"], abs=5e-3)
    swapped = OODMetrics().update(-scores, -1 - labels).compute()  # inliers as pytorch-ood's positives
    assert swapped["FPR95TPR"] == pytest.approx(ours["fpr_at_95_tpr_in"], abs=1e-12)


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
