"""Resuming a run: the checkpoint's weights, optimiser, schedule and counters put back into a new
:func:`~hybridflow.training.train` call, and the settings that may change on the way.

A resumed run continues the checkpoint's schedule exactly, unless the learning rate was changed
on purpose (``hybridflow train --out X --resume --lr 1e-4`` after a divergence): the restored
optimiser and scheduler would keep the checkpoint's rate, so :func:`rescale_lr` moves both to the
new one, keeping the schedule's shape (warm-up, cosine) at the step reached, and says so once.

Example:
    >>> from torch import nn
    >>> from hybridflow.training.optim import make_adam, make_scheduler
    >>> opt = make_adam(nn.Linear(2, 1).parameters(), lr=1e-2)
    >>> scheduler = make_scheduler(opt, total_steps=10, schedule="constant")
    >>> rescale_lr(opt, scheduler, 1e-3), opt.param_groups[0]["lr"], scheduler.get_last_lr()
    (0.01, 0.001, [0.001])
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Any, Union

import torch

from ..hybrid import HybridModel
from .checkpoint import CheckpointError, TrainingState, find_checkpoint, load_model_parts, load_training_state
from .checkpoint import load_weights
from .state import EpochBatches, RunProgress, restore_training_state

__all__ = ["rescale_lr", "resume_from"]

PathLike = Union[str, "os.PathLike[str]"]


def rescale_lr(optimizer: torch.optim.Optimizer, scheduler: Any, lr: float) -> float | None:
    """Move a restored optimiser and ``LambdaLR`` scheduler from their base learning rate to ``lr``:
    the scheduler's ``base_lrs``, each group's ``initial_lr`` and its current ``lr`` (scaled by the
    same factor, so the step's place in the schedule is kept). Returns the old base rate, or
    ``None`` when it already was ``lr`` (nothing changed)."""
    old = float(scheduler.base_lrs[0])
    if math.isclose(old, lr, rel_tol=1e-9, abs_tol=0.0):
        return None
    for group, base in zip(optimizer.param_groups, scheduler.base_lrs):
        scale = lr / float(base)
        group["lr"] = float(group["lr"]) * scale
        group["initial_lr"] = lr
    scheduler.base_lrs = [lr for _ in scheduler.base_lrs]
    # get_last_lr() reads this cache, set at each scheduler step; keep it true to the groups
    scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]
    return old


def config_changes(saved: Any, current: Any) -> str:
    """The keys where two model configs differ, as ``key: old -> new`` (nested keys dotted).

    Example:
        >>> config_changes({"lam": 1.0, "backbone_options": {"patch_size": [2, 2]}},
        ...                {"lam": 0.5, "backbone_options": {"patch_size": [4, 4]}})
        'backbone_options.patch_size: [2, 2] -> [4, 4], lam: 1.0 -> 0.5'
    """
    if not (isinstance(saved, dict) and isinstance(current, dict)):
        return f"{saved!r} -> {current!r}"
    return ", ".join(_changes(saved, current, ""))


def _changes(saved: dict, current: dict, prefix: str) -> list[str]:
    missing = object()
    changes = []
    for key in sorted(set(saved) | set(current), key=str):
        old, new = saved.get(key, missing), current.get(key, missing)
        if isinstance(old, dict) and isinstance(new, dict):
            changes += _changes(old, new, f"{prefix}{key}.")
        elif old != new:
            changes.append(f"{prefix}{key}: {'(none)' if old is missing else repr(old)} -> "
                           f"{'(none)' if new is missing else repr(new)}")
    return changes


def resume_from(resume: PathLike, model: HybridModel, optimizer: torch.optim.Optimizer, scheduler: Any,
                batches: EpochBatches, world_size: int, lr: float) -> tuple[RunProgress, TrainingState, Path]:
    """Load the checkpoint ``resume`` (or the newest in an ``out_dir``) into ``model``, ``optimizer``
    and ``scheduler``; return the run's counters, the saved state (for the EMA) and its directory.

    Warns when the model's config differs from the checkpoint's, when the data order will differ
    (another dataset size, batch size or world size) and when ``lr`` differs from the checkpoint's
    (then :func:`rescale_lr`). Raises :class:`CheckpointError` when the weights do not fit.
    """
    directory = find_checkpoint(resume)
    saved = load_training_state(directory)
    _, model_config, weights = load_model_parts(directory)
    model_config = HybridModel.complete_config(model_config) if isinstance(model_config, dict) else model_config
    try:
        current = model.config()
    except ValueError:
        current = None
    if current is not None and current != model_config:
        warnings.warn(f"resuming from {directory} with another model config (checkpoint -> now): "
                      f"{config_changes(model_config, current)}", stacklevel=5)
    try:
        load_weights(model, weights, directory)
    except CheckpointError:
        if current is None or current == model_config:
            raise
        raise CheckpointError(f"cannot resume from {directory}: its weights are of another model (checkpoint "
                              f"-> now: {config_changes(model_config, current)})") from None
    progress, changed = restore_training_state(saved, optimizer, scheduler, batches, world_size, directory)
    if changed:
        warnings.warn(f"resuming with different {changed} (checkpoint, now): the data order will not "
                      "match the original run", stacklevel=5)
    old = rescale_lr(optimizer, scheduler, lr)
    if old is not None:
        warnings.warn(f"resuming from {directory} with lr {lr:g} instead of the checkpoint's {old:g}: the optimiser "
                      f"and the schedule continue from step {progress.step} at the new rate", stacklevel=5)
    return progress, saved, directory
