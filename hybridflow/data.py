r"""Datasets as integer images: torchvision by name, the embedded default, arrays, pixel shuffles.

Canonical form everywhere in hybridflow: images are CPU ``torch.uint8`` tensors of shape
``(N, C, H, W)`` with values 0..255 (the flows dequantise integer pixels themselves), labels are
``torch.int64`` of shape ``(N,)`` with ``-1`` meaning "unlabelled" (scikit-learn's convention).
Label *encoding* (class names to 0..K-1) belongs to the estimators, not here.

Example:
    >>> data = load_digits_data(train=True)
    >>> data.images.shape, data.images.dtype
    (torch.Size([1347, 1, 8, 8]), torch.uint8)
    >>> train, val = data.split(0.2, seed=0)
    >>> len(train), len(val)
    (1078, 269)
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence, Union

import numpy as np
import torch
from torch.utils.data import TensorDataset

__all__ = [
    "ImageData",
    "as_images",
    "check_labels",
    "load_digits_data",
    "load_dataset",
    "list_datasets",
    "load_arrays",
    "load_npz",
    "load_image_folder",
    "PixelPermutation",
    "LocalShuffle",
    "GlobalShuffle",
    "CIFAR10_CLASSES",
]

ArrayLike = Union[np.ndarray, torch.Tensor]
PathLike = Union[str, "os.PathLike[str]"]

CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]
_DIGIT_CLASSES = [str(i) for i in range(10)]


# --------------------------------------------------------------------------- validation


def _check_image_shape(image_shape: Sequence[int]) -> tuple[int, int, int]:
    """Validate a ``(C, H, W)`` triple with C in {1, 3}."""
    try:
        shape = tuple(int(s) for s in image_shape)
    except TypeError:
        raise TypeError(f"image_shape must be a (C, H, W) tuple of ints, got {image_shape!r}") from None
    if len(shape) != 3 or min(shape) <= 0:
        raise ValueError(f"image_shape must be a (C, H, W) tuple of positive ints, got {image_shape!r}")
    if shape[0] not in (1, 3):
        raise ValueError(f"image_shape has {shape[0]} channels; only 1 (grey) or 3 (RGB) are supported")
    return shape  # type: ignore[return-value]


def _to_tensor(x: Any, what: str) -> torch.Tensor:
    """A CPU tensor: uint8 kept, other integers as int64, floats as float32/float64."""
    if isinstance(x, np.ndarray):
        if x.dtype.kind not in "uif":
            raise TypeError(f"{what} must have a numeric (integer or float) dtype, got {x.dtype}")
        if x.dtype.kind == "f":
            x = x.astype(np.float64 if x.dtype == np.float64 else np.float32, copy=False)
        elif x.dtype != np.uint8:
            x = x.astype(np.int64)  # torch has few ops on uint16/32/64
        return torch.from_numpy(np.ascontiguousarray(x))
    if isinstance(x, torch.Tensor):
        t = x.detach().cpu()
        if t.dtype == torch.bool or t.is_complex():
            raise TypeError(f"{what} must have a real numeric (integer or float) dtype, got {t.dtype}")
        if t.is_floating_point():
            return t if t.dtype in (torch.float32, torch.float64) else t.float()
        return t if t.dtype == torch.uint8 else t.to(torch.int64)
    raise TypeError(
        f"{what} must be a numpy array or a torch tensor, got {type(x).__name__}; "
        "wrap it with np.asarray(...)"
    )


def _to_nchw(t: torch.Tensor, image_shape: tuple[int, int, int] | None) -> torch.Tensor:
    """Reshape/permute a batch to (N, C, H, W) by the layout rules of :func:`as_images`."""
    shape = tuple(t.shape)
    if t.ndim not in (2, 3, 4):
        raise ValueError(
            f"images must be a batch: (N, D), (N, H, W), (N, H, W, C) or (N, C, H, W); "
            f"got a {t.ndim}-D array of shape {shape}"
        )
    if t.numel() == 0:
        raise ValueError(f"empty input: images of shape {shape} hold no pixels (N = 0?)")
    if t.ndim == 2:
        n, d = shape
        if image_shape is not None:
            if math.prod(image_shape) != d:
                raise ValueError(
                    f"flattened images have D={d} values but image_shape={image_shape} needs "
                    f"{math.prod(image_shape)}"
                )
            return t.reshape(n, *image_shape)
        side = math.isqrt(d)
        if side * side != d:
            raise ValueError(
                f"2-D input of shape {shape} is read as N={n} flattened images of D={d} values, "
                "but D is not a perfect square: pass image_shape=(C, H, W); "
                "for a single (H, W) image pass x[None]"
            )
        return t.reshape(n, 1, side, side)
    if t.ndim == 3:
        # A trailing 1 or 3 means a single (H, W, C) image, not N images that are 1 or 3 pixels wide.
        if shape[-1] in (1, 3):
            raise ValueError(
                f"3-D input of shape {shape} looks like a single (H, W, C) image; "
                "pass x[None] for a batch of one"
            )
        if shape[0] == 3:
            raise ValueError(
                f"3-D input of shape {shape} is ambiguous: one (C, H, W) RGB image or 3 grey "
                "(H, W) images; pass x[None] for a single image or x[:, None] for grey images"
            )
        t = t[:, None]
    elif shape[1] not in (1, 3):
        if shape[-1] not in (1, 3):
            raise ValueError(
                f"4-D input of shape {shape} has no channel axis of size 1 or 3 "
                "(expected (N, C, H, W) or (N, H, W, C) with C in {1, 3})"
            )
        t = t.permute(0, 3, 1, 2)
    if image_shape is not None and tuple(t.shape[1:]) != image_shape:
        raise ValueError(f"images have shape (C, H, W) = {tuple(t.shape[1:])}, expected {image_shape}")
    return t


def _to_uint8(t: torch.Tensor, what: str) -> torch.Tensor:
    """Map integer 0..255, float 0-1 or whole-number float 0..255 values to uint8."""
    if t.dtype == torch.uint8:
        return t
    if not t.is_floating_point():
        lo, hi = int(t.min()), int(t.max())
        if lo < 0 or hi > 255:
            raise ValueError(f"{what} are integers in {lo}..{hi}; pixel values must lie in 0..255")
        return t.to(torch.uint8)
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{what} contain NaN or infinite values")
    lo, hi = float(t.min()), float(t.max())
    if lo < 0:
        raise ValueError(
            f"{what} contain negative values (min {lo:g}); expected 0-1 floats or 0..255 pixels "
            "(undo any mean/std normalisation first)"
        )
    if hi <= 1.0:
        return (t * 255).round().to(torch.uint8)
    if hi > 255:
        raise ValueError(f"{what} exceed 255 (max {hi:g}); expected 0-1 floats or 0..255 pixels")
    if not torch.equal(t, t.round()):
        raise ValueError(
            f"{what} are floats up to {hi:g} that are not whole numbers: expected either 0-1 floats "
            "or whole-number 0..255 pixel values"
        )
    return t.to(torch.uint8)


def as_images(x: ArrayLike, image_shape: Sequence[int] | None = None) -> torch.Tensor:
    """Convert a batch of images to the canonical CPU uint8 ``(N, C, H, W)`` tensor.

    Layouts: ``(N, C, H, W)`` and ``(N, H, W, C)`` with C in {1, 3} (4-D: dim 1 in {1, 3} means
    NCHW, else a last dim in {1, 3} means NHWC), ``(N, H, W)`` grey, and ``(N, D)`` flattened
    (scikit-learn's ``(n_samples, n_features)``; needs ``image_shape`` unless D is a perfect
    square, then C = 1). Values: integers in 0..255, floats with max <= 1 (scaled by 255 and
    rounded), or whole-number floats in 0..255. A single image is refused where it can be told
    apart (3-D with a trailing 1/3 or a leading 3; 2-D whose width is not a perfect square): pass
    ``x[None]``. 2-D input is always ``(N, D)``, so a lone (16, 16) image would read as 16
    flattened 4x4 images; likewise ``(3, H, W)`` is refused as ambiguous (use ``x[:, None]``
    for three grey images).

    Example:
        >>> as_images(np.zeros((2, 28, 28, 3), dtype=np.float32)).shape
        torch.Size([2, 3, 28, 28])
    """
    shape = None if image_shape is None else _check_image_shape(image_shape)
    t = _to_tensor(x, "images")
    t = _to_nchw(t, shape)
    return _to_uint8(t, "images").contiguous()


def check_labels(y: Any, n: int) -> torch.Tensor:
    """Validate labels: length ``n``, integer-valued, >= -1 (-1 = unlabelled); return int64.

    Example:
        >>> check_labels([0, 2, -1], 3)
        tensor([ 0,  2, -1])
    """
    if isinstance(y, torch.Tensor):
        t = y.detach().cpu()
        if t.dtype == torch.bool or t.is_complex():
            raise TypeError(f"labels must be integers (-1 = unlabelled), got dtype {t.dtype}")
    else:
        arr = np.asarray(y)
        if arr.dtype.kind not in "uif":
            raise TypeError(
                f"labels must be integers (-1 = unlabelled), got dtype {arr.dtype}; encode class "
                "names as 0..K-1 first (the estimators do this for you)"
            )
        t = torch.from_numpy(arr.astype(np.float64 if arr.dtype.kind == "f" else np.int64))
    if t.ndim != 1:
        raise ValueError(f"labels must be 1-D of length {n}, got shape {tuple(t.shape)} (try y.ravel())")
    if len(t) != n:
        raise ValueError(f"got {len(t)} labels for {n} images")
    if t.is_floating_point():
        if not bool(torch.isfinite(t).all()) or not torch.equal(t, t.round()):
            raise ValueError("labels must be whole numbers (-1 = unlabelled); got non-integer floats")
    t = t.to(torch.int64)
    if n > 0 and int(t.min()) < -1:
        raise ValueError(f"labels must be >= -1 (-1 = unlabelled), got {int(t.min())}")
    return t


# --------------------------------------------------------------------------- container


@dataclass(eq=False, repr=False)
class ImageData:
    """Images (uint8 N,C,H,W), labels (int64 N,, -1 = unlabelled) and class names in label order.

    The constructor canonicalises its inputs through :func:`as_images` and :func:`check_labels`;
    ``labels=None`` means all unlabelled.

    Example:
        >>> data = ImageData(torch.zeros(4, 1, 8, 8, dtype=torch.uint8), torch.tensor([0, 1, 0, 1]))
        >>> len(data), data.image_shape, data.num_classes
        (4, (1, 8, 8), 2)
    """

    images: torch.Tensor
    labels: torch.Tensor | None = None
    classes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.images = as_images(self.images)
        n = len(self.images)
        if self.labels is None:
            self.labels = torch.full((n,), -1, dtype=torch.int64)
        else:
            self.labels = check_labels(self.labels, n)
        self.classes = [str(c) for c in self.classes]
        top = int(self.labels.max())
        if self.classes and top >= len(self.classes):
            raise ValueError(f"label {top} has no name: only {len(self.classes)} classes given")

    def __len__(self) -> int:
        return len(self.images)

    def __repr__(self) -> str:
        labelled = int((self.labels >= 0).sum())
        return (
            f"ImageData(n={len(self)}, image_shape={self.image_shape}, "
            f"num_classes={self.num_classes}, labelled={labelled})"
        )

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        """``len(classes)`` if names are given, else the largest label + 1 (0 if none labelled)."""
        if self.classes:
            return len(self.classes)
        return int(self.labels.max()) + 1 if len(self) else 0

    def subset(self, indices: Any) -> ImageData:
        """The examples at ``indices`` (ints, a bool mask, a slice, array or tensor)."""
        if not isinstance(indices, slice):
            indices = torch.as_tensor(np.asarray(indices) if not isinstance(indices, torch.Tensor) else indices)
            if indices.dtype != torch.bool:
                indices = indices.to(torch.int64)
        return ImageData(self.images[indices], self.labels[indices], list(self.classes))

    def split(self, fraction: float, seed: int = 0, stratify: bool = True) -> tuple[ImageData, ImageData]:
        """Split into ``(rest, part)`` where ``part`` holds ``round(fraction * N)`` examples.

        Stratified by label (-1 counts as its own group) when ``stratify`` and every group has
        at least two members; otherwise a simple seeded random split. Both parts keep the
        original order.

        Example:
            >>> train, val = load_digits_data().split(0.1, seed=0)
        """
        from sklearn.model_selection import train_test_split

        n = len(self)
        if not 0.0 < float(fraction) < 1.0:
            raise ValueError(f"fraction must lie strictly between 0 and 1, got {fraction}")
        n_part = round(float(fraction) * n)
        if not 1 <= n_part <= n - 1:
            raise ValueError(f"fraction={fraction} of {n} examples leaves one side of the split empty")
        labels = self.labels.numpy()
        counts = np.unique(labels, return_counts=True)[1]
        groups = len(counts)
        # train_test_split refuses stratification it cannot honour; fall back rather than fail.
        can_stratify = stratify and counts.min() >= 2 and min(n_part, n - n_part) >= groups
        rest, part = train_test_split(
            np.arange(n), test_size=n_part, random_state=seed,
            stratify=labels if can_stratify else None,
        )
        return self.subset(np.sort(rest)), self.subset(np.sort(part))

    def to_dataset(self) -> TensorDataset:
        """A Dataset yielding ``(image uint8 (C, H, W), label int64 scalar)``."""
        return TensorDataset(self.images, self.labels)

    def permuted(self, transform: Callable[[torch.Tensor], torch.Tensor]) -> ImageData:
        """A copy with ``transform`` (e.g. :class:`LocalShuffle`) applied to the images."""
        return ImageData(transform(self.images), self.labels.clone(), list(self.classes))


# --------------------------------------------------------------------------- arrays and files


def load_arrays(
    x: ArrayLike,
    y: Any = None,
    image_shape: Sequence[int] | None = None,
    classes: Sequence[str] | None = None,
) -> ImageData:
    """Wrap in-memory arrays (any layout :func:`as_images` accepts); ``y=None`` = unlabelled.

    Example:
        >>> load_arrays(np.zeros((5, 64)), np.arange(5)).image_shape
        (1, 8, 8)
    """
    return ImageData(as_images(x, image_shape), y, list(classes or []))


def load_npz(path: PathLike, image_shape: Sequence[int] | None = None) -> ImageData:
    """Load an ``.npz`` with key ``x`` (images) and optional ``y`` (labels), ``classes`` (names).

    Example:
        >>> data = load_npz("cifar10-test1000.npz")  # doctest: +SKIP
    """
    with np.load(path, allow_pickle=False) as archive:
        keys = list(archive.files)
        if "x" not in keys:
            raise ValueError(f"{path}: no 'x' array (keys: {keys}); expected 'x' images and optional 'y' labels")
        x = archive["x"]
        y = archive["y"] if "y" in keys else None
        classes = [str(c) for c in archive["classes"]] if "classes" in keys else []
    return load_arrays(x, y, image_shape, classes)


_GREY_MODES = {"1", "L", "LA"}


def _pil_mode(channels: int | str | None) -> str | None:
    """PIL mode for ``channels`` (1/'L' or 3/'RGB'); None = decide from the files."""
    if channels is None:
        return None
    modes = {1: "L", 3: "RGB", "L": "L", "RGB": "RGB"}
    key = channels.upper() if isinstance(channels, str) else channels
    if key not in modes:
        raise ValueError(f"channels must be 1, 3, 'L', 'RGB' or None, got {channels!r}")
    return modes[key]


def _resize(image: Any, size: int | Sequence[int] | None) -> Any:
    """An int resizes the shorter side then centre-crops a square; (H, W) resizes exactly."""
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
    mode = _pil_mode(channels)
    if mode is None:
        grey = all(Image.open(path).mode in _GREY_MODES for path, _ in folder.samples)
        mode = "L" if grey else "RGB"
    arrays, first = [], None
    for path, _ in folder.samples:
        with Image.open(path) as image:
            array = np.asarray(_resize(image.convert(mode), size))
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


# --------------------------------------------------------------------------- embedded default


def load_digits_data(train: bool = True, test_fraction: float = 0.25, seed: int = 0) -> ImageData:
    """scikit-learn's bundled 8x8 digits (values 0..16 mapped to 0..255), a fixed stratified split.

    No download. 1,797 images; with the defaults 1,347 train and 450 test.

    Example:
        >>> load_digits_data(train=False).images.shape
        torch.Size([450, 1, 8, 8])
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if not 0.0 < float(test_fraction) < 1.0:
        raise ValueError(f"test_fraction must lie strictly between 0 and 1, got {test_fraction}")
    digits = load_digits()
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    train_idx, test_idx = train_test_split(
        np.arange(len(images)), test_size=test_fraction, random_state=seed, stratify=digits.target
    )
    idx = np.sort(train_idx if train else test_idx)
    return ImageData(torch.from_numpy(images[idx]), digits.target[idx], list(_DIGIT_CLASSES))


