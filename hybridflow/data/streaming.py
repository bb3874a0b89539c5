r"""Datasets read from disk as training goes: an image folder decoded lazily, and :func:`open_dataset`,
which picks the streamed form of a named dataset or a path when there is one.

:func:`~hybridflow.data.sources.load_dataset` and :func:`~hybridflow.data.files.load_image_folder`
decode everything into memory (an :class:`ImageData`); ImageNet64 would need 16 GB that way. The
datasets here hold only file names (:class:`LazyImageFolder`) or a file handle
(:class:`~hybridflow.data.npy.NpyImages`) and are read a batch at a time by
:class:`~hybridflow.data.loading.BatchSource`.

Example:
    >>> import tempfile
    >>> from PIL import Image
    >>> root = Path(tempfile.mkdtemp())
    >>> for name in ("cat", "dog"):
    ...     (root / name).mkdir()
    ...     Image.new("RGB", (10, 12)).save(root / name / "a.png")
    >>> data = LazyImageFolder(root, size=8)
    >>> len(data), data.classes, data[1][0].shape, data[1][1]
    (2, ['cat', 'dog'], torch.Size([3, 8, 8]), 1)
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from .arrays import ImageData, PathLike
from .files import GREY_MODES, load_npz, pil_mode, resize_image
from .npy import NpyImages, is_npy_layout
from .sources import EXTERNAL_DATASETS, data_root, dataset_key, list_datasets, load_dataset, load_external

__all__ = ["LazyImageFolder", "open_dataset"]


class LazyImageFolder(Dataset):
    """``root/<class name>/<image>`` files (torchvision's ImageFolder layout) decoded one at a time:
    items are ``(uint8 (C, H, W) tensor, class index)``.

    ``size``: an int resizes the shorter side and centre-crops a square, ``(H, W)`` resizes exactly;
    without it every image must already have one size (a batch that mixes sizes is refused).
    ``channels``: 1/'L' or 3/'RGB'; ``None`` takes the first file's (grey or RGB) for all of them.
    """

    def __init__(self, root: PathLike, size: int | Sequence[int] | None = None,
                 channels: int | str | None = None) -> None:
        from PIL import Image
        from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder {str(root)!r} does not exist")
        try:
            self.classes, index = find_classes(str(self.root))
            self.samples = make_dataset(str(self.root), index, extensions=IMG_EXTENSIONS)
        except FileNotFoundError as error:  # torchvision's wording, plus what layout we expect
            raise FileNotFoundError(f"{error} (expected {root}/<class name>/<image files>)") from None
        self.size = size
        self.mode = pil_mode(channels)
        if self.mode is None:
            with Image.open(self.samples[0][0]) as first:
                self.mode = "L" if first.mode in GREY_MODES else "RGB"

    def __len__(self) -> int:
        return len(self.samples)

    def __repr__(self) -> str:
        return f"LazyImageFolder({str(self.root)!r}, n={len(self)}, classes={len(self.classes)}, mode={self.mode})"

    @property
    def targets(self) -> list[int]:
        return [target for _, target in self.samples]

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        from PIL import Image

        path, target = self.samples[index]
        with Image.open(path) as image:
            array = np.array(resize_image(image.convert(self.mode), self.size))  # a writable copy
        array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
        return torch.from_numpy(np.ascontiguousarray(array)), int(target)


def _split_names(train: bool) -> tuple[str, ...]:
    return ("train",) if train else ("test", "val")


def _open_path(path: Path, size: int | Sequence[int] | None) -> Dataset | ImageData:
    if path.is_file() and path.name.endswith(".npy"):
        path = path.parent
    if is_npy_layout(path):
        return NpyImages(path)
    if path.is_file():
        if path.suffix != ".npz":
            raise ValueError(f"{path}: expected a folder (the .npy layout or an image folder) or an .npz file")
        return load_npz(path)
    return LazyImageFolder(path, size=size)


def open_dataset(name: PathLike, root: PathLike | None = None, train: bool = True,
                 size: int | Sequence[int] | None = None, download: bool = False) -> Dataset | ImageData:
    """A dataset to train from, streamed from disk where it can be.

    * a path: a folder in the ``.npy`` layout (:class:`~hybridflow.data.npy.NpyImages`), an image
      folder (:class:`LazyImageFolder`, ``size`` resizes) or an ``.npz`` (in memory); read whole,
      so give the train and test splits as separate paths;
    * an external name (:data:`EXTERNAL_DATASETS`, e.g. ``imagenet64``): ``<root>/<name>/<split>/``
      in the ``.npy`` layout or as an image folder (resized to the set's side), or ``<split>.npz``
      (``<split>`` is ``train``, or ``test`` / ``val``);
    * a torchvision name (mnist, cifar10, ...): ``<root>/<name>/<split>/`` in the ``.npy`` layout when
      ``hybridflow data convert`` wrote one there, else :func:`load_dataset` in memory (``download``
      lets torchvision fetch it).

    ``root`` defaults to ``$HYBRIDFLOW_DATA`` or ``~/.cache/hybridflow/data``.

    Example:
        >>> open_dataset("digits", train=False).image_shape  # small: in memory
        (1, 8, 8)
    """
    key = dataset_key(str(name))
    base = Path(data_root(root)) / key
    if key in EXTERNAL_DATASETS:
        for split in _split_names(train):
            if is_npy_layout(base / split):
                return NpyImages(base / split)
            if (base / f"{split}.npz").is_file():
                return load_npz(base / f"{split}.npz")
            if (base / split).is_dir():
                return LazyImageFolder(base / split, size=size or EXTERNAL_DATASETS[key]["size"])
        return load_external(key, root, train)  # the held-out 10% of train, or where to get the set
    if key in list_datasets():
        for split in _split_names(train):
            if is_npy_layout(base / split):
                return NpyImages(base / split)
        return load_dataset(key, root=root, train=train, download=download)
    path = Path(name)
    if not path.exists():
        known = ", ".join(list_datasets() + sorted(EXTERNAL_DATASETS))
        raise FileNotFoundError(f"dataset {str(name)!r} is neither a known name ({known}) nor an existing path")
    return _open_path(path, size)
