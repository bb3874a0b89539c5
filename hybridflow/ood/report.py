"""The OOD workflow (``hybridflow ood``): score in- and out-of-distribution images with several
scorers and measure how well each tells them apart.

:func:`score_ood` works on a model and two sets of images; :func:`ood_report` starts from a run
folder or checkpoint, loads the data it was trained on (or ``in_data``) and the outliers (a dataset
or a synthetic set), and can draw the ROC curves and score histograms. :func:`ood_recipe_settings`
reads an OOD recipe (``hybridflow ood --recipe``) into :func:`ood_report`'s arguments.

Example:
    >>> from hybridflow.data import load_digits_data, noise_images
    >>> from hybridflow.hybrid import HybridModel
    >>> model = HybridModel("mixerflow_tiny", 10, input_shape=(1, 8, 8), patch_size=2, num_layers=1, hidden=8)
    >>> digits = load_digits_data(train=False).images[:40]
    >>> report = score_ood(model, digits, noise_images(40, (1, 8, 8)).images, ["bpd", "max_softmax"])
    >>> sorted(report.metrics), 0 <= report.metrics["bpd"]["auroc"] <= 1
    (['bpd', 'max_softmax'], True)
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..data import SYNTHETIC_OOD, check_dataset_name, load_ood_data
from ..plots import plot_roc_curves, plot_score_histograms
from ..pretrained import resolve_model_path
from ..recipes import load_recipe
from ..runs import CheckpointNotFoundError, check_data_shape, data_spec_from_run, default_run_folder, load_model
from .metrics import evaluate
from .scorers import SCORERS, create_scorer

__all__ = ["CLASSIFIER_SCORERS", "OODReport", "score_ood", "ood_report", "ood_recipe_settings"]

#: Scorers that read the classifier head; the others need only the flow.
CLASSIFIER_SCORERS = ("max_softmax", "entropy")


@dataclass
class OODReport:
    """Per-scorer OOD metrics and the scores behind them.

    Attributes:
        metrics: scorer -> :func:`~hybridflow.ood.evaluate`'s dict (AUROC, AUPR-in, AUPR-out, both FPR@95%TPR, sizes).
        scores: scorer -> ``(in-distribution scores, out-of-distribution scores)``, higher = more inlier.
        n_in, n_out: the numbers of in- and out-of-distribution images.
        in_data, out_data: the names of the two sets (when :func:`ood_report` loaded them).
        in_classes, out_classes: the classes kept of each (``None``: all).
        checkpoint: the checkpoint directory scored (:func:`ood_report`).
        plots: ``"roc"`` / ``"hist"`` -> the path of each figure drawn.
    """

    metrics: dict[str, dict[str, float]]
    scores: dict[str, tuple[np.ndarray, np.ndarray]]
    n_in: int = 0
    n_out: int = 0
    in_data: str = ""
    out_data: str = ""
    checkpoint: str = ""
    plots: dict[str, str] = field(default_factory=dict)
    in_classes: list[int] | None = None
    out_classes: list[int] | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: the set names, the checkpoint, the metrics per scorer, the figures' paths and the
        classes kept of each set."""
        return dict(in_data=self.in_data, out_data=self.out_data, checkpoint=self.checkpoint, metrics=self.metrics,
                    plots=self.plots, in_classes=self.in_classes, out_classes=self.out_classes)


