"""Fixed pixel permutations (the paper's section 5.4): one shared order, a global or a local shuffle.

Example:
    >>> shuffle = pixel_shuffle("global", (1, 8, 8), seed=0)
    >>> x = torch.arange(64, dtype=torch.uint8).reshape(1, 1, 8, 8)
    >>> torch.equal(shuffle.inverse(shuffle(x)), x)
    True
"""

from __future__ import annotations

from typing import Sequence

import torch

from .arrays import check_image_shape

__all__ = ["PixelPermutation", "GlobalShuffle", "LocalShuffle", "SHUFFLES", "check_shuffle", "pixel_shuffle"]

#: The kinds of pixel shuffle :func:`pixel_shuffle` builds.
SHUFFLES = ("local", "global")


class PixelPermutation:
    """A fixed permutation of the H*W pixel positions, the same for every channel and image.

    ``out.flatten(-2)[..., q] = images.flatten(-2)[..., permutation[q]]``. Works on any dtype and
    on any tensor whose trailing dims are ``image_shape``; one gather, no Python loops.

    Example:
        >>> perm = PixelPermutation((1, 2, 2), torch.tensor([3, 2, 1, 0]))
        >>> perm(torch.arange(4).reshape(1, 1, 2, 2)).flatten().tolist()
        [3, 2, 1, 0]
    """

    def __init__(self, image_shape: Sequence[int], permutation: torch.Tensor) -> None:
        self.image_shape = check_image_shape(image_shape)
        _, h, w = self.image_shape
        permutation = torch.as_tensor(permutation, dtype=torch.int64)
        if permutation.shape != (h * w,) or not torch.equal(permutation.sort().values, torch.arange(h * w)):
            raise ValueError(f"permutation must be a permutation of range({h * w})")
        self.permutation = permutation
        self.inverse_permutation = torch.argsort(permutation)

    def _apply(self, images: torch.Tensor, permutation: torch.Tensor) -> torch.Tensor:
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"expected a torch tensor of images, got {type(images).__name__}")
        if images.ndim < 3 or tuple(images.shape[-3:]) != self.image_shape:
            raise ValueError(
                f"{type(self).__name__} was built for images of shape {self.image_shape}, "
                f"got a tensor of shape {tuple(images.shape)}"
            )
        flat = images.reshape(*images.shape[:-2], -1)
        return flat.index_select(-1, permutation.to(images.device)).reshape(images.shape)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self._apply(images, self.permutation)

    def inverse(self, images: torch.Tensor) -> torch.Tensor:
        """Undo the permutation exactly."""
        return self._apply(images, self.inverse_permutation)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(image_shape={self.image_shape})"


class GlobalShuffle(PixelPermutation):
    """One seeded permutation of all H*W pixel positions (shared by the channels, so an RGB
    pixel stays an RGB pixel), applied identically to every image.

    Example:
        >>> shuffle = GlobalShuffle((1, 8, 8), seed=0)
        >>> x = torch.randint(0, 256, (5, 1, 8, 8), dtype=torch.uint8)
        >>> torch.equal(shuffle.inverse(shuffle(x)), x)
        True
    """

    def __init__(self, image_shape: Sequence[int], seed: int = 0) -> None:
        _, h, w = check_image_shape(image_shape)
        generator = torch.Generator().manual_seed(seed)
        super().__init__(image_shape, torch.randperm(h * w, generator=generator))
        self.seed = seed


class LocalShuffle(PixelPermutation):
    """Shuffle patch order and pixel order within patches, with one seeded permutation each.

    The image is cut into ``patch_size`` x ``patch_size`` patches (row-major). Output patch k is
    input patch ``patch_permutation[k]`` with its pixels (row-major within the patch) reordered
    by ``pixel_permutation``; the same within-patch order serves every patch and channel.

    Example:
        >>> shuffle = LocalShuffle((1, 8, 8), patch_size=4, seed=0)
        >>> shuffle.patch_permutation.shape, shuffle.pixel_permutation.shape
        (torch.Size([4]), torch.Size([16]))
    """

    def __init__(self, image_shape: Sequence[int], patch_size: int = 4, seed: int = 0) -> None:
        _, h, w = check_image_shape(image_shape)
        p = int(patch_size)
        if p < 1 or h % p or w % p:
            raise ValueError(f"patch_size={patch_size} must be >= 1 and divide H={h} and W={w}")
        nh, nw = h // p, w // p
        generator = torch.Generator().manual_seed(seed)
        self.patch_permutation = torch.randperm(nh * nw, generator=generator)
        self.pixel_permutation = torch.randperm(p * p, generator=generator)
        self.patch_size, self.seed = p, seed
        # grid[k, j]: flat position of pixel j of patch k; permute rows and columns, fold back.
        grid = torch.arange(h * w).reshape(nh, p, nw, p).permute(0, 2, 1, 3).reshape(nh * nw, p * p)
        moved = grid[self.patch_permutation][:, self.pixel_permutation]
        permutation = moved.reshape(nh, nw, p, p).permute(0, 2, 1, 3).reshape(h * w)
        super().__init__(image_shape, permutation)


def check_shuffle(kind: str | None) -> str | None:
    """``kind`` if it names a shuffle (or is None), else a ValueError.

    Example:
        >>> check_shuffle("local")
        'local'
    """
    if kind is not None and kind not in SHUFFLES:
        raise ValueError(f"shuffle must be None, 'local' or 'global', got {kind!r}")
    return kind


def pixel_shuffle(
    kind: str | None, image_shape: Sequence[int], patch_size: int = 4, seed: int = 0
) -> PixelPermutation | None:
    """The :class:`LocalShuffle` (``kind="local"``, with ``patch_size``) or :class:`GlobalShuffle`
    (``"global"``) of ``image_shape`` seeded by ``seed``; None for ``kind=None``.

    Example:
        >>> pixel_shuffle("local", (3, 8, 8), patch_size=2, seed=1)
        LocalShuffle(image_shape=(3, 8, 8))
    """
    if check_shuffle(kind) is None:
        return None
    if kind == "local":
        return LocalShuffle(image_shape, patch_size, seed)
    return GlobalShuffle(image_shape, seed)
