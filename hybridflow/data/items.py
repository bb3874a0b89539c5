r"""One ``(image, label)`` item of a user's ``Dataset`` as canonical pixels, and batches of them.

A :class:`torch.utils.data.Dataset` handed to hybridflow yields ``(image, label)`` pairs. The image
may be a uint8 ``(C, H, W)`` tensor, a PIL image (modes ``L`` and ``RGB``; ``1``/``LA`` read as
grey), an ``(H, W, C)`` or ``(H, W)`` uint8 NumPy array, with C in {1, 3}; the label an integer,
``-1`` meaning unlabelled. Floats are refused rather than guessed at: a ``ToTensor()`` /
``Normalize`` transform would otherwise turn into silently wrong bits/dim.

:func:`image_item` converts one item (in the DataLoader's workers, through :class:`ItemCollate`),
:func:`check_first_item` validates the first one with the clearest message it can.

Example:
    >>> import numpy as np
    >>> x, y = image_item((np.zeros((8, 8, 3), dtype=np.uint8), 2))
    >>> x.shape, x.dtype, y
    (torch.Size([3, 8, 8]), torch.uint8, 2)
    >>> batch = ItemCollate()([(np.zeros((8, 8), dtype=np.uint8), 0), (np.ones((8, 8), dtype=np.uint8), -1)])
    >>> batch[0].shape, batch[1].tolist()
    (torch.Size([2, 1, 8, 8]), [0, -1])
"""

from __future__ import annotations

import numbers
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = ["image_item", "item_label", "check_first_item", "dataset_labels", "ItemCollate"]

_FLOAT_HINT = ("give uint8 pixels 0..255 (drop ToTensor()/Normalize from the transform, or use "
               "torchvision.transforms.PILToTensor()): the flow dequantises integer pixels itself")


def _pil_to_array(image: Any) -> np.ndarray:
    mode = image.mode
    if mode in ("1", "L", "LA", "I;16", "I", "F"):
        if mode in ("I;16", "I", "F"):
            raise TypeError(f"PIL image of mode {mode!r} holds more than 8 bits per pixel; convert it to 'L' "
                            "(image.convert('L')) or 'RGB' first")
        return np.asarray(image.convert("L"))
    if mode in ("RGB", "RGBA", "P", "CMYK", "YCbCr", "LAB", "HSV"):
        # Alpha is dropped and palettes expanded, as PIL's convert('RGB') does.
        return np.asarray(image.convert("RGB"))
    raise TypeError(f"PIL image of mode {mode!r} is not supported; convert it to 'L' or 'RGB' first")


