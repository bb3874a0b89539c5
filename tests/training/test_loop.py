"""The training loop: logging, validation, checkpoints, exact resume, non-finite steps, the frozen
mode, the time budget and the global RNGs it must leave alone. Tiny models on a slice of the
digits."""

from __future__ import annotations

import json
import math
import os
import random
import signal

import numpy as np
import pytest
import torch

from hybridflow.data import ImageData
from hybridflow.hybrid import HybridModel
from hybridflow.training import (
    NonFiniteLossError, evaluate_model, find_checkpoint, load_checkpoint, load_training_state, train,
)
from tests.training.helpers import same_state, temp_files, tiny_config, tiny_model


def test_training_logs_validates_and_checkpoints(digits, tmp_path):
    train_data, val_data = digits
    model = tiny_model()
    result = train(model, train_data, tiny_config(tmp_path, eval_every=4, checkpoint_every=4, ema_decay=0.9), val_data)
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines == result.history
    assert [(e["split"], e["step"]) for e in lines] == [
        ("train", 2), ("train", 4), ("val", 4), ("train", 6), ("train", 8), ("val", 8)]
    assert all(math.isfinite(e["bits_per_dim"]) and 0 <= e["accuracy"] <= 1 for e in lines)
    assert result.steps == 8 and result.metrics["nonfinite_steps"] == 0
    assert result.metrics["val_accuracy"] == lines[-1]["accuracy"]
    assert result.checkpoint == tmp_path / "checkpoints" / "step-000000008"
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-000000008"]  # older one pruned
    assert not temp_files(tmp_path)
    assert not model.training

    loaded = load_checkpoint(tmp_path)
    x = val_data.images[:16]
    torch.testing.assert_close(loaded.predict_logits(x), model.predict_logits(x))
    same_state(load_checkpoint(tmp_path, ema=True).state_dict(), result.ema.state_dict(), exact=True)
    # validation used the EMA weights
    assert evaluate_model(result.ema, val_data)["bits_per_dim"] == pytest.approx(result.metrics["val_bits_per_dim"])


@pytest.mark.parametrize("how", ["signal", "sigterm", "raise"])
def test_interrupted_then_resumed_run_matches_uninterrupted(digits, tmp_path, how):
    """Ctrl-C (or SIGTERM) writes a checkpoint; resuming it ends where an uninterrupted run ends."""
    train_data, _ = digits
    config = dict(steps=8, ema_decay=0.8, warmup_steps=2)
    reference = tiny_model(seed=0)
    expected = train(reference, train_data, tiny_config(tmp_path / "reference", **config))

    model = tiny_model(seed=0)
    calls = {"n": 0}
    # the handlers the process had (a job started in the background has SIGINT ignored): restored after
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)

    def interrupt(module, inputs, output):
        calls["n"] += 1
        if calls["n"] == 5:  # call 1 initialises ActNorm: call 5 is the forward of step 3
            if how in ("signal", "sigterm"):  # deferred: the loop stops at the step boundary
                os.kill(os.getpid(), signal.SIGINT if how == "signal" else signal.SIGTERM)
            else:
                raise KeyboardInterrupt

    handle = model.backbone.register_forward_hook(interrupt)
    with pytest.raises(KeyboardInterrupt):
        train(model, train_data, tiny_config(tmp_path / "run", **config))
    handle.remove()
    assert load_training_state(tmp_path / "run").step == 3
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before  # our handlers are gone

    fresh = tiny_model(seed=123)  # other weights: resume must bring the checkpoint's
    torch.manual_seed(999)  # and the global RNG, wherever it stands, must not matter
    result = train(fresh, train_data, tiny_config(tmp_path / "run", **config), resume=tmp_path / "run")
    assert result.steps == 8
    same_state(fresh.state_dict(), reference.state_dict())
    same_state(result.ema.state_dict(), expected.ema.state_dict())

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


