"""Divergence end to end: ``hybridflow train --lr 1000`` and :func:`fit_backbone` at lr 1000 stop
with a model -- in memory, in the run folder and after ``--resume`` -- whose ``log_prob`` and
``predict_proba`` are finite (they were NaN: the loop kept the weights a bad update left)."""

from __future__ import annotations

import json

import pytest
import torch

from hybridflow import create_backbone
from hybridflow.data import load_digits_data
from hybridflow.runs import load_model
from hybridflow.training import NonFiniteLossError, find_checkpoint, fit_backbone, load_training_state
from tests.cli.runner import TINY, run


def _finite_outputs(model, images) -> bool:
    with torch.no_grad():
        return bool(torch.isfinite(model.log_prob(images)).all() and torch.isfinite(model.predict_proba(images)).all())


@pytest.mark.filterwarnings("ignore:step .* non-finite:RuntimeWarning")
def test_cli_divergence_exits_1_and_leaves_a_usable_model_that_resumes(tmp_path):
    out = tmp_path / "run"
    args = ["train", "--lr", "1000", "--steps", "80", "--batch-size", "32", "--val-limit", "20", "--limit", "256",
            "--out", out, "-q", "--no-plot", "--device", "cpu", *TINY]
    result = run(*args, code=1)
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("Error: training diverged: 10 training steps in a row had a non-finite loss, gradient or "
                              "output") and "rolled back" in message and str(out / "checkpoints") in message
    images = load_digits_data(train=False).images[:64]
    model, directory, _ = load_model(out, device="cpu")
    assert _finite_outputs(model, images)
    stopped_at = load_training_state(directory).step
    evaluated = json.loads(run("eval", "-c", out, "--limit", "64", "--device", "cpu", "--json").stdout)
    assert 0 < evaluated["bits_per_dim"] < 20

    result = run("train", "--out", out, "--resume", "-q", "--no-plot", "--device", "cpu", code=1)  # lr 1000 again
    assert "training diverged" in result.stderr
    model, directory, _ = load_model(out, device="cpu")
    assert find_checkpoint(out) == directory and load_training_state(directory).step > stopped_at
    assert _finite_outputs(model, images)


def test_fit_backbone_divergence_leaves_a_finite_backbone_in_evaluation_mode():
    images = load_digits_data(train=True).images[:256]
    torch.manual_seed(0)
    flow = create_backbone("mixerflow_tiny", input_shape=(1, 8, 8), patch_size=2, num_layers=1, hidden=8, steps=1)
    with pytest.warns(RuntimeWarning), pytest.raises(NonFiniteLossError):
        fit_backbone(flow, images, steps=80, batch_size=32, lr=1e3)
    assert not flow.training
    with torch.no_grad():
        assert torch.isfinite(flow.log_prob(images[:64])).all()
