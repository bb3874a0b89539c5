"""Cut images into their non-overlapping square patches: the training data of a bag-of-patches
model (the likelihood-ratio reference of :class:`hybridflow.ood.PatchDensity`).

Example:
    >>> import torch
    >>> x = torch.arange(2 * 16, dtype=torch.uint8).reshape(2, 1, 4, 4)
    >>> image_patches(x, 2).shape, image_patches(x, 2)[1].flatten().tolist()
    (torch.Size([8, 1, 2, 2]), [2, 3, 6, 7])
"""

from __future__ import annotations

from torch import Tensor

from .arrays import ImageData

__all__ = ["PatchSizeError", "check_patch_size", "image_patches", "patch_data"]


class PatchSizeError(ValueError):
    """A patch size that does not cut the images into whole squares."""


def check_patch_size(size: int, image_shape: tuple[int, ...]) -> int:
    """``size`` if it is a positive integer that divides the height and width of ``image_shape``
    (``(C, H, W)``), else :class:`PatchSizeError` naming the sizes that do.

    Example:
        >>> check_patch_size(4, (1, 28, 28))
        4
    """
    _, h, w = image_shape[-3:]
    if isinstance(size, bool) or int(size) != size or size < 1 or h % size or w % size:
        fits = [p for p in range(1, min(h, w) + 1) if h % p == 0 and w % p == 0]
        raise PatchSizeError(f"patch size {size!r} must be a positive integer dividing the image size {h}x{w}: "
                         f"choose one of {', '.join(map(str, fits))}")
    return int(size)


def image_patches(images: Tensor, size: int) -> Tensor:
    """``(N, C, H, W)`` images as ``(N * (H/size) * (W/size), C, size, size)`` patches: each
    image's patches together, row by row."""
    n, c, h, w = images.shape
    size = check_patch_size(size, (c, h, w))
    grid = images.reshape(n, c, h // size, size, w // size, size)
    return grid.permute(0, 2, 4, 1, 3, 5).reshape(-1, c, size, size)


def patch_data(data: ImageData, size: int) -> ImageData:
    """:func:`image_patches` of ``data``, each patch with its image's label."""
    per_image = (data.image_shape[1] // size) * (data.image_shape[2] // size)
    return ImageData(image_patches(data.images, size), data.labels.repeat_interleave(per_image), list(data.classes))
