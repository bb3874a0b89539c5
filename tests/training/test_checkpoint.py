"""Checkpoints: damaged files give clear errors, writes are atomic, non-finite weights are
refused, and the pieces a resume reads come back as written."""

from __future__ import annotations

import hashlib
import json
import math
import shutil

import pytest
import torch

import hybridflow.training.checkpoint as checkpoint_module
from hybridflow.training import (
    CheckpointError, find_checkpoint, load_checkpoint, load_model_parts, load_training_state, save_checkpoint, train,
    write_checkpoint,
)
from hybridflow.hybrid import HybridModel
from tests.training.helpers import same_state, temp_files, tiny_config, tiny_model


def _metadata(path) -> dict:
    data = path.read_bytes()
    return json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])["__metadata__"]


def _rewrite(directory, file: str, tensors: dict, metadata: dict | None) -> None:
    """Replace a checkpoint file and fix the manifest's SHA-256, as a careful forger would: only
    the checks that do not rely on the checksum are left."""
    from safetensors.torch import save

    data = save({k: v.contiguous() for k, v in tensors.items()}, metadata=metadata)
    (directory / file).write_bytes(data)
    manifest = json.loads((directory / "checkpoint.json").read_text())
    manifest["files"][file] = hashlib.sha256(data).hexdigest()
    (directory / "checkpoint.json").write_text(json.dumps(manifest))


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

    garbage = damaged("garbage")  # a file the checksum and safetensors' own header check both catch
    (garbage / "model.safetensors").write_bytes(b"\x00\x01garbage")
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_checkpoint(garbage)

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
    assert json.loads(_metadata(directory / "model.safetensors")["model_config"]) == model.config()  # bound copy


def test_an_inference_copy_is_not_saved(tmp_path):
    from hybridflow import HybridModel, freeze
    from hybridflow.training import save_checkpoint

    model = HybridModel("mixerflow_tiny", 3, input_shape=(1, 8, 8), patch_size=2, num_layers=1, hidden=8)
    with pytest.raises(ValueError, match="inference copy"):
        save_checkpoint(freeze(model), tmp_path / "copy")
    assert not (tmp_path / "copy").exists()


def test_a_checkpoint_without_its_manifest_is_refused(digits, tmp_path):
    """An unfinished write (or a stray model.safetensors) is not loaded as if it were complete."""
    train_data, _ = digits
    directory = train(tiny_model(), train_data, tiny_config(tmp_path / "run", steps=2)).checkpoint
    (directory / "checkpoint.json").unlink()
    for path in (directory, directory / "model.safetensors"):
        with pytest.raises(CheckpointError, match=r"step-000000002 has no checkpoint\.json: it is an unfinished"):
            load_checkpoint(path)
    with pytest.raises(CheckpointError, match=r"has no checkpoint\.json"):
        train(tiny_model(), train_data, tiny_config(steps=4), resume=directory)
    with pytest.raises(CheckpointError, match="no complete checkpoint"):  # a run folder skips it
        find_checkpoint(tmp_path / "run")


def test_an_edited_model_config_is_refused(tmp_path):
    """checkpoint.json's config is bound to the weights: preprocess centre -> logit would silently
    build another model around them (log_prob -351 -> -1745 in the bug report)."""
    model = tiny_model()
    directory = save_checkpoint(model, tmp_path / "model")
    manifest = json.loads((directory / "checkpoint.json").read_text())
    manifest["model_config"]["backbone_options"]["preprocess"] = "logit"
    (directory / "checkpoint.json").write_text(json.dumps(manifest))
    assert HybridModel.from_config(manifest["model_config"]).config() != model.config()  # it would build
    with pytest.raises(CheckpointError, match=r"model/checkpoint\.json does not match the one bound to the weights "
                       r"in .*model/model\.safetensors \(backbone_options\.preprocess: 'logit' vs '<absent>'"):
        load_checkpoint(directory)
    manifest["model_config"]["backbone_options"].pop("preprocess")
    manifest["model_config"]["num_classes"] = 10
    (directory / "checkpoint.json").write_text(json.dumps(manifest))
    assert load_checkpoint(directory).num_classes == 10  # undone: it loads again


