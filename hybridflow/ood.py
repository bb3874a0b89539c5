"""Out-of-distribution scoring with flows: scorers, a scikit-learn detector, metrics and a
pytorch-ood adapter.

Flows famously rate some OOD sets as *more* likely than their own data (a Fashion-MNIST flow
prefers MNIST), so raw log-likelihood is one scorer among several. Every scorer here returns
"higher = more in-distribution" (scikit-learn's convention); :func:`to_pytorch_ood` negates for
pytorch-ood, whose detectors score outliers higher.

============================  ===================================================================
``"loglik"``                  ``log p(x)`` in nats
``"bpd"``                     ``-bits/dim`` (the same ranking as ``loglik`` at a fixed size D)
``"typicality"``              ``-|nll(x) - mean training nll|`` (Nalisnick et al. 2019b); batches
                              of M via :meth:`Typicality.score_batches`
``"likelihood_ratio"``        ``log p(x) - log p_ref(x)`` (Ren et al. 2019; Schirrmeister 2020)
``"complexity"``              ``-(bits/dim(x) - L(x))``, L a lossless compressor's bits/dim
                              (Serra et al. 2020)
``"max_softmax"``             ``max_k p(k|x)`` of a hybrid model (Hendrycks & Gimpel 2017)
``"entropy"``                 ``-H[p(.|x)]`` of a hybrid model
============================  ===================================================================

Example:
    >>> import numpy as np
    >>> from hybridflow.data import load_digits_data
    >>> data = load_digits_data()
    >>> detector = FlowDensity("mixerflow_tiny", {"patch_size": 2, "num_layers": 1, "hidden": 8},
    ...                        steps=3, random_state=0).fit(data.images[:200])
    >>> detector.predict(data.images[:5]).shape
    (5,)
    >>> metrics = evaluate(np.array([3.0, 2.0]), np.array([1.0, 0.0]))
    >>> metrics["auroc"], metrics["fpr95"]
    (1.0, 0.0)
"""

from __future__ import annotations

import copy
import io
import math
import os
import zlib
from contextlib import contextmanager
from numbers import Real
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from sklearn.base import BaseEstimator, OutlierMixin
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted
from torch import Tensor, nn

from .backbones import FlowBackbone, create_backbone
from .data import as_images

__all__ = [
    "evaluate", "plot_roc", "plot_score_histogram",
    "log_likelihood", "perturb", "compressed_bits_per_dim",
    "Scorer", "LogLikelihood", "BitsPerDim", "Typicality", "LikelihoodRatio", "Complexity",
    "MaxSoftmax", "PredictiveEntropy", "SCORERS", "create_scorer",
    "FlowDensity", "FlowOODDetector", "to_pytorch_ood",
]


# --------------------------------------------------------------------------- metrics


def _check_scores(scores: Any, what: str) -> np.ndarray:
    s = np.asarray(scores.detach().cpu() if isinstance(scores, Tensor) else scores, dtype=np.float64)
    if s.ndim != 1:
        raise ValueError(f"{what} must be 1-D (one score per example), got shape {s.shape}")
    if s.size == 0:
        raise ValueError(f"{what} is empty: need at least one score")
    if not np.isfinite(s).all():
        raise ValueError(f"{what} holds {int((~np.isfinite(s)).sum())} NaN or infinite value(s)")
    return s


def _labelled(scores_in: Any, scores_out: Any, higher_is_inlier: bool) -> tuple[np.ndarray, np.ndarray]:
    """Concatenated scores oriented so that higher = inlier, and labels 1 = inlier."""
    s_in, s_out = _check_scores(scores_in, "scores_in"), _check_scores(scores_out, "scores_out")
    sign = 1.0 if higher_is_inlier else -1.0
    labels = np.r_[np.ones(len(s_in)), np.zeros(len(s_out))]
    return labels, sign * np.r_[s_in, s_out]


