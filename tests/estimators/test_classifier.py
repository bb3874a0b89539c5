"""HybridFlowClassifier: scikit-learn's contract, fitting, continuation, composition and bad input."""

from __future__ import annotations

import copy
import json
import math
import pickle
import random

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.semi_supervised import SelfTrainingClassifier
from sklearn.utils.estimator_checks import check_classifiers_classes, check_param_validation, parametrize_with_checks

import hybridflow
import hybridflow.estimators as estimators
from hybridflow.data import load_digits_data
from hybridflow.estimators import HybridFlowClassifier, expected_failed_checks
from hybridflow.training import evaluate_model
from tests.estimators.common import TINY, tiny


# --------------------------------------------------------------------------- the package's public names


def test_the_old_modules_names_are_still_public():
    """Everything ``hybridflow.estimators`` offered as one module is still importable from it."""
    assert hybridflow.HybridFlowClassifier is estimators.HybridFlowClassifier is HybridFlowClassifier
    assert {"HybridFlowClassifier", "expected_failed_checks", "DEFAULT_STEPS"} <= set(estimators.__all__)
    assert estimators.DEFAULT_STEPS == 200 and all(hasattr(estimators, name) for name in estimators.__all__)


# --------------------------------------------------------------------------- scikit-learn's checks


@pytest.mark.slow
@parametrize_with_checks([tiny()], expected_failed_checks=expected_failed_checks)
def test_sklearn_checks(estimator, check):
    check(estimator)


def test_parameter_constraints_pass_sklearns_validation_check():
    """``_parameter_constraints`` covers every parameter and fit/partial_fit refuse bad types and values with
    scikit-learn's message (``parametrize_with_checks`` leaves this check to scikit-learn's own estimators)."""
    check_param_validation("HybridFlowClassifier", tiny())
    assert set(tiny()._parameter_constraints) == set(tiny().get_params())


def test_classes_check_passes_without_an_unlabelled_marker():
    """The one expected failure is only -1 used as a class: with no marker the check passes."""
    check_classifiers_classes("HybridFlowClassifier", tiny(unlabelled=None))
    assert expected_failed_checks(tiny(unlabelled=None)) == {}
    assert set(expected_failed_checks(tiny())) == {"check_classifiers_classes"}


# --------------------------------------------------------------------------- fit and predict


def test_digits_accuracy_and_outputs(digits, fitted_digits):
    x, y, x_test, y_test = digits
    clf = fitted_digits
    assert clf.image_shape_ == (1, 8, 8) and clf.n_features_in_ == 64 and clf.scaling_ == "pixels"
    assert clf.classes_.tolist() == list(range(10)) and clf.n_iter_ == 100
    assert clf.score(x_test, y_test) > 0.7  # chance is 0.1; about 0.95 after these 100 steps
    proba, log_proba = clf.predict_proba(x_test), clf.predict_log_proba(x_test)
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-12)
    np.testing.assert_allclose(np.log(proba), log_proba, atol=1e-9)
    np.testing.assert_array_equal(clf.classes_[proba.argmax(1)], clf.predict(x_test))
    np.testing.assert_array_equal(clf.decision_function(x_test).argmax(1), proba.argmax(1))
    assert clf.transform(x_test[:5]).shape == (5, 64)
    scores = clf.score_samples(x_test)
    assert scores.shape == (450,) and np.isfinite(scores).all()
    # The same density as the training loop's evaluation (its noise differs: compare means).
    bpd = evaluate_model(clf.model_, load_digits_data(train=False), device="cpu")["bits_per_dim"]
    assert abs(-scores.mean() / (64 * math.log(2)) - bpd) < 0.05
    entries = [e for e in clf.history_ if e["split"] == "train"]
    assert entries and entries[-1]["total_step"] == 100


def test_score_samples_is_the_models_own_density(digits, fitted_digits):
    """One density accounting: score_samples equals HybridModel.log_prob and bits_per_dim of the
    live model (ordinary path, each image's own evaluation noise), in float32 to 1e-5 and in
    float64 to float32's precision; the predictions come from an inference copy."""
    from hybridflow.flows import is_inference_copy

    x = digits[0][:16]
    model = fitted_digits.model_
    with torch.enable_grad():
        expected = model.log_prob(torch.from_numpy(x)).detach().double().numpy()
        bpd = model.bits_per_dim(torch.from_numpy(x)).detach().double().numpy()
    fast = copy.deepcopy(fitted_digits).set_params(inference_dtype="float32")
    np.testing.assert_allclose(fast.score_samples(x), expected, rtol=1e-5)
    np.testing.assert_allclose(fitted_digits.score_samples(x), expected, rtol=1e-4)
    np.testing.assert_allclose(-fitted_digits.score_samples(x) / (x[0].size * np.log(2)), bpd, rtol=1e-4)
    assert is_inference_copy(fitted_digits.inference_model_)


