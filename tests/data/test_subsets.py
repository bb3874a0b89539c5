"""Tests for hybridflow.data.subsets: seeded subsets and label hiding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hybridflow.data import ImageData, keep_labels, random_subset, subset_indices


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