def test_resume_after_kill_is_bit_exact(digits, tmp_path):
    """As after ``kill -9`` during the write of step 8's checkpoint: resuming from step 4's ends
    with exactly the weights, EMA and log of the run that was never stopped."""
    train_data, _ = digits
    config = dict(steps=8, ema_decay=0.8, warmup_steps=2, checkpoint_every=4, keep_checkpoints=2)
    expected = train(tiny_model(), train_data, tiny_config(tmp_path / "reference", **config))
    run = tmp_path / "run"
    train(tiny_model(), train_data, tiny_config(run, **config))
    (run / "checkpoints" / "step-000000008" / "checkpoint.json").unlink()  # the manifest never got written
    (run / "checkpoints" / "step-000000008" / ".model.safetensors.x.tmp").write_bytes(b"half")
    assert find_checkpoint(run).name == "step-000000004"

    fresh = tiny_model(seed=7)
    result = train(fresh, train_data, tiny_config(run, **config), resume=run)
    same_state(fresh.state_dict(), expected.model.state_dict(), exact=True)
    same_state(result.ema.state_dict(), expected.ema.state_dict(), exact=True)
    strip = lambda history: [{k: v for k, v in e.items() if k != "images_per_s"} for e in history]  # noqa: E731
    assert strip(result.history) == strip(expected.history)
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert strip(logged) == strip(expected.history)


def _global_rng_states() -> tuple:
    return torch.get_rng_state(), np.random.get_state(), random.getstate()


def _assert_same_rng_states(before: tuple, after: tuple) -> None:
    assert torch.equal(before[0], after[0]), "torch's global RNG moved"
    same_numpy = before[1][0] == after[1][0] and np.array_equal(before[1][1], after[1][1])
    assert same_numpy and before[1][2:] == after[1][2:], "NumPy's global RNG moved"
    assert before[2] == after[2], "Python's global RNG moved"


def test_training_leaves_the_global_rngs_alone_and_does_not_read_them(digits, tmp_path):
    train_data, val_data = digits
    config = tiny_config(tmp_path, steps=4, ema_decay=0.9, eval_every=2, checkpoint_every=2)
    models = []
    for global_seed in (1, 2):
        np.random.seed(global_seed)
        random.seed(global_seed)
        model = tiny_model(seed=0)
        torch.manual_seed(global_seed)
        before = _global_rng_states()
        train(model, train_data, config, val_data)
        _assert_same_rng_states(before, _global_rng_states())
        models.append(model)
    # The run is a function of its config: the global RNG's state did not matter either.
    same_state(models[0].state_dict(), models[1].state_dict(), exact=True)

    model = tiny_model(seed=0)
    before = _global_rng_states()
    train(model, train_data, tiny_config(tmp_path, steps=6, ema_decay=0.9), resume=tmp_path)
    _assert_same_rng_states(before, _global_rng_states())


def test_time_budget_ends_the_run_like_its_last_step(digits, tmp_path):
    train_data, val_data = digits
    result = train(tiny_model(), train_data, tiny_config(tmp_path, steps=1000, max_seconds=0.0), val_data)
    assert result.steps == 1
    assert [(e["split"], e["step"]) for e in result.history] == [("train", 1), ("val", 1)]
    assert result.checkpoint == tmp_path / "checkpoints" / "step-000000001"


def test_constant_schedule_keeps_the_learning_rate_after_warm_up(digits):
    train_data, _ = digits
    result = train(tiny_model(), train_data, tiny_config(steps=6, lr=1e-3, warmup_steps=2, lr_schedule="constant"))
    assert [e["lr"] for e in result.history] == pytest.approx([1e-3] * 3)
    cosine = train(tiny_model(), train_data, tiny_config(steps=6, lr=1e-3, warmup_steps=2))
    assert cosine.history[-1]["lr"] == pytest.approx(0.0, abs=1e-12)


def _poison(model: HybridModel, bad_calls) -> dict:
    """Make the backbone's training-mode forward number ``n`` (1-based) in ``bad_calls`` return a NaN
    log-det, and record the full state before every one (the evaluation-mode checks are left alone)."""
    record = {"n": 0, "before": []}

    def pre(module, inputs):
        if module.training:
            record["before"].append({k: v.clone() for k, v in model.state_dict().items()})

    def post(module, inputs, output):
        if not module.training:
            return None
        record["n"] += 1
        if bad_calls(record["n"]):
            return output[0], output[1] * math.nan

    model.backbone.register_forward_pre_hook(pre)
    model.backbone.register_forward_hook(post)
    return record


