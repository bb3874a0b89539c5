"""Threads: the estimators honour ``num_threads`` and ``$HYBRIDFLOW_THREADS`` as the CLI does, default
to half the usable cores at most, and always give torch's global thread count back."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import hybridflow.estimators.fitting as fitting
import hybridflow.estimators.inference as inference
from hybridflow.estimators.fitting import default_threads, thread_limit
from tests.estimators.common import tiny

X = np.random.default_rng(0).integers(0, 256, (40, 1, 4, 4)).astype(np.uint8)
Y = np.arange(40) % 2


@pytest.fixture(autouse=True)
def _restore_threads(monkeypatch):
    monkeypatch.delenv("HYBRIDFLOW_THREADS", raising=False)
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def seen(monkeypatch) -> list[int]:
    """Torch's thread count inside every train() and every prediction of the estimator."""
    counts: list[int] = []
    train, outputs = fitting.train, inference.model_outputs

    def spy_train(*args, **kwargs):
        counts.append(torch.get_num_threads())
        return train(*args, **kwargs)

    def spy_outputs(*args, **kwargs):
        counts.append(torch.get_num_threads())
        return outputs(*args, **kwargs)

    monkeypatch.setattr(fitting, "train", spy_train)
    monkeypatch.setattr("hybridflow.estimators.classifier.model_outputs", spy_outputs)
    return counts


def test_default_threads_explicit_then_environment_then_capped_at_half_the_cores(monkeypatch):
    assert default_threads(3) == 3
    monkeypatch.setenv("HYBRIDFLOW_THREADS", "5")
    assert default_threads() == 5 and default_threads(2) == 2
    monkeypatch.setenv("HYBRIDFLOW_THREADS", "two")
    with pytest.raises(ValueError, match="HYBRIDFLOW_THREADS must be a positive integer, got 'two'"):
        default_threads()
    monkeypatch.delenv("HYBRIDFLOW_THREADS")
    monkeypatch.setattr(fitting.os, "sched_getaffinity", lambda pid: set(range(2)), raising=False)
    torch.set_num_threads(2)
    assert default_threads() == 1  # a 2-core machine: one thread (16 min -> 3m40s for the README snippet)
    monkeypatch.setattr(fitting.os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert default_threads() == 2  # never more than torch would use
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="num_threads must be a positive integer"):
            default_threads(bad)


def test_thread_limit_restores_the_count_even_after_an_error():
    torch.set_num_threads(2)
    with pytest.raises(RuntimeError):
        with thread_limit(1):
            assert torch.get_num_threads() == 1
            raise RuntimeError("fit failed")
    assert torch.get_num_threads() == 2


def test_fit_and_predict_run_on_num_threads_and_give_the_count_back(seen):
    torch.set_num_threads(2)
    clf = tiny(num_threads=1, steps=2).fit(X, Y)
    clf.predict(X[:3])
    # train(), fit's pass that sets the reject threshold, predict
    assert seen == [1, 1, 1] and torch.get_num_threads() == 2
    assert clf.get_params()["num_threads"] == 1


def test_environment_variable_is_honoured_by_fit(seen, monkeypatch):
    torch.set_num_threads(1)
    monkeypatch.setenv("HYBRIDFLOW_THREADS", "2")
    tiny(steps=2).fit(X, Y)
    assert seen == [2, 2] and torch.get_num_threads() == 1


def test_a_thread_count_in_train_kwargs_does_not_leak_out_of_fit():
    torch.set_num_threads(2)
    tiny(steps=2, train_kwargs=dict(num_threads=1)).fit(X, Y)  # the loop sets it; fit puts it back
    assert torch.get_num_threads() == 2


def test_bad_num_threads_is_refused_before_any_work():
    with pytest.raises(ValueError, match=r"'num_threads' parameter of HybridFlowClassifier must be None or an int in "
                                         r"the range \[1, inf\). Got 0 instead"):
        tiny(num_threads=0).fit(X, Y)
