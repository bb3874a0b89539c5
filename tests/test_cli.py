"""The `hybridflow` command line, driven through click's CliRunner on tiny models and the embedded
digits: outputs, files, --json, exit codes and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from hybridflow.cli import EXTERNAL_DATASETS, RECIPE_KEYS, cli, load_recipe

# A one-layer MixerFlow on 2x2 patches: a training step takes milliseconds.
TINY = ["-o", "num_layers=1", "-o", "hidden=8", "-o", "steps=1"]
COMMANDS = ["train", "probe", "eval", "sample", "ood", "explain", "backbones", "recipes"]
RECIPES = Path(__file__).resolve().parents[1] / "recipes"


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    # The CLI's --threads (from HYBRIDFLOW_THREADS) sets torch's global thread count: restore it.
    threads = torch.get_num_threads()
    monkeypatch.setenv("HYBRIDFLOW_THREADS", "1")
    yield
    torch.set_num_threads(threads)


def run(*args: str, code: int = 0):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    return result


def one_line_error(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A hybrid model trained for 4 steps on the digits (lam = 1, so the head learns too)."""
    out = tmp_path_factory.mktemp("cli") / "run"
    torch_threads = torch.get_num_threads()
    result = CliRunner(env={"HYBRIDFLOW_THREADS": "1"}).invoke(
        cli, ["train", "--steps", "4", "--out", str(out), "--log-every", "2", "-q", "--json", *TINY],
        catch_exceptions=False)
    torch.set_num_threads(torch_threads)
    assert result.exit_code == 0, result.stderr
    return out


# --------------------------------------------------------------------------- help


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_explains_itself_with_an_example(command):
    text = run(command, "--help").stdout
    assert "Example" in text and f"hybridflow {command}" in text
    assert "--json" in text


def test_main_help_lists_commands_and_exit_codes():
    text = run("--help").stdout
    assert all(c in text for c in COMMANDS)
    assert "hybridflow probe --backbone mixerflow" in text and "Exit codes" in text


# --------------------------------------------------------------------------- train


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


def test_shipped_recipes_are_complete_and_valid():
    from hybridflow import list_backbones

    paths = sorted(RECIPES.glob("*.toml"))
    names = {p.stem for p in paths}
    for needed in ("cifar10_density", "imagenet32_density", "imagenet64_density", "mnist_density",
                   "cifar10_local_shuffle", "cifar10_global_shuffle", "galaxy32_density", "cifar10_probe",
                   "mnist_coupling_maf", "mnist_coupling_spline"):
        assert needed in names
    for path in paths:
        assert path.read_text().startswith("# "), f"{path.name} lacks its header comment"
        for scale in ("cpu", "paper"):
            settings, meta = load_recipe(path, scale)
            assert set(settings) <= RECIPE_KEYS
            assert settings["backbone"] in list_backbones(), (path.name, settings["backbone"])
            assert meta.get("reproduces") and meta.get("paper_result")
            if settings["dataset"] in EXTERNAL_DATASETS:
                assert "NOT downloadable" in path.read_text()


def test_recipes_command_lists_them():
    listing = json.loads(run("recipes", "--json").stdout)["recipes"]
    assert {r["name"] for r in listing} >= {"cifar10_density", "mnist_density", "cifar10_probe"}
    assert "Table 1" in run("recipes").stdout


def test_recipe_on_a_missing_external_dataset_says_where_to_get_it(tmp_path):
    result = run("train", "--recipe", RECIPES / "galaxy32_density", "--data-root", tmp_path, "--out",
                 tmp_path / "g", code=1)
    line = one_line_error(result)
    assert "galaxy32" in line and str(tmp_path) in line and "cannot be downloaded" in line


# --------------------------------------------------------------------------- probe