# --------------------------------------------------------------------------- torchvision by name


def _default_root() -> str:
    """``$HYBRIDFLOW_DATA`` if set, else ``~/.cache/hybridflow/data``."""
    return os.environ.get("HYBRIDFLOW_DATA", os.path.join("~", ".cache", "hybridflow", "data"))


def _torchvision(factory: Callable[[], Any], name: str, where: str, download: bool) -> Any:
    """Build a torchvision dataset, turning its 'not found' RuntimeError into FileNotFoundError."""
    try:
        return factory()
    except RuntimeError as error:
        if download:
            raise
        raise FileNotFoundError(
            f"{name} not found: looked in {where} ({error}). Pass download=True to fetch it, "
            "or root= the folder that holds it"
        ) from error


def _subset_indices(n: int, limit: int | None, seed: int) -> torch.Tensor | None:
    """A seeded random choice of ``limit`` indices, sorted; None when all are kept."""
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1:
        raise ValueError(f"limit must be a positive int or None, got {limit!r}")
    if limit >= n:
        return None
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[:limit].sort().values


def _limited(data: ImageData, limit: int | None, seed: int) -> ImageData:
    idx = _subset_indices(len(data), limit, seed)
    return data if idx is None else data.subset(idx)


def _load_digits(root: str, train: bool, download: bool, limit: int | None, seed: int, size: int) -> ImageData:
    return _limited(load_digits_data(train=train), limit, seed)


