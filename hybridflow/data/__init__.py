r"""Datasets as integer images: arrays and files, every named dataset, pixel shuffles, synthetic OOD sets.

Canonical form everywhere in hybridflow: images are CPU ``torch.uint8`` tensors of shape
``(N, C, H, W)`` with values 0..255 (the flows dequantise integer pixels themselves), labels are
``torch.int64`` of shape ``(N,)`` with ``-1`` meaning "unlabelled" (scikit-learn's convention).
Label *encoding* (class names to 0..K-1) belongs to the estimators, not here.

Modules: :mod:`~hybridflow.data.arrays` (layouts, :class:`ImageData`), :mod:`~hybridflow.data.files`
(``.npz``, image folders), :mod:`~hybridflow.data.subsets`, :mod:`~hybridflow.data.sources` (named
datasets), :mod:`~hybridflow.data.spec` (:class:`DataSpec`), :mod:`~hybridflow.data.permutations`
and :mod:`~hybridflow.data.synthetic` (OOD sets). Datasets bigger than memory:
:mod:`~hybridflow.data.items` (a ``Dataset``'s ``(image, label)`` items), :mod:`~hybridflow.data.loading`
(:class:`BatchSource`: the training loop's batches from any data, through a DataLoader),
:mod:`~hybridflow.data.npy` (the ``.npy`` layout read per image), :mod:`~hybridflow.data.streaming`
(:class:`LazyImageFolder`, :func:`open_dataset`) and :mod:`~hybridflow.data.convert` (the converter).

Example:
    >>> data = load_digits_data(train=True)
    >>> data.images.shape, data.images.dtype
    (torch.Size([1347, 1, 8, 8]), torch.uint8)
    >>> train, val = data.split(0.2, seed=0)
    >>> len(train), len(val)
    (1078, 269)
"""

from .arrays import (FLOAT_RANGES, ArrayLike, ImageData, PathLike, as_images, check_image_shape, check_labels,
                     float_range, load_arrays, to_nchw)
from .convert import convert_dataset
from .files import GREY_MODES, load_image_folder, load_npz, load_path, pil_mode, resize_image
from .items import ItemCollate, check_first_item, dataset_labels, image_item, item_label
from .labelled_batches import LabelledBatches
from .loading import BatchSource, BatchStream, StepBatchSampler, StepPlan, as_batch_source, flip_batch
from .npy import NPY_IMAGES, NPY_LABELS, NPY_META, NpyImages, NpyWriter, is_npy_layout
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
from .streaming import LazyImageFolder, open_dataset
from .subsets import keep_labels, random_subset, subset_indices
from .synthetic import SYNTHETIC_OOD, inverted_images, load_ood_data, noise_images, shuffled_images, synthetic_ood

__all__ = [
    # arrays
    "ArrayLike", "ImageData", "PathLike", "FLOAT_RANGES", "as_images", "check_image_shape", "check_labels",
    "float_range", "load_arrays", "to_nchw",
    # files
    "load_image_folder", "load_npz", "load_path", "pil_mode", "resize_image", "GREY_MODES",
    # any Dataset, streamed from disk
    "ItemCollate", "check_first_item", "dataset_labels", "image_item", "item_label", "LabelledBatches",
    "BatchSource", "BatchStream", "StepBatchSampler", "StepPlan", "as_batch_source", "flip_batch",
    "NPY_IMAGES", "NPY_LABELS", "NPY_META", "NpyImages", "NpyWriter", "is_npy_layout",
    "LazyImageFolder", "open_dataset", "convert_dataset",
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
