"""`hybridflow explain`: heat-maps, completeness, and its mistakes."""

from __future__ import annotations

import json

from tests.cli.runner import one_line_error, run


def test_explain_writes_heatmaps_and_checks_completeness(trained, tmp_path):
    path = tmp_path / "explain.png"
    payload = json.loads(run("explain", "-c", trained, "--index", "2", "--method", "ig,saliency,gradshap",
                             "--ig-steps", "16", "--out", path, "--json").stdout)
    assert path.stat().st_size > 1000 and payload["path"] == str(path)
    rows = payload["attributions"]
    assert len(rows) == 6  # 3 methods x (predicted class, nll)
    for row in rows:
        if row["method"] == "ig":
            assert abs(row["completeness_error"]) <= 1e-2 * max(1.0, abs(row["value"] - row["baseline_value"]))
    text = run("explain", "-c", trained, "--target", "nll", "--baseline", "blur", "--out", path).stdout
    assert "Integrated Gradients: nll" in text and "heat-maps ->" in text


def test_index_and_method_mistakes(trained):
    assert "out of range" in one_line_error(run("explain", "-c", trained, "--index", "100000", code=2))
    assert "unknown attribution method" in one_line_error(run("explain", "-c", trained, "--method", "lime", code=2))


def test_a_density_model_explains_its_likelihood_only(tmp_path):
    from tests.cli.runner import TINY

    density = tmp_path / "density"
    run("train", "--steps", "2", "--lam", "0", "--out", density, "-q", "--no-plot", *TINY)
    path = tmp_path / "explain.png"
    payload = json.loads(run("explain", "-c", density, "--method", "saliency", "--out", path, "--json").stdout)
    assert [row["target"] for row in payload["attributions"]] == ["nll"]  # no map of the untrained head
    title = run("explain", "-c", density, "--method", "saliency", "--out", path).stdout.splitlines()[0]
    assert "predicted" not in title and title.endswith("bits/dim")
    refused = one_line_error(run("explain", "-c", density, "--target", "predicted", "--out", path, code=2))
    assert "lam 0" in refused and "--target nll" in refused
