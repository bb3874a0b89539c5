"""`hybridflow probe`: the probe table against raw pixels, backbones and checkpoints."""

from __future__ import annotations

import json

from hybridflow.features import DEFAULT_FEATURES
from tests.cli.runner import TINY, run


def test_probe_prints_a_table_against_raw_pixels():
    args = ["probe", "--steps", "2", "--seeds", "2", "--limit", "300", "--test-limit", "100", "-q", *TINY]
    result = run(*args)
    lines = result.stdout.splitlines()
    assert lines[1].split()[:3] == ["features", "dim", "accuracy"]
    assert lines[2].startswith("raw pixels") and lines[3].startswith(f"mixerflow_tiny ({DEFAULT_FEATURES})")
    assert "±" in lines[3] and "training mixerflow_tiny" in result.stderr
    payload = json.loads(run(*args, "--json").stdout)
    rows = {r["name"]: r for r in payload["results"]}
    assert set(rows) == {"raw pixels", f"mixerflow_tiny ({DEFAULT_FEATURES})"}
    assert all(0 <= r["accuracy_mean"] <= 1 and r["log_loss_mean"] > 0 and len(r["accuracies"]) == 2
               for r in rows.values())
    assert payload["models"][0]["options"]["num_layers"] == 1


def test_probe_compares_backbones_and_checkpoints(trained):
    payload = json.loads(run("probe", "-b", "mixerflow", "-b", "glow", "--checkpoint", trained, "--steps", "1",
                             "--seeds", "1", "--limit", "200", "--test-limit", "60", "-q", "--json",
                             "--no-pixels").stdout)
    names = [r["name"] for r in payload["results"]]
    assert names == [f"{name} ({DEFAULT_FEATURES})" for name in ("mixerflow_tiny", "glow_tiny", "checkpoint run")]
    assert payload["models"][1]["options"] == {"num_steps": 4, "hidden": 32}  # the light probe settings


def test_probe_features_option():
    args = ["probe", "--steps", "0", "--seeds", "1", "--limit", "200", "--test-limit", "60", "-q", "--no-pixels",
            "--json", *TINY]
    payload = json.loads(run(*args, "--features", "latent", "-f", "depths").stdout)
    assert [(r["name"], r["dim"]) for r in payload["results"]] == [("mixerflow_tiny (latent)", 64),
                                                                   ("mixerflow_tiny (depths)", 64)]
    error = run(*args, "--features", "pixels", code=2).stderr
    assert "'pixels' is not one of" in error and "depths+hidden" in error