def test_probe_prints_a_table_against_raw_pixels():
    args = ["probe", "--steps", "2", "--seeds", "2", "--limit", "300", "--test-limit", "100", "-q", *TINY]
    result = run(*args)
    lines = result.stdout.splitlines()
    assert lines[1].split()[:3] == ["features", "dim", "accuracy"]
    assert lines[2].startswith("raw pixels") and lines[3].startswith("mixerflow_tiny")
    assert "±" in lines[3] and "training mixerflow_tiny" in result.stderr
    payload = json.loads(run(*args, "--json").stdout)
    rows = {r["name"]: r for r in payload["results"]}
    assert set(rows) == {"raw pixels", "mixerflow_tiny"}
    assert all(0 <= r["accuracy_mean"] <= 1 and r["log_loss_mean"] > 0 and len(r["accuracies"]) == 2
               for r in rows.values())
    assert payload["models"][0]["options"]["num_layers"] == 1


def test_probe_compares_backbones_and_checkpoints(trained):
    payload = json.loads(run("probe", "-b", "mixerflow", "-b", "glow", "--checkpoint", trained, "--steps", "1",
                             "--seeds", "1", "--limit", "200", "--test-limit", "60", "-q", "--json",
                             "--no-pixels").stdout)
    names = [r["name"] for r in payload["results"]]
    assert names == ["mixerflow_tiny", "glow_tiny", "checkpoint run"]
    assert payload["models"][1]["options"] == {"num_steps": 4, "hidden": 32}  # the light probe settings


# --------------------------------------------------------------------------- eval, sample


def test_eval_text_and_json(trained):
    assert "bits/dim" in run("eval", "-c", trained).stdout
    figures = json.loads(run("eval", "-c", trained, "--json", "--limit", "50", "--split", "train").stdout)
    assert figures["num_examples"] == 50 and figures["bits_per_dim"] > 0 and 0 <= figures["accuracy"] <= 1


def test_sample_writes_a_png_grid(trained, tmp_path):
    path = tmp_path / "grid.png"
    payload = json.loads(run("sample", "-c", trained, "-n", "9", "-t", "0.5", "--out", path, "--json").stdout)
    assert payload["path"] == str(path) and path.stat().st_size > 0
    width, height = Image.open(path).size
    assert width == height >= 3 * 32  # a 3x3 grid, each 8x8 digit enlarged to 32 pixels


# --------------------------------------------------------------------------- ood


def test_ood_table_json_and_plots(trained, tmp_path):
    roc, hist = tmp_path / "roc.png", tmp_path / "hist.png"
    text = run("ood", "-c", trained, "--out-data", "noise", "--roc", roc, "--hist", hist, "--limit", "100").stdout
    assert text.splitlines()[1].split() == ["scorer", "AUROC", "AUPR-in", "AUPR-out", "FPR95"]
    assert roc.stat().st_size > 1000 and hist.stat().st_size > 1000
    payload = json.loads(run("ood", "-c", trained, "--out-data", "inverted", "--score", "loglik,bpd,max_softmax",
                             "--limit", "100", "--json").stdout)
    assert set(payload["metrics"]) == {"loglik", "bpd", "max_softmax"}
    for m in payload["metrics"].values():
        assert set(m) >= {"auroc", "aupr_in", "aupr_out", "fpr95"} and 0 <= m["auroc"] <= 1


def test_ood_likelihood_ratio_with_a_reference(trained):
    payload = json.loads(run("ood", "-c", trained, "--out-data", "noise", "--score", "likelihood_ratio",
                             "--reference", trained, "--limit", "50", "--json").stdout)
    assert payload["metrics"]["likelihood_ratio"]["auroc"] == pytest.approx(0.5)  # a model against itself


# --------------------------------------------------------------------------- explain