def _array_to_chw(array: np.ndarray) -> Tensor:
    """An (H, W) or (H, W, C) uint8 array as a (C, H, W) tensor."""
    if array.dtype.kind == "f":
        raise TypeError(f"image is a float array ({array.dtype}); {_FLOAT_HINT}")
    if array.dtype != np.uint8:
        if array.dtype.kind not in "iu":
            raise TypeError(f"image array has dtype {array.dtype}; expected uint8 pixels 0..255")
        lo, hi = (int(array.min()), int(array.max())) if array.size else (0, 0)
        if lo < 0 or hi > 255:
            raise ValueError(f"image array holds integers in {lo}..{hi}; pixel values must lie in 0..255")
        array = array.astype(np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3:
        raise ValueError(f"image array must be (H, W) or (H, W, C); got shape {array.shape}")
    if array.shape[-1] not in (1, 3):
        if array.shape[0] in (1, 3):
            raise ValueError(f"image array has shape {array.shape}: NumPy images must be (H, W, C) (PIL's "
                             "layout); pass a torch tensor for (C, H, W) or transpose it (a.transpose(1, 2, 0))")
        raise ValueError(f"image array of shape {array.shape} has {array.shape[-1]} channels; only 1 (grey) "
                         "or 3 (RGB) are supported")
    chw = np.ascontiguousarray(array.transpose(2, 0, 1))
    return torch.from_numpy(chw if chw.flags.writeable else chw.copy())  # PIL's arrays are read-only


def _tensor_to_chw(t: Tensor) -> Tensor:
    t = t.detach().cpu()
    if t.is_floating_point():
        raise TypeError(f"image is a {t.dtype} tensor; {_FLOAT_HINT}")
    if t.dtype == torch.bool or t.is_complex():
        raise TypeError(f"image tensor has dtype {t.dtype}; expected uint8 pixels 0..255")
    if t.ndim == 2:
        t = t[None]
    if t.ndim != 3:
        raise ValueError(f"image tensor must be (C, H, W); got shape {tuple(t.shape)}")
    if t.shape[0] not in (1, 3):
        if t.shape[-1] in (1, 3):
            raise ValueError(f"image tensor has shape {tuple(t.shape)}: tensors must be (C, H, W); this looks "
                             "like (H, W, C): permute it (t.permute(2, 0, 1))")
        raise ValueError(f"image tensor of shape {tuple(t.shape)} has {t.shape[0]} channels; only 1 (grey) or "
                         "3 (RGB) are supported")
    if t.dtype != torch.uint8:
        lo, hi = int(t.min()), int(t.max())
        if lo < 0 or hi > 255:
            raise ValueError(f"image tensor holds integers in {lo}..{hi}; pixel values must lie in 0..255")
        t = t.to(torch.uint8)
    return t


def item_label(label: Any) -> int:
    """A label as a Python int >= -1 (-1 = unlabelled); refuses floats, strings and None.

    Example:
        >>> item_label(np.int64(3)), item_label(torch.tensor(-1))
        (3, -1)
    """
    if isinstance(label, Tensor):
        if label.numel() != 1 or label.is_floating_point() or label.dtype == torch.bool:
            raise TypeError(f"label must be one integer (-1 = unlabelled), got a {label.dtype} tensor of shape "
                            f"{tuple(label.shape)}")
        label = label.item()
    if isinstance(label, (bool, np.bool_)) or not isinstance(label, numbers.Integral):
        raise TypeError(f"label must be an integer (-1 = unlabelled), got {type(label).__name__} {label!r}; "
                        "encode class names as 0..K-1 (e.g. a target_transform)")
    value = int(label)
    if value < -1:
        raise ValueError(f"label must be >= -1 (-1 = unlabelled), got {value}")
    return value


def image_item(item: Any) -> tuple[Tensor, int]:
    """One ``(image, label)`` item as ``(uint8 (C, H, W) tensor, int label)``.

    Example:
        >>> image_item((torch.zeros(1, 4, 4, dtype=torch.uint8), 0))[0].shape
        torch.Size([1, 4, 4])
    """
    if not isinstance(item, (tuple, list)) or len(item) != 2:
        kind = type(item).__name__
        raise TypeError(f"dataset items must be (image, label) pairs, got a {kind}"
                        + (f" of length {len(item)}" if isinstance(item, (tuple, list)) else "")
                        + "; yield (image, -1) for unlabelled images")
    image, label = item
    if isinstance(image, Tensor):
        x = _tensor_to_chw(image)
    elif isinstance(image, np.ndarray):
        x = _array_to_chw(image)
    elif hasattr(image, "mode") and hasattr(image, "convert"):  # a PIL image, without importing PIL
        x = _array_to_chw(_pil_to_array(image))
    else:
        raise TypeError(f"image must be a uint8 (C, H, W) tensor, a PIL image or an (H, W, C) uint8 array, "
                        f"got {type(image).__name__}")
    return x, item_label(label)


def check_first_item(item: Any, what: str = "dataset") -> tuple[int, int, int]:
    """Validate a dataset's first item; return its image shape ``(C, H, W)``.

    Example:
        >>> check_first_item((np.zeros((4, 4, 3), dtype=np.uint8), 1))
        (3, 4, 4)
    """
    try:
        x, _ = image_item(item)
    except (TypeError, ValueError) as error:
        raise type(error)(f"{what}: first item: {error}") from None
    return tuple(int(s) for s in x.shape)  # type: ignore[return-value]


def dataset_labels(dataset: Any) -> Tensor:
    """Every label of a map-style ``dataset`` as an int64 ``(N,)`` tensor (``-1`` = unlabelled).

    Read from its ``labels`` attribute (the ``.npy`` layout, relabelled subsets) or ``targets``
    (torchvision's datasets, image folders) when it has one, without touching the images; else
    item by item, which decodes every image once.

    Example:
        >>> dataset_labels([(np.zeros((2, 2), dtype=np.uint8), 1), (np.zeros((2, 2), dtype=np.uint8), -1)]).tolist()
        [1, -1]
    """
    held = getattr(dataset, "labels", None)
    held = getattr(dataset, "targets", None) if held is None else held
    if held is not None and not callable(held):
        labels = torch.as_tensor(np.asarray(held) if not isinstance(held, Tensor) else held).flatten()
        if labels.is_floating_point() or labels.dtype == torch.bool:
            raise TypeError(f"{type(dataset).__name__}'s labels are {labels.dtype}; expected integers "
                            "(-1 = unlabelled)")
        if len(labels) != len(dataset):
            raise ValueError(f"{type(dataset).__name__} holds {len(dataset)} items but {len(labels)} labels")
        if len(labels) and int(labels.min()) < -1:
            raise ValueError(f"label must be >= -1 (-1 = unlabelled), got {int(labels.min())}")
        return labels.to(torch.int64).cpu()
    labels = []
    for i in range(len(dataset)):
        item = dataset[i]
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise TypeError(f"dataset items must be (image, label) pairs; item {i} is a {type(item).__name__}")
        labels.append(item_label(item[1]))
    return torch.tensor(labels, dtype=torch.int64)


class ItemCollate:
    """``collate_fn`` of the DataLoader: items to ``(uint8 (B, C, H, W), int64 (B,))``, every image
    checked against ``image_shape`` (the first item's when ``None``). A picklable class rather than
    a closure, so that it reaches DataLoader workers started with ``spawn``."""

    def __init__(self, image_shape: Sequence[int] | None = None) -> None:
        self.image_shape = None if image_shape is None else tuple(int(s) for s in image_shape)

    def __call__(self, items: Sequence[Any]) -> tuple[Tensor, Tensor]:
        images, labels = [], []
        expected = self.image_shape
        for item in items:
            x, y = image_item(item)
            expected = expected or tuple(x.shape)
            if tuple(x.shape) != expected:
                raise ValueError(f"dataset images differ in shape: got (C, H, W) = {tuple(x.shape)}, expected "
                                 f"{expected}; resize them in the dataset's transform")
            images.append(x)
            labels.append(y)
        return torch.stack(images), torch.tensor(labels, dtype=torch.int64)
