"""The training loop: logging, validation, checkpoints, exact resume, non-finite steps, corrupted
and half-written checkpoints, the frozen mode. Tiny models on a slice of the digits."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal

import numpy as np
import pytest
import torch

import hybridflow.checkpoint as checkpoint_module
from hybridflow.checkpoint import (
    CheckpointError, find_checkpoint, load_checkpoint, load_training_state, save_checkpoint, write_checkpoint,
)
from hybridflow.data import ImageData, load_digits_data
from hybridflow.hybrid import HybridModel
from hybridflow.train import (
    NonFiniteLossError, TrainConfig, evaluate, lr_factor, make_adam, resolve_device, train,
)

TINY = dict(input_shape=(1, 8, 8), patch_size=2, num_layers=2, hidden=16, steps=1)


@pytest.fixture(scope="module")
def digits() -> tuple[ImageData, ImageData]:
    data = load_digits_data(train=True)
    return data.subset(np.arange(256)), data.subset(np.arange(256, 320))


def _model(seed: int = 0, **options) -> HybridModel:
    torch.manual_seed(seed)
    return HybridModel("mixerflow_tiny", 10, **{**TINY, **options})


def _config(out_dir=None, **options) -> TrainConfig:
    defaults = dict(steps=8, batch_size=32, log_every=2, progress=False, num_threads=1, out_dir=out_dir)
    return TrainConfig(**{**defaults, **options})


def _same_state(a: dict, b: dict, exact: bool = False) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if exact:
            assert torch.equal(a[key], b[key]), key
        else:
            torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=key)


def _temp_files(root) -> list[str]:
    return [str(p) for p in root.rglob("*.tmp")]


def test_lr_schedule_warms_up_then_decays_to_zero():
    assert lr_factor(0, 100, 10) == pytest.approx(0.1)
    assert lr_factor(9, 100, 10) == pytest.approx(1.0)
    assert lr_factor(10, 100, 10) == pytest.approx(1.0)
    assert lr_factor(55, 100, 10) == pytest.approx(0.5)
    assert lr_factor(100, 100, 10) == pytest.approx(0.0, abs=1e-12)
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_make_adam_is_fused_and_steps_like_plain_adam():
    torch.manual_seed(0)
    nets = [torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.GELU(), torch.nn.Linear(7, 3)) for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    start = nets[0][0].weight.detach().clone()
    fused = make_adam(nets[0].parameters(), lr=1e-2, betas=(0.8, 0.99))
    plain = torch.optim.Adam(nets[1].parameters(), lr=1e-2, betas=(0.8, 0.99))
    assert fused.defaults["fused"] is True and not plain.defaults["fused"]
    x = torch.randn(16, 5)
    for _ in range(5):
        for net, opt in zip(nets, (fused, plain)):
            opt.zero_grad()
            net(x).square().mean().backward()
            opt.step()
    for a, b in zip(nets[0].parameters(), nets[1].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(nets[0][0].weight, start, atol=1e-3)  # it did train


def test_training_logs_validates_and_checkpoints(digits, tmp_path):
    train_data, val_data = digits
    model = _model()
    result = train(model, train_data, _config(tmp_path, eval_every=4, checkpoint_every=4, ema_decay=0.9), val_data)
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines == result.history
    assert [(e["split"], e["step"]) for e in lines] == [
        ("train", 2), ("train", 4), ("val", 4), ("train", 6), ("train", 8), ("val", 8)]
    assert all(math.isfinite(e["bits_per_dim"]) and 0 <= e["accuracy"] <= 1 for e in lines)
    assert result.steps == 8 and result.metrics["nonfinite_steps"] == 0
    assert result.metrics["val_accuracy"] == lines[-1]["accuracy"]
    assert result.checkpoint == tmp_path / "checkpoints" / "step-000000008"
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-000000008"]  # older one pruned
    assert not _temp_files(tmp_path)
    assert not model.training

    loaded = load_checkpoint(tmp_path)
    x = val_data.images[:16]
    torch.testing.assert_close(loaded.predict_logits(x), model.predict_logits(x))
    _same_state(load_checkpoint(tmp_path, ema=True).state_dict(), result.ema.state_dict(), exact=True)
    # validation used the EMA weights
    assert evaluate(result.ema, val_data)["bits_per_dim"] == pytest.approx(result.metrics["val_bits_per_dim"])


@pytest.mark.parametrize("how", ["signal", "raise"])
def test_interrupted_then_resumed_run_matches_uninterrupted(digits, tmp_path, how):
    """Ctrl-C writes a checkpoint; resuming it ends where an uninterrupted run ends."""
    train_data, _ = digits
    config = dict(steps=8, ema_decay=0.8, warmup_steps=2)
    reference = _model(seed=0)
    expected = train(reference, train_data, _config(tmp_path / "reference", **config))

    model = _model(seed=0)
    calls = {"n": 0}

    def interrupt(module, inputs, output):
        calls["n"] += 1
        if calls["n"] == 5:  # call 1 initialises ActNorm: call 5 is the forward of step 3
            if how == "signal":
                os.kill(os.getpid(), signal.SIGINT)  # deferred: the loop stops at the step boundary
            else:
                raise KeyboardInterrupt

    handle = model.backbone.register_forward_hook(interrupt)
    with pytest.raises(KeyboardInterrupt):
        train(model, train_data, _config(tmp_path / "run", **config))
    handle.remove()
    assert load_training_state(tmp_path / "run").step == 3
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # our handler is gone

    fresh = _model(seed=123)  # other weights: resume must bring the checkpoint's
    result = train(fresh, train_data, _config(tmp_path / "run", **config), resume=tmp_path / "run")
    assert result.steps == 8
    _same_state(fresh.state_dict(), reference.state_dict())
    _same_state(result.ema.state_dict(), expected.ema.state_dict())

    assert len(result.history) == len(expected.history)
    for got, want in zip(result.history, expected.history):
        assert got.keys() == want.keys()
        for key in got.keys() - {"images_per_s"}:
            if isinstance(want[key], (int, float)) and not isinstance(want[key], bool):
                assert got[key] == pytest.approx(want[key], rel=1e-5), (got["step"], key)
            else:  # strings (the split's name) match exactly: pytest 9.2 refuses approx on them
                assert got[key] == want[key], (got["step"], key)
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == len(expected.history)  # the log continues without duplicates


def _poison(model: HybridModel, bad_calls) -> dict:
    """Make the backbone's forward number ``n`` (1-based) in ``bad_calls`` return a NaN log-det, and
    record the full state before every forward."""
    record = {"n": 0, "before": []}

    def pre(module, inputs):
        record["before"].append({k: v.clone() for k, v in model.state_dict().items()})

    def post(module, inputs, output):
        record["n"] += 1
        if bad_calls(record["n"]):
            return output[0], output[1] * math.nan

    model.backbone.register_forward_pre_hook(pre)
    model.backbone.register_forward_hook(post)
    return record


def test_nonfinite_step_is_skipped_counted_and_reported(digits):
    train_data, _ = digits
    model = _model()
    record = _poison(model, lambda n: n == 4)  # call 4 = step 2
    with pytest.warns(RuntimeWarning, match="step 2: non-finite"):
        result = train(model, train_data, _config(steps=5))
    assert result.steps == 5 and result.metrics["nonfinite_steps"] == 1
    assert [e["nonfinite_steps"] for e in result.history] == [0, 1, 1]
    before = record["before"]
    # the skipped step (between forwards 4 and 5) left weights and BatchNorm statistics untouched,
    _same_state(before[3], before[4], exact=True)
    # while a good step changes them
    assert not torch.equal(before[2]["head.weight"], before[3]["head.weight"])
    assert all(torch.isfinite(v).all() for v in model.state_dict().values() if v.is_floating_point())


def test_nonfinite_gradient_is_skipped(digits):
    train_data, _ = digits
    model = _model()
    calls = {"n": 0}

    def inf_grad(grad):
        calls["n"] += 1
        return grad * math.inf if calls["n"] == 2 else grad

    model.head.weight.register_hook(inf_grad)
    with pytest.warns(RuntimeWarning, match="non-finite loss or gradient"):
        result = train(model, train_data, _config(steps=3))
    assert result.metrics["nonfinite_steps"] == 1
    assert torch.isfinite(model.head.weight).all()


def test_too_many_nonfinite_steps_stop_with_valid_weights_and_checkpoint(digits, tmp_path):
    train_data, _ = digits
    model = _model()
    _poison(model, lambda n: n >= 4)  # steps 0 and 1 are good, everything after is NaN
    with pytest.warns(RuntimeWarning), pytest.raises(NonFiniteLossError, match="3 training steps in a row") as info:
        train(model, train_data, _config(tmp_path, steps=10, checkpoint_every=1, max_nonfinite=3))
    error = info.value
    assert isinstance(error, RuntimeError) and error.count == 3 and error.step == 4
    # skipped steps still count: the checkpoint after steps 2 and 3 (both skipped) holds step 1's weights
    assert error.checkpoint == tmp_path / "checkpoints" / "step-000000004"
    assert find_checkpoint(tmp_path) == error.checkpoint
    _same_state(load_checkpoint(error.checkpoint).state_dict(), model.state_dict(), exact=True)
    assert all(torch.isfinite(v).all() for v in model.state_dict().values() if v.is_floating_point())


def test_corrupted_checkpoints_give_clear_errors(digits, tmp_path):
    train_data, _ = digits
    result = train(_model(), train_data, _config(tmp_path / "run", steps=2))
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
        train(_model(), train_data, _config(steps=4), resume=state)

    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match="no complete checkpoint"):
        load_checkpoint(tmp_path)


def test_checkpoint_writes_are_atomic(tmp_path, monkeypatch):
    model = _model()
    root = tmp_path / "checkpoints"
    first = write_checkpoint(root / "step-000000001", model.state_dict(), model.config(), step=1)
    assert not _temp_files(tmp_path)

    def failing_fsync(fd):
        raise OSError("disk full")

    with monkeypatch.context() as patch:
        patch.setattr(checkpoint_module.os, "fsync", failing_fsync)
        with torch.no_grad():
            model.head.weight.add_(1.0)
        with pytest.raises(OSError, match="disk full"):
            write_checkpoint(root / "step-000000002", model.state_dict(), model.config(), step=2)
    assert not _temp_files(tmp_path)  # no partial file left behind
    assert not (root / "step-000000002" / "checkpoint.json").exists()
    assert find_checkpoint(tmp_path) == first  # the unfinished one is skipped
    assert not torch.equal(load_checkpoint(tmp_path).head.weight, model.head.weight)

    with torch.no_grad():
        model.head.weight.fill_(math.nan)
    with pytest.raises(CheckpointError, match="not finite"):
        save_checkpoint(model, tmp_path / "nan")


def test_frozen_backbone_training_changes_only_the_head(digits):
    train_data, _ = digits
    model = _model()
    model.train()(train_data.images[:32])  # initialise ActNorm as a trained backbone would be
    model.freeze_backbone()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train(model, train_data, _config(steps=3, lr=1e-2))
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"head.weight", "head.bias"}


def test_unlabelled_data_trains_the_density_only(digits):
    train_data, _ = digits
    unlabelled = ImageData(train_data.images, None)
    model = _model()
    head = model.head.weight.clone()
    result = train(model, unlabelled, _config(steps=2))
    assert result.metrics["accuracy"] is None and math.isfinite(result.metrics["bits_per_dim"])
    assert torch.equal(model.head.weight, head)


def test_bad_settings_are_named(digits):
    train_data, _ = digits
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="betas"):
        TrainConfig(betas=(0.9, 1.5))
    with pytest.raises(ValueError, match="ema_decay"):
        TrainConfig(ema_decay=1.0)
    with pytest.raises(ValueError, match="shape"):
        train(HybridModel("mixerflow_tiny", 10, patch_size=4, num_layers=1), train_data, _config())
    with pytest.raises(ValueError, match="only 3 classes"):
        train(HybridModel("mixerflow_tiny", 3, **TINY), train_data, _config())
