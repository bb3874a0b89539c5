"""TensorBoardCallback: scalars at their steps (a fake writer, and TensorBoard's own event files when
it is installed), a resumed run continuing them, and a clear error naming `pip install tensorboard`."""

from __future__ import annotations

import sys

import pytest

from hybridflow.training import TensorBoardCallback, train
from tests.training.helpers import tiny_config, tiny_model


class FakeWriter:
    def __init__(self) -> None:
        self.scalars: list[tuple[str, float, int]] = []
        self.texts: list[str] = []
        self.flushed = self.closed = False

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, value, step))

    def add_text(self, tag, text, step=None):
        self.texts.append(text)

    def flush(self):
        self.flushed = True

    def close(self):
        self.closed = True


def test_metrics_become_scalars_at_their_steps(digits):
    writer = FakeWriter()
    result = train(tiny_model(), digits[0], tiny_config(eval_every=4), digits[1],
                   callbacks=[TensorBoardCallback(writer=writer)])
    tags = {tag for tag, _, _ in writer.scalars}
    assert {"train/bits_per_dim", "train/lr", "train/accuracy", "val/bits_per_dim", "val/accuracy"} <= tags
    assert not {"train/split", "train/step"} & tags
    train_bpd = [(step, value) for tag, value, step in writer.scalars if tag == "train/bits_per_dim"]
    assert train_bpd == [(e["step"], e["bits_per_dim"]) for e in result.history if e["split"] == "train"]
    assert '"lr": 0.001' in writer.texts[0] and '"backbone": "mixerflow_tiny"' in writer.texts[0]
    assert writer.flushed and not writer.closed  # the caller's writer: flushed, left open


def test_missing_tensorboard_is_named_with_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as when not installed
    with pytest.raises(ImportError, match=r"needs the tensorboard package, which is not installed: pip install "
                                          r"tensorboard \(or pip install 'hybridflow\[tensorboard\]'\)"):
        TensorBoardCallback(tmp_path / "tb")
    assert not (tmp_path / "tb").exists()
    with pytest.raises(ValueError, match="exactly one"):
        TensorBoardCallback()


def _scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_event_files_hold_the_scalars_and_a_resume_continues_them(digits, tmp_path):
    pytest.importorskip("tensorboard")
    log_dir = tmp_path / "tb"
    config = tiny_config(tmp_path / "run", steps=6, checkpoint_every=2)
    calls = {"n": 0}
    model = tiny_model()

    def interrupt(module, inputs, output):
        calls["n"] += 1
        if calls["n"] == 6:  # mid step 3 (forwards: ActNorm init, steps 0 and 1, the check at step 2, step 2)
            raise KeyboardInterrupt
        return output

    handle = model.backbone.register_forward_hook(interrupt)
    with pytest.raises(KeyboardInterrupt):
        train(model, digits[0], config, callbacks=[TensorBoardCallback(log_dir)])
    handle.remove()
    written = _scalars(log_dir)
    assert [s for s, _ in written["train/bits_per_dim"]] == [2]
    result = train(tiny_model(), digits[0], config, resume=tmp_path / "run", callbacks=[TensorBoardCallback(log_dir)])
    expected = [(e["step"], e["bits_per_dim"]) for e in result.history if e["split"] == "train"]
    got = _scalars(log_dir)["train/bits_per_dim"]
    assert [s for s, _ in got] == [2, 4, 6]  # the checkpoint's own step is kept, none twice
    assert [v for _, v in got] == pytest.approx([v for _, v in expected], rel=1e-6)  # stored as float32
