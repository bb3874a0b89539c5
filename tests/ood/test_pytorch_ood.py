"""The pytorch-ood adapter (hybridflow.ood.pytorch_ood): outliers score higher."""

from __future__ import annotations

import sys
import types
from abc import ABC, abstractmethod

import numpy as np
import pytest
import torch

from hybridflow.ood import FlowDensity, FlowOODDetector, log_likelihood, to_pytorch_ood
from hybridflow.data import load_digits_data
from tests.ood.toys import gaussian_log_prob_by_hand, identity_flow

TINY_FLOW = {"patch_size": 2, "num_layers": 1, "hidden": 8, "steps": 1}


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
    api.Detector, package.api = Detector, api  # 0.2's api: no FeaturesDetector
    monkeypatch.setitem(sys.modules, "pytorch_ood", package)
    monkeypatch.setitem(sys.modules, "pytorch_ood.api", api)
    adapter = to_pytorch_ood(fitted)
    assert isinstance(adapter, Detector) and isinstance(adapter, FlowOODDetector)
    np.testing.assert_allclose(adapter(digits[:4]).numpy(), -fitted.score_samples(digits[:4]), rtol=1e-6)


def test_pytorch_ood_adapter_from_a_bare_model(digits):
    flow = identity_flow()
    scores = to_pytorch_ood(flow).predict(digits[:3])
    np.testing.assert_allclose(scores.numpy(), -gaussian_log_prob_by_hand(digits[:3]).numpy(), rtol=1e-6)


def test_requires_fit_until_fitted_and_fit_trains(digits):
    adapter = to_pytorch_ood(FlowDensity(backbone_kwargs=TINY_FLOW, steps=2, device="cpu", random_state=0))
    assert adapter.requires_fit is True
    with pytest.raises(Exception, match="call fit"):  # pytorch-ood's RequiresFittingException, or NotFittedError
        adapter.predict(digits[:2].float() / 255)
    loader = [(digits[i:i + 32].float() / 255, torch.zeros(32)) for i in range(0, 96, 32)]  # ToTensor's floats
    assert adapter.fit(loader) is adapter and adapter.requires_fit is False
    assert adapter.detector.n_features_in_ == 64 and adapter.predict(digits[:3]).shape == (3,)


def test_signatures_are_pytorch_oods():
    import inspect

    assert list(inspect.signature(FlowOODDetector.fit).parameters) == ["self", "data_loader"]
    assert list(inspect.signature(FlowOODDetector.fit_features).parameters) == ["self", "x", "y"]
    assert list(inspect.signature(FlowOODDetector.predict).parameters) == ["self", "x"]


def test_normalised_input_is_undone_or_refused(fitted, digits):
    x = digits[:6].float() / 255                      # ToTensor
    mean, std = [0.2860], [0.3530]                    # Fashion-MNIST's usual Normalize
    normalised = (x - mean[0]) / std[0]
    plain = to_pytorch_ood(fitted)
    with pytest.raises(ValueError, match=r"Drop Normalize from the pipeline .*normalization=\(mean, std\)"):
        plain.predict(normalised)
    undone = to_pytorch_ood(fitted, normalization=(mean, std))
    np.testing.assert_allclose(undone.predict(normalised).numpy(), plain.predict(x).numpy(), rtol=1e-6)


def test_pytorch_oods_own_metrics_on_the_adapters_scores():
    """The real pytorch-ood (the ``ood`` extra): the adapter is its Detector, and OODMetrics on the
    adapter's scores gives our evaluate()'s outlier-positive FPR and AUROC."""
    pytorch_ood = pytest.importorskip("pytorch_ood")
    from pytorch_ood.api import Detector
    try:  # pytorch-ood >= 0.4; before, its metrics lived in utils
        from pytorch_ood.metrics import OODMetrics
    except ImportError:
        from pytorch_ood.utils import OODMetrics

    from hybridflow.ood import evaluate

    data = load_digits_data()
    inliers, outliers = data.images[data.labels < 5], data.images[data.labels >= 5]
    loader = [(inliers[i:i + 64].float() / 255, data.labels[data.labels < 5][i:i + 64]) for i in range(0, 512, 64)]
    adapter = to_pytorch_ood(FlowDensity(backbone_kwargs=TINY_FLOW, steps=30, lr=5e-3, device="cpu", random_state=0))
    assert isinstance(adapter, Detector) and adapter.requires_fit
    adapter.fit(loader)
    assert not adapter.requires_fit
    x_in, x_out = inliers[512:].float() / 255, outliers[:300].float() / 255
    metrics = OODMetrics()
    metrics.update(adapter(x_in), torch.zeros(len(x_in), dtype=torch.long))
    metrics.update(adapter(x_out), -torch.ones(len(x_out), dtype=torch.long))
    theirs = metrics.compute()
    ours = evaluate(adapter(x_in), adapter(x_out), higher_is_inlier=False)
    assert theirs["FPR95TPR"] == pytest.approx(ours["fpr_at_95_tpr_out"], abs=1e-12)
    assert theirs["AUROC"] == pytest.approx(ours["auroc"], abs=1e-12) and ours["auroc"] > 0.6
    assert pytorch_ood is not None
