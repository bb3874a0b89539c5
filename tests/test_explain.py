"""captum attributions (hybridflow.explain) and the plots (hybridflow.plots): shapes, finiteness,
Integrated Gradients' completeness, the explained values against the model's own, PNGs written."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hybridflow import create_backbone
from hybridflow.data import load_digits_data
from hybridflow.explain import METHODS, NegativeLogLikelihood, attribute, explain, pixels_to_input
from hybridflow.hybrid import HybridModel
from hybridflow.plots import (
    plot_attributions, plot_roc_curves, plot_score_histograms, plot_training_curves, read_metrics, save_image_grid,
)
from hybridflow.training import TrainConfig, train

TINY = dict(input_shape=(1, 8, 8), patch_size=2, num_layers=2, hidden=16, steps=1)


@pytest.fixture(scope="module")
def model() -> HybridModel:
    """A hybrid model trained for a few steps, so neither the flow nor the head is the identity."""
    torch.manual_seed(0)
    net = HybridModel("mixerflow_tiny", 10, lam=1.0, **TINY)
    result = train(net, load_digits_data().subset(np.arange(256)),
                   TrainConfig(steps=6, batch_size=64, lr=3e-3, progress=False, num_threads=1))
    return result.model.eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return load_digits_data(train=False).images[:3]


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("target", ["predicted", "nll", 4])
def test_attributions_have_the_images_shape_and_are_finite(model, images, method, target):
    result = attribute(model, images, target=target, method=method, n_steps=16, n_samples=4)
    assert result.attributions.shape == images.shape
    assert result.attributions.dtype == torch.float32
    assert torch.isfinite(result.attributions).all()
    assert result.values.shape == (3,)
    if method == "saliency":
        assert (result.attributions >= 0).all()
    if target == 4:
        assert result.classes.tolist() == [4, 4, 4]
    assert model.training is False  # evaluation mode is kept (and restored)


@pytest.mark.parametrize("target", ["predicted", "nll"])
@pytest.mark.parametrize("baseline", ["black", "blur", "mean"])
def test_integrated_gradients_is_complete(model, images, target, baseline):
    references = load_digits_data().images[:64]
    result = attribute(model, images, target=target, method="ig", baseline=baseline, references=references,
                       n_steps=64)
    total = result.attributions.flatten(1).sum(1).double()
    gap = (result.values - result.baseline_values).double()
    # sum of attributions = f(x) - f(baseline), up to the quadrature error of 64 Gauss-Legendre points
    assert torch.allclose(total, gap, rtol=1e-2, atol=1e-2 * max(1.0, float(gap.abs().max())))
    assert torch.allclose(result.delta.double(), total - gap, atol=1e-3 * max(1.0, float(gap.abs().max())))


def test_explained_values_are_the_models_own(model, images):
    nll = attribute(model, images, target="nll", method="saliency")
    _, log_prob = model.backbone.encode(images, noise="midpoint")
    assert torch.allclose(nll.values, -log_prob.detach() / math.log(2), rtol=1e-5, atol=1e-3)
    predicted = attribute(model, images, target="predicted", method="saliency")
    with torch.no_grad():
        logits = model.predict_logits(images)
    assert predicted.classes.tolist() == logits.argmax(1).tolist()
    assert torch.allclose(predicted.values, logits.max(1).values, atol=1e-4)


def test_pixels_to_input_is_the_midpoint_dequantisation():
    u = pixels_to_input(torch.tensor([[[[0, 255]]]], dtype=torch.uint8))
    assert torch.allclose(u, torch.tensor([[[[0.5 / 256, 255.5 / 256]]]]))


def test_a_bare_backbone_explains_its_likelihood_only(images):
    flow = create_backbone("glow_tiny", input_shape=(1, 8, 8), num_steps=1, hidden=8).eval()
    flow.log_prob(images)  # ActNorm's data-dependent initialisation
    result = attribute(flow, images, target="nll", method="ig", n_steps=32)
    assert result.attributions.shape == images.shape
    gap = result.values - result.baseline_values
    assert torch.allclose(result.attributions.flatten(1).sum(1), gap, rtol=1e-2, atol=1e-2)
    with pytest.raises(ValueError, match="classifier head"):
        attribute(flow, images, target="predicted")
    assert all(k.endswith("nll (bits)") for k in explain(flow, images[0]))
    assert torch.allclose(NegativeLogLikelihood(flow)(pixels_to_input(images)), result.values, atol=1e-3)


def test_bad_requests(model, images):
    with pytest.raises(ValueError, match="unknown attribution method"):
        attribute(model, images, method="lime")
    with pytest.raises(ValueError, match="out of range"):
        attribute(model, images, target=10)
    with pytest.raises(ValueError, match="needs references"):
        attribute(model, images, method="ig", baseline="mean")
    with pytest.raises(ValueError, match="one image"):
        explain(model, images)


def test_explain_names_every_map_and_plots_them(model, images, tmp_path):
    maps = explain(model, images[0], methods=("ig", "saliency"), n_steps=16)
    assert len(maps) == 4 and any("class" in k for k in maps) and any("nll" in k for k in maps)
    path = plot_attributions(images[0], {k: a.attributions[0] for k, a in maps.items()}, tmp_path / "e.png",
                             title="test")
    assert path.stat().st_size > 1000
    with pytest.raises(ValueError, match="spatial shape"):
        plot_attributions(images[0], {"bad": torch.zeros(1, 4, 4)}, tmp_path / "bad.png")


# --------------------------------------------------------------------------- plots


def test_plots_write_pngs(tmp_path, model):
    grid = save_image_grid(model.backbone.sample(6, temperature=0.5), tmp_path / "grid.png", nrow=3)
    from PIL import Image

    width, height = Image.open(grid).size
    assert width > height >= 2 * 32  # 3 x 2 grid of 8x8 images enlarged to 32 pixels
    rng = np.random.default_rng(0)
    scores = {"a": (rng.normal(1, 1, 50), rng.normal(0, 1, 50)), "b": (rng.normal(2, 1, 50), rng.normal(0, 1, 50))}
    assert plot_roc_curves(scores, tmp_path / "roc.png").stat().st_size > 1000
    assert plot_score_histograms(scores, tmp_path / "hist.png").stat().st_size > 1000


def test_training_curves_from_the_metrics_log(tmp_path, model):
    run = tmp_path / "run"
    torch.manual_seed(0)
    net = HybridModel("mixerflow_tiny", 10, lam=1.0, **TINY)
    data = load_digits_data().subset(np.arange(128))
    train(net, data, TrainConfig(steps=4, batch_size=32, log_every=2, out_dir=run, progress=False, num_threads=1),
          val_data=data.subset(np.arange(32)))
    entries = read_metrics(run)
    assert {e["split"] for e in entries} == {"train", "val"}
    assert plot_training_curves(run / "metrics.jsonl", tmp_path / "curves.png").stat().st_size > 1000
    with pytest.raises(FileNotFoundError):
        read_metrics(tmp_path / "nothing")