def test_nonfinite_step_is_skipped_counted_and_reported(digits):
    train_data, _ = digits
    model = tiny_model()
    record = _poison(model, lambda n: n == 4)  # call 4 = step 2
    with pytest.warns(RuntimeWarning, match="step 2: non-finite"):
        result = train(model, train_data, tiny_config(steps=5))
    assert result.steps == 5 and result.metrics["nonfinite_steps"] == 1
    assert [e["nonfinite_steps"] for e in result.history] == [0, 1, 1]
    before = record["before"]
    # the skipped step 2 (forward 4) rolled weights and BatchNorm statistics back to their state
    # before step 1, the last step whose forward was finite (step 1's update is suspect too),
    same_state(before[2], before[4], exact=True)
    # while a good step changes them
    assert not torch.equal(before[2]["head.weight"], before[3]["head.weight"])
    assert all(torch.isfinite(v).all() for v in model.state_dict().values() if v.is_floating_point())


def test_nonfinite_gradient_is_skipped(digits):
    train_data, _ = digits
    model = tiny_model()
    calls = {"n": 0}

    def inf_grad(grad):
        calls["n"] += 1
        return grad * math.inf if calls["n"] == 2 else grad

    model.head.weight.register_hook(inf_grad)
    with pytest.warns(RuntimeWarning, match="non-finite loss or gradient"):
        result = train(model, train_data, tiny_config(steps=3))
    assert result.metrics["nonfinite_steps"] == 1
    assert torch.isfinite(model.head.weight).all()


def test_too_many_nonfinite_steps_stop_with_valid_weights_and_checkpoint(digits, tmp_path):
    train_data, _ = digits
    model = tiny_model()
    _poison(model, lambda n: n >= 4)  # steps 0 and 1 are good, everything after is NaN
    with pytest.warns(RuntimeWarning), pytest.raises(NonFiniteLossError, match="3 training steps in a row") as info:
        train(model, train_data, tiny_config(tmp_path, steps=10, checkpoint_every=1, max_nonfinite=3))
    error = info.value
    assert isinstance(error, RuntimeError) and error.count == 3 and error.step == 4
    # skipped steps still count: the checkpoint after steps 2 and 3 (both skipped) holds the weights
    # from before step 1, the last whose forward was finite
    assert error.checkpoint == tmp_path / "checkpoints" / "step-000000004"
    assert find_checkpoint(tmp_path) == error.checkpoint
    same_state(load_checkpoint(error.checkpoint).state_dict(), model.state_dict(), exact=True)
    assert all(torch.isfinite(v).all() for v in model.state_dict().values() if v.is_floating_point())


def test_frozen_backbone_training_changes_only_the_head(digits):
    train_data, _ = digits
    model = tiny_model()
    model.train()(train_data.images[:32])  # initialise ActNorm as a trained backbone would be
    model.freeze_backbone()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train(model, train_data, tiny_config(steps=3, lr=1e-2))
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"head.weight", "head.bias"}


def test_unlabelled_data_trains_the_density_only(digits):
    train_data, _ = digits
    unlabelled = ImageData(train_data.images, None)
    model = tiny_model()
    head = model.head.weight.clone()
    result = train(model, unlabelled, tiny_config(steps=2))
    assert result.metrics["accuracy"] is None and math.isfinite(result.metrics["bits_per_dim"])
    assert torch.equal(model.head.weight, head)


def test_training_refuses_an_inference_copy():
    from hybridflow import HybridModel, freeze
    from hybridflow.data import load_digits_data
    from hybridflow.training import TrainConfig, fit_backbone, train

    model = HybridModel("mixerflow_tiny", 10, input_shape=(1, 8, 8), patch_size=2, num_layers=1)
    data = load_digits_data(train=True).subset(range(8))
    with pytest.raises(ValueError, match="inference copy"):
        train(freeze(model), data, TrainConfig(steps=1, batch_size=4))
    with pytest.raises(ValueError, match="inference copy"):
        fit_backbone(freeze(model.backbone), data.images, steps=1)