def score_ood(model: Any, in_images: Any, out_images: Any, scorers: Sequence[str],
              reference: Any = None, fit_images: Any = None, batch_size: int = 256) -> OODReport:
    """Score ``in_images`` and ``out_images`` with each scorer (:func:`~hybridflow.ood.create_scorer`)
    and measure their separation (:func:`~hybridflow.ood.evaluate`).

    ``model`` is a hybrid model (its ``.backbone`` serves the density scorers, the model itself
    :data:`CLASSIFIER_SCORERS`) or a bare backbone (density scorers only). ``reference``: the
    reference model of ``likelihood_ratio`` (a hybrid model's backbone is used). ``fit_images``,
    when given, are passed to every scorer's ``fit`` (``typicality`` needs them: in-distribution
    training images). Each scorer works on an inference copy of the weights the model has now.
    """
    backbone = getattr(model, "backbone", model)
    ref = getattr(reference, "backbone", reference)
    if getattr(model, "lam", None) == 0:
        # a pure flow's head never trained: its softmax would score every image alike, and the
        # metrics would look like numbers
        untrained = [name for name in scorers if name in CLASSIFIER_SCORERS]
        if untrained:
            raise ValueError(f"{', '.join(untrained)} read(s) the classifier head, but this model was trained with "
                             "lam=0 (a pure flow): its head is untrained. Score a hybrid model (lam > 0) or use "
                             "the density scorers")
    metrics, scores = {}, {}
    for name in scorers:
        scorer = create_scorer(name, model if name in CLASSIFIER_SCORERS else backbone, reference=ref,
                               batch_size=batch_size)
        if fit_images is not None:
            scorer.fit(fit_images)
        s_in, s_out = scorer(in_images), scorer(out_images)
        metrics[name] = evaluate(s_in, s_out)
        scores[name] = (s_in, s_out)
    return OODReport(metrics, scores, len(in_images), len(out_images))


def ood_report(checkpoint: str | Path, out_data: str, in_data: str | None = None,
               scorers: Sequence[str] = ("loglik", "typicality", "complexity"), reference: str | Path | None = None,
               data_root: str | None = None, download: bool = False, limit: int | None = 2000,
               batch_size: int = 256, roc_path: str | Path | None = None, hist_path: str | Path | None = None,
               device: str = "auto", in_classes: Sequence[int] | str | None = None,
               out_classes: Sequence[int] | str | None = None) -> OODReport:
    """:func:`score_ood` for a trained run: its model against ``out_data``.

    ``out_data`` is a dataset (its test split) or a synthetic set made from the in-distribution test
    images (:data:`~hybridflow.data.SYNTHETIC_OOD`); the in-distribution set is ``in_data`` or the
    run's own dataset (its shuffle and classes included), ``limit`` images each. ``in_classes`` /
    ``out_classes`` (e.g. ``"0-4"`` / ``"5-9"``) keep those classes of each set (default: the run's own
    classes for its own dataset, else all; all of ``out_data``). ``typicality`` fits on ``limit``
    training images (of the same classes). ``reference`` is the checkpoint of ``likelihood_ratio``'s
    reference model.
    ``roc_path`` / ``hist_path`` draw the ROC curves / score histograms there.
    """
    check_dataset_name(out_data, tuple(SYNTHETIC_OOD))
    model, directory, run = load_model(checkpoint, device)
    ref_model = load_model(reference, device)[0] if reference is not None else None
    spec = data_spec_from_run(run, in_data, data_root, download, limit, classes=in_classes)
    x_in = spec.load(train=False)
    check_data_shape(model, x_in, spec.name)
    fit_images = spec.load(train=True).images if "typicality" in scorers else None
    out_spec = replace(spec, classes=out_classes)  # the in-distribution classes never carry over to out_data
    x_out = load_ood_data(out_data, out_spec, x_in)
    check_data_shape(model, x_out, out_data)
    shared = shared_images(x_in.images, x_out.images)
    if shared:  # in-distribution images scored as "out": the metrics measure nothing
        warnings.warn(f"{shared:,} of the {len(x_out):,} out-of-distribution images ({out_data}) are also among the "
                      f"in-distribution test images ({spec.name}): the metrics score images against themselves; "
                      "choose other data or classes (--out-classes, --in-classes)", stacklevel=2)
    report = score_ood(model, x_in.images, x_out.images, scorers, reference=ref_model, fit_images=fit_images,
                       batch_size=batch_size)
    report.in_data, report.out_data, report.checkpoint = spec.name, out_data, str(directory)
    report.in_classes, report.out_classes = spec.classes, out_spec.classes
    if roc_path:
        report.plots["roc"] = str(plot_roc_curves(report.scores, roc_path, title=f"in: {spec.name}, out: {out_data}"))
    if hist_path:
        report.plots["hist"] = str(plot_score_histograms(report.scores, hist_path,
                                                         labels=(f"{spec.name} (in)", f"{out_data} (out)")))
    return report


