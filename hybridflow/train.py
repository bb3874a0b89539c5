"""The training loop: one function, :func:`train`, and its :class:`TrainConfig`, shared by the CLI
and the scikit-learn estimators. Single process or ``torchrun --nproc_per_node=N``.

What it does, and why:

* Adam (the paper's betas) with linear warm-up and cosine decay to zero, gradient clipping.
* ActNorm data-dependent initialisation on the first batch, run before the first update
  (under DDP after wrapping, which has already made every rank start from rank 0's weights;
  ActNorm all-reduces its statistics, so every rank ends identical).
* Data order: a permutation per epoch seeded from ``(seed, epoch)``, sharded across ranks like
  ``DistributedSampler``; the dequantisation noise of step ``s`` on rank ``r`` comes from the
  global RNG reseeded from ``(seed, r, s)``. A run is therefore a function of its config and its
  step counter, and ``resume`` continues exactly (the RNG states are stored too, so code outside
  the loop sees an unbroken stream).
* Faults: a step whose loss (or gradient norm) is not finite is skipped -- no update, buffers
  (BatchNorm statistics) put back -- counted and reported; ``max_nonfinite`` such steps in a row
  raise :class:`NonFiniteLossError`. Ctrl-C finishes at the step boundary, writes a checkpoint and
  re-raises ``KeyboardInterrupt``.
* Distributed: ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` from torchrun start a process group (nccl
  on GPU, gloo on CPU); ``batch_size`` is per process. Only rank 0 writes checkpoints, the
  metrics log and the progress bar. BatchNorm layers in the coupling conditioners are not
  converted to SyncBatchNorm: each rank normalises with its own batch statistics and DDP
  broadcasts rank 0's running statistics at every forward, which is enough for flows whose
  conditioners only see one rank's batch anyway.

Example:
    >>> from hybridflow.data import load_digits_data
    >>> from hybridflow.hybrid import HybridModel
    >>> model = HybridModel("mixerflow_tiny", 10, input_shape=(1, 8, 8), patch_size=2,
    ...                     num_layers=1, hidden=8, steps=1)
    >>> result = train(model, load_digits_data(), TrainConfig(steps=3, batch_size=32, progress=False))
    >>> result.steps, sorted(result.metrics)[:2]
    (3, ['accuracy', 'bits_per_dim'])
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import random
import signal
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Union

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR

from .checkpoint import (
    CHECKPOINTS_DIR, CheckpointError, _model_parts, atomic_write_bytes, find_checkpoint, load_training_state, load_weights,
    prune_checkpoints, step_directory, write_checkpoint,
)
from .data import ImageData
from .hybrid import HybridModel

__all__ = [
    "TrainConfig", "TrainResult", "NonFiniteLossError", "train", "evaluate", "resolve_device", "lr_factor", "make_adam",
]

PathLike = Union[str, "os.PathLike[str]"]
METRICS_FILE = "metrics.jsonl"


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
    """Settings of :func:`train`.

    Attributes:
        steps: number of optimisation steps (batches per process); overrides ``epochs``.
        epochs: passes over the training data when ``steps`` is ``None`` (default 10).
        batch_size: examples per step *per process* (under torchrun the global batch is
            ``batch_size * world_size``).
        lr, betas: Adam's learning rate and betas (the paper: 1e-3 or 5e-4, (0.9, 0.999)).
        warmup_steps: linear warm-up from 0 over this many steps, then cosine decay to 0.
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
    grad_clip: float | None = 5.0
    ema_decay: float | None = None
    log_every: int = 50
    eval_every: int | None = None
    eval_batch_size: int | None = None
    out_dir: str | Path | None = None
    checkpoint_every: int | None = None
    keep_checkpoints: int = 1
    max_nonfinite: int = 10
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
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"TrainConfig.grad_clip must be positive or None, got {self.grad_clip!r}")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"TrainConfig.ema_decay must lie in (0, 1) or be None, got {self.ema_decay!r}")
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
    """What :func:`train` returns.

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


# --------------------------------------------------------------------------- small pieces


def resolve_device(spec: str = "auto", local_rank: int | None = None) -> torch.device:
    """``"auto"`` -> ``cuda`` (``cuda:local_rank`` under torchrun) when available, else ``cpu``.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(spec)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {spec!r} asked for, but CUDA is not available")
        if device.index is None:
            device = torch.device("cuda", local_rank or 0)
    return device


