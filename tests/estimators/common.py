"""Helpers shared by the estimator tests: a classifier small enough for scikit-learn's checks."""

from __future__ import annotations

from hybridflow.estimators import HybridFlowClassifier

__all__ = ["TINY", "tiny"]

TINY = dict(num_layers=1, hidden=8, steps=1)  # one mixer layer: every fit here takes well under a second


def tiny(**params) -> HybridFlowClassifier:
    """A classifier small and quick enough for scikit-learn's checks (about 15 ms a step)."""
    return HybridFlowClassifier(**{**dict(backbone_kwargs=TINY, steps=30, lr=5e-2, device="cpu", random_state=0),
                                   **params})
