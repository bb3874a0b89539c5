"""Bad input for the scikit-learn estimators: wrong shapes, NaN and inf, empty input, labels unseen
at fit, settings that cannot work. scikit-learn's own messages count when they name the problem."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hybridflow.estimators import HybridFlowClassifier
from hybridflow.ood import FlowDensity
from hybridflow.training.distributed import DeviceError

KW = dict(backbone_kwargs=dict(patch_size=2, num_layers=1, hidden=8, steps=1), steps=2, batch_size=16, device="cpu",
          random_state=0)
RNG = np.random.RandomState(0)
X = RNG.randint(0, 17, (60, 64)).astype(float)
Y = RNG.randint(0, 3, 60)


@pytest.fixture(scope="module")
def classifier() -> HybridFlowClassifier:
    return HybridFlowClassifier(**KW).fit(X, Y)


@pytest.fixture(scope="module")
def density() -> FlowDensity:
    return FlowDensity(**KW, image_shape=(1, 8, 8)).fit(X)


def _with(value, index=3):
    out = X[:4].copy()
    out[:, index] = value
    return out


@pytest.mark.parametrize("method", ["predict", "predict_proba", "score_samples", "transform"])
@pytest.mark.parametrize("bad, words", [
    (X[:4, :50], "50 features, but HybridFlowClassifier is expecting 64"),
    (_with(math.nan), "NaN"),
    (_with(math.inf), "infinity"),
    (X[:0], "0 sample"),
    (np.array([["a"] * 64]), "strings"),
    (np.full((2, 64), 1e6), "exceed 255"),
    (-X[:3] - 1, "negative values"),
])
def test_classifier_names_bad_input(classifier, method, bad, words):
    with pytest.raises(ValueError, match=words):
        getattr(classifier, method)(bad)


def test_classifier_names_labels_unseen_at_fit(classifier):
    with pytest.raises(ValueError, match="labels not seen at fit: \\[5\\]"):
        classifier.score(X[:6], np.array([0, 1, 2, 5, 0, 1]))


@pytest.mark.parametrize("params, x, y, words", [
    (dict(lr=math.nan), X, Y, r"'lr' parameter of HybridFlowClassifier must be a float in the range \(0.0, inf\). Got nan"),
    (dict(lr=math.inf), X, Y, "lr"),
    (dict(lam=-1.0), X, Y, r"'lam' parameter of HybridFlowClassifier must be a float in the range \[0.0, inf\). Got -1.0"),
    (dict(lam=math.nan), X, Y, "lam"),
    (dict(batch_size=1), X, Y, r"'batch_size' parameter of HybridFlowClassifier must be an int in the range \[2, inf\). Got 1"),
    (dict(steps=0), X, Y, r"'steps' parameter of HybridFlowClassifier must be None or an int in the range \[1, inf\). Got 0"),
    ({}, X, Y[:10], "inconsistent numbers of samples"),
    ({}, X, np.where(np.arange(60) == 0, np.nan, Y), "y contains NaN"),
    ({}, X[:1], Y[:1], "at least 2 samples"),
    ({}, X[:0], Y[:0], "0 sample"),
    ({}, np.full((10, 64), np.nan), Y[:10], "NaN"),
    ({}, X, np.full(60, -1), "no labelled examples"),
])
def test_classifier_fit_names_what_cannot_work(params, x, y, words):
    with pytest.raises(ValueError, match=words):
        HybridFlowClassifier(**{**KW, **params}).fit(x, y)


def test_classifier_names_an_unknown_device():
    with pytest.raises(DeviceError, match="unknown device 'gpu'"):
        HybridFlowClassifier(**{**KW, "device": "gpu"}).fit(X, Y)


@pytest.mark.parametrize("bad, words", [
    (X[:4, :10], "D=10 values but image_shape=\\(1, 8, 8\\) needs 64"),
    (np.full((2, 64), np.nan), "NaN"),
    (X[:0], "0 sample"),
])
def test_flow_density_names_bad_input(density, bad, words):
    with pytest.raises(ValueError, match=words):
        density.score_samples(bad)


@pytest.mark.parametrize("params, x, words", [
    (dict(scorer="zzz"), X, "'scorer' parameter"),
    (dict(contamination=2.0), X, "'contamination' parameter"),
    (dict(contamination=math.nan), X, "'contamination' parameter .* Got nan"),
    ({}, X[:1], "minimum of 2"),
])
def test_flow_density_fit_names_what_cannot_work(params, x, words):
    with pytest.raises(ValueError, match=words):
        FlowDensity(**KW, image_shape=(1, 8, 8), **params).fit(x)


def _tiny_classifier(**params) -> HybridFlowClassifier:
    return HybridFlowClassifier(backbone_kwargs=dict(patch_size=2, num_layers=1, hidden=8, steps=1), steps=3,
                                batch_size=16, device="cpu", random_state=0, **params)


def test_a_row_reads_the_same_alone_and_in_a_batch_when_fitted_on_pixel_floats():
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (24, 64)).astype(float), rng.integers(0, 3, 24)  # whole-number 0..255 floats
    clf = _tiny_classifier().fit(x, y)
    assert clf.pixel_floats_ == "pixels"
    dark = np.zeros((1, 64))
    dark[0, ::2] = 1.0  # pixel value 1 under this fit, not white
    np.testing.assert_allclose(clf.predict_proba(dark)[0], clf.predict_proba(np.r_[x[:3], dark])[-1], atol=1e-6)
    np.testing.assert_allclose(clf.score_samples(dark)[0], clf.score_samples(np.r_[x[:3], dark])[-1], atol=1e-6)
    unit = _tiny_classifier().fit(x / 255, y)
    assert unit.pixel_floats_ == "unit"
    with pytest.raises(ValueError, match="0-1 floats were expected"):
        unit.predict(x[:2])  # 0..255 floats given to a model fitted on 0-1 floats


def test_booleans_read_as_the_same_zero_one_floats():
    rng = np.random.default_rng(1)
    x, y = rng.integers(0, 256, (24, 64)).astype(np.uint8), rng.integers(0, 3, 24)
    clf = _tiny_classifier().fit(x, y)
    binary = x[:4] > 100
    np.testing.assert_allclose(clf.predict_proba(binary), clf.predict_proba(binary.astype(float)), atol=1e-6)


def test_one_class_is_refused_and_plus_minus_one_labels_are_explained():
    x = np.random.default_rng(2).integers(0, 256, (20, 64)).astype(np.uint8)
    with pytest.raises(ValueError, match="at least 2 classes, but y holds one class, \\[0\\]$"):
        _tiny_classifier().fit(x, np.zeros(20, int))
    with pytest.raises(ValueError, match="-1/\\+1 need unlabelled=None"):
        _tiny_classifier().fit(x, np.where(np.arange(20) % 2, 1, -1))
    plus_minus = _tiny_classifier(unlabelled=None).fit(x, np.where(np.arange(20) % 2, 1, -1))
    assert plus_minus.classes_.tolist() == [-1, 1]


def test_three_grey_images_predict_once_the_shape_is_fitted():
    rng = np.random.default_rng(3)
    x, y = rng.integers(0, 256, (24, 8, 8)).astype(np.uint8), rng.integers(0, 3, 24)
    clf = _tiny_classifier().fit(x, y)
    np.testing.assert_allclose(clf.predict_proba(x[:3]), clf.predict_proba(x[:4])[:3], atol=1e-6)
    detector = FlowDensity(backbone_kwargs=dict(patch_size=2, num_layers=1, hidden=8, steps=1), steps=2,
                           random_state=0).fit(x)
    np.testing.assert_allclose(detector.score_samples(x[:3]), detector.score_samples(x[:4])[:3], rtol=1e-6)


def test_score_names_a_sample_weight_of_the_wrong_length():
    rng = np.random.default_rng(4)
    x, y = rng.integers(0, 256, (24, 64)).astype(np.uint8), rng.integers(0, 3, 24)
    clf = _tiny_classifier().fit(x, y)
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        clf.score(x, y, sample_weight=np.ones(3))
    assert clf.score(x, y, sample_weight=np.ones(24)) == clf.score(x, y)


def test_flow_density_fixes_the_float_range_at_fit():
    rng = np.random.default_rng(5)
    x = rng.integers(0, 256, (24, 1, 8, 8)).astype(float)
    detector = FlowDensity(backbone_kwargs=dict(patch_size=2, num_layers=1, hidden=8, steps=1), steps=2,
                           random_state=0).fit(x)
    assert detector.pixel_floats_ == "pixels"
    dark = np.zeros((1, 1, 8, 8))
    dark[..., ::2] = 1.0
    np.testing.assert_allclose(detector.score_samples(dark), detector.score_samples(np.r_[x[:3], dark])[-1:],
                               rtol=1e-6)
