"""The benchmarks' smoke modes (bench/*.py --smoke) run end to end and write the JSON the renderer
reads, so the scripts behind BENCHMARKS.md never rot. Seconds in all: tiny models, a few steps.

Every script runs in this process (``main(argv)``), writing to a temporary folder; the density
run's models are reused by the embedding and OOD runs, as in bench/run_all.sh. The runs that take
seconds are marked ``slow`` (``pytest -m "not slow"`` skips them; CI runs them). The scripts are
imported by their file names: bench/ goes first on ``sys.path``.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]  # tests/bench/test_smoke.py -> the checkout
BENCH = ROOT / "bench"
sys.path.insert(0, str(BENCH))

import _common  # noqa: E402

DATA = Path(_common.default_data_root())
HAVE_DATA = _common.data_available(DATA, "mnist", "fashionmnist", "cifar10")
needs_data = pytest.mark.skipif(not HAVE_DATA, reason=f"benchmark data not found in {DATA}")
slow = pytest.mark.slow  # every script run: seconds each, minutes on a busy machine
HAVE_NORMFLOWS = __import__("_comparators").normflows_available()


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _argv(results, checkpoints, *extra):
    return ["--smoke", "--quiet", "--threads", "1", "--data-root", str(DATA), "--results-dir", str(results),
            "--checkpoint-dir", str(checkpoints), *extra]


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """The scripts set torch's thread count (and seeds) for the process: give the other tests theirs back."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """Every data-backed benchmark's smoke run, in run_all.sh's order; returns the results folder."""
    if not HAVE_DATA:
        pytest.skip(f"benchmark data not found in {DATA}")
    import density
    import embeddings
    import eval_noise
    import hybrid_frontier
    import hybrid_tradeoff
    import ood
    import permutations
    import time_to_quality

    results = tmp_path_factory.mktemp("results")
    checkpoints = tmp_path_factory.mktemp("checkpoints")
    density.main(_argv(results, checkpoints))
    permutations.main(_argv(results, checkpoints))
    embeddings.main(_argv(results, checkpoints, "--reuse"))
    hybrid_tradeoff.main(_argv(results, checkpoints))
    ood.main(_argv(results, checkpoints, "--reuse"))
    eval_noise.main(_argv(results, checkpoints))
    time_to_quality.main(_argv(results, checkpoints, "--models", "mixerflow_tiny", "glow_tiny"))
    hybrid_frontier.main(_argv(results, checkpoints))
    yield results
    _common._load_cached.cache_clear()  # the full MNIST / Fashion-MNIST arrays


def _load(results: Path, name: str) -> dict:
    record = json.loads((results / f"{name}.json").read_text())
    for key in ("command", "date", "machine", "settings", "git", "wall_seconds"):
        assert key in record, f"{name}.json lacks {key}"
    assert record["smoke"] is True
    assert record["command"].startswith(f"python bench/{name}.py")
    assert {"nproc", "torch", "threads"} <= set(record["machine"])
    return record


def _models() -> set[str]:
    return {"mixerflow_tiny", "glow_tiny"} | ({"normflows_glow"} if HAVE_NORMFLOWS else set())


@slow
@needs_data
def test_density(smoke):
    record = _load(smoke, "density")
    runs = record["runs"]
    assert {(r["dataset"], r["model"]) for r in runs} == {(d, m) for d in ("mnist", "fashionmnist") for m in _models()}
    for r in runs:
        assert _finite(r["test_bits_per_dim"]) and 0 < r["test_bits_per_dim"] < 20
        assert r["params"] > 0 and r["test_examples"] == 64
        assert r["train"]["steps"] == 5 and _finite(r["train"]["images_per_s"])
    for timing in record["throughput"].values():
        assert _finite(timing["train_img_s"]) and _finite(timing["log_prob_img_s"])
    assert "mixerflow_minus_glow" in record["summary"]["mnist"]


