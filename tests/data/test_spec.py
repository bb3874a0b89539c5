"""Tests for hybridflow.data.spec: one description of a dataset that loads either split."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hybridflow.data import DataSpec, GlobalShuffle, LocalShuffle, load_dataset


def test_known_name_with_subset_and_shuffle():
    spec = DataSpec("Digits", limit=30, seed=2, shuffle="local", shuffle_patch=2, shuffle_seed=1)
    data = spec.load(train=False)
    plain = load_dataset("digits", train=False, limit=30, seed=2)
    assert torch.equal(LocalShuffle((1, 8, 8), 2, seed=1).inverse(data.images), plain.images)
    assert torch.equal(spec.permutation((1, 8, 8))(plain.images), data.images)
    assert DataSpec("digits").permutation((1, 8, 8)) is None
    assert len(DataSpec("digits").load(train=True)) == 1347


def test_round_trip_through_a_dict():
    spec = DataSpec("digits", root="/data", limit=5, shuffle="global", shuffle_seed=3, size=32)
    saved = spec.to_dict()
    assert saved == dict(name="digits", root="/data", shuffle="global", shuffle_patch=4, shuffle_seed=3, size=32)
    again = DataSpec.from_dict(saved, limit=5)
    assert again == spec
    assert DataSpec.from_dict({}) == DataSpec("digits")
    assert isinstance(DataSpec.from_dict(saved).permutation((1, 8, 8)), GlobalShuffle)


def test_a_path_is_split_90_10(tmp_path):
    path = tmp_path / "set.npz"
    np.savez(path, x=np.zeros((50, 4, 4), dtype=np.uint8), y=np.arange(50) % 5)
    spec = DataSpec(str(path))
    assert (len(spec.load(train=True)), len(spec.load(train=False))) == (45, 5)


def test_missing_dataset_names_the_options_that_fix_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="--download") as error:
        DataSpec("mnist", root=str(tmp_path)).load(train=True)
    assert str(tmp_path) in str(error.value)
    with pytest.raises(FileNotFoundError, match="cannot be downloaded"):
        DataSpec("animefaces", root=str(tmp_path)).load(train=False)


def test_open_streams_a_converted_named_set_and_loads_subsets_in_memory(tmp_path):
    from hybridflow.data import ImageData, NpyImages, convert_dataset

    convert_dataset("digits", tmp_path / "digits" / "train")
    assert isinstance(DataSpec("digits", root=str(tmp_path)).open(train=True), NpyImages)
    assert isinstance(DataSpec("digits", root=str(tmp_path), limit=20).open(train=True), ImageData)
    assert isinstance(DataSpec("digits", root=str(tmp_path)).open(train=False), ImageData)  # test not converted
