"""Tests for hybridflow.runs: run folders, loading a trained model, the data a run used, sampling."""

from __future__ import annotations

import json

import pytest
import torch

from hybridflow.data import DataSpec, ImageData, LocalShuffle, UnknownDatasetError
from hybridflow.factory import build_model
from hybridflow.runs import (
    RUN_FILE,
    CheckpointNotFoundError,
    DataShapeError,
    RunFolderError,
    check_data_shape,
    data_spec_from_run,
    default_run_folder,
    find_run,
    load_model,
    prepare_run_folder,
    sample_images,
    write_run_file,
)
from hybridflow.training import save_checkpoint

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
    path.write_text("{ damaged")
    assert find_run(deep) == {}


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