@slow
@needs_data
def test_permutations_reuse_the_density_baseline(smoke):
    record = _load(smoke, "permutations")
    assert {r["shuffle"] for r in record["runs"]} == {"none", "global", "local"}
    assert all("baseline_source" in r for r in record["runs"] if r["shuffle"] == "none")
    assert len(record["changes"]) == 2 * len(_models())
    for change in record["changes"]:
        assert _finite(change["delta_global"]) and _finite(change["delta_local"])


@slow
@needs_data
def test_embeddings_reuse_the_density_models(smoke):
    record = _load(smoke, "embeddings")
    assert set(record["datasets"]) == {"fashionmnist", "cifar10"}
    ours = {"mixerflow_tiny", "glow_tiny"}  # the library reads their blocks: default features and the latent
    expected = {"raw pixels"} | {f"{m} (latent)" for m in _models()} | {f"{m} (depths+hidden)" for m in ours}
    for dataset, entry in record["datasets"].items():
        assert set(entry["features"]) == expected
        for name, f in entry["features"].items():
            assert 0 <= f["accuracy_mean"] <= 1 and _finite(f["log_loss_mean"])
            if name != "raw pixels":
                assert f["model"]["train"]["reused"] is (dataset == "fashionmnist")


@slow
@needs_data
def test_hybrid_tradeoff(smoke):
    record = _load(smoke, "hybrid_tradeoff")
    assert [r["lam"] for r in record["sweep"]] == [0.0, 1.0, 100.0]
    for r in record["sweep"] + record["semi_supervised"]:
        assert 0 <= r["test_accuracy"] <= 1 and _finite(r["test_bits_per_dim"])
    assert {(r["labels"], r["setting"]) for r in record["semi_supervised"]} == {(20, "semi-supervised"),
                                                                             (20, "labelled only")}
    assert (smoke / record["plot"]).stat().st_size > 0


@slow
@needs_data
def test_ood(smoke):
    record = _load(smoke, "ood")
    assert {r["direction"] for r in record["runs"]} == {"fashionmnist->mnist", "mnist->fashionmnist"}
    assert record["reference"] == "patches"
    for r in record["runs"]:
        assert r["train"]["reused"] is True
        assert "likelihood_ratio (patches)" in r["metrics"]
        assert len(r["metrics"]) == 9
        for m in r["metrics"].values():
            assert all(0 <= m[k] <= 1 for k in ("auroc", "aupr_in", "aupr_out", "fpr_at_95_tpr_in",
                                                    "fpr_at_95_tpr_out"))


@slow
@needs_data
def test_eval_noise_compares_shared_and_per_image_noise(smoke):
    record = _load(smoke, "eval_noise")
    assert record["seeds"] == 5 and record["runs"]
    for r in record["runs"]:
        for scheme in ("shared", "per_image"):
            entry = r[scheme]
            assert len(entry["means"]) == 5 and all(_finite(m) for m in entry["means"])
            assert _finite(entry["seed_sd"]) and entry["seed_sd"] >= 0 and _finite(entry["sem"]) and entry["sem"] > 0
        assert _finite(r["moved_by"])


def test_scaling_and_render(tmp_path):
    """Scaling needs no data; the renderer fills every section it has JSON for."""
    import render
    import scaling

    scaling.main(_argv(tmp_path, tmp_path / "ckpt"))
    record = _load(tmp_path, "scaling")
    assert {r["size"] for r in record["rows"]} == {16, 32}
    assert all(_finite(r["train_s_per_image"]) and _finite(r["log_prob_s_per_image"]) for r in record["rows"])
    assert all(_finite(f["train_slope"]) for f in record["fits"].values())
    text = render.main(["--results-dir", str(tmp_path), "--out", str(tmp_path / "BENCHMARKS.md")])
    assert text.count("_Not yet run") == len(render.SECTIONS) - 2  # all but scaling and the GPU one
    assert "_Not yet measured: no GPU" in text
    assert "## 6. Scaling with image size" in text and "slope" in text
    assert "scaling.png" in text


