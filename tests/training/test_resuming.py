"""Resuming: a changed learning rate takes effect (the restored optimiser and schedule kept the
checkpoint's rate), with one warning; an unchanged one continues exactly, silently."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from hybridflow.training import lr_factor, make_adam, make_scheduler, rescale_lr, train
from tests.training.helpers import tiny_config, tiny_model


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_resume_with_another_lr_trains_at_the_new_rate(digits, tmp_path, schedule):
    settings = dict(steps=4, log_every=1, lr_schedule=schedule, warmup_steps=2)
    train(tiny_model(), digits[0], tiny_config(tmp_path, lr=1e-2, **settings))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train(tiny_model(), digits[0], tiny_config(tmp_path, lr=1e-4, **{**settings, "steps": 8}),
                       resume=tmp_path)
    said = [str(w.message) for w in caught if "instead of the checkpoint's" in str(w.message)]
    assert len(said) == 1 and "with lr 0.0001 instead of the checkpoint's 0.01" in said[0] and "step 4" in said[0]
    rates = {e["step"]: e["lr"] for e in result.history if e["split"] == "train"}
    for step in (1, 2, 3, 4):  # before the resume: the old rate (the history is the checkpoint's)
        assert rates[step] == pytest.approx(1e-2 * lr_factor(step, 4, 2, schedule), rel=1e-9)
    for step in (5, 6, 7):  # after it: the new rate, on the new run's schedule
        assert rates[step] == pytest.approx(1e-4 * lr_factor(step, 8, 2, schedule), rel=1e-9)


def test_resume_with_the_same_lr_says_nothing_and_continues_exactly(digits, tmp_path):
    constant = dict(lr_schedule="constant")  # so that a 3-step run is the first half of a 6-step one
    reference = train(tiny_model(), digits[0], tiny_config(tmp_path / "a", steps=6, **constant))
    train(tiny_model(), digits[0], tiny_config(tmp_path / "b", steps=3, **constant))
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*instead of the checkpoint's")
        resumed = train(tiny_model(), digits[0], tiny_config(tmp_path / "b", steps=6, **constant),
                        resume=tmp_path / "b")
    for a, b in zip(resumed.model.state_dict().values(), reference.model.state_dict().values()):
        assert torch.equal(a, b)


def test_rescale_lr_moves_groups_and_schedule_together():
    opt = make_adam(nn.Linear(3, 2).parameters(), lr=1e-2)
    scheduler = make_scheduler(opt, total_steps=10, warmup_steps=0)
    for _ in range(5):
        opt.step()
        scheduler.step()
    assert rescale_lr(opt, scheduler, 1e-2) is None  # unchanged: nothing to do
    assert rescale_lr(opt, scheduler, 4e-3) == pytest.approx(1e-2)
    expected = 4e-3 * lr_factor(5, 10)
    assert opt.param_groups[0]["lr"] == pytest.approx(expected) and scheduler.get_last_lr() == [pytest.approx(expected)]
    opt.step()
    scheduler.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(4e-3 * lr_factor(6, 10))
