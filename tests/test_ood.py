"""OOD scorers, metrics, the FlowDensity estimator and the pytorch-ood adapter."""

from __future__ import annotations

import math
import pickle
import sys
import types
import zlib
from abc import ABC, abstractmethod

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.metrics import average_precision_score, roc_auc_score
from torch import nn

from hybridflow import create_backbone
from hybridflow.data import load_digits_data
from hybridflow.ood import (
    BitsPerDim, Complexity, FlowDensity, FlowOODDetector, LikelihoodRatio, LogLikelihood, MaxSoftmax,
    PredictiveEntropy, Typicality, compressed_bits_per_dim, create_scorer, evaluate, log_likelihood, perturb,
    plot_score_histogram, to_pytorch_ood,
)

TINY = {"patch_size": 2, "num_layers": 2, "hidden": 16, "steps": 1}


def identity_flow() -> nn.Module:
    """A fresh MixerFlow in eval mode is the identity (identity LU / 1x1 conv, zero couplings,
    uninitialised ActNorm), so its density is a standard normal on the centred pixels."""
    return create_backbone("mixerflow_tiny", input_shape=(1, 8, 8), **TINY).eval()


def gaussian_log_prob_by_hand(x: torch.Tensor) -> torch.Tensor:
    """log p of integer images under the identity flow: eval mode dequantises every image with one
    noise image drawn from seed 0; then N(u - 0.5; 0, I) and the 8 bits per dimension."""
    noise = torch.rand((1, *x.shape[1:]), generator=torch.Generator().manual_seed(0))
    u = (x.double() + noise.double()) / 256 - 0.5
    d = x[0].numel()
    return -0.5 * (u.pow(2) + math.log(2 * math.pi)).flatten(1).sum(1) - d * math.log(256)


class GaussianToy(nn.Module):
    """An analytic density on pixel values: independent N(mean, std^2) per pixel."""

    def __init__(self, mean: float, std: float, input_shape=(1, 8, 8)) -> None:
        super().__init__()
        self.mean, self.std, self.input_shape = mean, std, input_shape

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        z = (x.double() - self.mean) / self.std
        return (-0.5 * z.pow(2) - math.log(self.std) - 0.5 * math.log(2 * math.pi)).flatten(1).sum(1)


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    return load_digits_data().images[:240]


@pytest.fixture(scope="module")
def fitted(digits) -> FlowDensity:
    return FlowDensity(backbone_kwargs=TINY, steps=5, random_state=0).fit(digits)


# --------------------------------------------------------------------------- scorers


def test_loglik_is_the_gaussian_on_centred_pixels():
    flow = identity_flow()
    levels = [128, 64, 0]  # distance from the centre grows: log-likelihood falls
    x = torch.stack([torch.full((1, 8, 8), v, dtype=torch.uint8) for v in levels])
    expected = gaussian_log_prob_by_hand(x).numpy()
    scores = LogLikelihood(flow)(x)
    np.testing.assert_allclose(scores, expected, rtol=1e-6)
    assert scores[0] > scores[1] > scores[2]
    np.testing.assert_allclose(BitsPerDim(flow)(x), expected / (64 * math.log(2)), rtol=1e-6)
    assert flow.training is False  # the scorer restores the mode it found


def test_scorers_restore_training_mode():
    flow = identity_flow().train()
    LogLikelihood(flow)(torch.zeros(2, 1, 8, 8, dtype=torch.uint8))
    assert flow.training


def test_typicality_on_a_gaussian_toy():
    """For a D-dim Gaussian the expected NLL (the entropy) is D/2 (log 2 pi s^2 + 1 + 1/(12 s^2))
    on rounded samples; the mode is far *more* likely, NLL D/2 log 2 pi s^2, hence atypical by
    about D/2."""
    mean, std, d = 128.0, 20.0, 64
    toy = GaussianToy(mean, std)
    rng = np.random.default_rng(0)
    train = np.clip(np.rint(rng.normal(mean, std, (4000, 1, 8, 8))), 0, 255).astype(np.uint8)
    scorer = Typicality(toy).fit(train)
    entropy = d / 2 * (math.log(2 * math.pi * std**2) + 1 + 1 / (12 * std**2))
    assert scorer.train_nll_mean_ == pytest.approx(entropy, rel=5e-3)
    mode = np.full((1, 1, 8, 8), 128, np.uint8)
    nll_mode = d / 2 * math.log(2 * math.pi * std**2)
    assert scorer(mode)[0] == pytest.approx(-(scorer.train_nll_mean_ - nll_mode), rel=1e-9)
    assert scorer(mode)[0] == pytest.approx(-d / 2, rel=0.05)
    # The mode has the highest likelihood but is less typical than a typical training image.
    assert LogLikelihood(toy)(mode)[0] > LogLikelihood(toy)(train).max()
    assert scorer(mode)[0] < np.median(scorer(train))
    # Batches of M: -|mean NLL of the batch - entropy|, shrinking like 1/sqrt(M) for inliers.
    nll = -toy.log_prob(torch.from_numpy(train)).numpy()
    batches = scorer.score_batches(train, m=10, seed=1)
    order = np.random.default_rng(1).permutation(4000).reshape(-1, 10)
    np.testing.assert_allclose(batches, -np.abs(nll[order].mean(1) - scorer.train_nll_mean_))
    assert np.median(batches) > np.median(scorer(train))
    assert scorer.score_batches(train, m=5, n_batches=7).shape == (7,)


