"""The OOD scorers (hybridflow.ood.scorers) against densities known by hand."""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest
import torch

import hybridflow.ood.scorers as scorers
from hybridflow.ood import (
    BitsPerDim, Complexity, FlowDensity, LikelihoodRatio, LogLikelihood, MaxSoftmax, PredictiveEntropy, Typicality,
    compressed_bits_per_dim, create_scorer, perturb,
)
from tests.ood.toys import FakeHybrid, GaussianToy, gaussian_log_prob_by_hand, identity_flow


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


@pytest.mark.parametrize("name", ["loglik", "bpd", "typicality", "likelihood_ratio", "complexity"])
def test_every_density_scorer_reads_the_model_through_log_likelihood(monkeypatch, name):
    """One place evaluates the density: swapping how models are evaluated is a change there only."""
    calls = []

    def counted(model, images, batch_size=256):
        calls.append(model)
        return np.zeros(len(images))

    model, reference = GaussianToy(100.0, 30.0), GaussianToy(128.0, 60.0)
    x = np.random.default_rng(0).integers(0, 256, (3, 1, 8, 8), dtype=np.uint8)
    scorer = create_scorer(name, model, reference, compressor="zlib")
    monkeypatch.setattr(scorers, "log_likelihood", counted)
    scorer.fit(x)(x)
    # the scorer evaluates inference copies (of the model, and of the reference)
    assert calls and all(m is scorer.model or m is getattr(scorer, "reference", None) for m in calls)
    assert all(type(m) is GaussianToy and m is not model and m is not reference for m in calls)
    assert any(m is getattr(scorer, "reference", None) for m in calls) == (name == "likelihood_ratio")


def test_scorers_answer_for_the_weights_they_were_built_with():
    """A scorer holds an inference copy: it runs the fused path and does not go stale or move
    when the live model is trained further (build a new scorer for the new weights)."""
    from hybridflow.flows import is_inference_copy
    from hybridflow import create_backbone
    from hybridflow.ood import LogLikelihood

    flow = create_backbone("mixerflow_tiny", input_shape=(1, 8, 8), patch_size=2, hidden=8).eval()
    images = np.random.default_rng(0).integers(0, 256, (4, 1, 8, 8), dtype=np.uint8)
    scorer = LogLikelihood(flow)
    assert is_inference_copy(scorer.model) and scorer.model is not flow
    before = scorer(images)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.05 * torch.randn_like(p))
    np.testing.assert_array_equal(scorer(images), before)
    with torch.no_grad():
        live = flow.log_prob(torch.from_numpy(images)).double().numpy()
    np.testing.assert_allclose(LogLikelihood(flow)(images), live, rtol=1e-5)
    assert np.abs(live - before).max() > 1e-2
