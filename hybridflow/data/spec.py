"""One description of a dataset that loads either split: a known name, an external name or a path,
with its subset and pixel shuffle. A training run stores it (``to_dict``) so later commands read the
same data.

Example:
    >>> spec = DataSpec("digits", limit=50, shuffle="global")
    >>> data = spec.load(train=False)
    >>> len(data), data.image_shape
    (50, (1, 8, 8))
    >>> DataSpec.from_dict(spec.to_dict()).shuffle
    'global'
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from torch.utils.data import Dataset

from .arrays import ImageData
from .files import load_path
from .permutations import PixelPermutation, pixel_shuffle
from .sources import EXTERNAL_DATASETS, data_root, dataset_key, list_datasets, load_dataset, load_external
from .streaming import open_dataset

__all__ = ["DataSpec"]


@dataclass
class DataSpec:
    """How to load one dataset: a known name (:func:`list_datasets`), an external name
    (:data:`EXTERNAL_DATASETS`) or a path to an ``.npz`` file or an image folder.

    ``limit`` keeps a random subset drawn with ``seed``; ``shuffle`` ("local" / "global") permutes
    the pixels (patch ``shuffle_patch``, seed ``shuffle_seed``); ``size`` is CelebA's side length.
    """

    name: str
    root: str | None = None
    download: bool = False
    limit: int | None = None
    seed: int = 0
    shuffle: str | None = None
    shuffle_patch: int = 4
    shuffle_seed: int = 0
    size: int = 64

    def to_dict(self) -> dict[str, Any]:
        """What identifies the data (not the subset): the ``data`` entry of a run's ``run.json``."""
        return dict(name=self.name, root=self.root, shuffle=self.shuffle, shuffle_patch=self.shuffle_patch,
                    shuffle_seed=self.shuffle_seed, size=self.size)

    @classmethod
    def from_dict(cls, saved: dict[str, Any], **changes: Any) -> DataSpec:
        """The spec :meth:`to_dict` wrote (missing keys take their defaults), with ``changes``."""
        spec = cls(saved.get("name", "digits"), saved.get("root"), shuffle=saved.get("shuffle"),
                   shuffle_patch=saved.get("shuffle_patch", 4), shuffle_seed=saved.get("shuffle_seed", 0),
                   size=saved.get("size", 64))
        for key, value in changes.items():
            setattr(spec, key, value)
        return spec

    def permutation(self, image_shape: Sequence[int]) -> PixelPermutation | None:
        """The pixel shuffle this spec applies to images of ``image_shape`` (None without one)."""
        return pixel_shuffle(self.shuffle, image_shape, self.shuffle_patch, self.shuffle_seed)

    def load(self, train: bool) -> ImageData:
        """The train or test split (a path or an external set without a test split: a fixed 10%)."""
        key = dataset_key(self.name)
        if key in list_datasets():
            try:
                data = load_dataset(key, root=self.root, train=train, download=self.download, limit=self.limit,
                                    seed=self.seed, size=self.size)
            except FileNotFoundError:
                raise FileNotFoundError(
                    f"dataset {self.name} is not in {data_root(self.root)}: pass --download to fetch it, or "
                    "--data-root (env HYBRIDFLOW_DATA) the folder that holds it") from None
        elif key in EXTERNAL_DATASETS:
            data = load_external(key, self.root, train, self.limit, self.seed)
        else:
            data = load_path(Path(self.name), train, self.limit, self.seed)
        permutation = self.permutation(data.image_shape)
        return data if permutation is None else data.permuted(permutation)

    def open(self, train: bool) -> ImageData | Dataset:
        """The split to train from: a named set stored in the ``.npy`` layout or as an image folder
        is streamed from disk (:func:`~hybridflow.data.streaming.open_dataset`) when no subset
        (``limit``) or pixel shuffle is asked for; anything else is :meth:`load`-ed into memory.

        Example:
            >>> len(DataSpec("digits").open(train=False))
            450
        """
        key = dataset_key(self.name)
        if self.limit is not None or self.shuffle is not None or key not in list_datasets() + list(EXTERNAL_DATASETS):
            return self.load(train)  # paths keep load's fixed 90/10 split
        if key in list_datasets() and key != "celeba":
            try:
                return open_dataset(key, self.root, train, download=self.download)
            except FileNotFoundError:
                return self.load(train)  # load's message says where to put it
        return open_dataset(key, self.root, train) if key in EXTERNAL_DATASETS else self.load(train)
