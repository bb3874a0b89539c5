"""Training hybrid models: :func:`train` and its :class:`TrainConfig`, checkpoints, validation.

One loop (:mod:`~hybridflow.training.loop`) serves the CLI, the scikit-learn estimators and
:func:`fit_backbone`; its randomness comes from explicit generators derived from the seed and
the step (:mod:`~hybridflow.training.state`), never from the global RNGs.

Example:
    >>> import hybridflow.training as training
    >>> training.TrainConfig(steps=10).steps
    10
"""

from .callbacks import CALLBACK_HOOKS, CallbackRunner, TrainCallback, TrainInfo, check_callbacks
from .checkpoint import (
    CheckpointError, TrainingState, atomic_write_bytes, find_checkpoint, load_checkpoint, load_model_parts,
    load_training_state, load_weights, prune_checkpoints, save_checkpoint, step_directory, write_checkpoint,
)
from .config import (
    LR_SCHEDULES, NonFiniteLossError, SettingsError, TrainConfig, TrainResult, check_batch_size, uses_batch_statistics,
)
from .distributed import (
    DEVICE_TYPES, DeviceError, DistributedContext, all_agree, all_reduce, average_buffers, current_context,
    resolve_device, start_distributed,
)
from .evaluate import evaluate_model
from .fit import fit_backbone
from .interrupts import DeferredInterrupt
from .loop import train
from .optim import lr_factor, make_adam, make_ema, make_scheduler
from .reporting import METRICS_FILE, LogWindow, MetricsLog, final_metrics, progress_bar, train_entry
from .resuming import rescale_lr, resume_from
from .rollback import LastGoodState, find_nonfinite
from .runfiles import CURVES_FILE, RUN_FILE, RunFiles, describe_data, json_default, write_run_file
from .state import (
    EpochBatches, RunProgress, capture_training_state, mix_seed, noise_generator,
    optimizer_state_from_parts, optimizer_state_parts, restore_ema, restore_training_state,
)
from .tracking import TensorBoardCallback, tensorboard_writer_class

__all__ = [
    # the loop and its settings
    "train", "TrainConfig", "TrainResult", "NonFiniteLossError", "LR_SCHEDULES", "fit_backbone", "evaluate_model",
    "SettingsError", "check_batch_size", "uses_batch_statistics",
    # callbacks, experiment tracking and the run folder's files
    "TrainCallback", "TrainInfo", "CallbackRunner", "CALLBACK_HOOKS", "check_callbacks", "TensorBoardCallback",
    "tensorboard_writer_class", "RunFiles", "RUN_FILE", "CURVES_FILE", "describe_data", "json_default",
    "write_run_file",
    # optimisation
    "make_adam", "lr_factor", "make_scheduler", "make_ema",
    # checkpoints
    "CheckpointError", "TrainingState", "atomic_write_bytes", "find_checkpoint", "load_checkpoint",
    "load_model_parts", "load_training_state", "load_weights", "prune_checkpoints", "save_checkpoint",
    "step_directory", "write_checkpoint", "resume_from", "rescale_lr",
    # distribution
    "DEVICE_TYPES", "DeviceError", "DistributedContext", "resolve_device", "start_distributed", "current_context", "all_reduce", "all_agree",
    "average_buffers",
    # run state, randomness and reporting
    "EpochBatches", "RunProgress", "mix_seed", "noise_generator", "capture_training_state",
    "restore_training_state", "restore_ema", "optimizer_state_parts", "optimizer_state_from_parts",
    "DeferredInterrupt", "METRICS_FILE", "LogWindow", "MetricsLog", "final_metrics", "progress_bar",
    "train_entry",
    # divergence: the last good state and the check of a model
    "LastGoodState", "find_nonfinite",
]
