"""The new benchmarks run end to end in smoke mode (seconds): their JSON holds what the renderer reads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def smoke(script: str, tmp_path: Path, *args: str) -> dict:
    subprocess.run([sys.executable, str(ROOT / "bench" / script), "--smoke", "--threads", "1", "--results-dir",
                    str(tmp_path), "--checkpoint-dir", str(tmp_path / "ckpt"), "--quiet", *args],
                   check=True, capture_output=True, text=True, timeout=600)
    return json.loads((tmp_path / script.replace(".py", ".json")).read_text())


@pytest.mark.slow
def test_time_to_quality_finds_the_crossing(tmp_path):
    record = smoke("time_to_quality.py", tmp_path, "--models", "mixerflow_tiny", "glow_tiny")
    target = record["summary"]["target_bits_per_dim"]
    glow = next(r for r in record["runs"] if r["family"] == "glow")
    assert record["summary"]["target_model"] == "glow_tiny" and target == glow["test_bits_per_dim"]
    for row in record["runs"]:
        curve = [p["test_bits_per_dim"] for p in row["train"]["history"]]
        assert curve and all(v > 0 for v in curve)
        reached = row["minutes_to_target"] is not None
        assert reached == (min(curve) <= target)
    assert (tmp_path / record["plot"]).stat().st_size > 1000


@pytest.mark.slow
def test_hybrid_frontier_scores_hybrids_and_the_baseline(tmp_path):
    record = smoke("hybrid_frontier.py", tmp_path)
    heads = {r["run"]: r["head"] for r in record["runs"]}
    assert heads == {"mixerflow_tiny:head=hidden@1": "hidden", "mixerflow_tiny@1": "latent",
                     "timm_mixer": "pixels (discriminative)"}
    for row in record["runs"]:
        assert 0 <= row["test_accuracy"] <= 1
        assert (row["test_bits_per_dim"] is None) == (row["lam"] is None)
