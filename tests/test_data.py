"""Tests for hybridflow.data: layouts, validation, loaders, pixel shuffles."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from hybridflow.data import (
    GlobalShuffle,
    ImageData,
    LocalShuffle,
    as_images,
    check_labels,
    list_datasets,
    load_arrays,
    load_dataset,
    load_digits_data,
    load_image_folder,
    load_npz,
)

DATA_ROOT = Path(os.environ.get("HYBRIDFLOW_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture
def nchw() -> torch.Tensor:
    return torch.randint(0, 256, (5, 3, 6, 4), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)


# --------------------------------------------------------------------------- as_images layouts


def test_layouts_round_trip(nchw):
    nhwc = nchw.permute(0, 2, 3, 1).numpy()
    assert torch.equal(as_images(nchw), nchw)
    assert torch.equal(as_images(nchw.numpy()), nchw)
    assert torch.equal(as_images(nhwc), nchw)
    assert torch.equal(as_images(nhwc.astype(np.float32) / 255), nchw)
    assert torch.equal(as_images(nchw.double() / 255), nchw)
    assert torch.equal(as_images(nchw.float()), nchw)  # whole-number floats in 0..255
    assert torch.equal(as_images(nchw.to(torch.int32)), nchw)
    assert torch.equal(as_images(nhwc.astype(np.uint16)), nchw)
    assert as_images(nchw).dtype == torch.uint8 and as_images(nhwc).is_contiguous()


def test_grey_and_flat_layouts(nchw):
    grey = nchw[:, :1]
    assert torch.equal(as_images(grey[:, 0]), grey)  # (N, H, W)
    square = torch.randint(0, 256, (4, 1, 5, 5), dtype=torch.uint8)
    assert torch.equal(as_images(square.reshape(4, 25).numpy()), square)  # perfect square -> C=1
    assert torch.equal(as_images(nchw.reshape(5, -1), image_shape=(3, 6, 4)), nchw)
    assert torch.equal(as_images(grey[:1, 0]), grey[:1])  # (1, H, W): one grey image, same either way


@pytest.mark.parametrize(
    "x, kind, match",
    [
        (np.full((2, 1, 4, 4), np.nan, dtype=np.float32), ValueError, "NaN"),
        (np.full((2, 1, 4, 4), np.inf), ValueError, "infinite"),
        (np.full((2, 1, 4, 4), -0.5), ValueError, "negative"),
        (np.full((2, 1, 4, 4), 256), ValueError, "0..255"),
        (np.full((2, 1, 4, 4), -1, dtype=np.int8), ValueError, "0..255"),
        (np.full((2, 1, 4, 4), 300.0), ValueError, "exceed 255"),
        (np.full((2, 1, 4, 4), 2.5), ValueError, "not whole numbers"),
        (np.zeros(16), ValueError, "1-D"),
        (np.zeros((2, 1, 4, 4, 1)), ValueError, "5-D"),
        (np.zeros((2, 5, 4, 4)), ValueError, "channel"),
        (np.zeros((2, 4, 4, 2)), ValueError, "channel"),
        (np.zeros((0, 1, 4, 4)), ValueError, "empty"),
        (np.zeros((0, 64)), ValueError, "empty"),
        (np.zeros((28, 28, 3)), ValueError, r"x\[None\]"),  # single HWC image
        (np.zeros((3, 28, 28)), ValueError, r"x\[None\]"),  # single CHW image
        (np.zeros((28, 28)), ValueError, r"x\[None\]"),  # single HW image, 28 not square
        (np.zeros((4, 30)), ValueError, "image_shape"),
        (np.array([["a"]]), TypeError, "numeric"),
        (torch.zeros(2, 1, 4, 4, dtype=torch.bool), TypeError, "numeric"),
        (torch.zeros(2, 1, 4, 4, dtype=torch.complex64), TypeError, "numeric"),
        ([[0, 1], [2, 3]], TypeError, "numpy array or a torch tensor"),
    ],
)
def test_as_images_rejects(x, kind, match):
    with pytest.raises(kind, match=match):
        as_images(x)


def test_image_shape_errors(nchw):
    with pytest.raises(ValueError, match="needs"):
        as_images(nchw.reshape(5, -1), image_shape=(3, 5, 5))
    with pytest.raises(ValueError, match="channels"):
        as_images(nchw.reshape(5, -1), image_shape=(2, 6, 6))
    with pytest.raises(ValueError, match="expected"):
        as_images(nchw, image_shape=(3, 4, 6))


def test_check_labels():
    assert check_labels([0, 2, -1], 3).dtype == torch.int64
    assert check_labels(np.array([1.0, -1.0]), 2).tolist() == [1, -1]
    with pytest.raises(ValueError, match="2 labels for 3"):
        check_labels([0, 1], 3)
    with pytest.raises(ValueError, match=">= -1"):
        check_labels([0, -2], 2)
    with pytest.raises(ValueError, match="whole numbers"):
        check_labels([0.5, 1.0], 2)
    with pytest.raises(ValueError, match="1-D"):
        check_labels(np.zeros((2, 1)), 2)
    with pytest.raises(TypeError, match="encode"):
        check_labels(["cat", "dog"], 2)


# --------------------------------------------------------------------------- ImageData


def test_image_data_basics():
    data = ImageData(torch.zeros(6, 1, 4, 4, dtype=torch.uint8), [0, 1, 0, 1, -1, 1], ["a", "b"])
    assert len(data) == 6 and data.image_shape == (1, 4, 4) and data.num_classes == 2
    assert len(data.subset([0, 2])) == 2 and len(data.subset(data.labels >= 0)) == 5
    image, label = data.to_dataset()[1]
    assert image.shape == (1, 4, 4) and image.dtype == torch.uint8 and int(label) == 1
    assert ImageData(torch.zeros(2, 1, 4, 4)).labels.tolist() == [-1, -1]
    with pytest.raises(ValueError, match="no name"):
        ImageData(torch.zeros(2, 1, 4, 4), [0, 2], ["a", "b"])
    assert "n=6" in repr(data)


def test_split_stratified_and_seeded():
    data = load_digits_data()
    a, b = data.split(0.2, seed=1)
    assert len(a) + len(b) == len(data) and len(b) == round(0.2 * len(data))
    assert np.abs(np.bincount(b.labels.numpy()) - len(b) / 10).max() <= 1  # stratified
    a2, b2 = data.split(0.2, seed=1)
    assert torch.equal(b.images, b2.images)
    with pytest.raises(ValueError, match="between 0 and 1"):
        data.split(1.0)
    tiny = ImageData(torch.zeros(3, 1, 2, 2), [0, 1, 2])  # a class of one: falls back to random
    assert [len(p) for p in tiny.split(0.34)] == [2, 1]


# --------------------------------------------------------------------------- embedded digits


def test_digits():
    train, test = load_digits_data(train=True), load_digits_data(train=False)
    assert (len(train), len(test)) == (1347, 450) and train.image_shape == (1, 8, 8)
    assert train.images.dtype == torch.uint8 and int(train.images.max()) == 255
    assert train.classes == [str(i) for i in range(10)]
    assert torch.equal(load_digits_data().images, train.images)  # deterministic
    every = np.bincount(np.concatenate([train.labels.numpy(), test.labels.numpy()]))
    assert np.abs(np.bincount(test.labels.numpy()) - every * 0.25).max() <= 1  # stratified
    by_name = load_dataset("Digits", train=False, limit=50, seed=3)
    assert len(by_name) == 50 and torch.equal(by_name.images, load_dataset("digits", train=False, limit=50, seed=3).images)


def test_load_dataset_names(tmp_path):
    assert {"digits", "mnist", "fashionmnist", "cifar10", "svhn", "celeba"} <= set(list_datasets())
    with pytest.raises(ValueError, match="known: .*mnist"):
        load_dataset("imagenet")
    with pytest.raises(FileNotFoundError, match="download=True"):
        load_dataset("fashion-mnist", root=tmp_path)
    with pytest.raises(FileNotFoundError, match="looked in"):
        load_dataset("cifar10", root=tmp_path)
    with pytest.raises(ValueError, match="limit"):
        load_dataset("digits", limit=0)


# --------------------------------------------------------------------------- files


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


# --------------------------------------------------------------------------- shuffles


def _images(c=3, h=8, w=12, n=4) -> torch.Tensor:
    return torch.randint(0, 256, (n, c, h, w), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)


@pytest.mark.parametrize("make", [lambda s: GlobalShuffle(s, seed=2), lambda s: LocalShuffle(s, patch_size=4, seed=2)])
def test_shuffles_are_invertible_permutations(make):
    x = _images()
    shuffle = make((3, 8, 12))
    y = shuffle(x)
    assert y.dtype == torch.uint8 and not torch.equal(y, x)
    assert torch.equal(y.flatten(1).sort().values, x.flatten(1).sort().values)
    assert torch.equal(shuffle.inverse(y), x)
    assert torch.equal(make((3, 8, 12))(x), y)  # seeded
    # The same position permutation for every channel: an RGB pixel moves as a whole.
    pos = torch.arange(96, dtype=torch.float32).reshape(1, 1, 8, 12).expand(1, 3, 8, 12)
    moved = shuffle(pos)
    assert torch.equal(moved[:, 0], moved[:, 2])
    with pytest.raises(ValueError, match="built for images"):
        shuffle(x[:, :1])


def test_local_shuffle_moves_whole_patches():
    p, h, w = 4, 8, 12
    x = torch.randperm(h * w).reshape(1, 1, h, w)  # distinct values: every pixel traceable
    shuffle = LocalShuffle((1, h, w), patch_size=p, seed=5)

    def patches(t):
        return t.reshape(h // p, p, w // p, p).permute(0, 2, 1, 3).reshape(-1, p * p)

    src, out = patches(x[0, 0]), patches(shuffle(x)[0, 0])
    assert torch.equal(out, src[shuffle.patch_permutation][:, shuffle.pixel_permutation])
    # Independently of the attributes: each output patch is one input patch, reordered by one shared order.
    owner = [int((src == out[k, 0]).any(1).nonzero()) for k in range(len(out))]
    assert sorted(owner) == list(range(len(src)))
    order = [(src[owner[0]] == v).nonzero().item() for v in out[0]]
    assert all(torch.equal(out[k], src[owner[k]][order]) for k in range(len(out)))
    with pytest.raises(ValueError, match="divide"):
        LocalShuffle((1, 8, 12), patch_size=5)


def test_load_dataset_applies_shuffle():
    plain = load_dataset("digits", limit=20)
    local = load_dataset("digits", limit=20, shuffle="local", shuffle_patch=2, shuffle_seed=1)
    assert torch.equal(LocalShuffle((1, 8, 8), 2, seed=1).inverse(local.images), plain.images)
    glob = plain.permuted(GlobalShuffle((1, 8, 8), seed=0))
    assert torch.equal(load_dataset("digits", limit=20, shuffle="global").images, glob.images)
    with pytest.raises(ValueError, match="shuffle"):
        load_dataset("digits", shuffle="pixels")


# --------------------------------------------------------------------------- shared real data

needs_mnist = pytest.mark.skipif(not (DATA_ROOT / "MNIST" / "raw").is_dir(), reason="shared MNIST data absent")
needs_fashion = pytest.mark.skipif(not (DATA_ROOT / "FashionMNIST" / "raw").is_dir(), reason="shared FashionMNIST absent")
needs_cifar = pytest.mark.skipif(not (DATA_ROOT / "cifar10-test1000.npz").is_file(), reason="shared CIFAR-10 npz absent")


@needs_mnist
def test_mnist_shared():
    full = load_dataset("mnist", root=DATA_ROOT)  # reading the raw IDX files takes ~0.3 s
    assert len(full) == 60000 and full.image_shape == (1, 28, 28)
    assert abs(full.images.double().mean().item() - 33.32) < 0.01
    small = load_dataset("MNIST", root=DATA_ROOT, train=False, limit=500, seed=0)
    assert len(small) == 500 and small.num_classes == 10
    assert torch.equal(small.images, load_dataset("mnist", root=DATA_ROOT, train=False, limit=500).images)


@needs_fashion
def test_fashion_mnist_shared():
    test = load_dataset("fashion-mnist", root=DATA_ROOT, train=False)
    assert len(test) == 10000 and np.bincount(test.labels.numpy()).tolist() == [1000] * 10
    assert abs(test.images.double().mean().item() / 255 - 0.2860) < 0.01
    assert test.classes[0] == "T-shirt/top"
    assert len(load_dataset("fashion_mnist", root=DATA_ROOT, limit=100)) == 100


@needs_cifar
def test_cifar10_npz_shared():
    test = load_dataset("cifar10", root=DATA_ROOT, train=False)
    assert len(test) == 1000 and test.image_shape == (3, 32, 32) and test.classes[0] == "airplane"
    raw = np.load(DATA_ROOT / "cifar10-test1000.npz")
    assert torch.equal(test.images, torch.from_numpy(raw["x"]).permute(0, 3, 1, 2))
    train = load_dataset("CIFAR-10", root=DATA_ROOT, train=True, limit=256, shuffle="local", shuffle_patch=8)
    assert len(train) == 256 and train.labels.max() <= 9
