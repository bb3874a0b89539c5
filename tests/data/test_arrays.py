"""Tests for hybridflow.data.arrays: layouts, validation, ImageData."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hybridflow.data import ImageData, as_images, check_labels, load_digits_data


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


def test_float_range_fixes_how_zero_one_floats_read():
    from hybridflow.data import float_range

    only_zero_one = np.zeros((1, 1, 2, 2))
    only_zero_one[0, 0, 0, 0] = 1.0
    assert as_images(only_zero_one).flatten().tolist() == [255, 0, 0, 0]  # auto: a maximum <= 1 reads 0-1
    assert as_images(only_zero_one, floats="unit").flatten().tolist() == [255, 0, 0, 0]
    assert as_images(only_zero_one, floats="pixels").flatten().tolist() == [1, 0, 0, 0]
    assert as_images(np.full((1, 1, 2, 2), 7), floats="unit").flatten().tolist() == [7] * 4  # integers are pixels
    with pytest.raises(ValueError, match="0-1 floats were expected"):
        as_images(np.full((1, 1, 2, 2), 2.0), floats="unit")
    with pytest.raises(ValueError, match="whole-number 0..255 pixel values \\(the range fixed at fit\\)"):
        as_images(np.full((1, 1, 2, 2), 0.5), floats="pixels")
    with pytest.raises(ValueError, match="floats must be one of"):
        as_images(only_zero_one, floats="percent")
    assert [float_range(np.array(v)) for v in ([0.0, 0.5], [0.0, 255.0], [3, 4])] == ["unit", "pixels", "auto"]


def test_three_dimensional_input_that_matches_a_grey_shape_is_a_batch():
    assert as_images(np.zeros((3, 8, 8), np.uint8), (1, 8, 8)).shape == (3, 1, 8, 8)  # 3 grey images, not RGB
    assert as_images(np.zeros((5, 6, 3), np.uint8), (1, 6, 3)).shape == (5, 1, 6, 3)  # 3 pixels wide
    with pytest.raises(ValueError, match="ambiguous"):
        as_images(np.zeros((3, 8, 8), np.uint8))  # no shape to tell
    with pytest.raises(ValueError, match="ambiguous"):
        as_images(np.zeros((3, 8, 8), np.uint8), (3, 8, 8))  # one RGB image: pass x[None]
