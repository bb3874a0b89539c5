"""One description of a dataset that loads either split: a known name, an external name or a path,
with its subset, its classes and pixel shuffle. A training run stores it (``to_dict``) so later
commands read the same data.

Example:
    >>> spec = DataSpec("digits", limit=50, shuffle="global")
    >>> data = spec.load(train=False)
    >>> len(data), data.image_shape
    (50, (1, 8, 8))
    >>> DataSpec.from_dict(spec.to_dict()).shuffle
    'global'
    >>> sorted(DataSpec("digits", classes="0-4").load(train=False).labels.unique().tolist())
    [0, 1, 2, 3, 4]
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from torch.utils.data import Dataset

from .arrays import ImageData
from .files import load_path
from .patches import patch_data
from .permutations import PixelPermutation, pixel_shuffle
from .sources import EXTERNAL_DATASETS, data_root, dataset_key, list_datasets, load_dataset, load_external
from .streaming import open_dataset
from .subsets import ClassSubset, parse_classes, random_subset, select_classes

__all__ = ["DataSpec"]


@dataclass
class DataSpec:
    """How to load one dataset: a known name (:func:`list_datasets`), an external name
    (:data:`EXTERNAL_DATASETS`) or a path to an ``.npz`` file or an image folder.

    ``limit`` keeps a random subset drawn with ``seed``; ``shuffle`` ("local" / "global") permutes
    the pixels (patch ``shuffle_patch``, seed ``shuffle_seed``); ``size`` is CelebA's side length.
    ``classes`` (labels, or text such as ``"0-4"``: :func:`~hybridflow.data.subsets.parse_classes`)
    keeps the images of those classes in both splits, labels unchanged, before ``limit`` draws
    its subset; a class the dataset lacks raises
    :class:`~hybridflow.data.subsets.ClassSelectionError`. ``patches`` cuts every image into its
    non-overlapping ``patches`` x ``patches`` squares (:func:`~hybridflow.data.patches.patch_data`:
    the training data of a bag-of-patches reference model).
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
    classes: Sequence[int] | str | None = None
    patches: int | None = None

    def __post_init__(self) -> None:
        # checked and normalised (sorted ints) at once, so run.json stores a plain list
        if self.classes is not None:
            self.classes = list(parse_classes(self.classes))

    def to_dict(self) -> dict[str, Any]:
        """What identifies the data (its classes, not the random subset): the ``data`` entry of a run's
        ``run.json``."""
        return dict(name=self.name, root=self.root, shuffle=self.shuffle, shuffle_patch=self.shuffle_patch,
                    shuffle_seed=self.shuffle_seed, size=self.size,
                    classes=None if self.classes is None else list(self.classes), patches=self.patches)

    @classmethod
    def from_dict(cls, saved: dict[str, Any], **changes: Any) -> DataSpec:
        """The spec :meth:`to_dict` wrote (missing keys take their defaults), with ``changes``."""
        spec = cls(saved.get("name", "digits"), saved.get("root"), shuffle=saved.get("shuffle"),
                   shuffle_patch=saved.get("shuffle_patch", 4), shuffle_seed=saved.get("shuffle_seed", 0),
                   size=saved.get("size", 64), classes=saved.get("classes"), patches=saved.get("patches"))
        for key, value in changes.items():
            setattr(spec, key, value)
        spec.__post_init__()  # a changed ``classes`` is checked too
        return spec

    def permutation(self, image_shape: Sequence[int]) -> PixelPermutation | None:
        """The pixel shuffle this spec applies to images of ``image_shape`` (None without one)."""
        return pixel_shuffle(self.shuffle, image_shape, self.shuffle_patch, self.shuffle_seed)

    def _what(self, train: bool) -> str:
        return f"{self.name} ({'train' if train else 'test'} split)"

    def load(self, train: bool) -> ImageData:
        """The train or test split (a path or an external set without a test split: a fixed 10%)."""
        key = dataset_key(self.name)
        # with classes, the subset is drawn from their images, so --limit N still gives N images
        limit = self.limit if self.classes is None else None
        if key in list_datasets():
            try:
                data = load_dataset(key, root=self.root, train=train, download=self.download, limit=limit,
                                    seed=self.seed, size=self.size)
            except FileNotFoundError:
                raise FileNotFoundError(
                    f"dataset {self.name} is not in {data_root(self.root)}: pass --download to fetch it, or "
                    "--data-root (env HYBRIDFLOW_DATA) the folder that holds it") from None
        elif key in EXTERNAL_DATASETS:
            data = load_external(key, self.root, train, limit, self.seed)
        else:
            data = load_path(Path(self.name), train, limit, self.seed)
        if self.classes is not None:
            data = random_subset(select_classes(data, self.classes, self._what(train)), self.limit, self.seed)
        permutation = self.permutation(data.image_shape)
        data = data if permutation is None else data.permuted(permutation)
        return data if self.patches is None else patch_data(data, self.patches)

    def open(self, train: bool) -> ImageData | Dataset:
        """The split to train from: a named set stored in the ``.npy`` layout or as an image folder
        is streamed from disk (:func:`~hybridflow.data.streaming.open_dataset`) when no subset
        (``limit``) or pixel shuffle is asked for (its ``classes`` through a
        :class:`~hybridflow.data.subsets.ClassSubset`); anything else is :meth:`load`-ed into memory.

        Example:
            >>> len(DataSpec("digits").open(train=False)), len(DataSpec("digits", classes=[0]).open(train=False))
            (450, 45)
        """
        data = self._open(train)
        if self.classes is None or data is None:
            return self.load(train) if data is None else data
        if isinstance(data, ImageData):  # open_dataset fell back on the whole split in memory
            return random_subset(select_classes(data, self.classes, self._what(train)), self.limit, self.seed)
        return ClassSubset(data, self.classes, self._what(train))

    def _open(self, train: bool) -> ImageData | Dataset | None:
        """What :func:`open_dataset` gives for this spec, or None where :meth:`load` must read it."""
        key = dataset_key(self.name)
        in_memory = self.limit is not None or self.shuffle is not None or self.patches is not None
        if in_memory or key not in list_datasets() + list(EXTERNAL_DATASETS):
            return None  # paths keep load's fixed 90/10 split
        if key in list_datasets() and key != "celeba":
            try:
                return open_dataset(key, self.root, train, download=self.download)
            except FileNotFoundError:
                return None  # load's message says where to put it
        return open_dataset(key, self.root, train) if key in EXTERNAL_DATASETS else None
