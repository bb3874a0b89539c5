"""Run folders: what a training run writes beside its checkpoints (``run.json``) and how later work
(evaluation, sampling, OOD scoring, explanations) finds the model and the data it was trained on.

A run folder holds ``checkpoints/``, ``metrics.jsonl``, ``run.json`` (the settings, the backbone
and its options, the data spec) and ``curves.png``.

Example:
    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp()) / "run"
    >>> prepare_run_folder(out, resume=False, overwrite=False)
    >>> _ = write_run_file(out, {"data": {"name": "digits", "shuffle": "global"}})
    >>> spec = data_spec_from_run(find_run(out / "checkpoints"))
    >>> spec.name, spec.shuffle
    ('digits', 'global')
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from .data import DataSpec, ImageData, check_dataset_name, dataset_key
from .hybrid import HybridModel
from .training import find_checkpoint, load_checkpoint, resolve_device

__all__ = ["RUN_FILE", "TRAIN_DEFAULTS", "CheckpointNotFoundError", "RunFolderError", "DataShapeError",
           "json_default", "find_run", "write_run_file", "default_run_folder", "prepare_run_folder", "load_model",
           "data_spec_from_run", "check_data_shape", "sample_images"]

RUN_FILE = "run.json"

#: The settings of a training run that neither a recipe nor an option gave.
TRAIN_DEFAULTS = dict(backbone="mixerflow", dataset="digits", lam=1.0, steps=500, batch_size=64, lr=1e-3,
                      warmup_steps=0, grad_clip=5.0, ema_decay=None, seed=0, limit=None, val_limit=1000,
                      labelled_fraction=None, shuffle=None, shuffle_patch=4, shuffle_seed=0, size=64, pooled=False,
                      log_every=50, eval_every=None, checkpoint_every=None, betas=(0.9, 0.999), data_root=None)


class CheckpointNotFoundError(FileNotFoundError):
    """A checkpoint path that does not exist."""


class RunFolderError(ValueError):
    """A run folder that does not fit the request: nothing to resume, or a run already there."""


class DataShapeError(ValueError):
    """Images whose shape is not the one the model takes."""


def json_default(value: Any) -> Any:
    """``json.dumps``'s ``default``: paths as strings, tensors and arrays as lists.

    Example:
        >>> json.dumps({"x": torch.tensor([1, 2]), "p": Path("a")}, default=json_default)
        '{"x": [1, 2], "p": "a"}'
    """
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def find_run(checkpoint_dir: str | Path) -> dict[str, Any]:
    """The ``run.json`` a training run wrote beside its checkpoints, looked for in ``checkpoint_dir``
    and up to three folders above it (``{}`` if none, or if it is damaged)."""
    checkpoint_dir = Path(checkpoint_dir)
    for folder in [checkpoint_dir, *list(checkpoint_dir.parents)[:3]]:
        path = folder / RUN_FILE
        if path.is_file():
            try:
                return json.loads(path.read_text())
            except ValueError:
                return {}
    return {}


def write_run_file(out_dir: str | Path, run: dict[str, Any]) -> Path:
    """Write ``run`` as ``<out_dir>/run.json`` (the folder is created); returns its path."""
    path = Path(out_dir) / RUN_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(run, indent=1, default=json_default))
    return path


def default_run_folder(backbone: str, dataset: str, recipe: str | None = None, scale: str = "cpu") -> Path:
    """``runs/<recipe>-<scale>`` for a recipe, else ``runs/<backbone>-<dataset>``.

    Example:
        >>> default_run_folder("mixerflow_tiny", "Fashion-MNIST").as_posix()
        'runs/mixerflow_tiny-fashionmnist'
    """
    if recipe:
        return Path("runs") / f"{recipe}-{scale}"
    return Path("runs") / f"{backbone}-{dataset_key(Path(dataset).stem)}"


def prepare_run_folder(out_dir: str | Path, resume: bool, overwrite: bool) -> None:
    """Check ``out_dir`` against the request: ``resume`` needs checkpoints there; without it an
    existing run is refused unless ``overwrite``, which deletes its checkpoints."""
    checkpoints = Path(out_dir) / "checkpoints"
    existing = checkpoints.is_dir() and any(checkpoints.iterdir())
    if resume and not existing:
        raise RunFolderError(f"nothing to resume: {out_dir} holds no checkpoint")
    if existing and not resume:
        if not overwrite:
            raise RunFolderError(f"{out_dir} already holds a training run: pass --resume to continue it, "
                                 "--overwrite to start afresh, or another --out")
        shutil.rmtree(checkpoints)


def load_model(path: str | Path, device: str = "auto", ema: bool = False) -> tuple[HybridModel, Path, dict[str, Any]]:
    """``(model, checkpoint directory, run settings)`` from a run folder or a checkpoint
    (:class:`CheckpointNotFoundError` when ``path`` does not exist; ``ema``: the EMA weights)."""
    if not Path(path).exists():
        raise CheckpointNotFoundError(f"checkpoint not found: {path} does not exist")
    directory = find_checkpoint(path)
    model = load_checkpoint(directory, ema=ema, map_location=resolve_device(device))
    return model, directory, find_run(directory)


def data_spec_from_run(run: dict[str, Any], name: str | None = None, root: str | None = None,
                       download: bool = False, limit: int | None = None, seed: int = 0) -> DataSpec:
    """The dataset a run was trained on (its shuffle included) unless ``name`` says otherwise.

    Example:
        >>> data_spec_from_run({}, limit=10).name
        'digits'
    """
    saved = run.get("data", {})
    if name is None:
        spec = DataSpec.from_dict(saved, root=root if root is not None else saved.get("root"), download=download,
                                  limit=limit, seed=seed)
    else:
        spec = DataSpec(name, root, download, limit, seed)
    check_dataset_name(spec.name)
    return spec


def check_data_shape(model: HybridModel, data: ImageData, what: str) -> None:
    """Raise :class:`DataShapeError` unless ``data``'s images have the shape ``model`` takes."""
    if tuple(data.image_shape) != tuple(model.input_shape):
        c, h, w = data.image_shape
        mc, mh, mw = model.input_shape
        raise DataShapeError(f"{what} images are {c}x{h}x{w} (CxHxW) but the model takes {mc}x{mh}x{mw}: "
                             "pick a dataset of the model's shape")


def sample_images(model: HybridModel, count: int, temperature: float = 0.7, seed: int = 0,
                  run: dict[str, Any] | None = None) -> torch.Tensor:
    """``count`` images drawn from ``model`` at ``temperature`` with a generator seeded by ``seed``.

    If ``run`` says the model was trained on shuffled pixels, the samples are unshuffled, so they
    show what the model learnt in the images' own pixel order.
    """
    images = model.backbone.sample(count, temperature=temperature, generator=torch.Generator().manual_seed(seed))
    saved = (run or {}).get("data", {})
    permutation = DataSpec.from_dict(saved).permutation(model.input_shape) if saved.get("shuffle") else None
    return images if permutation is None else permutation.inverse(images)
