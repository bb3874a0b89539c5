"""The settings of a training run (:class:`TrainConfig`), what it returns (:class:`TrainResult`)
and the error that stops a diverging run (:class:`NonFiniteLossError`).

Settings are checked when made: a setting that cannot work (``lr=nan``, ``steps=-1``) raises a
:class:`SettingsError` naming the field, before any data loads or any step runs.
:func:`check_batch_size` adds the check that needs the model: BatchNorm layers need two examples.

Example:
    >>> config = TrainConfig(steps=100, warmup_steps=10)
    >>> config.to_dict()["betas"], config.lr_schedule
    ([0.9, 0.999], 'cosine')
    >>> TrainConfig(lr=float("nan"))
    Traceback (most recent call last):
    ...
    hybridflow.training.config.SettingsError: TrainConfig.lr must be a finite number > 0, got nan
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..hybrid import HybridModel

__all__ = ["TrainConfig", "TrainResult", "NonFiniteLossError", "LR_SCHEDULES", "SettingsError",
           "uses_batch_statistics", "check_batch_size", "check_data_fit"]

LR_SCHEDULES = ("cosine", "constant")

#: Layers whose training-mode output depends on the other examples of the batch.
_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


class SettingsError(ValueError):
    """A training setting that cannot work (non-finite, out of range, of the wrong type or too
    small for the model); the message names the setting."""


def uses_batch_statistics(model: nn.Module) -> bool:
    """Whether ``model`` holds BatchNorm layers, whose training-mode output needs a batch of at
    least two examples (MixerFlow's MLP and KAN conditioners do; Glow's ActNorm-only stack not).

    Example:
        >>> uses_batch_statistics(nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)))
        True
    """
    return any(isinstance(m, _BATCH_NORMS) for m in model.modules())


def check_batch_size(model: nn.Module, batch_size: int, what: str = "batch_size") -> None:
    """Raise :class:`SettingsError` if ``model`` cannot train on batches of ``batch_size``.

    A BatchNorm in training mode normalises by the batch's own statistics: with one image
    MixerFlow's conditioners see a degenerate batch and a run ends at ~1e31 bits/dim. Call it with
    the batch size the loop will really use (``min(batch_size, len(train_data))``).

    Example:
        >>> check_batch_size(nn.BatchNorm1d(3), 1)
        Traceback (most recent call last):
        ...
        hybridflow.training.config.SettingsError: batch_size must be at least 2 for a model with BatchNorm layers (BatchNorm1d), got 1
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise SettingsError(f"{what} must be a positive integer, got {batch_size!r}")
    if batch_size < 2 and uses_batch_statistics(model):
        kinds = sorted({type(m).__name__ for m in model.modules() if isinstance(m, _BATCH_NORMS)})
        raise SettingsError(f"{what} must be at least 2 for a model with BatchNorm layers ({', '.join(kinds)}), "
                            f"got {batch_size}")


def check_data_fit(model: nn.Module, config: TrainConfig, num_examples: int | None) -> None:
    """The checks of ``config`` that need the model and the size of its training data.

    Raises :class:`SettingsError` for a batch the model cannot train on (:func:`check_batch_size`)
    and for a ``translate`` that can move an image off its whole frame; warns when the batch is
    larger than the data (each step then uses all of it) and when the warm-up does not end before
    the last step (the rate never reaches ``lr``).

    Example:
        >>> net = nn.Linear(2, 2); net.input_shape = (1, 8, 8)
        >>> try:
        ...     check_data_fit(net, TrainConfig(steps=10, translate=8), 100)
        ... except SettingsError as error:
        ...     print(str(error)[:75])
        TrainConfig.translate must be below the image side (8 pixels for 8x8 images
    """
    check_batch_size(model, min(config.batch_size, num_examples or config.batch_size))
    shape = tuple(getattr(model, "input_shape", ()) or ())
    if config.translate and len(shape) == 3 and config.translate >= min(shape[1:]):
        side = min(shape[1:])
        raise SettingsError(f"TrainConfig.translate must be below the image side ({side} pixels for {shape[1]}x"
                            f"{shape[2]} images, input_shape {shape}), got {config.translate}: a shift that "
                            "large can move an image entirely out of frame")
    if num_examples is not None and config.batch_size > num_examples:
        warnings.warn(f"batch_size {config.batch_size} is larger than the {num_examples:,} training examples: "
                      "each step uses all of them", stacklevel=3)
    if config.steps is not None and config.warmup_steps >= config.steps:
        warnings.warn(f"warmup_steps {config.warmup_steps} is not below steps {config.steps}: the learning rate "
                      f"warms up for the whole run and never reaches lr", stacklevel=3)


