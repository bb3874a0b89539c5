"""Synthetic out-of-distribution sets made from in-distribution images: uniform noise, inverted
pixels, a global pixel shuffle. Randomness comes from a seed or a passed generator, never from
torch's global RNG.

Example:
    >>> data = DataSpec("digits", limit=10).load(train=False)
    >>> {name: synthetic_ood(name, data, seed=1).image_shape for name in SYNTHETIC_OOD}
    {'noise': (1, 8, 8), 'inverted': (1, 8, 8), 'shuffled': (1, 8, 8)}
"""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import torch

from .arrays import ImageData
from .permutations import GlobalShuffle
from .sources import dataset_key
from .spec import DataSpec

__all__ = ["SYNTHETIC_OOD", "noise_images", "inverted_images", "shuffled_images", "synthetic_ood", "load_ood_data"]

#: The synthetic sets :func:`synthetic_ood` makes, with what each holds.
SYNTHETIC_OOD = {
    "noise": "uniform random pixels of the in-distribution image shape",
    "inverted": "the in-distribution test images with inverted pixels (255 - x)",
    "shuffled": "the in-distribution test images with one fixed global pixel shuffle",
}


def noise_images(n: int, image_shape: Sequence[int], seed: int = 0,
                 generator: torch.Generator | None = None) -> ImageData:
    """``n`` unlabelled images of uniform random pixels in 0..255, drawn from ``generator`` (else
    a generator seeded with ``seed``).

    Example:
        >>> noise = noise_images(3, (1, 4, 4), seed=0)
        >>> noise.images.dtype, torch.equal(noise.images, noise_images(3, (1, 4, 4), seed=0).images)
        (torch.uint8, True)
    """
    if generator is None:
        generator = torch.Generator().manual_seed(seed)
    shape = (int(n), *(int(s) for s in image_shape))
    return ImageData(torch.randint(0, 256, shape, generator=generator, dtype=torch.uint8))


def inverted_images(data: ImageData) -> ImageData:
    """``data`` with every pixel inverted (255 - x), labels and class names kept.

    Example:
        >>> inverted_images(ImageData(torch.zeros(1, 1, 2, 2, dtype=torch.uint8))).images.unique().tolist()
        [255]
    """
    return ImageData(255 - data.images, data.labels, list(data.classes))


def shuffled_images(data: ImageData, seed: int = 0) -> ImageData:
    """``data`` with one :class:`GlobalShuffle` (seeded by ``seed``) applied to every image.

    Example:
        >>> x = ImageData(torch.arange(16, dtype=torch.uint8).reshape(1, 1, 4, 4))
        >>> sorted(shuffled_images(x, seed=3).images.flatten().tolist()) == list(range(16))
        True
    """
    return data.permuted(GlobalShuffle(data.image_shape, seed=seed))


def synthetic_ood(name: str, data: ImageData, seed: int = 0) -> ImageData:
    """The synthetic set ``name`` (a key of :data:`SYNTHETIC_OOD`) made from ``data``, seeded by ``seed``.

    Example:
        >>> data = ImageData(torch.zeros(4, 1, 4, 4, dtype=torch.uint8))
        >>> len(synthetic_ood("noise", data, seed=1))
        4
    """
    key = dataset_key(name)
    if key == "noise":
        return noise_images(len(data), data.image_shape, seed=seed)
    if key == "inverted":
        return inverted_images(data)
    if key == "shuffled":
        return shuffled_images(data, seed=seed)
    raise ValueError(f"unknown synthetic set {name!r}: choose from {', '.join(SYNTHETIC_OOD)}")


def load_ood_data(name: str, spec: DataSpec, in_test: ImageData) -> ImageData:
    """Out-of-distribution images for a model trained on ``spec``: a synthetic set made from the
    in-distribution test images ``in_test`` (seeded by ``spec.seed + 1``), else the test split of
    the dataset ``name`` (with ``spec``'s root and subset, unshuffled).

    Example:
        >>> spec = DataSpec("digits", limit=20)
        >>> len(load_ood_data("inverted", spec, spec.load(train=False)))
        20
    """
    if dataset_key(name) in SYNTHETIC_OOD:
        return synthetic_ood(name, in_test, seed=spec.seed + 1)
    return replace(spec, name=name, shuffle=None).load(train=False)
