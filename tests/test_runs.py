"""Tests for hybridflow.runs: run folders, loading a trained model, the data a run used, sampling."""

from __future__ import annotations

import json

import pytest
import torch

from hybridflow.data import DataSpec, ImageData, LocalShuffle, UnknownDatasetError, keep_labels, load_digits_data
from hybridflow.factory import build_model
from hybridflow.explaining import explain_run
from hybridflow.runs import (
    RUN_FILE,
    CheckpointNotFoundError,
    DataShapeError,
    RequestError,
    RunFileError,
    RunFolderError,
    TrainingInterrupted,
    check_data_shape,
    data_spec_from_run,
    default_run_folder,
    evaluate_run,
    find_run,
    load_model,
    prepare_run_folder,
    sample_images,
    sample_run,
    train_run,
    write_run_file,
)
from hybridflow.data.subsets import ClassSelectionError
from hybridflow.flows import freeze
from hybridflow.training import evaluate_model, save_checkpoint

OPTIONS = dict(patch_size=2, num_layers=1, hidden=8)


@pytest.fixture
def model():
    return build_model("mixerflow_tiny", (1, 8, 8), 10, 1.0, OPTIONS, seed=0)


def test_run_file_is_found_from_below(tmp_path):
    run = dict(settings=dict(lam=0.5), data=DataSpec("digits", shuffle="local").to_dict(), path=tmp_path)
    path = write_run_file(tmp_path / "run", run)
    assert path == tmp_path / "run" / RUN_FILE and json.loads(path.read_text())["path"] == str(tmp_path)
    deep = tmp_path / "run" / "checkpoints" / "step-000000004"
    deep.mkdir(parents=True)
    assert find_run(deep)["settings"] == {"lam": 0.5}
    assert find_run(tmp_path / "elsewhere") == {}
    path.write_text("{ damaged")  # a damaged run.json is not read as "no settings": that builds another model
    with pytest.raises(RunFileError, match=r"run/run\.json is damaged \(Expecting"):
        find_run(deep)
    path.write_text("[1, 2]")
    with pytest.raises(RunFileError, match=r"run\.json is damaged \(a JSON list, not an object\)"):
        find_run(deep)


def test_run_file_is_written_atomically(tmp_path, monkeypatch):
    import hybridflow.training.checkpoint as checkpoint_module

    path = write_run_file(tmp_path / "run", dict(settings=dict(lam=0.5)))

    def failing_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_module.os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="disk full"):
        write_run_file(tmp_path / "run", dict(settings=dict(lam=2.0)))
    assert find_run(tmp_path / "run") == dict(settings=dict(lam=0.5))  # the old file, whole
    assert [p.name for p in path.parent.iterdir()] == ["run.json"]  # no temporary file left


def test_prepare_run_folder(tmp_path):
    out = tmp_path / "run"
    prepare_run_folder(out, resume=False, overwrite=False)  # a new folder is fine
    with pytest.raises(RunFolderError, match="nothing to resume"):
        prepare_run_folder(out, resume=True, overwrite=False)
    (out / "checkpoints" / "step-1").mkdir(parents=True)
    prepare_run_folder(out, resume=True, overwrite=False)
    with pytest.raises(RunFolderError, match="--resume"):
        prepare_run_folder(out, resume=False, overwrite=False)
    prepare_run_folder(out, resume=False, overwrite=True)
    assert not (out / "checkpoints").exists()


def test_default_run_folder():
    assert default_run_folder("glow_tiny", "CIFAR-10").as_posix() == "runs/glow_tiny-cifar10"
    assert default_run_folder("glow_tiny", "/data/my_set.npz").as_posix() == "runs/glow_tiny-myset"
    assert default_run_folder("glow_tiny", "mnist", recipe="mnist_density", scale="paper").as_posix() == \
        "runs/mnist_density-paper"


def test_data_spec_from_run():
    run = dict(data=dict(name="digits", root="/saved", shuffle="local", shuffle_patch=2, shuffle_seed=5, size=32))
    spec = data_spec_from_run(run, limit=10, seed=1, download=True)
    assert spec == DataSpec("digits", "/saved", True, 10, 1, "local", 2, 5, 32)
    assert data_spec_from_run(run, root="/mine").root == "/mine"
    assert data_spec_from_run(run, name="mnist") == DataSpec("mnist")  # another dataset: none of the run's shuffle
    assert data_spec_from_run({}).name == "digits"
    with pytest.raises(UnknownDatasetError):
        data_spec_from_run(run, name="svhm")


