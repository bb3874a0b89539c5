"""The pytorch-ood adapter (hybridflow.ood.pytorch_ood): outliers score higher."""

from __future__ import annotations

import sys
import types
from abc import ABC, abstractmethod

import numpy as np
import pytest
import torch

from hybridflow.ood import FlowDensity, FlowOODDetector, log_likelihood, to_pytorch_ood
from tests.ood.toys import gaussian_log_prob_by_hand, identity_flow


def test_pytorch_ood_adapter_scores_outliers_higher(fitted, digits):
    adapter = to_pytorch_ood(fitted)
    x = digits[:10]
    scores = adapter.predict(x)
    assert isinstance(scores, torch.Tensor) and scores.shape == (10,)
    np.testing.assert_allclose(scores.numpy(), -fitted.score_samples(x), rtol=1e-6)
    assert torch.equal(adapter(x), scores) and torch.equal(adapter.predict_features(x), scores)
    # pytorch-ood's loaders give [0, 1] floats: the same images, the same scores.
    np.testing.assert_allclose(adapter.predict(x.float() / 255).numpy(), scores.numpy(), rtol=1e-6)


def test_pytorch_ood_adapter_fit_recalibrates(digits):
    det = FlowDensity.from_model(identity_flow(), scorer="typicality", X_fit=digits[:40])
    adapter = to_pytorch_ood(det)
    loader = [(digits[i:i + 20], torch.zeros(20)) for i in range(40, 120, 20)]
    assert adapter.fit(loader) is adapter
    expected = -log_likelihood(det.backbone_, digits[40:120]).mean()
    assert det.scorer_.train_nll_mean_ == pytest.approx(expected)


def test_pytorch_ood_adapter_subclasses_detector_when_installed(monkeypatch, fitted, digits):
    class Detector(ABC):  # the shape of pytorch_ood.api.Detector
        def __call__(self, *args, **kwargs):
            return self.predict(*args, **kwargs)

        @abstractmethod
        def fit(self, data_loader): ...

        @abstractmethod
        def fit_features(self, x, y): ...

        @abstractmethod
        def predict(self, x): ...

        @abstractmethod
        def predict_features(self, x): ...

    package, api = types.ModuleType("pytorch_ood"), types.ModuleType("pytorch_ood.api")
    api.Detector, package.api = Detector, api
    monkeypatch.setitem(sys.modules, "pytorch_ood", package)
    monkeypatch.setitem(sys.modules, "pytorch_ood.api", api)
    adapter = to_pytorch_ood(fitted)
    assert isinstance(adapter, Detector) and isinstance(adapter, FlowOODDetector)
    np.testing.assert_allclose(adapter(digits[:4]).numpy(), -fitted.score_samples(digits[:4]), rtol=1e-6)


def test_pytorch_ood_adapter_from_a_bare_model(digits):
    flow = identity_flow()
    scores = to_pytorch_ood(flow).predict(digits[:3])
    np.testing.assert_allclose(scores.numpy(), -gaussian_log_prob_by_hand(digits[:3]).numpy(), rtol=1e-6)
