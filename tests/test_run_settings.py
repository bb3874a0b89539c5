"""Tests for hybridflow.run_settings: the settings a run folder holds and how they merge."""

from __future__ import annotations

import pytest

from hybridflow.run_settings import TRAIN_DEFAULTS, RunFileError, merge_train_settings, saved_train_settings

PYTHON_RUN = {"model": {"backbone": "glow_tiny", "backbone_options": {"hidden": 8, "num_steps": 1}, "lam": 0.5,
                        "pooled": True, "num_classes": 10},
              "train_config": {"steps": 2, "lr": 0.01, "batch_size": 16, "epochs": None, "lr_schedule": "cosine",
                               "eval_every": None},
              "data": {"name": None, "kind": "ImageData", "num_examples": 64}}


def test_a_python_run_gives_its_model_and_schedule():
    saved = saved_train_settings(PYTHON_RUN)
    assert saved == dict(steps=2, lr=0.01, batch_size=16, backbone="glow_tiny",
                         backbone_options={"hidden": 8, "num_steps": 1}, lam=0.5, pooled=True)
    hidden = {**PYTHON_RUN, "model": {**PYTHON_RUN["model"], "pooled": False, "head_input": "hidden"}}
    assert saved_train_settings(hidden)["head_input"] == "hidden"
    named = {**PYTHON_RUN, "data": {"name": "digits", "classes": [0, 1], "shuffle": None, "root": None}}
    assert saved_train_settings(named)["dataset"] == "digits" and saved_train_settings(named)["classes"] == [0, 1]


def test_later_sources_win_and_backbone_options_merge():
    cli_run = {"settings": {"lam": 0.0, "steps": 5, "backbone_options": {"hidden": 8, "num_layers": 1}}}
    merged = merge_train_settings({"steps": 9}, {"lam": 0.25, "backbone_options": {"hidden": 16}}, cli_run,
                                  backbone_options={"num_layers": 2})
    assert (merged["lam"], merged["steps"]) == (0.25, 9)
    assert merged["backbone_options"] == {"hidden": 16, "num_layers": 2}
    assert merge_train_settings() == {**TRAIN_DEFAULTS, "backbone_options": {}}


def test_a_python_run_without_a_dataset_name_needs_one():
    with pytest.raises(RunFileError, match=r"runs/p: it was trained from Python on ImageData \(64 images\)"):
        merge_train_settings({"steps": 3}, saved_run=PYTHON_RUN, where="runs/p")
    assert merge_train_settings({"dataset": "digits"}, saved_run=PYTHON_RUN)["backbone"] == "glow_tiny"
    with pytest.raises(RunFileError, match="names no model"):
        saved_train_settings({"model": None, "train_config": {}})
