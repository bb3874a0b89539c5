"""Where a run stands, and everything random in it as a function of where it stands.

A run is a function of its config and its step counter. Nothing here touches the global RNGs:

* data order: a permutation per epoch from a ``torch.Generator`` seeded with ``(seed, epoch)``,
  sharded across ranks like ``DistributedSampler`` (:class:`EpochBatches`);
* dequantisation noise: step ``s`` on rank ``r`` draws from a ``torch.Generator`` seeded with
  ``(seed, r, s)`` (:func:`noise_generator`), on the CPU, so a seed gives the same noise on every
  device.

Deriving each generator from the step, rather than carrying one stream along, means its state
*is* the step a checkpoint stores: a resumed run (after Ctrl-C or ``kill -9``) draws exactly what
the uninterrupted run draws, every rank restores its own stream with no gathering, and a step
that is interrupted half-way or skipped as non-finite never shifts the draws of later steps.
The rest of the training state (counters, history, optimiser moments, EMA weights) is captured
and restored by :func:`capture_training_state` and :func:`restore_training_state`.

Example:
    >>> batches = EpochBatches(n=10, batch_size=4, seed=0)
    >>> batches.batches_per_epoch, len(batches.indices(0))
    (2, 4)
    >>> a = torch.rand(3, generator=noise_generator(seed=0, rank=0, step=5))
    >>> torch.equal(a, torch.rand(3, generator=noise_generator(0, 0, 5)))
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .checkpoint import CheckpointError, TrainingState, load_weights

__all__ = [
    "mix_seed", "noise_generator", "EpochBatches", "RunProgress", "capture_training_state",
    "restore_training_state", "restore_ema", "optimizer_state_parts", "optimizer_state_from_parts",
]


def mix_seed(*values: int) -> int:
    """One 63-bit seed from several integers (NumPy's ``SeedSequence``: nearby inputs give
    unrelated seeds).

    Example:
        >>> mix_seed(0, 1) != mix_seed(1, 0)
        True
    """
    return int(np.random.SeedSequence([int(v) for v in values]).generate_state(1, dtype=np.uint64)[0] >> 1)


def noise_generator(seed: int, rank: int, step: int) -> torch.Generator:
    """The CPU generator of the dequantisation noise of ``step`` on ``rank``."""
    return torch.Generator().manual_seed(mix_seed(seed, rank, step))


class EpochBatches:
    """The batch of every step: a permutation per epoch from ``(seed, epoch)``, padded by
    wrapping to a multiple of ``world_size`` and dealt out ``rank::world_size`` (as
    ``DistributedSampler`` does), cut into ``batches_per_epoch`` full batches."""

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1) -> None:
        self.n, self.seed, self.rank, self.world_size = n, seed, rank, world_size
        self.per_rank = math.ceil(n / world_size)
        self.batch_size = min(batch_size, self.per_rank)
        self.batches_per_epoch = self.per_rank // self.batch_size
        self._epoch, self._local = -1, torch.empty(0, dtype=torch.int64)

    def indices(self, step: int) -> Tensor:
        """Indices into the training data of this rank's batch at ``step``."""
        epoch, offset = divmod(step, self.batches_per_epoch)
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(mix_seed(self.seed, epoch))
            order = torch.randperm(self.n, generator=generator, device="cpu")  # host-side indices on any default device
            padded = order.repeat(math.ceil(self.per_rank * self.world_size / self.n))[: self.per_rank * self.world_size]
            self._epoch, self._local = epoch, padded[self.rank :: self.world_size]
        return self._local[offset * self.batch_size : (offset + 1) * self.batch_size]


@dataclass
class RunProgress:
    """The counters of a run: the step it is at, skipped steps (in all and in a row), the metrics
    history, time and images spent, and the sums of the logging window in progress."""

    step: int = 0
    nonfinite: int = 0
    consecutive: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    train_seconds: float = 0.0
    images_seen: int = 0
    log_window: dict[str, float] | None = None