def make_adam(params, lr: float, betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.Adam:
    """Adam, fused into one kernel per step where torch supports it (float parameters on CPU or
    CUDA), else the default implementation. A flow has hundreds of small parameter tensors, and
    torch's CPU default loops over them one by one.

    Example:
        >>> opt = make_adam(nn.Linear(3, 2).parameters(), lr=1e-3)
        >>> opt.defaults["fused"]
        True
    """
    params = list(params)
    fusable = all(p.device.type in ("cpu", "cuda") and p.dtype.is_floating_point for p in params)
    if fusable:
        try:
            return torch.optim.Adam(params, lr=lr, betas=betas, fused=True)
        except (RuntimeError, ValueError):  # an older torch or an unsupported device or dtype
            pass
    return torch.optim.Adam(params, lr=lr, betas=betas)


def lr_factor(step: int, total_steps: int, warmup_steps: int = 0) -> float:
    """Learning-rate multiplier at ``step``: linear warm-up to 1, then cosine decay to 0.

    Example:
        >>> [round(lr_factor(s, 10, 2), 3) for s in (0, 1, 2, 6, 10)]
        [0.5, 1.0, 1.0, 0.5, 0.0]
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def _mix_seed(*values: int) -> int:
    return int(np.random.SeedSequence([int(v) for v in values]).generate_state(1, dtype=np.uint64)[0] >> 1)


class _EpochBatches:
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
        epoch, offset = divmod(step, self.batches_per_epoch)
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(_mix_seed(self.seed, epoch))
            order = torch.randperm(self.n, generator=generator)
            padded = order.repeat(math.ceil(self.per_rank * self.world_size / self.n))[: self.per_rank * self.world_size]
            self._epoch, self._local = epoch, padded[self.rank :: self.world_size]
        return self._local[offset * self.batch_size : (offset + 1) * self.batch_size]


@dataclass
class _Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _start_distributed(device_spec: str) -> _Distributed:
    """Join the process group torchrun describes (or the one already started)."""
    if dist.is_available() and dist.is_initialized():
        return _Distributed(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return _Distributed()
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_spec, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return _Distributed(dist.get_rank(), dist.get_world_size(), local_rank, owns_group=True)


def _all_reduce(values: list[float], ctx: _Distributed, device: torch.device, use_max: bool = False) -> list[float]:
    """Sum (or max) ``values`` over the ranks; the identity in a single process."""
    if not ctx.active:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX if use_max else dist.ReduceOp.SUM)
    return tensor.tolist()


# --------------------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate(model: HybridModel, data: ImageData, batch_size: int = 256, device: str | torch.device | None = None,
             distributed: bool = False) -> dict[str, Any]:
    """Mean bits/dim and accuracy of ``model`` on ``data``, in batches, in evaluation mode.

    bits/dim uses the backbone's seeded dequantisation noise and covers every example;
    accuracy (midpoint dequantisation) covers the labelled ones (``None`` if there are none).
    ``distributed=True`` splits the work across the ranks of the process group (every rank
    must call it) and returns the same figures on all of them.

    Example:
        >>> evaluate(model, load_dataset("mnist", train=False))  # doctest: +SKIP
        {'bits_per_dim': 1.32, 'accuracy': 0.97, 'cross_entropy': 0.09, 'num_examples': 10000, ...}
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    ctx = _Distributed(dist.get_rank(), dist.get_world_size()) if distributed and dist.is_initialized() else _Distributed()
    indices = torch.arange(ctx.rank, len(data), ctx.world_size)
    sums = [0.0, 0.0, 0.0, 0.0, 0.0]  # bpd, correct, cross-entropy, labelled, examples
    for start in range(0, len(indices), batch_size):
        chunk = indices[start : start + batch_size]
        x, y = data.images[chunk].to(device), data.labels[chunk].to(device)
        bpd = model.bits_per_dim(x)
        logits = model.predict_logits(x)
        labelled = y >= 0
        sums[0] += float(bpd.double().sum())
        sums[4] += len(chunk)
        if labelled.any():
            yl, ll = y[labelled], logits[labelled]
            sums[1] += float((ll.argmax(1) == yl).sum())
            sums[2] += float(torch.nn.functional.cross_entropy(ll.double(), yl, reduction="sum"))
            sums[3] += float(labelled.sum())
    sums = _all_reduce(sums, ctx, device)
    bpd_sum, correct, ce_sum, labelled, examples = sums
    return dict(
        bits_per_dim=bpd_sum / examples if examples else None,
        accuracy=correct / labelled if labelled else None,
        cross_entropy=ce_sum / labelled if labelled else None,
        num_examples=int(examples), num_labelled=int(labelled),
    )


# --------------------------------------------------------------------------- RNG states


def _rng_state() -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Global RNG states as (JSON, tensors)."""
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = dict(numpy=dict(kind=np_kind, pos=int(np_pos), has_gauss=int(np_has_gauss), cached_gaussian=float(np_gauss)),
                 python=dict(version=version, internal=list(internal), gauss_next=gauss_next))
    tensors = {"rng.torch": torch.get_rng_state(), "rng.numpy": torch.from_numpy(np_keys.astype(np.int64))}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, cuda_state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = cuda_state
    return state, tensors


def _set_rng_state(state: dict[str, Any], tensors: dict[str, Tensor]) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], tensors["rng.numpy"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))
    cuda_states = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states[: torch.cuda.device_count()])


# --------------------------------------------------------------------------- interrupts


class _DeferredInterrupt:
    """Turn the first Ctrl-C into a flag the loop checks at step boundaries (so a checkpoint
    never catches an update half-done); a second Ctrl-C interrupts at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> _DeferredInterrupt:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


# --------------------------------------------------------------------------- the loop


def train(
    model: HybridModel,
    train_data: ImageData,
    config: TrainConfig | None = None,
    val_data: ImageData | None = None,
    resume: PathLike | None = None,
) -> TrainResult:
    """Train ``model`` on ``train_data`` (labels ``-1`` = unlabelled) with the hybrid objective.

    Args:
        model: a :class:`HybridModel` (frozen or not); trained in place, moved to the device.
        train_data: the training images and labels.
        config: a :class:`TrainConfig` (defaults if ``None``).
        val_data: validated every ``config.eval_every`` steps and at the end.
        resume: a checkpoint (or an ``out_dir``) of an earlier run with the same model, data and
            config, to continue from its step. ``model`` gets the checkpoint's weights.

    Returns:
        a :class:`TrainResult`. Raises :class:`NonFiniteLossError` after
        ``config.max_nonfinite`` non-finite steps in a row, ``CheckpointError`` for a damaged
        ``resume`` checkpoint, and re-raises ``KeyboardInterrupt`` after writing a checkpoint.
    """
    config = config if config is not None else TrainConfig()
    if not isinstance(model, HybridModel):
        raise TypeError(f"train needs a HybridModel, got {type(model).__name__}")
    _check_data(model, train_data, "train_data")
    if val_data is not None:
        _check_data(model, val_data, "val_data")
    if config.num_threads is not None:
        torch.set_num_threads(config.num_threads)
    ctx = _start_distributed(config.device)
    try:
        return _Trainer(model, train_data, config, val_data, ctx).run(resume)
    finally:
        if ctx.owns_group:
            dist.destroy_process_group()


def _check_data(model: HybridModel, data: ImageData, what: str) -> None:
    if not isinstance(data, ImageData):
        raise TypeError(f"{what} must be an ImageData (see hybridflow.data), got {type(data).__name__}")
    if len(data) == 0:
        raise ValueError(f"{what} is empty")
    if data.image_shape != model.input_shape:
        raise ValueError(f"{what} holds images of shape {data.image_shape}, the model expects {model.input_shape}")
    top = int(data.labels.max())
    if top >= model.num_classes:
        raise ValueError(f"{what} has label {top} but the model has only {model.num_classes} classes")


class _Window:
    """Sums over the steps since the last log entry."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.loss = self.bpd = self.ce = self.correct = self.labelled = self.examples = 0.0
        self.steps = 0
        self.started = time.perf_counter()

    _FIELDS = ("loss", "bpd", "ce", "correct", "labelled", "examples", "steps")

    def state(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in self._FIELDS}

    def load(self, state: dict[str, float]) -> None:
        for key in self._FIELDS:
            setattr(self, key, state[key])

    def add(self, parts, batch: int) -> None:
        labelled = parts.labelled
        self.loss += float(parts.total.detach()) * batch
        self.bpd += float(parts.bits_per_dim.detach().double().sum())
        self.ce += float(parts.cross_entropy.detach().double().sum())
        self.correct += float(((parts.logits.detach().argmax(1) == parts.targets) & labelled).sum())
        self.labelled += float(labelled.sum())
        self.examples += batch
        self.steps += 1


class _Trainer:
    def __init__(self, model: HybridModel, data: ImageData, config: TrainConfig, val_data: ImageData | None,
                 ctx: _Distributed) -> None:
        self.model, self.data, self.config, self.val_data, self.ctx = model, data, config, val_data, ctx
        self.device = resolve_device(config.device, ctx.local_rank if ctx.active else None)
        self.batches = _EpochBatches(len(data), config.batch_size, config.seed, ctx.rank, ctx.world_size)
        steps = config.steps if config.steps is not None else (config.epochs or 10) * self.batches.batches_per_epoch
        self.total_steps = int(steps)
        self.out_dir = Path(config.out_dir) if config.out_dir is not None and ctx.is_main else None
        self.step = 0
        self.nonfinite = 0
        self.consecutive = 0
        self.history: list[dict[str, Any]] = []
        self.last_checkpoint: Path | None = None
        self.ema = None
        self.train_seconds = 0.0
        self.images_seen = 0
        self._resumed_window: dict[str, float] | None = None

    # -- set-up ---------------------------------------------------------------------------------
    def _build(self, resume: PathLike | None) -> None:
        model, config = self.model, self.config
        if self.out_dir is not None:
            model.config()  # fail now, not at the first checkpoint, if the model cannot be stored
        model.to(self.device)
        self.params = [p for p in model.parameters() if p.requires_grad]
        if not self.params:
            raise ValueError("the model has no trainable parameters")
        self.optimizer = make_adam(self.params, lr=config.lr, betas=config.betas)
        total, warmup = self.total_steps, config.warmup_steps
        self.scheduler = LambdaLR(self.optimizer, lambda s: lr_factor(s, total, warmup))
        state = self._load(resume) if resume is not None else None
        if state is None:
            random.seed(config.seed)
            np.random.seed(config.seed % 2**32)
        model.train()
        # DDP's constructor copies rank 0's parameters and buffers to every rank, so the ActNorm
        # initialisation below starts from one set of weights and (all-reduced) ends in one.
        self.net: nn.Module = model
        if self.ctx.active:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        if _needs_init(model):
            self._seed_step(self.step)
            x, y = self._batch(self.step)
            with torch.no_grad():
                model(x, y)
        if config.ema_decay is not None:
            self.ema = _make_ema(model, config.ema_decay)
            if state is not None:
                weights = {k[4:]: v for k, v in state.tensors.items() if k.startswith("ema.")}
                if not weights:
                    raise CheckpointError(f"checkpoint {resume} holds no EMA weights but ema_decay is set")
                load_weights(self.ema.module, weights, resume)
        self.buffers = list(model.buffers())

    def _load(self, resume: PathLike):
        directory = find_checkpoint(resume)
        state = load_training_state(directory)
        _, model_config, weights = _model_parts(directory)
        try:
            current = self.model.config()
        except ValueError:
            current = None
        if current is not None and current != model_config:
            warnings.warn(f"resuming from {directory}, whose model config {model_config} differs from this "
                          f"model's {current}", stacklevel=3)
        load_weights(self.model, weights, directory)
        s = state.state
        try:
            expected = dict(num_train=len(self.data), batch_size=self.batches.batch_size, world_size=self.ctx.world_size)
            changed = {k: (s[k], v) for k, v in expected.items() if s[k] != v}
            if changed:
                warnings.warn(f"resuming with different {changed} (checkpoint, now): the data order will not "
                              "match the original run", stacklevel=3)
            self.optimizer.load_state_dict(_optimizer_from(s["optimizer"], state.tensors))
            self.scheduler.load_state_dict(s["scheduler"])
            _set_rng_state(s["rng"], state.tensors)
        except (KeyError, ValueError, RuntimeError, TypeError) as error:
            raise CheckpointError(f"training state in {directory} cannot be restored: {error!r}") from None
        self.step = state.step
        self.nonfinite = int(s.get("nonfinite_steps", 0))
        self.history = list(s.get("history", []))
        self.train_seconds = float(s.get("train_seconds", 0.0))
        self.images_seen = int(s.get("images_seen", 0))
        self._resumed_window = s.get("log_window")
        self.last_checkpoint = directory
        if self.out_dir is not None:  # the log restarts from the checkpoint: later lines never happened
            self.out_dir.mkdir(parents=True, exist_ok=True)
            lines = "".join(json.dumps(entry) + "\n" for entry in self.history)
            atomic_write_bytes(self.out_dir / METRICS_FILE, lines.encode())
        return state

    # -- per step ---------------------------------------------------------------------------
    def _seed_step(self, step: int) -> None:
        torch.manual_seed(_mix_seed(self.config.seed, self.ctx.rank, step))

    def _batch(self, step: int) -> tuple[Tensor, Tensor]:
        idx = self.batches.indices(step)
        return self.data.images[idx].to(self.device, non_blocking=True), self.data.labels[idx].to(self.device)

    def run(self, resume: PathLike | None) -> TrainResult:
        self._build(resume)
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            if resume is None:
                (self.out_dir / METRICS_FILE).write_text("")
        bar = _progress(self.config.progress and self.ctx.is_main, self.total_steps, self.step)
        window = self.window = _Window()
        if self._resumed_window is not None:  # so the first log after a resume averages the same steps
            window.load(self._resumed_window)
        updating = False
        saved: list[Tensor] | None = None  # buffers before the step in progress
        try:
            with _DeferredInterrupt() as interrupt, bar:
                while self.step < self.total_steps:
                    step = self.step
                    started = time.perf_counter()
                    self._seed_step(step)
                    x, y = self._batch(step)
                    saved = [b.detach().clone() for b in self.buffers]
                    parts = self.net(x, y)
                    # One tiny all-reduce makes every rank skip, or stop, at the same step.
                    bad, stop = _all_reduce([float(not bool(torch.isfinite(parts.total))), float(interrupt.requested)],
                                            self.ctx, self.device, use_max=True)
                    if stop:  # every rank got here: leave them all holding the same model
                        self._restore(saved)
                        _average_buffers([self.model] + ([self.ema.module] if self.ema is not None else []), self.ctx)
                        raise KeyboardInterrupt
                    self.optimizer.zero_grad(set_to_none=True)
                    if not bad:
                        parts.total.backward()
                        norm = nn.utils.clip_grad_norm_(self.params, self.config.grad_clip or math.inf)
                        bad = not bool(torch.isfinite(norm))  # DDP already averaged: ranks agree
                    if bad:
                        self.optimizer.zero_grad(set_to_none=True)
                        self._restore(saved)
                        self._skip(step, parts, bar)
                    updating = True
                    if not bad:
                        self.optimizer.step()
                        if self.ema is not None:
                            self.ema.update(self.model, step=step + 1)
                        self.consecutive = 0
                        window.add(parts, len(x))
                    self.scheduler.step()
                    self.step = step + 1
                    updating, saved = False, None
                    self.train_seconds += time.perf_counter() - started
                    self.images_seen += len(x) * self.ctx.world_size
                    bar.update(1)
                    self._after_step(window, bar)
        except KeyboardInterrupt:
            if updating:
                warnings.warn("interrupted during an update: no checkpoint written, the last one stays", stacklevel=2)
            else:
                if saved is not None:  # interrupted mid-forward: undo its BatchNorm statistics
                    self._restore(saved)
                if self.out_dir is not None:
                    self._checkpoint(interrupted=True)
            raise
        self.model.eval()
        return self._result(window)

    def _restore(self, saved: list[Tensor]) -> None:
        with torch.no_grad():
            for buffer, value in zip(self.buffers, saved):
                buffer.copy_(value)

    def _skip(self, step: int, parts, bar) -> None:
        self.nonfinite += 1
        self.consecutive += 1
        message = (f"step {step}: non-finite loss or gradient, step skipped "
                   f"({self.consecutive} in a row, {self.nonfinite} in all)")
        if self.ctx.is_main:
            if self.config.progress:
                bar.write(message)
            else:
                warnings.warn(message, RuntimeWarning, stacklevel=4)
        if self.consecutive >= self.config.max_nonfinite:
            where = f"; the last checkpoint, {self.last_checkpoint}, is valid" if self.last_checkpoint else ""
            raise NonFiniteLossError(
                f"{self.consecutive} training steps in a row had a non-finite loss or gradient (up to step "
                f"{step}; max_nonfinite={self.config.max_nonfinite}). The model keeps the weights of the last "
                f"good step{where}. Try a lower learning rate, more warm-up or stronger gradient clipping.",
                step=step, count=self.consecutive, checkpoint=self.last_checkpoint)

    def _after_step(self, window: _Window, bar) -> None:
        step, config = self.step, self.config
        last = step == self.total_steps
        if step % config.log_every == 0 or last:
            entry = self._log_train(window)
            if entry is not None:
                shown = dict(bpd=f"{entry['bits_per_dim']:.3f}" if entry["bits_per_dim"] is not None else "-")
                if self.model.lam > 0:  # at lam = 0 the head never trains: its accuracy means nothing
                    shown["acc"] = f"{entry['accuracy']:.3f}" if entry["accuracy"] is not None else "-"
                bar.set_postfix(**shown, skipped=self.nonfinite, refresh=False)
            window.reset()
        validate = self.val_data is not None and ((config.eval_every and step % config.eval_every == 0) or last)
        save = config.out_dir is not None and ((config.checkpoint_every and step % config.checkpoint_every == 0) or last)
        if validate or save or last:
            _average_buffers([self.model] + ([self.ema.module] if self.ema is not None else []), self.ctx)
        if validate:
            self._validate()
        if save and self.out_dir is not None:
            self._checkpoint()

    def _log_train(self, window: _Window) -> dict[str, Any] | None:
        sums = _all_reduce([window.loss, window.bpd, window.ce, window.correct, window.labelled, window.examples],
                           self.ctx, self.device)
        loss, bpd, ce, correct, labelled, examples = sums
        elapsed = time.perf_counter() - window.started
        entry = dict(split="train", step=self.step, epoch=round(self.step / self.batches.batches_per_epoch, 4),
                     lr=self.scheduler.get_last_lr()[0],
                     loss=loss / examples if examples else None, bits_per_dim=bpd / examples if examples else None,
                     cross_entropy=ce / labelled if labelled else None,
                     accuracy=correct / labelled if labelled else None, nonfinite_steps=self.nonfinite,
                     images_per_s=round(examples / elapsed, 1) if elapsed > 0 else None)
        self._record(entry)
        return entry

    def _validate(self) -> None:
        model = self.ema.module if self.ema is not None else self.model
        batch = self.config.eval_batch_size or max(self.config.batch_size, 256)
        figures = evaluate(model, self.val_data, batch, self.device, distributed=self.ctx.active)
        self._record(dict(split="val", step=self.step, **figures))

    def _record(self, entry: dict[str, Any]) -> None:
        self.history.append(entry)
        if self.out_dir is not None:
            with open(self.out_dir / METRICS_FILE, "a") as f:
                f.write(json.dumps(entry) + "\n")

    def _checkpoint(self, interrupted: bool = False) -> None:
        root = self.out_dir / CHECKPOINTS_DIR
        root.mkdir(parents=True, exist_ok=True)
        directory = step_directory(root, self.step)
        if directory == self.last_checkpoint and not interrupted:
            return  # this step is already saved (e.g. checkpoint_every divides the last step)
        rng_json, rng_tensors = _rng_state()
        opt_json, opt_tensors = _optimizer_parts(self.optimizer.state_dict())
        tensors = {**rng_tensors, **opt_tensors}
        if self.ema is not None:
            tensors.update({f"ema.{k}": v for k, v in self.ema.module.state_dict().items()})
        state = dict(
            step=self.step, total_steps=self.total_steps, epoch=self.step / self.batches.batches_per_epoch,
            num_train=len(self.data), batch_size=self.batches.batch_size, world_size=self.ctx.world_size,
            nonfinite_steps=self.nonfinite, scheduler=self.scheduler.state_dict(), optimizer=opt_json, rng=rng_json,
            history=self.history, train_seconds=self.train_seconds, images_seen=self.images_seen,
            interrupted=interrupted, train_config=self.config.to_dict(), log_window=self.window.state(),
        )
        write_checkpoint(directory, self.model.state_dict(), self.model.config(), self.step, state, tensors)
        self.last_checkpoint = directory
        prune_checkpoints(root, directory, self.config.keep_checkpoints)

    def _result(self, window: _Window) -> TrainResult:
        trains = [e for e in self.history if e["split"] == "train"]
        vals = [e for e in self.history if e["split"] == "val"]
        metrics: dict[str, Any] = {}
        if trains:
            metrics.update({k: trains[-1][k] for k in ("bits_per_dim", "cross_entropy", "accuracy")})
        if vals:
            metrics.update({f"val_{k}": vals[-1][k] for k in ("bits_per_dim", "cross_entropy", "accuracy")})
        metrics.update(steps=self.step, nonfinite_steps=self.nonfinite, elapsed_s=round(self.train_seconds, 3),
                       images_per_s=round(self.images_seen / self.train_seconds, 1) if self.train_seconds else None)
        ema = self.ema.module if self.ema is not None else None
        return TrainResult(self.model, self.step, metrics, self.history, self.last_checkpoint, ema)


# --------------------------------------------------------------------------- helpers


def _average_buffers(modules: list[nn.Module], ctx: _Distributed) -> None:
    """Average floating-point buffers (BatchNorm running statistics) over the ranks.

    DDP broadcasts rank 0's buffers at the start of every forward, but each rank then updates
    its copy from its own batch; averaging before validating, checkpointing and returning makes
    every rank hold the same model (and uses every rank's data). One all-reduce of all of them.
    """
    if not ctx.active:
        return
    buffers = [b for m in modules for b in m.buffers() if b.is_floating_point()]
    if not buffers:
        return
    with torch.no_grad():
        flat = torch.cat([b.reshape(-1).to(torch.float64) for b in buffers])
        dist.all_reduce(flat)
        flat /= ctx.world_size
        for b, value in zip(buffers, flat.split([b.numel() for b in buffers])):
            b.copy_(value.view_as(b))


def _needs_init(model: nn.Module) -> bool:
    return any(isinstance(b, Tensor) and b.dtype == torch.bool and not bool(b.all())
               for name, b in model.named_buffers() if name.endswith("initialized"))


def _make_ema(model: HybridModel, decay: float):
    try:
        from timm.utils import ModelEmaV3 as ModelEma
    except ImportError:  # older timm
        from timm.utils import ModelEmaV2 as ModelEma
    return ModelEma(model, decay=decay)


def _optimizer_parts(state_dict: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Split an optimiser state dict into JSON and tensors (keys ``optimizer.<param>.<name>``)."""
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


def _optimizer_from(state: dict[str, Any], tensors: dict[str, Tensor]) -> dict[str, Any]:
    per_param: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            per_param.setdefault(int(index), {})[name] = value
    for index, values in state.get("scalars", {}).items():
        per_param.setdefault(int(index), {}).update(values)
    groups = [{k: tuple(v) if k == "betas" else v for k, v in g.items()} for g in state["param_groups"]]
    return {"state": per_param, "param_groups": groups}


def _progress(enabled: bool, total: int, initial: int):
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, leave=True)


class _NoBar(contextlib.nullcontext):
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, *args, **kwargs) -> None:
        pass

    def write(self, message: str) -> None:
        pass