def shared_images(a: torch.Tensor, b: torch.Tensor) -> int:
    """How many images of ``b`` also occur, pixel for pixel, in ``a`` (both ``(N, C, H, W)``).

    Example:
        >>> x = torch.arange(12, dtype=torch.uint8).view(3, 1, 2, 2)
        >>> shared_images(x, x[1:]), shared_images(x[:1], x[1:])
        (2, 0)
    """
    if len(a) == 0 or len(b) == 0 or a.shape[1:] != b.shape[1:]:
        return 0
    rows = torch.cat([a.flatten(1), b.flatten(1).to(a.dtype)])
    ids = torch.unique(rows, dim=0, return_inverse=True)[1]
    return int(torch.isin(ids[len(a):], ids[:len(a)]).sum())


def ood_recipe_settings(recipe: str | Path, scale: str = "cpu", **overrides: Any) -> dict[str, Any]:
    """:func:`ood_report`'s arguments from an OOD recipe (``kind = "ood"``, keys
    :data:`~hybridflow.recipes.OOD_RECIPE_KEYS`) at ``scale``; ``overrides`` (``checkpoint``,
    ``out_data``, ``in_data``, ``in_classes``, ``out_classes``, ``scorers``, ``reference``, ``limit``,
    ``batch_size``, ``data_root``;
    ``None`` = the recipe's) win over the recipe.

    The model is the recipe's ``checkpoint`` (``pretrained:NAME`` too) or the run folder of its
    ``train_recipe`` (``runs/<train_recipe>-<scale>``); the ``likelihood_ratio`` reference likewise
    (``reference`` / ``reference_recipe``). A run folder that is not there yet raises
    :class:`~hybridflow.runs.CheckpointNotFoundError` naming the command that trains it.

    Example:
        >>> settings = ood_recipe_settings("fashionmnist_mnist_ood", "cpu", scorers=["loglik"], limit=10)
        >>> settings["checkpoint"], settings["in_data"], settings["out_data"], settings["scorers"], settings["limit"]
        ('pretrained:fashionmnist', 'fashionmnist', 'mnist', ['loglik'], 10)
    """
    unknown = sorted(set(overrides) - {"checkpoint", "out_data", "in_data", "in_classes", "out_classes", "scorers",
                                       "reference", "limit", "batch_size", "data_root"})
    if unknown:
        raise TypeError(f"ood_recipe_settings got unknown overrides {unknown}")
    settings, meta = load_recipe(recipe, scale, kind="ood")
    scores = settings.pop("scores", ["loglik", "typicality", "complexity"])
    scores = [s.strip() for s in scores.split(",")] if isinstance(scores, str) else list(scores)
    settings["scorers"] = scores
    settings.update({key: value for key, value in overrides.items() if value is not None})
    bad = [name for name in settings["scorers"] if name not in SCORERS]
    if bad or not settings["scorers"]:
        raise ValueError(f"recipe {meta['name']}: unknown scorer(s) {bad or '(none)'}; "
                         f"choose from {', '.join(SCORERS)}")

    def model_path(key: str, recipe_key: str) -> str | None:
        if settings.get(key) is not None:
            return str(settings[key])
        if settings.get(recipe_key) is None:
            return None
        folder = default_run_folder("", "", settings[recipe_key], scale)
        if not Path(resolve_model_path(folder)).exists():
            raise CheckpointNotFoundError(f"recipe {meta['name']} scores {folder}, which is not there: train it first "
                                          f"with `hybridflow train --recipe {settings[recipe_key]} --scale {scale}`")
        return str(folder)

    checkpoint = model_path("checkpoint", "train_recipe")
    if checkpoint is None:
        raise ValueError(f"recipe {meta['name']} names no model to score: give it checkpoint or train_recipe")
    if settings.get("out_data") is None:
        raise ValueError(f"recipe {meta['name']} names no out_data")
    reference = model_path("reference", "reference_recipe") if "likelihood_ratio" in settings["scorers"] else None
    return dict(checkpoint=checkpoint, out_data=settings["out_data"], in_data=settings.get("in_data"),
                scorers=settings["scorers"], reference=reference, limit=settings.get("limit", 2000),
                batch_size=settings.get("batch_size", 256), data_root=settings.get("data_root"),
                in_classes=settings.get("in_classes"), out_classes=settings.get("out_classes"))