@slow
@needs_data
def test_render_every_section(smoke, tmp_path):
    import render

    out = tmp_path / "BENCHMARKS.md"
    if not (smoke / "scaling.json").exists():
        import scaling

        scaling.main(_argv(smoke, tmp_path / "ckpt"))
    text = render.main(["--results-dir", str(smoke), "--out", str(out)])
    assert out.read_text() == text
    assert "could not be rendered" not in text
    # the memory, streaming and GPU sections are measured by their own scripts, not by the smoke runs
    own = {title for name, title, _ in render.SECTIONS if name in render.OWN_PROVENANCE}
    sections = {part.splitlines()[0]: part for part in text.split("\n## ")[1:]}
    for _, title, _ in render.SECTIONS:
        assert title in sections
        assert title in own or "Not yet run" not in sections[title], title
    assert "Against the paper" in text and "Smoke run" in text
    assert "hybrid_tradeoff.png" in text


def test_semi_supervised_oversampling_balances_labelled_and_unlabelled():
    import torch
    from hybrid_tradeoff import oversample_labelled

    from hybridflow.data import ImageData

    labels = torch.full((1000,), -1)
    labels[:10] = torch.arange(10)
    data = ImageData(torch.arange(1000).remainder(256).to(torch.uint8).view(-1, 1, 1, 1).expand(-1, 1, 2, 2),
                     labels, [str(k) for k in range(10)])
    mixed = oversample_labelled(data, 0.5)
    labelled = mixed.labels >= 0
    assert int(labelled.sum()) == 990 and int((~labelled).sum()) == 990  # every unlabelled image kept once
    assert torch.equal(mixed.labels[labelled].bincount(), torch.full((10,), 99))  # each label repeated alike
    assert oversample_labelled(data, 0.0) is data
    with pytest.raises(ValueError, match="labelled-share"):
        oversample_labelled(data, 1.0)


@slow
def test_throughput_smoke_measures_both_conditioner_precisions(capsys):
    """bench/throughput.py: one worker process per row; a bfloat16 row for a backbone that can
    have one, none for MAF (no conditioner to run in bfloat16)."""
    import throughput

    rows = throughput.main(["--smoke", "--threads", "1", "--shapes", "1x8x8", "--models",
                            "mixerflow_tiny,mixerflow_tiny_maf", "--conditioner-dtypes", "float32,bfloat16"])
    assert [r["model"] for r in rows] == ["mixerflow_tiny", "mixerflow_tiny_maf", "mixerflow_tiny:bfloat16"]
    for row in rows:
        assert _finite(row["train_img_s"]) and row["train_img_s"] > 0 and _finite(row["log_prob_img_s"])
        assert row["params"] > 0 and row["forward_mflops_per_image"] > 0
    assert rows[0]["params"] == rows[2]["params"]
    assert "| mixerflow_tiny:bfloat16 | 1x8x8 |" in capsys.readouterr().out


@slow
def test_compiled_ab_runs_in_turns():
    """bench/compiled.py: one (eager, compiled) pair of positive train rates per round."""
    import compiled

    pairs = compiled.train_rates("mixerflow_tiny", (1, 8, 8), batch=4, rounds=2, steps=1)
    assert len(pairs) == 2 and all(_finite(rate) and rate > 0 for pair in pairs for rate in pair)


def test_precision_ab_times_both_precisions_on_one_model_and_renders(tmp_path):
    """bench/precision.py: per round a (float32, bfloat16) pair of positive step and log_prob times,
    rendered as section 15's table with the CPU's bfloat16 support named."""
    import precision
    import render

    out = tmp_path / "precision.json"
    payload = precision.main(["--models", "mixerflow_tiny", "--shape", "1x8x8", "--batch", "4", "--rounds", "2",
                              "--steps", "1", "--out", str(out)])
    row = payload["rows"][0]
    assert json.loads(out.read_text())["rows"][0]["train_seconds"] == row["train_seconds"]
    assert len(row["train_seconds"]) == 2 and all(_finite(t) and t > 0 for pair in row["train_seconds"] for t in pair)
    assert all(len(pair) == 2 and min(pair) > 0 for pair in row["log_prob_seconds"])
    ratios = [b / f for f, b in row["train_seconds"]]
    assert row["train_ratio"] == pytest.approx(sum(ratios) / 2)  # the median of two ratios is their mean
    table = render.precision([payload])
    assert "| mixerflow_tiny | 4 |" in table and ("native bfloat16" in table or "emulated" in table)


