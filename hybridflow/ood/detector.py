"""A flow as a scikit-learn outlier detector: :class:`FlowDensity` trains a backbone by maximum
likelihood (or wraps a trained model) and scores images with any scorer of
:mod:`hybridflow.ood.scorers`. ``score_samples`` is higher for inliers (scikit-learn's convention).

Example:
    >>> from hybridflow import create_backbone
    >>> from hybridflow.data import load_digits_data
    >>> x = load_digits_data().images[:100]
    >>> flow = create_backbone("mixerflow_tiny", input_shape=(1, 8, 8), patch_size=2)
    >>> detector = FlowDensity.from_model(flow, scorer="typicality", X_fit=x)  # no training
    >>> sorted(set(detector.predict(x).tolist()))
    [-1, 1]
"""

from __future__ import annotations

import copy
import math
from numbers import Real
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, OutlierMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted
from torch import Tensor

from ..backbones import FlowBackbone, create_backbone
from ..data import as_images
from ..flows import inference_model
from ..seeding import seeded
from .likelihood import log_likelihood, model_device
from .scorers import SCORERS, create_scorer, perturb

__all__ = ["FlowDensity"]


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
        reference = detector._fit_reference(None, density, shape, model_device(density), 0)
        detector._set_models(density, full, reference, tuple(shape))
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
        # ``score`` reads the density of the same moment as the scorer: one inference copy, made here.
        self.density_ = self.scorer_.model if scored is density else inference_model(density)

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
            from ..training import fit_backbone

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
        from ..training import fit_backbone

        self._check_params()
        device = self._device()
        seed = int(check_random_state(self.random_state).randint(2**31 - 1))
        expected = self.image_shape
        if not isinstance(self.backbone, str):  # a built model fixes the image shape
            expected = getattr(_split_model(self.backbone)[0], "input_shape", None) or expected
        images = self._images(X, expected, fitted=False)
        shape = tuple(images.shape[1:])
        with seeded(seed, device):  # weights and ActNorm draws, without touching the caller's RNG
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
            reference = self._fit_reference(images, density, shape, model_device(density), seed)
        self._set_models(density, full, reference, shape)
        self.calibrate(images)
        return self

    def calibrate(self, images: Any) -> FlowDensity:
        """Fit the scorer's statistics and the threshold ``offset_`` on in-distribution ``images``,
        without training the model (``fit`` ends with this; pytorch-ood's ``fit`` is only this).

        Example:
            >>> flow = create_backbone("mixerflow_tiny", input_shape=(1, 8, 8), patch_size=2)
            >>> det = FlowDensity.from_model(flow).calibrate(np.zeros((4, 1, 8, 8), np.uint8))
            >>> det.predict(np.zeros((1, 1, 8, 8), np.uint8))
            array([1])
        """
        check_is_fitted(self, "scorer_")
        images = self._images(images, self.image_shape_)
        self.scorer_.fit(images)
        self.offset_ = float(np.percentile(self.scorer_(images), 100.0 * self.contamination))
        return self

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
        return float(log_likelihood(self.density_, self._images(X, self.image_shape_),
                                    max(256, self.batch_size)).mean())
