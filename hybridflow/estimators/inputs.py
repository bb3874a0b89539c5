r"""The classifier's input validation: ``X`` as the uint8 pixels the flow models, ``y`` as label indices.

:class:`ImageInputMixin` runs scikit-learn's validation (feature names, ``n_features_in_``, its
messages, which its estimator checks look for) and then the library's: the image shape
(:func:`~hybridflow.estimators.scaling.infer_image_shape`), the value map
(:class:`~hybridflow.estimators.scaling.PixelScaling`) and the label encoding
(:mod:`~hybridflow.estimators.labels`). At fit (``reset``) it learns ``image_shape_``,
``n_features_in_``, ``scaling_``, ``offset_``, ``scale_``, ``pixel_floats_`` (how later float
input is read: 0-1 or 0..255, as at fit) and ``classes_``; later calls check
against them and name the fitted shape when ``X`` does not match.

Example:
    >>> from hybridflow.estimators import HybridFlowClassifier
    >>> clf = HybridFlowClassifier()
    >>> clf._images(np.zeros((3, 16)), reset=True).shape, clf.image_shape_, clf.scaling_
    (torch.Size([3, 1, 4, 4]), (1, 4, 4), 'pixels')
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
from sklearn.utils import check_array, check_consistent_length, column_or_1d
from sklearn.utils.validation import check_is_fitted, validate_data
from torch import Tensor

from .labels import check_same_classes, encode_labels, labelled_part, learn_classes
from .scaling import PixelScaling, image_values, infer_image_shape

__all__ = ["ImageInputMixin"]


class ImageInputMixin:
    """``_images(X, reset)`` and ``_labels(y, n, classes, first)`` for an estimator with the
    ``image_shape``, ``scaling`` and ``unlabelled`` parameters (see the module docstring)."""

    def _images(self, X: Any, reset: bool) -> Tensor:
        """``X`` as uint8 ``(N, C, H, W)`` pixels; ``reset`` learns the shape and value map."""
        if isinstance(X, Tensor):
            X = X.detach().cpu().numpy()
        validate_data(self, X, reset=reset, skip_check_array=True, ensure_2d=False)  # feature names only
        X = check_array(X, allow_nd=True, dtype="numeric", input_name="X", estimator=self)
        if X.ndim > 4:
            raise ValueError(f"X must be (n_samples, n_features) or a batch of images (N, H, W), (N, H, W, C), "
                             f"(N, C, H, W); got a {X.ndim}-D array of shape {X.shape}")
        name = type(self).__name__
        if reset:
            shape = infer_image_shape(X, self.image_shape)
        else:
            check_is_fitted(self)
            shape = self.image_shape_
            if X.ndim == 2 and X.shape[1] != self.n_features_in_:
                # scikit-learn's wording, which its checks look for.
                raise ValueError(f"X has {X.shape[1]} features, but {name} is expecting "
                                 f"{self.n_features_in_} features as input.")
        try:
            values = image_values(X, shape)
        except ValueError as error:
            where = f"{name} was fitted on images of shape (C, H, W) = {shape}: " if not reset else ""
            raise ValueError(f"{where}{error}") from None
        if reset:
            self.image_shape_ = tuple(int(s) for s in values.shape[1:])
            self.n_features_in_ = math.prod(self.image_shape_)
            scaling = PixelScaling.fit(values, self.scaling, tabular=X.ndim == 2)
            self.scaling_, self.offset_, self.scale_ = scaling.mode, scaling.offset, scaling.scale
            self.pixel_floats_ = scaling.floats
        # Estimators pickled before pixel_floats_ existed read floats as they did then ("auto").
        scaling = PixelScaling(self.scaling_, self.offset_, self.scale_, getattr(self, "pixel_floats_", "auto"))
        try:
            return scaling.to_pixels(values, self.image_shape_)
        except ValueError as error:
            raise ValueError(f"{name}: {error}") from None

    def _pixel_input(self, image_shape: Sequence[int]) -> None:
        """Take pixel images of ``image_shape`` from now on, as a wrapped trained model does."""
        self.image_shape_ = tuple(int(s) for s in image_shape)
        self.n_features_in_ = math.prod(self.image_shape_)
        self.scaling_, self.offset_, self.scale_, self.pixel_floats_ = "pixels", None, None, "auto"

    def _labels(self, y: Any, n: int, classes: Sequence[Any] | None, first: bool) -> Tensor:
        """``y`` as int64 indices into ``classes_`` (-1 = unlabelled); ``first`` sets ``classes_``."""
        y = column_or_1d(y, warn=True)
        check_consistent_length(np.empty(n), y)
        y = check_array(y, ensure_2d=False, dtype=None, input_name="y", estimator=self)
        if first:
            self.classes_ = learn_classes(y, self.unlabelled, classes)
        else:
            labelled_part(y, self.unlabelled)  # refuses continuous targets before any class check
            if classes is not None:
                check_same_classes(classes, self.classes_)
        return torch.from_numpy(encode_labels(y, self.classes_, self.unlabelled))
