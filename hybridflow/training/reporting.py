"""What a training run reports while it runs: the sums of the logging window, the metrics log
(``out_dir/metrics.jsonl``, one JSON entry a line) and the progress bar.

Example:
    >>> window = LogWindow()
    >>> window.examples += 32
    >>> LogWindow.from_state(window.state()).examples
    32.0
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any, Callable

from ..hybrid import HybridLoss
from .checkpoint import atomic_write_bytes

__all__ = ["METRICS_FILE", "LogWindow", "MetricsLog", "train_entry", "final_metrics", "progress_bar"]

METRICS_FILE = "metrics.jsonl"


class LogWindow:
    """Sums over the steps since the last log entry."""

    _FIELDS = ("loss", "bpd", "ce", "correct", "labelled", "examples", "steps")

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.loss = self.bpd = self.ce = self.correct = self.labelled = self.examples = 0.0
        self.steps = 0
        self.started = time.perf_counter()

    def state(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in self._FIELDS}

    @classmethod
    def from_state(cls, state: dict[str, float] | None) -> LogWindow:
        """A window holding ``state`` (a fresh one for ``None``), so that the first log after a
        resume averages the same steps as the uninterrupted run."""
        window = cls()
        for key in cls._FIELDS if state is not None else ():
            setattr(window, key, state[key])
        return window

    def add(self, parts: HybridLoss, batch: int) -> None:
        labelled = parts.labelled
        self.loss += float(parts.total.detach()) * batch
        self.bpd += float(parts.bits_per_dim.detach().double().sum())
        self.ce += float(parts.cross_entropy.detach().double().sum())
        self.correct += float(((parts.logits.detach().argmax(1) == parts.targets) & labelled).sum())
        self.labelled += float(labelled.sum())
        self.examples += batch
        self.steps += 1


class MetricsLog:
    """The run's history in memory and, with an ``out_dir``, in ``out_dir/metrics.jsonl``;
    ``on_record`` (the callbacks' ``on_log``) gets each entry once it is stored."""

    def __init__(self, out_dir: Path | None, history: list[dict[str, Any]] | None = None,
                 on_record: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.path = out_dir / METRICS_FILE if out_dir is not None else None
        self.history = history if history is not None else []  # shared: the caller's list grows
        self.on_record = on_record

    def start(self, resumed: bool) -> None:
        """Create the file; a resumed run rewrites it from the checkpoint's history, since the
        lines written after that checkpoint never happened."""
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resumed:
            atomic_write_bytes(self.path, "".join(json.dumps(e) + "\n" for e in self.history).encode())
        else:
            self.path.write_text("")

    def record(self, entry: dict[str, Any]) -> None:
        self.history.append(entry)
        if self.path is not None:
            with open(self.path, "a") as f:
                f.write(json.dumps(entry) + "\n")
        if self.on_record is not None:
            self.on_record(dict(entry))  # a copy: a callback cannot change the history


def train_entry(sums: list[float], step: int, epoch: float, lr: float, nonfinite: int,
                elapsed: float) -> dict[str, Any]:
    """The metrics entry of a logging window from its (all-reduced) sums ``[loss, bits/dim,
    cross-entropy, correct, labelled, examples]``: means per example (per labelled example for the
    head's figures; ``None`` where nothing was counted).

    Example:
        >>> e = train_entry([6.0, 4.0, 1.0, 1.0, 2.0, 4.0], step=2, epoch=0.5, lr=1e-3, nonfinite=0, elapsed=2.0)
        >>> e["bits_per_dim"], e["accuracy"], e["images_per_s"]
        (1.0, 0.5, 2.0)
    """
    loss, bpd, ce, correct, labelled, examples = sums
    return dict(split="train", step=step, epoch=round(epoch, 4), lr=lr,
                loss=loss / examples if examples else None, bits_per_dim=bpd / examples if examples else None,
                cross_entropy=ce / labelled if labelled else None, accuracy=correct / labelled if labelled else None,
                nonfinite_steps=nonfinite, images_per_s=round(examples / elapsed, 1) if elapsed > 0 else None)


def final_metrics(history: list[dict[str, Any]]) -> dict[str, Any]:
    """The last training window's and the last validation's figures (``val_*``) of ``history``.

    Example:
        >>> final_metrics([dict(split="val", bits_per_dim=1.5, cross_entropy=0.2, accuracy=0.9)])
        {'val_bits_per_dim': 1.5, 'val_cross_entropy': 0.2, 'val_accuracy': 0.9}
    """
    keys = ("bits_per_dim", "cross_entropy", "accuracy")
    trains = [e for e in history if e["split"] == "train"]
    vals = [e for e in history if e["split"] == "val"]
    metrics: dict[str, Any] = {}
    if trains:
        metrics.update({k: trains[-1][k] for k in keys})
    if vals:
        metrics.update({f"val_{k}": vals[-1][k] for k in keys})
    return metrics


def progress_bar(enabled: bool, total: int, initial: int) -> Any:
    """A tqdm bar, or a stand-in with the same methods that shows nothing."""
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, leave=True)


class _NoBar(contextlib.nullcontext):
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:
        pass

    def write(self, message: str) -> None:
        pass