def test_float32_inference_is_close_to_float64(digits, fitted_digits):
    x = digits[2][:20]
    fast = copy.deepcopy(fitted_digits).set_params(inference_dtype="float32")
    np.testing.assert_allclose(fast.predict_proba(x), fitted_digits.predict_proba(x), atol=1e-4)
    assert fast.inference_model_.head.weight.dtype == torch.float32  # rebuilt for the new dtype
    np.testing.assert_allclose(fast.score_samples(x), fitted_digits.score_samples(x), rtol=1e-4)


def test_fit_leaves_global_random_states_alone():
    x, y = np.random.default_rng(0).normal(size=(40, 4)), np.arange(40) % 2
    before = (random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state().clone())
    tiny(steps=3).fit(x, y)
    after = (random.getstate(), np.random.get_state()[1], torch.get_rng_state())
    assert before[0] == after[0] and np.array_equal(before[1], after[1]) and torch.equal(before[2], after[2])


def test_train_kwargs_reach_the_training_loop(tmp_path):
    x, y = np.random.default_rng(0).normal(size=(40, 4)), np.arange(40) % 2
    clf = tiny(steps=4, train_kwargs=dict(out_dir=str(tmp_path), log_every=2, ema_decay=0.5)).fit(x, y)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [2, 4] and clf.n_iter_ == 4
    assert any((tmp_path / "checkpoints").iterdir())


def test_self_training_classifier(digits):
    x, y = digits[0][:120].reshape(120, 64), digits[1][:120].copy()  # it accepts 2-D X only: flattened images
    y[60:] = -1
    base = tiny(backbone_kwargs=dict(patch_size=2, **TINY), steps=10)
    self_training = SelfTrainingClassifier(base, criterion="k_best", k_best=20, max_iter=1).fit(x, y)
    assert self_training.predict(x[:5]).shape == (5,) and self_training.n_iter_ == 1


# --------------------------------------------------------------------------- continuing training


def test_warm_start_and_partial_fit_continue_the_model():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 4)), np.arange(64) % 2
    clf = tiny(steps=5, batch_size=16, warm_start=True).fit(x, y)
    model, first = clf.model_, clf.model_.head.weight.detach().clone()
    clf.fit(x, y)
    assert clf.model_ is model and clf.n_iter_ == 10 and not torch.equal(first, model.head.weight)
    clf.partial_fit(x, y)  # one pass of 64 examples in batches of 16
    assert clf.n_iter_ == 14 and clf.history_[-1]["total_step"] == 14
    with pytest.raises(ValueError, match="not seen at fit"):
        clf.fit(x, y + 5)
    clf.set_params(warm_start=False).fit(x, y)
    assert clf.model_ is not model and clf.n_iter_ == 5

    stream = tiny(batch_size=16)
    for chunk in range(4):
        part = slice(16 * chunk, 16 * chunk + 16)
        stream.partial_fit(x[part], np.zeros(16, int) if chunk == 0 else y[part], classes=[0, 1])
    assert stream.classes_.tolist() == [0, 1] and stream.n_iter_ == 4
    with pytest.raises(ValueError, match="differs from the classes"):
        stream.partial_fit(x, y, classes=[0, 1, 2])
    with pytest.raises(ValueError, match="not seen at fit"):
        stream.partial_fit(x, y + 1)


# --------------------------------------------------------------------------- composition and pickling


def test_clone_grid_search_pipeline_cross_val(digits):
    x, y = digits[0][:150].reshape(150, 64), digits[1][:150]
    clf = tiny(backbone_kwargs=dict(patch_size=2, **TINY), steps=8)
    assert clone(clf).get_params() == clf.get_params() and not hasattr(clone(clf), "model_")
    search = GridSearchCV(clf, {"lam": [0.5, 2.0]}, cv=2).fit(x, y)
    assert search.best_params_["lam"] in (0.5, 2.0) and search.predict(x[:3]).shape == (3,)
    pipeline = make_pipeline(FunctionTransformer(lambda a: a / 255.0), clf).fit(x, y)  # 0-1 floats: pixels
    assert pipeline.score(x, y) >= 0.0
    scores = cross_val_score(clf, x, y, cv=StratifiedKFold(3))
    assert scores.shape == (3,) and np.isfinite(scores).all()
    embed = make_pipeline(clone(clf), FunctionTransformer(np.tanh)).fit(x, y)  # as a transformer step
    assert embed.transform(x[:4]).shape == (4, 64)


def test_pickle_round_trip_gives_the_same_outputs(digits, fitted_digits):
    x = digits[2][:30]
    restored = pickle.loads(pickle.dumps(fitted_digits))
    for method in ("predict", "predict_proba", "transform", "score_samples", "decision_function"):
        np.testing.assert_array_equal(getattr(restored, method)(x), getattr(fitted_digits, method)(x))
    assert restored.get_params() == fitted_digits.get_params()


