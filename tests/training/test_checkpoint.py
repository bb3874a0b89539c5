"""Checkpoints: damaged files give clear errors, writes are atomic, non-finite weights are
refused, and the pieces a resume reads come back as written."""

from __future__ import annotations

import math
import shutil

import pytest
import torch

import hybridflow.training.checkpoint as checkpoint_module
from hybridflow.training import (
    CheckpointError, find_checkpoint, load_checkpoint, load_model_parts, save_checkpoint, train, write_checkpoint,
)
from tests.training.helpers import same_state, temp_files, tiny_config, tiny_model


def test_corrupted_checkpoints_give_clear_errors(digits, tmp_path):
    train_data, _ = digits
    result = train(tiny_model(), train_data, tiny_config(tmp_path / "run", steps=2))
    good = result.checkpoint

    def damaged(name: str):
        target = tmp_path / name
        shutil.copytree(good, target)
        return target

    truncated = damaged("truncated")
    data = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"truncated/model\.safetensors is corrupted"):
        load_checkpoint(truncated)

    flipped = damaged("flipped")
    data = bytearray((flipped / "model.safetensors").read_bytes())
    data[-10] ^= 0xFF  # inside the tensor data: only the checksum can tell
    (flipped / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_checkpoint(flipped)

    manifest = damaged("manifest")
    (manifest / "checkpoint.json").write_text('{"format": "hybridflow-chec')
    with pytest.raises(CheckpointError, match=r"checkpoint\.json is unreadable or corrupted"):
        load_checkpoint(manifest)

    bare = damaged("bare")  # no manifest: safetensors' own header check must catch the damage
    (bare / "checkpoint.json").unlink()
    assert load_checkpoint(bare / "model.safetensors").num_classes == 10
    (bare / "model.safetensors").write_bytes(b"\x00\x01garbage")
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        load_checkpoint(bare)

    state = damaged("state")
    data = (state / "training_state.safetensors").read_bytes()
    (state / "training_state.safetensors").write_bytes(data[:100])
    with pytest.raises(CheckpointError, match=r"training_state\.safetensors is corrupted"):
        train(tiny_model(), train_data, tiny_config(steps=4), resume=state)

    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match="no complete checkpoint"):
        load_checkpoint(tmp_path)


def test_checkpoint_writes_are_atomic(tmp_path, monkeypatch):
    model = tiny_model()
    root = tmp_path / "checkpoints"
    first = write_checkpoint(root / "step-000000001", model.state_dict(), model.config(), step=1)
    assert not temp_files(tmp_path)

    def failing_fsync(fd):
        raise OSError("disk full")

    with monkeypatch.context() as patch:
        patch.setattr(checkpoint_module.os, "fsync", failing_fsync)
        with torch.no_grad():
            model.head.weight.add_(1.0)
        with pytest.raises(OSError, match="disk full"):
            write_checkpoint(root / "step-000000002", model.state_dict(), model.config(), step=2)
    assert not temp_files(tmp_path)  # no partial file left behind
    assert not (root / "step-000000002" / "checkpoint.json").exists()
    assert find_checkpoint(tmp_path) == first  # the unfinished one is skipped
    assert not torch.equal(load_checkpoint(tmp_path).head.weight, model.head.weight)

    with torch.no_grad():
        model.head.weight.fill_(math.nan)
    with pytest.raises(CheckpointError, match="not finite"):
        save_checkpoint(model, tmp_path / "nan")


def test_model_parts_come_back_as_written(tmp_path):
    model = tiny_model()
    directory = save_checkpoint(model, tmp_path / "model")
    manifest, config, weights = load_model_parts(directory)
    assert manifest["step"] == 0 and config == model.config()
    same_state(weights, model.state_dict(), exact=True)
    (directory / "checkpoint.json").unlink()  # a bare model.safetensors: the config is in its metadata
    manifest, config, _ = load_model_parts(directory)
    assert manifest is None and config == model.config()


def test_an_inference_copy_is_not_saved(tmp_path):
    from hybridflow import HybridModel, freeze
    from hybridflow.training import save_checkpoint

    model = HybridModel("mixerflow_tiny", 3, input_shape=(1, 8, 8), patch_size=2, num_layers=1, hidden=8)
    with pytest.raises(ValueError, match="inference copy"):
        save_checkpoint(freeze(model), tmp_path / "copy")
    assert not (tmp_path / "copy").exists()