def test_load_model_round_trip(tmp_path, model):
    with pytest.raises(CheckpointNotFoundError, match="checkpoint not found"):
        load_model(tmp_path / "absent")
    save_checkpoint(model, tmp_path / "run" / "checkpoints" / "step-000000001")
    write_run_file(tmp_path / "run", dict(data=dict(name="digits")))
    loaded, directory, run = load_model(tmp_path / "run", device="cpu")
    assert directory.name == "step-000000001" and run == dict(data=dict(name="digits"))
    assert all(torch.equal(p, q) for p, q in zip(model.state_dict().values(), loaded.state_dict().values()))


def test_check_data_shape(model):
    check_data_shape(model, ImageData(torch.zeros(2, 1, 8, 8, dtype=torch.uint8)), "digits")
    with pytest.raises(DataShapeError, match="cifar images are 3x32x32 .* takes 1x8x8"):
        check_data_shape(model, ImageData(torch.zeros(2, 3, 32, 32, dtype=torch.uint8)), "cifar")


def test_sample_images_are_seeded_and_unshuffled(model):
    plain = sample_images(model, 4, temperature=0.5, seed=1)
    assert plain.shape == (4, 1, 8, 8) and torch.equal(plain, sample_images(model, 4, temperature=0.5, seed=1))
    run = dict(data=dict(name="digits", shuffle="local", shuffle_patch=2, shuffle_seed=3))
    unshuffled = sample_images(model, 4, temperature=0.5, seed=1, run=run)
    assert torch.equal(unshuffled, LocalShuffle((1, 8, 8), 2, seed=3).inverse(plain))


# --------------------------------------------------------------------------- the commands' workflows

TINY = dict(num_layers=1, hidden=8, steps=1)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A 3-step run through train_run: a recipe's values under explicit options."""
    recipe = tmp_path_factory.mktemp("recipe") / "tiny.toml"
    recipe.write_text('name = "tiny"\nlam = 0.5\n[paper]\nsteps = 1000\n[cpu]\nsteps = 9\nbatch_size = 16\n')
    messages: list[str] = []
    out = tmp_path_factory.mktemp("runs") / "run"
    run = train_run(dict(steps=3, val_limit=40, log_every=1), recipe=recipe, out_dir=out, backbone_options=TINY,
                    device="cpu", progress=False, log=messages.append)
    return run, messages


def test_train_run_merges_settings_and_writes_the_folder(trained_run):
    run, messages = trained_run
    assert run.settings["steps"] == 3 and run.result.steps == 3        # the explicit option beats the recipe
    assert run.settings["lam"] == 0.5 and run.settings["batch_size"] == 16  # the recipe's [cpu] values
    assert run.settings["backbone_options"] == TINY and run.backbone == "mixerflow_tiny"
    saved = find_run(run.out_dir)
    assert saved["backbone_options"] == {**TINY, "patch_size": 2} and saved["recipe"]["name"] == "tiny"
    assert saved["scale"] == "cpu" and run.curves == run.out_dir / "curves.png" and run.curves.is_file()
    assert len(messages) == 1 and messages[0].startswith("mixerflow_tiny (") and "3 steps of 16" in messages[0]
    summary = run.summary()
    assert summary["steps"] == 3 and summary["checkpoint"] == str(run.result.checkpoint)
    assert summary["params"] == run.model.backbone.num_params and summary["val_bits_per_dim"] > 0
    with pytest.raises(ValueError, match="unknown training settings"):
        train_run(dict(stepz=3))


def test_train_run_resumes_with_the_saved_settings(tmp_path):
    quiet = dict(device="cpu", progress=False, plot=False, log=lambda m: None)
    train_run(dict(steps=2, lam=0.5, val_limit=20), out_dir=tmp_path / "run", backbone_options=TINY, **quiet)
    with pytest.raises(RunFolderError, match="--resume"):
        train_run(dict(steps=2), out_dir=tmp_path / "run", **quiet)
    resumed = train_run(dict(steps=3), out_dir=tmp_path / "run", resume=True, **quiet)
    assert resumed.result.steps == 3 and resumed.settings["lam"] == 0.5 and resumed.settings["backbone_options"] == TINY


