"""Smaller views of a dataset: seeded random subsets and semi-supervised label hiding.

Example:
    >>> data = ImageData(torch.zeros(10, 1, 2, 2, dtype=torch.uint8), [0, 1] * 5)
    >>> len(random_subset(data, 4, seed=0)), int((keep_labels(data, 0.2, seed=0).labels >= 0).sum())
    (4, 2)
"""

from __future__ import annotations

import numpy as np
import torch

from .arrays import ImageData

__all__ = ["subset_indices", "random_subset", "keep_labels"]


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
