"""The classifier's input validation: what fit learns from X and y, and what later calls check against it."""

from __future__ import annotations

import numpy as np
import pytest

from hybridflow.estimators import HybridFlowClassifier


def test_fit_learns_the_shape_and_the_value_map_and_later_calls_keep_them():
    clf = HybridFlowClassifier()
    rows = np.array([[0.0, -2.0, 5.0], [1.0, 2.0, 5.0]])
    pixels = clf._images(rows, reset=True)
    assert clf.image_shape_ == (1, 1, 3) and clf.n_features_in_ == 3 and clf.scaling_ == "feature"
    assert pixels.flatten(1).tolist() == [[0, 0, 0], [255, 255, 0]]  # a constant feature maps to 0
    clf.classes_ = np.array([0, 1])  # _images checks later input against a fitted estimator
    clf.model_ = object()
    again = clf._images(np.array([[0.5, 4.0, 7.0]]), reset=False)  # the fitted map, clipped
    assert again.flatten(1).tolist() == [[128, 255, 0]]
    with pytest.raises(ValueError, match="X has 2 features, but HybridFlowClassifier is expecting 3"):
        clf._images(np.zeros((1, 2)), reset=False)


def test_labels_encode_against_the_first_fits_classes():
    clf = HybridFlowClassifier()
    assert clf._labels(np.array(["b", "a", "-1"]), 3, None, first=True).tolist() == [2, 1, 0]
    assert clf.classes_.tolist() == ["-1", "a", "b"]  # a string "-1" is a class; only the number marks unlabelled
    clf = HybridFlowClassifier()
    assert clf._labels(np.array([3, -1, 7]), 3, None, first=True).tolist() == [0, -1, 1]
    with pytest.raises(ValueError, match="differs from the classes of the first fit"):
        clf._labels(np.array([3]), 1, classes=[3, 7, 9], first=False)
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        clf._labels(np.array([3, 7]), 3, None, first=False)


def test_a_wrapped_model_takes_pixels_of_its_shape():
    clf = HybridFlowClassifier()
    clf._pixel_input((1, 4, 4))
    clf.model_ = object()
    assert clf.n_features_in_ == 16 and clf.scaling_ == "pixels" and clf.offset_ is None
    assert clf._images(np.full((2, 16), 7), reset=False).shape == (2, 1, 4, 4)
    with pytest.raises(ValueError, match="pixel"):
        clf._images(np.full((2, 16), -3.5), reset=False)
