r"""Datasets as integer images: arrays and files, every named dataset, pixel shuffles, synthetic OOD sets.

Canonical form everywhere in hybridflow: images are CPU ``torch.uint8`` tensors of shape
``(N, C, H, W)`` with values 0..255 (the flows dequantise integer pixels themselves), labels are
``torch.int64`` of shape ``(N,)`` with ``-1`` meaning "unlabelled" (scikit-learn's convention).
Label *encoding* (class names to 0..K-1) belongs to the estimators, not here.

Modules: :mod:`~hybridflow.data.arrays` (layouts, :class:`ImageData`), :mod:`~hybridflow.data.files`
(``.npz``, image folders), :mod:`~hybridflow.data.subsets`, :mod:`~hybridflow.data.sources` (named
datasets), :mod:`~hybridflow.data.spec` (:class:`DataSpec`), :mod:`~hybridflow.data.permutations`
and :mod:`~hybridflow.data.synthetic` (OOD sets).

Example:
    >>> data = load_digits_data(train=True)
    >>> data.images.shape, data.images.dtype
    (torch.Size([1347, 1, 8, 8]), torch.uint8)
    >>> train, val = data.split(0.2, seed=0)
    >>> len(train), len(val)
    (1078, 269)
"""

from .arrays import ArrayLike, ImageData, PathLike, as_images, check_image_shape, check_labels, load_arrays, to_nchw
from .files import load_image_folder, load_npz, load_path
from .permutations import SHUFFLES, GlobalShuffle, LocalShuffle, PixelPermutation, check_shuffle, pixel_shuffle
from .sources import (
    CIFAR10_CLASSES,
    DIGIT_CLASSES,
    EXTERNAL_DATASETS,
    UnknownDatasetError,
    check_dataset_name,
    data_root,
    dataset_key,
    list_datasets,
    load_dataset,
    load_digits_data,
    load_external,
)
from .spec import DataSpec
from .subsets import keep_labels, random_subset, subset_indices
from .synthetic import SYNTHETIC_OOD, inverted_images, load_ood_data, noise_images, shuffled_images, synthetic_ood

__all__ = [
    # arrays
    "ArrayLike", "ImageData", "PathLike", "as_images", "check_image_shape", "check_labels", "load_arrays", "to_nchw",
    # files
    "load_image_folder", "load_npz", "load_path",
    # subsets
    "keep_labels", "random_subset", "subset_indices",
    # named sources
    "CIFAR10_CLASSES", "DIGIT_CLASSES", "EXTERNAL_DATASETS", "UnknownDatasetError", "check_dataset_name", "data_root",
    "dataset_key", "list_datasets", "load_dataset", "load_digits_data", "load_external", "DataSpec",
    # permutations
    "SHUFFLES", "GlobalShuffle", "LocalShuffle", "PixelPermutation", "check_shuffle", "pixel_shuffle",
    # synthetic OOD sets
    "SYNTHETIC_OOD", "inverted_images", "load_ood_data", "noise_images", "shuffled_images", "synthetic_ood",
]
