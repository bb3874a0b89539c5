"""Experiment tracking: :class:`TensorBoardCallback` writes a run's metrics as TensorBoard scalars.

It is a training callback (:mod:`~hybridflow.training.callbacks`), so it runs in rank 0 only and
a failure of it never stops the run. TensorBoard is an optional dependency
(``pip install tensorboard``, or ``pip install 'hybridflow[tensorboard]'``); the error saying so
comes when the callback is made, before any data loads. ``hybridflow train --tensorboard DIR``
uses it.

Example:
    >>> class Writer:  # anything with SummaryWriter's add_scalar, add_text, flush and close
    ...     def __init__(self): self.scalars = []
    ...     def add_scalar(self, tag, value, step): self.scalars.append((tag, value, step))
    ...     def add_text(self, tag, text, step=None): pass
    ...     def flush(self): pass
    ...     def close(self): pass
    >>> callback = TensorBoardCallback(writer=Writer())
    >>> callback.on_log(dict(split="val", step=8, bits_per_dim=1.5, accuracy=None))
    >>> callback.writer.scalars
    [('val/bits_per_dim', 1.5, 8)]

Then ``train(model, data, config, callbacks=[TensorBoardCallback("runs/tb")])`` and
``tensorboard --logdir runs/tb``.
"""

from __future__ import annotations

import json
import math
import numbers
import os
from pathlib import Path
from typing import Any, Union

from .callbacks import TrainCallback, TrainInfo

__all__ = ["TensorBoardCallback", "tensorboard_writer_class"]

PathLike = Union[str, "os.PathLike[str]"]

#: Entry keys that say where an entry is, not what was measured.
_NOT_SCALARS = ("split", "step")


def tensorboard_writer_class() -> Any:
    """``torch.utils.tensorboard.SummaryWriter``, or an ``ImportError`` saying how to install
    TensorBoard (torch's own message does not)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as error:
        raise ImportError("TensorBoard logging needs the tensorboard package, which is not installed: "
                          f"pip install tensorboard (or pip install 'hybridflow[tensorboard]'); {error}") from None
    return SummaryWriter


class TensorBoardCallback(TrainCallback):
    """Write every metrics entry as scalars ``<split>/<name>`` (``train/bits_per_dim``,
    ``val/accuracy``, ``train/lr``...) at its step, and the run's settings as text.

    Args:
        log_dir: the folder of the event files (``tensorboard --logdir`` it); the writer is made
            when the run starts, in rank 0 only. A resumed run purges the events logged after its
            checkpoint's step, as ``metrics.jsonl`` is rewritten: they never happened.
        writer: an existing ``SummaryWriter`` (or anything with its ``add_scalar``, ``add_text``,
            ``flush`` and ``close``) to write into instead; it is flushed at the end, not closed.

    Raises ``ImportError`` naming ``pip install tensorboard`` when ``log_dir`` is given and
    TensorBoard is not installed.
    """

    def __init__(self, log_dir: PathLike | None = None, writer: Any = None) -> None:
        if (log_dir is None) == (writer is None):
            raise ValueError("TensorBoardCallback takes a log_dir or a writer (exactly one)")
        self.log_dir = None if log_dir is None else Path(log_dir)
        self._writer_class = tensorboard_writer_class() if writer is None else None  # fail now, not mid-run
        self.writer, self._owns_writer = writer, writer is None

    def on_train_start(self, info: TrainInfo) -> None:
        if self.writer is None:
            # entries of the resumed step itself are in the checkpoint's history: keep them
            purge = info.start_step + 1 if info.start_step else None
            self.writer = self._writer_class(str(self.log_dir), purge_step=purge)
        settings = dict(config=info.config.to_dict(), start_step=info.start_step, total_steps=info.total_steps,
                        world_size=info.world_size)
        try:
            settings["model"] = info.model.config()
        except ValueError:  # a backbone not built by create_backbone: no config to show
            pass
        text = json.dumps(settings, indent=1, default=str)
        self.writer.add_text("run", "    " + text.replace("\n", "\n    "), info.start_step)  # markdown code block

    def on_log(self, entry: dict[str, Any]) -> None:
        if self.writer is None:
            return
        split, step = entry.get("split", "train"), int(entry["step"])
        for name, value in entry.items():
            if name in _NOT_SCALARS or isinstance(value, bool) or not isinstance(value, numbers.Real):
                continue
            if math.isfinite(value):
                self.writer.add_scalar(f"{split}/{name}", float(value), step)

    def on_train_end(self, result: Any) -> None:
        if self.writer is None:
            return
        self.writer.flush()
        if self._owns_writer:
            self.writer.close()
            self.writer = None
