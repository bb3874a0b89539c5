"""Linear probes and feature sources."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, log_loss
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from hybridflow import create_backbone
from hybridflow.data import load_digits_data
from hybridflow.features import DEFAULT_FEATURES, flow_features
from hybridflow.probe import _fit_path
from hybridflow.probe import (
    ProbeResult, compare_probes, embed_images, format_table, linear_probe, raw_pixel_features, timm_mixer_features,
)

FAST_CS = (0.01, 0.1, 1.0)


@pytest.fixture(scope="module")
def digits():
    return load_digits_data(train=True), load_digits_data(train=False)


def blobs(n: int, seed: int, k: int = 3, dim: int = 5, gap: float = 10.0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    return rng.normal(size=(n, dim)) + gap * np.eye(k, dim)[y], y


def test_separable_features_are_probed_perfectly():
    (x_train, y_train), (x_test, y_test) = blobs(150, 0), blobs(90, 1)
    result = linear_probe(x_train, y_train, x_test, y_test, seeds=(0, 1), Cs=FAST_CS)
    assert result.accuracy_mean == 1.0 and result.accuracy_std == 0.0
    assert result.log_loss_mean < 0.05
    assert result.dim == 5 and len(result.accuracies) == 2 and set(result.chosen_Cs) <= set(FAST_CS)


def test_raw_pixels_on_digits_beat_chance(digits):
    train, test = digits
    result = linear_probe(raw_pixel_features(train.images), train.labels, raw_pixel_features(test.images),
                          test.labels, seeds=(0, 1), Cs=FAST_CS)
    assert result.accuracy_mean > 0.9  # chance is 0.1
    assert result.log_loss_mean < 0.5 < np.log(10)


def test_probe_matches_a_direct_logistic_regression(digits):
    train, test = digits
    x_train, x_test = raw_pixel_features(train.images), raw_pixel_features(test.images)
    y_train, y_test = train.labels.numpy(), test.labels.numpy()
    result = linear_probe(x_train, y_train, x_test, y_test, seeds=(0,), Cs=[0.3])
    with threadpool_limits(1, "blas"):  # as the probe does: far faster on a busy machine
        direct = make_pipeline(StandardScaler(), LogisticRegression(C=0.3, max_iter=2000)).fit(x_train, y_train)
    p = direct.predict_proba(x_test)
    assert result.accuracies[0] == pytest.approx(accuracy_score(y_test, direct.predict(x_test)))
    # the torch solver: the same optimum to the tolerance of lbfgs in float32
    assert result.log_losses[0] == pytest.approx(log_loss(y_test, p, labels=direct.classes_), rel=1e-3)
    exact = linear_probe(x_train, y_train, x_test, y_test, seeds=(0,), Cs=[0.3], solver="sklearn", max_iter=2000)
    assert exact.log_losses[0] == pytest.approx(log_loss(y_test, p, labels=direct.classes_), rel=1e-6)
    # With a grid, the refit uses the chosen C on the whole training set.
    searched = linear_probe(x_train, y_train, x_test, y_test, seeds=(0,), Cs=FAST_CS)
    again = linear_probe(x_train, y_train, x_test, y_test, seeds=(0,), Cs=[searched.chosen_Cs[0]])
    # (warm-started from the validation fit: the same optimum to lbfgs' tolerance of 1e-4)
    assert searched.log_losses == pytest.approx(again.log_losses, rel=2e-2)


def test_probe_accepts_string_labels_and_reports_all_classes():
    (x_train, y_train), (x_test, y_test) = blobs(60, 0), blobs(30, 1)
    names = np.array(["cat", "dog", "emu"])
    x_test, y_test = x_test[y_test != 2], y_test[y_test != 2]  # a test set missing one class
    result = linear_probe(x_train, names[y_train], x_test, names[y_test], seeds=(0,), Cs=[1.0])
    assert result.accuracy_mean == 1.0


@pytest.mark.parametrize("change, message", [
    (dict(train_features=np.full((6, 2), np.nan)), "NaN"),
    (dict(test_features=np.zeros((6, 3))), "dimensions"),
    (dict(test_labels=np.array([0, 1, 0, 1, 0, 7])), "do not occur"),
    (dict(train_labels=np.zeros(5)), "one label per row"),
    (dict(train_features=np.zeros(6)), "2-D"),
    (dict(Cs=[-1.0]), "positive"),
])
def test_probe_bad_input(change, message):
    args = dict(train_features=np.eye(6, 2), train_labels=np.arange(6) % 2, test_features=np.eye(6, 2),
                test_labels=np.arange(6) % 2, seeds=(0,), Cs=[1.0])
    with pytest.raises(ValueError, match=message):
        linear_probe(**{**args, **change})


def test_compare_and_format_table():
    (x_train, y_train), (x_test, y_test) = blobs(60, 0), blobs(30, 1)
    results = compare_probes({"blobs": (x_train, x_test), "first dim": (x_train[:, :1], x_test[:, :1])},
                             y_train, y_test, seeds=(0, 1), Cs=[1.0])
    assert list(results) == ["blobs", "first dim"] and results["first dim"].dim == 1
    table = format_table(results).splitlines()
    assert table[0].split()[:3] == ["features", "dim", "accuracy"]
    assert len({len(line) for line in table}) == 1  # aligned
    assert "100.00 ± 0.00" in table[1] and table[2].startswith("first dim")
    summary = results["blobs"].as_dict()
    assert summary["accuracy_mean"] == 1.0 and summary["seeds"] == [0, 1]


def test_probe_result_spread():
    r = ProbeResult(dim=3, seeds=[0, 1], accuracies=[0.8, 0.9], log_losses=[0.5, 0.7], chosen_Cs=[1, 1])
    assert (r.accuracy_mean, r.accuracy_std) == pytest.approx((0.85, 0.05))
    assert (r.log_loss_mean, r.log_loss_std) == pytest.approx((0.6, 0.1))


def test_raw_pixel_features():
    x = np.array([[[[0, 255], [51, 102]]]], np.uint8)
    np.testing.assert_allclose(raw_pixel_features(x), [[0.0, 1.0, 0.2, 0.4]], rtol=1e-6)
    assert raw_pixel_features(np.zeros((3, 8, 8, 3), np.uint8)).shape == (3, 192)


def test_embed_images_batched_and_restores_mode(digits):
    flow = create_backbone("mixerflow_tiny", input_shape=(1, 8, 8), patch_size=2, num_layers=2, hidden=16,
                           steps=1)
    x = digits[0].images[:70]
    flow.train()
    flow.bits_per_dim(x).mean().backward()  # initialise ActNorm so the embedding is not the identity
    feats = embed_images(flow, x, batch_size=32, features="latent")
    assert flow.training
    assert feats.shape == (70, 64) and feats.dtype == np.float32
    flow.eval()
    with torch.no_grad():
        np.testing.assert_allclose(feats, flow.embed(x).numpy(), rtol=1e-5, atol=1e-6)
    assert embed_images(flow, x[:5], pooled=True).shape == (5, 4)  # MixerFlow pools per patch feature
    with pytest.raises(TypeError, match="embed"):
        embed_images(object(), x)


def test_embed_images_default_is_the_default_feature_set(digits):
    flow = create_backbone("mixerflow_tiny", input_shape=(1, 8, 8), patch_size=2, num_layers=2, hidden=16,
                           steps=1)
    x = digits[0].images[:9]
    np.testing.assert_array_equal(embed_images(flow, x), flow_features(flow, x, DEFAULT_FEATURES))
    assert embed_images(flow, x, features="depths").shape == (9, 2 * 64)
    with pytest.raises(ValueError, match="pooled=True"):
        embed_images(flow, x, pooled=True, features="hidden")
    with pytest.raises(ValueError, match="unknown features"):
        embed_images(flow, x, features="pixels")


def test_embed_images_of_a_hybrid_model_uses_its_backbone(digits):
    hybrid = pytest.importorskip("hybridflow.hybrid")
    model = hybrid.HybridModel("mixerflow_tiny", num_classes=10, input_shape=(1, 8, 8), patch_size=2,
                               num_layers=1, hidden=8, steps=1)
    x = digits[0].images[:6]
    np.testing.assert_allclose(embed_images(model, x), embed_images(model.backbone, x))
    assert embed_images(model, x, pooled=True).shape == (6, 4)


def test_warm_started_path_matches_cold_fits(digits):
    """Each C of the validation path (warm-started, capped iterations) gives the cold fit's predictions."""
    train, _ = digits
    x, y = raw_pixel_features(train.images[:600]), train.labels[:600].numpy()
    cs = [0.01, 0.1, 1.0]
    path = _fit_path(x, y, cs, max_iter=300)
    with threadpool_limits(1, "blas"):
        for C, model in zip(cs, path):
            cold = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=5000)).fit(x, y)
            # the same optimum to lbfgs' tolerance: probabilities within 0.01, the same predictions
            np.testing.assert_allclose(model.predict_proba(x), cold.predict_proba(x), atol=1e-2)
            assert np.mean(model.predict(x) == cold.predict(x)) >= 0.995


def test_probe_logs_one_line_per_seed():
    (x_train, y_train), (x_test, y_test) = blobs(60, 0), blobs(30, 1)
    lines: list[str] = []
    linear_probe(x_train, y_train, x_test, y_test, seeds=(0, 1), Cs=FAST_CS, name="blobs", log=lines.append)
    assert len(lines) == 2 and lines[0].startswith("  probe blobs (5 dims), seed 0: C=")
    assert "test accuracy 100.00%" in lines[1]


def test_timm_mixer_features(digits):
    train, test = digits
    features = timm_mixer_features(train.images[:64], train.labels[:64], test.images[:10], test.images[:3],
                                   steps=2, embed_dim=16, num_blocks=1)
    assert [f.shape for f in features] == [(64, 16), (10, 16), (3, 16)]
    assert all(np.isfinite(f).all() for f in features)
    with pytest.raises(ValueError, match="labels"):
        timm_mixer_features(train.images[:8], train.labels[:7], steps=1)
