r"""Pixel scaling: any numeric ``X`` as the 8-bit ``(N, C, H, W)`` images a flow models.

Two steps. :func:`image_values` gives ``X`` its image shape without touching the values
(:func:`infer_image_shape` picks the shape of flattened 2-D input); :class:`PixelScaling` then maps
the values to integers in 0..255. With ``scaling="auto"``, values that
:func:`~hybridflow.data.as_images` accepts as pixels (uint8, integers in 0..255, whole-number
floats in 0..255, floats in [0, 1]) are taken as pixels; anything else is min-max scaled with
statistics learned at fit, per feature for tabular input (columns have unrelated scales) or with
one range for image-shaped input (pixels share one scale). Values beyond the fitted range are
clipped.

Example:
    >>> X = np.array([[0.0, -10.0], [1.0, 10.0], [0.5, 0.0]])
    >>> values = image_values(X, infer_image_shape(X))             # (3, 1, 1, 2)
    >>> scaling = PixelScaling.fit(values, "auto", tabular=True)
    >>> scaling.mode, scaling.to_pixels(values).flatten(1).tolist()
    ('feature', [[0, 0], [255, 255], [128, 128]])
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from ..data import as_images, check_image_shape, float_range, to_nchw
from ..flows import NUM_BINS

__all__ = ["SCALINGS", "PixelScaling", "infer_image_shape", "image_values"]

#: The ``scaling`` choices: ``"auto"`` resolves at fit to one of the other three.
SCALINGS = ("auto", "pixels", "feature", "global")


def infer_image_shape(X: np.ndarray, image_shape: Sequence[int] | None = None) -> tuple[int, int, int] | None:
    """The ``(C, H, W)`` that ``X`` holds: ``image_shape`` when given; for 2-D ``X`` with
    ``n_features = s * s`` square ``(1, s, s)``, else one row ``(1, 1, n_features)``; ``None``
    for image-shaped ``X`` (its layout says it, see :func:`~hybridflow.data.as_images`).

    Example:
        >>> infer_image_shape(np.zeros((5, 64))), infer_image_shape(np.zeros((5, 3)))
        ((1, 8, 8), (1, 1, 3))
    """
    if image_shape is not None:
        return check_image_shape(image_shape)
    if X.ndim != 2:
        return None  # to_nchw reads the layout
    d = X.shape[1]
    if d < 2:
        raise ValueError(f"a flow needs at least 2 features, got {d} feature(s): a flow on one value has nothing "
                         "to mix")
    side = math.isqrt(d)
    return (1, side, side) if side * side == d else (1, 1, d)


def image_values(X: np.ndarray, image_shape: tuple[int, int, int] | None) -> Tensor:
    """A numeric array as an ``(N, C, H, W)`` tensor of the same values (booleans as black and white
    pixels, 0 and 255):
    2-D ``X`` is flattened images of ``image_shape`` (row-major), 3-D and 4-D ``X`` is laid out
    by the rules of :func:`~hybridflow.data.as_images` and must match ``image_shape`` if given.

    Example:
        >>> image_values(np.zeros((2, 8, 8, 3)), None).shape
        torch.Size([2, 3, 8, 8])
    """
    if X.dtype == np.bool_:
        X = X.astype(np.uint8) * np.uint8(NUM_BINS - 1)  # black and white: what 0-1 floats of 0.0 and 1.0 give
    X = np.require(X, requirements=["C", "W"])  # torch wants writable, contiguous memory
    if X.ndim != 2:
        return to_nchw(torch.from_numpy(X), image_shape)
    if image_shape is None or X.shape[1] != math.prod(image_shape):
        needs = "an image_shape" if image_shape is None else f"image_shape={image_shape} needs {math.prod(image_shape)}"
        raise ValueError(f"X has {X.shape[1]} features, but {needs}")
    return torch.from_numpy(X).reshape(len(X), *image_shape)


@dataclass(frozen=True)
class PixelScaling:
    """How values become pixels: ``mode`` ``"pixels"`` (taken as they are, validated by
    :func:`~hybridflow.data.as_images`, floats read in the range ``floats`` that fit fixed:
    :data:`~hybridflow.data.FLOAT_RANGES`), or ``"feature"`` / ``"global"`` with the min-max map
    ``pixel = clip(round((x - offset) * scale), 0, 255)``.

    Example:
        >>> values = torch.tensor([[[[2.0, 4.0], [6.0, 10.0]]]])
        >>> scaling = PixelScaling.fit(values, "global")
        >>> float(scaling.offset), float(scaling.scale), scaling.to_pixels(values * 2).flatten().tolist()
        (2.0, 31.875, [64, 191, 255, 255])
    """

    mode: str
    offset: np.ndarray | None = None
    scale: np.ndarray | None = None
    floats: str = "auto"

    @classmethod
    def fit(cls, values: Tensor, scaling: str = "auto", tabular: bool = False) -> PixelScaling:
        """Learn the map for ``(N, C, H, W)`` ``values``; ``"auto"`` keeps pixels as pixels and
        scales anything else per feature (``tabular``: the values came as 2-D features) or globally."""
        if scaling not in SCALINGS:
            raise ValueError(f"scaling must be one of {SCALINGS}, got {scaling!r}")
        mode = scaling
        if mode in ("auto", "pixels"):
            try:
                as_images(values)
                mode = "pixels"
            except ValueError as error:
                if scaling == "pixels":
                    raise ValueError(f"scaling='pixels' but X does not hold pixels: {error}") from None
                mode = "feature" if tabular else "global"
        if mode == "pixels":  # 0-1 or 0..255 floats, fixed here so that no later batch reads otherwise
            return cls("pixels", floats=float_range(values))
        v = values.double().numpy()
        lo, hi = (v.min(axis=0), v.max(axis=0)) if mode == "feature" else (v.min(), v.max())
        span = np.asarray(hi - lo, dtype=np.float64)
        # A constant feature carries nothing: it maps to pixel 0 (scale 0) rather than dividing by 0.
        scale = np.divide(float(NUM_BINS - 1), span, out=np.zeros_like(span), where=span > 0)
        return cls(mode, np.asarray(lo, dtype=np.float64), scale)

    def to_pixels(self, values: Tensor, image_shape: Sequence[int] | None = None) -> Tensor:
        """``(N, C, H, W)`` values as uint8 pixels (of ``image_shape`` when given)."""
        if self.mode == "pixels":
            try:
                return as_images(values, image_shape, self.floats)
            except ValueError as error:
                raise ValueError(f"the scaling was fitted on pixel values; {error} "
                                 "(scaling='feature' or 'global' rescales other input)") from None
        scaled = (values.double().numpy() - self.offset) * self.scale
        return torch.from_numpy(np.clip(np.rint(scaled), 0, NUM_BINS - 1).astype(np.uint8))
