"""The classifier's OOD scores and reject option: the scores agree with hybridflow.ood's scorers, the
threshold rejects the asked-for fraction of inliers, outliers are rejected, and stale or clashing
settings are refused with messages that name them."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
import torch
from sklearn.base import clone

import hybridflow.estimators.reject as reject
from hybridflow.estimators import OOD_SCORERS, HybridFlowClassifier, ood_scores
from hybridflow.ood.scorers import Complexity, LogLikelihood, Typicality
from tests.estimators.common import tiny

NOISE = np.random.default_rng(0).integers(0, 256, (40, 1, 8, 8), dtype=np.uint8)
FLAT = np.zeros((4, 1, 8, 8), np.uint8)


@pytest.fixture
def clf(fitted_digits):
    return copy.deepcopy(fitted_digits)


def test_ood_scores_by_hand():
    images = torch.zeros(3, 1, 4, 4, dtype=torch.uint8)
    log_prob = np.array([-10.0, -20.0, -35.0])
    np.testing.assert_array_equal(ood_scores(log_prob, images, "loglik"), log_prob)
    np.testing.assert_array_equal(ood_scores(log_prob, images, "typicality", nll_mean=20.0), [-10.0, 0.0, -15.0])
    # complexity: -(bpd - png bpd); bpd = -log p / (16 ln 2); the same flat image thrice, one PNG size
    png = ood_scores(np.zeros(3), images, "complexity")  # bpd 0: the score is L(x)
    np.testing.assert_allclose(ood_scores(log_prob, images, "complexity"), png + log_prob / (16 * np.log(2)))
    with pytest.raises(ValueError, match="typicality scorer needs the mean NLL"):
        ood_scores(log_prob, images, "typicality")
    with pytest.raises(ValueError, match="unknown OOD scorer 'zzz'"):
        ood_scores(log_prob, images, "zzz")


@pytest.mark.parametrize("scorer, reference", [("loglik", LogLikelihood), ("typicality", Typicality),
                                               ("complexity", Complexity)])
def test_the_scores_are_hybridflow_oods_scorers(digits, clf, scorer, reference):
    """One accounting: each ood_scorer equals hybridflow.ood's scorer of the same name on the model."""
    x_cal, x = digits[2][:200], digits[2][200:260]
    clf.set_params(ood_scorer=scorer).fit_reject(x_cal)
    expected = reference(clf.model_).fit(x_cal)(x)
    np.testing.assert_allclose(clf.ood_score(x), expected, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("scorer", OOD_SCORERS)
def test_the_threshold_rejects_the_quantile_of_its_calibration_images(digits, clf, scorer):
    x_test = digits[2]
    for quantile in (0.05, 0.2):
        clf.set_params(ood_scorer=scorer, reject_quantile=quantile).fit_reject(x_test)
        rejected = clf.predict_or_reject(x_test) == -1
        assert abs(rejected.mean() - quantile) <= 1 / len(x_test)
        assert clf.reject_scorer_ == scorer and clf.reject_threshold_ == pytest.approx(
            np.quantile(clf.ood_score(x_test), quantile))


def test_kept_predictions_are_predict_and_outliers_are_rejected(digits, clf):
    x = np.concatenate([digits[2][:100], NOISE])
    labels, predicted = clf.predict_or_reject(x), clf.predict(x)
    kept = labels != -1
    np.testing.assert_array_equal(labels[kept], predicted[kept])
    assert kept[:100].mean() > 0.85 and not kept[100:].any()  # about 5% of inliers, every noise image
    # Flat images: a flow finds them fairly likely; the compressor explains that away.
    clf.set_params(ood_scorer="complexity").fit_reject(digits[2])
    assert (clf.predict_or_reject(FLAT) == -1).all() and (clf.predict_or_reject(NOISE) == -1).all()


def test_fit_calibrates_on_the_training_images(digits, fitted_digits):
    x = digits[0]
    rejected = fitted_digits.predict_or_reject(x) == -1
    assert abs(rejected.mean() - 0.05) <= 1 / len(x) and fitted_digits.reject_scorer_ == "loglik"
    assert fitted_digits.ood_nll_mean_ == pytest.approx(-fitted_digits.score_samples(x).mean(), rel=1e-9)


def test_fit_calibrates_on_a_seeded_subset_of_large_training_sets(monkeypatch):
    monkeypatch.setattr(reject, "REJECT_FIT_SAMPLES", 30)
    sizes: list[int] = []
    outputs = HybridFlowClassifier._pixel_outputs

    def spy(self, images, **kw):
        sizes.append(len(images))
        return outputs(self, images, **kw)

    monkeypatch.setattr(HybridFlowClassifier, "_pixel_outputs", spy)
    x, y = np.random.default_rng(1).integers(0, 256, (80, 1, 4, 4), dtype=np.uint8), np.arange(80) % 2
    a, b = tiny(steps=2).fit(x, y), tiny(steps=2).fit(x, y)
    assert sizes == [30, 30] and a.reject_threshold_ == b.reject_threshold_  # the subset follows random_state


def test_warm_start_and_partial_fit_recalibrate(digits):
    x, y = digits[0][:128], digits[1][:128]
    clf = tiny(steps=3, warm_start=True).fit(x, y)
    first = clf.reject_threshold_
    clf.fit(x, y)
    assert clf.reject_threshold_ != first  # the weights moved: the old threshold would be stale
    stream = tiny(batch_size=64).partial_fit(x[:64], y[:64], classes=list(range(10)))
    assert np.isfinite(stream.reject_threshold_)


def test_stale_or_clashing_settings_are_named(digits, clf):
    x = digits[2][:10]
    clf.set_params(ood_scorer="complexity")
    with pytest.raises(ValueError, match="fitted for ood_scorer='loglik', but ood_scorer is now 'complexity'"):
        clf.predict_or_reject(x)
    with pytest.raises(ValueError, match=r"reject_label=3 is one of the classes"):
        clf.set_params(ood_scorer="loglik").predict_or_reject(x, reject_label=3)
    for params, words in [(dict(ood_scorer="zzz"), "'ood_scorer' parameter"),
                          (dict(reject_quantile=1.0), "'reject_quantile' parameter")]:
        with pytest.raises(ValueError, match=words):
            tiny(**params).fit(np.zeros((10, 4)), np.arange(10) % 2)
        with pytest.raises(ValueError, match=words):
            copy.deepcopy(clf).set_params(**params).fit_reject(x)


def test_string_classes_take_any_reject_label(digits):
    x, y = digits[0][:64], np.array(["abcdefghij"[k] for k in digits[1][:64]])
    clf = tiny(steps=2, unlabelled=None).fit(x, y)
    mixed = clf.predict_or_reject(np.concatenate([x[:3], NOISE[:2]]))
    assert mixed.dtype == object and mixed[-2:].tolist() == [-1, -1] and set(mixed[:3]) <= set("abcdefghij")
    named = clf.predict_or_reject(NOISE[:2], reject_label="unknown")
    assert named.tolist() == ["unknown", "unknown"]


def test_from_model_wraps_a_trained_model(digits, fitted_digits):
    x = digits[2][:50]
    wrapped = HybridFlowClassifier.from_model(fitted_digits.model_, device="cpu", X_fit=digits[0])
    np.testing.assert_array_equal(wrapped.predict(x), fitted_digits.predict(x))
    np.testing.assert_allclose(wrapped.reject_threshold_, fitted_digits.reject_threshold_, rtol=1e-9)
    assert wrapped.model_ is not fitted_digits.model_ and wrapped.image_shape_ == (1, 8, 8)
    # The parameters rebuild the same architecture, so a clone trains a fresh one of it.
    fresh = clone(wrapped).set_params(steps=2).fit(digits[0][:64], digits[1][:64])
    assert fresh.model_.config() == fitted_digits.model_.config()
    restored = pickle.loads(pickle.dumps(wrapped))
    np.testing.assert_array_equal(restored.predict_or_reject(x), wrapped.predict_or_reject(x))
    bare = HybridFlowClassifier.from_model(fitted_digits.model_, classes=list("abcdefghij"))
    assert bare.predict(x[:2]).dtype.kind == "U"
    with pytest.raises(ValueError, match="no reject threshold: call fit_reject"):
        bare.predict_or_reject(x)
    with pytest.raises(ValueError, match="classes must be 10 distinct labels in sorted order"):
        HybridFlowClassifier.from_model(fitted_digits.model_, classes=[1, 0, 2, 3, 4, 5, 6, 7, 8, 9])
    with pytest.raises(TypeError, match="from_model needs a HybridModel"):
        HybridFlowClassifier.from_model(torch.nn.Linear(2, 2))
