"""Tests for hybridflow.data.spec: one description of a dataset that loads either split."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hybridflow.data import DataSpec, GlobalShuffle, LocalShuffle, load_dataset
from hybridflow.data.subsets import ClassSelectionError, ClassSubset


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
    assert saved == dict(name="digits", root="/data", shuffle="global", shuffle_patch=4, shuffle_seed=3, size=32,
                         classes=None, patches=None)
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


def test_classes_select_both_splits_keep_labels_and_survive_the_dict():
    spec = DataSpec("digits", classes="0-4")
    train, test = spec.load(train=True), spec.load(train=False)
    assert sorted(train.labels.unique().tolist()) == [0, 1, 2, 3, 4]
    assert sorted(test.labels.unique().tolist()) == [0, 1, 2, 3, 4]
    assert (len(train), len(test)) == (675, 226) and train.num_classes == 10  # labels and class names kept
    high = DataSpec("digits", classes=[9, 5, 6, 7, 8]).load(train=False)
    assert high.labels.min() == 5 and len(high) == 224  # not renumbered to 0-4
    saved = spec.to_dict()
    assert saved["classes"] == [0, 1, 2, 3, 4]
    assert DataSpec.from_dict(saved) == spec and DataSpec.from_dict(saved, classes=None).classes is None


def test_limit_draws_from_the_selected_classes():
    data = DataSpec("digits", classes=[3], limit=20, seed=1).load(train=True)
    assert len(data) == 20 and set(data.labels.tolist()) == {3}
    again = DataSpec("digits", classes=[3], limit=20, seed=1).open(train=True)  # limit: loaded in memory
    assert torch.equal(again.images, data.images)


def test_unknown_class_or_empty_selection_is_refused_by_name():
    with pytest.raises(ClassSelectionError, match="no class 10.*0, 1, 2"):
        DataSpec("digits", classes=[4, 10]).load(train=False)
    with pytest.raises(ClassSelectionError, match="names no class"):
        DataSpec("digits", classes="")
    with pytest.raises(ClassSelectionError, match="'a' is not a class label"):
        DataSpec("digits", classes="0,a")
    with pytest.raises(ClassSelectionError, match="no class 99"):
        DataSpec.from_dict({"name": "digits"}, classes=[3, 99]).load(train=True)


def test_open_streams_the_selected_classes_of_a_converted_set(tmp_path):
    from hybridflow.data import convert_dataset

    convert_dataset("digits", tmp_path / "digits" / "train")
    spec = DataSpec("digits", root=str(tmp_path), classes="5-9")
    streamed = spec.open(train=True)
    assert isinstance(streamed, ClassSubset)
    in_memory = spec.load(train=True)
    assert len(streamed) == len(in_memory) == 672
    assert torch.equal(streamed.labels, in_memory.labels) and streamed.labels.min() == 5
    assert torch.equal(streamed.to_image_data([0, 3]).images, in_memory.images[[0, 3]])
    assert torch.equal(torch.stack([x for x, _ in streamed.__getitems__([1, 2])]), in_memory.images[1:3])
    assert isinstance(spec.open(train=False), type(in_memory))  # test split not converted: selected in memory
    assert set(spec.open(train=False).labels.tolist()) == {5, 6, 7, 8, 9}
