"""Bad checkpoint paths and damaged checkpoints: a CheckpointError naming the path, or exit code 2 /
1 with one line on the command line."""

from __future__ import annotations

import pytest

from hybridflow.training import CheckpointError, find_checkpoint, load_checkpoint
from tests.cli.runner import one_line_error, run


def test_a_missing_path_is_named(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        find_checkpoint(tmp_path / "nope")


def test_a_folder_without_checkpoints_is_named(tmp_path):
    with pytest.raises(CheckpointError, match="no complete checkpoint in"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize("manifest", ["{not json", "", "[1, 2]"])
def test_a_damaged_manifest_is_named(tmp_path, manifest):
    step = tmp_path / "step-000000001"
    step.mkdir()
    (step / "checkpoint.json").write_text(manifest)
    with pytest.raises(CheckpointError, match="checkpoint"):
        load_checkpoint(step)


@pytest.mark.parametrize("command", ["eval", "sample", "explain"])
def test_the_commands_name_a_missing_checkpoint(tmp_path, command):
    assert "checkpoint not found" in one_line_error(run(command, "-c", tmp_path / "nope", code=2))


@pytest.mark.parametrize("command", ["eval", "sample"])
def test_the_commands_name_an_empty_run_folder(tmp_path, command):
    assert "no complete checkpoint" in one_line_error(run(command, "-c", tmp_path, code=1))
