r"""scikit-learn estimators over the hybrid model: :class:`HybridFlowClassifier`.

One normalising flow gives a classifier (``predict``, ``predict_proba``), a density
(``score_samples``, log-likelihood in nats), an embedding (``transform``) and, from the two, one
call for "which class, and is this input in distribution at all" (``predict_or_reject``). It trains with
:func:`hybridflow.training.train` on the joint objective of :mod:`hybridflow.hybrid`; examples
labelled ``-1`` (scikit-learn's semi-supervised convention) train the density only.

Modules: :mod:`~hybridflow.estimators.classifier` (the estimator), :mod:`~.inputs` (validating
``X`` and ``y``), :mod:`~.scaling` (values to pixels), :mod:`~.labels` (label encoding),
:mod:`~.fitting` (building and training the model), :mod:`~.inference` (the evaluation every
prediction goes through), :mod:`~.reject` (OOD scores and the reject option), :mod:`~.calibration`
(expected calibration error), :mod:`~.checks` (scikit-learn's known check failures).

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
Float pixels keep the range fit saw (``pixel_floats_``: 0-1 or 0..255), so an image of only 0.0
and 1.0 reads the same alone and in any batch; booleans read as black and white (0 and 255).

Example:
    >>> from sklearn.datasets import load_digits
    >>> X, y = load_digits(return_X_y=True)               # (1797, 64): 8x8 images, values 0..16
    >>> clf = HybridFlowClassifier(backbone_kwargs=dict(patch_size=2, num_layers=1, hidden=8, steps=1),
    ...                            steps=20, device="cpu", random_state=0).fit(X[:200], y[:200])
    >>> clf.image_shape_, clf.predict_proba(X[:3]).shape, clf.score_samples(X[:3]).shape
    ((1, 8, 8), (3, 10), (3,))
"""

from .calibration import expected_calibration_error
from .checks import expected_failed_checks
from .classifier import DEFAULT_STEPS, HybridFlowClassifier
from .labels import encode_labels, learn_classes, unlabelled_mask
from .reject import OOD_SCORERS, REJECT_FIT_SAMPLES, ood_scores
from .scaling import SCALINGS, PixelScaling

__all__ = ["HybridFlowClassifier", "expected_failed_checks", "DEFAULT_STEPS", "PixelScaling", "SCALINGS",
           "learn_classes", "encode_labels", "unlabelled_mask", "expected_calibration_error", "OOD_SCORERS",
           "REJECT_FIT_SAMPLES", "ood_scores"]
