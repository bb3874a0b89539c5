"""Volume-preserving rearrangements: patchify (image <-> mixer-matrix), Glow's squeeze, and the
MixerFlow shift layer that re-cuts the patches on a shifted grid.

Example:
    >>> import torch
    >>> to_matrix = Patchify((3, 8, 8), patch_size=4)
    >>> m, _ = to_matrix(torch.randn(2, 3, 8, 8))
    >>> tuple(m.shape)                      # 4 patches of 4*4*3 values
    (2, 4, 48)
"""

from __future__ import annotations

from torch import Tensor

from .base import Flow, zero_logdet

__all__ = ["Patchify", "RepatchedFlow", "ShiftedFlow", "Squeeze", "as_pair", "patchify", "unpatchify"]


def patchify(x: Tensor, patch_size: tuple[int, int]) -> Tensor:
    """``(B, C, H, W) -> (B, n_patches, ph * pw * C)``, patches in row-major order, each
    flattened as ``(ph, pw, C)``."""
    b, c, h, w = x.shape
    ph, pw = patch_size
    x = x.reshape(b, c, h // ph, ph, w // pw, pw).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(b, (h // ph) * (w // pw), ph * pw * c)


def unpatchify(m: Tensor, image_shape: tuple[int, int, int], patch_size: tuple[int, int]) -> Tensor:
    """Inverse of :func:`patchify`."""
    c, h, w = image_shape
    ph, pw = patch_size
    m = m.reshape(m.shape[0], h // ph, w // pw, ph, pw, c).permute(0, 5, 1, 3, 2, 4)
    return m.reshape(m.shape[0], c, h, w)


class Patchify(Flow):
    """Image ``(B, C, H, W)`` to mixer-matrix ``(B, n_patches, patch_dim)``; log-det 0."""

    def __init__(self, image_shape: tuple[int, int, int], patch_size: int | tuple[int, int]) -> None:
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.patch_size = as_pair(patch_size)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return patchify(x, self.patch_size), zero_logdet(x)

    def inverse(self, y: Tensor) -> Tensor:
        return unpatchify(y, self.image_shape, self.patch_size)


class Squeeze(Flow):
    """Glow's squeeze: ``(B, C, H, W) -> (B, 4C, H/2, W/2)`` by 2x2 space-to-depth; log-det 0."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        b, c, h, w = x.shape
        y = x.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
        return y.reshape(b, c * 4, h // 2, w // 2), zero_logdet(x)

    def inverse(self, y: Tensor) -> Tensor:
        b, c, h, w = y.shape
        x = y.reshape(b, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)
        return x.reshape(b, c // 4, h * 2, w * 2)


class ShiftedFlow(Flow):
    """The MixerFlow shift layer: on a mixer-matrix, carve a frame off the image, re-patchify the
    inner part shifted by ``(sh, sw)``, run ``inner`` (a mixer layer built for the smaller
    shifted-mixer-matrix) on it, and put the frame back untouched.

    The inner window is ``[sh : H - ph + sh, sw : W - pw + sw]`` (paper, section 4), so it holds
    ``(H/ph - 1) * (W/pw - 1)`` patches whose borders straddle the original ones.
    """

    def __init__(self, inner: Flow, image_shape: tuple[int, int, int], patch_size: int | tuple[int, int],
                 shift: int | tuple[int, int] = 1) -> None:
        super().__init__()
        self.inner = inner
        self.image_shape = tuple(image_shape)
        self.patch_size = as_pair(patch_size)
        self.shift = as_pair(shift)
        c, h, w = self.image_shape
        (ph, pw), (sh, sw) = self.patch_size, self.shift
        if not (0 < sh < ph and 0 < sw < pw):
            raise ValueError(f"shift {self.shift} must lie strictly between 0 and the patch size {self.patch_size}")
        if h // ph < 2 or w // pw < 2:
            raise ValueError(f"a shift layer needs at least 2x2 patches, image {self.image_shape} has fewer")
        self.window = (slice(sh, h - ph + sh), slice(sw, w - pw + sw))
        self.inner_shape = (c, h - ph, w - pw)

    def _through_window(self, m: Tensor, fn) -> tuple[Tensor, Tensor | None]:
        image = unpatchify(m, self.image_shape, self.patch_size)
        inner = patchify(image[:, :, self.window[0], self.window[1]], self.patch_size)
        out, logdet = fn(inner)
        image = image.clone()
        image[:, :, self.window[0], self.window[1]] = unpatchify(out, self.inner_shape, self.patch_size)
        return patchify(image, self.patch_size), logdet

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self._through_window(x, self.inner)

    def inverse(self, y: Tensor) -> Tensor:
        return self._through_window(y, lambda m: (self.inner.inverse(m), None))[0]


class RepatchedFlow(Flow):
    """Run ``inner`` on the mixer-matrix of another patch size: a mixer-matrix of ``patch_size``
    patches is re-cut into ``inner_patch`` patches, ``inner`` (built for that matrix) runs, and the
    result is cut back. A patch schedule (``MixerFlow(patch_sizes=...)``) mixes, say, 4x4 and 7x7
    patches across the layers. Both re-cuts are permutations: log-det 0 beyond ``inner``'s.

    Example:
        >>> import torch
        >>> from hybridflow.flows import LULinear
        >>> layer = RepatchedFlow(LULinear(49), (1, 28, 28), 4, 7)
        >>> m = torch.randn(2, 49, 16)
        >>> bool(torch.allclose(layer.inverse(layer(m)[0]), m, atol=1e-5))
        True
    """

    def __init__(self, inner: Flow, image_shape: tuple[int, int, int], patch_size: int | tuple[int, int],
                 inner_patch: int | tuple[int, int]) -> None:
        super().__init__()
        self.inner = inner
        self.image_shape = tuple(image_shape)
        self.patch_size, self.inner_patch = as_pair(patch_size), as_pair(inner_patch)
        _, h, w = self.image_shape
        for ph, pw in (self.patch_size, self.inner_patch):
            if ph < 1 or pw < 1 or h % ph or w % pw:
                raise ValueError(f"patch size {(ph, pw)} must divide the image size {h}x{w}")

    def recut(self, m: Tensor, source: tuple[int, int], target: tuple[int, int]) -> Tensor:
        return patchify(unpatchify(m, self.image_shape, source), target)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        out, logdet = self.inner(self.recut(x, self.patch_size, self.inner_patch))
        return self.recut(out, self.inner_patch, self.patch_size), logdet

    def inverse(self, y: Tensor) -> Tensor:
        inner = self.inner.inverse(self.recut(y, self.patch_size, self.inner_patch))
        return self.recut(inner, self.inner_patch, self.patch_size)


def as_pair(value: int | tuple[int, int]) -> tuple[int, int]:
    """``k -> (k, k)``; a pair stays a pair of ints (patch sizes and shifts may be either)."""
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))