def evaluate(scores_in: Any, scores_out: Any, higher_is_inlier: bool = True, plot: Any = None) -> dict:
    """OOD metrics of in-distribution scores against out-of-distribution scores.

    Inliers are the positive class. Returns a dict with

    - ``auroc``: area under the ROC curve (``roc_auc_score``); 1 = perfect, 0.5 = chance,
      0 = perfectly reversed (the scorer ranks outliers as more typical),
    - ``aupr_in``: average precision with inliers as positives (``average_precision_score``),
    - ``aupr_out``: average precision with outliers as positives and negated scores,
    - ``fpr95``: the false-positive rate on outliers at the threshold where 95% of inliers are
      accepted. Precisely: ``t`` is the largest threshold with at least 95% of inliers scoring
      ``>= t``; ``fpr95`` is the fraction of outliers scoring ``>= t`` (read off ``roc_curve``
      as the first point with TPR >= 0.95). Lower is better,
    - ``n_in``, ``n_out``: the sample sizes.

    ``higher_is_inlier=False`` for scores where outliers score higher (pytorch-ood's, bits/dim).
    ``plot``: ``None``, a file path (saves a ROC plot) or a matplotlib ``Axes`` to draw on.

    Example:
        >>> round(evaluate([0.9, 0.8, 0.7], [0.1, 0.75])["auroc"], 4)   # 5 of 6 pairs ordered
        0.8333
    """
    labels, scores = _labelled(scores_in, scores_out, higher_is_inlier)
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    metrics = {
        "auroc": float(roc_auc_score(labels, scores)),
        "aupr_in": float(average_precision_score(labels, scores)),
        "aupr_out": float(average_precision_score(1 - labels, -scores)),
        "fpr95": float(fpr[np.searchsorted(tpr, 0.95, side="left")]),
        "n_in": int(labels.sum()),
        "n_out": int(len(labels) - labels.sum()),
    }
    if plot is not None:
        plot_roc(scores_in, scores_out, higher_is_inlier=higher_is_inlier,
                 **({"path": plot} if isinstance(plot, (str, os.PathLike)) else {"ax": plot}))
    return metrics


@contextmanager
def _figure(ax: Any, path: Any) -> Iterator[Any]:
    """An Axes to draw on: the caller's, or a fresh Agg figure saved to ``path`` (no pyplot, so no
    global backend switch and no GUI)."""
    if ax is not None:
        yield ax
        if path is not None:
            ax.figure.savefig(os.fspath(path), dpi=120, bbox_inches="tight")
        return
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(4.5, 4))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    yield axes
    if path is not None:
        figure.savefig(os.fspath(path), dpi=120, bbox_inches="tight")


def plot_roc(scores_in: Any, scores_out: Any, higher_is_inlier: bool = True, ax: Any = None,
             path: Any = None, label: str | None = None) -> Any:
    """Draw the ROC curve (inliers positive) on ``ax`` or a new figure saved to ``path``; returns
    the Axes.

    Example:
        >>> plot_roc([2.0, 3.0], [1.0, 2.5], path="roc.png")  # doctest: +SKIP
    """
    labels, scores = _labelled(scores_in, scores_out, higher_is_inlier)
    fpr, tpr, _ = roc_curve(labels, scores)
    auroc = roc_auc_score(labels, scores)
    with _figure(ax, path) as axes:
        axes.plot(fpr, tpr, label=f"{label + ' ' if label else ''}AUROC {auroc:.3f}")
        axes.plot([0, 1], [0, 1], "k:", linewidth=0.8)
        axes.axhline(0.95, color="grey", linewidth=0.6, linestyle="--")
        axes.set(xlabel="false-positive rate (outliers accepted)",
                 ylabel="true-positive rate (inliers accepted)", xlim=(0, 1), ylim=(0, 1.01))
        axes.legend(loc="lower right")
    return axes


def plot_score_histogram(scores_in: Any, scores_out: Any, ax: Any = None, path: Any = None, bins: int = 50,
                         labels: Sequence[str] = ("in-distribution", "out-of-distribution"),
                         xlabel: str = "score") -> Any:
    """Overlaid density histograms of in- and out-of-distribution scores; returns the Axes.

    Example:
        >>> plot_score_histogram(np.random.randn(100), np.random.randn(100) + 1, path="h.png")  # doctest: +SKIP
    """
    s_in, s_out = _check_scores(scores_in, "scores_in"), _check_scores(scores_out, "scores_out")
    edges = np.histogram_bin_edges(np.r_[s_in, s_out], bins=bins)  # shared bins: comparable bars
    with _figure(ax, path) as axes:
        axes.hist(s_in, bins=edges, density=True, alpha=0.55, label=labels[0])
        axes.hist(s_out, bins=edges, density=True, alpha=0.55, label=labels[1])
        axes.set(xlabel=xlabel, ylabel="density")
        axes.legend()
    return axes


# --------------------------------------------------------------------------- building blocks


