"""The models shipped in the package: their cards, loading, create_backbone(pretrained=...) and
``pretrained:<name>`` wherever a checkpoint is taken, and the card's test figure on real data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from hybridflow import create_backbone
from hybridflow.pretrained import list_pretrained, load_pretrained, pretrained_folder, resolve_model_path
from hybridflow.runs import load_model

DATA_ROOT = Path(os.environ.get("HYBRIDFLOW_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
CARDS = {card["name"]: card for card in list_pretrained()}


def test_the_mission_s_models_are_shipped_with_their_cards():
    assert {"mnist", "fashionmnist", "mnist-hybrid", "fashionmnist-patches"} <= set(CARDS)
    for card in CARDS.values():
        per_image = 1 if not card.get("patches") else (28 // card["patches"]) ** 2  # a patch reference: per patch
        assert card["test_images"] == 10000 * per_image and 0 < card["test_bits_per_dim"] < 8
        assert (card["kind"] == "hybrid") == (card["test_accuracy"] is not None)
        assert sum(p.stat().st_size for p in pretrained_folder(card["name"]).iterdir()) < 4e6


@pytest.mark.parametrize("name", sorted(CARDS))
def test_a_pretrained_model_loads_in_eval_mode_with_finite_densities(name):
    model = load_pretrained(name)
    assert not model.training and model.backbone.num_params == CARDS[name]["parameters"]
    images = torch.randint(0, 256, (4, *model.input_shape), dtype=torch.uint8)
    assert torch.isfinite(model.backbone.log_prob(images)).all()


def test_create_backbone_loads_the_shipped_weights():
    flow = create_backbone("mixerflow", pretrained="mnist")
    expected = load_pretrained("mnist").backbone.state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in flow.state_dict().items())


@pytest.mark.parametrize("call, words", [
    (lambda: create_backbone("glow", pretrained="mnist"), "is a mixerflow_tiny, not a glow"),
    (lambda: create_backbone("mixerflow", pretrained="mnist", hidden=8), "fixes the architecture"),
    (lambda: load_pretrained("imagenet"), "no pretrained model 'imagenet': choose one of"),
])
def test_wrong_requests_are_named(call, words):
    with pytest.raises(ValueError, match=words):
        call()


def test_a_checkpoint_argument_takes_pretrained_names():
    assert resolve_model_path("pretrained:mnist") == pretrained_folder("mnist")
    model, directory, run = load_model("pretrained:mnist", device="cpu")
    assert directory == pretrained_folder("mnist") and run["data"]["name"] == "mnist"
    assert run["data"]["root"] is None  # the machine that trained it is not named


@pytest.mark.slow
@pytest.mark.skipif(not (DATA_ROOT / "MNIST").is_dir(), reason="needs MNIST under $HYBRIDFLOW_DATA")
def test_the_card_s_bits_per_dim_holds_on_the_test_images():
    from hybridflow.data import load_dataset
    from hybridflow.training import evaluate_model

    test = load_dataset("mnist", DATA_ROOT, train=False, limit=1000)
    figures = evaluate_model(load_pretrained("mnist"), test, batch_size=500)
    assert abs(figures["bits_per_dim"] - CARDS["mnist"]["test_bits_per_dim"]) < 0.03


def test_flow_density_scores_with_a_pretrained_model_without_training():
    import numpy as np

    from hybridflow.ood import FlowDensity

    detector = FlowDensity.from_model("pretrained:fashionmnist", scorer="loglik")
    scores = detector.score_samples(np.zeros((2, 1, 28, 28), np.uint8))
    from hybridflow import freeze

    with torch.no_grad():  # the detector scores with the inference copy (bfloat16 conditioners: see freeze)
        expected = freeze(load_pretrained("fashionmnist").backbone).log_prob(torch.zeros(2, 1, 28, 28, dtype=torch.uint8))
    assert scores.shape == (2,) and np.isfinite(scores).all()
    np.testing.assert_allclose(scores, expected.double().numpy(), rtol=1e-4)  # higher = more typical
