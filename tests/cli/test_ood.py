"""`hybridflow ood`: the metrics table, JSON, plots, scorers and their mistakes."""

from __future__ import annotations

import json
import warnings

import pytest

from tests.cli.runner import TINY, one_line_error, run


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


def _ood_recipe(tmp_path, body: str, name: str = "tiny_ood.toml"):
    path = tmp_path / name
    path.write_text('# a test OOD recipe\nkind = "ood"\nreproduces = "nothing"\npaper_result = "none"\n' + body)
    return path


def test_ood_recipe_runs_end_to_end_and_options_override_it(trained, tmp_path):
    recipe = _ood_recipe(tmp_path, f'in_data = "digits"\nout_data = "noise"\n'
                                   f'scores = ["loglik", "bpd", "likelihood_ratio", "max_softmax"]\n'
                                   f'reference = "{trained}"\n[paper]\nlimit = 1000\n'
                                   f'[cpu]\ncheckpoint = "{trained}"\nlimit = 40\n')
    payload = json.loads(run("ood", "--recipe", recipe, "--json").stdout)
    assert list(payload["metrics"]) == ["loglik", "bpd", "likelihood_ratio", "max_softmax"]
    assert (payload["in_data"], payload["out_data"]) == ("digits", "noise")
    assert payload["metrics"]["likelihood_ratio"]["auroc"] == pytest.approx(0.5)  # the model against itself
    assert payload["metrics"]["loglik"]["auroc"] > 0.9  # noise is far less likely than digits, even after 4 steps
    # explicit options win over the recipe: the scorers, the out-data, the number of images
    text = run("ood", "--recipe", recipe, "--score", "bpd", "--out-data", "inverted", "--limit", "30").stdout
    assert text.splitlines()[0].startswith("in: digits test (30), out: inverted (30)")
    assert [line.split()[0] for line in text.splitlines()[2:]] == ["bpd"]


def test_ood_recipe_mistakes_are_one_line_errors(trained, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # the run the recipe scores is not trained yet: the error names the command that trains it
    recipe = _ood_recipe(tmp_path, 'out_data = "noise"\nscores = ["loglik"]\n[cpu]\ntrain_recipe = "mnist_density"\n')
    assert "train it first with `hybridflow train --recipe mnist_density --scale cpu`" in \
        one_line_error(run("ood", "--recipe", recipe, code=2))
    assert "is an ood recipe: run it with `hybridflow ood --recipe tiny_ood`" in \
        one_line_error(run("train", "--recipe", recipe, code=2))
    assert "is a train recipe: run it with `hybridflow train --recipe mnist_density`" in \
        one_line_error(run("ood", "--recipe", "mnist_density", code=2))
    bad = _ood_recipe(tmp_path, f'out_data = "noise"\nscores = ["loglik", "lofi"]\n[cpu]\ncheckpoint = "{trained}"\n',
                      "bad.toml")
    assert "unknown scorer(s) ['lofi']" in one_line_error(run("ood", "--recipe", bad, code=1))
    assert "--checkpoint and --out-data needed (or --recipe NAME" in one_line_error(run("ood", code=2))


def test_classifier_scorers_refuse_a_pure_flow(tmp_path):
    """A lam = 0 model's head never trained: max_softmax on it would print metrics of a constant."""
    out = tmp_path / "flow"
    run("train", "--steps", "2", "--lam", "0", "--out", out, "-q", *TINY)
    error = one_line_error(run("ood", "-c", out, "--out-data", "noise", "--score", "loglik,max_softmax", code=1))
    assert "max_softmax read(s) the classifier head, but this model was trained with lam=0" in error


def test_in_and_out_classes_pick_the_two_sets(trained, tmp_path):
    """Digits 0-4 against 5-9 of the same dataset: without --out-classes the run's classes would carry
    over to the out set."""
    payload = json.loads(run("ood", "-c", trained, "--in-classes", "0-4", "--out-data", "digits", "--out-classes",
                             "5,6,7,8,9", "--score", "bpd", "--json").stdout)
    assert (payload["in_classes"], payload["out_classes"]) == ([0, 1, 2, 3, 4], [5, 6, 7, 8, 9])
    assert payload["metrics"]["bpd"]["n_in"] == 226 and payload["metrics"]["bpd"]["n_out"] == 224
    text = run("ood", "-c", trained, "--in-classes", "0-4", "--out-data", "digits", "--out-classes", "5-9",
               "--score", "bpd").stdout
    assert text.splitlines()[0].startswith("in: digits classes 0-4 test (226), out: digits classes 5-9 (224)")
    recipe = _ood_recipe(tmp_path, f'checkpoint = "{trained}"\nin_data = "digits"\nin_classes = [0, 1]\n'
                                   f'out_data = "digits"\nout_classes = "8-9"\nscores = ["bpd"]\n[paper]\n[cpu]\n')
    payload = json.loads(run("ood", "--recipe", recipe, "--json").stdout)
    assert (payload["in_classes"], payload["out_classes"]) == ([0, 1], [8, 9])
    payload = json.loads(run("ood", "--recipe", recipe, "--out-classes", "7", "--json").stdout)  # the option wins
    assert payload["out_classes"] == [7] and payload["metrics"]["bpd"]["n_out"] == 45
    assert "no class 12" in one_line_error(run("ood", "-c", trained, "--out-data", "digits", "--out-classes", "12",
                                               code=2))
    assert "'x' is not a class label" in run("ood", "-c", trained, "--out-data", "digits", "--in-classes", "x",
                                             code=2).stderr


def test_a_reference_trained_on_patches_scores_as_a_bag_of_patches(trained, tmp_path):
    reference = tmp_path / "patches"
    run("train", "--patches", "4", "--lam", "0", "--steps", "3", "--out", reference, "-q", *TINY)
    payload = json.loads(run("ood", "-c", trained, "--out-data", "noise", "--score", "likelihood_ratio",
                             "--reference", reference, "--limit", "50", "--json").stdout)
    assert 0 <= payload["metrics"]["likelihood_ratio"]["auroc"] <= 1
    # eval --limit counts images: 20 digits of 8x8 are 80 patches of 4x4, and both counts are said
    figures = json.loads(run("eval", "-c", reference, "--limit", "20", "--json").stdout)
    assert (figures["num_images"], figures["num_examples"], figures["patches"]) == (20, 80, 4)
    assert "(20 images as 80 4x4 patches)" in run("eval", "-c", reference, "--limit", "20").stdout
    refused = run("train", "--patches", "3", "--steps", "1", "--out", tmp_path / "bad", "-q", *TINY, code=2)
    assert "patch size 3 must be a positive integer dividing the image size 8x8" in one_line_error(refused)


def test_out_data_that_holds_the_in_distribution_test_images_is_named(trained):
    with pytest.warns(UserWarning, match=r"20 of the 20 out-of-distribution images \(digits\) are also among the "
                                         r"in-distribution test images"):
        payload = json.loads(run("ood", "-c", trained, "--out-data", "digits", "--score", "bpd", "--limit", "20",
                                 "--json").stdout)
    assert payload["metrics"]["bpd"]["auroc"] == pytest.approx(0.5)  # the same images on both sides
    with pytest.warns(UserWarning, match="45 of the 45 out-of-distribution"):  # the 7s are in-distribution too
        run("ood", "-c", trained, "--out-data", "digits", "--out-classes", "7", "--score", "bpd")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # disjoint classes: nothing to say
        run("ood", "-c", trained, "--in-classes", "0-4", "--out-data", "digits", "--out-classes", "5-9",
            "--score", "bpd")
