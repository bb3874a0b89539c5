"""Cutting images into patches: the exact pixels, the labels, the sizes that do not fit, DataSpec(patches=)."""

from __future__ import annotations

import pytest
import torch

from hybridflow.data import DataSpec, ImageData
from hybridflow.data.patches import PatchSizeError, check_patch_size, image_patches, patch_data


def test_patches_hold_every_pixel_once_in_reading_order():
    x = torch.randint(0, 256, (3, 2, 8, 12), dtype=torch.uint8)
    p = image_patches(x, 4)
    assert p.shape == (3 * 2 * 3, 2, 4, 4)
    # patch k of image i is the block at row k // 3, column k % 3
    for i in range(3):
        for k in range(6):
            r, c = divmod(k, 3)
            assert torch.equal(p[i * 6 + k], x[i, :, 4 * r:4 * r + 4, 4 * c:4 * c + 4])
    assert sorted(p.flatten().tolist()) == sorted(x.flatten().tolist())


def test_patch_data_repeats_each_label_per_patch():
    data = ImageData(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.tensor([3, -1]))
    patched = patch_data(data, 2)
    assert patched.labels.tolist() == [3, 3, 3, 3, -1, -1, -1, -1] and patched.image_shape == (1, 2, 2)


@pytest.mark.parametrize("size", [3, 0, -2, 2.5, True])
def test_a_size_that_does_not_divide_the_image_is_named(size):
    with pytest.raises(PatchSizeError, match=rf"patch size {size!r} must be .* dividing the image size 8x8: "
                                             r"choose one of 1, 2, 4, 8"):
        check_patch_size(size, (1, 8, 8))


def test_data_spec_patches_both_splits_and_round_trips():
    spec = DataSpec("digits", patches=4)
    train, test = spec.load(train=True), spec.load(train=False)
    whole = DataSpec("digits").load(train=False)
    assert test.image_shape == (1, 4, 4) and len(test) == 4 * len(whole)
    assert torch.equal(test.images[:4], image_patches(whole.images[:1], 4))
    assert len(train) == 4 * len(DataSpec("digits").load(train=True))
    assert DataSpec.from_dict(spec.to_dict()).patches == 4
    assert len(spec.open(train=False)) == len(test)  # patches are cut in memory, never streamed
