"""Smaller views of a dataset: seeded random subsets, a selection of classes and semi-supervised
label hiding.

A class selection keeps the labels as they are (digits 5-9 stay 5-9, not 0-4): a model trained on
them keeps the dataset's number of classes in its head, and its predictions name the dataset's
classes; the classes left out are never a training target.

Example:
    >>> data = ImageData(torch.zeros(10, 1, 2, 2, dtype=torch.uint8), [0, 1] * 5)
    >>> len(random_subset(data, 4, seed=0)), int((keep_labels(data, 0.2, seed=0).labels >= 0).sum())
    (4, 2)
    >>> parse_classes("0-2,7"), select_classes(data, [1]).labels.tolist()
    ((0, 1, 2, 7), [1, 1, 1, 1, 1])
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from .arrays import ImageData

__all__ = ["ClassSelectionError", "ClassSubset", "subset_indices", "random_subset", "keep_labels", "parse_classes",
           "select_classes"]


class ClassSelectionError(ValueError):
    """A class selection that cannot be made: bad text, no class, or a class the dataset lacks."""


def subset_indices(n: int, limit: int | None, seed: int) -> torch.Tensor | None:
    """A seeded random choice of ``limit`` of ``n`` indices, sorted; None when all are kept.

    Example:
        >>> subset_indices(10, 3, seed=0).tolist() == sorted(subset_indices(10, 3, seed=0).tolist())
        True
    """
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1:
        raise ValueError(f"limit must be a positive int or None, got {limit!r}")
    if limit >= n:
        return None
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[:limit].sort().values


def random_subset(data: ImageData, limit: int | None, seed: int = 0) -> ImageData:
    """``limit`` examples of ``data`` drawn with ``seed``, in dataset order (all when ``limit`` is None).

    Example:
        >>> data = ImageData(torch.zeros(5, 1, 2, 2, dtype=torch.uint8))
        >>> len(random_subset(data, 2)), random_subset(data, None) is data
        (2, True)
    """
    idx = subset_indices(len(data), limit, seed)
    return data if idx is None else data.subset(idx)


def keep_labels(data: ImageData, fraction: float, seed: int) -> ImageData:
    """A copy of ``data`` keeping the labels of a stratified ``fraction`` (at least one per class);
    the rest become -1 (unlabelled), for semi-supervised training.

    Example:
        >>> data = ImageData(torch.zeros(6, 1, 2, 2, dtype=torch.uint8), [0, 0, 0, 1, 1, 1])
        >>> keep_labels(data, 0.01, seed=0).labels.ge(0).sum().item()  # one per class
        2
    """
    labels = data.labels.numpy()
    rng = np.random.default_rng(seed)
    keep = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels[labels >= 0]):
        members = np.flatnonzero(labels == c)
        k = max(1, int(round(fraction * len(members))))
        keep[rng.choice(members, size=min(k, len(members)), replace=False)] = True
    new = torch.where(torch.from_numpy(keep), data.labels, torch.full_like(data.labels, -1))
    return ImageData(data.images, new, list(data.classes))


def parse_classes(classes: str | int | Sequence[int]) -> tuple[int, ...]:
    """Class labels from ``"0-4"``, ``"0,1,2"``, ``"0-2,7"``, an int or a sequence of ints: sorted,
    each once. :class:`ClassSelectionError` names what is wrong (not a label, a negative one, none).

    Example:
        >>> parse_classes("4,0-2"), parse_classes([3, 3, 1])
        ((0, 1, 2, 4), (1, 3))
    """
    if isinstance(classes, str):
        labels: list[int] = []
        for part in (p.strip() for p in classes.split(",")):
            if not part:
                continue
            low, sep, high = part.partition("-")
            try:
                first, last = int(low), int(high) if sep else int(low)
            except ValueError:
                raise ClassSelectionError(f"classes: {part!r} is not a class label or a range like 0-4 "
                                          f"(in {classes!r})") from None
            if last < first:
                raise ClassSelectionError(f"classes: the range {part!r} is empty (write it low-high, e.g. 0-4)")
            labels += range(first, last + 1)
    else:
        items = [classes] if isinstance(classes, (int, np.integer)) else list(classes)
        bad = [c for c in items if isinstance(c, bool) or not isinstance(c, (int, np.integer))]
        if bad:
            raise ClassSelectionError(f"classes must be integer labels, got {bad[0]!r} in {classes!r}")
        labels = [int(c) for c in items]
    if not labels:
        raise ClassSelectionError(f"classes: the selection {classes!r} names no class")
    if min(labels) < 0:
        raise ClassSelectionError(f"classes: labels are >= 0, got {min(labels)} in {classes!r}")
    return tuple(sorted(set(labels)))


def _known_classes(labels: torch.Tensor, names: Sequence[str]) -> set[int]:
    """The labels a dataset has: every named class, else those its examples carry."""
    return set(range(len(names))) if names else {int(c) for c in labels.unique() if c >= 0}


def _class_mask(labels: torch.Tensor, names: Sequence[str], classes: Sequence[int], what: str) -> torch.Tensor:
    wanted = parse_classes(classes)
    known = _known_classes(labels, names)
    if not known:
        raise ClassSelectionError(f"{what} has no labelled images: no class can be selected")
    missing = [c for c in wanted if c not in known]
    if missing:
        shown = ", ".join(f"{i} ({n})" if str(i) != n else n for i, n in enumerate(names)) if names else \
            ", ".join(map(str, sorted(known)))
        raise ClassSelectionError(f"{what} has no class {', '.join(map(str, missing))}: its classes are {shown}")
    mask = torch.isin(labels, torch.tensor(wanted, dtype=labels.dtype))
    if not bool(mask.any()):
        raise ClassSelectionError(f"{what} holds no image of the classes {list(wanted)}")
    return mask


def select_classes(data: ImageData, classes: Sequence[int] | str, what: str = "the dataset") -> ImageData:
    """The examples of ``data`` whose label is one of ``classes`` (see :func:`parse_classes`), in
    dataset order, labels and class names kept. A class the data lacks, or a selection without
    images, raises :class:`ClassSelectionError` naming it (``what`` names the data).

    Example:
        >>> data = ImageData(torch.zeros(4, 1, 2, 2, dtype=torch.uint8), [0, 1, 2, 1], ["a", "b", "c"])
        >>> select_classes(data, "1-2").labels.tolist(), select_classes(data, [1]).num_classes
        ([1, 2, 1], 3)
    """
    return data.subset(_class_mask(data.labels, data.classes, classes, what))


class ClassSubset(Dataset):
    """The items of a map-style dataset streamed from disk (the ``.npy`` layout, an image folder)
    whose label is one of ``classes``, found from its labels (``labels`` or ``targets``) without
    reading an image. ``labels`` and ``classes`` (the names) are those of the kept items.

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> base = TensorDataset(torch.zeros(4, 1, 2, 2, dtype=torch.uint8), torch.tensor([0, 1, 2, 1]))
        >>> base.targets = base.tensors[1]
        >>> view = ClassSubset(base, [1])
        >>> len(view), view.labels.tolist(), int(view[1][1])
        (2, [1, 1], 1)
    """

    def __init__(self, dataset: Any, classes: Sequence[int] | str, what: str = "the dataset") -> None:
        labels = getattr(dataset, "labels", None)
        labels = getattr(dataset, "targets", None) if labels is None else labels
        if labels is None:
            raise ClassSelectionError(f"{what} ({type(dataset).__name__}) does not hold its labels up front (a labels "
                                      "or targets attribute), so its classes cannot be selected")
        labels = torch.as_tensor(labels, dtype=torch.int64)
        self.dataset = dataset
        self.classes = [str(c) for c in getattr(dataset, "classes", None) or []]
        self.indices = torch.nonzero(_class_mask(labels, self.classes, classes, what)).flatten()
        self.labels = labels[self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __repr__(self) -> str:
        return f"ClassSubset({self.dataset!r}, n={len(self)})"

    def __getitem__(self, index: int) -> Any:
        return self.dataset[int(self.indices[index])]

    def __getitems__(self, indices: Sequence[int]) -> list[Any]:
        inner = [int(self.indices[i]) for i in indices]
        many = getattr(self.dataset, "__getitems__", None)  # NpyImages reads a batch in one go
        return many(inner) if many is not None else [self.dataset[i] for i in inner]

    def to_image_data(self, indices: Sequence[int] | None = None) -> ImageData:
        """The kept items at ``indices`` (all when None) in memory, as the wrapped dataset's ``to_image_data``."""
        chosen = self.indices if indices is None else self.indices[torch.as_tensor(indices, dtype=torch.int64)]
        if hasattr(self.dataset, "to_image_data"):
            return self.dataset.to_image_data(chosen.tolist())
        items = [self.dataset[int(i)] for i in chosen]
        return ImageData(torch.stack([torch.as_tensor(x) for x, _ in items]), [int(y) for _, y in items], self.classes)
