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

The workflows of the commands that work on one run live here too: :func:`train_run` (``hybridflow
train``), :func:`evaluate_run` (``eval``) and :func:`sample_run` (``sample``); ``explain``, ``probe``
and ``ood`` have theirs in :mod:`hybridflow.explaining`, :mod:`hybridflow.probing` and
:mod:`hybridflow.ood.report`.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
from torch.utils.data import Dataset

from .data import (
    BatchSource, DataSpec, ImageData, check_dataset_name, dataset_key, keep_labels, random_subset, subset_indices,
)
from .data.patches import patch_data
from .data.subsets import parse_classes
from .factory import build_model, check_backbone_name, check_train_settings, fit_options
from .hybrid import HybridModel
from .pretrained import resolve_model_path
from .plots import save_image_grid
from .recipes import load_recipe
from .run_settings import TRAIN_DEFAULTS, RunFileError, merge_train_settings
from .training import RUN_FILE, RunFiles, TrainConfig, TrainResult, evaluate_model, find_checkpoint, json_default
from .training import load_checkpoint, resolve_device, train, write_run_file

__all__ = ["RUN_FILE", "TRAIN_DEFAULTS", "CheckpointNotFoundError", "RunFolderError", "RunFileError", "DataShapeError",
           "RequestError", "TrainingInterrupted", "json_default", "find_run", "write_run_file", "default_run_folder",
           "prepare_run_folder", "load_model", "data_spec_from_run", "check_data_shape", "sample_images",
           "TrainedRun", "train_run", "evaluate_run", "sample_run"]

logger = logging.getLogger(__name__)

class CheckpointNotFoundError(FileNotFoundError):
    """A checkpoint path that does not exist."""


class RunFolderError(ValueError):
    """A run folder that does not fit the request: nothing to resume, or a run already there."""


class DataShapeError(ValueError):
    """Images whose shape is not the one the model takes."""


class RequestError(ValueError):
    """A request that does not fit the model or its data: an image index or a class out of range,
    unlabelled data for a probe, nothing to probe."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`train_run`, after the training loop wrote a checkpoint in ``out_dir``
    (``resume=True`` continues from it)."""

    def __init__(self, out_dir: Path) -> None:
        super().__init__(str(out_dir))
        self.out_dir = out_dir


