r"""The classifier's reject option: one call for "which class, and is this input in distribution at all".

The hybrid model's one flow gives each input a class and a density. :class:`RejectOptionMixin`
turns the density into an OOD score (higher = more in-distribution, scikit-learn's convention for
``score_samples``) by one of :data:`OOD_SCORERS`, and rejects inputs scored below a threshold: the
``reject_quantile`` quantile of the scores of in-distribution images, so that about that fraction
of inliers is rejected.

==================  =============================================================================
``"loglik"``        ``log p(x)`` in nats, what ``score_samples`` returns
``"typicality"``    ``-|nll(x) - mean nll|``, the mean over the calibration images (Nalisnick et al.
                    2019b): too *likely* an input is atypical too
``"complexity"``    ``-(bits/dim(x) - L(x))``, ``L`` PNG's bits/dim (Serra et al. 2020): a flow rates
                    simple images (Fashion-MNIST -> MNIST) likely; a compressor explains that away
==================  =============================================================================

``fit`` calibrates on (at most :data:`REJECT_FIT_SAMPLES` of) the training images: training
scores are optimistic, so on held-out inliers a little more than ``reject_quantile`` is rejected;
``fit_reject(X_held_out)`` recalibrates (or switches ``ood_scorer``) without training.

Example:
    >>> from hybridflow.data import load_digits_data
    >>> from hybridflow.estimators import HybridFlowClassifier
    >>> data = load_digits_data()
    >>> X, y = data.images[:200].numpy(), data.labels[:200].numpy()
    >>> clf = HybridFlowClassifier(backbone_kwargs=dict(patch_size=2, num_layers=1, hidden=8, steps=1),
    ...                            steps=10, device="cpu", random_state=0, reject_quantile=0.05).fit(X, y)
    >>> noise = np.random.default_rng(0).integers(0, 256, (5, 1, 8, 8), dtype=np.uint8)
    >>> clf.predict_or_reject(noise).tolist()                     # noise: every image rejected
    [-1, -1, -1, -1, -1]
    >>> round(float((clf.predict_or_reject(X) == -1).mean()), 2)  # 5% of the training images
    0.05
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted
from torch import Tensor

from ..backbones import bits_per_dim

__all__ = ["OOD_SCORERS", "REJECT_FIT_SAMPLES", "ood_scores", "RejectOptionMixin"]

#: The ``ood_scorer`` choices of :class:`~hybridflow.estimators.HybridFlowClassifier`.
OOD_SCORERS = ("loglik", "typicality", "complexity")
#: ``fit`` calibrates the reject threshold on at most this many training images: the 5% quantile
#: of 2,000 scores has a standard error of 0.5 points, and a float64 pass over 60,000 MNIST images
#: would cost minutes.
REJECT_FIT_SAMPLES = 2000


def ood_scores(log_prob: np.ndarray, images: Tensor, scorer: str, nll_mean: float | None = None) -> np.ndarray:
    """Per-image OOD scores, higher = more in-distribution, from ``log p(x)`` in nats of uint8
    ``(N, C, H, W)`` ``images``; ``nll_mean`` (the mean NLL of in-distribution images) for typicality.

    Example:
        >>> images = torch.zeros(2, 1, 4, 4, dtype=torch.uint8)
        >>> ood_scores(np.array([-10.0, -30.0]), images, "typicality", nll_mean=20.0).tolist()
        [-10.0, -10.0]
    """
    log_prob = np.asarray(log_prob, dtype=np.float64)
    if scorer == "loglik":
        return log_prob
    if scorer == "typicality":
        if nll_mean is None:
            raise ValueError("the typicality scorer needs the mean NLL of in-distribution images: "
                             "call fit_reject(X) with in-distribution data")
        return -np.abs(-log_prob - nll_mean)
    if scorer == "complexity":
        from ..ood.scorers import compressed_bits_per_dim  # lazily: the OOD package is not needed otherwise

        bpd = bits_per_dim(torch.from_numpy(log_prob), images[0].numel()).numpy()
        return -(bpd - compressed_bits_per_dim(images, "png"))
    raise ValueError(f"unknown OOD scorer {scorer!r}; choose from {OOD_SCORERS}")


class RejectOptionMixin:
    """OOD scores and a reject option for a fitted hybrid classifier (see the module docstring).

    The estimator supplies ``ood_scorer`` and ``reject_quantile`` parameters, ``_images(X, reset)``
    (``X`` as uint8 pixels) and ``_pixel_outputs(images, **outputs)`` (logits and ``log p(x)``).
    Fitted attributes: ``reject_threshold_`` (scores below it are rejected), ``reject_scorer_``
    (the scorer it was fitted for) and ``ood_nll_mean_`` (the calibration images' mean NLL).
    """

    def _calibrate_reject(self, images: Tensor, seed: int | None = None) -> None:
        """Fit the threshold on in-distribution pixel ``images``; with ``seed``, on a seeded
        subset of at most :data:`REJECT_FIT_SAMPLES` of them (``fit``'s training images)."""
        if seed is not None and len(images) > REJECT_FIT_SAMPLES:
            rows = np.random.default_rng(seed).choice(len(images), REJECT_FIT_SAMPLES, replace=False)
            images = images[torch.from_numpy(np.sort(rows))]
        log_prob = self._pixel_outputs(images, log_prob=True)["log_prob"]
        self.ood_nll_mean_ = float(-log_prob.mean())
        scores = ood_scores(log_prob, images, self.ood_scorer, self.ood_nll_mean_)
        self.reject_threshold_ = float(np.quantile(scores, float(self.reject_quantile)))
        self.reject_scorer_ = str(self.ood_scorer)

    def fit_reject(self, X: Any) -> Any:
        """Fit the reject threshold on in-distribution ``X`` (held-out images are best) at
        ``reject_quantile`` with ``ood_scorer``, without training the model; returns ``self``."""
        self._validate_params()
        check_is_fitted(self)
        self._calibrate_reject(self._images(X, reset=False))
        return self

    def ood_score(self, X: Any) -> np.ndarray:
        """Per-example OOD score by ``ood_scorer``, higher = more in-distribution ``(n_samples,)``."""
        check_is_fitted(self)
        images = self._images(X, reset=False)
        log_prob = self._pixel_outputs(images, log_prob=True)["log_prob"]
        return ood_scores(log_prob, images, self.ood_scorer, getattr(self, "ood_nll_mean_", None))

    def predict_or_reject(self, X: Any, reject_label: Any = -1) -> np.ndarray:
        """The most probable class of every example, or ``reject_label`` where its OOD score lies
        below ``reject_threshold_`` (one pass of the flow gives both)."""
        check_is_fitted(self)
        if getattr(self, "reject_threshold_", None) is None:
            raise ValueError("no reject threshold: call fit_reject(X) with in-distribution data "
                             "(fit sets one on the training images)")
        if self.reject_scorer_ != self.ood_scorer:
            raise ValueError(f"the reject threshold was fitted for ood_scorer={self.reject_scorer_!r}, but "
                             f"ood_scorer is now {self.ood_scorer!r}: call fit_reject(X) with in-distribution data")
        if np.isin(np.asarray([reject_label], dtype=object), self.classes_.astype(object)).any():
            raise ValueError(f"reject_label={reject_label!r} is one of the classes {self.classes_.tolist()}: "
                             "pass a reject_label that is not a class")
        images = self._images(X, reset=False)
        out = self._pixel_outputs(images, logits=True, log_prob=True)
        labels = self.classes_[out["logits"].argmax(axis=1)]
        rejected = ood_scores(out["log_prob"], images, self.ood_scorer, self.ood_nll_mean_) < self.reject_threshold_
        # The classes' dtype when it holds the reject label (ints and -1, strings and "?"); else object:
        # NumPy would turn -1 into the string "-1" among string classes.
        if (labels.dtype.kind in "US") == isinstance(reject_label, str):
            try:
                dtype = np.result_type(labels.dtype, np.asarray(reject_label).dtype)
            except TypeError:
                dtype = np.dtype(object)
        else:
            dtype = np.dtype(object)
        result = labels.astype(dtype)
        result[rejected] = reject_label
        return result
