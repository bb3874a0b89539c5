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
    with pytest.raises(ValueError, match="'scorer' parameter of FlowDensity must be a str among"):
        FlowDensity(scorer="energy").fit(digits)
    with pytest.raises(ValueError, match="needs images"):
        FlowDensity(scorer="complexity", steps=1).fit(np.random.default_rng(0).normal(size=(10, 3)))
    with pytest.raises(ValueError, match="NaN"):
        FlowDensity(steps=0).fit(np.full((4, 1, 8, 8), np.nan))


def test_calibrate_sets_the_threshold_without_training(digits):
    flow = identity_flow()
    before = {k: v.clone() for k, v in flow.state_dict().items()}
    det = FlowDensity.from_model(flow, contamination=0.25)
    assert det.calibrate(digits[:40]) is det
    assert det.offset_ == pytest.approx(np.percentile(det.score_samples(digits[:40]), 25.0,
                                                      method="averaged_inverted_cdf"))
    assert (det.predict(digits[:40]) == -1).mean() == pytest.approx(0.25, abs=1 / 40)
    assert all(torch.equal(before[k], v) for k, v in flow.state_dict().items())
    with pytest.raises(NotFittedError):
        FlowDensity().calibrate(digits[:4])


# --------------------------------------------------------------------------- scikit-learn's contract, tabular rows

from sklearn.utils.estimator_checks import check_param_validation, parametrize_with_checks  # noqa: E402

from hybridflow.estimators import expected_failed_checks  # noqa: E402
from hybridflow.ood import TabularFlow  # noqa: E402

TABULAR = {"num_layers": 1, "hidden": 8}


def tiny_tabular(**params) -> FlowDensity:
    """A detector small enough for scikit-learn's checks (all 60 run in about 15 s)."""
    return FlowDensity(**{**dict(backbone_kwargs=TABULAR, steps=10, device="cpu", random_state=0), **params})


@parametrize_with_checks([tiny_tabular()], expected_failed_checks=expected_failed_checks)
def test_sklearn_checks(estimator, check):
    check(estimator)


def test_parameter_constraints_give_sklearns_messages():
    check_param_validation("FlowDensity", tiny_tabular())
    with pytest.raises(ValueError, match=r"'contamination' parameter of FlowDensity must be a float "
                                         r"in the range \(0.0, 0.5\]"):
        tiny_tabular(contamination=0.6).fit(np.zeros((4, 2)))


def test_tabular_rows_fit_a_gaussian_to_its_entropy():
    """Every affine map of a Gaussian is in the flow's reach (ActNorm + LU): trained on correlated,
    shifted Gaussian rows, the mean log-likelihood of held-out rows approaches minus the entropy."""
    rng = np.random.default_rng(0)
    a = np.array([[2.0, 0.0, 0.0], [1.5, 0.5, 0.0], [-1.0, 0.3, 0.1]])
    x = rng.normal(size=(3000, 3)) @ a.T + np.array([-5.0, 100.0, 0.3])
    det = tiny_tabular(steps=300, lr=1e-2, batch_size=256).fit(x[:2000])
    assert det.input_kind_ == "tabular" and det.n_features_in_ == 3 and det.image_shape_ is None
    entropy = 0.5 * 3 * (1 + np.log(2 * np.pi)) + np.log(abs(np.linalg.det(a)))
    # Within 0.1 nats below (training), and never above by more than the held-out noise (~0.03).
    assert -entropy - 0.1 < det.score(x[2000:]) < -entropy + 0.05
    # Negative values, wide ranges: no pixel conversion anywhere; scores are per row and batch-free.
    scores = det.score_samples(x[2000:2100])
    np.testing.assert_allclose(det.score_samples(x[2000:2003]), scores[:3], rtol=1e-12)
    assert (det.predict(x[:2000]) == -1).mean() == pytest.approx(det.contamination, abs=1e-3)