def find_run(checkpoint_dir: str | Path) -> dict[str, Any]:
    """The ``run.json`` a training run wrote beside its checkpoints, looked for in ``checkpoint_dir``
    and up to three folders above it (``{}`` if none). A damaged one raises :class:`RunFileError`
    naming it: a model rebuilt from default settings would be another model."""
    checkpoint_dir = Path(checkpoint_dir)
    for folder in [checkpoint_dir, *list(checkpoint_dir.parents)[:3]]:
        path = folder / RUN_FILE
        if path.is_file():
            try:
                run = json.loads(path.read_bytes())
            except (OSError, ValueError) as error:
                run = error
            if not isinstance(run, dict):
                why = run if isinstance(run, Exception) else f"a JSON {type(run).__name__}, not an object"
                raise RunFileError(f"{path} is damaged ({why}): it holds the run's settings; restore it or start "
                                   "a new run")
            return run
    return {}


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
    (:class:`CheckpointNotFoundError` when ``path`` does not exist; ``ema``: the EMA weights);
    ``pretrained:<name>`` loads a model shipped in the package."""
    path = resolve_model_path(path)
    if not Path(path).exists():
        raise CheckpointNotFoundError(f"checkpoint not found: {path} does not exist")
    directory = find_checkpoint(path)
    model = load_checkpoint(directory, ema=ema, map_location=resolve_device(device))
    return model, directory, find_run(directory)


def data_spec_from_run(run: dict[str, Any], name: str | None = None, root: str | None = None,
                       download: bool = False, limit: int | None = None, seed: int = 0,
                       classes: Sequence[int] | str | None = None) -> DataSpec:
    """The dataset a run was trained on (its shuffle and classes included) unless ``name`` says
    otherwise; ``classes`` (e.g. ``"0-4"``) selects others (default: the run's own for its own
    dataset, all for ``name``). A run trained from Python on data without a name (``data.name``
    null in ``run.json``) needs ``name``: a :class:`RequestError` says so.

    Example:
        >>> data_spec_from_run({}, limit=10).name
        'digits'
        >>> data_spec_from_run({"data": {"name": "digits", "classes": [0, 1]}}).classes
        [0, 1]
    """
    saved = run.get("data") or {}
    if name is None and "name" in saved and saved["name"] is None:
        raise RequestError(f"the run was trained from Python on {saved.get('kind', 'data')} without a dataset name"
                           f"{' (' + saved['path'] + ')' if saved.get('path') else ''}: name the dataset to use "
                           "(--dataset)")
    if name is None:
        spec = DataSpec.from_dict(saved, root=root if root is not None else saved.get("root"), download=download,
                                  limit=limit, seed=seed, classes=classes if classes is not None else saved.get("classes"))
    else:
        spec = DataSpec(name, root, download, limit, seed, classes=classes)
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


# --------------------------------------------------------------------------- the commands' workflows


@dataclass
class TrainedRun:
    """What :func:`train_run` returns: the trained model, its settings and where the run went."""

    model: HybridModel
    backbone: str
    dataset: str
    settings: dict[str, Any]
    result: TrainResult
    out_dir: Path
    curves: Path | None = None

    def summary(self) -> dict[str, Any]:
        """The final metrics, with the backbone, dataset, steps, folder, checkpoint, curves and size."""
        r = self.result
        return {**r.metrics, **dict(backbone=self.backbone, dataset=self.dataset, steps=r.steps, out=str(self.out_dir),
                                    checkpoint=str(r.checkpoint) if r.checkpoint else None,
                                    curves=str(self.curves) if self.curves else None,
                                    params=self.model.backbone.num_params)}


def train_run(options: Mapping[str, Any] | None = None, recipe: str | Path | None = None, scale: str = "cpu",
              out_dir: str | Path | None = None, resume: bool = False, overwrite: bool = False,
              backbone_options: Mapping[str, Any] | None = None, download: bool = False, device: str = "auto",
              progress: bool = True, plot: bool = True, log: Callable[[str], None] | None = None,
              callbacks: Iterable[Any] | None = None) -> TrainedRun:
    """Train a hybrid model into a run folder, as ``hybridflow train`` does.

    The settings are, later ones winning: :data:`TRAIN_DEFAULTS`, the resumed run's (``resume``),
    the ``scale`` table of ``recipe``, then ``options`` (keys of :data:`TRAIN_DEFAULTS`);
    ``backbone_options`` add to the recipe's. ``out_dir`` (default :func:`default_run_folder`)
    receives ``run.json``, the checkpoints, ``metrics.jsonl`` and, with ``plot``, ``curves.png``
    (written by :class:`~hybridflow.training.RunFiles`, as Python's ``train`` writes them, with
    the settings and the dataset's spec added). A named dataset converted to the ``.npy`` layout
    (``hybridflow data convert``) is streamed from disk (:meth:`DataSpec.open`), not loaded. The
    setup line goes to ``log`` (default: this module's logger); ``callbacks`` go to
    :func:`~hybridflow.training.train` (e.g. a ``TensorBoardCallback``). On Ctrl-C the loop writes
    a checkpoint and :class:`TrainingInterrupted` is raised.

    Example:
        >>> import tempfile
        >>> run = train_run(dict(steps=2, val_limit=50), out_dir=Path(tempfile.mkdtemp()) / "run", plot=False,
        ...                 backbone_options=dict(num_layers=1, hidden=8, steps=1), progress=False)
        >>> run.result.steps, run.backbone, (run.out_dir / RUN_FILE).is_file()
        (2, 'mixerflow_tiny', True)
    """
    unknown = sorted(set(options or {}) - set(TRAIN_DEFAULTS) - {"backbone_options"})
    if unknown:
        raise ValueError(f"unknown training settings {unknown}: choose from {', '.join(TRAIN_DEFAULTS)}")
    recipe_settings, meta = ({}, {}) if recipe is None else load_recipe(recipe, scale)
    out_path = Path(out_dir) if out_dir else None
    if resume and out_path is not None and out_path.is_dir() and not (out_path / RUN_FILE).is_file():
        # the model is rebuilt from the saved settings: never from defaults
        raise RunFileError(f"cannot resume {out_path}: {out_path / RUN_FILE} is missing (it holds the run's settings)")
    saved_run = find_run(out_path) if (resume and out_path is not None) else {}
    # the model a resumed run describes (written by hybridflow train or by Python's train), never the default
    settings = merge_train_settings(options, recipe_settings, saved_run, out_path, backbone_options)
    settings["backbone_options"] = check_train_settings(settings, device)  # refused before any data loads
    if settings["classes"] is not None:  # a bad selection is refused before the run folder is touched
        settings["classes"] = list(parse_classes(settings["classes"]))
    name = check_backbone_name(settings["backbone"])
    check_dataset_name(settings["dataset"])
    if out_path is None:
        out_path = default_run_folder(name, settings["dataset"], meta.get("name") if meta else None, scale)
    config = TrainConfig(steps=settings["steps"], batch_size=settings["batch_size"], lr=settings["lr"],
                         betas=tuple(settings["betas"]), warmup_steps=settings["warmup_steps"],
                         grad_clip=settings["grad_clip"], ema_decay=settings["ema_decay"],
                         log_every=settings["log_every"], eval_every=settings["eval_every"],
                         out_dir=out_path, checkpoint_every=settings["checkpoint_every"], seed=settings["seed"],
                         num_workers=settings["num_workers"], flip=settings["flip"],
                         labelled_per_batch=settings.get("labelled_per_batch"), device=device,
                         pseudo_labels=settings.get("pseudo_labels"), translate=settings.get("translate") or 0,
                         align_pseudo_labels=settings.get("align_pseudo_labels") or False,
                         progress=progress)  # flip and num_workers (from a recipe) are checked here, before the data
    prepare_run_folder(out_path, resume, overwrite)

    spec = DataSpec(settings["dataset"], settings.get("data_root"), download, settings["limit"], settings["seed"],
                    settings["shuffle"], settings["shuffle_patch"], settings["shuffle_seed"], settings["size"],
                    settings["classes"], settings["patches"])
    train_data, image_shape, num_classes, labelled = _training_data(spec, settings["labelled_fraction"])
    val_data = _validation_data(spec, settings["val_limit"])
    fitted = fit_options(name, image_shape, settings["backbone_options"])
    model = build_model(name, image_shape, num_classes, settings["lam"], fitted, settings["pooled"], settings["seed"],
                        head_input=settings.get("head_input"))
    shuffled = f" ({spec.shuffle} shuffle)" if spec.shuffle else ""
    shuffled += f" (classes {', '.join(map(str, spec.classes))})" if spec.classes else ""
    shuffled += f" ({spec.patches}x{spec.patches} patches)" if spec.patches else ""
    streamed = "" if isinstance(train_data, ImageData) else " streamed from disk"
    counted = f" ({labelled:,} labelled)" if labelled is not None else ""
    (log or logger.info)(f"{name} ({model.backbone.num_params:,} parameters) on {spec.name}{shuffled}: "
                         f"{len(train_data):,} train {'patches' if spec.patches else 'images'}{streamed}{counted}, "
                         f"{len(val_data):,} validation, "
                         f"lam={settings['lam']:g}, {settings['steps']} steps of {settings['batch_size']} "
                         f"-> {out_path}")
    run_files = RunFiles(dict(settings=dict(settings), backbone=name, backbone_options=fitted, data=spec.to_dict(),
                              recipe=meta or None, scale=scale if meta else None),
                         plot=plot, title=f"{name} on {spec.name}")
    try:
        result = train(model, train_data, config, val_data=val_data, resume=out_path if resume else None,
                       callbacks=[run_files, *(callbacks or [])])
    except KeyboardInterrupt:
        raise TrainingInterrupted(out_path) from None
    return TrainedRun(model, name, spec.name, settings, result, out_path, run_files.curves)


class _KeptLabels(Dataset):
    """A map-style dataset's items with other labels (``-1`` hides one: semi-supervised)."""

    def __init__(self, dataset: Any, labels: torch.Tensor) -> None:
        self.dataset, self.labels = dataset, labels
        self.classes = list(getattr(dataset, "classes", None) or [])

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        return self.dataset[index][0], int(self.labels[index])

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[Any, int]]:
        many = getattr(self.dataset, "__getitems__", None)  # NpyImages reads a batch in one go
        items = many(indices) if many is not None else [self.dataset[i] for i in indices]
        return [(item[0], int(self.labels[i])) for item, i in zip(items, indices)]


def _dataset_labels(dataset: Any) -> torch.Tensor | None:
    """All labels of a streamed dataset, without reading its images (``labels`` of the ``.npy``
    layout, ``targets`` of an image folder); ``None`` when it does not hold them."""
    labels = getattr(dataset, "labels", None)
    labels = getattr(dataset, "targets", None) if labels is None else labels
    return None if labels is None else torch.as_tensor(labels, dtype=torch.int64)


def _training_data(spec: DataSpec, labelled_fraction: float | None
                   ) -> tuple[ImageData | Dataset, tuple[int, int, int], int, int | None]:
    """``(data, image shape, number of classes, labelled count or None)`` of the training split:
    in memory, or streamed when the spec can (:meth:`DataSpec.open`), with labels kept for a
    stratified ``labelled_fraction`` either way (the same ones: :func:`keep_labels` draws them)."""
    data = spec.open(train=True)
    if isinstance(data, ImageData):
        if labelled_fraction is not None:
            data = keep_labels(data, labelled_fraction, spec.seed)
        return data, data.image_shape, data.num_classes, int((data.labels >= 0).sum())
    labels = _dataset_labels(data)
    if labelled_fraction is not None:
        if labels is None:
            raise ValueError(f"labelled_fraction needs the labels of the streamed dataset {data!r} up front "
                             "(a labels or targets attribute)")
        # keep_labels only needs the labels: give it one-pixel stand-ins for the images
        stand_in = ImageData(torch.zeros(len(labels), 1, 1, 1, dtype=torch.uint8), labels)
        labels = keep_labels(stand_in, labelled_fraction, spec.seed).labels
        data = _KeptLabels(data, labels)
    classes = list(getattr(data, "classes", None) or [])
    num_classes = len(classes) if classes else (int(labels.max()) + 1 if labels is not None and len(labels) else 0)
    labelled = int((labels >= 0).sum()) if labels is not None else None
    return data, BatchSource(data).image_shape, num_classes, labelled


def _validation_data(spec: DataSpec, limit: int | None) -> ImageData:
    """``limit`` random test images in memory (the same as ``DataSpec.load`` with ``limit``), read
    one by one from the ``.npy`` layout when the test split is stored so, not loaded whole."""
    data = replace(spec, limit=None).open(train=False)
    if isinstance(data, ImageData):
        return random_subset(data, limit, spec.seed)
    if hasattr(data, "to_image_data"):
        return data.to_image_data(subset_indices(len(data), limit, spec.seed))
    return replace(spec, limit=limit).load(train=False)  # an image folder: decoded by the loader


def evaluate_run(checkpoint: str | Path, dataset: str | None = None, data_root: str | None = None,
                 download: bool = False, split: str = "test", limit: int | None = None, batch_size: int = 256,
                 ema: bool = False, device: str = "auto") -> dict[str, Any]:
    """:func:`~hybridflow.training.evaluate_model`'s figures (bits/dim, accuracy, cross-entropy) of a
    trained run on ``dataset`` (default: the run's own), with the dataset, split, checkpoint and
    seconds taken; ``limit`` random images, ``ema`` the EMA weights."""
    if split not in ("test", "train"):
        raise ValueError(f"split must be 'test' or 'train', got {split!r}")
    model, directory, run = load_model(checkpoint, device, ema)
    spec = data_spec_from_run(run, dataset, data_root, download, limit)
    # a bag-of-patches model scores the patches of ``limit`` images: both counts are reported
    patches, spec.patches = spec.patches, None
    images = spec.load(train=split == "train")
    data = images if patches is None else patch_data(images, patches)
    check_data_shape(model, data, spec.name)
    t0 = time.perf_counter()
    figures = evaluate_model(model, data, batch_size)
    if patches is not None:
        figures.update(num_images=len(images), patches=patches)
    if model.lam == 0:  # a pure flow: its head never trained, so its accuracy means nothing
        figures.update(accuracy=None, cross_entropy=None)
    figures.update(dataset=spec.name, split=split, checkpoint=str(directory),
                   seconds=round(time.perf_counter() - t0, 2))
    return figures


def sample_run(checkpoint: str | Path, count: int = 64, temperature: float = 0.7,
               out_path: str | Path = "samples.png", nrow: int | None = None, seed: int = 0, ema: bool = False,
               device: str = "auto") -> dict[str, Any]:
    """Draw ``count`` images from a trained run (:func:`sample_images`, in the images' own pixel
    order) into one PNG grid at ``out_path``; returns the path, the settings and the mean pixel."""
    model, directory, run = load_model(checkpoint, device, ema)
    images = sample_images(model, count, temperature=temperature, seed=seed, run=run)
    path = save_image_grid(images, out_path, nrow=nrow)
    return dict(path=str(path), n=count, temperature=temperature, checkpoint=str(directory),
                mean_pixel=float(images.float().mean()), unshuffled=bool(run.get("data", {}).get("shuffle")))