def _mnist_like(cls_name: str, name: str) -> Callable[..., ImageData]:
    def load(root: str, train: bool, download: bool, limit: int | None, seed: int, size: int) -> ImageData:
        import torchvision.datasets as tvd

        cls = getattr(tvd, cls_name)
        where = os.path.join(root, cls_name, "raw")
        ds = _torchvision(lambda: cls(root, train=train, download=download), name, where, download)
        classes = _DIGIT_CLASSES if cls_name == "MNIST" else ds.classes
        data = ImageData(ds.data[:, None], torch.as_tensor(ds.targets), list(classes))
        return _limited(data, limit, seed)

    return load


def _load_cifar10(root: str, train: bool, download: bool, limit: int | None, seed: int, size: int) -> ImageData:
    import torchvision.datasets as tvd

    folder = os.path.join(root, "cifar-10-batches-py")
    npz = os.path.join(root, "cifar10-train4000.npz" if train else "cifar10-test1000.npz")
    # The shared test data ships CIFAR-10 subsets as npz; download=True still asks for the full set.
    if not os.path.isdir(folder) and os.path.isfile(npz) and not download:
        data = load_npz(npz)
        data = ImageData(data.images, data.labels, list(CIFAR10_CLASSES))
    else:
        where = f"{folder} (or {npz})"
        ds = _torchvision(lambda: tvd.CIFAR10(root, train=train, download=download), "cifar10", where, download)
        data = ImageData(torch.from_numpy(ds.data).permute(0, 3, 1, 2), torch.as_tensor(ds.targets), list(ds.classes))
    return _limited(data, limit, seed)


