"""`hybridflow eval`: text and JSON, and checkpoints that are not."""

from __future__ import annotations

import json
import shutil

from tests.cli.runner import one_line_error, run


def test_eval_text_and_json(trained):
    assert "bits/dim" in run("eval", "-c", trained).stdout
    figures = json.loads(run("eval", "-c", trained, "--json", "--limit", "50", "--split", "train").stdout)
    assert figures["num_examples"] == 50 and figures["bits_per_dim"] > 0 and 0 <= figures["accuracy"] <= 1


def test_checkpoint_mistakes(trained, tmp_path):
    not_a_checkpoint = tmp_path / "notes.txt"
    not_a_checkpoint.write_text("hello")
    assert "not a checkpoint" in one_line_error(run("eval", "-c", not_a_checkpoint, code=1))
    # a damaged weights file: the library's CheckpointError becomes one line and exit code 1
    damaged = tmp_path / "damaged"
    shutil.copytree(next((trained / "checkpoints").iterdir()), damaged)
    (damaged / "model.safetensors").write_bytes(b"garbage")
    assert "corrupted" in one_line_error(run("eval", "-c", damaged, code=1))
