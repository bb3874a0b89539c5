"""Out-of-distribution scoring with flows: scorers, a scikit-learn detector, metrics and a
pytorch-ood adapter.

Flows famously rate some OOD sets as *more* likely than their own data (a Fashion-MNIST flow
prefers MNIST), so raw log-likelihood is one scorer among several (:mod:`.scorers` lists them).
Every scorer returns "higher = more in-distribution" (scikit-learn's convention);
:func:`to_pytorch_ood` negates for pytorch-ood, whose detectors score outliers higher.

- :mod:`.likelihood`: the one place a model is evaluated over images (:func:`log_likelihood`),
- :mod:`.scorers`: the scorers and :func:`create_scorer`,
- :mod:`.patches`: :class:`PatchDensity`, the bag-of-patches reference of the likelihood ratio,
- :mod:`.metrics`: :func:`evaluate` (AUROC, AUPR-in, AUPR-out, FPR@95%TPR both ways, from scikit-learn),
- :mod:`.detector`: :class:`FlowDensity`, the scikit-learn outlier detector (images or tabular rows),
- :mod:`.tabular`: :class:`TabularFlow`, the flow over ``(N, D)`` features, and its weighted training,
- :mod:`.weights`: sample-weight validation and the weighted threshold,
- :mod:`.pytorch_ood`: :func:`to_pytorch_ood`.

The figures (:func:`plot_roc`, :func:`plot_score_histogram`) live in :mod:`hybridflow.plots`
and are re-exported here.

Example:
    >>> import numpy as np
    >>> from hybridflow.data import load_digits_data
    >>> data = load_digits_data()
    >>> detector = FlowDensity("mixerflow_tiny", {"patch_size": 2, "num_layers": 1, "hidden": 8},
    ...                        steps=3, random_state=0).fit(data.images[:200])
    >>> detector.predict(data.images[:5]).shape
    (5,)
    >>> metrics = evaluate(np.array([3.0, 2.0]), np.array([1.0, 0.0]))
    >>> metrics["auroc"], metrics["fpr_at_95_tpr_in"], metrics["fpr_at_95_tpr_out"]
    (1.0, 0.0, 0.0)
"""

from ..plots import plot_roc, plot_score_histogram
from .detector import TABULAR_SCORERS, FlowDensity
from .likelihood import log_likelihood
from .metrics import evaluate
from .pytorch_ood import FlowOODDetector, to_pytorch_ood
from .patches import PATCH_REFERENCE_OPTIONS, PatchDensity, fit_patch_reference, patch_reference_for
from .report import OODReport, ood_recipe_settings, ood_report, score_ood
from .tabular import FeatureMLP, TabularFlow, fit_tabular_flow, weighted_actnorm_init
from .weights import check_sample_weight, weighted_percentile
from .scorers import (
    SCORERS, BitsPerDim, Complexity, LikelihoodRatio, LogLikelihood, MaxSoftmax, PredictiveEntropy, Scorer,
    Typicality, compressed_bits_per_dim, create_scorer, perturb,
)

__all__ = [
    "evaluate", "plot_roc", "plot_score_histogram",
    "log_likelihood", "perturb", "compressed_bits_per_dim",
    "Scorer", "LogLikelihood", "BitsPerDim", "Typicality", "LikelihoodRatio", "Complexity",
    "MaxSoftmax", "PredictiveEntropy", "SCORERS", "create_scorer",
    "PatchDensity", "fit_patch_reference", "patch_reference_for", "PATCH_REFERENCE_OPTIONS",
    "FlowDensity", "FlowOODDetector", "to_pytorch_ood", "OODReport", "score_ood", "ood_report", "ood_recipe_settings",
    "TABULAR_SCORERS", "TabularFlow", "FeatureMLP", "fit_tabular_flow", "weighted_actnorm_init",
    "check_sample_weight", "weighted_percentile",
]
