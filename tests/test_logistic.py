"""The float32 torch logistic regression against scikit-learn's."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from hybridflow.data import load_digits_data
from hybridflow.logistic import as_float32_rows, fit_logistic_path
from hybridflow.probe import linear_probe, raw_pixel_features


@pytest.fixture(scope="module")
def digits():
    train, test = load_digits_data(train=True), load_digits_data(train=False)
    return (raw_pixel_features(train.images), train.labels.numpy(), raw_pixel_features(test.images),
            test.labels.numpy())


def test_each_C_of_the_path_matches_sklearn(digits):
    x, y, xt, yt = digits
    Cs = [1e-3, 1e-1, 10.0]
    fit = fit_logistic_path(x, y, Cs)
    assert fit.coef.shape == (3, 64, 10) and fit.coef.dtype == torch.float32 and len(fit.evaluations) == 3
    for j, C in enumerate(Cs):
        with threadpool_limits(1, "blas"):
            sk = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=5000)).fit(x, y)
        assert np.mean(fit.predict(xt, j) == sk.predict(xt)) >= 0.98
        assert log_loss(yt, fit.predict_proba(xt, j)) == pytest.approx(log_loss(yt, sk.predict_proba(xt)), rel=0.05)


def test_torch_probe_is_comparable_to_the_sklearn_probe(digits):
    x, y, xt, yt = digits
    fast = linear_probe(x, y, xt, yt, seeds=(0, 1))
    exact = linear_probe(x, y, xt, yt, seeds=(0, 1), solver="sklearn")
    assert abs(fast.accuracy_mean - exact.accuracy_mean) <= 0.01
    assert fast.log_loss_mean == pytest.approx(exact.log_loss_mean, rel=0.15)


def test_rows_fit_the_same_model_as_a_copy(digits):
    x, y, _, _ = digits
    rows = np.arange(0, len(x), 3)
    by_rows = fit_logistic_path(x, y, [0.1], rows=rows)
    copied = fit_logistic_path(x[rows].copy(), y[rows], [0.1])
    torch.testing.assert_close(by_rows.mean, copied.mean)
    np.testing.assert_allclose(by_rows.predict_proba(x), copied.predict_proba(x), atol=1e-5)
    # a start at the optimum is already converged
    again = fit_logistic_path(x, y, [0.1], rows=rows, init=by_rows.solutions())
    assert again.evaluations[0] <= 3


def test_constant_features_keep_scale_one():
    x = np.c_[np.arange(8.0), np.full(8, 5.0)].astype(np.float32)
    fit = fit_logistic_path(x, np.arange(8) >= 4, [1.0])
    assert fit.scale[1] == 1.0 and torch.isfinite(fit.coef).all()


@pytest.mark.parametrize("change, message", [
    (dict(y=np.zeros(5)), "one label per row"),
    (dict(y=np.zeros(6)), "two classes"),
    (dict(Cs=[0.0]), "positive"),
    (dict(x=np.zeros(6)), "2-D"),
    (dict(init=torch.zeros(2, 3, 2)), "init must have shape"),
    (dict(rows=[]), "no rows"),
])
def test_bad_input(change, message):
    args = dict(x=np.eye(6, 2, dtype=np.float32), y=np.arange(6) % 2, Cs=[1.0])
    with pytest.raises(ValueError, match=message):
        fit_logistic_path(**{**args, **change})


def test_as_float32_rows_shares_float32_memory():
    a = np.zeros((3, 2), np.float32)
    assert as_float32_rows(a).data_ptr() == torch.from_numpy(a).data_ptr()
