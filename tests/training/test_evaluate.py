"""evaluate_model: the mean of the model's own per-image figures, over every example."""

from __future__ import annotations

import math

import pytest
import torch

from hybridflow.data import ImageData
from hybridflow.training import evaluate_model
from tests.training.helpers import tiny_model


def test_figures_are_means_over_every_example_whatever_the_batch(digits):
    _, val_data = digits
    model = tiny_model().eval()
    x, y = val_data.images, val_data.labels
    with torch.no_grad():
        bpd = model.bits_per_dim(x).double().mean().item()
        logits = model.predict_logits(x).double()
    figures = evaluate_model(model, val_data, batch_size=7)
    assert figures["num_examples"] == figures["num_labelled"] == len(val_data)
    assert figures["bits_per_dim"] == pytest.approx(bpd, rel=1e-6)
    assert figures["accuracy"] == pytest.approx((logits.argmax(1) == y).double().mean().item())
    assert figures["cross_entropy"] == pytest.approx(torch.nn.functional.cross_entropy(logits, y).item(), rel=1e-5)
    assert evaluate_model(model, val_data, batch_size=64)["bits_per_dim"] == pytest.approx(bpd, rel=1e-6)


def test_unlabelled_data_has_no_accuracy(digits):
    _, val_data = digits
    figures = evaluate_model(tiny_model(), ImageData(val_data.images[:10]))
    assert figures["accuracy"] is None and figures["cross_entropy"] is None and figures["num_labelled"] == 0
    assert math.isfinite(figures["bits_per_dim"])
