"""The one-off converter to the .npy layout: image folders, .npz, named sets, any Dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hybridflow.data import NpyImages, convert_dataset, load_dataset, load_image_folder, load_npz

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


@pytest.mark.slow
def test_image_folder_converts_chunk_by_chunk_to_what_the_eager_loader_reads(tmp_path):
    rng = np.random.default_rng(0)
    for k in range(7):
        (tmp_path / "src" / f"c{k % 3}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (5, 6, 3), dtype=np.uint8)).save(tmp_path / "src" / f"c{k % 3}" / f"{k}.png")
    before = torch.get_rng_state()
    summary = convert_dataset(tmp_path / "src", tmp_path / "out", chunk=2, num_workers=1)
    assert torch.equal(before, torch.get_rng_state())
    assert summary["n"] == 7 and summary["image_shape"] == [3, 5, 6] and summary["classes"] == ["c0", "c1", "c2"]
    eager, stored = load_image_folder(tmp_path / "src"), NpyImages(tmp_path / "out")
    assert torch.equal(stored.to_image_data().images, eager.images)
    assert stored.labels.tolist() == eager.labels.tolist() and stored.meta["source"] == str(tmp_path / "src")
    with pytest.raises(FileExistsError, match="overwrite"):
        convert_dataset(tmp_path / "src", tmp_path / "out")
    assert convert_dataset(tmp_path / "src", tmp_path / "out", size=4, overwrite=True)["image_shape"] == [3, 4, 4]


def test_npz_and_named_sets_convert_losslessly(tmp_path):
    npz = tmp_path / "set.npz"
    x = np.random.default_rng(1).integers(0, 256, (9, 6, 6, 3), dtype=np.uint8)
    np.savez(npz, x=x, y=np.arange(9) - 1)
    convert_dataset(npz, tmp_path / "a")
    assert torch.equal(NpyImages(tmp_path / "a").to_image_data().images, load_npz(npz).images)
    assert NpyImages(tmp_path / "a").labels.tolist() == list(range(-1, 8))
    summary = convert_dataset("digits", tmp_path / "b", train=False, chunk=100)
    assert summary["labelled"] == 450 and summary["classes"][:2] == ["0", "1"]
    assert torch.equal(NpyImages(tmp_path / "b").to_image_data().images, load_dataset("digits", train=False).images)


@pytest.mark.skipif(not (SHARED / "MNIST").is_dir(), reason="the shared MNIST files are not here")
def test_a_torchvision_root_converts_mnist(tmp_path):
    summary = convert_dataset("mnist", tmp_path / "mnist", root=SHARED, train=False)
    stored = NpyImages(tmp_path / "mnist")
    assert summary["n"] == 10_000 and stored.image_shape == (1, 28, 28)
    assert abs(float(stored.read(range(10_000)).float().mean()) / 255 - 0.1325) < 0.002  # test-split pixel mean
    assert torch.bincount(stored.labels).min() >= 890


def test_bad_sources_and_destinations_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a dataset name"):
        convert_dataset(tmp_path / "nope", tmp_path / "out")
    convert_dataset("digits", tmp_path / "same", train=False)
    with pytest.raises(ValueError, match="is the source itself"):
        convert_dataset(tmp_path / "same", tmp_path / "same", overwrite=True)
    with pytest.raises(ValueError, match="chunk"):
        convert_dataset("digits", tmp_path / "c", chunk=0)
