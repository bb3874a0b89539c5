r"""The scikit-learn classifier over the hybrid model: :class:`HybridFlowClassifier`.

It glues scikit-learn's conventions (parameter constraints, fitted attributes, ``partial_fit``,
pickling) to the pieces beside it: :mod:`~hybridflow.estimators.inputs` validates ``X`` and ``y``
(:mod:`~hybridflow.estimators.scaling` turns ``X`` into pixels, :mod:`~hybridflow.estimators.labels`
encodes ``y``), :mod:`~hybridflow.estimators.fitting` builds and trains the model,
:mod:`~hybridflow.estimators.inference` evaluates it and :mod:`~hybridflow.estimators.reject` adds
OOD scores and the reject option. :meth:`HybridFlowClassifier.from_model` wraps a trained model
(``"pretrained:mnist-hybrid"`` too) without training.
"""

from __future__ import annotations

import copy
from numbers import Integral, Real
from typing import Any, Sequence

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.metrics import accuracy_score
from sklearn.utils import check_array, check_consistent_length, check_random_state, column_or_1d
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted
from torch import Tensor

from ..backbones.density import parameter_dtype_device
from ..data import check_image_shape
from ..hybrid import HEAD_INPUTS
from ..training import TrainConfig, resolve_device
from .fitting import build_classifier_model, default_threads, thread_limit, train_model
from .inference import INFERENCE_DTYPES, build_inference_model, model_outputs
from .labels import encode_labels, unlabelled_mask
from .inputs import ImageInputMixin
from .reject import OOD_SCORERS, RejectOptionMixin
from .scaling import SCALINGS

__all__ = ["HybridFlowClassifier", "DEFAULT_STEPS"]

#: Training steps of ``fit`` when neither ``steps`` nor ``epochs`` is given.
DEFAULT_STEPS = 200
# TrainConfig fields the estimator sets itself from its own parameters.
_OWN_TRAIN_FIELDS = ("steps", "epochs", "batch_size", "lr", "seed", "device", "progress")


