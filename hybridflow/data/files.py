"""Images from files: ``.npz`` arrays and image folders (one sub-folder per class).

Example:
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "set.npz"
    >>> np.savez(path, x=np.zeros((4, 8, 8), dtype=np.uint8), y=np.arange(4))
    >>> load_npz(path).image_shape
    (1, 8, 8)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .arrays import ImageData, PathLike, load_arrays
from .subsets import random_subset

__all__ = ["load_npz", "load_image_folder", "load_path", "pil_mode", "resize_image", "GREY_MODES"]


def load_npz(path: PathLike, image_shape: Sequence[int] | None = None) -> ImageData:
    """Load an ``.npz`` with key ``x`` (images) and optional ``y`` (labels), ``classes`` (names).

    Example:
        >>> data = load_npz("cifar10-test1000.npz")  # doctest: +SKIP
    """
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:  # numpy's words for a PNG or a truncated file mention pickles
        raise ValueError(f"{path} is not a readable .npz dataset (expected a NumPy archive with an 'x' array of "
                         f"images and optional 'y' labels): {type(error).__name__}") from None
    if not hasattr(archive, "files"):  # a bare .npy array, not an archive
        raise ValueError(f"{path} holds one array, not an .npz archive with 'x' images and optional 'y' labels")
    with archive:
        keys = list(archive.files)
        if "x" not in keys:
            raise ValueError(f"{path}: no 'x' array (keys: {keys}); expected 'x' images and optional 'y' labels")
        x = archive["x"]
        y = archive["y"] if "y" in keys else None
        classes = [str(c) for c in archive["classes"]] if "classes" in keys else []
    return load_arrays(x, y, image_shape, classes)


#: PIL modes read as grey images.
GREY_MODES = {"1", "L", "LA"}


def pil_mode(channels: int | str | None) -> str | None:
    """PIL mode for ``channels`` (1/'L' or 3/'RGB'); None = decide from the files.

    Example:
        >>> pil_mode(3), pil_mode("l"), pil_mode(None)
        ('RGB', 'L', None)
    """
    if channels is None:
        return None
    modes = {1: "L", 3: "RGB", "L": "L", "RGB": "RGB"}
    key = channels.upper() if isinstance(channels, str) else channels
    if key not in modes:
        raise ValueError(f"channels must be 1, 3, 'L', 'RGB' or None, got {channels!r}")
    return modes[key]


def resize_image(image: Any, size: int | Sequence[int] | None) -> Any:
    """An int resizes the shorter side then centre-crops a square; (H, W) resizes exactly; None keeps it.

    Example:
        >>> from PIL import Image
        >>> resize_image(Image.new("RGB", (40, 20)), 8).size
        (8, 8)
    """
    import torchvision.transforms.functional as TF

    if size is None:
        return image
    if isinstance(size, int):
        return TF.center_crop(TF.resize(image, size), size)
    return TF.resize(image, [int(s) for s in size])


def load_image_folder(
    root: PathLike, size: int | Sequence[int] | None = None, channels: int | str | None = None
) -> ImageData:
    """Load ``root/<class name>/<image>`` files (torchvision's ImageFolder layout).

    Class names come from the folder names (sorted). ``size``: an int resizes the shorter side
    and centre-crops to a square, ``(H, W)`` resizes exactly; without it all images must share
    one size. ``channels``: 1/'L' or 3/'RGB'; None picks grey if every file is grey, else RGB.

    Example:
        >>> data = load_image_folder("photos/", size=32, channels=3)  # doctest: +SKIP
    """
    from PIL import Image
    from torchvision.datasets import ImageFolder

    if not Path(root).is_dir():
        raise FileNotFoundError(f"image folder {str(root)!r} does not exist")
    folder = ImageFolder(str(root))  # discovery only: we decode the files ourselves
    mode = pil_mode(channels)
    if mode is None:
        grey = all(Image.open(path).mode in GREY_MODES for path, _ in folder.samples)
        mode = "L" if grey else "RGB"
    arrays, first = [], None
    for path, _ in folder.samples:
        with Image.open(path) as image:
            array = np.asarray(resize_image(image.convert(mode), size))
        if first is None:
            first = (path, array.shape)
        elif array.shape != first[1]:
            raise ValueError(
                f"images differ in size: {first[0]} is {first[1][:2]} but {path} is {array.shape[:2]} "
                "(H, W); pass size= to resize them"
            )
        arrays.append(array)
    stacked = np.stack(arrays)
    # Build NCHW here: as_images' layout guesses could misread e.g. three grey images.
    stacked = stacked[:, None] if mode == "L" else stacked.transpose(0, 3, 1, 2)
    return ImageData(torch.from_numpy(np.ascontiguousarray(stacked)), folder.targets, folder.classes)


def load_path(
    path: PathLike, train: bool = True, limit: int | None = None, seed: int = 0, size: int | None = None
) -> ImageData:
    """An ``.npz`` file, an image folder or a folder that ``hybridflow data convert`` wrote (one split,
    or ``train/`` and ``test/`` splits), as a fixed stratified split: 90% train, 10% test (a folder
    with both splits gives the one asked for, whole).

    ``limit`` keeps a seeded random subset of the chosen split (see :func:`random_subset`);
    ``size`` resizes the images of a folder (see :func:`load_image_folder`).

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "set.npz"
        >>> np.savez(path, x=np.zeros((20, 8, 8), dtype=np.uint8), y=np.arange(20) % 2)
        >>> len(load_path(path, train=True)), len(load_path(path, train=False))
        (18, 2)
    """
    path = Path(path)
    from .npy import NpyImages, is_npy_layout

    if not path.exists():
        raise FileNotFoundError(f"dataset path {path} does not exist")
    split = path / ("train" if train else "test")
    if is_npy_layout(split):  # data convert's two splits: the one asked for
        return random_subset(NpyImages(split).to_image_data(), limit, seed)
    if is_npy_layout(path):
        data = NpyImages(path).to_image_data()
    else:
        data = load_npz(path) if path.is_file() else load_image_folder(path, size=size)
    rest, held_out = data.split(0.1, seed=0)
    return random_subset(rest if train else held_out, limit, seed)
