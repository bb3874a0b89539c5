"""The .npy layout: written chunk by chunk, read image by image, refused when damaged."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from hybridflow.data import NPY_IMAGES, NpyImages, NpyWriter, is_npy_layout


@pytest.fixture
def layout(tmp_path):
    images = torch.randint(0, 256, (10, 3, 4, 5), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(10) % 3 - 1
    with NpyWriter(tmp_path / "set", 10, (3, 4, 5), classes=["a", "b"], source="test") as writer:
        writer.write(images[:4], labels[:4])
        writer.write(images[4:], labels[4:])
    return tmp_path / "set", images, labels


def test_written_layout_reads_back_exactly_and_maps_with_numpy(layout):
    folder, images, labels = layout
    data = NpyImages(folder)
    assert is_npy_layout(folder) and len(data) == 10 and data.image_shape == (3, 4, 5) and data.classes == ["a", "b"]
    assert torch.equal(data[7][0], images[7]) and data[7][1] == int(labels[7]) and data[-1][1] == int(labels[9])
    batch = data.__getitems__([9, 0, 9])
    assert torch.equal(torch.stack([x for x, _ in batch]), images[[9, 0, 9]])
    assert [y for _, y in batch] == labels[[9, 0, 9]].tolist()
    assert torch.equal(data.to_image_data([2, 3]).images, images[2:4])
    assert np.array_equal(np.load(folder / NPY_IMAGES, mmap_mode="r"), images.numpy())
    copy = pickle.loads(pickle.dumps(data))  # as DataLoader workers get it: without the open file
    assert copy._fd is None and torch.equal(copy[5][0], images[5])
    with pytest.raises(IndexError, match="out of range for 10"):
        data[10]


def test_damaged_or_wrong_layouts_are_refused(layout, tmp_path):
    folder, _, _ = layout
    with open(folder / NPY_IMAGES, "r+b") as f:
        f.truncate(200)
    with pytest.raises(ValueError, match="truncated"):
        NpyImages(folder)
    np.save(folder / NPY_IMAGES, np.zeros((2, 4, 4, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"uint8 images \(N, C, H, W\)"):
        NpyImages(folder)
    np.save(folder / NPY_IMAGES, np.zeros((2, 1, 4, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="float32"):
        NpyImages(folder)
    with pytest.raises(FileNotFoundError, match="hybridflow data convert"):
        NpyImages(tmp_path / "nothing")


def test_an_incomplete_or_failed_write_leaves_no_layout(tmp_path):
    writer = NpyWriter(tmp_path / "a", 5, (1, 2, 2))
    writer.write(np.zeros((3, 1, 2, 2), dtype=np.uint8))
    with pytest.raises(ValueError, match="only 3 of 5"):
        writer.close()
    assert not is_npy_layout(tmp_path / "a") and list((tmp_path / "a").iterdir()) == []
    with pytest.raises(RuntimeError):
        with NpyWriter(tmp_path / "b", 5, (1, 2, 2)) as writer:
            raise RuntimeError("decoding failed")
    assert list((tmp_path / "b").iterdir()) == []
    with NpyWriter(tmp_path / "c", 2, (1, 2, 2)) as writer:
        with pytest.raises(ValueError, match=r"expected uint8 images of shape \(B, 1, 2, 2\)"):
            writer.write(np.zeros((2, 2, 2, 1), dtype=np.uint8))
        writer.write(np.zeros((2, 1, 2, 2), dtype=np.uint8))
    assert NpyImages(tmp_path / "c").labels.tolist() == [-1, -1]