def optimizer_state_parts(state_dict: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Split an optimiser state dict into JSON and tensors (keys ``optimizer.<param>.<name>``).

    Example:
        >>> opt = torch.optim.Adam(nn.Linear(2, 1).parameters())
        >>> json_part, tensors = optimizer_state_parts(opt.state_dict())
        >>> opt.load_state_dict(optimizer_state_from_parts(json_part, tensors))
    """
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, values in state_dict["state"].items():
        for name, value in values.items():
            if isinstance(value, Tensor):
                tensors[f"optimizer.{index}.{name}"] = value
            else:
                scalars.setdefault(str(index), {})[name] = value
    groups = [{k: list(v) if isinstance(v, tuple) else v for k, v in g.items()} for g in state_dict["param_groups"]]
    return dict(param_groups=groups, scalars=scalars), tensors


def optimizer_state_from_parts(state: dict[str, Any], tensors: dict[str, Tensor]) -> dict[str, Any]:
    """The optimiser state dict :func:`optimizer_state_parts` split."""
    per_param: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            per_param.setdefault(int(index), {})[name] = value
    for index, values in state.get("scalars", {}).items():
        per_param.setdefault(int(index), {}).update(values)
    groups = [{k: tuple(v) if k == "betas" else v for k, v in g.items()} for g in state["param_groups"]]
    return {"state": per_param, "param_groups": groups}


def capture_training_state(progress: RunProgress, optimizer: torch.optim.Optimizer, scheduler: Any,
                           ema: nn.Module | None, batches: EpochBatches, world_size: int, total_steps: int,
                           config: dict[str, Any],
                           interrupted: bool = False) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """The training state of a checkpoint as (JSON, tensors): counters and history, the
    optimiser and schedule, the EMA weights (``ema.*``) and what the data order depends on."""
    opt_json, tensors = optimizer_state_parts(optimizer.state_dict())
    if ema is not None:
        tensors.update({f"ema.{k}": v for k, v in ema.state_dict().items()})
    state = dict(
        step=progress.step, total_steps=total_steps, epoch=progress.step / batches.batches_per_epoch,
        num_train=batches.n, batch_size=batches.batch_size, world_size=world_size,
        labelled_per_batch=getattr(batches, "labelled_per_batch", None),
        nonfinite_steps=progress.nonfinite, consecutive_nonfinite=progress.consecutive, scheduler=scheduler.state_dict(), optimizer=opt_json,
        history=progress.history, train_seconds=progress.train_seconds, images_seen=progress.images_seen,
        interrupted=interrupted, train_config=config, log_window=progress.log_window,
    )
    return state, tensors


def restore_training_state(saved: TrainingState, optimizer: torch.optim.Optimizer, scheduler: Any,
                           batches: EpochBatches, world_size: int, source: Any) -> tuple[RunProgress, dict[str, Any]]:
    """Load ``saved`` into the optimiser and schedule; return the run's counters and the
    settings that changed since (``{name: (checkpoint, now)}``: the data order then differs).

    Raises :class:`CheckpointError` naming ``source`` when the state does not fit.
    """
    s = saved.state
    try:
        expected = dict(num_train=batches.n, batch_size=batches.batch_size, world_size=world_size)
        changed = {k: (s[k], v) for k, v in expected.items() if s[k] != v}
        k = getattr(batches, "labelled_per_batch", None)
        if s.get("labelled_per_batch") != k:  # .get: checkpoints from before the setting lack the key
            changed["labelled_per_batch"] = (s.get("labelled_per_batch"), k)
        optimizer.load_state_dict(optimizer_state_from_parts(s["optimizer"], saved.tensors))
        scheduler.load_state_dict(s["scheduler"])
    except (KeyError, ValueError, RuntimeError, TypeError) as error:
        raise CheckpointError(f"training state in {source} cannot be restored: {error!r}") from None
    progress = RunProgress(step=saved.step, nonfinite=int(s.get("nonfinite_steps", 0)),
                           consecutive=int(s.get("consecutive_nonfinite", 0)),
                           history=list(s.get("history", [])), train_seconds=float(s.get("train_seconds", 0.0)),
                           images_seen=int(s.get("images_seen", 0)), log_window=s.get("log_window"))
    return progress, changed


def restore_ema(saved: TrainingState, ema: nn.Module, source: Any) -> None:
    """Load the EMA weights (``ema.*``) of ``saved`` into ``ema``."""
    weights = {k[len("ema."):]: v for k, v in saved.tensors.items() if k.startswith("ema.")}
    if not weights:
        raise CheckpointError(f"checkpoint {source} holds no EMA weights but ema_decay is set")
    load_weights(ema, weights, source)
