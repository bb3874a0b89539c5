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
