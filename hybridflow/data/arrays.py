r"""Images as canonical integer tensors: layout and value checks, labels, the ImageData container.

Canonical form everywhere in hybridflow: images are CPU ``torch.uint8`` tensors of shape
``(N, C, H, W)`` with values 0..255 (the flows dequantise integer pixels themselves), labels are
``torch.int64`` of shape ``(N,)`` with ``-1`` meaning "unlabelled" (scikit-learn's convention).
Label *encoding* (class names to 0..K-1) belongs to the estimators, not here.

Example:
    >>> data = load_arrays(np.zeros((5, 64)), np.arange(5))
    >>> data.images.shape, data.images.dtype
    (torch.Size([5, 1, 8, 8]), torch.uint8)
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence, Union

import numpy as np
import torch
from torch.utils.data import TensorDataset

__all__ = ["ArrayLike", "PathLike", "ImageData", "FLOAT_RANGES", "as_images", "check_image_shape", "check_labels",
           "float_range", "load_arrays", "to_nchw"]

FLOAT_RANGES = ("auto", "unit", "pixels")
"""How :func:`as_images` reads float values: ``"unit"`` 0-1 floats (times 255), ``"pixels"`` whole
numbers in 0..255, ``"auto"`` the first where the batch's maximum is <= 1, else the second. A
batch of only 0.0 and 1.0 reads either way, so an estimator fixes the range at fit
(:func:`float_range`) and a row's pixels never depend on the rest of its batch."""

ArrayLike = Union[np.ndarray, torch.Tensor]
PathLike = Union[str, "os.PathLike[str]"]


# --------------------------------------------------------------------------- validation


def check_image_shape(image_shape: Sequence[int]) -> tuple[int, int, int]:
    """Validate a ``(C, H, W)`` triple with C in {1, 3}; return it as a tuple of ints.

    Example:
        >>> check_image_shape([3, 32, 32])
        (3, 32, 32)
    """
    try:
        shape = tuple(int(s) for s in image_shape)
    except TypeError:
        raise TypeError(f"image_shape must be a (C, H, W) tuple of ints, got {image_shape!r}") from None
    if len(shape) != 3 or min(shape) <= 0:
        raise ValueError(f"image_shape must be a (C, H, W) tuple of positive ints, got {image_shape!r}")
    if shape[0] not in (1, 3):
        raise ValueError(f"image_shape has {shape[0]} channels; only 1 (grey) or 3 (RGB) are supported")
    return shape  # type: ignore[return-value]


def _to_tensor(x: Any, what: str) -> torch.Tensor:
    """A CPU tensor: uint8 kept, other integers as int64, floats as float32/float64."""
    if isinstance(x, np.ndarray):
        if x.dtype.kind not in "uif":
            raise TypeError(f"{what} must have a numeric (integer or float) dtype, got {x.dtype}")
        if x.dtype.kind == "f":
            x = x.astype(np.float64 if x.dtype == np.float64 else np.float32, copy=False)
        elif x.dtype != np.uint8:
            x = x.astype(np.int64)  # torch has few ops on uint16/32/64
        return torch.from_numpy(np.ascontiguousarray(x))
    if isinstance(x, torch.Tensor):
        t = x.detach().cpu()
        if t.dtype == torch.bool or t.is_complex():
            raise TypeError(f"{what} must have a real numeric (integer or float) dtype, got {t.dtype}")
        if t.is_floating_point():
            return t if t.dtype in (torch.float32, torch.float64) else t.float()
        return t if t.dtype == torch.uint8 else t.to(torch.int64)
    raise TypeError(
        f"{what} must be a numpy array or a torch tensor, got {type(x).__name__}; "
        "wrap it with np.asarray(...)"
    )


