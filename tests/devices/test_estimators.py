"""The scikit-learn estimators, the OOD scorers and explanations on ``--device``: numbers come
back on the CPU (numpy, or CPU tensors) and agree with the CPU."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from hybridflow.estimators import HybridFlowClassifier
from hybridflow.explain import attribute, explain
from hybridflow.ood import FlowDensity, create_scorer, log_likelihood
from tests.devices.conftest import KWARGS, backbone, close_tolerance, hybrid


def test_classifier_fit_and_predict_on_device(digits, device):
    data = digits[0]
    X, y = data.images.numpy(), data.labels.numpy()
    clf = HybridFlowClassifier(backbone_kwargs=KWARGS, steps=3, batch_size=16, device=str(device),
                               random_state=0).fit(X, y)
    assert next(clf.model_.parameters()).device.type == device.type
    proba = clf.predict_proba(X[:10])
    assert proba.shape == (10, 10) and np.allclose(proba.sum(1), 1.0)
    scores = clf.score_samples(X[:10])
    assert scores.shape == (10,) and np.isfinite(scores).all()


def test_flow_density_on_device(digits, device):
    images = digits[0].images
    detector = FlowDensity(backbone_kwargs=KWARGS, steps=2, batch_size=16, device=str(device),
                           random_state=0).fit(images)
    scores = detector.score_samples(images[:10])
    assert scores.shape == (10,) and np.isfinite(scores).all()
    assert detector.predict(images[:10]).shape == (10,)


@pytest.mark.parametrize("name", ["loglik", "bpd", "typicality", "complexity", "likelihood_ratio", "max_softmax",
                                  "entropy"])
def test_ood_scorers_on_device(digits, device, name):
    data = digits[0]
    x = data.images[:16]
    cpu = hybrid(x, data.labels[:16])
    model = copy.deepcopy(cpu).to(device)
    subject = model if name in ("max_softmax", "entropy") else model.backbone
    reference = backbone("glow", x).to(device) if name == "likelihood_ratio" else None
    scores = create_scorer(name, subject, reference=reference).fit(x).score(x)
    assert scores.shape == (16,) and np.isfinite(scores).all()
    if name == "loglik":
        expected = cpu.backbone.log_prob(x).detach().double().numpy()
        assert np.allclose(scores, expected, atol=close_tolerance(device) * 64 * np.log(2), rtol=0)


def test_log_likelihood_of_a_model_on_device(images, device):
    flow = backbone("glow", images)
    expected = log_likelihood(flow, images)
    got = log_likelihood(copy.deepcopy(flow).to(device), images.numpy())
    assert got.dtype == np.float64 and np.allclose(got, expected, atol=close_tolerance(device) * 64 * np.log(2))


@pytest.mark.parametrize("method", ["ig", "saliency", "gradshap", "inputxgrad"])
@pytest.mark.parametrize("baseline", ["black", "blur"])
def test_attributions_on_device(digits, device, method, baseline):
    data = digits[0]
    model = hybrid(data.images[:16], data.labels[:16]).to(device)
    result = attribute(model, data.images[:2], method=method, baseline=baseline, n_steps=8, n_samples=4)
    assert result.attributions.shape == (2, 1, 8, 8) and result.attributions.device.type == "cpu"
    assert bool(torch.isfinite(result.attributions).all())


def test_explain_one_image_on_device(digits, device):
    data = digits[0]
    model = hybrid(data.images[:16], data.labels[:16]).to(device)
    maps = explain(model, data.images[0], methods=("saliency",), targets=("predicted", "nll"))
    assert len(maps) == 2 and all(a.attributions.shape == (1, 1, 8, 8) for a in maps.values())
