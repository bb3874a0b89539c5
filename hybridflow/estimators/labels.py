r"""Label encoding: any hashable class labels as indices ``0..K-1`` into the sorted ``classes``.

Unlabelled examples carry a marker (``-1`` by scikit-learn's semi-supervised convention, or a
string such as ``"?"`` for string labels) and encode to ``-1``: they train the density only. A
marker matches only labels of its own kind (a number never matches a string, nor the reverse),
labels unseen at fit are refused with the offending values, and the marker is never a class.

Example:
    >>> y = np.array(["cat", "dog", "?", "cat"], dtype=object)
    >>> classes = learn_classes(y, unlabelled="?")
    >>> classes.tolist(), encode_labels(y, classes, unlabelled="?").tolist()
    (['cat', 'dog'], [0, 1, -1, 0])
"""

from __future__ import annotations

import numbers
from typing import Any, Sequence

import numpy as np
from sklearn.utils.multiclass import check_classification_targets

__all__ = ["unlabelled_mask", "labelled_part", "learn_classes", "check_same_classes", "encode_labels"]


def _both_numbers(a: Any, b: Any) -> bool:
    return all(isinstance(v, numbers.Number) and not isinstance(v, bool) for v in (a, b))


def unlabelled_mask(y: np.ndarray, unlabelled: Any = -1) -> np.ndarray:
    """Boolean mask of the entries of 1-D ``y`` equal to the marker ``unlabelled`` (``None``:
    every entry is labelled).

    Example:
        >>> unlabelled_mask(np.array([3, -1, 0])).tolist(), unlabelled_mask(np.array(["-1", "a"])).tolist()
        ([False, True, False], [False, False])
    """
    if unlabelled is None:
        return np.zeros(len(y), dtype=bool)
    if y.dtype.kind == "O":
        same = ((type(v) is type(unlabelled) or _both_numbers(v, unlabelled)) and v == unlabelled for v in y)
        return np.fromiter(same, dtype=bool, count=len(y))
    marker_is_number = isinstance(unlabelled, numbers.Number) and not isinstance(unlabelled, bool)
    if (y.dtype.kind in "biuf") == marker_is_number:
        return np.asarray(y == unlabelled, dtype=bool)
    return np.zeros(len(y), dtype=bool)  # a string marker never matches numbers, nor the reverse


def labelled_part(y: np.ndarray, unlabelled: Any = -1) -> np.ndarray:
    """The labelled entries of ``y``, checked to be classification targets (not continuous).

    Example:
        >>> labelled_part(np.array([2, -1, 5])).tolist()
        [2, 5]
    """
    labelled = y[~unlabelled_mask(y, unlabelled)]
    if len(labelled):
        check_classification_targets(labelled)
    return labelled


def learn_classes(y: np.ndarray, unlabelled: Any = -1, classes: Sequence[Any] | None = None) -> np.ndarray:
    """The sorted classes: of ``classes`` when given (scikit-learn's ``partial_fit`` argument),
    else of the labelled entries of ``y``; refuses a ``y`` with no labelled entry, fewer than 2
    classes, and classes that include the marker.

    Example:
        >>> learn_classes(np.array([2, -1, 0, 2])).tolist(), learn_classes(np.array([-1]), classes=[1, 0]).tolist()
        ([0, 2], [0, 1])
    """
    labelled = labelled_part(y, unlabelled)
    if classes is not None:
        found = np.unique(np.asarray(classes))
    elif len(labelled):
        found = np.unique(labelled)
    else:
        raise ValueError(f"no labelled examples: every label is the unlabelled marker {unlabelled!r}; "
                         "a classifier needs at least one labelled example (or pass classes= to partial_fit)")
    if unlabelled is not None and bool(unlabelled_mask(np.asarray(found, dtype=object), unlabelled).any()):
        raise ValueError(f"classes include the unlabelled marker {unlabelled!r}")
    if len(found) < 2 and len(y) > 1:  # a single sample is refused for its own sake (BatchNorm) at training
        source = "classes" if classes is not None else "y"
        marked = "" if len(labelled) == len(y) or unlabelled is None or classes is not None else (
            f"; its {len(y) - len(labelled)} entries equal to {unlabelled!r} are read as unlabelled "
            "(labels such as -1/+1 need unlabelled=None or another marker)")
        raise ValueError(f"a classifier needs samples of at least 2 classes, but {source} holds one class, "
                         f"{found.tolist()}{marked}")
    return found


def check_same_classes(classes: Sequence[Any], fitted: np.ndarray) -> None:
    """Refuse a later ``classes`` argument that differs from the classes of the first fit."""
    if not np.array_equal(np.unique(np.asarray(classes)), fitted):
        raise ValueError(f"classes={np.unique(np.asarray(classes)).tolist()} differs from the classes of the "
                         f"first fit, {fitted.tolist()}")


def encode_labels(y: np.ndarray, classes: np.ndarray, unlabelled: Any = -1, what: str = "y") -> np.ndarray:
    """``y`` as int64 indices into the sorted ``classes``, ``-1`` where ``y`` holds the marker;
    a label not among ``classes`` raises ``ValueError`` naming it (``what`` names ``y``).

    Example:
        >>> encode_labels(np.array([5, -1, 3]), np.array([3, 5])).tolist()
        [1, -1, 0]
        >>> encode_labels(np.array([4]), np.array([3, 5]))
        Traceback (most recent call last):
        ...
        ValueError: y contains labels not seen at fit: [4]; the classes are [3, 5]
    """
    mask = unlabelled_mask(y, unlabelled)
    labels = y[~mask]
    known = np.isin(labels, classes)
    if not known.all():
        unseen = np.unique(labels[~known])[:10]
        raise ValueError(f"{what} contains labels not seen at fit: {unseen.tolist()}; the classes are "
                         f"{classes.tolist()}")
    index = np.full(len(y), -1, dtype=np.int64)
    index[~mask] = np.searchsorted(classes, labels).astype(np.int64)
    return index