def _finite(name: str, value: Any, low: float | None = None, low_open: bool = False, high: float | None = None,
            high_open: bool = False, allow_none: bool = False) -> float | None:
    """``value`` as a float if it is a finite number in the range, else a :class:`SettingsError`."""
    if value is None and allow_none:
        return None
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise SettingsError(f"TrainConfig.{name} must be a number, got {type(value).__name__} {value!r}")
    value = float(value)
    bounds = []
    if low is not None:
        bounds.append(f"{'>' if low_open else '>='} {low:g}")
    if high is not None:
        bounds.append(f"{'<' if high_open else '<='} {high:g}")
    in_range = math.isfinite(value) and (low is None or (value > low if low_open else value >= low)) and (
        high is None or (value < high if high_open else value <= high))
    if not in_range:
        hint = " (or None)" if allow_none else ""
        raise SettingsError(f"TrainConfig.{name} must be a finite number {' and '.join(bounds)}{hint}, got {value!r}")
    return value


class NonFiniteLossError(RuntimeError):
    """Too many training steps in a row had a non-finite loss, gradient or output.

    The model (with its BatchNorm statistics, optimiser and EMA) was rolled back to its last good
    state: the last one that gave finite outputs. With ``TrainConfig.out_dir``, ``checkpoint`` is
    the checkpoint written at the divergence from that rolled-back model (``--resume`` starts from
    it); without one, or when even that state failed the check, it is the last checkpoint written
    before (``None`` if none). ``step`` is the last bad step, ``count`` the bad steps in a row.
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
        num_workers: ``DataLoader`` worker processes reading a ``Dataset`` (0: read in this process).
        labelled_per_batch: semi-supervised data (labels ``-1`` = unlabelled): every batch holds
            exactly this many labelled images, dealt out in a reshuffled cycle over the labelled
            set, plus ``batch_size - labelled_per_batch`` unlabelled ones (see
            :class:`~hybridflow.data.labelled_batches.LabelledBatches`; an epoch is then a pass
            over the unlabelled images). ``None``: uniform batches, whose labelled share is the
            data's (1 image in 600 with 100 MNIST labels). The objective stays the mean over the
            batch of ``bits/dim + lam * CE / ln 2`` (CE 0 for unlabelled images), i.e.
            ``mean bits/dim + lam * (k / batch_size) * mean labelled CE / ln 2``: with ``k``
            labelled per batch the classifier's weight is ``lam * k / batch_size`` (2.5 for
            lam 10, k 16, batch 64), fixed rather than the data's labelled fraction (a fully
            labelled run at ``lam' = lam * k / batch_size`` weighs the two terms alike).
        flip: mirror each training image left-right with probability 1/2 (seeded by the step, so
            ``resume`` stays exact), as Glow trains CIFAR-10.
        pseudo_labels: semi-supervised: each step, the batch's unlabelled images that the model
            predicts with at least this probability train the head with its guess as their label
            (``None``: off). See :mod:`~hybridflow.training.pseudo_labels`.
        translate: move each training image by a random whole-pixel offset of up to this many
            pixels on both axes (seeded by the step, so ``resume`` stays exact; 0: off). With
            ``pseudo_labels`` the guesses come from the unmoved images.
        align_pseudo_labels: with ``pseudo_labels``, align the guesses' class distribution over each
            batch's unlabelled images to equal classes before the threshold
            (:func:`~hybridflow.training.pseudo_labels.align_to_uniform`), so that no class takes
            over another's images.
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
    num_workers: int = 0
    labelled_per_batch: int | None = None
    flip: bool = False
    pseudo_labels: float | None = None
    translate: int = 0
    align_pseudo_labels: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        def integer(name: str, low: int, allow_none: bool) -> None:
            value = getattr(self, name)
            if value is None and allow_none:
                return
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
                kind = "a positive integer" if low == 1 else f"an integer >= {low}"
                raise SettingsError(f"TrainConfig.{name} must be {kind}{' or None' if allow_none else ''}, "
                                    f"got {value!r}")
            setattr(self, name, int(value))  # numpy integers from a config file become ints

        for name in ("steps", "epochs", "eval_every", "eval_batch_size", "checkpoint_every", "num_threads",
                     "labelled_per_batch"):
            integer(name, 1, allow_none=True)
        for name in ("batch_size", "log_every", "keep_checkpoints", "max_nonfinite"):
            integer(name, 1, allow_none=False)
        integer("warmup_steps", 0, allow_none=False)
        integer("num_workers", 0, allow_none=False)
        integer("translate", 0, allow_none=False)
        self.pseudo_labels = _finite("pseudo_labels", self.pseudo_labels, low=0.0, low_open=True, high=1.0,
                                     allow_none=True)
        if self.labelled_per_batch is not None and self.labelled_per_batch >= self.batch_size:
            raise SettingsError(f"TrainConfig.labelled_per_batch must be below batch_size ({self.batch_size}): the "
                                f"rest of each batch is unlabelled images, got {self.labelled_per_batch}")
        if not isinstance(self.flip, bool):
            raise SettingsError(f"TrainConfig.flip must be true or false, got {self.flip!r}")
        if not isinstance(self.align_pseudo_labels, bool):
            raise SettingsError("TrainConfig.align_pseudo_labels must be true or false, "
                                f"got {self.align_pseudo_labels!r}")
        if self.align_pseudo_labels and self.pseudo_labels is None:
            raise SettingsError("TrainConfig.align_pseudo_labels aligns the guesses of pseudo_labels: set "
                                "pseudo_labels (a threshold) too")
        if isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral):
            raise SettingsError(f"TrainConfig.seed must be an integer, got {self.seed!r}")
        self.seed = int(self.seed)
        self.lr = _finite("lr", self.lr, low=0.0, low_open=True)
        betas = tuple(self.betas) if isinstance(self.betas, (tuple, list)) else (self.betas,)
        if len(betas) != 2:
            raise SettingsError(f"TrainConfig.betas must be two numbers in [0, 1), got {self.betas!r}")
        self.betas = tuple(_finite("betas", b, low=0.0, high=1.0, high_open=True) for b in betas)  # type: ignore
        if self.lr_schedule not in LR_SCHEDULES:
            raise SettingsError(f"TrainConfig.lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        # inf would be a silent "no clipping" / "no budget": None says that
        self.grad_clip = _finite("grad_clip", self.grad_clip, low=0.0, low_open=True, allow_none=True)
        self.ema_decay = _finite("ema_decay", self.ema_decay, low=0.0, low_open=True, high=1.0, high_open=True,
                                 allow_none=True)
        self.max_seconds = _finite("max_seconds", self.max_seconds, low=0.0, allow_none=True)
        if not isinstance(self.device, (str, torch.device)):
            raise SettingsError(f"TrainConfig.device must be a string such as 'cpu' or 'cuda:0', got {self.device!r}")
        self.device = str(self.device)
        self.progress = bool(self.progress)

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
