"""`hybridflow ood`: the metrics table, JSON, plots, scorers and their mistakes."""

from __future__ import annotations

import json

import pytest

from tests.cli.runner import one_line_error, run


def test_ood_table_json_and_plots(trained, tmp_path):
    roc, hist = tmp_path / "roc.png", tmp_path / "hist.png"
    text = run("ood", "-c", trained, "--out-data", "noise", "--roc", roc, "--hist", hist, "--limit", "100").stdout
    assert text.splitlines()[1].split() == ["scorer", "AUROC", "AUPR-in", "AUPR-out", "FPR95-in",
                                             "FPR95-out"]
    assert roc.stat().st_size > 1000 and hist.stat().st_size > 1000
    payload = json.loads(run("ood", "-c", trained, "--out-data", "inverted", "--score", "loglik,bpd,max_softmax",
                             "--limit", "100", "--json").stdout)
    assert set(payload["metrics"]) == {"loglik", "bpd", "max_softmax"}
    for m in payload["metrics"].values():
        assert set(m) >= {"auroc", "aupr_in", "aupr_out", "fpr_at_95_tpr_in", "fpr_at_95_tpr_out"} and 0 <= m["auroc"] <= 1


def test_ood_likelihood_ratio_with_a_reference(trained):
    payload = json.loads(run("ood", "-c", trained, "--out-data", "noise", "--score", "likelihood_ratio",
                             "--reference", trained, "--limit", "50", "--json").stdout)
    assert payload["metrics"]["likelihood_ratio"]["auroc"] == pytest.approx(0.5)  # a model against itself


def test_scorer_and_dataset_mistakes(trained):
    assert "unknown scorer 'foo'" in one_line_error(run("ood", "-c", trained, "--out-data", "noise", "--score",
                                                        "loglik,foo", code=2))
    assert "--reference" in one_line_error(run("ood", "-c", trained, "--out-data", "noise", "--score",
                                               "likelihood_ratio", code=2))
    assert "unknown dataset" in one_line_error(run("ood", "-c", trained, "--out-data", "svhm", code=2))
