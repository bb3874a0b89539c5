"""Command lines whose settings cannot work stop with exit code 2 and a one-line message naming
the option, before any data loads (DataSpec.load is made to fail loudly if it is reached)."""

from __future__ import annotations

import pytest
import torch

from hybridflow.data import DataSpec
from tests.cli.runner import TINY, run

NO_CUDA = not torch.cuda.is_available()


def one_line_error(result) -> str:
    """The one ``Error:`` line (click prints its usage lines above a bad option's)."""
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


@pytest.fixture
def no_data_loads(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("data was loaded before the settings were checked")

    monkeypatch.setattr(DataSpec, "load", refuse)


TRAIN = ["train", "--steps", "2", "-q", "--no-plot"]


@pytest.mark.parametrize("args, words", [
    (["--batch-size", "1"], "batch_size must be at least 2 for a model with BatchNorm layers"),
    (["-o", "hidden=abc"], "-o: backbone option hidden='abc' of mixerflow_tiny must be an integer"),
    (["-o", "hidden=2.5"], "hidden=2.5 of mixerflow_tiny must be an integer"),
    (["-o", "patch_size=x"], "patch_size='x' of mixerflow_tiny must be an integer or a list of 2 integers"),
    (["-o", "linear=XLU"], "linear='XLU' of mixerflow_tiny must be one of 'LU', 'RLU'"),
    (["-o", "input_shape=[1,8,8]"], "input_shape cannot be set"),
    (["-o", "hidden"], "--option takes KEY=VALUE"),
    (["-o", "=3"], "--option takes KEY=VALUE with a key"),
    (["-b", "glow", "-o", "num_steps=true"], "num_steps=True of glow_tiny must be an integer"),
    (["--lr", "nan"], "Invalid value for '--lr': 'nan' is not a finite number"),
    (["--lr", "inf"], "'--lr': 'inf' is not a finite number"),
    (["--lr", "-1e-3"], "'--lr'"),
    (["--lr", "0"], "'--lr'"),
    (["--lam", "nan"], "'--lam': 'nan' is not a finite number"),
    (["--lam", "inf"], "'--lam'"),
    (["--lam", "-1"], "'--lam'"),
    (["--ema-decay", "nan"], "'--ema-decay'"),
    (["--ema-decay", "1"], "'--ema-decay'"),
    (["--labelled-fraction", "nan"], "'--labelled-fraction'"),
    (["--labelled-fraction", "0"], "'--labelled-fraction'"),
    (["--steps", "0"], "'--steps'"),
    (["--steps", "-3"], "'--steps'"),
    (["--batch-size", "0"], "'--batch-size'"),
    (["--device", "gpu"], "'--device': unknown device 'gpu'"),
    (["--device", "cpu:2"], "'--device': unknown device 'cpu:2'"),
    pytest.param(["--device", "cuda"], "'--device': device 'cuda' asked for, but CUDA is not available",
                 marks=pytest.mark.skipif(not NO_CUDA, reason="this machine has CUDA")),
    pytest.param(["--device", "cuda:7"], "'--device': device 'cuda:7'",
                 marks=pytest.mark.skipif(torch.cuda.device_count() > 7, reason="this machine has a cuda:7")),
])
def test_train_refuses_before_any_data_loads(no_data_loads, tmp_path, args, words):
    message = one_line_error(run(*TRAIN, "--out", tmp_path / "run", *args, code=2))
    assert words in message, message
    assert not (tmp_path / "run").exists()  # nothing written either


@pytest.mark.parametrize("line, words", [
    ('lr = nan', "TrainConfig.lr must be a finite number > 0, got nan"),
    ('lam = inf', "lam must be a finite number >= 0, got inf"),
    ('batch_size = 1', "batch_size must be at least 2"),
    ('steps = 0', "TrainConfig.steps"),
    ('[cpu.backbone_options]\nhidden = "wide"', "hidden='wide' of mixerflow_tiny must be an integer"),
])
def test_a_recipe_with_settings_that_cannot_work_is_a_usage_error(no_data_loads, tmp_path, line, words):
    recipe = tmp_path / "bad.toml"
    recipe.write_text(f'backbone = "mixerflow"\ndataset = "digits"\n[cpu]\n{line}\n')
    message = one_line_error(run("train", "--recipe", recipe, "--out", tmp_path / "run", "-q", code=2))
    assert words in message, message


def test_options_given_again_override_a_bad_recipe_value(tmp_path):
    recipe = tmp_path / "fixable.toml"
    recipe.write_text('backbone = "mixerflow"\n[cpu]\nbatch_size = 1\n')
    run("train", "--recipe", recipe, "--batch-size", "8", "--steps", "1", "--val-limit", "16", "--out",
        tmp_path / "run", "-q", "--no-plot", *TINY)


def test_glow_may_train_on_one_image_per_batch(tmp_path):
    # ActNorm-only: a batch of one is well defined, so it is not refused
    run("train", "-b", "glow", "--batch-size", "1", "--steps", "1", "--val-limit", "8", "--out", tmp_path / "g",
        "-q", "--no-plot", "-o", "hidden=8", "-o", "num_steps=1")


@pytest.mark.parametrize("args, words", [
    (["sample", "--temperature", "nan"], "'--temperature' / '-t': 'nan' is not a finite number"),
    (["sample", "--temperature", "inf"], "'inf' is not a finite number"),
    (["sample", "--temperature", "-0.5"], "'--temperature'"),
    (["sample", "--device", "gpu"], "unknown device 'gpu'"),
    (["eval", "--device", "tpu"], "unknown device 'tpu'"),
    (["ood", "--out-data", "noise", "--device", "gpu"], "unknown device 'gpu'"),
    (["explain", "--device", "gpu"], "unknown device 'gpu'"),
])
def test_commands_on_a_checkpoint_refuse_settings_before_loading_it(tmp_path, args, words):
    # the checkpoint does not exist: the option is refused before anyone looks for it
    command, *rest = args
    message = one_line_error(run(command, "-c", tmp_path / "no-run", *rest, code=2))
    assert words in message, message


@pytest.mark.parametrize("option", ["--lr", "--lam"])
def test_probe_refuses_non_finite_rates_up_front(no_data_loads, option):
    assert f"'{option}'" in one_line_error(run("probe", option, "nan", code=2))


def test_probe_names_a_badly_typed_backbone_option(no_data_loads):
    assert "hidden='abc'" in one_line_error(run("probe", "-o", "hidden=abc", code=2))