def test_sample_weight_is_a_weighted_likelihood():
    rng = np.random.default_rng(1)
    x, w = rng.normal(size=(20, 3)), rng.integers(0, 4, size=20)
    weighted = tiny_tabular(steps=30).fit(x, sample_weight=w)
    repeated = tiny_tabular(steps=30).fit(np.repeat(x, w, axis=0))
    # Equal to float64 rounding amplified by Adam (scikit-learn's atol of 1e-9 is just out of reach).
    np.testing.assert_allclose(weighted.score_samples(x), repeated.score_samples(x), rtol=1e-6)
    np.testing.assert_allclose(weighted.transform(x), repeated.transform(x), atol=1e-6)
    assert weighted.offset_ == pytest.approx(repeated.offset_, rel=1e-6)
    unweighted = tiny_tabular(steps=30).fit(x)
    assert not np.allclose(unweighted.score_samples(x), weighted.score_samples(x), rtol=1e-3)
    assert weighted.score(x, sample_weight=w) == pytest.approx(np.average(weighted.score_samples(x), weights=w))
    with pytest.raises(ValueError, match="zero for every sample"):
        tiny_tabular().fit(x, sample_weight=np.zeros(20))
    with pytest.raises(ValueError, match="tabular rows only"):
        FlowDensity(backbone_kwargs=TINY, steps=1).fit(np.zeros((4, 1, 8, 8), np.uint8), sample_weight=[1, 2, 1, 1])


def test_transform_is_the_latent_with_feature_names():
    x = np.random.default_rng(2).normal(size=(40, 4)) * 3 + 1
    det = tiny_tabular().fit(x)
    z = det.transform(x)
    assert z.shape == (40, 4) and z.dtype == np.float64
    with torch.no_grad():
        back = det.density_.inverse(torch.from_numpy(z)).numpy()
    np.testing.assert_allclose(back, x, atol=1e-9)  # the flow is invertible: z keeps everything
    assert det.get_feature_names_out().tolist() == ["flowdensity0", "flowdensity1", "flowdensity2", "flowdensity3"]
    assert isinstance(det.set_output(transform="default").fit_transform(x), np.ndarray)
    np.testing.assert_allclose(det.fit_transform(x), z)
    images = FlowDensity(backbone_kwargs=TINY, steps=1, device="cpu", random_state=0).fit(
        np.random.default_rng(0).integers(0, 256, (8, 1, 8, 8), dtype=np.uint8))
    assert images.transform(np.zeros((2, 1, 8, 8), np.uint8)).shape == (2, 64)
    assert len(images.get_feature_names_out()) == 64


def test_two_d_input_is_tabular_unless_told_it_is_images(digits):
    flat = digits[:64].flatten(1).numpy()
    assert tiny_tabular(steps=1).fit(flat).input_kind_ == "tabular"
    as_images = FlowDensity(backbone_kwargs=TINY, image_shape=(1, 8, 8), steps=1, device="cpu").fit(flat)
    assert as_images.input_kind_ == "images" and as_images.image_shape_ == (1, 8, 8)
    named = FlowDensity("mixerflow_tiny", TINY, steps=1, device="cpu").fit(flat)  # an image backbone by name
    assert named.image_shape_ == (1, 8, 8)
    flow = TabularFlow(64, num_layers=1, hidden=8)
    wrapped = FlowDensity.from_model(flow)
    assert wrapped.input_kind_ == "tabular" and wrapped.score_samples(flat[:3]).shape == (3,)
    with pytest.raises(ValueError, match="X has 63 features, but FlowDensity is expecting 64"):
        wrapped.score_samples(flat[:3, :63])
    with pytest.raises(ValueError, match="backbone_kwargs do not fit a TabularFlow"):
        FlowDensity(backbone_kwargs=TINY, steps=1).fit(np.zeros((4, 3)))


def test_num_threads_is_used_for_fit_and_scoring_and_the_caller_s_count_restored(monkeypatch):
    import torch

    from hybridflow.ood import FlowDensity

    seen = []
    real = torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: (seen.append(n), real(n)))
    before = torch.get_num_threads()
    rows = np.random.default_rng(0).normal(size=(40, 3))
    detector = FlowDensity(steps=2, num_threads=1, random_state=0).fit(rows)
    detector.score_samples(rows[:4])
    assert seen[:2] == [1, before] and seen.count(1) >= 2 and torch.get_num_threads() == before
    with pytest.raises(ValueError, match="num_threads"):
        FlowDensity(num_threads=0).fit(rows)