@contextmanager
def _eval_mode(model: Any) -> Iterator[None]:
    """Evaluation mode (seeded dequantisation, BatchNorm running stats) and no_grad; restores the
    caller's mode afterwards."""
    was_training = isinstance(model, nn.Module) and model.training
    if isinstance(model, nn.Module):
        model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        if was_training:
            model.train()


def _device(model: Any) -> torch.device:
    if isinstance(model, nn.Module):
        for p in model.parameters():
            return p.device
    return torch.device("cpu")


def _as_batch(images: Any, model: Any) -> Tensor:
    return as_images(images, getattr(model, "input_shape", None))


def _batched(model: Any, images: Any, fn: Callable[[Tensor], Any], batch_size: int) -> np.ndarray:
    """``fn`` over ``images`` in batches on the model's device, in evaluation mode, as float64."""
    images = _as_batch(images, model)
    device = _device(model)
    out = []
    with _eval_mode(model):
        for batch in images.split(int(batch_size)):
            value = fn(batch.to(device))
            out.append(np.asarray(value.detach().cpu().double() if isinstance(value, Tensor) else value,
                                  dtype=np.float64))
    return np.concatenate(out)


def log_likelihood(model: Any, images: Any, batch_size: int = 256) -> np.ndarray:
    """Per-image ``model.log_prob`` in nats, batched, in evaluation mode without gradients.

    Example:
        >>> flow = create_backbone("mixerflow_tiny", input_shape=(1, 8, 8), patch_size=2)
        >>> log_likelihood(flow, np.zeros((3, 1, 8, 8), np.uint8)).shape
        (3,)
    """
    return _batched(model, images, model.log_prob, batch_size)