def _load_svhn(root: str, train: bool, download: bool, limit: int | None, seed: int, size: int) -> ImageData:
    import torchvision.datasets as tvd

    split = "train" if train else "test"
    where = os.path.join(root, f"{split}_32x32.mat")
    ds = _torchvision(lambda: tvd.SVHN(root, split=split, download=download), "svhn", where, download)
    data = ImageData(torch.from_numpy(ds.data), torch.from_numpy(ds.labels), list(_DIGIT_CLASSES))
    return _limited(data, limit, seed)


def _load_celeba(root: str, train: bool, download: bool, limit: int | None, seed: int, size: int) -> ImageData:
    """CelebA faces, unlabelled, resized and centre-cropped to ``size`` x ``size`` RGB."""
    import torchvision.datasets as tvd
    import torchvision.transforms as T

    transform = T.Compose([T.Resize(size), T.CenterCrop(size), T.PILToTensor()])
    split = "train" if train else "test"
    ds = _torchvision(
        lambda: tvd.CelebA(root, split=split, target_type=[], transform=transform, download=download),
        "celeba", os.path.join(root, "celeba"), download,
    )
    # CelebA has no in-memory array: decode only the chosen images.
    idx = _subset_indices(len(ds), limit, seed)
    indices = range(len(ds)) if idx is None else idx.tolist()
    images = torch.stack([ds[i][0] for i in indices])
    return ImageData(images, None, [])