def test_explain_writes_heatmaps_and_checks_completeness(trained, tmp_path):
    path = tmp_path / "explain.png"
    payload = json.loads(run("explain", "-c", trained, "--index", "2", "--method", "ig,saliency,gradshap",
                             "--ig-steps", "16", "--out", path, "--json").stdout)
    assert path.stat().st_size > 1000 and payload["path"] == str(path)
    rows = payload["attributions"]
    assert len(rows) == 6  # 3 methods x (predicted class, nll)
    for row in rows:
        if row["method"] == "ig":
            assert abs(row["completeness_error"]) <= 1e-2 * max(1.0, abs(row["value"] - row["baseline_value"]))
    text = run("explain", "-c", trained, "--target", "nll", "--baseline", "blur", "--out", path).stdout
    assert "Integrated Gradients: nll" in text and "heat-maps ->" in text


# --------------------------------------------------------------------------- backbones


def test_backbones_lists_the_registry():
    payload = json.loads(run("backbones", "--json").stdout)
    names = [r["name"] for r in payload["backbones"]]
    assert "mixerflow_tiny" in names and "glow_tiny" in names and payload["families"]["mixerflow"] == "mixerflow_tiny"
    counted = json.loads(run("backbones", "--pattern", "mixerflow_tiny", "--params", "--json").stdout)["backbones"]
    assert counted[0]["params"] > 0 and counted[0]["input_shape"] == [1, 28, 28]


# --------------------------------------------------------------------------- error paths


@pytest.mark.parametrize("args, code, words", [
    (["eval", "-c", "no/such/run"], 2, "checkpoint not found"),
    (["sample", "-c", "no/such/run"], 2, "checkpoint not found"),
    (["train", "--backbone", "resnet", "--steps", "1"], 2, "unknown backbone 'resnet'"),
    (["probe", "--backbone", "resnet"], 2, "unknown backbone 'resnet'"),
    (["train", "--dataset", "imagenet1k", "--steps", "1"], 2, "unknown dataset 'imagenet1k'"),
    (["train", "--recipe", "no_such_recipe"], 2, "recipe not found"),
    (["backbones", "--pattern", "zzz*"], 2, "no backbone matches"),
])
def test_user_mistakes_are_one_line_with_a_meaningful_code(args, code, words):
    assert words in one_line_error(run(*args, code=code))


def test_bad_option_is_a_usage_error():
    result = run("train", "--steps", "many", code=2)
    assert "Invalid value for '--steps'" in result.stderr and "Traceback" not in result.stderr
    run("probe", "--no-such-option", code=2)


def test_missing_dataset_without_download(tmp_path):
    line = one_line_error(run("train", "--dataset", "mnist", "--data-root", tmp_path / "empty", "--out",
                              tmp_path / "m", code=1))
    assert "--download" in line and not (tmp_path / "m").exists()


def test_checkpoint_and_scorer_mistakes(trained, tmp_path):
    assert "unknown scorer 'foo'" in one_line_error(run("ood", "-c", trained, "--out-data", "noise", "--score",
                                                        "loglik,foo", code=2))
    assert "--reference" in one_line_error(run("ood", "-c", trained, "--out-data", "noise", "--score",
                                               "likelihood_ratio", code=2))
    assert "unknown dataset" in one_line_error(run("ood", "-c", trained, "--out-data", "svhm", code=2))
    assert "out of range" in one_line_error(run("explain", "-c", trained, "--index", "100000", code=2))
    assert "unknown attribution method" in one_line_error(run("explain", "-c", trained, "--method", "lime", code=2))
    not_a_checkpoint = tmp_path / "notes.txt"
    not_a_checkpoint.write_text("hello")
    assert "not a checkpoint" in one_line_error(run("eval", "-c", not_a_checkpoint, code=1))
    # a damaged weights file: the library's CheckpointError becomes one line and exit code 1
    damaged = tmp_path / "damaged"
    import shutil

    shutil.copytree(next((trained / "checkpoints").iterdir()), damaged)
    (damaged / "model.safetensors").write_bytes(b"garbage")
    assert "corrupted" in one_line_error(run("eval", "-c", damaged, code=1))