def test_typicality_needs_fit():
    with pytest.raises(RuntimeError, match="fit"):
        Typicality(GaussianToy(0, 1))(np.zeros((1, 1, 8, 8), np.uint8))


def test_likelihood_ratio_is_the_difference_of_log_likelihoods():
    model, reference = GaussianToy(100.0, 30.0), GaussianToy(128.0, 60.0)
    x = np.random.default_rng(1).integers(0, 256, (5, 1, 8, 8), dtype=np.uint8)
    t = torch.from_numpy(x)
    expected = (model.log_prob(t) - reference.log_prob(t)).numpy()
    np.testing.assert_allclose(LikelihoodRatio(model, reference)(x), expected, rtol=1e-12)
    flow = identity_flow()
    assert np.all(LikelihoodRatio(flow, flow)(x) == 0)
    with pytest.raises(ValueError, match="reference"):
        create_scorer("likelihood_ratio", flow)


def test_complexity_constant_compresses_better_than_noise():
    constant = np.full((1, 1, 28, 28), 90, np.uint8)
    noise = np.random.default_rng(0).integers(0, 256, (1, 1, 28, 28), dtype=np.uint8)
    for compressor in ("png", "zlib"):
        low, high = compressed_bits_per_dim(np.r_[constant, noise], compressor)
        assert low < 1.0 < 7.5 < high  # noise does not compress: about 8 bits/dim plus headers
    assert compressed_bits_per_dim(noise, "zlib")[0] == 8 * len(zlib.compress(noise.tobytes(), 9)) / 784
    rgb = np.zeros((2, 3, 8, 8), np.uint8)
    assert compressed_bits_per_dim(rgb, "png").shape == (2,)
    with pytest.raises(ValueError, match="compressor"):
        compressed_bits_per_dim(constant, "gzip")


def test_complexity_score_is_compressor_minus_model_bits():
    flow = identity_flow()
    x = np.r_[np.full((1, 1, 8, 8), 128, np.uint8),
              np.random.default_rng(2).integers(0, 256, (1, 1, 8, 8), dtype=np.uint8)]
    bpd = -gaussian_log_prob_by_hand(torch.from_numpy(x)).numpy() / (64 * math.log(2))
    for compressor in ("png", "zlib"):
        expected = compressed_bits_per_dim(x, compressor) - bpd
        np.testing.assert_allclose(Complexity(flow, compressor)(x), expected, atol=1e-5)  # float32 flow


def test_perturb_rates():
    x = torch.full((50, 1, 8, 8), 7, dtype=torch.uint8)
    assert torch.equal(perturb(x, 0.0), x)
    changed = (perturb(x, 0.3, seed=1) != x).float().mean().item()
    assert changed == pytest.approx(0.3 * 255 / 256, abs=0.03)  # a draw may repeat the old value
    assert torch.equal(perturb(x, 0.3, seed=1), perturb(x, 0.3, seed=1))
    with pytest.raises(ValueError):
        perturb(x, 1.5)


class FakeHybrid(nn.Module):
    """A hybrid model stand-in: a backbone plus p(class 0 | x) = mean pixel / 255."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = identity_flow()

    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        a = x.double().mean(dim=(1, 2, 3)) / 255
        return torch.stack([a, 1 - a], 1)


def test_max_softmax_and_entropy_on_a_hybrid_model():
    x = torch.stack([torch.full((1, 8, 8), v, dtype=torch.uint8) for v in (51, 128, 255)])
    a = np.array([0.2, 128 / 255, 1.0])
    model = FakeHybrid()
    np.testing.assert_allclose(MaxSoftmax(model)(x), np.maximum(a, 1 - a))
    plogp = np.where(a > 0, a * np.log(np.clip(a, 1e-300, None)), 0) + np.where(
        a < 1, (1 - a) * np.log(np.clip(1 - a, 1e-300, None)), 0)
    np.testing.assert_allclose(PredictiveEntropy(model)(x), plogp, atol=1e-12)
    with pytest.raises(TypeError, match="predict_proba"):
        MaxSoftmax(identity_flow())(x)
    detector = FlowDensity.from_model(model, scorer="entropy", X_fit=x)
    np.testing.assert_allclose(detector.score_samples(x), plogp, atol=1e-12)
    assert detector.backbone_ is model.backbone and detector.model_ is model


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


# --------------------------------------------------------------------------- metrics


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


def test_plots(tmp_path):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rng = np.random.default_rng(0)
    s_in, s_out = rng.normal(1, 1, 50), rng.normal(0, 1, 50)
    evaluate(s_in, s_out, plot=tmp_path / "roc.png")
    assert (tmp_path / "roc.png").stat().st_size > 0
    figure = Figure()
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    evaluate(s_in, s_out, plot=ax)
    assert len(ax.lines) >= 2
    plot_score_histogram(s_in, s_out, path=tmp_path / "hist.png")
    assert (tmp_path / "hist.png").stat().st_size > 0


# --------------------------------------------------------------------------- FlowDensity


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
    # Evaluation noise is one fixed image: an image's score does not depend on its batch.
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


# --------------------------------------------------------------------------- pytorch-ood adapter


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
