"""Callbacks of train(): what each hook sees and when, that a failing callback never changes the
run or its checkpoints, that the end hook runs when the run stops by an exception too, and the
files (run.json, curves.png) that Python's train() writes like the CLI."""

from __future__ import annotations

import json
import math
import warnings

import pytest
import torch

from hybridflow.training import (
    NonFiniteLossError, RunFiles, TrainCallback, check_callbacks, load_checkpoint, train,
)
from tests.training.helpers import same_state, tiny_config, tiny_model


class Recorder(TrainCallback):
    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    def on_train_start(self, info):
        self.calls.append(("start", info))

    def on_log(self, entry):
        self.calls.append(("log", entry))
        entry["bits_per_dim"] = -1.0  # a callback that edits what it gets must not change the history

    def on_checkpoint(self, path):
        self.calls.append(("checkpoint", path))

    def on_train_end(self, result):
        self.calls.append(("end", result))


class Failing(TrainCallback):
    def __init__(self, hook: str) -> None:
        self.hook, self.calls = hook, 0

    def __getattribute__(self, name):
        if name == object.__getattribute__(self, "hook"):
            def fail(*args):
                self.calls += 1
                raise OSError("disk full")
            return fail
        return object.__getattribute__(self, name)


def test_hooks_see_the_run_in_order(digits, tmp_path):
    train_data, val_data = digits
    recorder = Recorder()
    config = tiny_config(tmp_path, eval_every=4, checkpoint_every=4)
    result = train(tiny_model(), train_data, config, val_data, callbacks=[recorder])
    kinds = [kind for kind, _ in recorder.calls]
    assert kinds == ["start", "log", "log", "log", "checkpoint", "log", "log", "log", "checkpoint", "end"]
    info = recorder.calls[0][1]
    assert (info.start_step, info.total_steps, info.world_size, info.out_dir) == (0, 8, 1, tmp_path)
    assert info.model is result.model and info.config is config and info.data.num_examples == 256
    logged = [payload for kind, payload in recorder.calls if kind == "log"]
    assert [(e["split"], e["step"]) for e in logged] == [(e["split"], e["step"]) for e in result.history]
    assert all(e["bits_per_dim"] > 0 for e in result.history)  # the callback's edit stayed in its copy
    checkpoints = [payload for kind, payload in recorder.calls if kind == "checkpoint"]
    assert checkpoints[-1] == result.checkpoint and (checkpoints[-1] / "checkpoint.json").is_file()
    assert recorder.calls[-1][1] is result


@pytest.mark.parametrize("hook", ["on_train_start", "on_log", "on_checkpoint", "on_train_end"])
def test_a_failing_callback_is_switched_off_and_changes_nothing(digits, tmp_path, hook):
    train_data, val_data = digits
    reference = train(tiny_model(), train_data, tiny_config(tmp_path / "a", checkpoint_every=4), val_data)
    failing, recorder = Failing(hook), Recorder()
    with pytest.warns(RuntimeWarning, match=f"callback Failing failed in {hook} \\(OSError: disk full\\); it is "
                                            "switched off"):
        result = train(tiny_model(), train_data, tiny_config(tmp_path / "b", checkpoint_every=4), val_data,
                       callbacks=[failing, recorder])
    assert failing.calls == 1  # called once, then off
    assert [k for k, _ in recorder.calls] == ["start", "log", "log", "checkpoint", "log", "log", "log", "checkpoint",
                                             "end"]  # the others go on
    same_state(result.model.state_dict(), reference.model.state_dict(), exact=True)
    same_state(load_checkpoint(tmp_path / "b").state_dict(), load_checkpoint(tmp_path / "a").state_dict(), exact=True)
    strip = [[{k: v for k, v in e.items() if k != "images_per_s"} for e in r.history] for r in (result, reference)]
    assert strip[0] == strip[1]


def test_the_end_hook_gets_none_when_the_run_stops_by_an_exception(digits, tmp_path):
    train_data, _ = digits
    model = tiny_model()
    calls = {"n": 0}

    def poison(module, inputs, output):  # every training forward after the first update is NaN
        calls["n"] += 1
        return (output[0], output[1] * math.nan) if calls["n"] > 2 else output

    model.backbone.register_forward_hook(poison)
    recorder = Recorder()
    with pytest.warns(RuntimeWarning), pytest.raises(NonFiniteLossError):
        train(model, train_data, tiny_config(tmp_path, max_nonfinite=2), callbacks=[recorder])
    assert recorder.calls[0][0] == "start" and recorder.calls[-1] == ("end", None)


def test_callbacks_are_checked_up_front():
    with pytest.raises(TypeError, match=r"callbacks\[1\] \(function\) has none of the hooks"):
        check_callbacks([Recorder(), lambda entry: None])
    with pytest.raises(TypeError, match="callbacks must be a list of callback objects, got Recorder"):
        check_callbacks(Recorder())
    assert check_callbacks(None) == [] and len(check_callbacks((Recorder(),))) == 1


def test_python_train_writes_run_json_and_curves_like_the_cli(digits, tmp_path):
    train_data, val_data = digits
    model = tiny_model()
    config = tiny_config(tmp_path, eval_every=4)
    train(model, train_data, config, val_data)
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["model"] == model.config() and run["train_config"] == config.to_dict()
    assert run["data"] == dict(name=None, kind="ImageData", num_examples=256, image_shape=[1, 8, 8],
                               classes=[str(d) for d in range(10)], flip=False, num_workers=0, labelled=256)
    assert (tmp_path / "curves.png").stat().st_size > 1000
    # without out_dir nothing is written; with RunFiles(plot=False) no picture
    train(tiny_model(), train_data, tiny_config(None, steps=2))
    train(tiny_model(), train_data, tiny_config(tmp_path / "b", steps=2), callbacks=[RunFiles(plot=False)])
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["checkpoints", "metrics.jsonl", "run.json"]


def test_a_run_file_that_cannot_be_written_does_not_stop_the_run(digits, tmp_path, monkeypatch):
    import hybridflow.training.runfiles as runfiles

    def full_disk(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(runfiles, "write_run_file", full_disk)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train(tiny_model(), digits[0], tiny_config(tmp_path, steps=2))
    assert any("RunFiles failed in on_train_start (OSError: No space left" in str(w.message) for w in caught)
    assert result.steps == 2 and result.checkpoint.is_dir() and not (tmp_path / "run.json").exists()
    assert not (tmp_path / "curves.png").exists()  # switched off: no half-written run folder either
    assert torch.isfinite(load_checkpoint(tmp_path).log_prob(digits[1].images[:8])).all()
