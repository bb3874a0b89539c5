r"""The one-off converter to the ``.npy`` layout (:mod:`~hybridflow.data.npy`): ``hybridflow data convert``.

Sources: an image folder (``<src>/<class>/<image>``, decoded a chunk at a time, so the dataset
never has to fit in memory), an ``.npz`` (``x``, optional ``y``, ``classes``), a dataset name
(mnist, cifar10, ... from ``root``, e.g. torchvision's dataset folders under ``$HYBRIDFLOW_DATA``; an
external name such as ``imagenet64`` from ``<root>/imagenet64/<split>``), or any ``Dataset`` of
``(image, label)`` items.

Example:
    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp()) / "digits-test"
    >>> convert_dataset("digits", out, train=False)["n"]
    450
    >>> NpyImages(out).image_shape
    (1, 8, 8)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from .arrays import ImageData, PathLike
from .items import ItemCollate, check_first_item
from .npy import NPY_IMAGES, NPY_LABELS, NPY_META, NpyImages, NpyWriter, is_npy_layout
from .sources import EXTERNAL_DATASETS, dataset_key, list_datasets, load_dataset
from .streaming import LazyImageFolder, open_dataset

__all__ = ["convert_dataset"]


def _source(src: PathLike | Dataset | ImageData, root: PathLike | None, train: bool, download: bool,
            size: int | Sequence[int] | None, channels: int | str | None) -> tuple[Dataset | ImageData, str]:
    if isinstance(src, (Dataset, ImageData)):
        return src, type(src).__name__
    key = dataset_key(str(src))
    split = "train" if train else "test"
    if key in list_datasets():
        return load_dataset(key, root=root, train=train, download=download), f"{key} ({split})"
    if key in EXTERNAL_DATASETS:
        return open_dataset(key, root=root, train=train, size=size), f"{key} ({split})"
    path = Path(src)
    if not path.exists():
        known = ", ".join(list_datasets() + sorted(EXTERNAL_DATASETS))
        raise FileNotFoundError(f"{str(src)!r} is neither a dataset name ({known}) nor an existing path")
    if path.is_dir() and not is_npy_layout(path):
        return LazyImageFolder(path, size=size, channels=channels), str(path)
    return open_dataset(path), str(path)


def convert_dataset(src: PathLike | Dataset | ImageData, dst: PathLike, *, root: PathLike | None = None,
                    train: bool = True, download: bool = False, size: int | Sequence[int] | None = None,
                    channels: int | str | None = None, chunk: int = 512, num_workers: int = 0,
                    overwrite: bool = False) -> dict[str, Any]:
    """Write ``src`` to ``dst`` in the ``.npy`` layout; return a summary (``dst``, ``n``,
    ``image_shape``, ``classes``, ``labelled``, ``source``).

    Args:
        src: an image folder, an ``.npz``, a dataset name (``train`` picks the split, ``root``
            where it lies, ``download`` lets torchvision fetch it) or a ``Dataset``/:class:`ImageData`.
        dst: the folder to write (``images.npy``, ``labels.npy``, ``meta.json``).
        size, channels: for image folders (see :class:`~hybridflow.data.streaming.LazyImageFolder`).
        chunk: images decoded and written at a time (bounds the memory used).
        num_workers: DataLoader workers decoding images in parallel (order is kept).
        overwrite: replace a layout already at ``dst`` (otherwise refused).
    """
    dst = Path(dst)
    if is_npy_layout(dst) and not overwrite:
        raise FileExistsError(f"{dst} already holds a converted dataset ({NPY_IMAGES}); pass overwrite=True "
                              "(--overwrite) to replace it")
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be a positive integer, got {chunk!r}")
    data, source = _source(src, root, train, download, size, channels)
    if isinstance(data, NpyImages) and data.folder.resolve() == dst.resolve():
        raise ValueError(f"{dst} is the source itself")
    classes = [str(c) for c in getattr(data, "classes", None) or []]
    n = len(data)
    if n == 0:
        raise ValueError(f"{source} holds no images")
    if is_npy_layout(dst):
        for name in (NPY_IMAGES, NPY_LABELS, NPY_META):
            (dst / name).unlink(missing_ok=True)
    if isinstance(data, ImageData):
        image_shape = data.image_shape
        with NpyWriter(dst, n, image_shape, classes, source) as writer:
            for start in range(0, n, chunk):
                writer.write(data.images[start:start + chunk], data.labels[start:start + chunk])
        labelled = int((data.labels >= 0).sum())
    else:
        image_shape = check_first_item(data[0], source)
        loader = DataLoader(data, batch_size=chunk, shuffle=False, num_workers=num_workers,
                            collate_fn=ItemCollate(image_shape),
                            generator=torch.Generator().manual_seed(0))  # leaves the global RNG alone
        with NpyWriter(dst, n, image_shape, classes, source) as writer:
            for images, labels in loader:
                writer.write(images, labels)
        labelled = int((writer.labels >= 0).sum())
    return dict(dst=str(dst), n=n, image_shape=list(image_shape), classes=classes, labelled=labelled, source=source)
