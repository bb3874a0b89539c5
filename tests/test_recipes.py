"""Tests for hybridflow.recipes: finding, reading and listing the TOML recipes."""

from __future__ import annotations

from pathlib import Path

import pytest

from hybridflow.data import EXTERNAL_DATASETS
import hybridflow
from hybridflow.recipes import (OOD_RECIPE_KEYS, RECIPE_KEYS, RecipeError, find_recipe, list_recipes, load_recipe,
                                packaged_recipe_dir)

RECIPES = packaged_recipe_dir()


def test_shipped_recipes_are_complete_and_valid():
    from hybridflow import list_backbones

    paths = sorted(RECIPES.glob("*.toml"))
    names = {p.stem for p in paths}
    for needed in ("cifar10_density", "imagenet32_density", "imagenet64_density", "mnist_density",
                   "cifar10_local_shuffle", "cifar10_global_shuffle", "galaxy32_density", "cifar10_probe",
                   "mnist_coupling_maf", "mnist_coupling_spline", "mnist_ssl100", "mnist_ssl1000",
                   "fashionmnist_mnist_ood", "fashionmnist_ood_reference", "digits_0to4_density",
                   "digits_0to4_reference", "digits_0to4_ood"):
        assert needed in names
    for path in paths:
        assert path.read_text().startswith("# "), f"{path.name} lacks its header comment"
        kind = next(row["kind"] for row in list_recipes() if row["name"] == path.stem)
        for scale in ("cpu", "paper"):
            settings, meta = load_recipe(path, scale, kind=kind)
            assert meta.get("reproduces") and meta.get("paper_result")
            if kind == "ood":
                _check_ood_recipe(settings, names)
                continue
            assert set(settings) <= RECIPE_KEYS
            assert settings["backbone"] in list_backbones(), (path.name, settings["backbone"])
            if settings["dataset"] in EXTERNAL_DATASETS:
                assert "NOT downloadable" in path.read_text()


def _check_ood_recipe(settings: dict, train_recipes: set) -> None:
    from hybridflow.data import SYNTHETIC_OOD, check_dataset_name
    from hybridflow.ood import SCORERS

    assert set(settings) <= OOD_RECIPE_KEYS
    assert settings["scores"] and set(settings["scores"]) <= set(SCORERS)
    check_dataset_name(settings["in_data"])
    check_dataset_name(settings["out_data"], tuple(SYNTHETIC_OOD))
    # the model scored is named: a shipped model or the run of a training recipe that exists
    assert ("checkpoint" in settings) != ("train_recipe" in settings)
    assert settings.get("train_recipe", "mnist_density") in train_recipes
    if "likelihood_ratio" in settings["scores"]:
        assert settings.get("reference") or settings["reference_recipe"] in train_recipes


@pytest.mark.parametrize("name, labels", [("mnist_ssl100", 100), ("mnist_ssl1000", 1000), ("mnist_ssl100_pseudo", 100)])
def test_semi_supervised_recipes_keep_that_many_labels(name, labels):
    """At paper scale the labelled fraction of MNIST's 60,000 images is the named count, the model
    is hybrid (lam > 0) and every other image trains the density: keep_labels (stratified, rounded
    per class) leaves `labels` labels, within rounding, on MNIST's class sizes."""
    import torch

    from hybridflow.data import ImageData, keep_labels

    paper, _ = load_recipe(name, "paper")
    cpu, _ = load_recipe(name, "cpu")
    assert paper["lam"] > 0 and cpu["lam"] > 0 and paper["dataset"] == "mnist"
    assert paper.get("limit") is None and paper["labelled_fraction"] * 60000 == pytest.approx(labels)
    assert cpu["labelled_fraction"] * cpu.get("limit", 60000) == pytest.approx(labels)
    mnist_class_sizes = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    y = torch.cat([torch.full((n,), c) for c, n in enumerate(mnist_class_sizes)])
    data = ImageData(torch.zeros(len(y), 1, 1, 1, dtype=torch.uint8), y)
    kept = keep_labels(data, paper["labelled_fraction"], seed=0).labels
    assert abs(int((kept >= 0).sum()) - labels) <= 1
    per_class = torch.bincount(kept[kept >= 0], minlength=10)
    assert per_class.min() >= 0.85 * labels / 10 and per_class.max() <= 1.15 * labels / 10


def test_recipes_say_which_command_runs_them(tmp_path):
    rows = {row["name"]: row for row in list_recipes()}
    assert (rows["fashionmnist_mnist_ood"]["kind"], rows["fashionmnist_mnist_ood"]["command"]) == \
        ("ood", "hybridflow ood")
    assert (rows["mnist_ssl100"]["kind"], rows["mnist_ssl100"]["command"]) == ("train", "hybridflow train")
    with pytest.raises(RecipeError, match=r"is an ood recipe: run it with `hybridflow ood --recipe "
                                          r"fashionmnist_mnist_ood`"):
        load_recipe("fashionmnist_mnist_ood", "cpu")
    with pytest.raises(RecipeError, match=r"is a train recipe: run it with `hybridflow train --recipe mnist_ssl100`"):
        load_recipe("mnist_ssl100", "cpu", kind="ood")
    with pytest.raises(RecipeError, match="kind must be one of train, ood, got 'eval'"):
        load_recipe("mnist_ssl100", "cpu", kind="eval")
    with pytest.raises(RecipeError, match="kind must be one of train, ood, got 'probe'"):
        load_recipe(_write(tmp_path, 'kind = "probe"\n[cpu]\n'), "cpu")
    # each kind has its own keys: a training key in an OOD recipe is a typo, not a silent no-op
    with pytest.raises(RecipeError, match="unknown key 'lam' at the top level; allowed: batch_size, checkpoint"):
        load_recipe(_write(tmp_path, 'kind = "ood"\nlam = 1.0\n[cpu]\n'), "cpu", kind="ood")
    with pytest.raises(RecipeError, match="unknown key 'out_data' at the \\[cpu\\]"):
        load_recipe(_write(tmp_path, '[cpu]\nout_data = "mnist"\n'), "cpu")