def perturb(images: Any, rate: float, seed: int = 0) -> Tensor:
    """Ren et al. (2019)'s background-model inputs: each pixel (all channels of a position alike)
    is replaced, with probability ``rate``, by a uniform random value in 0..255.

    Example:
        >>> perturb(np.zeros((2, 1, 8, 8), np.uint8), rate=1.0).float().mean() > 100
        tensor(True)
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"perturbation rate must lie in [0, 1], got {rate}")
    images = as_images(images)
    generator = torch.Generator().manual_seed(seed)
    n, c, h, w = images.shape
    flip = torch.rand((n, 1, h, w), generator=generator) < rate
    noise = torch.randint(0, 256, images.shape, generator=generator, dtype=torch.uint8)
    return torch.where(flip, noise, images)


def compressed_bits_per_dim(images: Any, compressor: str = "png") -> np.ndarray:
    """A lossless compressor's code length per image in bits/dim: ``8 * len(bytes) / D``.

    ``"png"`` (Pillow, level 9; the whole file, header included) or ``"zlib"`` (level 9 on the raw
    bytes). Headers add the same constant to every image of a size, so rankings do not change.

    Example:
        >>> flat = np.zeros((1, 1, 28, 28), np.uint8)
        >>> noisy = np.random.default_rng(0).integers(0, 256, (1, 1, 28, 28), dtype=np.uint8)
        >>> bool(compressed_bits_per_dim(flat) < compressed_bits_per_dim(noisy))
        True
    """
    if compressor not in ("png", "zlib"):
        raise ValueError(f"compressor must be 'png' or 'zlib', got {compressor!r}")
    images = as_images(images).numpy()
    dims = images[0].size
    if compressor == "png":
        from PIL import Image

        def length(image: np.ndarray) -> int:
            buffer = io.BytesIO()
            pixels = image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)
            Image.fromarray(np.ascontiguousarray(pixels)).save(buffer, format="PNG", compress_level=9)
            return buffer.tell()
    else:
        def length(image: np.ndarray) -> int:
            return len(zlib.compress(image.tobytes(), 9))

    return np.array([8.0 * length(image) / dims for image in images])


# --------------------------------------------------------------------------- scorers


class Scorer:
    """A per-image score over a trained model, higher = more in-distribution.

    ``fit(images)`` learns whatever statistics the scorer needs from in-distribution data (a
    no-op for most); calling the scorer on images returns a float64 array.
    """

    name = "scorer"

    def __init__(self, model: Any, batch_size: int = 256) -> None:
        self.model = model
        self.batch_size = batch_size

    def fit(self, images: Any) -> Scorer:
        return self

    def score(self, images: Any) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, images: Any) -> np.ndarray:
        return self.score(images)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({type(self.model).__name__})"


class LogLikelihood(Scorer):
    """``log p(x)`` in nats.

    Example:
        >>> flow = create_backbone("mixerflow_tiny", input_shape=(1, 8, 8), patch_size=2)
        >>> LogLikelihood(flow)(np.zeros((2, 1, 8, 8), np.uint8)).shape
        (2,)
    """

    name = "loglik"

    def score(self, images: Any) -> np.ndarray:
        return log_likelihood(self.model, images, self.batch_size)


class BitsPerDim(Scorer):
    """``-bits/dim(x)`` (negated so that higher = inlier)."""

    name = "bpd"

    def score(self, images: Any) -> np.ndarray:
        images = _as_batch(images, self.model)
        dims = images[0].numel()
        return log_likelihood(self.model, images, self.batch_size) / (dims * math.log(2))


class Typicality(Scorer):
    """Nalisnick et al. (2019b)'s typicality test.

    ``fit`` stores the mean (``train_nll_mean_``, an estimate of the entropy) and standard
    deviation of the NLL on in-distribution data (held-out data is best). A batch of M images is
    atypical when ``|mean NLL of the batch - train_nll_mean_|`` is large; per image (M = 1) the
    score is ``-|nll(x) - train_nll_mean_|``, so images far *more* likely than usual (the mode
    of a high-dimensional Gaussian) count as outliers too.

    Example:
        >>> flow = create_backbone("mixerflow_tiny", input_shape=(1, 8, 8), patch_size=2)
        >>> x = np.random.default_rng(0).integers(0, 256, (20, 1, 8, 8), dtype=np.uint8)
        >>> Typicality(flow).fit(x).score_batches(x, m=5).shape
        (4,)
    """

    name = "typicality"

    def fit(self, images: Any) -> Typicality:
        nll = -log_likelihood(self.model, images, self.batch_size)
        self.train_nll_mean_ = float(nll.mean())
        self.train_nll_std_ = float(nll.std())
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "train_nll_mean_"):
            raise RuntimeError("Typicality needs the training NLL statistics: call fit(images) first")

    def score(self, images: Any) -> np.ndarray:
        self._check_fitted()
        return -np.abs(-log_likelihood(self.model, images, self.batch_size) - self.train_nll_mean_)

    def score_batches(self, images: Any, m: int, n_batches: int | None = None, seed: int = 0) -> np.ndarray:
        """The batch test's score, ``-|mean NLL of a batch of m - train_nll_mean_|``, per batch.

        ``n_batches=None`` splits a seeded shuffle of ``images`` into ``len(images) // m``
        disjoint batches; an int draws that many batches with replacement (a bootstrap, as the
        paper does to set the test's threshold on held-out data).
        """
        self._check_fitted()
        if m < 1:
            raise ValueError(f"batch size m must be positive, got {m}")
        nll = -log_likelihood(self.model, images, self.batch_size)
        rng = np.random.default_rng(seed)
        if n_batches is None:
            if len(nll) < m:
                raise ValueError(f"{len(nll)} images make no batch of m={m}")
            groups = rng.permutation(len(nll))[: len(nll) // m * m].reshape(-1, m)
        else:
            groups = rng.integers(0, len(nll), size=(int(n_batches), m))
        return -np.abs(nll[groups].mean(axis=1) - self.train_nll_mean_)


class LikelihoodRatio(Scorer):
    """``log p_model(x) - log p_reference(x)`` (Ren et al. 2019; Schirrmeister et al. 2020).

    The reference explains away what any image model finds likely (smooth regions, low
    complexity): a smaller flow on the same data, or the same flow trained on :func:`perturb`-ed
    inputs. Both must take the same images.

    Example:
        >>> flow = create_backbone("mixerflow_tiny", input_shape=(1, 8, 8), patch_size=2)
        >>> LikelihoodRatio(flow, flow)(np.zeros((2, 1, 8, 8), np.uint8))
        array([0., 0.])
    """

    name = "likelihood_ratio"

    def __init__(self, model: Any, reference: Any, batch_size: int = 256) -> None:
        super().__init__(model, batch_size)
        if reference is None or not hasattr(reference, "log_prob"):
            raise ValueError("likelihood_ratio needs a reference model with a log_prob method")
        self.reference = reference

    def score(self, images: Any) -> np.ndarray:
        images = _as_batch(images, self.model)
        return (log_likelihood(self.model, images, self.batch_size)
                - log_likelihood(self.reference, images, self.batch_size))


class Complexity(Scorer):
    """Serra et al. (2020): the flow's bits/dim corrected by the image's complexity ``L(x)``, a
    lossless compressor's bits/dim. Their outlier score is ``S = bpd(x) - L(x)``; we return
    ``-S``, so an image the model codes much better than a generic compressor is an inlier.

    Example:
        >>> flow = create_backbone("mixerflow_tiny", input_shape=(1, 8, 8), patch_size=2)
        >>> Complexity(flow, "zlib")(np.zeros((2, 1, 8, 8), np.uint8)).shape
        (2,)
    """

    name = "complexity"

    def __init__(self, model: Any, compressor: str = "png", batch_size: int = 256) -> None:
        super().__init__(model, batch_size)
        compressed_bits_per_dim(np.zeros((1, 1, 2, 2), np.uint8), compressor)  # validates the name
        self.compressor = compressor

    def score(self, images: Any) -> np.ndarray:
        images = _as_batch(images, self.model)
        bpd = -BitsPerDim(self.model, self.batch_size)(images)
        return -(bpd - compressed_bits_per_dim(images, self.compressor))


def _predict_proba(model: Any, images: Any, batch_size: int) -> np.ndarray:
    if not hasattr(model, "predict_proba"):
        raise TypeError(f"{type(model).__name__} has no predict_proba: max_softmax and entropy need a "
                        "hybrid model (a classifier head), not a bare backbone")
    images = _as_batch(images, getattr(model, "backbone", model))
    device = _device(model)
    out = []
    with _eval_mode(model):
        for batch in images.split(int(batch_size)):
            p = model.predict_proba(batch.to(device))
            out.append(np.asarray(p.detach().cpu().double() if isinstance(p, Tensor) else p, dtype=np.float64))
    return np.concatenate(out)


class MaxSoftmax(Scorer):
    """The classifier's confidence ``max_k p(k|x)`` (Hendrycks & Gimpel 2017); needs a model with
    ``predict_proba`` (a hybrid model)."""

    name = "max_softmax"

    def score(self, images: Any) -> np.ndarray:
        return _predict_proba(self.model, images, self.batch_size).max(axis=1)


class PredictiveEntropy(Scorer):
    """Minus the entropy of ``p(.|x)`` in nats; needs a model with ``predict_proba``."""

    name = "entropy"

    def score(self, images: Any) -> np.ndarray:
        p = _predict_proba(self.model, images, self.batch_size)
        return (p * np.log(np.clip(p, 1e-300, None))).sum(axis=1)


SCORERS: dict[str, type[Scorer]] = {
    cls.name: cls for cls in (LogLikelihood, BitsPerDim, Typicality, LikelihoodRatio, Complexity,
                              MaxSoftmax, PredictiveEntropy)
}


def create_scorer(name: str, model: Any, reference: Any = None, compressor: str = "png",
                  batch_size: int = 256) -> Scorer:
    """A scorer by name (see :data:`SCORERS`); ``reference`` for ``likelihood_ratio``,
    ``compressor`` for ``complexity``.

    Example:
        >>> flow = create_backbone("mixerflow_tiny", input_shape=(1, 8, 8), patch_size=2)
        >>> create_scorer("bpd", flow)
        BitsPerDim(MixerFlow)
    """
    if name not in SCORERS:
        raise ValueError(f"unknown scorer {name!r}; choose from {', '.join(SCORERS)}")
    if name == "likelihood_ratio":
        return LikelihoodRatio(model, reference, batch_size)
    if name == "complexity":
        return Complexity(model, compressor, batch_size)
    return SCORERS[name](model, batch_size)


# --------------------------------------------------------------------------- the estimator


def _split_model(model: Any) -> tuple[Any, Any]:
    """``(density, full model)``: a hybrid model's ``.backbone`` holds the density."""
    if isinstance(model, FlowBackbone):
        return model, model
    if hasattr(model, "backbone") and hasattr(model.backbone, "log_prob"):
        return model.backbone, model
    if hasattr(model, "log_prob"):
        return model, model
    raise TypeError(f"expected a backbone name, a FlowBackbone or a model with .backbone or .log_prob, "
                    f"got {type(model).__name__}")


class FlowDensity(OutlierMixin, BaseEstimator):
    """A flow as a scikit-learn outlier detector: fit by maximum likelihood, score with any scorer.

    Args:
        backbone: a registered backbone name, or a (trained) model: a :class:`FlowBackbone`, a
            hybrid model with ``.backbone``, anything with ``log_prob``. A model is copied before
            training; with ``steps=0`` it is used as it is (see :meth:`from_model`).
        backbone_kwargs: overrides for :func:`create_backbone` (``input_shape`` comes from X).
        image_shape: ``(C, H, W)`` to read flattened ``(n_samples, D)`` input whose D is not a
            perfect square.
        scorer: a name in :data:`SCORERS`; ``max_softmax`` / ``entropy`` need a hybrid model.
        steps, batch_size, lr: Adam steps of maximum-likelihood training (gradients clipped at 5).
        contamination: expected fraction of outliers in the training data, in (0, 0.5]: the
            threshold ``offset_`` is that quantile of the training scores. There is no ``"auto"``:
            a density has no natural threshold.
        reference: for ``likelihood_ratio``: ``"perturbed"`` (the same architecture trained on
            inputs perturbed at ``perturb_rate``), a backbone name (trained on the clean data,
            usually smaller) or a trained model used as it is.
        reference_kwargs, reference_steps: overrides and steps (default ``steps``) for it.
        perturb_rate: Ren et al.'s mu, the fraction of pixels replaced by noise.
        compressor: ``"png"`` or ``"zlib"`` for ``complexity``.
        device: ``"cpu"``, ``"cuda"``, ...; ``None`` picks CUDA when available.
        random_state: seeds weights, batches and perturbations (global RNG state is untouched).
        verbose: print the training loss.

    Example:
        >>> from hybridflow.data import load_digits_data
        >>> x = load_digits_data().images[:100]
        >>> det = FlowDensity(backbone_kwargs={"patch_size": 2, "num_layers": 1}, steps=2,
        ...                   random_state=0).fit(x)
        >>> bool(det.offset_ <= det.score_samples(x).max())
        True
    """

    def __init__(self, backbone: Any = "mixerflow_tiny", backbone_kwargs: dict | None = None,
                 image_shape: tuple[int, int, int] | None = None, scorer: str = "loglik", steps: int = 500,
                 batch_size: int = 64, lr: float = 1e-3, contamination: float = 0.1,
                 reference: Any = "perturbed", reference_kwargs: dict | None = None,
                 reference_steps: int | None = None, perturb_rate: float = 0.2, compressor: str = "png",
                 device: str | None = None, random_state: int | None = None, verbose: int = 0) -> None:
        self.backbone = backbone
        self.backbone_kwargs = backbone_kwargs
        self.image_shape = image_shape
        self.scorer = scorer  # not "score": that name is the mean log-likelihood method
        self.steps = steps
        self.batch_size = batch_size
        self.lr = lr
        self.contamination = contamination
        self.reference = reference
        self.reference_kwargs = reference_kwargs
        self.reference_steps = reference_steps
        self.perturb_rate = perturb_rate
        self.compressor = compressor
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def from_model(cls, model: Any, scorer: str = "loglik", X_fit: Any = None, **params: Any) -> FlowDensity:
        """A detector over an already trained ``model`` (a backbone or a hybrid model), no training.

        ``X_fit`` (in-distribution data, held-out is best) sets the threshold ``offset_`` and the
        typicality statistics; without it ``score_samples`` works but ``predict`` does not.
        ``likelihood_ratio`` then needs ``reference=`` a trained model. Other ``params`` are
        constructor arguments.

        Example:
            >>> flow = create_backbone("mixerflow_tiny", input_shape=(1, 8, 8), patch_size=2)
            >>> det = FlowDensity.from_model(flow, scorer="bpd")
            >>> det.score_samples(np.zeros((2, 1, 8, 8), np.uint8)).shape
            (2,)
        """
        detector = cls(backbone=model, scorer=scorer, steps=0, **params)
        if X_fit is not None:
            return detector.fit(X_fit)
        if scorer == "typicality":
            raise ValueError("the typicality scorer needs training statistics: pass X_fit (in-distribution images)")
        detector._check_params()
        density, full = _split_model(model)
        shape = getattr(density, "input_shape", None) or detector.image_shape
        if shape is None:
            raise ValueError("cannot tell the image shape of this model: pass image_shape=(C, H, W) or X_fit")
        detector._set_models(density, full, detector._fit_reference(None, density, shape, _device(density), 0),
                             tuple(shape))
        detector.offset_ = None
        return detector

    def _check_params(self) -> None:
        if self.scorer not in SCORERS:
            raise ValueError(f"unknown scorer {self.scorer!r}; choose from {', '.join(SCORERS)}")
        if isinstance(self.contamination, bool) or not isinstance(self.contamination, Real) \
                or not 0.0 < self.contamination <= 0.5:
            raise ValueError(f"contamination must be a float in (0, 0.5], got {self.contamination!r}")
        if isinstance(self.steps, bool) or not isinstance(self.steps, (int, np.integer)) or self.steps < 0:
            raise ValueError(f"steps must be a non-negative int, got {self.steps!r}")
        if not isinstance(self.batch_size, (int, np.integer)) or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {self.batch_size!r}")
        if not isinstance(self.backbone, str):
            _split_model(self.backbone)  # raises TypeError for anything unusable

    def _device(self) -> torch.device:
        if self.device is not None:
            return torch.device(self.device)
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def _set_models(self, density: Any, full: Any, reference: Any, shape: tuple[int, int, int]) -> None:
        self.backbone_, self.model_, self.reference_ = density, full, reference
        self.image_shape_ = tuple(int(s) for s in shape)
        self.n_features_in_ = math.prod(self.image_shape_)
        scored = full if self.scorer in ("max_softmax", "entropy") else density
        self.scorer_ = create_scorer(self.scorer, scored, reference, self.compressor, max(256, self.batch_size))

    def _fit_reference(self, images: Tensor | None, density: Any, shape: tuple[int, int, int],
                       device: torch.device, seed: int) -> Any:
        if self.scorer != "likelihood_ratio":
            return None
        if not isinstance(self.reference, str):
            return _split_model(self.reference)[0]  # a trained model, used as it is
        if images is None:
            raise ValueError("likelihood_ratio without training data needs reference= a trained model "
                             "(or pass X_fit so that a reference can be trained)")
        if self.reference == "perturbed":
            # Ren et al.: the same architecture, trained on inputs with a fraction of pixels noised.
            name = self.backbone if isinstance(self.backbone, str) else getattr(density, "name", None)
            if name is None:
                raise ValueError("reference='perturbed' needs a registered architecture: this model has no "
                                 ".name; pass reference= a backbone name or a trained model")
            own = self.backbone_kwargs if isinstance(self.backbone, str) else None
            kwargs = {**(own or {}), **(self.reference_kwargs or {})}
            data = perturb(images, self.perturb_rate, seed + 1)
        else:
            name, kwargs, data = self.reference, dict(self.reference_kwargs or {}), images
        reference = create_backbone(name, input_shape=shape, **kwargs).to(device)
        steps = self.steps if self.reference_steps is None else self.reference_steps
        if steps > 0:
            from ._fit import fit_backbone

            fit_backbone(reference, data, steps, self.batch_size, self.lr, seed=seed + 2, verbose=self.verbose)
        return reference.eval()

    def _images(self, X: Any, shape: Any, fitted: bool = True) -> Tensor:
        try:
            return as_images(X, shape)
        except ValueError as error:
            where = f"{type(self).__name__} was fitted on images of shape {tuple(shape)}: " if fitted else ""
            raise ValueError(f"{where}{error}") from None

    # -- scikit-learn API ----------------------------------------------------------------
    def fit(self, X: Any, y: Any = None) -> FlowDensity:
        """Train the flow (and a reference, for ``likelihood_ratio``) on images ``X`` by maximum
        likelihood, then set the threshold ``offset_`` from ``contamination``. ``y`` is ignored."""
        from ._fit import fit_backbone

        self._check_params()
        device = self._device()
        seed = int(check_random_state(self.random_state).randint(2**31 - 1))
        expected = self.image_shape
        if not isinstance(self.backbone, str):  # a built model fixes the image shape
            expected = getattr(_split_model(self.backbone)[0], "input_shape", None) or expected
        images = self._images(X, expected, fitted=False)
        shape = tuple(images.shape[1:])
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)  # weights and ActNorm draws, without touching the caller's RNG
            if isinstance(self.backbone, str):
                density = full = create_backbone(self.backbone, input_shape=shape,
                                                 **(self.backbone_kwargs or {})).to(device)
            else:
                # Never train the caller's model in place; with steps=0 it is only read.
                model = copy.deepcopy(self.backbone) if self.steps > 0 or self.device is not None else self.backbone
                if self.device is not None:
                    model = model.to(device)
                density, full = _split_model(model)
            if self.steps > 0:
                fit_backbone(density, images, self.steps, self.batch_size, self.lr, seed=seed, verbose=self.verbose)
            reference = self._fit_reference(images, density, shape, _device(density), seed)
        self._set_models(density, full, reference, shape)
        self._calibrate(images)
        return self

    def _calibrate(self, images: Any) -> None:
        """Fit the scorer's statistics and the threshold on in-distribution ``images``."""
        self.scorer_.fit(images)
        self.offset_ = float(np.percentile(self.scorer_(images), 100.0 * self.contamination))

    def score_samples(self, X: Any) -> np.ndarray:
        """Per-image scores, higher = more in-distribution (scikit-learn's convention)."""
        check_is_fitted(self)
        return self.scorer_(self._images(X, self.image_shape_))

    def decision_function(self, X: Any) -> np.ndarray:
        """``score_samples(X) - offset_``: negative for outliers."""
        check_is_fitted(self)
        if self.offset_ is None:
            raise ValueError("no threshold: this detector was built by from_model without X_fit; "
                             "pass X_fit= (in-distribution images) to set offset_")
        return self.score_samples(X) - self.offset_

    def predict(self, X: Any) -> np.ndarray:
        """``+1`` for inliers, ``-1`` for outliers."""
        return np.where(self.decision_function(X) >= 0, 1, -1)

    def score(self, X: Any, y: Any = None) -> float:
        """Mean log-likelihood of ``X`` in nats per image, whatever the scorer."""
        check_is_fitted(self)
        return float(log_likelihood(self.backbone_, self._images(X, self.image_shape_),
                                    max(256, self.batch_size)).mean())


