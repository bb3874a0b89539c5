"""The settings of a training run: their defaults, what a run folder's ``run.json`` says of them, and
how a resumed run, a recipe and the caller's options merge into the settings of ``hybridflow train``.

A run folder is written either by ``hybridflow train`` (:func:`hybridflow.runs.train_run`: its
``run.json`` holds ``settings``) or by Python's :func:`~hybridflow.training.train` (only ``model``,
the model's config, ``train_config`` and ``data``); a resume rebuilds the model that either
describes, never the default one.

Example:
    >>> python_run = {"model": {"backbone": "glow_tiny", "backbone_options": {"hidden": 8}, "lam": 0.5,
    ...                         "pooled": False}, "train_config": {"steps": 2, "lr": 0.01}, "data": {"name": "digits"}}
    >>> s = merge_train_settings({"steps": 4}, saved_run=python_run, where="runs/a")
    >>> s["backbone"], s["backbone_options"], s["lam"], s["lr"], s["steps"], s["dataset"]
    ('glow_tiny', {'hidden': 8}, 0.5, 0.01, 4, 'digits')
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from .training.runfiles import RUN_FILE

__all__ = ["TRAIN_DEFAULTS", "RunFileError", "saved_train_settings", "merge_train_settings"]

#: The settings of a training run that neither a recipe nor an option gave.
TRAIN_DEFAULTS = dict(backbone="mixerflow", dataset="digits", lam=1.0, steps=500, batch_size=64, lr=1e-3,
                      warmup_steps=0, grad_clip=5.0, ema_decay=None, seed=0, limit=None, val_limit=1000,
                      labelled_fraction=None, labelled_per_batch=None, shuffle=None, shuffle_patch=4, shuffle_seed=0, size=64, pooled=False, head_input=None,
                      log_every=50, eval_every=None, checkpoint_every=None, betas=(0.9, 0.999), data_root=None,
                      flip=False, num_workers=0, classes=None, patches=None, pseudo_labels=None, translate=0,
                      align_pseudo_labels=False)

#: The fields of a :class:`~hybridflow.training.TrainConfig` that are training settings too.
_FROM_TRAIN_CONFIG = ("steps", "batch_size", "lr", "betas", "warmup_steps", "grad_clip", "ema_decay", "log_every",
                      "eval_every", "checkpoint_every", "seed", "num_workers", "flip",
                      "labelled_per_batch", "pseudo_labels", "translate", "align_pseudo_labels")
#: The keys of a ``DataSpec.to_dict`` that are training settings under another name, or the same.
_FROM_DATA = dict(name="dataset", root="data_root", shuffle="shuffle", shuffle_patch="shuffle_patch",
                  shuffle_seed="shuffle_seed", size="size", classes="classes", patches="patches")


class RunFileError(ValueError):
    """A ``run.json`` that is damaged (not JSON, or not a JSON object) or, for a resume, missing or
    without what the model is rebuilt from."""


def saved_train_settings(run: Mapping[str, Any], where: str | Path = "the run folder") -> dict[str, Any]:
    """The training settings a run's ``run.json`` (``run``, read from ``where``) holds: those
    ``hybridflow train`` wrote, or, for a run of Python's ``train``, the model's backbone, options,
    ``lam``, ``pooled`` and ``head_input``, the :class:`~hybridflow.training.TrainConfig`'s settings and the data's
    name when it has one. ``{}`` for no run. A ``run.json`` that names no model raises
    :class:`RunFileError` saying what is missing.

    Example:
        >>> saved_train_settings({"settings": {"lam": 0.0}})
        {'lam': 0.0}
    """
    if not run:
        return {}
    if "settings" in run:
        return dict(run["settings"])
    model = run.get("model")
    if not isinstance(model, Mapping) or not model.get("backbone"):
        raise RunFileError(f"cannot resume {where}: its {RUN_FILE} names no model (the backbone and its options) to "
                           "rebuild; a model not built by create_backbone cannot be resumed from the command line: "
                           "resume it in Python with train(..., resume=...)")
    missing = [key for key in ("backbone_options", "lam", "pooled") if key not in model]
    if missing:
        raise RunFileError(f"cannot resume {where}: the model in its {RUN_FILE} lacks {', '.join(missing)}")
    config = run.get("train_config") or {}
    settings = {key: config[key] for key in _FROM_TRAIN_CONFIG if config.get(key) is not None}
    settings.update(backbone=model["backbone"], backbone_options=dict(model["backbone_options"]), lam=model["lam"],
                    pooled=model["pooled"])
    if model.get("head_input") is not None:  # configs written before head_input existed: pooled says it
        settings["head_input"] = model["head_input"]
    data = run.get("data") or {}
    if data.get("name"):
        settings.update({setting: data[key] for key, setting in _FROM_DATA.items() if key in data})
    return settings


def merge_train_settings(options: Mapping[str, Any] | None = None, recipe_settings: Mapping[str, Any] | None = None,
                         saved_run: Mapping[str, Any] | None = None, where: str | Path = "the run folder",
                         backbone_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The settings of a training run, later ones winning: :data:`TRAIN_DEFAULTS`, the resumed run's
    (``saved_run``, its ``run.json``: :func:`saved_train_settings`), the recipe's, then ``options``;
    ``backbone_options`` merge the same way, ``backbone_options`` last. A run of Python's ``train``
    on data without a name (``data.name`` null) needs the dataset from the recipe or ``options``:
    a :class:`RunFileError` says so rather than resume it on the default dataset.

    Example:
        >>> merge_train_settings({"lam": 0.0}, {"lam": 0.5, "steps": 3})["lam"]
        0.0
    """
    saved = saved_train_settings(saved_run or {}, where)
    recipe_settings, options = dict(recipe_settings or {}), dict(options or {})
    data = (saved_run or {}).get("data") or {}
    if saved_run and "settings" not in saved_run and not data.get("name") \
            and "dataset" not in recipe_settings and "dataset" not in options:
        size = f" ({data['num_examples']:,} images)" if isinstance(data.get("num_examples"), int) else ""
        raise RunFileError(f"cannot resume {where}: it was trained from Python on {data.get('kind', 'data')}{size} "
                           "without a dataset name: name the data it trained on (--dataset NAME, with --classes if "
                           "it held some classes only)")
    settings: dict[str, Any] = dict(TRAIN_DEFAULTS)
    merged_options: dict[str, Any] = {}
    for source in (saved, recipe_settings, options, {"backbone_options": dict(backbone_options or {})}):
        settings.update({key: value for key, value in source.items() if key != "backbone_options"})
        merged_options.update(source.get("backbone_options") or {})
    settings["backbone_options"] = merged_options
    return settings
