"""A flow as a scikit-learn outlier detector: :class:`FlowDensity` trains a flow by (weighted)
maximum likelihood, or wraps a trained model, and scores with any scorer of
:mod:`hybridflow.ood.scorers`. ``score_samples`` is higher for inliers (scikit-learn's convention).

Input: images (3-D/4-D ``X``, or 2-D with ``image_shape`` or an image ``backbone``) are pixels
under an image backbone and the library's dequantised density; any other 2-D ``X`` is tabular
rows of real values, modelled by a :class:`~hybridflow.ood.tabular.TabularFlow` (nats per row).

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
from numbers import Integral, Real
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, OutlierMixin, TransformerMixin
from sklearn.utils import check_array, check_random_state
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data
from torch import Tensor, nn

from ..backbones import create_backbone
from ..data import as_images, float_range
from ..estimators.fitting import threads_of_estimator
from ..flows import freeze, inference_model
from ..pretrained import named_model
from ..seeding import seeded
from .likelihood import log_likelihood, model_device, split_model
from .patches import fit_patch_reference
from .scorers import SCORERS, create_scorer, perturb
from .tabular import TabularFlow, fit_tabular_flow
from .weights import check_sample_weight, weighted_percentile

__all__ = ["FlowDensity", "TABULAR_SCORERS"]

#: The scorers that apply to tabular rows (the others read pixels or need a reference or a head).
TABULAR_SCORERS = ("loglik", "typicality")
_DEFAULT_IMAGE_BACKBONE = "mixerflow_tiny"


class FlowDensity(ClassNamePrefixFeaturesOutMixin, TransformerMixin, OutlierMixin, BaseEstimator):
    """A flow as a scikit-learn outlier detector: fit by maximum likelihood, score with any scorer.

    Args:
        backbone: ``None`` (``"mixerflow_tiny"`` for images, a :class:`TabularFlow` for tabular
            rows), a registered backbone name (then 2-D ``X`` is flattened images), or a
            (trained) model: a :class:`FlowBackbone`, a :class:`TabularFlow`, a hybrid model with
            ``.backbone``, anything with ``log_prob``. A model is copied before training; with
            ``steps=0`` it is used as it is (see :meth:`from_model`).
        backbone_kwargs: overrides for :func:`create_backbone` (``input_shape`` comes from X) or,
            on tabular rows, for :class:`TabularFlow` (``num_layers``, ``hidden``, ...).
        image_shape: ``(C, H, W)``: read 2-D ``X`` as flattened images of that shape.
        scorer: a name in :data:`SCORERS`; ``max_softmax`` / ``entropy`` need a hybrid model;
            tabular rows take :data:`TABULAR_SCORERS`.
        steps, batch_size, lr: Adam steps of maximum-likelihood training (gradients clipped at 5).
        contamination: expected fraction of outliers in the training data, in (0, 0.5]: the
            threshold ``offset_`` is that (weighted) quantile of the training scores. There is
            no ``"auto"``: a density has no natural threshold.
        reference: for ``likelihood_ratio``: ``"patches"`` (a bag-of-patches flow, 4x4 or under 16
            pixels 2x2: :func:`~hybridflow.ood.fit_patch_reference`), ``"perturbed"`` (Ren et al.), a
            backbone name (trained on the clean data) or a trained model used as it is.
        reference_kwargs, reference_steps: overrides and steps (default ``steps``) for it.
        perturb_rate: Ren et al.'s mu, the fraction of pixels replaced by noise.
        compressor: ``"png"`` or ``"zlib"`` for ``complexity``.
        device: ``"cpu"``, ``"cuda"``, ...; ``None`` picks CUDA when available.
        random_state: seeds weights, batches and perturbations (global RNG state is untouched).
        verbose: print the training loss.
        num_threads: torch threads for fit and scoring (``None``: ``$HYBRIDFLOW_THREADS``, else half the cores).

    ``fit(X, sample_weight=w)`` minimises the weighted mean NLL on tabular rows (with ``N <=
    batch_size`` every step sees all rows, so integer weights equal repeated rows exactly); the
    threshold and the typicality statistics are weighted too. Images train unweighted.

    ``transform(X)`` gives the flow's latent ``z``, ``(n_samples, n_features_in_)`` (midpoint
    dequantisation for images); ``get_feature_names_out`` names its columns ``flowdensity0``...
    and ``set_output`` works as for any scikit-learn transformer.

    Example:
        >>> from hybridflow.data import load_digits_data
        >>> x = load_digits_data().images[:100]
        >>> det = FlowDensity(backbone_kwargs={"patch_size": 2, "num_layers": 1}, steps=2,
        ...                   random_state=0).fit(x)
        >>> bool(det.offset_ <= det.score_samples(x).max())
        True
        >>> rows = np.random.default_rng(0).normal(size=(50, 3))         # tabular, negative values too
        >>> tab = FlowDensity(backbone_kwargs={"num_layers": 1, "hidden": 8}, steps=5, device="cpu",
        ...                   random_state=0).fit(rows)
        >>> tab.input_kind_, tab.transform(rows[:2]).shape, tab.get_feature_names_out()[:2].tolist()
        ('tabular', (2, 3), ['flowdensity0', 'flowdensity1'])
    """

    _parameter_constraints: dict = {
        "backbone": [None, str, nn.Module, HasMethods(["log_prob"])],
        "backbone_kwargs": [None, dict],
        "image_shape": [None, tuple, list],
        "scorer": [StrOptions(set(SCORERS))],
        "steps": [Interval(Integral, 0, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "lr": [Interval(Real, 0, None, closed="neither")],
        "contamination": [Interval(Real, 0, 0.5, closed="right")],
        "reference": [str, nn.Module, HasMethods(["log_prob"])],
        "reference_kwargs": [None, dict],
        "reference_steps": [None, Interval(Integral, 0, None, closed="left")],
        "perturb_rate": [Interval(Real, 0, 1, closed="both")],
        "compressor": [StrOptions({"png", "zlib"})],
        "device": [None, str, torch.device],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
        "num_threads": [None, Interval(Integral, 1, None, closed="left")],
    }

    def __init__(self, backbone: Any = None, backbone_kwargs: dict | None = None,
                 image_shape: tuple[int, int, int] | None = None, scorer: str = "loglik", steps: int = 500,
                 batch_size: int = 64, lr: float = 1e-3, contamination: float = 0.1,
                 reference: Any = "patches", reference_kwargs: dict | None = None,
                 reference_steps: int | None = None, perturb_rate: float = 0.2, compressor: str = "png",
                 device: str | None = None, random_state: int | None = None, verbose: int = 0,
                 num_threads: int | None = None) -> None:
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
        self.num_threads = num_threads

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True  # (N, H, W) and (N, C, H, W) images
        return tags

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def from_model(cls, model: Any, scorer: str = "loglik", X_fit: Any = None, **params: Any) -> FlowDensity:
        """A detector over an already trained ``model`` (a backbone, a :class:`TabularFlow`, a
        hybrid model, or ``"pretrained:fashionmnist"``: a model shipped in the package), no training.

        ``X_fit`` (in-distribution data, held-out is best) sets the threshold ``offset_`` and the typicality
        statistics; without it ``score_samples`` works but ``predict`` does not. ``likelihood_ratio`` then
        needs ``reference=`` a trained model. Other ``params`` are constructor arguments.

        Example:
            >>> flow = create_backbone("mixerflow_tiny", input_shape=(1, 8, 8), patch_size=2)
            >>> det = FlowDensity.from_model(flow, scorer="bpd")
            >>> det.score_samples(np.zeros((2, 1, 8, 8), np.uint8)).shape
            (2,)
        """
        model = named_model(model)
        detector = cls(backbone=model, scorer=scorer, steps=0, **params)
        if X_fit is not None:
            return detector.fit(X_fit)
        if scorer == "typicality":  # its statistics come from the training data
            raise ValueError("the typicality scorer needs training statistics: pass X_fit (in-distribution data)")
        detector._validate_params()
        density, full = split_model(model)
        if isinstance(density, TabularFlow):
            detector._set_models(density, full, None, None)
        else:
            shape = getattr(density, "input_shape", None) or detector.image_shape
            if shape is None:
                raise ValueError("cannot tell the image shape of this model: pass image_shape=(C, H, W) or X_fit")
            reference = detector._fit_reference(None, density, shape, model_device(density), 0)
            detector._set_models(density, full, reference, tuple(shape))
        detector.offset_ = None
        return detector

    def _device(self) -> torch.device:
        if self.device is not None:
            return torch.device(self.device)
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def _set_models(self, density: Any, full: Any, reference: Any, shape: tuple[int, int, int] | None) -> None:
        self.backbone_, self.model_, self.reference_ = density, full, reference
        if shape is None:  # tabular rows; a float64 inference copy: a row's score never depends on its batch
            self.input_kind_, self.image_shape_ = "tabular", None
            self.n_features_in_ = int(density.num_features)
            self.scorer_ = create_scorer(self.scorer, freeze(density, dtype=torch.float64), None, self.compressor,
                                         max(256, self.batch_size))
            self.density_ = self.scorer_.model
            return
        self.input_kind_, self.image_shape_ = "images", tuple(int(s) for s in shape)
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
            return split_model(self.reference)[0]  # a trained model, used as it is
        if images is None:
            raise ValueError("likelihood_ratio without training data needs reference= a trained model (or X_fit)")
        steps = self.steps if self.reference_steps is None else self.reference_steps
        if self.reference == "patches":  # 4x4 patches, 2x2 on images under 16 pixels a side
            size = 4 if min(shape[1:]) >= 16 and shape[1] % 4 == shape[2] % 4 == 0 else 2
            return fit_patch_reference(images, size, steps, self.batch_size, self.lr, seed=seed + 2,
                                       verbose=self.verbose, device=device, **(self.reference_kwargs or {}))
        if self.reference == "perturbed":
            # Ren et al.: the same architecture, trained on inputs with a fraction of pixels noised.
            name = self._image_backbone_name() if not isinstance(self.backbone, nn.Module) \
                else getattr(density, "name", None)
            if name is None:
                raise ValueError("reference='perturbed' needs a registered architecture: this model has no .name")
            own = self.backbone_kwargs if not isinstance(self.backbone, nn.Module) else None
            kwargs = {**(own or {}), **(self.reference_kwargs or {})}
            data = perturb(images, self.perturb_rate, seed + 1)
        else:
            name, kwargs, data = self.reference, dict(self.reference_kwargs or {}), images
        reference = create_backbone(name, input_shape=shape, **kwargs).to(device)
        if steps > 0:
            from ..training import fit_backbone

            fit_backbone(reference, data, steps, self.batch_size, self.lr, seed=seed + 2, verbose=self.verbose)
        return reference.eval()

    def _image_backbone_name(self) -> str:
        return _DEFAULT_IMAGE_BACKBONE if self.backbone is None else self.backbone
    # -- input ----------------------------------------------------------------------------
    def _is_tabular_input(self, X: np.ndarray) -> bool:
        """At fit: 2-D ``X`` is tabular rows unless ``image_shape`` or an image backbone says otherwise."""
        return isinstance(self.backbone, TabularFlow) or (X.ndim == 2 and self.image_shape is None
                                                           and self.backbone is None)

    def _input(self, X: Any, reset: bool) -> Tensor:
        """``X`` validated: float64 ``(N, D)`` rows or uint8 ``(N, C, H, W)`` images; ``reset``
        (at fit) decides which and learns the shape."""
        X = X.detach().cpu().numpy() if isinstance(X, Tensor) else X
        validate_data(self, X, reset=reset, skip_check_array=True, ensure_2d=False)  # feature names only
        X = check_array(X, allow_nd=True, dtype="numeric", ensure_min_samples=2 if reset else 1,
                        ensure_min_features=2 if reset else 1, input_name="X", estimator=self)
        name = type(self).__name__
        if reset:
            self.input_kind_ = "tabular" if self._is_tabular_input(X) else "images"
            self.pixel_floats_ = float_range(X)  # the range later float images are read in
        else:
            check_is_fitted(self)
        if self.input_kind_ == "tabular":
            if X.ndim != 2:
                raise ValueError(f"{name} models tabular rows: X must be (n_samples, n_features), got a "
                                 f"{X.ndim}-D array of shape {X.shape}")
            if not reset and X.shape[1] != self.n_features_in_:
                # scikit-learn's wording, which its checks look for.
                raise ValueError(f"X has {X.shape[1]} features, but {name} is expecting {self.n_features_in_} "
                                 "features as input.")
            return torch.from_numpy(np.array(X, dtype=np.float64))
        shape = self.image_shape_ if not reset else self.image_shape
        if reset and isinstance(self.backbone, nn.Module):  # a built model fixes the image shape
            shape = getattr(split_model(self.backbone)[0], "input_shape", None) or shape
        X = np.require(X, requirements=["C", "W"])  # torch wants writable, contiguous memory
        try:  # floats are read as 0-1 or 0..255 as at fit (pixel_floats_), whatever else is in the batch
            return as_images(X, shape, getattr(self, "pixel_floats_", "auto"))
        except ValueError as error:
            where = f"{name} was fitted on images of shape {tuple(shape)}: " if not reset else ""
            raise ValueError(f"{where}{error}") from None

    # -- scikit-learn API ----------------------------------------------------------------
    @threads_of_estimator
    def fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> FlowDensity:
        """Train the flow (and a reference, for ``likelihood_ratio``) on ``X`` by maximum
        likelihood, weighted by ``sample_weight`` on tabular rows, then set the threshold
        ``offset_`` from ``contamination``. ``y`` is ignored."""
        self._validate_params()
        x = self._input(X, reset=True)
        weights = check_sample_weight(sample_weight, len(x))
        device = self._device()
        seed = int(check_random_state(self.random_state).randint(2**31 - 1))
        if self.input_kind_ == "tabular":
            self._fit_tabular(x, weights, device, seed)
        else:
            if weights is not None and not np.allclose(weights, weights[0]):
                raise ValueError("sample_weight is supported on tabular rows only: images train with the "
                                 "unweighted objective of hybridflow.training (pass equal weights or none)")
            self._fit_images(x, device, seed)
        return self._calibrate(x, weights)

    def _fit_tabular(self, x: Tensor, weights: np.ndarray | None, device: torch.device, seed: int) -> None:
        if self.scorer not in TABULAR_SCORERS:
            raise ValueError(f"scorer {self.scorer!r} needs images; on tabular rows use one of {TABULAR_SCORERS}")
        with seeded(seed, device):  # initial weights, without touching the caller's RNG
            if isinstance(self.backbone, TabularFlow):
                flow = copy.deepcopy(self.backbone) if self.steps > 0 else self.backbone
                if flow.num_features != x.shape[1]:
                    raise ValueError(f"X has {x.shape[1]} features, but the TabularFlow models {flow.num_features}")
            else:
                try:
                    flow = TabularFlow(int(x.shape[1]), **(self.backbone_kwargs or {}))
                except TypeError as error:
                    raise ValueError(f"backbone_kwargs do not fit a TabularFlow (2-D X is read as tabular rows; "
                                     f"pass image_shape=(C, H, W) for flattened images): {error}") from None
        if self.steps > 0:
            w = None if weights is None else torch.from_numpy(weights)
            fit_tabular_flow(flow, x.to(device), w, self.steps, self.batch_size, self.lr, seed=seed,
                             verbose=self.verbose)
        self._set_models(flow.eval(), flow, None, None)

    def _fit_images(self, images: Tensor, device: torch.device, seed: int) -> None:
        from ..training import fit_backbone

        shape = tuple(images.shape[1:])
        with seeded(seed, device):  # weights and ActNorm draws, without touching the caller's RNG
            if not isinstance(self.backbone, nn.Module):
                density = full = create_backbone(self._image_backbone_name(), input_shape=shape,
                                                 **(self.backbone_kwargs or {})).to(device)
            else:
                # Never train the caller's model in place; with steps=0 it is only read.
                model = copy.deepcopy(self.backbone) if self.steps > 0 or self.device is not None else self.backbone
                if self.device is not None:
                    model = model.to(device)
                density, full = split_model(model)
            if self.steps > 0:
                fit_backbone(density, images, self.steps, self.batch_size, self.lr, seed=seed, verbose=self.verbose)
            reference = self._fit_reference(images, density, shape, model_device(density), seed)
        self._set_models(density, full, reference, shape)

    def calibrate(self, X: Any, sample_weight: Any = None) -> FlowDensity:
        """Fit the scorer's statistics and the threshold ``offset_`` on in-distribution ``X``,
        without training the model (``fit`` ends with this; pytorch-ood's ``fit`` is only this).

        Example:
            >>> flow = create_backbone("mixerflow_tiny", input_shape=(1, 8, 8), patch_size=2)
            >>> det = FlowDensity.from_model(flow).calibrate(np.zeros((4, 1, 8, 8), np.uint8))
            >>> det.predict(np.zeros((1, 1, 8, 8), np.uint8))
            array([1])
        """
        check_is_fitted(self, "scorer_")
        x = self._input(X, reset=False)
        return self._calibrate(x, check_sample_weight(sample_weight, len(x)))

    def _calibrate(self, x: Tensor, weights: np.ndarray | None) -> FlowDensity:
        self.scorer_.fit(x, sample_weight=weights)
        self.offset_ = weighted_percentile(self.scorer_(x), weights, 100.0 * self.contamination)
        return self

    @threads_of_estimator
    def score_samples(self, X: Any) -> np.ndarray:
        """Per-sample scores, higher = more in-distribution (scikit-learn's convention)."""
        check_is_fitted(self)
        return self.scorer_(self._input(X, reset=False))

    def decision_function(self, X: Any) -> np.ndarray:
        """``score_samples(X) - offset_``: negative for outliers."""
        check_is_fitted(self)
        if self.offset_ is None:
            raise ValueError("no threshold: this detector was built by from_model without X_fit; "
                             "pass X_fit= (in-distribution data) to set offset_")
        return self.score_samples(X) - self.offset_

    def predict(self, X: Any) -> np.ndarray:
        """``+1`` for inliers, ``-1`` for outliers."""
        return np.where(self.decision_function(X) >= 0, 1, -1)

    @threads_of_estimator
    @torch.no_grad()
    def transform(self, X: Any) -> np.ndarray:
        """The latent ``z`` of each sample, ``(n_samples, n_features_in_)`` float64 (images: midpoint dequantised)."""
        check_is_fitted(self)
        x = self._input(X, reset=False)
        if not hasattr(self.density_, "embed"):
            raise TypeError(f"transform needs a flow with embed(); {type(self.density_).__name__} has none")
        device = model_device(self.density_)
        chunks = [self.density_.embed(batch.to(device)).double().cpu() for batch in x.split(max(256, self.batch_size))]
        return torch.cat(chunks).flatten(1).numpy()

    @property
    def _n_features_out(self) -> int:
        """Columns of ``transform`` (for ``get_feature_names_out``): the latent has the input's size."""
        return self.n_features_in_

    @threads_of_estimator
    def score(self, X: Any, y: Any = None, sample_weight: Any = None) -> float:
        """(Weighted) mean log-likelihood of ``X`` in nats per sample, whatever the scorer."""
        check_is_fitted(self)
        x = self._input(X, reset=False)
        log_p = log_likelihood(self.density_, x, max(256, self.batch_size))
        return float(np.average(log_p, weights=check_sample_weight(sample_weight, len(x))))