def test_a_damaged_or_missing_run_file_stops_resume_and_loading(tmp_path):
    """Without its settings the run would be rebuilt as a default model ("Missing key(s)")."""
    quiet = dict(device="cpu", progress=False, plot=False, log=lambda m: None)
    out = tmp_path / "run"
    train_run(dict(steps=2, val_limit=20), out_dir=out, backbone_options=TINY, **quiet)
    (out / RUN_FILE).write_text('{"settings": {"steps": 2, "lam"')  # cut short
    with pytest.raises(RunFileError, match=r"run/run\.json is damaged"):
        train_run(dict(steps=3), out_dir=out, resume=True, **quiet)
    with pytest.raises(RunFileError, match=r"run/run\.json is damaged"):
        load_model(out, device="cpu")
    with pytest.raises(RunFileError, match=r"run/run\.json is damaged"):
        evaluate_run(out, device="cpu")
    (out / RUN_FILE).unlink()
    with pytest.raises(RunFileError, match=r"cannot resume .*run: .*run/run\.json is missing"):
        train_run(dict(steps=3), out_dir=out, resume=True, **quiet)


def test_train_run_interrupted_names_the_folder(tmp_path, monkeypatch):
    import hybridflow.runs as runs

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runs, "train", interrupted)
    with pytest.raises(TrainingInterrupted) as caught:
        train_run(dict(steps=1, val_limit=10), out_dir=tmp_path / "run", backbone_options=TINY, log=lambda m: None)
    assert caught.value.out_dir == tmp_path / "run" and isinstance(caught.value, KeyboardInterrupt)


def test_evaluate_run_is_evaluate_model_on_the_loaded_model(trained_run):
    run, _ = trained_run
    figures = evaluate_run(run.out_dir, split="train", limit=50, device="cpu")
    model = load_model(run.out_dir, "cpu")[0]
    expected = evaluate_model(model, DataSpec("digits", limit=50).load(train=True))
    assert {k: figures[k] for k in expected} == pytest.approx(expected)
    assert figures["dataset"] == "digits" and figures["split"] == "train" and figures["num_examples"] == 50
    assert figures["checkpoint"] == str(run.result.checkpoint) and figures["seconds"] >= 0
    with pytest.raises(ValueError, match="split"):
        evaluate_run(run.out_dir, split="val")


def test_sample_run_writes_sample_images(trained_run, tmp_path):
    run, _ = trained_run
    payload = sample_run(run.out_dir, count=4, temperature=0.5, out_path=tmp_path / "grid.png", seed=2, device="cpu")
    expected = sample_images(load_model(run.out_dir, "cpu")[0], 4, temperature=0.5, seed=2)
    assert payload["mean_pixel"] == pytest.approx(float(expected.float().mean()))
    assert payload["path"] == str(tmp_path / "grid.png") and (tmp_path / "grid.png").stat().st_size > 0
    assert payload["n"] == 4 and payload["unshuffled"] is False


def test_explain_run(trained_run, tmp_path):
    run, _ = trained_run
    result = explain_run(run.out_dir, index=3, methods=["ig"], targets=["predicted", "nll"], ig_steps=8,
                         out_path=tmp_path / "e.png", device="cpu")
    model = load_model(run.out_dir, "cpu")[0]
    image = DataSpec("digits").load(train=False).images[3:4]
    with torch.no_grad():
        probs = freeze(model).predict_proba(image)[0]
    assert result.predicted == int(probs.argmax()) and result.probability == pytest.approx(float(probs.max()))
    assert result.title.startswith("digits test #3 (label ") and (tmp_path / "e.png").stat().st_size > 1000
    assert [r["name"] for r in result.attributions] == [f"Integrated Gradients: class {result.predicted}",
                                                        "Integrated Gradients: nll (bits)"]
    assert all("completeness_error" in r for r in result.attributions) and "title" not in result.as_dict()
    with pytest.raises(RequestError, match="--index 450 is out of range"):
        explain_run(run.out_dir, index=450, device="cpu")
    with pytest.raises(RequestError, match="class 10 is out of range"):
        explain_run(run.out_dir, targets=[10], device="cpu")