def to_nchw(t: torch.Tensor, image_shape: tuple[int, int, int] | None) -> torch.Tensor:
    """Reshape/permute a batch to (N, C, H, W) by the layout rules of :func:`as_images` (values untouched).

    Example:
        >>> to_nchw(torch.zeros(2, 8, 8, 3), None).shape
        torch.Size([2, 3, 8, 8])
    """
    shape = tuple(t.shape)
    if t.ndim not in (2, 3, 4):
        raise ValueError(
            f"images must be a batch: (N, D), (N, H, W), (N, H, W, C) or (N, C, H, W); "
            f"got a {t.ndim}-D array of shape {shape}"
        )
    if t.numel() == 0:
        raise ValueError(f"empty input: images of shape {shape} hold no pixels (N = 0?)")
    if t.ndim == 2:
        n, d = shape
        if image_shape is not None:
            if math.prod(image_shape) != d:
                raise ValueError(
                    f"flattened images have D={d} values but image_shape={image_shape} needs "
                    f"{math.prod(image_shape)}"
                )
            return t.reshape(n, *image_shape)
        side = math.isqrt(d)
        if side * side != d:
            raise ValueError(
                f"2-D input of shape {shape} is read as N={n} flattened images of D={d} values, "
                "but D is not a perfect square: pass image_shape=(C, H, W); "
                "for a single (H, W) image pass x[None]"
            )
        return t.reshape(n, 1, side, side)
    # (N, H, W) that matches a known grey image shape is a batch of grey images, whatever N, H and W are.
    grey_batch = image_shape is not None and image_shape[0] == 1 and shape[1:] == tuple(image_shape[1:])
    if t.ndim == 3 and not grey_batch:
        # A trailing 1 or 3 means a single (H, W, C) image, not N images that are 1 or 3 pixels wide.
        if shape[-1] in (1, 3):
            raise ValueError(
                f"3-D input of shape {shape} looks like a single (H, W, C) image; "
                "pass x[None] for a batch of one"
            )
        if shape[0] == 3:
            raise ValueError(
                f"3-D input of shape {shape} is ambiguous: one (C, H, W) RGB image or 3 grey "
                "(H, W) images; pass x[None] for a single image or x[:, None] for grey images"
            )
    if t.ndim == 3:
        t = t[:, None]
    elif shape[1] not in (1, 3):
        if shape[-1] not in (1, 3):
            raise ValueError(
                f"4-D input of shape {shape} has no channel axis of size 1 or 3 "
                "(expected (N, C, H, W) or (N, H, W, C) with C in {1, 3})"
            )
        t = t.permute(0, 3, 1, 2)
    if image_shape is not None and tuple(t.shape[1:]) != image_shape:
        raise ValueError(f"images have shape (C, H, W) = {tuple(t.shape[1:])}, expected {image_shape}")
    return t


def float_range(x: ArrayLike) -> str:
    """The :data:`FLOAT_RANGES` entry a float batch ``x`` fixes for later batches (``"unit"`` when its
    maximum is <= 1, else ``"pixels"``); ``"auto"`` for integer or boolean input, which is unambiguous.

    Example:
        >>> float_range(np.array([0.0, 0.5])), float_range(np.array([0.0, 255.0])), float_range(np.array([7]))
        ('unit', 'pixels', 'auto')
    """
    t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))
    if not t.is_floating_point() or t.numel() == 0:
        return "auto"
    return "unit" if float(t.max()) <= 1.0 else "pixels"


def _to_uint8(t: torch.Tensor, what: str, floats: str = "auto") -> torch.Tensor:
    """Map integer 0..255, float 0-1 or whole-number float 0..255 values to uint8 (``floats``:
    which of the float readings, :data:`FLOAT_RANGES`)."""
    if floats not in FLOAT_RANGES:
        raise ValueError(f"floats must be one of {FLOAT_RANGES}, got {floats!r}")
    if t.dtype == torch.uint8:
        return t
    if not t.is_floating_point():
        lo, hi = int(t.min()), int(t.max())
        if lo < 0 or hi > 255:
            raise ValueError(f"{what} are integers in {lo}..{hi}; pixel values must lie in 0..255")
        return t.to(torch.uint8)
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{what} contain NaN or infinite values")
    lo, hi = float(t.min()), float(t.max())
    if lo < 0:
        raise ValueError(
            f"{what} contain negative values (min {lo:g}); expected 0-1 floats or 0..255 pixels "
            "(undo any mean/std normalisation first)"
        )
    if floats == "unit" and hi > 1.0:
        raise ValueError(f"{what} are floats up to {hi:g}, but 0-1 floats were expected (the range fixed at "
                         "fit): scale them as the training images were")
    if hi <= 1.0 and floats != "pixels":
        return (t * 255).round().to(torch.uint8)
    if hi > 255:
        raise ValueError(f"{what} exceed 255 (max {hi:g}); expected 0-1 floats or 0..255 pixels")
    if not torch.equal(t, t.round()):
        expected = ("whole-number 0..255 pixel values (the range fixed at fit)" if floats == "pixels"
                    else "either 0-1 floats or whole-number 0..255 pixel values")
        raise ValueError(f"{what} are floats up to {hi:g} that are not whole numbers: expected {expected}")
    return t.to(torch.uint8)