class HybridFlowClassifier(ImageInputMixin, RejectOptionMixin, ClassNamePrefixFeaturesOutMixin, ClassifierMixin,
                           TransformerMixin, BaseEstimator):
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
        pooled: put the head on the latent averaged over positions (``head_input="pooled"``).
        head_input: ``"latent"``, ``"pooled"`` or ``"hidden"`` (conditioners' hidden units): what the
            head, and :meth:`transform`, read (:class:`~hybridflow.HybridModel`); ``None``: ``pooled``.
        unlabelled: the label that marks unlabelled examples (-1 by scikit-learn's convention;
            a string such as ``"?"`` for string labels); ``None``: every label is a class.
        inference_dtype: ``"float64"`` (default) evaluates a float64 copy of the model, so a
            prediction does not depend on the rest of the batch even in the last bits (what
            scikit-learn's checks demand); ``"float32"`` is faster on GPUs.
        train_kwargs: further :class:`~hybridflow.training.TrainConfig` fields (``warmup_steps``,
            ``grad_clip``, ``ema_decay``, ``out_dir`` for checkpoints and a metrics log, ...).
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        num_threads: torch threads for ``fit`` and predictions (``None``: ``$HYBRIDFLOW_THREADS``
            if set, else torch's count capped at half the cores: see
            :func:`~hybridflow.estimators.fitting.default_threads`); torch's global count is
            restored after each call.
        random_state: seeds the initial weights, the data order and the dequantisation noise
            (``None``: seeds drawn from NumPy's global RNG, scikit-learn's convention). Training
            leaves the caller's global RNG states as they were.
        verbose: show a progress bar while training.
        ood_scorer: how :meth:`ood_score` and :meth:`predict_or_reject` score inputs, one of
            ``"loglik"``, ``"typicality"``, ``"complexity"`` (see :mod:`~hybridflow.estimators.reject`).
        reject_quantile: fraction of in-distribution images :meth:`predict_or_reject` rejects: the
            threshold ``reject_threshold_`` is that quantile of their OOD scores, set by ``fit`` on
            the training images and by :meth:`fit_reject` on any in-distribution images.

    Each ``fit``/``partial_fit`` call is one :func:`~hybridflow.training.train` run: a fresh Adam
    and learning-rate schedule on the current weights (``partial_fit`` = one pass over its
    data, as scikit-learn's incremental estimators do). Meta-estimators that validate ``X`` as
    2-D themselves (``SelfTrainingClassifier``) need flattened ``(N, C*H*W)`` images.

    Attributes:
        classes_: the class labels, sorted (any hashable labels, strings too).
        n_features_in_: ``C * H * W``.
        image_shape_: ``(C, H, W)`` the flow models.
        scaling_: ``"pixels"`` (floats read in ``pixel_floats_``, the range fit saw), ``"feature"`` or ``"global"``.
        offset_, scale_: the min-max map ``pixel = (x - offset_) * scale_`` (``None`` for pixels).
        model_: the trained :class:`~hybridflow.hybrid.HybridModel` (float32; on ``device``, or
            the CPU after unpickling).
        inference_model_: the weight-owning inference copy of ``model_`` (:func:`hybridflow.freeze`,
            in ``inference_dtype``) that every prediction and score comes from; rebuilt after
            each ``fit`` and ``partial_fit``.
        n_iter_: optimisation steps the model has had, over all ``fit``/``partial_fit`` calls.
        history_: the training log entries (``total_step`` counts across calls).
        reject_threshold_, reject_scorer_, ood_nll_mean_: the reject option's threshold, the
            ``ood_scorer`` it was fitted for and the calibration images' mean NLL in nats.

    Example:
        >>> from hybridflow.data import load_digits_data
        >>> data = load_digits_data()
        >>> X, y = data.images[:300].numpy(), np.array(data.classes)[data.labels[:300]]
        >>> clf = HybridFlowClassifier(backbone_kwargs=dict(patch_size=2, num_layers=1, hidden=8, steps=1),
        ...                            steps=10, device="cpu", random_state=0).fit(X, y)
        >>> clf.classes_[:3].tolist(), clf.transform(X[:2]).shape
        (['0', '1', '2'], (2, 64))
        >>> noise = np.random.default_rng(0).integers(0, 256, (2, 1, 8, 8), dtype=np.uint8)
        >>> rejected = clf.predict_or_reject(np.concatenate([X[:2], noise])) == -1  # -1: not a digit at all
        >>> rejected.tolist()
        [False, False, True, True]
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
        pooled: bool = False, head_input: str | None = None,
        unlabelled: Any = -1,
        inference_dtype: str = "float64",
        train_kwargs: dict[str, Any] | None = None,
        device: str = "auto",
        random_state: int | np.random.RandomState | None = None,
        verbose: bool = False,
        num_threads: int | None = None,
        ood_scorer: str = "loglik",
        reject_quantile: float = 0.05,
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
        self.pooled, self.head_input = pooled, head_input
        self.unlabelled = unlabelled
        self.inference_dtype = inference_dtype
        self.train_kwargs = train_kwargs
        self.device = device
        self.random_state = random_state
        self.verbose = verbose
        self.num_threads = num_threads
        self.ood_scorer = ood_scorer
        self.reject_quantile = reject_quantile

    _parameter_constraints: dict = {
        "backbone": [str], "backbone_kwargs": [None, dict], "lam": [Interval(Real, 0, None, closed="left")],
        "steps": [None, Interval(Integral, 1, None, closed="left")],
        "epochs": [None, Interval(Integral, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 2, None, closed="left")],  # the conditioners' BatchNorm needs 2
        "lr": [Interval(Real, 0, None, closed="neither")], "warm_start": ["boolean"],
        "image_shape": [None, tuple, list], "scaling": [StrOptions(set(SCALINGS))], "pooled": ["boolean"],
        "head_input": [None, StrOptions(set(HEAD_INPUTS))],
        "unlabelled": "no_validation",  # any hashable label, or None
        "inference_dtype": [StrOptions(set(INFERENCE_DTYPES))], "train_kwargs": [None, dict],
        "device": [str, torch.device], "random_state": ["random_state"], "verbose": ["verbose"],
        "num_threads": [None, Interval(Integral, 1, None, closed="left")],
        "ood_scorer": [StrOptions(set(OOD_SCORERS))], "reject_quantile": [Interval(Real, 0, 1, closed="left")],
    }

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

    @classmethod
    def from_model(cls, model: Any, classes: Sequence[Any] | None = None, X_fit: Any = None,
                   **params: Any) -> HybridFlowClassifier:
        """A fitted classifier around a copy of a trained :class:`~hybridflow.hybrid.HybridModel`
        (or ``"pretrained:<name>"``), no training: pixel input of the model's shape, ``classes``
        (sorted, default ``0..K-1``) in the head's order; ``X_fit`` (in-distribution images) sets
        the reject threshold (:meth:`fit_reject`). ``params`` are constructor arguments; the
        architecture's (``backbone``, ``backbone_kwargs``, ``lam``, ``head_input``) come from the model.

        Example:
            >>> clf = HybridFlowClassifier.from_model("pretrained:mnist-hybrid", device="cpu")
            >>> clf.image_shape_, clf.classes_[:3].tolist(), clf.predict(np.zeros((1, 28, 28), np.uint8)).shape
            ((1, 28, 28), [0, 1, 2], (1,))
        """
        from ..pretrained import named_model  # lazily: the shipped weights are needed here only

        model = named_model(model)
        options = getattr(getattr(model, "backbone", None), "config", None)
        if not hasattr(model, "head") or options is None:
            raise TypeError(f"from_model needs a HybridModel whose backbone was built by create_backbone, "
                            f"got {type(model).__name__}")
        options = {k: v for k, v in options.items() if k != "input_shape"}
        clf = cls(backbone=model.backbone.name, backbone_kwargs=options, lam=model.lam, pooled=model.pooled,
                  head_input=getattr(model, "head_input", None), **params)
        clf._check_params()
        labels = np.arange(model.num_classes) if classes is None else np.asarray(classes)
        if labels.shape != (model.num_classes,) or not np.array_equal(np.unique(labels), labels):
            raise ValueError(f"classes must be {model.num_classes} distinct labels in sorted order (the head's "
                             f"outputs), got {labels.tolist()}")
        clf.model_, clf.classes_, clf.n_iter_, clf.history_ = copy.deepcopy(model).eval(), labels, 0, []
        clf._pixel_input(model.input_shape)
        return clf.fit_reject(X_fit) if X_fit is not None else clf

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "model_")

    def _forget(self) -> None:
        # A refit that fails half-way must not leave the old model beside new shapes or classes.
        for name in [k for k in vars(self) if k.endswith("_") and not k.startswith("_")]:
            delattr(self, name)

    def _check_params(self) -> None:
        """scikit-learn's parameter validation, then what a constraint cannot say."""
        self._validate_params()
        if self.backbone_kwargs is not None and "input_shape" in self.backbone_kwargs:
            raise ValueError("backbone_kwargs must not set input_shape: it comes from X "
                             "(use image_shape for flattened input)")
        if self.image_shape is not None:
            check_image_shape(self.image_shape)
        default_threads(self.num_threads)  # refuses a bad $HYBRIDFLOW_THREADS before any work
        clash = sorted(set(self.train_kwargs or {}) & set(_OWN_TRAIN_FIELDS))
        if clash:
            raise ValueError(f"train_kwargs must not set {clash}: use the estimator's own parameters")

    # ------------------------------------------------------------------ training
    def _base_seed(self) -> int:
        return int(check_random_state(self.random_state).randint(2**31 - 1))

    def _new_model(self) -> None:
        self.model_ = build_classifier_model(self.backbone, len(self.classes_), self.image_shape_,
                                             seed=self._base_seed(), lam=self.lam, pooled=self.pooled,
                                             head_input=self.head_input, backbone_kwargs=self.backbone_kwargs)
        self.n_iter_ = 0
        self.history_ = []

    def _train(self, images: Tensor, labels: Tensor, steps: int | None, epochs: int | None) -> None:
        if len(images) < 2:
            raise ValueError(f"{type(self).__name__} needs at least 2 samples to train (BatchNorm), "
                             f"got n_samples={len(images)}")
        # Seeds differ from call to call (through n_iter_), so continued training sees new noise.
        seed = int(np.random.SeedSequence([self._base_seed(), self.n_iter_]).generate_state(1)[0] >> 1)
        config = TrainConfig(steps=steps, epochs=epochs, batch_size=int(self.batch_size), lr=float(self.lr),
                             seed=seed, device=str(self.device), progress=bool(self.verbose),
                             **(self.train_kwargs or {}))
        self.inference_model_ = None  # even a fit that fails part-way must not leave the old copy answering
        result = train_model(self.model_, images, labels, config, num_threads=self.num_threads)
        # Predictions come from a weight-owning inference copy, made anew after every fit.
        self.inference_model_ = build_inference_model(self.model_, resolve_device(str(self.device)),
                                                      self.inference_dtype)
        self.history_ = list(self.history_) + [dict(entry, total_step=self.n_iter_ + entry["step"])
                                               for entry in result.history]
        self.n_iter_ += int(result.steps)
        # The weights moved: a threshold of the old ones would be stale, so recalibrate on this data.
        self._calibrate_reject(images, seed=seed)

    # ------------------------------------------------------------------ evaluation
    def _evaluate(self, X: Any, **outputs: bool) -> dict[str, np.ndarray]:
        """``logits`` / ``features`` / ``log_prob`` of ``X`` (see :func:`.inference.model_outputs`)."""
        check_is_fitted(self)
        return self._pixel_outputs(self._images(X, reset=False), **outputs)

    def _pixel_outputs(self, images: Tensor, **outputs: bool) -> dict[str, np.ndarray]:
        """The same of uint8 ``(N, C, H, W)`` pixel ``images`` (``X`` after :meth:`_images`)."""
        device, dtype = resolve_device(str(self.device)), INFERENCE_DTYPES.get(self.inference_dtype)
        held = getattr(self, "inference_model_", None)
        if held is None or parameter_dtype_device(held) != (dtype, device):  # unpickled, set_params, failed fit
            self.inference_model_ = build_inference_model(self.model_, device, self.inference_dtype)
        with thread_limit(self.num_threads):
            return model_outputs(self.inference_model_, images, batch_size=int(self.batch_size), **outputs)

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
        """Embeddings: the head's input (the latent flattened ``(n_samples, C*H*W)``, pooled, or the
        conditioners' hidden units; see ``head_input``), with midpoint dequantisation (deterministic)."""
        return self._evaluate(X, features=True)["features"]

    @property
    def _n_features_out(self) -> int:
        """Width of :meth:`transform`'s output (``get_feature_names_out`` names them
        ``hybridflowclassifier0``...)."""
        return self.model_.head.in_features

    def score_samples(self, X: Any) -> np.ndarray:
        """Per-example log-likelihood in nats of the 8-bit image the example becomes (higher =
        more typical; ``-score / (n_features_in_ * ln 2)`` is bits/dim). Each example's
        dequantisation noise is its own, seeded from its pixels and the backbone's ``eval_seed``, so
        a score is deterministic and independent of the batch. For min-max scaled
        input it is the density of the quantised values: the constant log-Jacobian of the
        scaling is not added, so compare scores of one fitted estimator only."""
        return self._evaluate(X, log_prob=True)["log_prob"]

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """Accuracy on the labelled examples of ``(X, y)`` (entries equal to ``unlabelled`` are
        skipped); a label not seen at fit raises ``ValueError``."""
        check_is_fitted(self)
        y = check_array(column_or_1d(y, warn=True), ensure_2d=False, dtype=None, input_name="y")
        keep = ~unlabelled_mask(y, self.unlabelled)
        if not keep.any():
            raise ValueError("y holds no labelled examples to score")
        encode_labels(y, self.classes_, self.unlabelled)  # refuses labels not seen at fit
        predicted = self.predict(X)
        weights = None if sample_weight is None else column_or_1d(sample_weight)
        check_consistent_length(predicted, y, weights)  # scikit-learn's message; None is skipped
        return float(accuracy_score(y[keep], predicted[keep], sample_weight=None if weights is None else weights[keep]))

    # ------------------------------------------------------------------ pickling
    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        # The inference copy is derived: pickles stay small and load anywhere; it is rebuilt on use.
        state.pop("inference_model_", None)
        model = state.get("model_")
        if model is not None and any(p.device.type != "cpu" for p in model.parameters()):
            # Pickles load on machines without the training GPU; prediction moves it back.
            state = dict(state, model_=copy.deepcopy(model).cpu())
        return state

