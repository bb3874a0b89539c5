"""Hooks into a training run: experiment trackers, custom logging, reacting to checkpoints.

A callback is any object with some of these methods (:class:`TrainCallback` has them all, as
no-ops, to subclass):

* ``on_train_start(info)``: once, after the model is built (and restored, on resume), before the
  first step; ``info`` is a :class:`TrainInfo`;
* ``on_log(entry)``: each metrics entry as it is recorded (``entry["split"]`` is ``"train"`` or
  ``"val"``): the dict that goes to ``metrics.jsonl`` and :attr:`TrainResult.history`;
* ``on_checkpoint(path)``: after a checkpoint directory is complete (manifest written, older ones
  pruned);
* ``on_train_end(result)``: once, with the :class:`TrainResult`, or ``None`` when the run stops by
  an exception (divergence, Ctrl-C...), which is re-raised after the callbacks ran.

Callbacks run in rank 0 only (under torchrun the other ranks never call them). A callback that
raises an ``Exception`` is reported (a ``RuntimeWarning`` naming it and the hook) and switched off
for the rest of the run: the run, its checkpoints and the other callbacks go on as if it were
absent. A tracker's failure (a full disk, a lost connection) never costs a training run, and
rank 0 never leaves the other ranks waiting in a collective.

Example:
    >>> from hybridflow.data import load_digits_data
    >>> from hybridflow.hybrid import HybridModel
    >>> from hybridflow.training import TrainConfig, train
    >>> class PrintBitsPerDim(TrainCallback):
    ...     def on_log(self, entry):
    ...         print(entry["split"], entry["step"], round(entry["bits_per_dim"]) > 0)
    >>> model = HybridModel("mixerflow_tiny", 10, input_shape=(1, 8, 8), patch_size=2, num_layers=1,
    ...                     hidden=8, steps=1)
    >>> config = TrainConfig(steps=4, batch_size=32, log_every=2, progress=False)
    >>> _ = train(model, load_digits_data(), config, callbacks=[PrintBitsPerDim()])
    train 2 True
    train 4 True
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

__all__ = ["CALLBACK_HOOKS", "TrainCallback", "TrainInfo", "CallbackRunner", "check_callbacks"]

#: The methods a callback may have; it needs at least one.
CALLBACK_HOOKS = ("on_train_start", "on_log", "on_checkpoint", "on_train_end")


@dataclass
class TrainInfo:
    """What ``on_train_start`` gets: the run about to train.

    Attributes:
        model: the :class:`~hybridflow.hybrid.HybridModel` being trained (on ``device``).
        config: the run's :class:`~hybridflow.training.TrainConfig`.
        data: the training data as the loop reads it (a :class:`~hybridflow.data.BatchSource`).
        val_data: the validation :class:`~hybridflow.data.ImageData` (``None`` without one).
        start_step: the step training starts from (> 0 on resume); total_steps: where it ends.
        history: the metrics entries so far (those of the resumed run's checkpoint).
        device, world_size: where it runs; out_dir: the run folder (``None``: nothing written).
    """

    model: Any
    config: Any
    data: Any
    val_data: Any
    start_step: int
    total_steps: int
    history: list[dict[str, Any]]
    device: torch.device
    world_size: int
    out_dir: Path | None


class TrainCallback:
    """A callback doing nothing: subclass it and override the hooks you need (see the module)."""

    def on_train_start(self, info: TrainInfo) -> None:
        """The run is built and about to take its first step."""

    def on_log(self, entry: dict[str, Any]) -> None:
        """A metrics entry (``split`` "train" or "val", ``step``, figures) was recorded."""

    def on_checkpoint(self, path: Path) -> None:
        """The checkpoint directory ``path`` is complete."""

    def on_train_end(self, result: Any) -> None:
        """The run ended: its ``TrainResult``, or ``None`` when an exception stopped it."""


def check_callbacks(callbacks: Iterable[Any] | None) -> list[Any]:
    """``callbacks`` as a list, each checked to have at least one hook (a ``TypeError`` names the
    one that has none, e.g. a function passed where a callback object goes).

    Example:
        >>> check_callbacks([print])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        TypeError: callbacks[0] (builtin_function_or_method) has none of the hooks on_train_start, ...
    """
    if callbacks is None:
        return []
    if isinstance(callbacks, (str, bytes)) or not isinstance(callbacks, Iterable) or hasattr(callbacks, "on_log"):
        raise TypeError(f"callbacks must be a list of callback objects, got {type(callbacks).__name__}")
    checked = list(callbacks)
    for i, callback in enumerate(checked):
        if not any(callable(getattr(callback, hook, None)) for hook in CALLBACK_HOOKS):
            raise TypeError(f"callbacks[{i}] ({type(callback).__name__}) has none of the hooks "
                            f"{', '.join(CALLBACK_HOOKS)}: pass an object with some of them (see "
                            "hybridflow.training.TrainCallback)")
    return checked


class CallbackRunner:
    """Calls each hook on every callback that has it, in order, in rank 0 only (``enabled``), and
    switches off a callback that raises (see the module docstring).

    Example:
        >>> class Broken(TrainCallback):
        ...     def on_log(self, entry): raise OSError("disk full")
        >>> runner = CallbackRunner([Broken()])
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     runner.on_log({"split": "train", "step": 1})
        >>> str(caught[0].message).split(":")[0], runner.callbacks
        ('callback Broken failed in on_log (OSError', [])
    """

    def __init__(self, callbacks: Sequence[Any], enabled: bool = True) -> None:
        self.callbacks = list(callbacks) if enabled else []

    def _call(self, hook: str, *args: Any) -> None:
        for callback in list(self.callbacks):
            method = getattr(callback, hook, None)
            if method is None:
                continue
            try:
                method(*args)
            except Exception as error:  # never the run's problem: report it and carry on without it
                self.callbacks.remove(callback)
                warnings.warn(f"callback {type(callback).__name__} failed in {hook} ({type(error).__name__}: "
                              f"{error}); it is switched off for the rest of the run, which goes on (its "
                              "checkpoints and metrics are not affected)", RuntimeWarning, stacklevel=3)

    def on_train_start(self, info: TrainInfo) -> None:
        self._call("on_train_start", info)

    def on_log(self, entry: dict[str, Any]) -> None:
        self._call("on_log", entry)

    def on_checkpoint(self, path: Path) -> None:
        self._call("on_checkpoint", path)

    def on_train_end(self, result: Any) -> None:
        self._call("on_train_end", result)