def as_images(x: ArrayLike, image_shape: Sequence[int] | None = None, floats: str = "auto") -> torch.Tensor:
    """Convert a batch of images to the canonical CPU uint8 ``(N, C, H, W)`` tensor.

    Layouts: ``(N, C, H, W)`` and ``(N, H, W, C)`` with C in {1, 3} (4-D: dim 1 in {1, 3} means
    NCHW, else a last dim in {1, 3} means NHWC), ``(N, H, W)`` grey, and ``(N, D)`` flattened
    (scikit-learn's ``(n_samples, n_features)``; needs ``image_shape`` unless D is a perfect
    square, then C = 1). Values: integers in 0..255, floats with max <= 1 (scaled by 255 and
    rounded), or whole-number floats in 0..255 (``floats``: :data:`FLOAT_RANGES`; ``"auto"`` tells them
    apart by the batch's maximum; booleans are refused). 3-D input matching a grey
    ``image_shape`` is a batch of grey images. A single image is refused where it can be told
    apart (3-D with a trailing 1/3 or a leading 3; 2-D whose width is not a perfect square): pass
    ``x[None]``. 2-D input is always ``(N, D)``, so a lone (16, 16) image would read as 16
    flattened 4x4 images; likewise ``(3, H, W)`` is refused as ambiguous (use ``x[:, None]``
    for three grey images).

    Example:
        >>> as_images(np.zeros((2, 28, 28, 3), dtype=np.float32)).shape
        torch.Size([2, 3, 28, 28])
    """
    shape = None if image_shape is None else check_image_shape(image_shape)
    t = _to_tensor(x, "images")
    t = to_nchw(t, shape)
    return _to_uint8(t, "images", floats).contiguous()


def check_labels(y: Any, n: int) -> torch.Tensor:
    """Validate labels: length ``n``, integer-valued, >= -1 (-1 = unlabelled); return int64.

    Example:
        >>> check_labels([0, 2, -1], 3)
        tensor([ 0,  2, -1])
    """
    if isinstance(y, torch.Tensor):
        t = y.detach().cpu()
        if t.dtype == torch.bool or t.is_complex():
            raise TypeError(f"labels must be integers (-1 = unlabelled), got dtype {t.dtype}")
    else:
        arr = np.asarray(y)
        if arr.dtype.kind not in "uif":
            raise TypeError(
                f"labels must be integers (-1 = unlabelled), got dtype {arr.dtype}; encode class "
                "names as 0..K-1 first (the estimators do this for you)"
            )
        t = torch.from_numpy(arr.astype(np.float64 if arr.dtype.kind == "f" else np.int64))
    if t.ndim != 1:
        raise ValueError(f"labels must be 1-D of length {n}, got shape {tuple(t.shape)} (try y.ravel())")
    if len(t) != n:
        raise ValueError(f"got {len(t)} labels for {n} images")
    if t.is_floating_point():
        if not bool(torch.isfinite(t).all()) or not torch.equal(t, t.round()):
            raise ValueError("labels must be whole numbers (-1 = unlabelled); got non-integer floats")
    t = t.to(torch.int64)
    if n > 0 and int(t.min()) < -1:
        raise ValueError(f"labels must be >= -1 (-1 = unlabelled), got {int(t.min())}")
    return t


# --------------------------------------------------------------------------- container