@pytest.mark.skipif(not HAVE_NORMFLOWS, reason="normflows not installed (pip install -e '.[bench]')")
def test_mixerflow_wide_matches_the_reference_parameter_count():
    """mixerflow_wide is the MixerFlow at normflows' Glow reference size (throughput targets are
    at matched parameter counts): within 1% of it on 1x28x28, where mixerflow_tiny is 12% above."""
    import hybridflow

    reference = __import__("_comparators").NormflowsGlow((1, 28, 28)).num_params
    wide = hybridflow.create_backbone("mixerflow_wide").num_params
    assert abs(wide - reference) <= 0.01 * reference, (wide, reference)
    assert wide < hybridflow.create_backbone("mixerflow_tiny").num_params


@slow
@needs_data
def test_time_to_quality_finds_the_crossing(smoke):
    record = _load(smoke, "time_to_quality")
    target = record["summary"]["target_bits_per_dim"]
    glow = next(r for r in record["runs"] if r["family"] == "glow")
    assert record["summary"]["target_model"] == "glow_tiny" and target == glow["test_bits_per_dim"]
    for row in record["runs"]:
        curve = [p["test_bits_per_dim"] for p in row["train"]["history"]]
        assert curve and all(_finite(v) and v > 0 for v in curve)
        assert (row["minutes_to_target"] is not None) == (min(curve) <= target)
        # saved where bench/density.py --reuse looks for the same spec, data and budget
        saved = json.loads((Path(row["checkpoint"]) / "bench.json").read_text())
        assert saved["spec"]["spec"] == row["model"] and saved["train"]["steps"] == row["train"]["steps"]
    assert (smoke / record["plot"]).stat().st_size > 1000


@slow
@needs_data
def test_semi_supervised_runs_in_parallel_beside_the_probe_baseline(smoke):
    import hybrid_tradeoff

    record = hybrid_tradeoff.main(_argv(smoke, _checkpoints(smoke), "--reuse", "--lambdas", "", "--labels", "20", "--probe",
                                        "--parallel", "2", "--name", "hybrid_tradeoff_ssl",
                                        "--models", "mixerflow_tiny", "mixerflow_tiny:head_input=hidden"))
    rows = record["semi_supervised"]
    assert record["sweep"] == [] and record["parallel"] == 2
    assert sorted((r["model"], r["setting"]) for r in rows if r["setting"] in ("semi-supervised", "labelled only")) == \
        sorted((m, s) for m in ("mixerflow_tiny", "mixerflow_tiny:head_input=hidden")
               for s in ("semi-supervised", "labelled only"))
    probes = {r["setting"].split(" + ")[0]: r for r in rows if "probe" in r["setting"]}
    assert set(probes) == {"flow features", "raw pixels"}  # one probe: both specs share the pure flow
    assert probes["flow features"]["model"] == "mixerflow_tiny" and probes["flow features"]["train"]["reused"]
    for r in rows:
        assert 0 <= r["test_accuracy"] <= 1 and r["labels"] == 20
    import render

    text = render.hybrid(json.loads((smoke / "hybrid_tradeoff_ssl.json").read_text()), None)
    assert "head_input" in text and "lambda = 0: a pure flow" not in text  # no sweep: no sweep table
    assert text.count("| `mixerflow_tiny:head_input=hidden` | 20 |") == 2 and "raw pixels + linear probe" in text


def _checkpoints(results: Path) -> Path:
    """The checkpoint folder of the smoke fixture's runs (its --checkpoint-dir)."""
    return Path(json.loads((results / "density.json").read_text())["settings"]["checkpoint_dir"])


