"""A user's Dataset items become canonical pixels, and bad items get errors that name the problem."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from hybridflow.data import ItemCollate, check_first_item, image_item, item_label
from hybridflow.data.items import dataset_labels


def test_every_image_kind_gives_the_same_chw_pixels():
    hwc = np.random.default_rng(0).integers(0, 256, (5, 4, 3), dtype=np.uint8)
    chw = torch.from_numpy(hwc).permute(2, 0, 1)
    for image in (hwc, chw.contiguous(), Image.fromarray(hwc), chw.to(torch.int64)):
        x, y = image_item((image, 7))
        assert x.dtype == torch.uint8 and torch.equal(x, chw) and y == 7
    grey = hwc[:, :, 0]
    for image in (grey, Image.fromarray(grey), torch.from_numpy(grey)):
        assert torch.equal(image_item((image, -1))[0], torch.from_numpy(grey)[None])


def test_pil_modes_with_alpha_or_palette_become_rgb_and_wide_modes_are_refused():
    rgba = Image.new("RGBA", (3, 2), (10, 20, 30, 40))
    assert image_item((rgba, 0))[0][:, 0, 0].tolist() == [10, 20, 30]
    assert image_item((Image.new("LA", (3, 2)), 0))[0].shape == (1, 2, 3)
    with pytest.raises(TypeError, match="more than 8 bits"):
        image_item((Image.new("I;16", (3, 2)), 0))


@pytest.mark.parametrize("image, error, match", [
    (torch.rand(3, 4, 4), TypeError, "float32 tensor.*uint8 pixels"),
    (np.random.rand(4, 4, 3), TypeError, "float array.*ToTensor"),
    (torch.zeros(4, 4, 4, dtype=torch.uint8), ValueError, "4 channels"),
    (np.zeros((4, 4, 2), dtype=np.uint8), ValueError, "2 channels"),
    (np.zeros((3, 4, 4), dtype=np.uint8), ValueError, r"must be \(H, W, C\)"),
    (torch.zeros(4, 4, 3, dtype=torch.uint8), ValueError, r"looks like \(H, W, C\)"),
    (np.full((4, 4), 300), ValueError, "0..255"),
    ("cat.png", TypeError, "got str"),
])
def test_bad_images_are_refused_with_what_is_wrong(image, error, match):
    with pytest.raises(error, match=match):
        image_item((image, 0))


def test_items_must_be_pairs_with_integer_labels():
    with pytest.raises(TypeError, match=r"\(image, label\) pairs, got a Tensor"):
        image_item(torch.zeros(1, 4, 4, dtype=torch.uint8))
    with pytest.raises(TypeError, match="of length 3"):
        image_item((torch.zeros(1, 4, 4, dtype=torch.uint8), 0, 1))
    for label, error in [(None, TypeError), (1.5, TypeError), ("cat", TypeError), (True, TypeError),
                         (torch.tensor([1, 2]), TypeError), (-2, ValueError)]:
        with pytest.raises(error, match="label"):
            item_label(label)
    assert item_label(np.int32(4)) == 4 and item_label(torch.tensor(-1)) == -1


def test_first_item_check_names_the_dataset_and_collate_refuses_mixed_sizes():
    with pytest.raises(TypeError, match="dataset Mine: first item: image is a torch.float32"):
        check_first_item((torch.rand(1, 2, 2), 0), "dataset Mine")
    collate = ItemCollate()
    items = [(np.zeros((4, 4), dtype=np.uint8), 0), (np.zeros((5, 4), dtype=np.uint8), 1)]
    with pytest.raises(ValueError, match=r"differ in shape.*\(1, 5, 4\).*\(1, 4, 4\)"):
        collate(items)
    x, y = ItemCollate((1, 4, 4))(items[:1] * 3)
    assert x.shape == (3, 1, 4, 4) and y.dtype == torch.int64 and y.tolist() == [0, 0, 0]


class _Labelled(torch.utils.data.Dataset):
    """Items whose labels are held as ``labels`` (or ``targets``), or only inside the items."""

    def __init__(self, labels, attribute=None):
        self.items = [(np.full((2, 2), i, dtype=np.uint8), y) for i, y in enumerate(labels)]
        self.reads = 0
        if attribute is not None:
            setattr(self, attribute, labels)

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        self.reads += 1
        return self.items[i]


def test_dataset_labels_reads_the_attribute_when_held_else_every_item():
    for attribute in ("labels", "targets"):
        held = _Labelled([3, -1, 0], attribute)
        assert dataset_labels(held).tolist() == [3, -1, 0] and held.reads == 0  # images never touched
    plain = _Labelled([2, -1, 1, 1])
    labels = dataset_labels(plain)
    assert labels.dtype == torch.int64 and labels.tolist() == [2, -1, 1, 1] and plain.reads == 4
    with pytest.raises(ValueError, match="holds 3 items but 2 labels"):
        dataset_labels(_short())
    with pytest.raises(TypeError, match="labels are torch.float64; expected integers"):
        dataset_labels(_Labelled([0.5, 1.0], "targets"))
    with pytest.raises(ValueError, match="label must be >= -1"):
        dataset_labels(_Labelled([0, -3], "targets"))


def _short() -> _Labelled:
    dataset = _Labelled([0, 1, 2])
    dataset.labels = [0, 1]
    return dataset
