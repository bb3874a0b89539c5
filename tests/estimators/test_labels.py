"""Label encoding: classes_, unlabelled examples (-1 or a custom marker), unseen labels refused."""

from __future__ import annotations

import numpy as np
import pytest

import hybridflow.estimators.fitting as fitting
from hybridflow.estimators.labels import (
    check_same_classes, encode_labels, labelled_part, learn_classes, unlabelled_mask,
)
from tests.estimators.common import TINY, tiny


# --------------------------------------------------------------------------- the encoding functions


def test_marker_matches_only_labels_of_its_own_kind():
    assert unlabelled_mask(np.array([3, -1, 0, -1])).tolist() == [False, True, False, True]
    assert unlabelled_mask(np.array([3.0, -1.0])).tolist() == [False, True]
    assert unlabelled_mask(np.array(["-1", "a"])).tolist() == [False, False]  # a number never matches a string
    assert unlabelled_mask(np.array(["?", "a"]), "?").tolist() == [True, False]
    assert unlabelled_mask(np.array([-1, 2]), "?").tolist() == [False, False]  # nor a string a number
    mixed = np.array([-1, "-1", True, -1.0, "?"], dtype=object)
    assert unlabelled_mask(mixed).tolist() == [True, False, False, True, False]  # True is no number here
    assert unlabelled_mask(np.array([-1, 2]), None).tolist() == [False, False]  # None: every label is a class


def test_classes_are_sorted_and_never_the_marker():
    assert learn_classes(np.array([5, -1, 2, 5])).tolist() == [2, 5]
    assert learn_classes(np.array(["b", "?", "a"], dtype=object), "?").tolist() == ["a", "b"]
    assert learn_classes(np.array([-1, -1]), classes=[3, 1]).tolist() == [1, 3]  # partial_fit's classes=
    assert learn_classes(np.array([-1, 0]), None).tolist() == [-1, 0]  # no marker: -1 is a class
    with pytest.raises(ValueError, match="no labelled examples"):
        learn_classes(np.array([-1, -1]))
    with pytest.raises(ValueError, match="unlabelled marker -1"):
        learn_classes(np.array([0, 1]), classes=[-1, 0, 1])
    with pytest.raises(ValueError, match="Unknown label type"):
        learn_classes(np.linspace(0, 1, 5))
    with pytest.raises(ValueError, match="Unknown label type"):
        labelled_part(np.array([0.5, -1.0]))
    assert labelled_part(np.array([3, -1, 3]), None).tolist() == [3, -1, 3]


def test_encoding_refuses_unseen_labels_and_disagreeing_classes():
    classes = np.array(["cat", "dog"], dtype=object)
    y = np.array(["dog", "?", "cat"], dtype=object)
    assert encode_labels(y, classes, "?").tolist() == [1, -1, 0]
    assert encode_labels(np.array([7, -1]), np.array([3, 7])).dtype == np.int64
    with pytest.raises(ValueError, match=r"labels not seen at fit: \['bird'\]; the classes are \['cat', 'dog'\]"):
        encode_labels(np.array(["bird", "cat"], dtype=object), classes, "?")
    with pytest.raises(ValueError, match=r"^labels contains"):
        encode_labels(np.array([4]), np.array([3]), what="labels")
    check_same_classes(["dog", "cat", "dog"], classes)  # the same set, in any order: accepted
    with pytest.raises(ValueError, match="differs from the classes"):
        check_same_classes(["cat"], classes)


# --------------------------------------------------------------------------- through the estimator


def test_string_labels(digits):
    x, y = digits[0][:200], digits[1][:200]
    names = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])[y]
    clf = tiny(backbone_kwargs=dict(patch_size=2, **TINY), steps=10).fit(x, names.astype(object))
    assert clf.classes_.tolist() == sorted(set(names))
    predicted = clf.predict(x[:5])
    assert predicted.dtype == object and set(predicted) <= set(names)
    assert 0.0 <= clf.score(x, names) <= 1.0


def test_unlabelled_examples_train_the_density_only(monkeypatch, digits):
    x, y = digits[0][:100], digits[1][:100].copy()
    y[20:] = -1
    seen = {}
    real_train = fitting.train

    def spy(model, data, config):
        seen["labels"] = data.labels.clone()
        return real_train(model, data, config)

    monkeypatch.setattr(fitting, "train", spy)
    clf = tiny(backbone_kwargs=dict(patch_size=2, **TINY), steps=5).fit(x, y)
    assert clf.classes_.tolist() == sorted(set(y[:20]))  # -1 is no class
    labels = seen["labels"].numpy()
    assert (labels[20:] == -1).all() and (labels[:20] >= 0).all()  # all 100 reach the density term
    np.testing.assert_array_equal(clf.classes_[labels[:20]], y[:20])
    assert clf.score(x, y) == clf.score(x[:20], y[:20])  # score skips unlabelled examples


def test_custom_marker_and_no_labels():
    x = np.random.default_rng(0).normal(size=(30, 4))
    y = np.array(["cat", "dog", "?"] * 10)
    clf = tiny(steps=3, unlabelled="?").fit(x, y)
    assert clf.classes_.tolist() == ["cat", "dog"]
    with pytest.raises(ValueError, match="no labelled examples"):
        tiny(steps=3).fit(x, np.full(30, -1))
    with pytest.raises(ValueError, match="unlabelled marker"):
        tiny(steps=3).partial_fit(x, np.full(30, -1), classes=[-1, 0, 1])
