"""Tests for hybridflow.data.files: .npz files, image folders, path splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from hybridflow.data import load_arrays, load_image_folder, load_npz, load_path


def test_npz(tmp_path, nchw):
    path = tmp_path / "set.npz"
    np.savez(path, x=nchw.permute(0, 2, 3, 1).numpy(), y=np.arange(5), classes=np.array(list("abcde")))
    data = load_npz(path)
    assert torch.equal(data.images, nchw) and data.labels.tolist() == list(range(5)) and data.classes == list("abcde")
    np.savez(tmp_path / "nolabels.npz", x=nchw.numpy())
    assert load_npz(tmp_path / "nolabels.npz").labels.tolist() == [-1] * 5
    np.savez(tmp_path / "bad.npz", images=nchw.numpy())
    with pytest.raises(ValueError, match="no 'x'"):
        load_npz(tmp_path / "bad.npz")
    assert load_arrays(nchw.reshape(5, -1).numpy(), image_shape=(3, 6, 4)).image_shape == (3, 6, 4)


def _write_pngs(root: Path, sizes: dict[str, list[tuple[int, int]]], mode: str) -> None:
    from PIL import Image

    for name, shapes in sizes.items():
        (root / name).mkdir(parents=True)
        for i, (w, h) in enumerate(shapes):
            Image.new(mode, (w, h), color=40 * (i + 1) if mode == "L" else (10 * i, 20, 30)).save(root / name / f"{i}.png")


def test_image_folder(tmp_path):
    _write_pngs(tmp_path / "grey", {"cat": [(6, 4)] * 2, "dog": [(6, 4)]}, "L")
    data = load_image_folder(tmp_path / "grey")
    assert data.classes == ["cat", "dog"] and data.labels.tolist() == [0, 0, 1]
    assert data.image_shape == (1, 4, 6) and data.images[1].unique().tolist() == [80]
    assert load_image_folder(tmp_path / "grey", channels="RGB").image_shape == (3, 4, 6)
    _write_pngs(tmp_path / "mixed", {"a": [(6, 4), (8, 8)]}, "RGB")
    with pytest.raises(ValueError, match="differ in size"):
        load_image_folder(tmp_path / "mixed")
    resized = load_image_folder(tmp_path / "mixed", size=4)
    assert resized.image_shape == (3, 4, 4) and resized.images[1, :, 0, 0].tolist() == [10, 20, 30]
    assert load_image_folder(tmp_path / "mixed", size=(5, 3), channels=1).image_shape == (1, 5, 3)
    with pytest.raises(FileNotFoundError):
        load_image_folder(tmp_path / "absent")


def test_load_path_is_a_fixed_stratified_split(tmp_path):
    path = tmp_path / "set.npz"
    np.savez(path, x=np.arange(40 * 16, dtype=np.uint8).reshape(40, 4, 4), y=np.arange(40) % 2)
    train, test = load_path(path, train=True), load_path(path, train=False)
    assert (len(train), len(test)) == (36, 4)
    assert np.bincount(test.labels.numpy()).tolist() == [2, 2]  # stratified
    # disjoint and together the whole file
    seen = torch.cat([train.images, test.images]).flatten(1)[:, 0].sort().values
    assert torch.equal(seen, load_npz(path).images.flatten(1)[:, 0].sort().values)
    assert torch.equal(load_path(path, train=False).images, test.images)  # fixed
    limited = load_path(path, train=True, limit=10, seed=1)
    assert len(limited) == 10 and torch.equal(limited.images, load_path(path, limit=10, seed=1).images)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_path(tmp_path / "absent.npz")


def test_load_path_reads_what_data_convert_wrote(tmp_path):
    from hybridflow.data import convert_dataset, load_digits_data

    convert_dataset("digits", tmp_path / "one", train=False)  # one split: split 90/10 like an .npz
    test = load_digits_data(train=False)
    both = load_path(tmp_path / "one", train=True), load_path(tmp_path / "one", train=False)
    assert [len(d) for d in both] == [405, 45] and both[0].image_shape == (1, 8, 8)
    assert sorted(torch.cat([d.images for d in both]).flatten(1).sum(1).tolist()) == \
        sorted(test.images.flatten(1).sum(1).tolist())  # the same 450 images
    convert_dataset("digits", tmp_path / "root" / "train", train=True)
    convert_dataset("digits", tmp_path / "root" / "test", train=False)
    whole = load_path(tmp_path / "root", train=False)  # a root with both splits: the split asked for, whole
    assert torch.equal(whole.images, test.images) and torch.equal(whole.labels, test.labels)
    assert len(load_path(tmp_path / "root", train=True, limit=100)) == 100


def test_load_npz_names_a_file_that_is_not_an_archive(tmp_path):
    png = tmp_path / "picture.npz"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    with pytest.raises(ValueError, match="not a readable .npz dataset") as error:
        load_npz(png)
    assert "pickle" not in str(error.value)
    np.save(tmp_path / "bare.npy", np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(ValueError, match="one array, not an .npz archive"):
        load_npz(tmp_path / "bare.npy")
