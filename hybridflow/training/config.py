"""The settings of a training run (:class:`TrainConfig`), what it returns (:class:`TrainResult`)
and the error that stops a diverging run (:class:`NonFiniteLossError`).

Example:
    >>> config = TrainConfig(steps=100, warmup_steps=10)
    >>> config.to_dict()["betas"], config.lr_schedule
    ([0.9, 0.999], 'cosine')
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..hybrid import HybridModel

__all__ = ["TrainConfig", "TrainResult", "NonFiniteLossError", "LR_SCHEDULES"]

LR_SCHEDULES = ("cosine", "constant")


class NonFiniteLossError(RuntimeError):
    """Too many training steps in a row had a non-finite loss or gradient.

    The model holds the weights of the last good step; ``checkpoint`` is the last checkpoint
    written (``None`` if none), which is valid as well.
    """

    def __init__(self, message: str, step: int, count: int, checkpoint: Path | None) -> None:
        super().__init__(message)
        self.step, self.count, self.checkpoint = step, count, checkpoint


@dataclass
class TrainConfig:
    """Settings of :func:`~hybridflow.training.train`.

    Attributes:
        steps: number of optimisation steps (batches per process); overrides ``epochs``.
        epochs: passes over the training data when ``steps`` is ``None`` (default 10).
        batch_size: examples per step *per process* (under torchrun the global batch is
            ``batch_size * world_size``).
        lr, betas: Adam's learning rate and betas (the paper: 1e-3 or 5e-4, (0.9, 0.999)).
        warmup_steps: linear warm-up from 0 over this many steps, then ``lr_schedule``.
        lr_schedule: after the warm-up, ``"cosine"`` decay to 0 at the last step or a
            ``"constant"`` learning rate.
        grad_clip: clip the global gradient norm to this (``None``: no clipping).
        ema_decay: keep an exponential moving average of the weights with this decay
            (timm's ``ModelEmaV3``); validation and :attr:`TrainResult.ema` use it.
        log_every: steps between entries of the metrics log and history.
        eval_every: steps between validations (``None``: only at the end); needs ``val_data``.
        eval_batch_size: batch size of validation (default ``max(batch_size, 256)``).
        out_dir: where ``metrics.jsonl`` and ``checkpoints/step-*/`` go (``None``: nothing
            written).
        checkpoint_every: steps between checkpoints (``None``: only at the end and on Ctrl-C).
        keep_checkpoints: how many finished checkpoints to keep.
        max_nonfinite: consecutive non-finite steps that stop the run.
        max_seconds: a wall-clock budget for this call's training steps: the run ends (as if at
            its last step: final log, validation, checkpoint) after the step that exceeds it.
        seed: seeds data order and dequantisation noise.
        device: ``"auto"`` (cuda if available), ``"cpu"``, ``"cuda"``, ``"cuda:1"``... Under
            torchrun with cuda every process uses ``cuda:LOCAL_RANK``.
        num_threads: ``torch.set_num_threads`` for this process (``None``: leave it).
        progress: show a tqdm progress bar (rank 0 only).
    """

    steps: int | None = None
    epochs: int | None = None
    batch_size: int = 64
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 0
    lr_schedule: str = "cosine"
    grad_clip: float | None = 5.0
    ema_decay: float | None = None
    log_every: int = 50
    eval_every: int | None = None
    eval_batch_size: int | None = None
    out_dir: str | Path | None = None
    checkpoint_every: int | None = None
    keep_checkpoints: int = 1
    max_nonfinite: int = 10
    max_seconds: float | None = None
    seed: int = 0
    device: str = "auto"
    num_threads: int | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        def positive(name: str, allow_none: bool = True) -> None:
            value = getattr(self, name)
            if value is None and allow_none:
                return
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"TrainConfig.{name} must be a positive integer, got {value!r}")

        for name in ("steps", "epochs", "eval_every", "eval_batch_size", "checkpoint_every", "num_threads"):
            positive(name)
        for name in ("batch_size", "log_every", "keep_checkpoints", "max_nonfinite"):
            positive(name, allow_none=False)
        if not (isinstance(self.warmup_steps, int) and self.warmup_steps >= 0):
            raise ValueError(f"TrainConfig.warmup_steps must be an integer >= 0, got {self.warmup_steps!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"TrainConfig.lr must be a positive number, got {self.lr!r}")
        self.betas = tuple(float(b) for b in self.betas)  # type: ignore[assignment]
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"TrainConfig.betas must be two numbers in [0, 1), got {self.betas!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"TrainConfig.lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"TrainConfig.grad_clip must be positive or None, got {self.grad_clip!r}")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"TrainConfig.ema_decay must lie in (0, 1) or be None, got {self.ema_decay!r}")
        if self.max_seconds is not None and not self.max_seconds >= 0:
            raise ValueError(f"TrainConfig.max_seconds must be >= 0 or None, got {self.max_seconds!r}")
        if not isinstance(self.device, str):
            self.device = str(self.device)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types (``out_dir`` as a string)."""
        out = dataclasses.asdict(self)
        out["betas"] = list(self.betas)
        out["out_dir"] = None if self.out_dir is None else str(self.out_dir)
        return out


@dataclass
class TrainResult:
    """What :func:`~hybridflow.training.train` returns.

    Attributes:
        model: the trained model (the one passed in, in evaluation mode, on the training device).
        steps: steps completed (skipped non-finite steps included).
        metrics: final figures: training ``bits_per_dim``, ``cross_entropy`` (nats),
            ``accuracy`` over the last logging window, ``val_*`` of the final validation (when
            ``val_data`` was given), ``nonfinite_steps``, ``images_per_s``, ``elapsed_s``.
        history: every metrics-log entry (``split`` "train" or "val").
        checkpoint: the last checkpoint directory written (``None`` without ``out_dir``).
        ema: the EMA copy of the model (``None`` without ``ema_decay``).
    """

    model: HybridModel
    steps: int
    metrics: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    checkpoint: Path | None = None
    ema: HybridModel | None = None