@slow
@needs_data
def test_permutations_in_parallel_train_every_shuffle(tmp_path):
    import permutations

    record = permutations.main(_argv(tmp_path, tmp_path / "checkpoints", "--datasets", "mnist", "--parallel", "2",
                                     "--models", "mixerflow_tiny", "glow_tiny"))
    assert sorted((r["shuffle"], r["model"]) for r in record["runs"]) == \
        sorted((s, m) for s in ("none", "global", "local") for m in ("mixerflow_tiny", "glow_tiny"))
    assert all(r["train"]["steps"] == 5 for r in record["runs"])
    assert {c["model"] for c in record["changes"]} == {"mixerflow_tiny", "glow_tiny"}


@slow
@needs_data
def test_hybrid_frontier_scores_hybrids_and_the_baseline(smoke):
    record = _load(smoke, "hybrid_frontier")
    heads = {r["run"]: r["head"] for r in record["runs"]}
    assert heads == {"mixerflow_tiny:head=hidden@1": "hidden", "mixerflow_tiny@1": "latent",
                     "timm_mixer": "pixels (discriminative)"}
    for row in record["runs"]:
        assert 0 <= row["test_accuracy"] <= 1
        assert (row["test_bits_per_dim"] is None) == (row["lam"] is None)


def test_embedding_features_summarises_over_trained_flows():
    import numpy as np

    import embedding_features

    def report(acc_pixels, acc_flow):
        return {"results": [{"name": "raw pixels", "dim": 64, "accuracy_mean": acc_pixels, "log_loss_mean": 0.2},
                            {"name": "flow (hidden)", "dim": 9, "accuracy_mean": acc_flow, "log_loss_mean": 0.1}]}

    summary = embedding_features.summarise([report(0.96, 0.95), report(0.98, 0.99)])
    assert summary["raw pixels"]["flows"] == 2 and summary["flow (hidden)"]["dim"] == 9
    assert summary["flow (hidden)"]["accuracy_mean"] == pytest.approx(0.97)
    assert summary["flow (hidden)"]["accuracy_std"] == pytest.approx(np.std([0.95, 0.99]))
    assert summary["raw pixels"]["accuracies"] == [0.96, 0.98]


def test_render_shows_the_digits_features_over_trained_flows():
    import render

    summary = {"raw pixels": dict(dim=64, flows=2, accuracy_mean=0.968, accuracy_std=0.001, accuracies=[0.967, 0.969],
                                  log_loss_mean=0.14, log_loss_std=0.01),
               "mixerflow_tiny (hidden)": dict(dim=1024, flows=2, accuracy_mean=0.971, accuracy_std=0.004,
                                               accuracies=[0.967, 0.975], log_loss_mean=0.11, log_loss_std=0.02)}
    record = dict(command="python bench/embedding_features.py --train-seeds 0,1", date="2026-12-02", wall_seconds=60,
                  datasets={"digits": dict(summary=summary, train_seeds=[0, 1], seeds=[0, 1, 2], n_train=1347,
                                           n_test=450, models=[dict(name="mixerflow_tiny", params=49273, steps=400)])})
    text = render.embedding_features(record)
    rows = [line for line in text.splitlines() if line.startswith("| ")][1:]  # after the header row
    assert rows[0].startswith("| mixerflow_tiny (hidden) | 1,024 | 97.10 ± 0.40 | 96.70 / 97.50 |")
    assert "one test image = 0.22 points" in text and "400 steps each" in text


@slow
@needs_data
def test_frontier_grid_smoke_reads_a_grid_and_labels_it(tmp_path):
    """bench/hybrid_frontier_grid.py end to end: the hidden-unit run's head is as wide as the grid's
    cells and is labelled so; the library's pooling is back afterwards."""
    import hybrid_frontier_grid

    import hybridflow.features as features

    pooling = features._pool_hidden
    record = hybrid_frontier_grid.main(["--grid", "2", *_argv(tmp_path, tmp_path / "checkpoints"), "--name", "grid"])
    hidden = [r for r in record["runs"] if r["lam"] is not None and r["head"].startswith("hidden")]
    assert [r["head"] for r in hidden] == ["hidden, 2x2 grid"]
    assert all(_finite(r["test_bits_per_dim"]) and 0 <= r["test_accuracy"] <= 1 for r in hidden)
    assert features._pool_hidden is pooling
