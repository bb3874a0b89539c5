"""`hybridflow train`: run folders, summaries, resuming, recipes, semi-supervised and shuffled data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hybridflow.training import lr_factor

from tests.cli.runner import RECIPES, TINY, one_line_error, run


def test_train_writes_checkpoint_log_curves_and_json(trained):
    files = {p.name for p in trained.iterdir()}
    assert {"checkpoints", "metrics.jsonl", "run.json", "curves.png"} <= files
    assert (trained / "curves.png").stat().st_size > 1000
    log = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log if e["split"] == "train"] == [2, 4]
    saved = json.loads((trained / "run.json").read_text())
    assert saved["backbone"] == "mixerflow_tiny" and saved["data"]["name"] == "digits"
    assert saved["backbone_options"]["patch_size"] == 2  # fitted to the 8x8 digits


def test_train_summary_line_and_json(tmp_path):
    text = run("train", "--steps", "2", "--out", tmp_path / "a", "-q", *TINY).stdout.strip()
    assert text.startswith("mixerflow_tiny on digits: 2 steps") and "bits/dim" in text and "step-000000002" in text
    summary = json.loads(run("train", "--steps", "2", "--out", tmp_path / "b", "-q", "--json", *TINY).stdout)
    assert summary["steps"] == 2 and summary["val_bits_per_dim"] > 0 and Path(summary["checkpoint"]).is_dir()


def test_train_refuses_to_mix_runs_and_resumes(tmp_path):
    out = tmp_path / "run"
    run("train", "--steps", "2", "--out", out, "-q", *TINY)
    refused = run("train", "--steps", "2", "--out", out, "-q", *TINY, code=2)
    assert "--resume" in one_line_error(refused)
    # --resume restores the saved settings (the tiny options) and continues to the new step count
    resumed = json.loads(run("train", "--out", out, "--resume", "--steps", "3", "-q", "--json").stdout)
    assert resumed["steps"] == 3
    assert "nothing to resume" in one_line_error(run("train", "--out", tmp_path / "x", "--resume", code=2))


def test_train_semi_supervised_and_shuffled(tmp_path):
    out = tmp_path / "semi"
    run("train", "--steps", "2", "--out", out, "-q", "--labelled-fraction", "0.05", "--shuffle", "global", *TINY)
    saved = json.loads((out / "run.json").read_text())
    assert saved["data"]["shuffle"] == "global" and saved["settings"]["labelled_fraction"] == 0.05
    # later commands read the same shuffle from run.json; samples are shown in the natural pixel order
    assert json.loads(run("eval", "-c", out, "--json").stdout)["num_examples"] == 450
    sample = json.loads(run("sample", "-c", out, "-n", "4", "--out", tmp_path / "s.png", "--json").stdout)
    assert sample["unshuffled"] is True


def test_recipe_values_are_defaults_that_options_override(tmp_path):
    recipe = tmp_path / "tiny.toml"
    recipe.write_text('# a test recipe\nname = "tiny"\nreproduces = "nothing"\ndataset = "digits"\nlam = 0.5\n'
                      '[paper]\nsteps = 1000\n[cpu]\nsteps = 3\nbatch_size = 16\n'
                      '[cpu.backbone_options]\nnum_layers = 1\nhidden = 8\nsteps = 1\n')
    out = tmp_path / "run"
    summary = json.loads(run("train", "--recipe", recipe, "--steps", "2", "--out", out, "-q", "--json").stdout)
    settings = json.loads((out / "run.json").read_text())["settings"]
    assert summary["steps"] == 2                      # the explicit option wins
    assert settings["lam"] == 0.5 and settings["batch_size"] == 16  # the recipe's [cpu] values
    assert settings["backbone_options"]["hidden"] == 8
    bad = tmp_path / "bad.toml"
    bad.write_text('lam = 0.5\n[cpu]\nstepz = 3\n')
    assert "unknown key 'stepz'" in one_line_error(run("train", "--recipe", bad, code=2))


def test_recipe_on_a_missing_external_dataset_says_where_to_get_it(tmp_path):
    result = run("train", "--recipe", RECIPES / "galaxy32_density", "--data-root", tmp_path, "--out",
                 tmp_path / "g", code=1)
    line = one_line_error(result)
    assert "galaxy32" in line and str(tmp_path) in line and "cannot be downloaded" in line


def test_missing_dataset_without_download(tmp_path):
    line = one_line_error(run("train", "--dataset", "mnist", "--data-root", tmp_path / "empty", "--out",
                              tmp_path / "m", code=1))
    assert "--download" in line and not (tmp_path / "m").exists()


def test_flip_and_workers_options(tmp_path):
    out = tmp_path / "run"
    run("train", "--steps", "2", "--log-every", "1", "--out", out, "-q", "--no-plot", "--flip", "--workers", "0",
        *TINY)
    saved = json.loads((out / "run.json").read_text())
    assert saved["settings"]["flip"] is True and saved["train_config"]["flip"] is True
    assert saved["train_config"]["num_workers"] == 0
    refused = run("train", "--workers", "-1", code=2).stderr
    assert "Invalid value for '--workers': -1 is not in the range x>=0" in refused


def test_tensorboard_option_writes_event_files(tmp_path):
    pytest.importorskip("tensorboard")  # an optional extra: hybridflow[tensorboard]
    log_dir = tmp_path / "tb"
    run("train", "--steps", "2", "--log-every", "1", "--out", tmp_path / "run", "-q", "--no-plot",
        "--tensorboard", log_dir, *TINY)
    assert list(log_dir.glob("events.out.tfevents.*"))  # TensorBoard's event file (scalars: tests/training)


def test_tensorboard_missing_is_named_before_any_data_loads(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    line = one_line_error(run("train", "--steps", "2", "--out", tmp_path / "run", "--tensorboard", tmp_path / "tb",
                              *TINY, code=1))
    assert "pip install tensorboard" in line and not (tmp_path / "run").exists()


def test_resume_with_a_new_lr_trains_at_it(tmp_path):
    out = tmp_path / "run"
    run("train", "--steps", "2", "--log-every", "1", "--lr", "0.01", "--out", out, "-q", "--no-plot", *TINY)
    with pytest.warns(UserWarning, match="with lr 0.0001 instead of the checkpoint's 0.01"):
        run("train", "--steps", "4", "--lr", "0.0001", "--out", out, "--resume", "-q", "--no-plot")
    log = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rates = {e["step"]: e["lr"] for e in log if e["split"] == "train"}
    assert rates[1] == pytest.approx(0.01 * lr_factor(1, 2)) and rates[2] == 0.0  # the first run's cosine
    assert rates[3] == pytest.approx(1e-4 * lr_factor(3, 4), rel=1e-9)  # the new rate's, not 0.01's


def test_betas_reach_adam_and_the_run_file_and_bad_ones_are_named(tmp_path):
    out = tmp_path / "run"
    run("train", "--steps", "2", "--betas", "0.8,0.95", "--out", out, "-q", "--no-plot", *TINY)
    assert json.loads((out / "run.json").read_text())["settings"]["betas"] == [0.8, 0.95]
    saved = json.loads((next((out / "checkpoints").iterdir()) / "checkpoint.json").read_text())
    assert saved["training_state"]["optimizer"]["param_groups"][0]["betas"] == [0.8, 0.95]  # Adam's own
    for bad, words in (("0.9", "two numbers"), ("0.9,1.0", "each in [0, 1)"), ("a,b", "not two numbers"),
                       ("0.9,nan", "each in [0, 1)")):
        error = run("train", "--betas", bad, "--out", tmp_path / "x", code=2).stderr
        assert "Invalid value for '--betas'" in error and words in error and "Traceback" not in error, bad
    assert not (tmp_path / "x").exists()


def test_resume_with_another_lam_names_only_what_changed(tmp_path):
    out = tmp_path / "run"
    run("train", "--steps", "2", "--out", out, "-q", "--no-plot", *TINY)
    with pytest.warns(UserWarning) as caught:
        run("train", "--steps", "3", "--lam", "0.5", "--out", out, "--resume", "-q", "--no-plot")
    messages = [str(w.message) for w in caught if "model config" in str(w.message)]
    assert len(messages) == 1 and messages[0].endswith("(checkpoint -> now): lam: 1.0 -> 0.5")
    assert json.loads((out / "run.json").read_text())["settings"]["lam"] == 0.5


def test_train_classes_are_stored_and_read_back_by_ood_and_eval(tmp_path):
    out = tmp_path / "low"
    run("train", "--steps", "2", "--out", out, "-q", "--classes", "0-4", *TINY)
    saved = json.loads((out / "run.json").read_text())
    assert saved["data"]["classes"] == [0, 1, 2, 3, 4]
    assert json.loads(run("eval", "-c", out, "--json").stdout)["num_examples"] == 226  # the test digits 0-4
    run("train", "--steps", "2", "--out", tmp_path / "list", "-q", "--classes", "0,1,2,3,4", *TINY)
    assert json.loads((tmp_path / "list" / "run.json").read_text())["data"]["classes"] == [0, 1, 2, 3, 4]
    assert "'5-x' is not a class label" in run("train", "--classes", "5-x", "--out", tmp_path / "x", code=2).stderr
    error = one_line_error(run("train", "--steps", "2", "--classes", "7-12", "--out", tmp_path / "y", *TINY, code=2))
    assert "no class 10, 11, 12" in error


def test_resume_of_a_python_run_rebuilds_its_backbone(tmp_path):
    from hybridflow.data import load_digits_data
    from hybridflow.factory import build_model
    from hybridflow.training import TrainConfig, train

    model = build_model("glow_tiny", (1, 8, 8), 10, 0.0, dict(num_steps=1, hidden=8), seed=0)
    train(model, load_digits_data(), TrainConfig(steps=2, batch_size=32, progress=False, out_dir=tmp_path / "py"))
    assert "--dataset NAME" in one_line_error(run("train", "--out", tmp_path / "py", "--resume", "--steps", "3",
                                                  code=1))
    summary = json.loads(run("train", "--out", tmp_path / "py", "--resume", "--steps", "3", "--dataset", "digits",
                             "-q", "--json").stdout)
    assert summary["backbone"] == "glow_tiny" and summary["steps"] == 3 and summary["params"] == model.backbone.num_params


@pytest.mark.slow
def test_under_torchrun_only_rank_zero_prints_the_summary(tmp_path):
    from tests.torchrun import run_two_ranks

    run_two_ranks(Path(__file__).with_name("ddp_train_worker.py"), tmp_path)
    out = {rank: (tmp_path / f"rank{rank}.out").read_text() for rank in (0, 1)}
    err = {rank: (tmp_path / f"rank{rank}.err").read_text() for rank in (0, 1)}
    assert err[0].startswith("exit 0") and err[1].startswith("exit 0")
    assert out[0].startswith("mixerflow_tiny on digits: 2 steps") and out[1] == ""
    assert "train images" in err[0] and "train images" not in err[1]  # the setup line too
    assert (tmp_path / "run" / "run.json").is_file()


def test_labelled_per_batch_reaches_the_run_and_is_checked_before_data(tmp_path):
    out = tmp_path / "ssl"
    run("train", "--steps", "2", "--out", out, "-q", "--labelled-fraction", "0.05", "--labelled-per-batch", "4",
        "--batch-size", "16", *TINY)
    assert json.loads((out / "run.json").read_text())["train_config"]["labelled_per_batch"] == 4
    refused = run("train", "--steps", "2", "--out", tmp_path / "bad", "-q", "--labelled-fraction", "0.05",
                  "--labelled-per-batch", "16", "--batch-size", "16", *TINY, code=2)
    assert "labelled_per_batch must be below batch_size (16)" in one_line_error(refused)
    assert not (tmp_path / "bad").exists()
    # 0 turns a K off again (a recipe's, or a resumed run's): batches drawn uniformly
    run("train", "--steps", "2", "--out", tmp_path / "off", "-q", "--labelled-fraction", "1", "--labelled-per-batch",
        "0", "--batch-size", "16", *TINY)
    assert json.loads((tmp_path / "off" / "run.json").read_text())["train_config"]["labelled_per_batch"] is None


def test_aligned_pseudo_labels_reach_the_run_and_need_pseudo_labels(tmp_path):
    out = tmp_path / "ssl"
    run("train", "--steps", "2", "--out", out, "-q", "--labelled-fraction", "0.05", "--labelled-per-batch", "4",
        "--batch-size", "16", "--pseudo-labels", "0.9", "--align-pseudo-labels", "--translate", "1", *TINY)
    config = json.loads((out / "run.json").read_text())["train_config"]
    assert (config["pseudo_labels"], config["align_pseudo_labels"], config["translate"]) == (0.9, True, 1)
    refused = run("train", "--steps", "2", "--out", tmp_path / "bad", "-q", "--align-pseudo-labels", *TINY, code=2)
    assert "align_pseudo_labels" in one_line_error(refused) and "pseudo_labels" in one_line_error(refused)
    assert not (tmp_path / "bad").exists()


def test_resume_and_overwrite_together_are_refused(tmp_path):
    out = tmp_path / "run"
    run("train", "--steps", "2", "--out", out, "-q", "--no-plot", *TINY)
    refused = run("train", "--out", out, "--resume", "--overwrite", "--steps", "3", code=2)
    assert "give one of them" in one_line_error(refused)
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-000000002"]  # neither resumed nor deleted


def test_the_console_prints_warnings_as_one_line(tmp_path, capsys):
    import warnings

    from hybridflow.cli import main

    out = tmp_path / "run"
    run("train", "--steps", "2", "--out", out, "-q", "--no-plot", *TINY)
    before = warnings.showwarning
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        with pytest.raises(SystemExit) as exit_:
            main(["train", "--steps", "3", "--lr", "0.5", "--out", str(out), "--resume", "-q", "--no-plot"])
        assert warnings.showwarning is before  # an in-process caller gets its display back
    assert exit_.value.code == 0
    err = capsys.readouterr().err
    assert any(line.startswith("warning: resuming from") for line in err.splitlines()), err
    assert "UserWarning" not in err and ".py:" not in err
