"""Image folders read lazily, and open_dataset picking the streamed form of a name or a path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from hybridflow.data import BatchSource, ImageData, LazyImageFolder, NpyImages, convert_dataset, open_dataset
from hybridflow.training import EpochBatches


def image_folder(root, sizes=((6, 8), (6, 8), (10, 8)), mode="RGB"):
    rng = np.random.default_rng(0)
    for k, (h, w) in enumerate(sizes):
        folder = root / ("cat" if k % 2 == 0 else "dog")
        folder.mkdir(parents=True, exist_ok=True)
        shape = (h, w, 3) if mode == "RGB" else (h, w)
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(folder / f"{k}.png")
    return root


def test_lazy_folder_decodes_on_demand_like_load_image_folder(tmp_path):
    root = image_folder(tmp_path / "imgs", sizes=((6, 8), (6, 8), (6, 8)))
    data = LazyImageFolder(root)
    assert len(data) == 3 and data.classes == ["cat", "dog"] and data.targets == [0, 0, 1]
    from hybridflow.data import load_image_folder

    eager = load_image_folder(root)
    assert torch.equal(torch.stack([data[i][0] for i in range(3)]), eager.images)
    x, y = BatchSource(data, num_workers=1).stream(EpochBatches(3, 3, 0), seed=0).batch(0)
    assert x.shape == (3, 3, 6, 8) and sorted(y.tolist()) == [0, 0, 1]
    assert LazyImageFolder(root, size=4, channels=1)[0][0].shape == (1, 4, 4)


def test_lazy_folder_with_mixed_sizes_is_refused_at_the_batch_unless_resized(tmp_path):
    root = image_folder(tmp_path / "imgs")
    stream = BatchSource(LazyImageFolder(root)).stream(EpochBatches(3, 3, 0), seed=0)
    with pytest.raises(ValueError, match="differ in shape.*resize"):
        stream.batch(0)
    assert BatchSource(LazyImageFolder(root, size=4)).stream(EpochBatches(3, 3, 0), seed=0).batch(0)[0].shape == \
        (3, 3, 4, 4)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        LazyImageFolder(tmp_path / "missing")


def test_open_dataset_streams_converted_and_external_sets_and_keeps_small_ones_in_memory(tmp_path):
    assert isinstance(open_dataset("digits", train=False), ImageData)
    convert_dataset("digits", tmp_path / "digits" / "test", train=False)
    streamed = open_dataset("digits", root=tmp_path, train=False)  # a converted named set is streamed
    assert isinstance(streamed, NpyImages) and len(streamed) == 450
    image_folder(tmp_path / "galaxy32" / "train")
    galaxies = open_dataset("galaxy32", root=tmp_path)
    assert isinstance(galaxies, LazyImageFolder) and galaxies[2][0].shape == (3, 32, 32)  # the set's side
    convert_dataset(galaxies, tmp_path / "galaxy32" / "test")
    assert isinstance(open_dataset("galaxy32", root=tmp_path, train=False), NpyImages)
    assert isinstance(open_dataset(tmp_path / "galaxy32" / "test"), NpyImages)
    assert isinstance(open_dataset(tmp_path / "galaxy32" / "test" / "images.npy"), NpyImages)
    with pytest.raises(FileNotFoundError, match="imagenet64 is not on this machine.*images.npy"):
        open_dataset("imagenet64", root=tmp_path)
    with pytest.raises(FileNotFoundError, match="neither a known name"):
        open_dataset(tmp_path / "nope")


def test_load_external_reads_only_the_kept_images_of_a_layout(tmp_path):
    from hybridflow.data import load_external

    convert_dataset("digits", tmp_path / "imagenet32" / "train")
    full = NpyImages(tmp_path / "imagenet32" / "train")
    few = load_external("imagenet32", root=tmp_path, limit=7, seed=1)
    assert isinstance(few, ImageData) and len(few) == 7 and few.classes == full.classes
    assert any(torch.equal(few.images[0], full[i][0]) for i in range(len(full)))