def test_an_old_checkpoint_without_the_bound_config_loads_with_a_warning(tmp_path):
    model = tiny_model()
    directory = save_checkpoint(model, tmp_path / "old")
    _rewrite(directory, "model.safetensors", model.state_dict(), {"format": "hybridflow-checkpoint"})
    with pytest.warns(UserWarning, match="holds no copy of its model config"):
        loaded = load_checkpoint(directory)
    same_state(loaded.state_dict(), model.state_dict(), exact=True)


def test_non_finite_weights_are_refused_on_load(digits, tmp_path):
    train_data, _ = digits
    directory = train(tiny_model(), train_data, tiny_config(tmp_path / "run", steps=2, ema_decay=0.9)).checkpoint
    metadata = _metadata(directory / "model.safetensors")
    weights = load_model_parts(directory)[2]
    weights["head.bias"] = weights["head.bias"].clone()
    weights["head.bias"][3] = math.inf
    _rewrite(directory, "model.safetensors", weights, metadata)
    with pytest.raises(CheckpointError, match=r"model\.safetensors holds non-finite values in 'head\.bias'"):
        load_checkpoint(directory)
    with pytest.raises(CheckpointError, match="non-finite values in 'head.bias'"):
        train(tiny_model(), train_data, tiny_config(steps=4), resume=directory)

    directory = train(tiny_model(), train_data, tiny_config(tmp_path / "ema", steps=2, ema_decay=0.9)).checkpoint
    state = dict(load_training_state(directory).tensors)
    state["ema.head.weight"] = state["ema.head.weight"] * math.nan
    _rewrite(directory, "training_state.safetensors", state, {"format": "hybridflow-checkpoint"})
    with pytest.raises(CheckpointError, match=r"training_state\.safetensors holds non-finite values in 'ema\."):
        load_checkpoint(directory, ema=True)
    model = tiny_model()
    with pytest.raises(CheckpointError, match="refusing to write a checkpoint: training-state tensor 'ema.w'"):
        write_checkpoint(tmp_path / "x", model.state_dict(), model.config(), 1, {}, {"ema.w": torch.tensor([math.nan])})


def test_a_float64_model_comes_back_in_float64(tmp_path):
    """It came back float32, silently: its log-densities then differed in the 6th digit."""
    model = tiny_model().double().eval()
    loaded = load_checkpoint(save_checkpoint(model, tmp_path / "f64"))
    assert {t.dtype for t in loaded.state_dict().values() if t.is_floating_point()} == {torch.float64}
    same_state(loaded.state_dict(), model.state_dict(), exact=True)
    images = torch.randint(0, 256, (8, 1, 8, 8), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.equal(loaded.log_prob(images), model.log_prob(images))
    # a model whose weights mix dtypes keeps each tensor's own
    mixed = tiny_model()
    mixed.head.double()
    loaded = load_checkpoint(save_checkpoint(mixed, tmp_path / "mixed"))
    assert loaded.head.weight.dtype == torch.float64 and next(loaded.backbone.parameters()).dtype == torch.float32


def test_a_non_default_eval_seed_survives_save_and_load(tmp_path):
    model = HybridModel("mixerflow_tiny", num_classes=3, input_shape=(1, 8, 8), patch_size=2, num_layers=1, hidden=8)
    x = torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8)
    model.train()
    model(x)  # the ActNorms' data-dependent start
    model.eval()
    model.eval_seed = 5
    reloaded = load_checkpoint(save_checkpoint(model, tmp_path / "seeded"))
    assert reloaded.eval_seed == 5
    torch.testing.assert_close(reloaded.log_prob(x), model.log_prob(x), rtol=0, atol=0)
    model.eval_seed = 0  # the default stays out of the config: older checkpoints compare equal
    assert "eval_seed" not in model.config()
    assert load_checkpoint(save_checkpoint(model, tmp_path / "default")).eval_seed == 0