# --------------------------------------------------------------------------- bad input


def test_bad_input_raises_clear_errors(digits, fitted_digits):
    x, y = digits[2][:20], digits[3][:20]
    clf = fitted_digits
    with pytest.raises(NotFittedError):
        tiny().predict(x)
    failed = copy.deepcopy(clf)
    with pytest.raises(ValueError, match="Unknown label type"):
        failed.fit(x, np.linspace(0, 1, 20))
    with pytest.raises(NotFittedError):  # a failed refit leaves nothing half-fitted behind
        failed.predict(x)
    with pytest.raises(ValueError, match=r"fitted on images of shape \(C, H, W\) = \(1, 8, 8\)"):
        clf.predict(np.zeros((4, 3, 8, 8), np.uint8))  # channel count
    with pytest.raises(ValueError, match=r"fitted on images of shape"):
        clf.predict(np.zeros((4, 1, 4, 4), np.uint8))  # size
    with pytest.raises(ValueError, match="X has 63 features, but HybridFlowClassifier is expecting 64"):
        clf.predict(np.zeros((4, 63)))
    bad = x.astype(float)
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        clf.predict(bad)
    with pytest.raises(ValueError, match="0 sample"):
        clf.predict(np.zeros((0, 1, 8, 8), np.uint8))
    with pytest.raises(ValueError, match="pixel"):
        clf.predict(np.full((2, 1, 8, 8), 300))  # fitted on pixels: 300 is no pixel value
    with pytest.raises(ValueError, match=r"labels not seen at fit: \[42\]"):
        clf.score(x, np.where(np.arange(20) == 3, 42, y))
    with pytest.raises(ValueError, match="5-D"):
        clf.predict(np.zeros((2, 1, 1, 8, 8)))
    with pytest.raises(ValueError, match="1 feature"):
        tiny().fit(np.zeros((10, 1)), np.arange(10) % 2)
    with pytest.raises(ValueError, match="n_samples=1"):
        tiny().fit(np.zeros((1, 4)), [0])
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        tiny().fit(x, y[:-1])
    with pytest.raises(ValueError, match="does not hold pixels"):
        tiny(scaling="pixels").fit(np.linspace(-1, 1, 40).reshape(10, 4), np.arange(10) % 2)
    for params, message in [(dict(batch_size=1), r"'batch_size' parameter .* range \[2, inf\). Got 1"),
                            (dict(steps=0), "'steps' parameter"), (dict(scaling="zscore"), "'scaling' parameter"),
                            (dict(backbone_kwargs={"input_shape": (1, 8, 8)}), "input_shape: it comes from X"),
                            (dict(train_kwargs={"lr": 1.0}), r"train_kwargs must not set \['lr'\]"),
                            (dict(lam=-1.0), "'lam' parameter .* Got -1.0"), (dict(lr=float("nan")), "'lr' parameter"),
                            (dict(image_shape=(1, 0, 8)), "image_shape"),
                            (dict(backbone="glow_tiny"), "cannot be built")]:
        with pytest.raises(ValueError, match=message):
            tiny(**params).fit(np.zeros((10, 6)), np.arange(10) % 2)


def test_the_inference_copy_stays_out_of_pickles_and_is_rebuilt(digits, fitted_digits):
    x = digits[2][:10]
    expected = fitted_digits.predict_proba(x)
    state = fitted_digits.__getstate__()
    assert "inference_model_" not in state and "model_" in state
    again = pickle.loads(pickle.dumps(fitted_digits))
    np.testing.assert_allclose(again.predict_proba(x), expected, rtol=0, atol=1e-12)


def test_bfloat16_conditioners_predict_in_either_inference_dtype(digits):
    """A bfloat16 conditioner's inference copy moved to float64 once multiplied bfloat16 inputs by
    float64 weights and failed on every predict."""
    x, y = digits[0][:64], digits[1][:64]
    kwargs = dict(patch_size=2, conditioner_dtype="bfloat16", **TINY)
    for dtype in ("float64", "float32"):
        clf = tiny(backbone_kwargs=kwargs, steps=3, inference_dtype=dtype).fit(x, y)
        proba = clf.predict_proba(x[:5])
        assert proba.shape == (5, len(clf.classes_)) and np.allclose(proba.sum(1), 1.0)


def test_transform_names_its_features_and_follows_set_output():
    from sklearn.datasets import load_digits

    digits = load_digits()
    X, y = digits.images[:96, None].astype(np.uint8), digits.target[:96]
    clf = HybridFlowClassifier(backbone_kwargs=dict(patch_size=2, num_layers=1, hidden=8), steps=2,
                               batch_size=32, random_state=0).fit(X, y)
    names = clf.get_feature_names_out()
    assert len(names) == clf.transform(X[:4]).shape[1] == 64 and names[0] == "hybridflowclassifier0"
    assert clf.set_output(transform="default").transform(X[:2]).shape == (2, 64)