@pytest.fixture(scope="module")
def converted_digits(tmp_path_factory):
    """The digits in the on-disk .npy layout, where `hybridflow data convert` puts a named set."""
    from hybridflow.data import convert_dataset

    root = tmp_path_factory.mktemp("data")
    convert_dataset("digits", root / "digits" / "train", train=True)
    convert_dataset("digits", root / "digits" / "test", train=False)
    return root


def test_train_run_streams_a_converted_dataset_and_ends_where_the_in_memory_run_ends(tmp_path, converted_digits,
                                                                                     monkeypatch):
    import hybridflow.data.spec as spec_module

    quiet = dict(device="cpu", progress=False, plot=False, backbone_options=TINY)
    settings = dict(steps=3, val_limit=40, labelled_fraction=0.1, batch_size=32)
    in_memory = train_run(settings, out_dir=tmp_path / "memory", log=lambda m: None, **quiet)
    loads = []
    original = spec_module.DataSpec.load
    monkeypatch.setattr(spec_module.DataSpec, "load", lambda self, train: loads.append(train) or original(self, train))
    messages: list[str] = []
    streamed = train_run({**settings, "data_root": str(converted_digits)}, out_dir=tmp_path / "disk",
                         log=messages.append, **quiet)
    assert loads == []  # neither split was loaded whole: the training set streamed, 40 test images were read
    assert "1,347 train images streamed from disk (" in messages[0] and ", 40 validation" in messages[0]
    labelled = int((keep_labels(load_digits_data(), 0.1, seed=0).labels >= 0).sum())
    assert f"({labelled:,} labelled)" in messages[0]  # 10% of each class kept: the labels kept in memory
    for key, value in streamed.model.state_dict().items():  # the same batches, labels and noise: the same model
        assert torch.equal(value, in_memory.model.state_dict()[key]), key
    assert streamed.result.metrics["val_bits_per_dim"] == in_memory.result.metrics["val_bits_per_dim"]
    data = find_run(tmp_path / "disk")["data"]
    assert data["name"] == "digits" and data["kind"] == "_KeptLabels" and data["num_examples"] == 1347


def test_train_run_writes_the_run_file_once_with_both_views(tmp_path, monkeypatch):
    import hybridflow.training.runfiles as runfiles

    written = []
    original = runfiles.write_run_file
    monkeypatch.setattr(runfiles, "write_run_file", lambda out, run: written.append(out) or original(out, run))
    run = train_run(dict(steps=2, val_limit=20, flip=True, num_workers=1), out_dir=tmp_path / "run", device="cpu",
                    progress=False, plot=False, backbone_options=TINY, log=lambda m: None)
    assert written == [tmp_path / "run"]
    saved = find_run(tmp_path / "run")
    assert saved["settings"]["flip"] is True and saved["train_config"]["flip"] is True  # the CLI's and train()'s view
    assert saved["train_config"]["num_workers"] == 1 and saved["model"] == run.model.config()
    assert saved["data"]["name"] == "digits" and saved["data"]["flip"] is True


def test_recipe_flip_and_workers_are_checked_before_the_data_loads(tmp_path):
    recipe = tmp_path / "flip.toml"
    recipe.write_text('name = "flip"\nflip = "yes"\n[cpu]\nsteps = 2\n[paper]\nsteps = 9\n')
    with pytest.raises(ValueError, match="TrainConfig.flip must be true or false, got 'yes'"):
        train_run(recipe=recipe, out_dir=tmp_path / "run", log=lambda m: None)
    recipe.write_text('name = "flip"\nflip = true\nnum_workers = -1\n[cpu]\nsteps = 2\n[paper]\nsteps = 9\n')
    with pytest.raises(ValueError, match="TrainConfig.num_workers must be an integer >= 0, got -1"):
        train_run(recipe=recipe, out_dir=tmp_path / "run", log=lambda m: None)
    assert not (tmp_path / "run").exists()


