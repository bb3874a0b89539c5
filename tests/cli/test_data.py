"""`hybridflow data convert`: a dataset to the .npy layout, and one-line errors."""

from __future__ import annotations

import json

import numpy as np
import torch

import hybridflow.cli.data  # noqa: F401  (registers the `data` group until cli/__init__ imports it)
from hybridflow.data import NpyImages, load_npz
from tests.cli.runner import one_line_error, run


def test_convert_writes_the_layout_and_reports_it(tmp_path):
    npz = tmp_path / "set.npz"
    np.savez(npz, x=np.random.default_rng(0).integers(0, 256, (12, 8, 8, 3), dtype=np.uint8), y=np.arange(12) % 3)
    payload = json.loads(run("data", "convert", npz, tmp_path / "out", "--chunk", "5", "--json").stdout)
    assert payload["n"] == 12 and payload["image_shape"] == [3, 8, 8] and payload["labelled"] == 12
    assert torch.equal(NpyImages(tmp_path / "out").to_image_data().images, load_npz(npz).images)
    text = run("data", "convert", "digits", tmp_path / "digits", "--split", "test").stdout
    assert "wrote 450 images (1x8x8, 450 labelled, 10 classes)" in text
    unnamed = run("data", "convert", npz, tmp_path / "again").stdout  # the .npz holds labels, no class names
    assert "(3x8x8, 12 labelled, no class names)" in unnamed


def test_convert_errors_are_one_line_with_an_exit_code(tmp_path):
    message = one_line_error(run("data", "convert", tmp_path / "missing", tmp_path / "out", code=1))
    assert "neither a dataset name" in message
    run("data", "convert", "digits", tmp_path / "d", "--split", "test")
    message = one_line_error(run("data", "convert", "digits", tmp_path / "d", "--split", "test", code=1))
    assert "--overwrite" in message or "overwrite" in message
    assert "convert" in run("data", "--help").stdout
