"""hybridflow.ood re-exports every public name of the former single module."""

from __future__ import annotations

import hybridflow.ood as ood
import hybridflow.plots as plots

FORMER_NAMES = [
    "evaluate", "plot_roc", "plot_score_histogram", "log_likelihood", "perturb", "compressed_bits_per_dim",
    "Scorer", "LogLikelihood", "BitsPerDim", "Typicality", "LikelihoodRatio", "Complexity",
    "MaxSoftmax", "PredictiveEntropy", "SCORERS", "create_scorer", "FlowDensity", "FlowOODDetector",
    "to_pytorch_ood",
]


def test_every_former_name_is_exported():
    assert set(FORMER_NAMES) <= set(ood.__all__)
    assert all(getattr(ood, name) is not None for name in FORMER_NAMES)


def test_the_figures_are_the_plots_modules():
    assert ood.plot_roc is plots.plot_roc and ood.plot_score_histogram is plots.plot_score_histogram