_LOADERS: dict[str, Callable[..., ImageData]] = {
    "digits": _load_digits,
    "mnist": _mnist_like("MNIST", "mnist"),
    "fashionmnist": _mnist_like("FashionMNIST", "fashionmnist"),
    "cifar10": _load_cifar10,
    "svhn": _load_svhn,
    "celeba": _load_celeba,
}


def list_datasets() -> list[str]:
    """Names :func:`load_dataset` knows.

    Example:
        >>> "mnist" in list_datasets()
        True
    """
    return sorted(_LOADERS)


def _normalise_name(name: str) -> str:
    if not isinstance(name, str):
        raise TypeError(f"dataset name must be a string, got {type(name).__name__}")
    key = name.lower().replace("-", "").replace("_", "").replace(" ", "")
    if key not in _LOADERS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(list_datasets())}")
    return key


def load_dataset(
    name: str,
    root: PathLike | None = None,
    train: bool = True,
    download: bool = False,
    limit: int | None = None,
    seed: int = 0,
    *,
    shuffle: str | None = None,
    shuffle_patch: int = 4,
    shuffle_seed: int = 0,
    size: int = 64,
) -> ImageData:
    """Load a dataset by name: digits, mnist, fashionmnist, cifar10, svhn, celeba.

    Names are case-insensitive and ignore '-', '_' ("Fashion-MNIST", "CIFAR_10" work).
    ``root`` defaults to ``$HYBRIDFLOW_DATA`` or ``~/.cache/hybridflow/data``; digits is
    embedded and ignores it. For cifar10 without torchvision's folder, ``root`` may hold
    ``cifar10-train4000.npz`` / ``cifar10-test1000.npz`` (used unless ``download=True``).
    ``limit`` keeps a random subset of that many examples drawn with ``seed``, in dataset order
    (deterministic). ``shuffle`` = "local" / "global" applies :class:`LocalShuffle` (patch size
    ``shuffle_patch``) / :class:`GlobalShuffle`, seeded by ``shuffle_seed``. ``size``: CelebA's
    side length (CelebA labels are all -1).

    Example:
        >>> data = load_dataset("digits", limit=100, shuffle="global")
        >>> len(data), data.image_shape
        (100, (1, 8, 8))
    """
    key = _normalise_name(name)
    if shuffle not in (None, "local", "global"):
        raise ValueError(f"shuffle must be None, 'local' or 'global', got {shuffle!r}")
    root_dir = os.path.expanduser(os.fspath(root) if root is not None else _default_root())
    data = _LOADERS[key](root_dir, bool(train), bool(download), limit, seed, int(size))
    if shuffle == "local":
        data = data.permuted(LocalShuffle(data.image_shape, shuffle_patch, shuffle_seed))
    elif shuffle == "global":
        data = data.permuted(GlobalShuffle(data.image_shape, shuffle_seed))
    return data


# --------------------------------------------------------------------------- pixel permutations


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
        self.image_shape = _check_image_shape(image_shape)
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
        >>> x = load_digits_data().images
        >>> torch.equal(shuffle.inverse(shuffle(x)), x)
        True
    """

    def __init__(self, image_shape: Sequence[int], seed: int = 0) -> None:
        _, h, w = _check_image_shape(image_shape)
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
        _, h, w = _check_image_shape(image_shape)
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
