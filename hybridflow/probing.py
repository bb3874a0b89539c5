"""The probe workflow (``hybridflow probe``): train backbones by maximum likelihood, freeze them
and compare linear probes on their features against the raw pixels (the paper's Table 7
protocol). The features are :mod:`hybridflow.features`' sets: by default the latents at every
depth and the conditioners' pooled hidden units, ``"latent"`` for the flattened final latent;
several sets give one row each.

:func:`run_probe` does the whole job and returns a :class:`ProbeReport` (one
:class:`~hybridflow.probe.ProbeResult` per feature set, and what was trained or loaded); the
probe itself and the feature sources live in :mod:`hybridflow.probe`.

Example:
    >>> report = run_probe(["mixerflow"], steps=0, limit=200, test_limit=60, seeds=1, pixels=False,
    ...                    options=dict(num_layers=1, hidden=8, steps=1), progress=False, log=lambda m: None)
    >>> list(report.results), report.models[0]["options"]["patch_size"]
    (['mixerflow_tiny (depths+hidden)'], 2)
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from .data import ImageData
from .features import DEFAULT_FEATURES, check_features
from .factory import build_model, check_backbone_name, fit_options
from .hybrid import HybridModel
from .probe import ProbeResult, compare_probes, embed_images, format_table, raw_pixel_features
from .runs import RequestError, check_data_shape, data_spec_from_run, load_model
from .training import TrainConfig, evaluate_model, resolve_device, save_checkpoint, train

__all__ = ["ProbeReport", "run_probe", "ONE_SEED_ABOVE"]

#: Training images above which :func:`run_probe` fits one probe seed by default instead of three.
ONE_SEED_ABOVE = 10_000

logger = logging.getLogger(__name__)


@dataclass
class ProbeReport:
    """What :func:`run_probe` found.

    Attributes:
        dataset: the dataset's name.
        image_shape: ``(C, H, W)``.
        n_train, n_test: images the probes were fitted and tested on.
        seeds: the probe seeds.
        models: one dict per trained backbone or loaded checkpoint (name, backbone, parameters,
            test bits/dim; for a trained one its options, steps, lam and training seconds).
        results: row name -> :class:`~hybridflow.probe.ProbeResult`, the raw pixels first, then
            ``"<model> (<features>)"`` for each model and feature set.
        elapsed_s: seconds the whole workflow took.
    """

    dataset: str
    image_shape: tuple[int, int, int]
    n_train: int
    n_test: int
    seeds: list[int]
    models: list[dict[str, Any]]
    results: dict[str, ProbeResult]
    elapsed_s: float

    @property
    def header(self) -> str:
        """One line: the dataset, its image shape, the split sizes and the number of seeds."""
        c, h, w = self.image_shape
        n = len(self.seeds)
        return (f"linear probes on {self.dataset} ({c}x{h}x{w}): {self.n_train:,} train / {self.n_test:,} "
                f"test images, {n} seed{'s' if n > 1 else ''}")

    def table(self) -> str:
        """The results as :func:`~hybridflow.probe.format_table`'s aligned text table."""
        return format_table(self.results)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: the dataset, sizes, seeds, models, per-feature-set results and elapsed time."""
        return dict(dataset=self.dataset, image_shape=list(self.image_shape), n_train=self.n_train,
                    n_test=self.n_test, seeds=list(self.seeds), models=self.models,
                    results=[r.as_dict() for r in self.results.values()], elapsed_s=round(self.elapsed_s, 1))


def _add_features(rows: dict[str, tuple[Any, Any]], label: str, model: HybridModel, train_data: ImageData,
                  test_data: ImageData, feature_sets: Sequence[str]) -> None:
    for name in feature_sets:
        rows[f"{label} ({name})"] = (embed_images(model, train_data.images, features=name),
                                     embed_images(model, test_data.images, features=name))


def _feature_sets(features: str | Sequence[str] | None, pooled: bool) -> list[str]:
    chosen = [features] if isinstance(features, str) else list(features or [DEFAULT_FEATURES])
    if pooled and "pooled" not in chosen:
        chosen = ["pooled"] if features is None else [*chosen, "pooled"]
    if not chosen:
        raise RequestError("features is empty: name at least one feature set")
    return list(dict.fromkeys(check_features(name) for name in chosen))


def run_probe(backbones: Sequence[str] = ("mixerflow",), checkpoints: Sequence[str | Path] = (),
              dataset: str | None = None, data_root: str | None = None, download: bool = False, steps: int = 400,
              batch_size: int = 64, lr: float = 2e-3, lam: float = 0.0, limit: int | None = None,
              test_limit: int | None = None, seeds: int | None = None, options: Mapping[str, Any] | None = None,
              full_size: bool = False, pooled: bool = False, pixels: bool = True, out_dir: str | Path | None = None,
              seed: int = 0, device: str = "auto", progress: bool = True,
              log: Callable[[str], None] | None = None, features: str | Sequence[str] | None = None,
              max_seconds: float | None = None) -> ProbeReport:
    """Train each of ``backbones`` for ``steps`` steps (``lam=0``: maximum likelihood), load each of
    ``checkpoints``, and fit linear probes on their frozen latents and on the raw pixels.

    The data is ``dataset`` (default: the first checkpoint's, else the embedded digits), with
    ``limit`` training and ``test_limit`` test images; both splits must be fully labelled.
    ``features`` names one feature set or several (:data:`~hybridflow.features.FEATURE_SETS`;
    default :data:`~hybridflow.features.DEFAULT_FEATURES`; ``pooled=True`` adds ``"pooled"``);
    ``max_seconds`` stops each backbone's training early (equal wall-clock budgets). On
    images of 16 pixels or fewer a side the backbones get light settings (4 layers or steps,
    width 32) unless ``full_size``; ``options`` override them for every trained backbone.
    ``seeds`` probe seeds from ``seed`` on (default: 3, or 1 on over :data:`ONE_SEED_ABOVE` training
    images, where the seeds' spread is a fraction of a point and each costs minutes); ``out_dir`` saves each trained backbone as a
    checkpoint; ``pixels=False`` leaves out the raw-pixel row. Progress notes go to ``log``
    (default: this module's logger), one line per probe fit among them; training progress bars
    and a bar per probe go to stderr unless ``progress=False``.
    Evaluation and embeddings come from inference copies (:func:`~hybridflow.training.evaluate_model`,
    :func:`~hybridflow.probe.embed_images`).

    Raises :class:`~hybridflow.runs.RequestError` for unlabelled data or nothing to probe.
    """
    started = time.perf_counter()
    log = log or logger.info
    names = [check_backbone_name(b) for b in backbones]
    try:
        feature_sets = _feature_sets(features, pooled)
    except ValueError as error:
        raise RequestError(str(error)) from None
    loaded = [load_model(path, device) + (path,) for path in checkpoints]
    run = loaded[0][2] if loaded else {}
    spec = data_spec_from_run(run, dataset, data_root, download, limit, seed)
    train_data = spec.load(train=True)
    test_data = replace(spec, limit=test_limit).load(train=False)
    for data, what in ((train_data, "training"), (test_data, "test")):
        if int((data.labels >= 0).sum()) < len(data):
            raise RequestError(f"the {what} split of {spec.name} is not fully labelled: a probe needs labels")
    unseen = sorted(set(test_data.labels.tolist()) - set(train_data.labels.tolist()))
    if unseen:  # a probe cannot predict them: say so before any training (a small --limit can cause it)
        raise RequestError(f"test labels {unseen} do not occur among the {len(train_data)} training images of "
                           f"{spec.name}: raise --limit or choose classes that both splits hold")
    if seeds is None:
        seeds = 1 if len(train_data) > ONE_SEED_ABOVE else 3
    seed_list = list(range(seed, seed + seeds))
    report = ProbeReport(spec.name, tuple(train_data.image_shape), len(train_data), len(test_data), seed_list, [],
                         {}, 0.0)
    log(report.header)
    rows: dict[str, tuple[Any, Any]] = {}
    if pixels:
        rows["raw pixels"] = (raw_pixel_features(train_data.images), raw_pixel_features(test_data.images))
    _, h, w = train_data.image_shape
    small = max(h, w) <= 16 and not full_size
    for index, name in enumerate(names):
        fitted = fit_options(name, train_data.image_shape, dict(options or {}), small=small)
        model = build_model(name, train_data.image_shape, train_data.num_classes, lam, fitted, seed=seed)
        shown = ", ".join(f"{k}={v}" for k, v in fitted.items())
        log(f"training {name} ({shown + '; ' if shown else ''}{model.backbone.num_params:,} parameters) "
            f"for {steps} steps, lam={lam:g}")
        t0 = time.perf_counter()
        model = model.to(resolve_device(device))
        if steps > 0:
            config = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, seed=seed, device=device,
                                 warmup_steps=min(20, steps // 10), log_every=max(1, steps // 4), progress=progress,
                                 max_seconds=max_seconds)
            train(model, train_data, config)
        seconds = time.perf_counter() - t0
        test_bpd = evaluate_model(model, test_data)["bits_per_dim"]
        label = name if names.count(name) == 1 else f"{name} #{index + 1}"
        if out_dir:
            save_checkpoint(model.cpu(), Path(out_dir) / label.replace(" #", "-"))
        _add_features(rows, label, model, train_data, test_data, feature_sets)
        report.models.append(dict(name=label, backbone=name, options=fitted, params=model.backbone.num_params,
                                  steps=steps, lam=lam, train_seconds=round(seconds, 1), test_bits_per_dim=test_bpd))
        log(f"  {label}: {seconds:.0f} s, test {test_bpd:.3f} bits/dim")
    for model, directory, _, path in loaded:
        check_data_shape(model, train_data, spec.name)
        label = f"checkpoint {Path(path).name}"
        test_bpd = evaluate_model(model, test_data)["bits_per_dim"]
        _add_features(rows, label, model, train_data, test_data, feature_sets)
        report.models.append(dict(name=label, backbone=model.config()["backbone"], checkpoint=str(directory),
                                  params=model.backbone.num_params, test_bits_per_dim=test_bpd))
    if not rows:
        raise RequestError("nothing to probe: give a --backbone or a --checkpoint (or drop --no-pixels)")
    log(f"fitting the probes: {len(rows)} feature set{'s' if len(rows) > 1 else ''} x {len(seed_list)} "
        f"seed{'s' if len(seed_list) > 1 else ''}")
    report.results = compare_probes(rows, train_data.labels, test_data.labels, seeds=tuple(seed_list), log=log,
                                    progress=progress)
    report.elapsed_s = time.perf_counter() - started
    return report