# --------------------------------------------------------------------------- pytorch-ood


class FlowOODDetector:
    """pytorch-ood's ``Detector`` interface over a :class:`FlowDensity` (or any object with
    ``score_samples``). pytorch-ood scores outliers *higher*, so every score is
    ``-detector.score_samples(x)``.

    Inputs are images as pytorch-ood's loaders give them: float tensors in [0, 1] (``ToTensor``,
    without mean/std normalisation) or uint8 pixels. A flow's "features" are its input, so
    ``fit_features`` / ``predict_features`` take images too. Use :func:`to_pytorch_ood`, which
    makes this a subclass of ``pytorch_ood.api.Detector`` when pytorch-ood is installed.
    """

    def __init__(self, detector: Any) -> None:
        self.detector = detector

    def fit(self, data_loader: Any, device: Any = None) -> FlowOODDetector:
        """Fit on in-distribution batches ``x`` or ``(x, y, ...)``: a fitted :class:`FlowDensity`
        only re-calibrates its scorer and threshold; an unfitted one trains."""
        batches = [batch[0] if isinstance(batch, (tuple, list)) else batch for batch in data_loader]
        return self.fit_features(torch.cat([torch.as_tensor(b) for b in batches]))

    def fit_features(self, x: Any, y: Any = None, device: Any = None) -> FlowOODDetector:
        images = as_images(x)
        if hasattr(self.detector, "_calibrate") and hasattr(self.detector, "scorer_"):
            self.detector._calibrate(images)
        elif hasattr(self.detector, "fit"):
            self.detector.fit(images)
        return self

    def predict(self, x: Any) -> Tensor:
        """Outlier scores (higher = more OOD) as a float32 tensor, on ``x``'s device."""
        scores = torch.as_tensor(-np.asarray(self.detector.score_samples(as_images(x))), dtype=torch.float32)
        return scores.to(x.device) if isinstance(x, Tensor) else scores

    def predict_features(self, x: Any) -> Tensor:
        return self.predict(x)

    def __call__(self, x: Any) -> Tensor:
        return self.predict(x)


_ADAPTERS: dict[type, type] = {}


def to_pytorch_ood(detector: Any) -> FlowOODDetector:
    """Wrap a :class:`FlowDensity` (or a trained model, via :meth:`FlowDensity.from_model`) for
    pytorch-ood's benchmarks. With pytorch-ood installed (``pip install hybridflow[ood]``) the
    result is an instance of ``pytorch_ood.api.Detector``; without it, a plain
    :class:`FlowOODDetector` with the same methods.

    Example:
        >>> flow = create_backbone("mixerflow_tiny", input_shape=(1, 8, 8), patch_size=2)
        >>> ood = to_pytorch_ood(flow)
        >>> ood.predict(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2])
    """
    if not hasattr(detector, "score_samples"):
        detector = FlowDensity.from_model(detector)
    try:  # imported lazily: pytorch-ood is an optional extra
        from pytorch_ood.api import Detector
    except ImportError:
        return FlowOODDetector(detector)
    if Detector not in _ADAPTERS:
        _ADAPTERS[Detector] = type("FlowOODDetector", (FlowOODDetector, Detector), {"__doc__": FlowOODDetector.__doc__})
    return _ADAPTERS[Detector](detector)
