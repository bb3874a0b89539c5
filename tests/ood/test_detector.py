"""The scikit-learn outlier detector FlowDensity (hybridflow.ood.detector)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from hybridflow.ood import FlowDensity, log_likelihood
from tests.ood.toys import TINY, GaussianToy, gaussian_log_prob_by_hand, identity_flow


def test_from_a_hybrid_model(digits):
    hybrid = pytest.importorskip("hybridflow.hybrid")
    model = hybrid.HybridModel("mixerflow_tiny", num_classes=3, input_shape=(1, 8, 8), **TINY)
    confidence = FlowDensity.from_model(model, scorer="max_softmax", X_fit=digits[:40])
    scores = confidence.score_samples(digits[:10])
    assert np.all((scores >= 1 / 3 - 1e-9) & (scores <= 1))
    np.testing.assert_allclose(scores, model.predict_proba(digits[:10]).max(1).values.detach().numpy(), rtol=1e-5)
    density = FlowDensity.from_model(model, scorer="loglik")
    assert density.backbone_ is model.backbone
    np.testing.assert_allclose(density.score_samples(digits[:5]), log_likelihood(model.backbone, digits[:5]))


def test_flow_density_fit_predict(fitted, digits):
    n = len(digits)
    scores = fitted.score_samples(digits)
    assert scores.shape == (n,) and scores.dtype == np.float64
    assert fitted.n_features_in_ == 64 and fitted.image_shape_ == (1, 8, 8)
    np.testing.assert_allclose(fitted.decision_function(digits), scores - fitted.offset_)
    labels = fitted.predict(digits)
    assert set(np.unique(labels)) <= {-1, 1}
    assert (labels == -1).mean() == pytest.approx(fitted.contamination, abs=2 / n)
    assert fitted.score(digits) == pytest.approx(log_likelihood(fitted.backbone_, digits).mean())
    # Flattened (n_samples, n_features) input, scikit-learn style, gives the same scores.
    np.testing.assert_allclose(fitted.score_samples(digits.flatten(1).numpy()), scores)
    assert fitted.fit_predict(digits).shape == (n,)
    # Evaluation noise is seeded per image: an image's score does not depend on its batch.
    np.testing.assert_allclose(fitted.score_samples(digits[7:9]), scores[7:9], rtol=1e-6)


def test_flow_density_is_reproducible_and_pickles(fitted, digits):
    again = clone(fitted).fit(digits)
    np.testing.assert_allclose(again.score_samples(digits[:20]), fitted.score_samples(digits[:20]))
    restored = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_allclose(restored.score_samples(digits[:20]), fitted.score_samples(digits[:20]))


def test_flow_density_clone_and_params(fitted):
    params = fitted.get_params()
    assert params["scorer"] == "loglik" and params["steps"] == 5 and params["backbone_kwargs"] == TINY
    copy = clone(fitted)
    assert copy.get_params()["backbone_kwargs"] == TINY
    assert not hasattr(copy, "backbone_")
    assert clone(fitted).set_params(scorer="bpd").scorer == "bpd"


@pytest.mark.parametrize("scorer", ["bpd", "typicality", "complexity", "likelihood_ratio"])
def test_flow_density_every_scorer(digits, scorer):
    det = FlowDensity(backbone_kwargs=TINY, scorer=scorer, steps=2, reference_kwargs={"hidden": 8},
                      random_state=0).fit(digits[:64])
    scores = det.score_samples(digits[64:80])
    assert scores.shape == (16,) and np.isfinite(scores).all()
    if scorer == "likelihood_ratio":
        assert det.reference_ is not None and det.reference_.training is False
        expected = log_likelihood(det.backbone_, digits[64:80]) - log_likelihood(det.reference_, digits[64:80])
        np.testing.assert_allclose(scores, expected)


def test_flow_density_from_model_leaves_the_model_alone(digits):
    flow = identity_flow()
    before = {k: v.clone() for k, v in flow.state_dict().items()}
    det = FlowDensity.from_model(flow, scorer="loglik", X_fit=digits[:50])
    assert det.backbone_ is flow
    assert all(torch.equal(before[k], v) for k, v in flow.state_dict().items())
    np.testing.assert_allclose(det.score_samples(digits[:3]), gaussian_log_prob_by_hand(digits[:3]).numpy(),
                               rtol=1e-6)
    no_threshold = FlowDensity.from_model(flow)
    assert no_threshold.score_samples(digits[:2]).shape == (2,)
    with pytest.raises(ValueError, match="X_fit"):
        no_threshold.predict(digits[:2])
    with pytest.raises(ValueError, match="X_fit"):
        FlowDensity.from_model(flow, scorer="typicality")
    with pytest.raises(ValueError, match="reference"):
        FlowDensity.from_model(flow, scorer="likelihood_ratio")
    ratio = FlowDensity.from_model(flow, scorer="likelihood_ratio", reference=GaussianToy(128.0, 50.0))
    assert ratio.score_samples(digits[:2]).shape == (2,)


def test_flow_density_bad_input(fitted, digits):
    with pytest.raises(ValueError, match="NaN"):
        fitted.score_samples(np.full((2, 1, 8, 8), np.nan))
    with pytest.raises(ValueError, match=r"fitted on images of shape \(1, 8, 8\)"):
        fitted.predict(np.zeros((2, 3, 8, 8), np.uint8))  # wrong channels
    with pytest.raises(ValueError, match="fitted on"):
        fitted.score_samples(np.zeros((2, 10)))  # wrong number of features
    with pytest.raises(ValueError, match="fitted on"):
        fitted.score_samples(np.zeros((2, 1, 16, 16), np.uint8))
    with pytest.raises(ValueError, match="contamination"):
        FlowDensity(contamination=0.9).fit(digits)
    with pytest.raises(ValueError, match="unknown scorer"):
        FlowDensity(scorer="energy").fit(digits)
    with pytest.raises(ValueError, match="NaN"):
        FlowDensity(steps=0).fit(np.full((4, 1, 8, 8), np.nan))


def test_calibrate_sets_the_threshold_without_training(digits):
    flow = identity_flow()
    before = {k: v.clone() for k, v in flow.state_dict().items()}
    det = FlowDensity.from_model(flow, contamination=0.25)
    assert det.calibrate(digits[:40]) is det
    assert det.offset_ == pytest.approx(np.percentile(det.score_samples(digits[:40]), 25.0))
    assert (det.predict(digits[:40]) == -1).mean() == pytest.approx(0.25, abs=1 / 40)
    assert all(torch.equal(before[k], v) for k, v in flow.state_dict().items())
    with pytest.raises(NotFittedError):
        FlowDensity().calibrate(digits[:4])
