"""Pictures where a picture says more: training curves, sample grids, ROC curves, score histograms
and attribution heat-maps.

Every function draws on a fresh Agg figure (no pyplot: no GUI, no global backend switch), saves a
PNG to ``path`` and returns the path. The exceptions are the single-scorer OOD pictures,
:func:`plot_roc` and :func:`plot_score_histogram`: they draw on a caller's Axes (or a new figure,
saved when ``path`` is given) and return the Axes; the several-scorer figures compose them.

Example:
    >>> import numpy as np, tempfile, os
    >>> path = save_image_grid(np.zeros((4, 1, 8, 8), np.uint8), tempfile.mkdtemp() + "/grid.png")
    >>> os.path.getsize(path) > 0
    True
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence, Union

import numpy as np
import torch

__all__ = [
    "read_metrics", "plot_training_curves", "save_image_grid", "plot_roc", "plot_roc_curves",
    "plot_score_histogram", "plot_score_histograms", "plot_attributions",
]

PathLike = Union[str, "os.PathLike[str]"]


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Any, path: PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(os.fspath(path), dpi=120, bbox_inches="tight")
    return path


# --------------------------------------------------------------------------- training curves


def read_metrics(path: PathLike) -> list[dict[str, Any]]:
    """The entries of a training run's ``metrics.jsonl`` (a file or the run's ``out_dir``).

    Example:
        >>> read_metrics("runs/digits")  # doctest: +SKIP
        [{'split': 'train', 'step': 50, 'bits_per_dim': 3.1, ...}, ...]
    """
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"no metrics log at {path}")
    entries = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                entries.append(json.loads(line))
            except ValueError:
                raise ValueError(f"{path}, line {number}: not JSON") from None
    return entries


def plot_training_curves(metrics: PathLike | Sequence[Mapping[str, Any]], path: PathLike,
                         title: str | None = None) -> Path:
    """Bits/dim (train and validation) and, when labels were seen, accuracy against the step.

    ``metrics``: a ``metrics.jsonl`` path, a run's ``out_dir`` or a list of its entries
    (``TrainResult.history``).

    Example:
        >>> plot_training_curves("runs/digits", "runs/digits/curves.png")  # doctest: +SKIP
    """
    entries = read_metrics(metrics) if isinstance(metrics, (str, os.PathLike)) else list(metrics)
    if not entries:
        raise ValueError("the metrics log is empty: nothing to plot")

    def series(split: str, key: str) -> tuple[list[float], list[float]]:
        points = [(e["step"], e[key]) for e in entries if e.get("split") == split and e.get(key) is not None]
        return [p[0] for p in points], [p[1] for p in points]

    has_accuracy = any(e.get("accuracy") is not None for e in entries)
    figure = _figure(9.0 if has_accuracy else 4.8, 3.6)
    axes = figure.subplots(1, 2 if has_accuracy else 1, squeeze=False)[0]
    for split, style in (("train", "-"), ("val", "o-")):
        steps, values = series(split, "bits_per_dim")
        if steps:
            axes[0].plot(steps, values, style, label=split, markersize=4)
    axes[0].set(xlabel="step", ylabel="bits/dim", title="density (lower is better)")
    axes[0].legend()
    axes[0].grid(alpha=0.3)
    if has_accuracy:
        for split, style in (("train", "-"), ("val", "o-")):
            steps, values = series(split, "accuracy")
            if steps:
                axes[1].plot(steps, [100 * v for v in values], style, label=split, markersize=4)
        axes[1].set(xlabel="step", ylabel="accuracy (%)", title="classification")
        axes[1].legend()
        axes[1].grid(alpha=0.3)
    if title:
        figure.suptitle(title)
    return _save(figure, path)


# --------------------------------------------------------------------------- image grids


def save_image_grid(images: Any, path: PathLike, nrow: int | None = None, min_side: int = 32,
                    padding: int = 2) -> Path:
    """Save integer images ``(N, C, H, W)`` as one PNG grid (torchvision's ``make_grid``).

    Small images are enlarged by an integer factor (nearest neighbour) so that each is at least
    ``min_side`` pixels: an 8x8 digit stays readable.

    Example:
        >>> save_image_grid(flow.sample(64), "samples.png")  # doctest: +SKIP
    """
    from PIL import Image
    from torchvision.utils import make_grid

    from .data import as_images

    x = as_images(images)
    n, c, h, w = x.shape
    factor = max(1, math.ceil(min_side / min(h, w)))
    if factor > 1:
        x = x.repeat_interleave(factor, dim=2).repeat_interleave(factor, dim=3)
    grid = make_grid(x, nrow=nrow or max(1, math.ceil(math.sqrt(n))), padding=padding, pad_value=128)
    array = grid.permute(1, 2, 0).numpy()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(array[..., 0] if c == 1 else array)).save(path)
    return path


# --------------------------------------------------------------------------- OOD pictures


def _axes(ax: Any, width: float, height: float) -> Any:
    """The caller's Axes, or one on a fresh figure."""
    return ax if ax is not None else _figure(width, height).add_subplot()


def plot_roc(scores_in: Any, scores_out: Any, higher_is_inlier: bool = True, ax: Any = None,
             path: PathLike | None = None, label: str | None = None) -> Any:
    """Draw the ROC curve (inliers positive) on ``ax`` or a new figure, saved to ``path`` when
    given; returns the Axes. Every ROC figure of the library is drawn here.

    Example:
        >>> plot_roc([2.0, 3.0], [1.0, 2.5], path="roc.png")  # doctest: +SKIP
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    from .ood.metrics import labelled_scores

    labels, scores = labelled_scores(scores_in, scores_out, higher_is_inlier)
    fpr, tpr, _ = roc_curve(labels, scores)
    auroc = roc_auc_score(labels, scores)
    axes = _axes(ax, 4.5, 4)
    axes.plot(fpr, tpr, label=f"{label + ' ' if label else ''}AUROC {auroc:.3f}")
    axes.plot([0, 1], [0, 1], "k:", linewidth=0.8)
    axes.axhline(0.95, color="grey", linewidth=0.6, linestyle="--")
    axes.set(xlabel="false-positive rate (outliers accepted)",
             ylabel="true-positive rate (inliers accepted)", xlim=(0, 1), ylim=(0, 1.01))
    axes.legend(loc="lower right")
    if path is not None:
        _save(axes.figure, path)
    return axes


def plot_roc_curves(scores: Mapping[str, tuple[Any, Any]], path: PathLike, title: str | None = None) -> Path:
    """ROC curves of several scorers on one plot (:func:`plot_roc` each);
    ``scores[name] = (scores_in, scores_out)``, both "higher = more in-distribution".

    Example:
        >>> plot_roc_curves({"loglik": ([3, 2], [1, 0])}, "roc.png")  # doctest: +SKIP
    """
    axes = _axes(None, 5.0, 4.6)
    for name, (s_in, s_out) in scores.items():
        plot_roc(s_in, s_out, ax=axes, label=name)
    if title:
        axes.set_title(title)
    return _save(axes.figure, path)


def plot_score_histogram(scores_in: Any, scores_out: Any, ax: Any = None, path: PathLike | None = None,
                         bins: int = 50, labels: Sequence[str] = ("in-distribution", "out-of-distribution"),
                         xlabel: str = "score", clip: tuple[float, float] | None = None) -> Any:
    """Overlaid density histograms of in- and out-of-distribution scores on ``ax`` or a new figure,
    saved to ``path`` when given; returns the Axes.

    Flow scores have long tails (a few images millions of times less likely than the rest) that
    would squeeze the bulk into one bar: ``clip`` percentiles of the pooled scores bound the axis,
    and the scores beyond are counted in the edge bins (``None`` shows the full range).

    Example:
        >>> plot_score_histogram(np.random.randn(100), np.random.randn(100) + 1, path="h.png")  # doctest: +SKIP
    """
    from .ood.metrics import check_scores

    s_in, s_out = check_scores(scores_in, "scores_in"), check_scores(scores_out, "scores_out")
    if clip is not None:
        lo, hi = np.percentile(np.r_[s_in, s_out], clip)
        if hi > lo and (s_in.min() < lo or s_out.min() < lo or s_in.max() > hi or s_out.max() > hi):
            s_in, s_out = np.clip(s_in, lo, hi), np.clip(s_out, lo, hi)
            xlabel += f"\nclipped to percentiles {clip[0]:g}-{clip[1]:g}"
    edges = np.histogram_bin_edges(np.r_[s_in, s_out], bins=bins)  # shared bins: comparable bars
    axes = _axes(ax, 4.5, 4)
    axes.hist(s_in, bins=edges, density=True, alpha=0.55, label=labels[0])
    axes.hist(s_out, bins=edges, density=True, alpha=0.55, label=labels[1])
    axes.set(xlabel=xlabel, ylabel="density")
    axes.legend()
    if path is not None:
        _save(axes.figure, path)
    return axes


def plot_score_histograms(scores: Mapping[str, tuple[Any, Any]], path: PathLike,
                          labels: Sequence[str] = ("in-distribution", "out-of-distribution"),
                          title: str | None = None, clip: tuple[float, float] | None = (2.0, 99.8)) -> Path:
    """One panel per scorer (:func:`plot_score_histogram` each): the in- and out-of-distribution
    score histograms overlaid, the axis bounded by ``clip`` percentiles.

    Example:
        >>> plot_score_histograms({"loglik": (np.random.randn(50), np.random.randn(50))}, "h.png")  # doctest: +SKIP
    """
    names = list(scores)
    if not names:
        raise ValueError("no scores to plot")
    columns = min(3, len(names))
    rows = math.ceil(len(names) / columns)
    figure = _figure(4.4 * columns, 3.4 * rows)
    figure.set_layout_engine("constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax, name in zip(axes, names):
        s_in, s_out = scores[name]
        count = len(s_in) + len(s_out)
        plot_score_histogram(s_in, s_out, ax=ax, labels=labels, xlabel=f"{name} (higher = more typical)",
                             clip=clip, bins=min(50, max(10, int(math.sqrt(count)))))
    for ax in axes[len(names):]:
        ax.set_visible(False)
    if title:
        figure.suptitle(title)
    return _save(figure, path)


# --------------------------------------------------------------------------- attributions


def _to_hwc(image: Any) -> np.ndarray:
    array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if array.ndim != 3:
        raise ValueError(f"expected one image (C, H, W), got shape {array.shape}")
    return array.transpose(1, 2, 0)


def plot_attributions(image: Any, attributions: Mapping[str, Any], path: PathLike,
                      title: str | None = None, signed: Mapping[str, bool] | None = None) -> Path:
    """The image, then one heat-map per attribution (each ``(C, H, W)``, summed over channels).

    Signed maps (Integrated Gradients, GradientSHAP...) use a diverging colour map centred on 0:
    red pushes the explained quantity up, blue down. Unsigned ones (saliency) use a sequential
    map. ``signed[name]`` overrides the guess (signed when the map has negative values).

    Example:
        >>> plot_attributions(x[0], {"IG: class 3": ig[0]}, "explain.png")  # doctest: +SKIP
    """
    picture = _to_hwc(image).astype(np.float64)
    if picture.max() > 1.0:
        picture = picture / 255.0
    maps = {name: _to_hwc(a).astype(np.float64).sum(axis=-1) for name, a in attributions.items()}
    for name, m in maps.items():
        if m.shape != picture.shape[:2]:
            raise ValueError(f"attribution {name!r} has spatial shape {m.shape}, the image {picture.shape[:2]}")
        if not np.isfinite(m).all():
            raise ValueError(f"attribution {name!r} holds NaN or infinite values")
    panels = 1 + len(maps)
    figure = _figure(2.7 * panels, 3.1)
    axes = figure.subplots(1, panels, squeeze=False)[0]
    if picture.shape[-1] == 1:
        axes[0].imshow(picture[..., 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        axes[0].imshow(np.clip(picture, 0, 1), interpolation="nearest")
    axes[0].set_title("image", fontsize=9)
    for ax, (name, m) in zip(axes[1:], maps.items()):
        is_signed = (signed or {}).get(name, bool((m < 0).any()))
        if is_signed:
            bound = float(np.abs(m).max()) or 1.0
            shown = ax.imshow(m, cmap="bwr", vmin=-bound, vmax=bound, interpolation="nearest")
        else:
            shown = ax.imshow(m, cmap="inferno", vmin=0, interpolation="nearest")
        ax.set_title(name, fontsize=9)
        figure.colorbar(shown, ax=ax, fraction=0.046, pad=0.04)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        figure.suptitle(title, fontsize=10)
    return _save(figure, path)
