r"""scikit-learn estimators over the hybrid model: :class:`HybridFlowClassifier`.

One normalising flow gives a classifier (``predict``, ``predict_proba``), a density
(``score_samples``, log-likelihood in nats) and an embedding (``transform``). It trains with
:func:`hybridflow.train.train` on the joint objective of :mod:`hybridflow.hybrid`; examples
labelled ``-1`` (scikit-learn's semi-supervised convention) train the density only.

Input ``X``: any layout of :func:`hybridflow.data.as_images` -- ``(N, C, H, W)``,
``(N, H, W, C)``, ``(N, H, W)`` -- or scikit-learn's ``(n_samples, n_features)``. A 2-D ``X``
is read as flattened ``(C, H, W)`` images (row-major): of ``image_shape`` when given, else
square ``(1, s, s)`` when ``n_features = s * s``, else one row ``(1, 1, n_features)``.

Values: the flow models 8-bit pixels, so every input becomes integers in 0..255 first
(``scaling``). With ``scaling="auto"``, input that :func:`~hybridflow.data.as_images` accepts as
pixels (uint8, integers in 0..255, whole-number floats in 0..255, floats in [0, 1]) is taken as
pixels; anything else (standardised features, negative or fractional values) is min-max scaled
to 0..255 with statistics learned at fit (``offset_``, ``scale_``), per feature for 2-D input
(tabular columns have unrelated scales) and globally for image-shaped input (pixels share one
scale). At prediction the same map is applied and values beyond the fitted range are clipped.

Example:
    >>> from sklearn.datasets import load_digits
    >>> X, y = load_digits(return_X_y=True)               # (1797, 64): 8x8 images, values 0..16
    >>> clf = HybridFlowClassifier(backbone_kwargs=dict(patch_size=2, num_layers=1, hidden=8, steps=1),
    ...                            steps=20, device="cpu", random_state=0).fit(X[:200], y[:200])
    >>> clf.image_shape_, clf.predict_proba(X[:3]).shape, clf.score_samples(X[:3]).shape
    ((1, 8, 8), (3, 10), (3,))
"""

from __future__ import annotations

import contextlib
import copy
import math
import numbers
import random
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin
from sklearn.metrics import accuracy_score
from sklearn.utils import check_array, check_consistent_length, check_random_state, column_or_1d
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data
from torch import Tensor

from .backbones.base import standard_normal_log_prob
from .backbones.registry import backbone_family
from .data import ImageData, _check_image_shape, _to_nchw, as_images
from .flows import NUM_BINS, check_pixels
from .hybrid import HybridModel
from .train import TrainConfig, resolve_device, train

__all__ = ["HybridFlowClassifier", "expected_failed_checks"]

#: Training steps of ``fit`` when neither ``steps`` nor ``epochs`` is given.
DEFAULT_STEPS = 200
_SCALINGS = ("auto", "pixels", "feature", "global")
_DTYPES = {"float64": torch.float64, "float32": torch.float32}
# TrainConfig fields the estimator sets itself from its own parameters.
_OWN_TRAIN_FIELDS = ("steps", "epochs", "batch_size", "lr", "seed", "device", "progress")


