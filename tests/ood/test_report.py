"""The OOD workflow (hybridflow.ood.report): score_ood's metrics are scikit-learn's on the scorers'
own scores, and ood_report runs it on a saved run."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from hybridflow.data import DataSpec, load_ood_data, noise_images
from hybridflow.factory import build_model
from hybridflow.ood import OODReport, create_scorer, evaluate, ood_report, score_ood
from hybridflow.runs import load_model, write_run_file
from hybridflow.training import TrainConfig, save_checkpoint, train

OPTIONS = dict(patch_size=2, num_layers=1, hidden=12, steps=1)


@pytest.fixture(scope="module")
def model():
    data = DataSpec("digits", limit=256).load(train=True)
    hybrid = build_model("mixerflow_tiny", (1, 8, 8), 10, 1.0, OPTIONS, seed=0)
    train(hybrid, data, TrainConfig(steps=3, batch_size=32, progress=False, device="cpu"))
    return hybrid


@pytest.fixture(scope="module")
def images():
    digits = DataSpec("digits", limit=60).load(train=False).images
    return digits, noise_images(50, (1, 8, 8), seed=1).images


def test_auroc_is_sklearns_on_the_scorers_scores(model, images):
    x_in, x_out = images
    report = score_ood(model, x_in, x_out, ["bpd", "max_softmax"])
    assert list(report.metrics) == ["bpd", "max_softmax"] and (report.n_in, report.n_out) == (60, 50)
    for name, scored in (("bpd", model.backbone), ("max_softmax", model)):
        scorer = create_scorer(name, scored)
        s_in, s_out = scorer(x_in), scorer(x_out)
        np.testing.assert_allclose(report.scores[name][0], s_in, rtol=1e-6)
        np.testing.assert_allclose(report.scores[name][1], s_out, rtol=1e-6)
        labels = np.r_[np.ones(len(s_in)), np.zeros(len(s_out))]
        assert report.metrics[name]["auroc"] == pytest.approx(roc_auc_score(labels, np.r_[s_in, s_out]), abs=1e-9)
        assert report.metrics[name] == pytest.approx(evaluate(*report.scores[name]))
    assert report.metrics["bpd"]["auroc"] > 0.9  # noise is far less likely than digits, even after 3 steps


def test_typicality_fits_and_a_model_against_itself_is_chance(model, images):
    x_in, x_out = images
    fit = DataSpec("digits", limit=100).load(train=True).images
    report = score_ood(model, x_in, x_out, ["typicality", "likelihood_ratio"], reference=model, fit_images=fit)
    expected = create_scorer("typicality", model.backbone).fit(fit)(x_in)
    np.testing.assert_allclose(report.scores["typicality"][0], expected, rtol=1e-6)
    assert report.metrics["likelihood_ratio"]["auroc"] == pytest.approx(0.5)
    assert np.allclose(report.scores["likelihood_ratio"][0], 0.0, atol=1e-3)


def test_ood_report_from_a_run(model, tmp_path):
    save_checkpoint(model, tmp_path / "run" / "checkpoints" / "step-000000003")
    write_run_file(tmp_path / "run", dict(data=DataSpec("digits").to_dict()))
    roc, hist = tmp_path / "roc.png", tmp_path / "hist.png"
    report = ood_report(tmp_path / "run", "inverted", scorers=["loglik", "entropy"], limit=40, roc_path=roc,
                        hist_path=hist, device="cpu")
    assert isinstance(report, OODReport) and (report.n_in, report.n_out) == (40, 40)
    assert report.in_data == "digits" and report.out_data == "inverted" and report.checkpoint.endswith("step-000000003")
    assert report.plots == {"roc": str(roc), "hist": str(hist)} and roc.stat().st_size > 1000
    # the same numbers as score_ood on the loaded model and the same two sets
    spec = DataSpec("digits", limit=40)
    x_in = spec.load(train=False)
    x_out = load_ood_data("inverted", spec, x_in)
    direct = score_ood(load_model(tmp_path / "run", "cpu")[0], x_in.images, x_out.images, ["loglik", "entropy"])
    assert report.metrics == direct.metrics
    assert list(report.as_dict()) == ["in_data", "out_data", "checkpoint", "metrics", "plots", "in_classes", "out_classes"]