def _write(tmp_path: Path, text: str, name: str = "r.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_scale_table_overrides_the_top_level(tmp_path):
    path = _write(tmp_path, 'name = "mine"\nreproduces = "Table 1"\nlam = 0.5\nsteps = 9\n'
                            '[backbone_options]\nhidden = 4\n[paper]\nsteps = 1000\n'
                            '[cpu]\nsteps = 3\n[cpu.backbone_options]\nnum_layers = 1\n')
    cpu, meta = load_recipe(path, "cpu")
    assert cpu == dict(lam=0.5, steps=3, backbone_options=dict(hidden=4, num_layers=1))
    assert meta == dict(name="mine", reproduces="Table 1", path=str(path))
    paper, _ = load_recipe(path, "paper")
    assert paper["steps"] == 1000 and paper["backbone_options"] == dict(hidden=4)
    assert load_recipe(str(path)[: -len(".toml")], "cpu")[0] == cpu  # .toml is optional
    assert load_recipe(_write(tmp_path, "[cpu]\nlam = 1.0\n", "bare.toml"))[1]["name"] == "bare"


@pytest.mark.parametrize("text, scale, words", [
    ("lam = 0.5\n[cpu]\nstepz = 3\n", "cpu", "unknown key 'stepz' at the [cpu]"),
    ("lamda = 0.5\n[cpu]\n", "cpu", "unknown key 'lamda' at the top level"),
    ("lam = 0.5\n[paper]\nsteps = 3\n", "cpu", "has no [cpu] table"),
    ("lam = \n", "cpu", "is not valid TOML"),
    ("[cpu]\n", "laptop", "scale must be one of cpu, paper"),
])
def test_bad_recipes_are_refused(tmp_path, text, scale, words):
    with pytest.raises(RecipeError, match=words.replace("[", r"\[").replace("]", r"\]")):
        load_recipe(_write(tmp_path, text), scale)


def test_find_by_name_and_list(tmp_path, monkeypatch):
    assert find_recipe("mnist_density") == RECIPES / "mnist_density.toml" or \
        find_recipe("mnist_density").resolve() == (RECIPES / "mnist_density.toml").resolve()
    with pytest.raises(RecipeError, match="recipe not found: nope .*available: .*mnist_density"):
        find_recipe("nope")
    rows = list_recipes()
    assert {r["name"] for r in rows} >= {"cifar10_density", "mnist_density"}
    assert len({r["name"] for r in rows}) == len(rows)  # each name once
    # ./recipes comes first and shadows the packaged recipe of the same name
    (tmp_path / "recipes").mkdir()
    _write(tmp_path / "recipes", 'reproduces = "mine"\n[cpu]\n', "mnist_density.toml")
    monkeypatch.chdir(tmp_path)
    mine = {r["name"]: r for r in list_recipes()}["mnist_density"]
    assert mine["reproduces"] == "mine" and Path(mine["path"]).parent == tmp_path / "recipes"


def test_the_recipes_ship_inside_the_package_in_one_copy():
    """A wheel holds only the package, so the recipes live there; the top-level recipes/ (what a
    reader of the repository browses) points there and holds no second copy that could drift."""
    assert RECIPES == Path(hybridflow.__file__).resolve().parent / "recipe_files"
    assert len(list(RECIPES.glob("*.toml"))) >= 10
    top_level = Path(__file__).resolve().parents[1] / "recipes"
    assert sorted(top_level.glob("*.toml")) == [], "recipes belong in hybridflow/recipe_files/"
    assert "hybridflow/recipe_files" in (top_level / "README.md").read_text()


def test_recipes_are_found_by_name_outside_the_source_tree(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert find_recipe("mnist_density") == RECIPES / "mnist_density.toml"
    # the README's spelling, `--recipe recipes/NAME`, still finds the packaged recipe
    assert find_recipe("recipes/mnist_density") == RECIPES / "mnist_density.toml"
    assert {r["name"] for r in list_recipes()} == {p.stem for p in RECIPES.glob("*.toml")}


def test_the_digits_ood_recipe_scores_held_out_classes_of_the_trained_ones():
    from hybridflow.data.subsets import parse_classes
    from hybridflow.ood.report import ood_recipe_settings

    train, _ = load_recipe("digits_0to4_density", "cpu")
    assert train["dataset"] == "digits" and train["classes"] == [0, 1, 2, 3, 4] and train["lam"] == 0
    ood, meta = load_recipe("digits_0to4_ood", "cpu", kind="ood")
    assert ood["train_recipe"] == "digits_0to4_density" and ood["reference_recipe"] == "digits_0to4_reference"
    assert parse_classes(ood["in_classes"]) == (0, 1, 2, 3, 4) and parse_classes(ood["out_classes"]) == (5, 6, 7, 8, 9)
    assert set(ood["scores"]) == {"loglik", "bpd", "typicality", "complexity", "likelihood_ratio"}
    assert "0.887" in meta["cpu_expectation"]  # the measured figures are in the header
    settings = ood_recipe_settings("digits_0to4_ood", "cpu", checkpoint="pretrained:mnist", reference="pretrained:mnist")
    assert (settings["in_classes"], settings["out_classes"]) == ([0, 1, 2, 3, 4], [5, 6, 7, 8, 9])