@dataclass(eq=False, repr=False)
class ImageData:
    """Images (uint8 N,C,H,W), labels (int64 N,, -1 = unlabelled) and class names in label order.

    The constructor canonicalises its inputs through :func:`as_images` and :func:`check_labels`;
    ``labels=None`` means all unlabelled.

    Example:
        >>> data = ImageData(torch.zeros(4, 1, 8, 8, dtype=torch.uint8), torch.tensor([0, 1, 0, 1]))
        >>> len(data), data.image_shape, data.num_classes
        (4, (1, 8, 8), 2)
    """

    images: torch.Tensor
    labels: torch.Tensor | None = None
    classes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.images = as_images(self.images)
        n = len(self.images)
        if self.labels is None:
            self.labels = torch.full((n,), -1, dtype=torch.int64, device="cpu")  # host-side data
        else:
            self.labels = check_labels(self.labels, n)
        self.classes = [str(c) for c in self.classes]
        top = int(self.labels.max())
        if self.classes and top >= len(self.classes):
            raise ValueError(f"label {top} has no name: only {len(self.classes)} classes given")

    def __len__(self) -> int:
        return len(self.images)

    def __repr__(self) -> str:
        labelled = int((self.labels >= 0).sum())
        return (
            f"ImageData(n={len(self)}, image_shape={self.image_shape}, "
            f"num_classes={self.num_classes}, labelled={labelled})"
        )

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        """``len(classes)`` if names are given, else the largest label + 1 (0 if none labelled)."""
        if self.classes:
            return len(self.classes)
        return int(self.labels.max()) + 1 if len(self) else 0

    def subset(self, indices: Any) -> ImageData:
        """The examples at ``indices`` (ints, a bool mask, a slice, array or tensor)."""
        if not isinstance(indices, slice):
            indices = torch.as_tensor(np.asarray(indices) if not isinstance(indices, torch.Tensor) else indices)
            if indices.dtype != torch.bool:
                indices = indices.to(torch.int64)
        return ImageData(self.images[indices], self.labels[indices], list(self.classes))

    def split(self, fraction: float, seed: int = 0, stratify: bool = True) -> tuple[ImageData, ImageData]:
        """Split into ``(rest, part)`` where ``part`` holds ``round(fraction * N)`` examples.

        Stratified by label (-1 counts as its own group) when ``stratify`` and every group has
        at least two members; otherwise a simple seeded random split. Both parts keep the
        original order.

        Example:
            >>> data = ImageData(torch.zeros(10, 1, 2, 2, dtype=torch.uint8), [0, 1] * 5)
            >>> [len(part) for part in data.split(0.2, seed=0)]
            [8, 2]
        """
        from sklearn.model_selection import train_test_split

        n = len(self)
        if not 0.0 < float(fraction) < 1.0:
            raise ValueError(f"fraction must lie strictly between 0 and 1, got {fraction}")
        n_part = round(float(fraction) * n)
        if not 1 <= n_part <= n - 1:
            raise ValueError(f"fraction={fraction} of {n} examples leaves one side of the split empty")
        labels = self.labels.numpy()
        counts = np.unique(labels, return_counts=True)[1]
        groups = len(counts)
        # train_test_split refuses stratification it cannot honour; fall back rather than fail.
        can_stratify = stratify and counts.min() >= 2 and min(n_part, n - n_part) >= groups
        rest, part = train_test_split(
            np.arange(n), test_size=n_part, random_state=seed,
            stratify=labels if can_stratify else None,
        )
        return self.subset(np.sort(rest)), self.subset(np.sort(part))

    def to_dataset(self) -> TensorDataset:
        """A Dataset yielding ``(image uint8 (C, H, W), label int64 scalar)``."""
        return TensorDataset(self.images, self.labels)

    def permuted(self, transform: Callable[[torch.Tensor], torch.Tensor]) -> ImageData:
        """A copy with ``transform`` (e.g. :class:`LocalShuffle`) applied to the images."""
        return ImageData(transform(self.images), self.labels.clone(), list(self.classes))


# --------------------------------------------------------------------------- in-memory arrays


def load_arrays(
    x: ArrayLike,
    y: Any = None,
    image_shape: Sequence[int] | None = None,
    classes: Sequence[str] | None = None,
) -> ImageData:
    """Wrap in-memory arrays (any layout :func:`as_images` accepts); ``y=None`` = unlabelled.

    Example:
        >>> load_arrays(np.zeros((5, 64)), np.arange(5)).image_shape
        (1, 8, 8)
    """
    return ImageData(as_images(x, image_shape), y, list(classes or []))
