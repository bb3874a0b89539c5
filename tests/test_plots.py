"""The OOD figures of hybridflow.plots: one implementation each, reached from evaluate(plot=...)."""

from __future__ import annotations

import numpy as np

from hybridflow.ood import evaluate
from hybridflow.plots import plot_roc, plot_roc_curves, plot_score_histogram, plot_score_histograms


def test_plots(tmp_path):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rng = np.random.default_rng(0)
    s_in, s_out = rng.normal(1, 1, 50), rng.normal(0, 1, 50)
    evaluate(s_in, s_out, plot=tmp_path / "roc.png")
    assert (tmp_path / "roc.png").stat().st_size > 0
    figure = Figure()
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    evaluate(s_in, s_out, plot=ax)
    assert len(ax.lines) >= 2
    plot_score_histogram(s_in, s_out, path=tmp_path / "hist.png")
    assert (tmp_path / "hist.png").stat().st_size > 0


def new_axes():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure()
    FigureCanvasAgg(figure)
    return figure.add_subplot()


def test_roc_curve_is_oriented_by_higher_is_inlier(tmp_path):
    inliers, outliers = np.arange(10.0, 20.0), np.arange(0.0, 10.0)
    ax = plot_roc(outliers, inliers, higher_is_inlier=False, ax=new_axes(), label="bpd")
    assert ax.get_legend().get_texts()[0].get_text() == "bpd AUROC 1.000"
    fpr, tpr = ax.lines[0].get_data()
    assert tpr[np.searchsorted(fpr, 0.0, side="right") - 1] == 1.0  # every inlier before any outlier
    path = plot_roc_curves({"a": (inliers, outliers), "b": (outliers, inliers)}, tmp_path / "sub" / "roc.png")
    assert path.stat().st_size > 1000


def test_histogram_clips_long_tails_into_the_edge_bins(tmp_path):
    rng = np.random.default_rng(0)
    s_in, s_out = np.r_[rng.normal(0, 1, 500), -1e6], rng.normal(1, 1, 500)
    ax = plot_score_histogram(s_in, s_out, ax=new_axes(), clip=(2.0, 99.8))
    lo = np.percentile(np.r_[s_in, s_out], 2.0)
    assert min(patch.get_x() for patch in ax.patches) >= lo - 1e-9
    assert "clipped to percentiles 2-99.8" in ax.get_xlabel()
    full = plot_score_histogram(s_in, s_out, ax=new_axes())
    assert min(patch.get_x() for patch in full.patches) <= -1e6
    assert plot_score_histograms({"x": (s_in, s_out)}, tmp_path / "h.png").stat().st_size > 1000
