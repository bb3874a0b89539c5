"""The training loop: one function, :func:`train`, shared by the CLI, the scikit-learn
estimators and :func:`fit_backbone`. Single process or ``torchrun --nproc_per_node=N``.

What it does, and why:

* Adam (the paper's betas) with linear warm-up and cosine decay to zero (or a constant rate),
  gradient clipping.
* ActNorm data-dependent initialisation on the first batch, run before the first update
  (under DDP after wrapping, which has already made every rank start from rank 0's weights;
  ActNorm all-reduces its statistics, so every rank ends identical).
* Randomness from explicit generators derived from ``(seed, epoch)`` and ``(seed, rank, step)``
  (see :mod:`hybridflow.training.state`): the global RNGs are never read or reseeded, and
  ``resume`` continues exactly.
* Faults: a step whose loss or gradient is not finite is skipped and the model, its buffers,
  the optimiser and the EMA roll back to the last good state (:mod:`~hybridflow.training.rollback`:
  an update can leave finite weights that give NaN ever after). ``max_nonfinite`` such steps in a
  row -- the count resets only once an update's weights give a finite pass -- raise
  :class:`NonFiniteLossError` with the model rolled back (and checkpointed). Every checkpoint,
  validation and the end first check the model (:func:`find_nonfinite`), rolling back if it
  fails: no checkpoint of a broken model is written. Ctrl-C finishes at the step boundary,
  writes a checkpoint and re-raises ``KeyboardInterrupt``.
* Distributed: ``batch_size`` is per process; only rank 0 writes checkpoints, the metrics log
  and the progress bar, and calls the callbacks (:mod:`~hybridflow.training.callbacks`).
  BatchNorm layers in the coupling conditioners are not converted to SyncBatchNorm: each rank
  normalises with its own batch statistics and DDP broadcasts rank 0's running statistics at
  every forward, which is enough for flows whose conditioners only see one rank's batch anyway.

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

import math
import os
import time
import warnings
from pathlib import Path
from typing import Any, Iterable, Union

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import Dataset

from ..flows import contains_inference_copy
from ..data import BatchSource, ImageData, as_batch_source
from ..data.labelled_batches import LabelledBatches
from ..hybrid import HybridLoss, HybridModel
from .callbacks import CallbackRunner, TrainInfo, check_callbacks
from .checkpoint import CHECKPOINTS_DIR, prune_checkpoints, step_directory, write_checkpoint
from .config import NonFiniteLossError, TrainConfig, TrainResult, check_data_fit
from .distributed import DistributedContext, all_agree, all_reduce, average_buffers, resolve_device, start_distributed
from .evaluate import evaluate_model
from .interrupts import DeferredInterrupt
from .optim import make_adam, make_ema, make_scheduler
from .reporting import LogWindow, MetricsLog, final_metrics, progress_bar, train_entry
from .resuming import resume_from
from .rollback import LastGoodState, find_nonfinite
from .runfiles import RunFiles
from .pseudo_labels import apply_pseudo_labels, translate_batch
from .state import EpochBatches, RunProgress, capture_training_state, noise_generator, restore_ema

__all__ = ["train"]

PathLike = Union[str, "os.PathLike[str]"]


def train(
    model: HybridModel,
    train_data: ImageData | Dataset | BatchSource,
    config: TrainConfig | None = None,
    val_data: ImageData | None = None,
    resume: PathLike | None = None,
    callbacks: Iterable[Any] | None = None,
) -> TrainResult:
    """Train ``model`` on ``train_data`` (labels ``-1`` = unlabelled) with the hybrid objective.

    Args:
        model: a :class:`HybridModel` (frozen or not); trained in place, moved to the device.
        train_data: the training images and labels: an :class:`ImageData`, a map-style or iterable
            ``torch.utils.data.Dataset`` of ``(image, label)`` pairs (uint8 CHW tensors, PIL images or
            HWC arrays; read through a ``DataLoader``), or a :class:`~hybridflow.data.BatchSource`
            (workers, flips). Map-style data resumes bit-exactly; an iterable one needs ``config.steps``.
        config: a :class:`TrainConfig` (defaults if ``None``).
        val_data: validated every ``config.eval_every`` steps and at the end.
        resume: a checkpoint (or an ``out_dir``) of an earlier run with the same model, data and
            config, to continue from its step. ``model`` gets the checkpoint's weights; a changed
            ``config.lr`` rescales the restored schedule (with a warning).
        callbacks: objects with some of ``on_train_start(info)``, ``on_log(entry)``,
            ``on_checkpoint(path)``, ``on_train_end(result)`` (:mod:`~hybridflow.training.callbacks`;
            rank 0 only; one that raises is switched off with a warning, the run goes on), e.g.
            ``callbacks=[TensorBoardCallback("runs/tb")]``. With ``config.out_dir`` a
            :class:`~hybridflow.training.RunFiles` (``run.json``, ``curves.png``) is added unless given.

    Returns:
        a :class:`TrainResult`. Raises :class:`NonFiniteLossError` after
        ``config.max_nonfinite`` non-finite steps in a row, ``CheckpointError`` for a damaged
        ``resume`` checkpoint, and re-raises ``KeyboardInterrupt`` after writing a checkpoint.
    """
    config = config if config is not None else TrainConfig()
    if not isinstance(model, HybridModel):
        raise TypeError(f"train needs a HybridModel, got {type(model).__name__}")
    if contains_inference_copy(model):
        raise ValueError("train got an inference copy (hybridflow.freeze): it has no trainable weights; "
                         "train the model it was made from, then freeze that again")
    if config.pseudo_labels is not None and not model.lam > 0:
        raise ValueError("TrainConfig.pseudo_labels trains the head on guessed labels: it needs a model with lam > 0, "
                         f"got lam={model.lam}")
    source = as_batch_source(train_data, num_workers=config.num_workers, flip=config.flip)
    source.check_model(model.input_shape, model.num_classes, "train_data")
    if source.num_examples is None and config.steps is None:
        raise ValueError("train_data is an iterable dataset without __len__: set TrainConfig.steps")
    check_data_fit(model, config, source.num_examples)
    if val_data is not None:
        if not isinstance(val_data, ImageData):
            raise TypeError(f"val_data must be an ImageData (see hybridflow.data), got {type(val_data).__name__}")
        as_batch_source(val_data).check_model(model.input_shape, model.num_classes, "val_data")
    if config.num_threads is not None:
        torch.set_num_threads(config.num_threads)
    callbacks = check_callbacks(callbacks)
    if config.out_dir is not None and not any(isinstance(c, RunFiles) for c in callbacks):
        callbacks.append(RunFiles())
    ctx = start_distributed(config.device)
    hooks, result = CallbackRunner(callbacks, enabled=ctx.is_main), None
    try:
        result = _Trainer(model, source, config, val_data, ctx, hooks).run(resume)
        return result
    finally:
        hooks.on_train_end(result)  # None: an exception stopped the run (re-raised after this)
        if ctx.owns_group:
            dist.destroy_process_group()


def _needs_init(model: nn.Module) -> bool:
    return any(isinstance(b, Tensor) and b.dtype == torch.bool and not bool(b.all())
               for name, b in model.named_buffers() if name.endswith("initialized"))


class _Trainer:
    """One call of :func:`train`: the model, optimiser, schedule and counters of a run."""

    def __init__(self, model: HybridModel, data: BatchSource, config: TrainConfig, val_data: ImageData | None,
                 ctx: DistributedContext, hooks: CallbackRunner) -> None:
        self.model, self.data, self.config, self.val_data, self.ctx = model, data, config, val_data, ctx
        self.hooks = hooks
        self.device = resolve_device(config.device, ctx.local_rank if ctx.active else None)
        n = data.num_examples or config.batch_size * ctx.world_size  # an unsized stream: nominal epochs
        k = config.labelled_per_batch
        self.batches: EpochBatches | LabelledBatches = (
            EpochBatches(n, config.batch_size, config.seed, ctx.rank, ctx.world_size) if k is None else
            LabelledBatches(data.labels(), k, config.batch_size, config.seed, ctx.rank, ctx.world_size))
        steps = config.steps if config.steps is not None else (config.epochs or 10) * self.batches.batches_per_epoch
        self.total_steps = int(steps)
        self.out_dir = Path(config.out_dir) if config.out_dir is not None and ctx.is_main else None
        self.progress = RunProgress()
        self.updated = False  # the weights come from an update not yet seen to give a finite forward
        self.good_step = 0  # the step before which the model was in its last good state
        self.last_checkpoint: Path | None = None
        self.ema: Any = None
        self.out_of_time = False

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
        self.scheduler = make_scheduler(self.optimizer, self.total_steps, config.warmup_steps, config.lr_schedule)
        saved = None
        if resume is not None:
            self.progress, saved, self.last_checkpoint = resume_from(
                resume, model, self.optimizer, self.scheduler, self.batches, self.ctx.world_size, config.lr)
        self.stream = self.data.stream(self.batches, seed=config.seed, rank=self.ctx.rank,
                                       world_size=self.ctx.world_size, device=self.device,
                                       num_classes=model.num_classes, start=self.progress.step)
        model.train()
        # DDP's constructor copies rank 0's parameters and buffers to every rank, so the ActNorm
        # initialisation below starts from one set of weights and (all-reduced) ends in one.
        self.net: nn.Module = model
        if self.ctx.active:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        if _needs_init(model):
            with torch.no_grad():
                self._forward(self.progress.step, model)
        if config.ema_decay is not None:
            self.ema = make_ema(model, config.ema_decay)
            if saved is not None:
                restore_ema(saved, self.ema.module, resume)
        self.last_good = LastGoodState(self.params, list(model.buffers()), self.optimizer,
                                       self.ema.module if self.ema is not None else None)
        self.last_good.save(held_buffers=False)
        self.good_step = self.progress.step
        self.log = MetricsLog(self.out_dir, self.progress.history, self.hooks.on_log)
        self.log.start(resumed=resume is not None)
        self.hooks.on_train_start(TrainInfo(model, config, self.data, self.val_data, self.progress.step,
                                            self.total_steps, self.progress.history, self.device,
                                            self.ctx.world_size, self.out_dir))

    # -- per step ---------------------------------------------------------------------------
    def _forward(self, step: int, net: nn.Module) -> HybridLoss:
        """The loss parts of ``step``'s batch, with ``step``'s dequantisation noise."""
        x, y = self.stream.batch(step)
        config = self.config
        # no guesses from a model whose ActNorms this very batch is about to initialise
        if config.pseudo_labels is not None and not _needs_init(self.model):
            y = apply_pseudo_labels(self.model, x, y, config.pseudo_labels, align=config.align_pseudo_labels)
        if config.translate:
            x = translate_batch(x, config.translate, config.seed, self.ctx.rank, step)
        return net(x, y, generator=noise_generator(config.seed, self.ctx.rank, step))

    def run(self, resume: PathLike | None) -> TrainResult:
        self._build(resume)
        p = self.progress
        bar = progress_bar(self.config.progress and self.ctx.is_main, self.total_steps, p.step)
        window = self.window = LogWindow.from_state(p.log_window)
        started_run = time.perf_counter()
        updating = in_forward = False
        try:
            with DeferredInterrupt() as interrupt, bar:
                while p.step < self.total_steps and not self.out_of_time:
                    step = p.step
                    started = time.perf_counter()
                    self.last_good.hold_buffers()  # the forward moves BatchNorm statistics
                    in_forward = True
                    parts = self._forward(step, self.net)
                    # One tiny all-reduce makes every rank skip, or stop, at the same step.
                    bad, stop = all_agree([not bool(torch.isfinite(parts.total)), interrupt.requested],
                                          self.ctx, self.device)
                    if stop:  # every rank got here: leave them all holding the same model
                        self.last_good.release_buffers()
                        average_buffers(self._models(), self.ctx)
                        raise KeyboardInterrupt
                    self.optimizer.zero_grad(set_to_none=True)
                    if not bad:
                        parts.total.backward()
                        norm = nn.utils.clip_grad_norm_(self.params, self.config.grad_clip or math.inf)
                        bad = not bool(torch.isfinite(norm))  # DDP already averaged: ranks agree
                    updating, in_forward = True, False
                    if bad:
                        self.optimizer.zero_grad(set_to_none=True)
                        self._roll_back(step, bar, "non-finite loss or gradient")
                    else:
                        if self.updated:  # the last update's weights gave a finite pass
                            p.consecutive = 0
                        self.last_good.save()  # the state before this forward: good
                        self.good_step = step
                        self.optimizer.step()
                        if self.ema is not None:
                            self.ema.update(self.model, step=step + 1)
                        self.updated = True
                        window.add(parts, len(parts.targets))
                    self.scheduler.step()
                    p.step = step + 1
                    updating = False
                    p.train_seconds += time.perf_counter() - started
                    p.images_seen += len(parts.targets) * self.ctx.world_size
                    bar.update(1)
                    if self.config.max_seconds is not None:
                        spent = time.perf_counter() - started_run >= self.config.max_seconds
                        self.out_of_time = all_agree([spent], self.ctx, self.device)[0]  # ranks stop together
                    self._after_step(window, bar)
        except KeyboardInterrupt:
            if updating:
                warnings.warn("interrupted during an update: no checkpoint written, the last one stays", stacklevel=2)
            else:
                if in_forward:  # interrupted mid-forward: undo its BatchNorm statistics
                    self.last_good.release_buffers()
                if self._stored() and self._confirm(bar, may_stop=False) and self.out_dir is not None:
                    self._checkpoint(interrupted=True)
            raise
        self.stream.close()  # shut the DataLoader's workers down now, not at garbage collection
        self.model.eval()
        return self._result()

    def _stored(self) -> bool:  # the run writes checkpoints: every rank checks the model before rank 0 does
        return self.config.out_dir is not None

    def _models(self) -> list[nn.Module]:
        return [self.model] + ([self.ema.module] if self.ema is not None else [])

    def _roll_back(self, step: int, bar: Any, why: str, may_stop: bool = True) -> None:
        """Put the last good state back, count the bad step and stop after ``max_nonfinite`` in a row."""
        self.last_good.restore()
        self.updated = False
        p = self.progress
        p.nonfinite += 1
        p.consecutive += 1
        message = (f"step {step}: {why}, step skipped and the model rolled back to its state before step "
                   f"{self.good_step} ({p.consecutive} in a row, {p.nonfinite} in all)")
        if self.ctx.is_main:
            if self.config.progress:
                bar.write(message)
            else:
                warnings.warn(message, RuntimeWarning, stacklevel=4)
        if may_stop and p.consecutive >= self.config.max_nonfinite:
            # The rolled-back model is the run's result: checkpoint it so --resume starts from it,
            # with max_nonfinite fresh tries.
            count, p.consecutive = p.consecutive, 0
            if self._stored() and self._confirm(bar, may_stop=False) and self.out_dir is not None:
                self._checkpoint(force=True)
            where = f"; checkpoint {self.last_checkpoint} holds a valid model" if self.last_checkpoint else ""
            raise NonFiniteLossError(
                f"{count} training steps in a row had a non-finite loss, gradient or output (up to step "
                f"{step}; max_nonfinite={self.config.max_nonfinite}). The model was rolled back to its state "
                f"before step {self.good_step}, the last that gave finite outputs{where}. Try a lower learning "
                "rate, more warm-up or stronger gradient clipping.", step=step, count=count,
                checkpoint=self.last_checkpoint)

    def _confirm(self, bar: Any, may_stop: bool = True) -> bool:
        """Check the model on the last batch (ranks agree), rolling back once if it fails; True when
        it passes, and it then becomes the last good state."""
        step = max(self.progress.step - 1, 0)
        x, y = self.stream.batch(step)
        for attempt in range(2):
            reason = next(filter(None, (find_nonfinite(m, x, y) for m in self._models())), None)
            if not all_agree([reason is not None], self.ctx, self.device)[0]:
                if self.updated:  # an update's weights gave a finite pass
                    self.progress.consecutive = 0
                self.last_good.save(held_buffers=False)
                self.updated, self.good_step = False, self.progress.step
                return True
            if attempt == 0:
                self._roll_back(step, bar, f"after the update, {reason or 'another rank failed'}", may_stop)
        warnings.warn(f"the model's last good state fails the check too ({reason}): no checkpoint written at "
                      f"step {self.progress.step}", RuntimeWarning, stacklevel=3)
        return False

    def _after_step(self, window: LogWindow, bar: Any) -> None:
        step, config = self.progress.step, self.config
        last = step == self.total_steps or self.out_of_time
        if step % config.log_every == 0 or last:
            entry = self._log_train(window)
            shown = dict(bpd=f"{entry['bits_per_dim']:.3f}" if entry["bits_per_dim"] is not None else "-")
            if self.model.lam > 0:  # at lam = 0 the head never trains: its accuracy means nothing
                shown["acc"] = f"{entry['accuracy']:.3f}" if entry["accuracy"] is not None else "-"
            bar.set_postfix(**shown, skipped=self.progress.nonfinite, refresh=False)
            window.reset()
        validate = self.val_data is not None and ((config.eval_every and step % config.eval_every == 0) or last)
        every = config.checkpoint_every
        save = config.out_dir is not None and ((every and step % every == 0) or last)
        good = True
        if validate or save or last:
            average_buffers(self._models(), self.ctx)
            good = self._confirm(bar)
        if validate:
            self._validate()
        if save and good and self.out_dir is not None:
            self._checkpoint()

    def _log_train(self, window: LogWindow) -> dict[str, Any]:
        sums = all_reduce([window.loss, window.bpd, window.ce, window.correct, window.labelled, window.examples],
                          self.ctx, self.device)
        step = self.progress.step
        entry = train_entry(sums, step, step / self.batches.batches_per_epoch, self.scheduler.get_last_lr()[0],
                            self.progress.nonfinite, time.perf_counter() - window.started)
        self.log.record(entry)
        return entry

    def _validate(self) -> None:
        model = self.ema.module if self.ema is not None else self.model
        batch = self.config.eval_batch_size or max(self.config.batch_size, 256)
        figures = evaluate_model(model, self.val_data, batch, self.device, distributed=self.ctx.active)
        self.log.record(dict(split="val", step=self.progress.step, **figures))

    def _checkpoint(self, interrupted: bool = False, force: bool = False) -> None:
        root = self.out_dir / CHECKPOINTS_DIR
        root.mkdir(parents=True, exist_ok=True)
        directory = step_directory(root, self.progress.step)
        if directory == self.last_checkpoint and not (interrupted or force):
            return  # this step is already saved (e.g. checkpoint_every divides the last step)
        self.progress.log_window = self.window.state()
        state, tensors = capture_training_state(
            self.progress, self.optimizer, self.scheduler, self.ema.module if self.ema is not None else None,
            self.batches, self.ctx.world_size, self.total_steps, self.config.to_dict(), interrupted)
        write_checkpoint(directory, self.model.state_dict(), self.model.config(), self.progress.step, state, tensors)
        self.last_checkpoint = directory
        prune_checkpoints(root, directory, self.config.keep_checkpoints)
        self.hooks.on_checkpoint(directory)

    def _result(self) -> TrainResult:
        p = self.progress
        metrics = final_metrics(p.history)
        metrics.update(steps=p.step, nonfinite_steps=p.nonfinite, elapsed_s=round(p.train_seconds, 3),
                       images_per_s=round(p.images_seen / p.train_seconds, 1) if p.train_seconds else None)
        ema = self.ema.module if self.ema is not None else None
        return TrainResult(self.model, p.step, metrics, p.history, self.last_checkpoint, ema)
