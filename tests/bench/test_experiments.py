"""The benchmarks' wrapper of the library's pseudo-labels (bench/_pseudo_labels.py) gives guesses only
above the threshold and, with ``translate=`` alone, none; spec strings reach the library's options
(lists as ``a|b``); section 2 takes its unshuffled figures from a time_to_quality record."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from _common import build_model, parse_spec  # noqa: E402
from _pseudo_labels import PseudoLabelHybrid  # noqa: E402

from hybridflow.training.pseudo_labels import translate_batch


def test_spec_lists_and_the_library_dequantisation_pass_through():
    spec = parse_spec("mixerflow_tiny:dequantization=variational,patch_sizes=2|4,patch_size=2,num_layers=2,hidden=8")
    assert spec.options["patch_sizes"] == [2, 4]
    model = build_model(spec, (1, 8, 8))
    assert model.backbone.dequantizer is not None and model.backbone.config["patch_sizes"] == [[2, 2], [4, 4]]


def test_pseudo_labels_only_for_confident_guesses():
    model = PseudoLabelHybrid("mixerflow_tiny", num_classes=3, lam=1.0, input_shape=(1, 4, 4), patch_size=2,
                              num_layers=1, hidden=8)
    model.max_shift = 0
    x = torch.randint(0, 256, (6, 1, 4, 4), dtype=torch.uint8)
    y = torch.tensor([0, -1, -1, 1, -1, -1])
    model.training_loss(x, y)  # the first call initialises the ActNorms: no guesses yet
    model.eval()               # each image's own noise: the two sides see the same
    model.threshold = 1.1      # nobody is that confident: the plain hybrid loss
    torch.testing.assert_close(model.training_loss(x, y), model(x, y).total)
    model.threshold = 0.0      # everyone is: the guesses are the targets
    guesses = model.predict(x)
    torch.testing.assert_close(model.training_loss(x, y), model(x, torch.where(y >= 0, y, guesses)).total)


def test_translate_alone_is_augmentation_without_guesses():
    spec = parse_spec("mixerflow_tiny:translate=1,patch_size=2,num_layers=1,hidden=8")
    model = build_model(spec, (1, 4, 4), lam=1.0, num_classes=3)
    assert isinstance(model, PseudoLabelHybrid) and model.threshold is None and model.max_shift == 1
    assert type(build_model(parse_spec("mixerflow_tiny:patch_size=2,num_layers=1,hidden=8"), (1, 4, 4))) \
        is not PseudoLabelHybrid  # neither key: the plain hybrid model
    x = torch.randint(0, 256, (6, 1, 4, 4), dtype=torch.uint8)
    y = torch.tensor([0, -1, -1, 1, -1, -1])
    model.training_loss(x, y)  # initialises the ActNorms (step 0)
    model.eval()
    moved = translate_batch(x, 1, model.seed, 0, 1)
    assert not torch.equal(moved, x)
    # step 1: the loss on the moved images with the unlabelled ones left unlabelled
    torch.testing.assert_close(model.training_loss(x, y), model(moved, y).total)


def test_permutations_take_unshuffled_runs_from_a_time_to_quality_record(tmp_path):
    import json

    import permutations

    record = dict(settings=dict(minutes=10.0, seed=0), smoke=False, dataset="fashionmnist",
                  runs=[dict(model="mixerflow_tiny", family="mixerflow", params=5, test_bits_per_dim=3.5)])
    path = tmp_path / "time_to_quality_x.json"
    path.write_text(json.dumps(record))
    args = permutations.parse_args(["--minutes", "10", "--models", "mixerflow_tiny", "--density-json", str(path),
                                    "--results-dir", str(tmp_path)])
    rows = permutations.baseline_from_density(args, ["fashionmnist"])
    assert [(r["dataset"], r["shuffle"], r["test_bits_per_dim"]) for r in rows] == [("fashionmnist", "none", 3.5)]
    assert permutations.baseline_from_density(args, ["mnist"]) is None  # not measured there: rerun


def test_frontier_replot_draws_runs_of_several_files_without_training(tmp_path):
    import json

    import hybrid_frontier

    def run(name: str, lam: float | None, acc: float, bpd: float | None) -> dict:
        return dict(run=f"{name}@{lam}", model=name, lam=lam, head="hidden" if lam is not None else "pixels",
                    params=10, test_accuracy=acc, test_bits_per_dim=bpd, train=dict(steps=3, epochs=0.1))

    (tmp_path / "a.json").write_text(json.dumps(dict(dataset="mnist", runs=[run("mixerflow_wide", 1.0, 0.98, 1.8),
                                                                             run("timm_mixer", None, 0.97, None)])))
    (tmp_path / "b.json").write_text(json.dumps(dict(dataset="mnist", runs=[run("mixerflow_wide", 0.3, 0.97, 1.5)])))
    record = hybrid_frontier.main(["--replot", "a", "b", "--results-dir", str(tmp_path), "--name", "both"])
    assert [(r["source"], r["lam"]) for r in record["runs"]] == [("a", 1.0), ("a", None), ("b", 0.3)]
    assert (tmp_path / "both.png").stat().st_size > 0
    assert json.loads((tmp_path / "both.json").read_text())["replot"] == ["a", "b"]
    with pytest.raises(SystemExit, match="no results file"):
        hybrid_frontier.main(["--replot", "a", "missing", "--results-dir", str(tmp_path)])
    with pytest.raises(SystemExit, match="fashionmnist"):
        hybrid_frontier.main(["--replot", "a", "--dataset", "fashionmnist", "--results-dir", str(tmp_path)])


def test_frontier_grid_head_pools_each_cell_and_restores_the_library_pooling():
    import hybrid_frontier_grid as grid_bench

    import hybridflow.features as features

    h = torch.arange(2 * 16 * 3, dtype=torch.float32).reshape(2 * 16, 3)  # 2 images, 4x4 rows, 3 hidden units
    rows = h.reshape(2, 4, 4, 3)
    cells = grid_bench.grid_pool(2)(h, 2, False).reshape(2, 3, 2, 2)
    torch.testing.assert_close(cells[:, :, 0, 1], rows[:, :2, 2:].mean((1, 2)))  # top-right cell
    torch.testing.assert_close(grid_bench.grid_pool(1)(h, 2, False), rows.mean((1, 2)))  # one cell: the library's mean
    # the probes' mean and max keep the library's pooling
    torch.testing.assert_close(grid_bench.grid_pool(2)(h, 2, True), features._pool_hidden(h, 2, True))
    with pytest.raises(ValueError, match="square grid"):
        grid_bench.grid_pool(2)(h[:2 * 12], 2, False)
    spec = parse_spec("mixerflow_tiny:head_input=hidden,patch_size=2,num_layers=1,hidden=8")
    build = grid_bench.with_grid_head(build_model)
    original = features._pool_hidden
    features._pool_hidden = grid_bench.grid_pool(2)
    try:
        model = build(spec, (1, 8, 8), lam=1.0, num_classes=3)
        assert model.head.in_features == 4 * model.num_features  # 2x2 cells of every conditioner's units
        x = torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8)
        assert model(x, torch.tensor([0, 1, 2, -1])).logits.shape == (4, 3)
    finally:
        features._pool_hidden = original
    with pytest.raises(SystemExit):
        grid_bench.main(["--grid", "2", "--parallel", "2", "--smoke"])
    assert features._pool_hidden is original


def test_training_keys_of_a_spec_set_adams_beta2_the_schedule_and_a_weight_average():
    import argparse

    from _common import ImageData, TrainSettings, _lr_factor, train_for_budget, train_settings

    spec = parse_spec("mixerflow_tiny:beta2=0.99,schedule=linear,ema=0.9,hidden=8")
    assert spec.options == {"hidden": 8} and spec.train == {"beta2": 0.99, "schedule": "linear", "ema": 0.9}
    args = argparse.Namespace(minutes=1.0, batch_size=4, lr=1e-3, warmup=0, clip=5.0, schedule="cosine",
                              max_steps=3, seed=0)
    settings = train_settings(args, spec)
    assert (settings.beta2, settings.schedule, settings.ema) == (0.99, "linear", 0.9)
    assert "ema" not in train_settings(args).as_dict()  # earlier runs' cache keys are unchanged
    # linear decay: half the budget gone, half the rate left (cosine gives the same at the half)
    half = _lr_factor(5, 30.0, TrainSettings(seconds=60.0, warmup=0, schedule="linear"))
    quarter = _lr_factor(5, 15.0, TrainSettings(seconds=60.0, warmup=0, schedule="linear"))
    assert half == pytest.approx(0.5) and quarter == pytest.approx(0.75)

    # with ema, the model ends with the average of its weights after each step
    torch.manual_seed(0)
    model = build_model(parse_spec("mixerflow_tiny:patch_size=2,num_layers=1,hidden=8"), (1, 4, 4))
    data = ImageData(torch.randint(0, 256, (8, 1, 4, 4), dtype=torch.uint8), torch.zeros(8, dtype=torch.long))
    params = [p for p in model.parameters() if p.requires_grad]
    seen: list[list[torch.Tensor]] = []
    original_step = torch.optim.Adam.step

    def recording_step(self, *a, **k):
        out = original_step(self, *a, **k)
        seen.append([p.detach().clone() for p in params])
        return out

    torch.optim.Adam.step = recording_step
    try:
        starts: list[list[torch.Tensor]] = []
        original_zero_grad = torch.optim.Adam.zero_grad

        def recording_zero_grad(self, *a, **k):  # the first call comes after ActNorm's initialisation
            if not starts:
                starts.append([p.detach().clone() for p in params])
            return original_zero_grad(self, *a, **k)

        torch.optim.Adam.zero_grad = recording_zero_grad
        train_for_budget(model, data, TrainSettings(seconds=60.0, batch_size=4, warmup=0, max_steps=3, ema=0.5),
                         verbose=False)
    finally:
        torch.optim.Adam.step, torch.optim.Adam.zero_grad = original_step, original_zero_grad
    assert len(seen) == 3
    expected = starts[0]
    for weights in seen:
        expected = [0.5 * e + 0.5 * w for e, w in zip(expected, weights)]
    for p, e, last in zip(params, expected, seen[-1]):
        torch.testing.assert_close(p.detach(), e)
    assert any(not torch.equal(e, w) for e, w in zip(expected, seen[-1]))
