"""Pixel scaling: input layouts, pixels taken as they are, min-max scaling per feature or globally."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hybridflow.estimators.scaling import SCALINGS, PixelScaling, image_values, infer_image_shape
from tests.estimators.common import tiny


# --------------------------------------------------------------------------- the scaling functions


def test_image_shape_of_flattened_input():
    assert infer_image_shape(np.zeros((5, 64))) == (1, 8, 8)  # a square number of features
    assert infer_image_shape(np.zeros((5, 12))) == (1, 1, 12)  # else one row
    assert infer_image_shape(np.zeros((5, 12)), (3, 2, 2)) == (3, 2, 2)  # an explicit shape wins
    assert infer_image_shape(np.zeros((5, 4, 4))) is None  # images carry their shape
    with pytest.raises(ValueError, match="1 feature"):
        infer_image_shape(np.zeros((5, 1)))
    with pytest.raises(ValueError, match="channels"):
        infer_image_shape(np.zeros((5, 8)), (2, 2, 2))


def test_image_values_keep_the_values():
    with pytest.raises(ValueError, match="channel"):
        image_values(np.zeros((2, 4, 4, 2)), None)  # no axis of 1 or 3 channels
    nhwc = np.arange(2 * 4 * 4 * 3).reshape(2, 4, 4, 3) / 7 - 5  # no pixels: the values stay as they are
    values = image_values(nhwc, None)
    assert values.shape == (2, 3, 4, 4) and values.dtype == torch.float64
    np.testing.assert_array_equal(values.numpy(), nhwc.transpose(0, 3, 1, 2))
    flat = image_values(np.arange(8.0).reshape(2, 4), (1, 2, 2))
    np.testing.assert_array_equal(flat.numpy(), np.arange(8.0).reshape(2, 1, 2, 2))
    assert image_values(np.ones((2, 4), dtype=bool), (1, 2, 2)).dtype == torch.uint8
    with pytest.raises(ValueError, match="needs 4"):
        image_values(np.zeros((2, 5)), (1, 2, 2))


def test_pixel_scaling_modes():
    assert SCALINGS == ("auto", "pixels", "feature", "global")
    pixels = torch.tensor([[[[0.0, 255.0], [3.0, 4.0]]]])
    assert PixelScaling.fit(pixels).mode == "pixels" and PixelScaling.fit(pixels).offset is None
    np.testing.assert_array_equal(PixelScaling.fit(pixels).to_pixels(pixels).numpy(), pixels.numpy())
    with pytest.raises(ValueError, match="fitted on pixel values"):
        PixelScaling.fit(pixels).to_pixels(pixels * 2)  # 510 is no pixel value
    with pytest.raises(ValueError, match="does not hold pixels"):
        PixelScaling.fit(pixels - 1, "pixels")
    with pytest.raises(ValueError, match="scaling must be one of"):
        PixelScaling.fit(pixels, "zscore")
    # Two features with unrelated ranges, and one constant feature (scale 0: pixel 0).
    table = torch.tensor([[0.0, -100.0, 7.0], [1.0, 100.0, 7.0], [0.25, 60.0, 7.0]]).reshape(3, 1, 1, 3)
    feature = PixelScaling.fit(table, tabular=True)
    assert feature.mode == "feature" and feature.offset.shape == (1, 1, 3)
    assert feature.to_pixels(table).flatten(1).tolist() == [[0, 0, 0], [255, 255, 0], [64, 204, 0]]
    assert feature.to_pixels(table * 10).flatten(1).tolist()[1] == [255, 255, 0]  # beyond the range: clipped
    globally = PixelScaling.fit(table)  # image-shaped: one range for every value
    assert globally.mode == "global" and globally.offset.shape == () and float(globally.offset) == -100.0
    assert globally.to_pixels(table).flatten(1).tolist()[1] == [129, 255, 136]
    assert PixelScaling.fit(table, "global", tabular=True).mode == "global"


# --------------------------------------------------------------------------- through the estimator


def test_layouts_give_the_same_predictions(digits, fitted_digits):
    x = digits[2][:10]  # (N, 1, 8, 8) uint8
    reference = fitted_digits.predict_proba(x)
    layouts = [x[:, 0], x.transpose(0, 2, 3, 1), x.reshape(10, 64), x / 255.0, torch.from_numpy(x)]
    for layout in layouts:
        np.testing.assert_allclose(fitted_digits.predict_proba(layout), reference, atol=1e-12)


def test_tabular_floats_are_min_max_scaled_per_feature():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3)) * [1.0, 100.0, 0.01] + [0.0, -50.0, 3.0]
    y = (x[:, 0] > 0).astype(int)
    clf = tiny().fit(x, y)
    assert clf.image_shape_ == (1, 1, 3) and clf.scaling_ == "feature"
    assert clf.model_.backbone.patch_size == (1, 1)  # the MixerFlow patch fell back to divide (1, 3)
    np.testing.assert_allclose(clf.offset_, x.min(0).reshape(1, 1, 3))
    np.testing.assert_allclose(clf.scale_ * (x.max(0) - x.min(0)).reshape(1, 1, 3), 255.0)
    far = x[:4] * 1000.0  # beyond the fitted range: clipped to 0..255, not an error
    assert clf.predict(far).shape == (4,) and np.isfinite(clf.score_samples(far)).all()
    images = tiny().fit(rng.normal(size=(60, 1, 4, 4)), y)  # normalised images: one scale for all pixels
    assert images.scaling_ == "global" and images.offset_.shape == ()
