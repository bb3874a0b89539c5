"""The benchmarks' wrapper of the library's pseudo-labels (bench/_pseudo_labels.py) gives guesses only
above the threshold, and spec strings reach the library's options (lists as ``a|b``)."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from _common import build_model, parse_spec  # noqa: E402
from _pseudo_labels import PseudoLabelHybrid  # noqa: E402


def test_spec_lists_and_the_library_dequantisation_pass_through():
    spec = parse_spec("mixerflow_tiny:dequantization=variational,patch_sizes=2|4,patch_size=2,num_layers=2,hidden=8")
    assert spec.options["patch_sizes"] == [2, 4]
    model = build_model(spec, (1, 8, 8))
    assert model.backbone.dequantizer is not None and model.backbone.config["patch_sizes"] == [[2, 2], [4, 4]]


def test_pseudo_labels_only_for_confident_guesses():
    model = PseudoLabelHybrid("mixerflow_tiny", num_classes=3, lam=1.0, input_shape=(1, 4, 4), patch_size=2,
                              num_layers=1, hidden=8)
    model.max_shift = 0
    x = torch.randint(0, 256, (6, 1, 4, 4), dtype=torch.uint8)
    y = torch.tensor([0, -1, -1, 1, -1, -1])
    model.training_loss(x, y)  # the first call initialises the ActNorms: no guesses yet
    model.eval()               # each image's own noise: the two sides see the same
    model.threshold = 1.1      # nobody is that confident: the plain hybrid loss
    torch.testing.assert_close(model.training_loss(x, y), model(x, y).total)
    model.threshold = 0.0      # everyone is: the guesses are the targets
    guesses = model.predict(x)
    torch.testing.assert_close(model.training_loss(x, y), model(x, torch.where(y >= 0, y, guesses)).total)
