"""Tests for hybridflow.data.sources: named datasets, external datasets."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from hybridflow.data import (
    EXTERNAL_DATASETS,
    GlobalShuffle,
    LocalShuffle,
    UnknownDatasetError,
    check_dataset_name,
    data_root,
    dataset_key,
    list_datasets,
    load_dataset,
    load_digits_data,
    load_external,
)

DATA_ROOT = Path(os.environ.get("HYBRIDFLOW_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))


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


def test_load_dataset_applies_shuffle():
    plain = load_dataset("digits", limit=20)
    local = load_dataset("digits", limit=20, shuffle="local", shuffle_patch=2, shuffle_seed=1)
    assert torch.equal(LocalShuffle((1, 8, 8), 2, seed=1).inverse(local.images), plain.images)
    glob = plain.permuted(GlobalShuffle((1, 8, 8), seed=0))
    assert torch.equal(load_dataset("digits", limit=20, shuffle="global").images, glob.images)
    with pytest.raises(ValueError, match="shuffle"):
        load_dataset("digits", shuffle="pixels")


def test_unknown_names_raise_one_error_type():
    with pytest.raises(UnknownDatasetError, match="known: .*mnist"):
        load_dataset("imagenet")
    check_dataset_name("Fashion-MNIST")
    check_dataset_name("ImageNet32")  # external
    check_dataset_name("noise", extra=("noise",))
    with pytest.raises(UnknownDatasetError, match="unknown dataset 'svhm': known datasets are .*galaxy32.*noise"):
        check_dataset_name("svhm", extra=("noise",))


def test_check_dataset_name_accepts_paths(tmp_path):
    check_dataset_name(str(tmp_path))
    with pytest.raises(UnknownDatasetError, match="path to an .npz"):
        check_dataset_name(str(tmp_path / "absent.npz"))


def test_external_dataset_from_files(tmp_path):
    base = tmp_path / "galaxy32"
    base.mkdir()
    x = np.random.default_rng(0).integers(0, 256, (30, 32, 32, 3), dtype=np.uint8)
    np.savez(base / "train.npz", x=x, y=np.arange(30) % 2)
    train = load_external("galaxy32", root=tmp_path, train=True)
    assert len(train) == 30 and train.image_shape == (3, 32, 32)
    # no test split on disk: a fixed 10% of the training file
    assert len(load_external("Galaxy-32", root=tmp_path, train=False)) == 3
    np.savez(base / "test.npz", x=x[:7], y=np.zeros(7, dtype=np.int64))
    assert len(load_external("galaxy32", root=tmp_path, train=False)) == 7
    assert len(load_external("galaxy32", root=tmp_path, train=True, limit=5, seed=0)) == 5


def test_missing_external_dataset_says_where_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="cannot be downloaded automatically") as error:
        load_external("imagenet32", root=tmp_path)
    assert str(tmp_path / "imagenet32") in str(error.value) and EXTERNAL_DATASETS["imagenet32"]["source"] in str(error.value)


def test_names_and_root():
    assert dataset_key("CIFAR_10") == "cifar10" and dataset_key("Fashion MNIST") == "fashionmnist"
    assert data_root("~/x") == os.path.expanduser("~/x")
    assert not set(EXTERNAL_DATASETS) & set(list_datasets())


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
