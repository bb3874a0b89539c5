r"""The on-disk layout for datasets too big for memory: a folder of ``.npy`` files, read per image.

Layout of one split (what ``hybridflow data convert`` writes)::

    <folder>/images.npy   uint8 (N, C, H, W), C in {1, 3}
    <folder>/labels.npy   int64 (N,), -1 = unlabelled (optional: all unlabelled without it)
    <folder>/meta.json    {"classes": [...], "source": "..."} (optional)

``np.load(folder / "images.npy", mmap_mode="r")`` maps it. :class:`NpyImages` does not: it reads each
image with a positioned read (``os.pread``) into a fresh buffer. A memory map keeps every page it
has touched resident in the process (counted in its RSS) until the kernel needs the memory back, so
one pass over ImageNet64 through a map shows up as 15 GB of RSS; positioned reads go through the page
cache only, and the process holds one batch at a time (bench/stream_memory.py measures both).

Example:
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> with NpyWriter(folder, n=3, image_shape=(1, 4, 4), classes=["a", "b"]) as writer:
    ...     writer.write(np.zeros((3, 1, 4, 4), dtype=np.uint8), np.array([0, 1, -1]))
    >>> data = NpyImages(folder)
    >>> len(data), data.image_shape, data[1][0].shape, data[1][1], data.classes
    (3, (1, 4, 4), torch.Size([1, 4, 4]), 1, ['a', 'b'])
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from .arrays import ImageData, PathLike, check_image_shape

__all__ = ["NPY_IMAGES", "NPY_LABELS", "NPY_META", "is_npy_layout", "NpyImages", "NpyWriter"]

NPY_IMAGES, NPY_LABELS, NPY_META = "images.npy", "labels.npy", "meta.json"


def is_npy_layout(path: PathLike) -> bool:
    """Whether ``path`` is a folder holding ``images.npy``.

    Example:
        >>> is_npy_layout("/nowhere")
        False
    """
    return (Path(path) / NPY_IMAGES).is_file()


def _read_header(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """Shape, dtype and data offset of an ``.npy`` file, without reading its data."""
    with open(path, "rb") as f:
        try:
            version = np.lib.format.read_magic(f)
            reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = reader(f)
        except ValueError as error:
            raise ValueError(f"{path} is not a valid .npy file: {error}") from None
        offset = f.tell()
    if fortran:
        raise ValueError(f"{path} is stored in Fortran order; write it C-contiguous (np.ascontiguousarray)")
    return tuple(shape), np.dtype(dtype), offset


def _read_at(fd: int, view: memoryview, offset: int) -> int:
    """Fill ``view`` from ``offset`` of ``fd`` without moving a shared file position."""
    if hasattr(os, "preadv"):
        return os.preadv(fd, [view], offset)
    data = os.pread(fd, len(view), offset)
    view[:len(data)] = data
    return len(data)


class NpyImages(Dataset):
    """The ``.npy`` layout of a folder as a map-style dataset of ``(uint8 (C, H, W) tensor, int label)``,
    each image read from disk when asked for (see the module docstring for why not a memory map).

    It pickles without its file handle, so DataLoader workers open their own.
    """

    def __init__(self, folder: PathLike) -> None:
        self.folder = Path(folder)
        path = self.folder / NPY_IMAGES
        if not path.is_file():
            raise FileNotFoundError(f"{self.folder} holds no {NPY_IMAGES}: not the .npy layout (write one with "
                                    "`hybridflow data convert SRC DST`)")
        shape, dtype, self.offset = _read_header(path)
        if dtype != np.uint8 or len(shape) != 4 or shape[1] not in (1, 3):
            raise ValueError(f"{path} must hold uint8 images (N, C, H, W) with C in {{1, 3}}; found {dtype} "
                             f"of shape {shape}")
        self.n, self.image_shape = shape[0], check_image_shape(shape[1:])
        self.item_bytes = math.prod(self.image_shape)
        expected = self.offset + self.n * self.item_bytes
        if path.stat().st_size < expected:
            raise ValueError(f"{path} is truncated: {path.stat().st_size} bytes, its header needs {expected} "
                             "(an interrupted conversion? convert again)")
        labels_path = self.folder / NPY_LABELS
        if labels_path.is_file():
            labels = np.load(labels_path, allow_pickle=False)
            if labels.shape != (self.n,) or labels.dtype.kind not in "iu":
                raise ValueError(f"{labels_path} must hold {self.n} integer labels, found {labels.dtype} of shape "
                                 f"{labels.shape}")
            self.labels = torch.from_numpy(labels.astype(np.int64))
            if self.n and int(self.labels.min()) < -1:
                raise ValueError(f"{labels_path} holds label {int(self.labels.min())}; labels must be >= -1")
        else:
            self.labels = torch.full((self.n,), -1, dtype=torch.int64)
        meta_path = self.folder / NPY_META
        self.meta: dict[str, Any] = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        self.classes = [str(c) for c in self.meta.get("classes", [])]
        self._fd: int | None = None
        self._pid: int | None = None

    def __len__(self) -> int:
        return self.n

    def __repr__(self) -> str:
        return f"NpyImages({str(self.folder)!r}, n={self.n}, image_shape={self.image_shape})"

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_fd": None, "_pid": None}

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None and self._pid == os.getpid():
            os.close(self._fd)

    def _file(self) -> int:
        if self._fd is None or self._pid != os.getpid():  # a forked worker opens its own
            self._fd, self._pid = os.open(self.folder / NPY_IMAGES, os.O_RDONLY), os.getpid()
        return self._fd

    def _index(self, index: int) -> int:
        i = int(index)
        if not -self.n <= i < self.n:
            raise IndexError(f"index {index} is out of range for {self.n} images")
        return i % self.n

    def read(self, indices: Sequence[int]) -> Tensor:
        """The images at ``indices`` as one uint8 ``(len(indices), C, H, W)`` tensor."""
        idx = [self._index(i) for i in indices]
        size = self.item_bytes
        buffer = bytearray(len(idx) * size)
        view, fd = memoryview(buffer), self._file()
        for k, i in enumerate(idx):
            got = _read_at(fd, view[k * size:(k + 1) * size], self.offset + i * size)
            if got != size:
                raise OSError(f"{self.folder / NPY_IMAGES}: short read of image {i} ({got} of {size} bytes)")
        return torch.frombuffer(buffer, dtype=torch.uint8).view(len(idx), *self.image_shape)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        i = self._index(index)
        return self.read([i])[0], int(self.labels[i])

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[Tensor, int]]:
        # DataLoader calls this for a whole batch: one buffer, no per-item Python overhead beyond the reads.
        images = self.read(indices)
        labels = self.labels[[self._index(i) for i in indices]].tolist()
        return list(zip(images.unbind(0), labels))

    def to_image_data(self, indices: Sequence[int] | None = None) -> ImageData:
        """The images at ``indices`` (all of them by default) in memory, as an :class:`ImageData`."""
        idx = list(range(self.n)) if indices is None else [self._index(i) for i in indices]
        return ImageData(self.read(idx), self.labels[idx], list(self.classes))


class NpyWriter:
    """Writes the ``.npy`` layout chunk by chunk (a converter never holds the whole dataset).

    ``images.npy`` is written under a temporary name and renamed when all ``n`` images are in,
    so an interrupted conversion never leaves a layout that looks complete.
    """

    def __init__(self, folder: PathLike, n: int, image_shape: Sequence[int], classes: Sequence[str] = (),
                 source: str = "") -> None:
        self.folder, self.n = Path(folder), int(n)
        self.image_shape = check_image_shape(image_shape)
        if self.n < 1:
            raise ValueError(f"nothing to write: n = {n}")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.meta = dict(classes=[str(c) for c in classes], source=str(source), n=self.n,
                         image_shape=list(self.image_shape))
        self.labels = np.full(self.n, -1, dtype=np.int64)
        self.written = 0
        self._partial = self.folder / (NPY_IMAGES + ".partial")
        self._file = open(self._partial, "wb")
        header = dict(descr=np.lib.format.dtype_to_descr(np.dtype(np.uint8)), fortran_order=False,
                      shape=(self.n, *self.image_shape))
        np.lib.format.write_array_header_2_0(self._file, header)

    def write(self, images: np.ndarray | Tensor, labels: np.ndarray | Tensor | Sequence[int] | None = None) -> None:
        """Append uint8 ``(B, C, H, W)`` images and their labels (``None``: unlabelled)."""
        array = images.numpy() if isinstance(images, Tensor) else np.asarray(images)
        if array.dtype != np.uint8 or array.shape[1:] != self.image_shape:
            raise ValueError(f"expected uint8 images of shape (B, {', '.join(map(str, self.image_shape))}), got "
                             f"{array.dtype} {array.shape}")
        b = len(array)
        if self.written + b > self.n:
            raise ValueError(f"writing {self.written + b} images into a layout sized for {self.n}")
        if labels is not None:
            self.labels[self.written:self.written + b] = np.asarray(labels, dtype=np.int64)
        self._file.write(np.ascontiguousarray(array).tobytes())
        self.written += b

    def close(self) -> None:
        """Finish the files (raises if fewer than ``n`` images were written)."""
        if self._file.closed:
            return
        self._file.close()
        if self.written != self.n:
            self._partial.unlink()
            raise ValueError(f"only {self.written} of {self.n} images were written: layout discarded")
        np.save(self.folder / NPY_LABELS, self.labels)
        (self.folder / NPY_META).write_text(json.dumps(self.meta, indent=1))
        os.replace(self._partial, self.folder / NPY_IMAGES)

    def __enter__(self) -> NpyWriter:
        return self

    def __exit__(self, kind: Any, error: Any, trace: Any) -> None:
        if kind is None:
            self.close()
        else:  # a failed conversion leaves nothing behind that looks like a layout
            self._file.close()
            self._partial.unlink(missing_ok=True)
