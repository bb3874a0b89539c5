"""Bad input for OOD scoring: metrics of scores that are NaN, empty or of the wrong shape, scorers
that cannot work on the model given, images of the wrong shape."""

from __future__ import annotations

import math

import pytest
import torch

from hybridflow.ood import create_scorer, evaluate
from tests.bad_inputs.conftest import SHAPE


@pytest.mark.parametrize("scores_in, scores_out, words", [
    ([0.1, math.nan, 0.3], [0.2, 0.5], "scores_in holds 1 NaN or infinite"),
    ([0.1, 0.3], [0.2, math.inf], "scores_out holds 1 NaN or infinite"),
    ([0.1, 0.2], [], "scores_out is empty"),
    ([], [0.1], "scores_in is empty"),
    ([[0.1, 0.2]], [[0.3]], "must be 1-D"),
    (["a"], ["b"], "could not convert string"),
])
def test_metrics_name_bad_scores(scores_in, scores_out, words):
    with pytest.raises(ValueError, match=words):
        evaluate(scores_in, scores_out)


@pytest.mark.parametrize("name, kwargs, error, words", [
    ("zzz", {}, ValueError, "unknown scorer 'zzz'"),
    ("likelihood_ratio", {}, ValueError, "needs a reference model"),
    ("complexity", dict(compressor="zip7"), ValueError, "compressor must be 'png' or 'zlib'"),
])
def test_scorers_that_cannot_be_made_are_named(models, name, kwargs, error, words):
    with pytest.raises(error, match=words):
        create_scorer(name, models["mixerflow"], **kwargs)


@pytest.mark.parametrize("name", ["max_softmax", "entropy"])
def test_classifier_scorers_on_a_bare_backbone_are_named(models, name):
    with pytest.raises(TypeError, match="need a hybrid model"):
        create_scorer(name, models["mixerflow"]).score(torch.randint(0, 256, (2, *SHAPE)))


@pytest.mark.parametrize("images, words", [
    (torch.randint(0, 256, (2, 3, 8, 8)), "expected \\(1, 8, 8\\)"),
    (torch.full((2, *SHAPE), math.nan), "NaN or infinite"),
    (torch.zeros((0, *SHAPE), dtype=torch.long), "empty input"),
])
@pytest.mark.parametrize("name", ["loglik", "bpd", "complexity"])
def test_scorers_name_bad_images(models, name, images, words):
    with pytest.raises(ValueError, match=words):
        create_scorer(name, models["mixerflow"]).score(images)


def test_typicality_before_fit_says_so(models):
    with pytest.raises(RuntimeError, match="call fit\\(images\\) first"):
        create_scorer("typicality", models["mixerflow"]).score(torch.randint(0, 256, (2, *SHAPE)))