def _usable(model: HybridModel, images: torch.Tensor) -> bool:
    with torch.no_grad():
        return bool(torch.isfinite(model.log_prob(images)).all() and torch.isfinite(model.predict_proba(images)).all())


def test_divergence_rolls_back_to_a_usable_model_and_checkpoints_only_usable_ones(digits, tmp_path):
    """lr = 1000: the loss and gradients stay finite but the updated weights give NaN ever after.
    Good and bad steps alternate; only a finite pass on *updated* weights resets the count."""
    train_data, val_data = digits
    model = tiny_model()
    config = dict(steps=60, lr=1e3, checkpoint_every=3, keep_checkpoints=3, max_nonfinite=4, ema_decay=0.9)
    with pytest.warns(RuntimeWarning, match="rolled back"), pytest.raises(NonFiniteLossError) as info:
        train(model, train_data, tiny_config(tmp_path, **config), val_data)
    error = info.value
    assert error.count == 4 and "rolled back to its state before step" in str(error)
    assert str(error.checkpoint) in str(error) and find_checkpoint(tmp_path) == error.checkpoint
    assert _usable(model, val_data.images[:32])
    # every checkpoint kept holds a usable model (and EMA), the last one the model itself
    for directory in sorted((tmp_path / "checkpoints").iterdir()):
        assert _usable(load_checkpoint(directory), val_data.images[:32]), directory
        assert _usable(load_checkpoint(directory, ema=True), val_data.images[:32]), directory
    same_state(load_checkpoint(error.checkpoint).state_dict(), model.state_dict(), exact=True)
    # --resume starts from that finite model (and, at the same learning rate, stops again with one)
    fresh = tiny_model(seed=5)
    first = _poison(fresh, lambda n: False)
    with pytest.warns(RuntimeWarning), pytest.raises(NonFiniteLossError) as again:
        train(fresh, train_data, tiny_config(tmp_path, **config), resume=tmp_path)
    same_state(first["before"][0], load_checkpoint(error.checkpoint).state_dict(), exact=True)
    assert again.value.count == 4 and again.value.step > error.step  # max_nonfinite fresh tries
    assert _usable(fresh, val_data.images[:32]) and _usable(load_checkpoint(tmp_path), val_data.images[:32])


def test_divergence_without_periodic_checkpoints_still_leaves_one(digits, tmp_path):
    train_data, val_data = digits
    model = tiny_model()
    with pytest.warns(RuntimeWarning), pytest.raises(NonFiniteLossError) as info:
        train(model, train_data, tiny_config(tmp_path, steps=60, lr=1e3, max_nonfinite=3))
    assert info.value.checkpoint is not None and find_checkpoint(tmp_path) == info.value.checkpoint
    assert _usable(model, val_data.images[:32]) and _usable(load_checkpoint(tmp_path), val_data.images[:32])


def test_infinite_pixels_skip_the_step_and_leave_the_model_unharmed(digits):
    train_data, val_data = digits
    model = tiny_model()
    record = _poison(model, lambda n: False)  # records the state before every training forward
    calls = {"n": 0}

    def infinite_pixel(module, inputs):  # the dequantised pixels the flow receives
        if module.training:
            calls["n"] += 1
            if calls["n"] == 4:  # call 1 initialises ActNorm: call 4 is step 2's batch
                u = inputs[0].clone()
                u[0, 0, 3, 3] = math.inf
                return (u,)
        return None

    model.backbone.register_forward_pre_hook(infinite_pixel)
    with pytest.warns(RuntimeWarning, match="step 2: non-finite loss or gradient"):
        result = train(model, train_data, tiny_config(steps=6))
    assert result.metrics["nonfinite_steps"] == 1 and result.steps == 6
    before = record["before"]
    same_state(before[2], before[4], exact=True)  # rolled back to before step 1, then trained on
    assert not torch.equal(before[4]["head.weight"], before[5]["head.weight"])
    assert all(math.isfinite(e["loss"]) for e in result.history)
    assert _usable(model, val_data.images[:32])
