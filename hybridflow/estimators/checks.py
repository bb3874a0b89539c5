r"""scikit-learn's estimator checks that :class:`HybridFlowClassifier` is known to fail, with why.

Example:
    >>> from hybridflow.estimators import HybridFlowClassifier
    >>> list(expected_failed_checks(HybridFlowClassifier()))
    ['check_classifiers_classes']
    >>> expected_failed_checks(HybridFlowClassifier(unlabelled=None))
    {}
"""

from __future__ import annotations

from sklearn.base import BaseEstimator

from .classifier import HybridFlowClassifier

__all__ = ["expected_failed_checks"]


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
