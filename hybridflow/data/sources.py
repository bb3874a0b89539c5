"""Every named dataset: the embedded digits, torchvision's (mnist, fashionmnist, cifar10, svhn,
celeba) and the external ones torchvision cannot fetch (downsampled ImageNet, galaxies, anime faces).

Example:
    >>> data = load_dataset("digits", train=False, limit=100)
    >>> len(data), data.image_shape
    (100, (1, 8, 8))
    >>> "imagenet32" in EXTERNAL_DATASETS
    True
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .arrays import ImageData, PathLike
from .files import load_image_folder, load_npz, load_path
from .npy import NpyImages, is_npy_layout
from .permutations import check_shuffle, pixel_shuffle
from .subsets import random_subset, subset_indices

__all__ = [
    "CIFAR10_CLASSES",
    "DIGIT_CLASSES",
    "EXTERNAL_DATASETS",
    "UnknownDatasetError",
    "check_dataset_name",
    "data_root",
    "dataset_key",
    "list_datasets",
    "load_dataset",
    "load_digits_data",
    "load_external",
]

CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]
DIGIT_CLASSES = [str(i) for i in range(10)]

#: Datasets torchvision cannot fetch: their side length and where to get them.
EXTERNAL_DATASETS = {
    "imagenet32": dict(size=32, source="Downsampled ImageNet 32x32 (Chrabaszcz et al. 2017; "
                                       "https://image-net.org/download-images.php, 'Imagenet32'; the version flow "
                                       "papers use is on Academic Torrents)"),
    "imagenet64": dict(size=64, source="Downsampled ImageNet 64x64 (Chrabaszcz et al. 2017; "
                                       "https://image-net.org/download-images.php, 'Imagenet64')"),
    "galaxy32": dict(size=32, source="the merging / non-merging galaxy images of Ackermann et al. (2018) "
                                     "(the paper's ref. [1]), downsampled to 32x32"),
    "animefaces": dict(size=64, source="the AnimeFace dataset (Naftali et al. 2023; Kaggle 'animefacedataset'), "
                                       "64x64"),
}


class UnknownDatasetError(ValueError):
    """A dataset name that is neither a known dataset, an external one nor a path."""


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
    return ImageData(torch.from_numpy(images[idx]), digits.target[idx], list(DIGIT_CLASSES))


# --------------------------------------------------------------------------- torchvision by name


def data_root(root: PathLike | None = None) -> str:
    """The folder holding the datasets: ``root`` if given, else ``$HYBRIDFLOW_DATA`` if set, else
    ``~/.cache/hybridflow/data`` (``~`` expanded).

    Example:
        >>> data_root("~/data") == os.path.expanduser("~/data")
        True
    """
    default = os.environ.get("HYBRIDFLOW_DATA", os.path.join("~", ".cache", "hybridflow", "data"))
    return os.path.expanduser(os.fspath(root) if root is not None else default)


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


def _load_digits(root: str, train: bool, download: bool, limit: int | None, seed: int, size: int) -> ImageData:
    return random_subset(load_digits_data(train=train), limit, seed)


def _mnist_like(cls_name: str, name: str) -> Callable[..., ImageData]:
    def load(root: str, train: bool, download: bool, limit: int | None, seed: int, size: int) -> ImageData:
        import torchvision.datasets as tvd

        cls = getattr(tvd, cls_name)
        where = os.path.join(root, cls_name, "raw")
        ds = _torchvision(lambda: cls(root, train=train, download=download), name, where, download)
        classes = DIGIT_CLASSES if cls_name == "MNIST" else ds.classes
        data = ImageData(ds.data[:, None], torch.as_tensor(ds.targets), list(classes))
        return random_subset(data, limit, seed)

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
    return random_subset(data, limit, seed)


def _load_svhn(root: str, train: bool, download: bool, limit: int | None, seed: int, size: int) -> ImageData:
    import torchvision.datasets as tvd

    split = "train" if train else "test"
    where = os.path.join(root, f"{split}_32x32.mat")
    ds = _torchvision(lambda: tvd.SVHN(root, split=split, download=download), "svhn", where, download)
    data = ImageData(torch.from_numpy(ds.data), torch.from_numpy(ds.labels), list(DIGIT_CLASSES))
    return random_subset(data, limit, seed)


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
    idx = subset_indices(len(ds), limit, seed)
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


def dataset_key(name: str) -> str:
    """The lookup key of a dataset name: lower case, without '-', '_' and spaces.

    Example:
        >>> dataset_key("Fashion-MNIST")
        'fashionmnist'
    """
    return name.lower().replace("-", "").replace("_", "").replace(" ", "")


def _normalise_name(name: str) -> str:
    if not isinstance(name, str):
        raise TypeError(f"dataset name must be a string, got {type(name).__name__}")
    key = dataset_key(name)
    if key not in _LOADERS:
        raise UnknownDatasetError(f"unknown dataset {name!r}; known: {', '.join(list_datasets())}")
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
    check_shuffle(shuffle)
    data = _LOADERS[key](data_root(root), bool(train), bool(download), limit, seed, int(size))
    permutation = pixel_shuffle(shuffle, data.image_shape, shuffle_patch, shuffle_seed)
    return data if permutation is None else data.permuted(permutation)


def load_external(name: str, root: PathLike | None = None, train: bool = True, limit: int | None = None,
                  seed: int = 0) -> ImageData:
    """An :data:`EXTERNAL_DATASETS` set, in memory, from ``<root>/<name>/{train,test}.npz``, image
    folders or the ``.npy`` layout ``<root>/<name>/{train,test}/images.npy`` (of which only the
    ``limit`` images kept are read; :func:`~hybridflow.data.streaming.open_dataset` streams it instead).

    The test split is ``test`` or ``val``; without either, a fixed 10% of the train files (see
    :func:`~hybridflow.data.files.load_path`). A missing set raises FileNotFoundError saying where
    to get it: none of them can be downloaded automatically.

    Example:
        >>> load_external("galaxy32", root="/nowhere")  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        FileNotFoundError: dataset galaxy32 is not on this machine: ...
    """
    key = dataset_key(name)
    info = EXTERNAL_DATASETS[key]
    base = Path(data_root(root)) / key
    split_names = ("train",) if train else ("test", "val")
    for split in split_names:
        if is_npy_layout(base / split):
            stored = NpyImages(base / split)
            idx = subset_indices(len(stored), limit, seed)
            return stored.to_image_data(None if idx is None else idx.tolist())
        if (base / f"{split}.npz").is_file():
            return random_subset(load_npz(base / f"{split}.npz"), limit, seed)
        if (base / split).is_dir():
            return random_subset(load_image_folder(base / split, size=info["size"]), limit, seed)
    if not train and ((base / "train.npz").is_file() or (base / "train").is_dir()):
        source = base / "train.npz" if (base / "train.npz").is_file() else base / "train"
        return load_path(source, train=False, limit=limit, seed=seed, size=info["size"])
    raise FileNotFoundError(
        f"dataset {key} is not on this machine: looked for {base}/train.npz (arrays x, y), {base}/train/ "
        f"(an image folder, one sub-folder per class) or {base}/train/images.npy (the .npy layout `hybridflow "
        f"data convert` writes); it cannot be downloaded automatically: get "
        f"{info['source']} and put it there (or point --data-root / HYBRIDFLOW_DATA at its parent)")


def check_dataset_name(name: str, extra: tuple[str, ...] = ()) -> None:
    """Raise :class:`UnknownDatasetError` for a name that is neither a known dataset, an external
    one, one of ``extra`` nor an existing path.

    Example:
        >>> check_dataset_name("CIFAR-10")  # fine: returns None
        >>> check_dataset_name("imagenet1k")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        hybridflow.data.sources.UnknownDatasetError: unknown dataset 'imagenet1k': known datasets are ...
    """
    key = dataset_key(name)
    if key in list_datasets() or key in EXTERNAL_DATASETS or key in extra or Path(name).exists():
        return
    known = ", ".join(list_datasets() + sorted(EXTERNAL_DATASETS) + list(extra))
    raise UnknownDatasetError(f"unknown dataset {name!r}: known datasets are {known}, or give a path to an .npz "
                              "file or an image folder")
