"""Tests for hybridflow.data.subsets: seeded subsets and label hiding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hybridflow.data import ImageData, keep_labels, random_subset, subset_indices
from hybridflow.data.subsets import ClassSelectionError, ClassSubset, parse_classes, select_classes


def _data(n: int = 40) -> ImageData:
    images = torch.arange(n, dtype=torch.uint8).reshape(n, 1, 1, 1).expand(n, 1, 2, 2)
    return ImageData(images, np.arange(n) % 4)


def test_random_subset_is_seeded_sorted_and_optional():
    data = _data()
    a, b = random_subset(data, 10, seed=3), random_subset(data, 10, seed=3)
    assert len(a) == 10 and torch.equal(a.images, b.images)
    order = a.images[:, 0, 0, 0]
    assert torch.equal(order, order.sort().values)  # dataset order kept
    assert not torch.equal(random_subset(data, 10, seed=4).images, a.images)
    assert random_subset(data, None) is data and random_subset(data, 40) is data
    assert subset_indices(40, None, 0) is None
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="limit"):
            random_subset(data, bad)


def test_keep_labels_keeps_a_stratified_fraction():
    data = _data()
    semi = keep_labels(data, 0.5, seed=0)
    kept = semi.labels[semi.labels >= 0]
    assert np.bincount(kept.numpy()).tolist() == [5, 5, 5, 5]
    assert torch.equal(semi.labels[semi.labels >= 0], data.labels[semi.labels >= 0])  # kept labels unchanged
    assert torch.equal(semi.images, data.images) and semi.classes == data.classes
    assert torch.equal(keep_labels(data, 0.5, seed=0).labels, semi.labels)  # seeded
    assert int((keep_labels(data, 0.001, seed=0).labels >= 0).sum()) == 4  # at least one per class


@pytest.mark.parametrize("text, classes", [("0-4", (0, 1, 2, 3, 4)), ("0,1,2,3,4", (0, 1, 2, 3, 4)),
                                           (" 7, 0-2 ,2", (0, 1, 2, 7)), ("3", (3,)), ([5, 5, 1], (1, 5)), (2, (2,))])
def test_parse_classes(text, classes):
    assert parse_classes(text) == classes


@pytest.mark.parametrize("bad, words", [("", "names no class"), ("4-1", "range '4-1' is empty"),
                                        ("0,b", "'b' is not a class label"), ([-1], "labels are >= 0"),
                                        ([1.5], "integer labels"), ([True], "integer labels"), ([], "names no class")])
def test_parse_classes_names_the_mistake(bad, words):
    with pytest.raises(ClassSelectionError, match=words):
        parse_classes(bad)


def test_select_classes_keeps_labels_and_names_and_refuses_what_is_absent():
    data = _data()  # labels 0..3, no class names
    kept = select_classes(data, [1, 3])
    assert kept.labels.tolist() == [1, 3] * 10 and torch.equal(kept.images, data.images[data.labels % 2 == 1])
    with pytest.raises(ClassSelectionError, match="the dataset has no class 4: its classes are 0, 1, 2, 3"):
        select_classes(data, [3, 4])
    named = ImageData(data.images[:4], [0, 0, 1, 1], ["cat", "dog", "eel"])
    with pytest.raises(ClassSelectionError, match="holds no image of the classes \\[2\\]"):
        select_classes(named, [2], "pets")  # a named class with no image in this split
    with pytest.raises(ClassSelectionError, match="0 \\(cat\\), 1 \\(dog\\)"):
        select_classes(named, [5])
    with pytest.raises(ClassSelectionError, match="no labelled images"):
        select_classes(ImageData(data.images), [0])


def test_class_subset_needs_the_labels_up_front():
    from torch.utils.data import TensorDataset

    with pytest.raises(ClassSelectionError, match="does not hold its labels up front"):
        ClassSubset(TensorDataset(torch.zeros(2, 1, 2, 2)), [0])