class HybridFlowClassifier(ClassifierMixin, TransformerMixin, BaseEstimator):
    """A hybrid generative classifier on a normalising flow, as a scikit-learn classifier.

    Args:
        backbone: a registered backbone name (see :func:`hybridflow.list_backbones`).
        backbone_kwargs: overrides for :func:`~hybridflow.create_backbone` (``input_shape``
            comes from ``X``). A MixerFlow without an explicit ``patch_size`` whose default patch
            does not divide the images falls back to the largest side <= 4 that does (1 for
            tabular rows).
        lam: weight of the cross-entropy in the objective (0 = a pure flow, the head untrained).
        steps: optimisation steps per ``fit``; overrides ``epochs``. Default: ``DEFAULT_STEPS``
            (200) when ``epochs`` is also ``None``.
        epochs: passes over the data per ``fit`` when ``steps`` is ``None``.
        batch_size: examples per step (at least 2: the conditioners use BatchNorm).
        lr: Adam's learning rate (cosine-decayed to 0 over each ``fit`` call).
        warm_start: ``fit`` continues training the fitted ``model_`` (same image shape, labels
            among ``classes_``) instead of starting afresh.
        image_shape: ``(C, H, W)`` of flattened 2-D input (see the module docstring).
        scaling: ``"auto"``, ``"pixels"`` (input must be pixels, as for ``as_images``),
            ``"feature"`` (per-feature min-max to 0..255) or ``"global"`` (one min-max).
        pooled: put the head on the latent averaged over positions instead of all of it.
        unlabelled: the label that marks unlabelled examples (-1 by scikit-learn's convention;
            a string such as ``"?"`` for string labels); ``None``: every label is a class.
        inference_dtype: ``"float64"`` (default) evaluates a float64 copy of the model, so a
            prediction does not depend on the rest of the batch even in the last bits (what
            scikit-learn's checks demand); ``"float32"`` is faster on GPUs.
        train_kwargs: further :class:`~hybridflow.train.TrainConfig` fields (``warmup_steps``,
            ``grad_clip``, ``ema_decay``, ``out_dir`` for checkpoints and a metrics log, ...).
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        random_state: seeds the initial weights, the data order and the dequantisation noise
            (``None``: seeds drawn from NumPy's global RNG, scikit-learn's convention). Training
            leaves the caller's global RNG states as they were.
        verbose: show a progress bar while training.

    Each ``fit``/``partial_fit`` call is one :func:`~hybridflow.train.train` run: a fresh Adam
    and learning-rate schedule on the current weights (``partial_fit`` = one pass over its
    data, as scikit-learn's incremental estimators do). Meta-estimators that validate ``X`` as
    2-D themselves (``SelfTrainingClassifier``) need flattened ``(N, C*H*W)`` images.

    Attributes:
        classes_: the class labels, sorted (any hashable labels, strings too).
        n_features_in_: ``C * H * W``.
        image_shape_: ``(C, H, W)`` the flow models.
        scaling_: ``"pixels"``, ``"feature"`` or ``"global"``: how values become pixels.
        offset_, scale_: the min-max map ``pixel = (x - offset_) * scale_`` (``None`` for pixels).
        model_: the trained :class:`~hybridflow.hybrid.HybridModel` (float32; on ``device``, or
            the CPU after unpickling).
        n_iter_: optimisation steps the model has had, over all ``fit``/``partial_fit`` calls.
        history_: the training log entries (``total_step`` counts across calls).

    Example:
        >>> from hybridflow.data import load_digits_data
        >>> data = load_digits_data()
        >>> X, y = data.images[:300].numpy(), np.array(data.classes)[data.labels[:300]]
        >>> clf = HybridFlowClassifier(backbone_kwargs=dict(patch_size=2, num_layers=1, hidden=8, steps=1),
        ...                            steps=10, device="cpu", random_state=0).fit(X, y)
        >>> clf.classes_[:3].tolist(), clf.transform(X[:2]).shape
        (['0', '1', '2'], (2, 64))
    """

    def __init__(
        self,
        backbone: str = "mixerflow_tiny",
        backbone_kwargs: dict[str, Any] | None = None,
        lam: float = 1.0,
        steps: int | None = None,
        epochs: int | None = None,
        batch_size: int = 64,
        lr: float = 1e-3,
        warm_start: bool = False,
        image_shape: tuple[int, int, int] | None = None,
        scaling: str = "auto",
        pooled: bool = False,
        unlabelled: Any = -1,
        inference_dtype: str = "float64",
        train_kwargs: dict[str, Any] | None = None,
        device: str = "auto",
        random_state: int | np.random.RandomState | None = None,
        verbose: bool = False,
    ) -> None:
        self.backbone = backbone
        self.backbone_kwargs = backbone_kwargs
        self.lam = lam
        self.steps = steps
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.warm_start = warm_start
        self.image_shape = image_shape
        self.scaling = scaling
        self.pooled = pooled
        self.unlabelled = unlabelled
        self.inference_dtype = inference_dtype
        self.train_kwargs = train_kwargs
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------ scikit-learn metadata
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True  # (N, H, W) and (N, C, H, W) images
        return tags

    # ------------------------------------------------------------------ fitting
    def fit(self, X: Any, y: Any) -> HybridFlowClassifier:
        """Train on images ``X`` and labels ``y`` (``unlabelled`` entries train the density only).

        Runs ``steps`` (or ``epochs``) of the hybrid objective; with ``warm_start=True`` and a
        fitted model, continues training it.
        """
        self._check_params()
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y is None "
                             f"(mark unlabelled examples with {self.unlabelled!r})")
        warm = bool(self.warm_start) and hasattr(self, "model_")
        if not warm:
            self._forget()
        images = self._images(X, reset=not warm)
        labels = self._labels(y, len(images), classes=None, first=not warm)
        if not warm:
            self._new_model()
        steps = self.steps if self.steps is not None else (None if self.epochs is not None else DEFAULT_STEPS)
        self._train(images, labels, steps=steps, epochs=self.epochs if steps is None else None)
        return self

    def partial_fit(self, X: Any, y: Any, classes: Sequence[Any] | None = None) -> HybridFlowClassifier:
        """One pass over ``(X, y)``, continuing the fitted model (or starting one).

        ``classes``: every class label, needed on the first call when ``y`` does not hold them
        all (as for scikit-learn's other incremental classifiers); later calls must agree.
        """
        self._check_params()
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y is None")
        first = not hasattr(self, "model_")
        images = self._images(X, reset=first)
        labels = self._labels(y, len(images), classes=classes, first=first)
        if first:
            self._new_model()
        self._train(images, labels, steps=None, epochs=1)
        return self

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "model_")

    def _forget(self) -> None:
        # A refit that fails half-way must not leave the old model beside new shapes or classes.
        for name in [k for k in vars(self) if k.endswith("_") and not k.startswith("_")]:
            delattr(self, name)

    def _check_params(self) -> None:
        if not isinstance(self.backbone, str):
            raise TypeError(f"backbone must be a registered backbone name, got {type(self.backbone).__name__}")
        if self.backbone_kwargs is not None:
            if not isinstance(self.backbone_kwargs, dict):
                raise TypeError(f"backbone_kwargs must be a dict or None, got {type(self.backbone_kwargs).__name__}")
            if "input_shape" in self.backbone_kwargs:
                raise ValueError("backbone_kwargs must not set input_shape: it comes from X "
                                 "(use image_shape for flattened input)")
        for name in ("steps", "epochs"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1):
                raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
        batch = self.batch_size
        if isinstance(batch, bool) or not isinstance(batch, numbers.Integral) or batch < 2:
            raise ValueError(f"batch_size must be an integer >= 2 (the flow's BatchNorm needs two examples), "
                             f"got {self.batch_size!r}")
        if not isinstance(self.lr, numbers.Real) or not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if not isinstance(self.lam, numbers.Real) or not (math.isfinite(self.lam) and self.lam >= 0):
            raise ValueError(f"lam must be a finite number >= 0, got {self.lam!r}")
        if self.scaling not in _SCALINGS:
            raise ValueError(f"scaling must be one of {_SCALINGS}, got {self.scaling!r}")
        if self.inference_dtype not in _DTYPES:
            raise ValueError(f"inference_dtype must be one of {tuple(_DTYPES)}, got {self.inference_dtype!r}")
        if self.image_shape is not None:
            _check_image_shape(self.image_shape)
        if self.train_kwargs is not None:
            if not isinstance(self.train_kwargs, dict):
                raise TypeError(f"train_kwargs must be a dict or None, got {type(self.train_kwargs).__name__}")
            clash = sorted(set(self.train_kwargs) & set(_OWN_TRAIN_FIELDS))
            if clash:
                raise ValueError(f"train_kwargs must not set {clash}: use the estimator's own parameters")

    # ------------------------------------------------------------------ input conversion
    def _images(self, X: Any, reset: bool) -> Tensor:
        """``X`` as uint8 ``(N, C, H, W)`` pixels; ``reset`` learns the shape and value map."""
        if isinstance(X, Tensor):
            X = X.detach().cpu().numpy()
        validate_data(self, X, reset=reset, skip_check_array=True, ensure_2d=False)  # feature names only
        X = check_array(X, allow_nd=True, dtype="numeric", input_name="X", estimator=self)
        if X.dtype == np.bool_:
            X = X.astype(np.uint8)
        if X.ndim > 4:
            raise ValueError(f"X must be (n_samples, n_features) or a batch of images (N, H, W), (N, H, W, C), "
                             f"(N, C, H, W); got a {X.ndim}-D array of shape {X.shape}")
        name = type(self).__name__
        if reset:
            shape = self._infer_shape(X)
        else:
            check_is_fitted(self)
            shape = self.image_shape_
            if X.ndim == 2 and X.shape[1] != self.n_features_in_:
                # scikit-learn's wording, which its checks look for.
                raise ValueError(f"X has {X.shape[1]} features, but {name} is expecting "
                                 f"{self.n_features_in_} features as input.")
        X = np.require(X, requirements=["C", "W"])  # torch wants writable, contiguous memory
        if X.ndim == 2:
            if X.shape[1] != math.prod(shape):
                raise ValueError(f"X has {X.shape[1]} features, but image_shape={shape} needs {math.prod(shape)}")
            values = torch.from_numpy(X).reshape(len(X), *shape)
        else:
            try:
                values = _to_nchw(torch.from_numpy(X), shape)
            except ValueError as error:
                where = f"{name} was fitted on images of shape (C, H, W) = {shape}: " if not reset else ""
                raise ValueError(f"{where}{error}") from None
        if reset:
            self.image_shape_ = tuple(int(s) for s in values.shape[1:])
            self.n_features_in_ = math.prod(self.image_shape_)
            self._fit_scaling(values, tabular=X.ndim == 2)
        return self._to_pixels(values)

    def _infer_shape(self, X: np.ndarray) -> tuple[int, int, int] | None:
        if self.image_shape is not None:
            return _check_image_shape(self.image_shape)
        if X.ndim != 2:
            return None  # _to_nchw reads the layout
        d = X.shape[1]
        if d < 2:
            raise ValueError(f"{type(self).__name__} needs at least 2 features, got {d} feature(s): a flow on one "
                             "value has nothing to mix")
        side = math.isqrt(d)
        return (1, side, side) if side * side == d else (1, 1, d)

    def _fit_scaling(self, values: Tensor, tabular: bool) -> None:
        mode = self.scaling
        if mode in ("auto", "pixels"):
            try:
                as_images(values)
                mode = "pixels"
            except ValueError as error:
                if self.scaling == "pixels":
                    raise ValueError(f"scaling='pixels' but X does not hold pixels: {error}") from None
                mode = "feature" if tabular else "global"
        self.scaling_ = mode
        if mode == "pixels":
            self.offset_ = self.scale_ = None
            return
        v = values.double().numpy()
        lo, hi = (v.min(axis=0), v.max(axis=0)) if mode == "feature" else (v.min(), v.max())
        span = np.asarray(hi - lo, dtype=np.float64)
        # A constant feature carries nothing: it maps to pixel 0 (scale 0) rather than dividing by 0.
        self.offset_ = np.asarray(lo, dtype=np.float64)
        self.scale_ = np.divide(float(NUM_BINS - 1), span, out=np.zeros_like(span), where=span > 0)

    def _to_pixels(self, values: Tensor) -> Tensor:
        if self.scaling_ == "pixels":
            try:
                return as_images(values, self.image_shape_)
            except ValueError as error:
                raise ValueError(f"{type(self).__name__} was fitted on pixel values; {error} "
                                 "(scaling='feature' or 'global' rescales other input)") from None
        scaled = (values.double().numpy() - self.offset_) * self.scale_
        return torch.from_numpy(np.clip(np.rint(scaled), 0, NUM_BINS - 1).astype(np.uint8))

    def _unlabelled_mask(self, y: np.ndarray) -> np.ndarray:
        marker = self.unlabelled
        if marker is None:
            return np.zeros(len(y), dtype=bool)
        if y.dtype.kind == "O":
            same = ((type(v) is type(marker) or _both_numbers(v, marker)) and v == marker for v in y)
            return np.fromiter(same, dtype=bool, count=len(y))
        marker_is_number = isinstance(marker, numbers.Number) and not isinstance(marker, bool)
        if (y.dtype.kind in "biuf") == marker_is_number:
            return np.asarray(y == marker, dtype=bool)
        return np.zeros(len(y), dtype=bool)  # a string marker never matches numbers, nor the reverse

    def _labels(self, y: Any, n: int, classes: Sequence[Any] | None, first: bool) -> Tensor:
        """``y`` as int64 indices into ``classes_`` (-1 = unlabelled); ``first`` sets ``classes_``."""
        y = column_or_1d(y, warn=True)
        check_consistent_length(np.empty(n), y)
        y = check_array(y, ensure_2d=False, dtype=None, input_name="y", estimator=self)
        unlabelled = self._unlabelled_mask(y)
        labelled = y[~unlabelled]
        if len(labelled):
            check_classification_targets(labelled)
        if first:
            if classes is not None:
                found = np.unique(np.asarray(classes))
            elif len(labelled):
                found = np.unique(labelled)
            else:
                raise ValueError(f"no labelled examples: every label is the unlabelled marker {self.unlabelled!r}; "
                                 "a classifier needs at least one labelled example (or pass classes= to partial_fit)")
            if self.unlabelled is not None and bool(self._unlabelled_mask(np.asarray(found, dtype=object)).any()):
                raise ValueError(f"classes include the unlabelled marker {self.unlabelled!r}")
            self.classes_ = found
        elif classes is not None and not np.array_equal(np.unique(np.asarray(classes)), self.classes_):
            raise ValueError(f"classes={np.unique(np.asarray(classes)).tolist()} differs from the classes of the "
                             f"first fit, {self.classes_.tolist()}")
        index = np.full(n, -1, dtype=np.int64)
        index[~unlabelled] = self._encode(labelled, what="y")
        return torch.from_numpy(index)

    def _encode(self, labels: np.ndarray, what: str) -> np.ndarray:
        known = np.isin(labels, self.classes_)
        if not known.all():
            unseen = np.unique(labels[~known])[:10]
            raise ValueError(f"{what} contains labels not seen at fit: {unseen.tolist()}; the classes are "
                             f"{self.classes_.tolist()}")
        return np.searchsorted(self.classes_, labels).astype(np.int64)

    # ------------------------------------------------------------------ training
    def _base_seed(self) -> int:
        return int(check_random_state(self.random_state).randint(2**31 - 1))

    def _new_model(self) -> None:
        kwargs = dict(self.backbone_kwargs or {})  # copied: a parameter is never modified
        seed = self._base_seed()
        with _preserved_global_rng():
            torch.manual_seed(seed)  # the initial weights are a function of random_state
            self.model_ = self._build(kwargs)
        self.n_iter_ = 0
        self.history_ = []

    def _build(self, kwargs: dict[str, Any]) -> HybridModel:
        shape, k = self.image_shape_, len(self.classes_)
        make = lambda **kw: HybridModel(self.backbone, k, lam=float(self.lam), input_shape=shape,  # noqa: E731
                                        pooled=bool(self.pooled), **kw)
        try:
            return make(**kwargs)
        except ValueError as error:
            # The registered MixerFlows cut 28x28 or 32x32 images in 4x4 (or 8x8) patches; tabular
            # rows (1, 1, D) and small images need a patch that divides them.
            if "patch_size" in kwargs or backbone_family(self.backbone) != "mixerflow":
                raise ValueError(f"backbone {self.backbone!r} cannot be built for images of shape {shape}: "
                                 f"{error}") from None
            patch = max(p for p in range(1, 5) if shape[1] % p == 0 and shape[2] % p == 0)
            try:
                return make(patch_size=patch, **kwargs)
            except ValueError:
                raise ValueError(f"backbone {self.backbone!r} cannot be built for images of shape {shape}: "
                                 f"{error}") from None

    def _train(self, images: Tensor, labels: Tensor, steps: int | None, epochs: int | None) -> None:
        if len(images) < 2:
            raise ValueError(f"{type(self).__name__} needs at least 2 samples to train (BatchNorm), "
                             f"got n_samples={len(images)}")
        # Seeds differ from call to call (through n_iter_), so continued training sees new noise.
        seed = int(np.random.SeedSequence([self._base_seed(), self.n_iter_]).generate_state(1)[0] >> 1)
        config = TrainConfig(steps=steps, epochs=epochs, batch_size=int(self.batch_size), lr=float(self.lr),
                             seed=seed, device=str(self.device), progress=bool(self.verbose),
                             **(self.train_kwargs or {}))
        device = resolve_device(config.device)
        with _preserved_global_rng(device):  # train() reseeds the global RNGs at every step
            result = train(self.model_, ImageData(images, labels), config)
        if result.ema is not None:  # the averaged weights are the ones to predict with
            self.model_.load_state_dict(result.ema.state_dict())
        self.model_.eval()
        self.history_ = list(self.history_) + [dict(entry, total_step=self.n_iter_ + entry["step"])
                                               for entry in result.history]
        self.n_iter_ += int(result.steps)

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def _evaluate(self, X: Any, logits: bool = False, features: bool = False,
                  log_prob: bool = False) -> dict[str, np.ndarray]:
        """Logits / head features / log p(x) of ``X`` in batches, as float64 numpy arrays."""
        check_is_fitted(self)
        images = self._images(X, reset=False)
        device = resolve_device(str(self.device))
        dtype = _DTYPES[self.inference_dtype]
        model = self.model_
        if next(model.parameters()).dtype != dtype:
            model = copy.deepcopy(model)  # the fitted model stays float32, ready to train on
        model = model.to(device=device, dtype=dtype).eval()
        backbone = model.backbone
        # One fixed dequantisation noise for every example (seeded like the backbone's own
        # evaluation noise), so a log-likelihood never depends on the batch or its order.
        noise = torch.rand(backbone.input_shape, generator=torch.Generator().manual_seed(backbone.eval_seed),
                           dtype=torch.float64).to(device=device, dtype=dtype)
        out: dict[str, list[Tensor]] = {"logits": [], "features": [], "log_prob": []}
        for chunk in images.split(max(256, int(self.batch_size))):
            x = check_pixels(chunk, backbone.input_shape).to(device=device, dtype=dtype)
            if logits or features:
                z, _ = backbone((x + 0.5) / NUM_BINS)  # midpoint dequantisation, as HybridModel.embed
                h = model._features(z)
                if features:
                    out["features"].append(h)
                if logits:
                    out["logits"].append(model.head(h))
            if log_prob:
                z, logdet = backbone((x + noise) / NUM_BINS)
                # The density of the integer image, exactly as FlowBackbone.encode computes it.
                out["log_prob"].append(standard_normal_log_prob(z) + logdet
                                       - backbone.num_dims * math.log(NUM_BINS))
        return {k: torch.cat(v).double().cpu().numpy() for k, v in out.items() if v}

    def predict_log_proba(self, X: Any) -> np.ndarray:
        """Log class probabilities ``(n_samples, n_classes)``, columns in ``classes_`` order."""
        logits = torch.from_numpy(self._evaluate(X, logits=True)["logits"])
        return logits.log_softmax(dim=1).numpy()

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities ``(n_samples, n_classes)``, columns in ``classes_`` order."""
        return np.exp(self.predict_log_proba(X))

    def decision_function(self, X: Any) -> np.ndarray:
        """The head's logits ``(n_samples, n_classes)``; for two classes ``logit_1 - logit_0``
        ``(n_samples,)`` (positive means ``classes_[1]``), scikit-learn's binary convention."""
        logits = self._evaluate(X, logits=True)["logits"]
        if logits.shape[1] == 2:
            return logits[:, 1] - logits[:, 0]
        if logits.shape[1] == 1:
            return np.zeros(len(logits))
        return logits

    def predict(self, X: Any) -> np.ndarray:
        """The most probable class label of every example."""
        logits = self._evaluate(X, logits=True)["logits"]
        return self.classes_[logits.argmax(axis=1)]

    def transform(self, X: Any) -> np.ndarray:
        """Embeddings: the head's input, the latent ``z`` flattened ``(n_samples, C*H*W)`` or
        pooled (``pooled=True``), with midpoint dequantisation (deterministic)."""
        return self._evaluate(X, features=True)["features"]

    def score_samples(self, X: Any) -> np.ndarray:
        """Per-example log-likelihood in nats of the 8-bit image the example becomes (higher =
        more typical; ``-score / (n_features_in_ * ln 2)`` is bits/dim). One fixed draw of the
        dequantisation noise, shared by all examples, keeps it deterministic. For min-max scaled
        input it is the density of the quantised values: the constant log-Jacobian of the
        scaling is not added, so compare scores of one fitted estimator only."""
        return self._evaluate(X, log_prob=True)["log_prob"]

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """Accuracy on the labelled examples of ``(X, y)`` (entries equal to ``unlabelled`` are
        skipped); a label not seen at fit raises ``ValueError``."""
        check_is_fitted(self)
        y = check_array(column_or_1d(y, warn=True), ensure_2d=False, dtype=None, input_name="y")
        keep = ~self._unlabelled_mask(y)
        if not keep.any():
            raise ValueError("y holds no labelled examples to score")
        self._encode(y[keep], what="y")
        predicted = self.predict(X)
        check_consistent_length(predicted, y)
        weights = None if sample_weight is None else np.asarray(sample_weight)[keep]
        return float(accuracy_score(y[keep], predicted[keep], sample_weight=weights))

    # ------------------------------------------------------------------ pickling
    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        model = state.get("model_")
        if model is not None and any(p.device.type != "cpu" for p in model.parameters()):
            # Pickles load on machines without the training GPU; prediction moves it back.
            state = dict(state, model_=copy.deepcopy(model).cpu())
        return state


def _both_numbers(a: Any, b: Any) -> bool:
    return all(isinstance(v, numbers.Number) and not isinstance(v, bool) for v in (a, b))


@contextlib.contextmanager
def _preserved_global_rng(device: torch.device | None = None) -> Iterator[None]:
    """Restore Python's, NumPy's and torch's global RNG states afterwards: training reseeds them,
    and an estimator must not change the caller's random streams."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    devices = [device] if device is not None and device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


def expected_failed_checks(estimator: BaseEstimator) -> dict[str, str]:
    """scikit-learn checks :class:`HybridFlowClassifier` is known to fail, with the reason; pass as
    ``parametrize_with_checks(..., expected_failed_checks=expected_failed_checks)`` or
    ``check_estimator(est, expected_failed_checks=expected_failed_checks(est))``."""
    if not isinstance(estimator, HybridFlowClassifier) or estimator.unlabelled is None:
        return {}
    return {
        "check_classifiers_classes": (
            "uses -1 as a class label, but -1 marks unlabelled examples (scikit-learn's semi-supervised "
            "convention, the default unlabelled=-1); passes with unlabelled=None"),
    }