def test_a_run_trained_from_python_asks_for_the_dataset(tmp_path):
    from hybridflow.training import TrainConfig, train

    model = build_model("mixerflow_tiny", (1, 8, 8), 10, 1.0, OPTIONS, seed=0)
    train(model, load_digits_data().subset(range(64)), TrainConfig(steps=1, batch_size=32, progress=False,
                                                                   out_dir=tmp_path / "py"))
    with pytest.raises(RequestError, match=r"trained from Python on ImageData without a dataset name: name the "
                                           r"dataset to use \(--dataset\)"):
        evaluate_run(tmp_path / "py", device="cpu")
    assert evaluate_run(tmp_path / "py", dataset="digits", limit=20, device="cpu")["num_examples"] == 20


def test_resume_of_a_python_run_rebuilds_its_model_not_the_default(tmp_path):
    """run.json of Python's train() holds no "settings": the resume rebuilt the default
    mixerflow_tiny and failed on the checkpoint of another model."""
    from hybridflow.training import TrainConfig, train

    quiet = dict(device="cpu", progress=False, plot=False, log=lambda m: None)
    model = build_model("glow_tiny", (1, 8, 8), 10, 0.5, dict(num_steps=1, hidden=8), seed=0)
    train(model, load_digits_data().subset(range(64)), TrainConfig(steps=2, batch_size=32, lr=3e-3, progress=False,
                                                                   out_dir=tmp_path / "py"))
    with pytest.raises(RunFileError, match=r"trained from Python on ImageData \(64 images\) without a dataset name.*"
                                           r"--dataset NAME"):
        train_run(dict(steps=3), out_dir=tmp_path / "py", resume=True, **quiet)
    resumed = train_run(dict(steps=3, dataset="digits", val_limit=20), out_dir=tmp_path / "py", resume=True, **quiet)
    assert resumed.backbone == "glow_tiny" and resumed.result.steps == 3
    assert resumed.model.lam == 0.5 and resumed.settings["lr"] == 3e-3 and resumed.settings["batch_size"] == 32
    assert resumed.model.config()["backbone_options"] == model.config()["backbone_options"]


def test_resume_of_a_run_file_without_a_model_names_what_is_missing(tmp_path):
    quiet = dict(device="cpu", progress=False, plot=False, log=lambda m: None)
    out = tmp_path / "run"
    train_run(dict(steps=2, val_limit=20), out_dir=out, backbone_options=TINY, **quiet)
    write_run_file(out, {"model": None, "data": {"name": "digits"}})
    with pytest.raises(RunFileError, match=r"names no model \(the backbone and its options\)"):
        train_run(dict(steps=3), out_dir=out, resume=True, **quiet)
    write_run_file(out, {"model": {"backbone": "mixerflow_tiny", "lam": 1.0}, "data": {"name": "digits"}})
    with pytest.raises(RunFileError, match="lacks backbone_options, pooled"):
        train_run(dict(steps=3), out_dir=out, resume=True, **quiet)


def test_classes_train_on_those_only_and_later_commands_read_them(tmp_path):
    quiet = dict(device="cpu", progress=False, plot=False, log=lambda m: None)
    run = train_run(dict(steps=2, val_limit=500, classes="0-4"), out_dir=tmp_path / "run", backbone_options=TINY,
                    **quiet)
    saved = find_run(tmp_path / "run")
    assert saved["data"]["classes"] == [0, 1, 2, 3, 4] and saved["settings"]["classes"] == [0, 1, 2, 3, 4]
    assert run.result.history[-1]["num_examples"] == 226  # validation: the test images of 0-4 only
    assert run.model.num_classes == 10  # labels kept: the head has the dataset's classes
    spec = data_spec_from_run(saved)
    assert spec.classes == [0, 1, 2, 3, 4] and set(spec.load(train=False).labels.tolist()) == {0, 1, 2, 3, 4}
    assert data_spec_from_run(saved, classes="5-9").classes == [5, 6, 7, 8, 9]
    assert data_spec_from_run(saved, name="digits").classes is None  # another dataset named: all its classes
    assert evaluate_run(tmp_path / "run", device="cpu")["num_examples"] == 226
    with pytest.raises(ClassSelectionError, match="names no class"):
        train_run(dict(steps=2, classes=[]), out_dir=tmp_path / "other", **quiet)
    assert not (tmp_path / "other").exists()  # refused before the run folder is made
