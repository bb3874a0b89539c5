"""The probe workflow (hybridflow.probing.run_probe): its rows are the probes the library computes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hybridflow.data import DataSpec
from hybridflow.features import DEFAULT_FEATURES
from hybridflow.probe import embed_images, linear_probe, raw_pixel_features
from hybridflow.probing import ProbeReport, run_probe
from hybridflow.runs import RequestError, load_model
from hybridflow.training import evaluate_model

TINY = dict(num_layers=1, hidden=8, steps=1)
ROW = f"mixerflow_tiny ({DEFAULT_FEATURES})"
SIZES = dict(limit=300, test_limit=100, seeds=2, seed=0)


@pytest.fixture(scope="module")
def probed(tmp_path_factory):
    out = tmp_path_factory.mktemp("probe")
    messages: list[str] = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        report = run_probe(["mixerflow"], steps=3, options=TINY, out_dir=out, progress=False, log=messages.append,
                           **SIZES)
    finally:
        torch.set_num_threads(threads)
    return report, messages, out


@pytest.fixture(scope="module")
def splits():
    spec = DataSpec("digits", limit=SIZES["limit"], seed=SIZES["seed"])
    train = spec.load(train=True)
    test = DataSpec("digits", limit=SIZES["test_limit"], seed=SIZES["seed"]).load(train=False)
    return train, test


def test_raw_pixel_row_is_linear_probe_on_the_pixels(probed, splits):
    report, _, _ = probed
    train, test = splits
    direct = linear_probe(raw_pixel_features(train.images), train.labels, raw_pixel_features(test.images),
                          test.labels, seeds=(0, 1))
    row = report.results["raw pixels"]
    assert row.accuracies == direct.accuracies and row.log_losses == direct.log_losses
    assert row.chosen_Cs == direct.chosen_Cs and row.dim == 64
    assert list(report.results) == ["raw pixels", ROW]


def test_model_row_is_the_probe_of_the_saved_model(probed, splits):
    report, messages, out = probed
    train, test = splits
    info = report.models[0]
    assert info["name"] == "mixerflow_tiny" and info["steps"] == 3 and info["lam"] == 0.0
    assert info["options"] == {**TINY, "patch_size": 2}  # the user's options beat the light probe settings
    model = load_model(out / "mixerflow_tiny", device="cpu")[0]
    assert info["test_bits_per_dim"] == pytest.approx(evaluate_model(model, test)["bits_per_dim"], abs=1e-6)
    direct = linear_probe(embed_images(model, train.images), train.labels, embed_images(model, test.images),
                          test.labels, seeds=(0, 1))
    assert report.results[ROW].accuracies == pytest.approx(direct.accuracies)
    assert messages[0] == report.header and "fitting the probes: 2 feature sets x 2 seeds" in messages
    # progress while fitting: one line per probe and seed, after the announcement
    fits = messages[messages.index("fitting the probes: 2 feature sets x 2 seeds") + 1:]
    assert len(fits) == 4 and fits[0].startswith("  probe raw pixels (64 dims), seed 0: C=")
    assert any(m.startswith("training mixerflow_tiny (") for m in messages)


def test_report_summaries(probed):
    report, _, _ = probed
    assert isinstance(report, ProbeReport)
    assert report.header == "linear probes on digits (1x8x8): 300 train / 100 test images, 2 seeds"
    lines = report.table().splitlines()
    assert lines[0].split()[:3] == ["features", "dim", "accuracy"] and lines[1].startswith("raw pixels")
    payload = report.as_dict()
    assert list(payload) == ["dataset", "image_shape", "n_train", "n_test", "seeds", "models", "results",
                             "elapsed_s"]
    assert payload["image_shape"] == [1, 8, 8] and payload["seeds"] == [0, 1] and report.elapsed_s > 0
    assert [r["name"] for r in payload["results"]] == ["raw pixels", ROW]


def test_checkpoints_only_and_repeated_backbones(probed):
    _, _, out = probed
    report = run_probe((), [out / "mixerflow_tiny"], limit=120, test_limit=60, seeds=1, pixels=False,
                       log=lambda m: None)
    assert list(report.results) == [f"checkpoint mixerflow_tiny ({DEFAULT_FEATURES})"] and report.dataset == "digits"
    assert report.models[0]["backbone"] == "mixerflow_tiny" and "checkpoint" in report.models[0]
    twice = run_probe(["mixerflow", "mixerflow"], steps=0, options=TINY, limit=120, test_limit=60, seeds=1,
                      pixels=False, log=lambda m: None)
    rows = [f"mixerflow_tiny #1 ({DEFAULT_FEATURES})", f"mixerflow_tiny #2 ({DEFAULT_FEATURES})"]
    assert list(twice.results) == rows
    # the same seed builds the same weights: the two rows agree
    assert twice.results[rows[0]].accuracies == twice.results[rows[1]].accuracies


def test_several_feature_sets_give_one_row_each(splits):
    train, test = splits
    report = run_probe(["mixerflow"], steps=0, options=TINY, limit=300, test_limit=100, seeds=1, pixels=False,
                       features=["latent", "hidden", "latent"], log=lambda m: None)
    assert list(report.results) == ["mixerflow_tiny (latent)", "mixerflow_tiny (hidden)"]
    assert report.results["mixerflow_tiny (latent)"].dim == 64
    pooled = run_probe(["mixerflow"], steps=0, options=TINY, limit=120, test_limit=60, seeds=1, pixels=False,
                       pooled=True, log=lambda m: None)
    assert list(pooled.results) == ["mixerflow_tiny (pooled)"]
    with pytest.raises(RequestError, match="unknown features 'pixels'"):
        run_probe(["mixerflow"], steps=0, options=TINY, limit=60, features="pixels", log=lambda m: None)


def test_requests_that_cannot_be_met(tmp_path):
    with pytest.raises(RequestError, match="nothing to probe"):
        run_probe((), pixels=False, limit=50, log=lambda m: None)
    path = tmp_path / "unlabelled.npz"
    np.savez(path, x=np.zeros((40, 1, 8, 8), np.uint8))
    with pytest.raises(RequestError, match="not fully labelled"):
        run_probe((), dataset=str(path), log=lambda m: None)


def test_large_training_sets_default_to_one_probe_seed(monkeypatch):
    import hybridflow.probing as probing

    small = run_probe(steps=0, limit=120, test_limit=40, pixels=True, backbones=(), log=lambda _: None,
                      progress=False)
    assert small.seeds == [0, 1, 2]
    monkeypatch.setattr(probing, "ONE_SEED_ABOVE", 100)
    large = run_probe(steps=0, limit=120, test_limit=40, pixels=True, backbones=(), log=lambda _: None,
                      progress=False)
    assert large.seeds == [0] and len(large.results["raw pixels"].accuracies) == 1
    assert run_probe(steps=0, limit=120, test_limit=40, seeds=2, backbones=(), log=lambda _: None,
                     progress=False).seeds == [0, 1]


def test_test_labels_missing_from_a_small_training_set_are_named_before_training():
    trained = []
    with pytest.raises(RequestError, match="do not occur among the 5 training images of digits: raise --limit"):
        run_probe(["mixerflow"], limit=5, steps=2, progress=False, log=trained.append)
    assert not any(line.startswith("training") for line in trained)  # refused before any training
