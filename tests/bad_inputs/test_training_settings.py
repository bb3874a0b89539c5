"""Training settings that cannot work are refused when made, with the setting named: TrainConfig,
the model-dependent batch-size check, the merged settings of a run and train() itself."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from hybridflow.data import ImageData
from hybridflow.factory import BackboneOptionError, UnknownBackboneError, check_train_settings
from hybridflow.hybrid import HybridModel
from hybridflow.runs import TRAIN_DEFAULTS
from hybridflow.training import TrainConfig, train
from hybridflow.training.config import SettingsError, check_batch_size
from hybridflow.training.distributed import DeviceError
from tests.bad_inputs.conftest import MIXER, SHAPE, glow, mixerflow

NAN, INF = math.nan, math.inf


@pytest.mark.parametrize("kwargs, words", [
    (dict(lr=NAN), "TrainConfig.lr must be a finite number > 0, got nan"),
    (dict(lr=INF), "TrainConfig.lr .* got inf"),
    (dict(lr=-1e-3), "TrainConfig.lr .* > 0"),
    (dict(lr=0.0), "TrainConfig.lr .* > 0"),
    (dict(lr="1e-3"), "TrainConfig.lr must be a number, got str"),
    (dict(steps=0), "TrainConfig.steps must be a positive integer"),
    (dict(steps=-5), "TrainConfig.steps"),
    (dict(steps=2.5), "TrainConfig.steps .* got 2.5"),
    (dict(steps=True), "TrainConfig.steps"),
    (dict(epochs=0), "TrainConfig.epochs"),
    (dict(batch_size=0), "TrainConfig.batch_size"),
    (dict(batch_size=NAN), "TrainConfig.batch_size"),
    (dict(warmup_steps=-1), "TrainConfig.warmup_steps must be an integer >= 0"),
    (dict(betas=(0.9, NAN)), "TrainConfig.betas"),
    (dict(betas=(0.9, 1.0)), "TrainConfig.betas"),
    (dict(betas=(0.9,)), "TrainConfig.betas must be two numbers"),
    (dict(grad_clip=NAN), "TrainConfig.grad_clip"),
    (dict(grad_clip=INF), "TrainConfig.grad_clip .* \\(or None\\)"),
    (dict(grad_clip=0.0), "TrainConfig.grad_clip"),
    (dict(ema_decay=NAN), "TrainConfig.ema_decay"),
    (dict(ema_decay=1.0), "TrainConfig.ema_decay"),
    (dict(ema_decay=-0.5), "TrainConfig.ema_decay"),
    (dict(max_seconds=NAN), "TrainConfig.max_seconds"),
    (dict(max_seconds=INF), "TrainConfig.max_seconds"),
    (dict(max_seconds=-1.0), "TrainConfig.max_seconds"),
    (dict(lr_schedule="linear"), "TrainConfig.lr_schedule"),
    (dict(log_every=0), "TrainConfig.log_every"),
    (dict(max_nonfinite=0), "TrainConfig.max_nonfinite"),
    (dict(seed=1.5), "TrainConfig.seed must be an integer"),
    (dict(device=3), "TrainConfig.device"),
])
def test_train_config_refuses_and_names_the_field(kwargs, words):
    with pytest.raises(SettingsError, match=words):
        TrainConfig(**kwargs)
    assert issubclass(SettingsError, ValueError)  # callers catching ValueError still do


def test_train_config_accepts_numpy_and_torch_numbers_as_plain_ones():
    import numpy as np

    config = TrainConfig(steps=np.int64(5), batch_size=np.int32(8), lr=np.float32(1e-3), grad_clip=torch.tensor(2.0))
    assert (type(config.steps), type(config.batch_size), type(config.lr), type(config.grad_clip)) == (
        int, int, float, float)


@pytest.mark.parametrize("make, batch, error", [
    (lambda: mixerflow(), 1, "batch_size must be at least 2 for a model with BatchNorm layers"),
    (lambda: HybridModel("mixerflow_tiny", 3, input_shape=SHAPE, **MIXER), 1, "BatchNorm1d"),
    (lambda: mixerflow(coupling="kan"), 1, "at least 2"),
    (lambda: nn.BatchNorm2d(3), 1, "BatchNorm2d"),
    (lambda: mixerflow(), 0, "positive integer"),
    (lambda: mixerflow(), 2.0, "positive integer"),
])
def test_check_batch_size_refuses_what_batch_norm_cannot_train_on(make, batch, error):
    with pytest.raises(SettingsError, match=error):
        check_batch_size(make(), batch)


def test_check_batch_size_lets_actnorm_only_models_train_on_one_image():
    check_batch_size(glow(), 1)  # Glow normalises with ActNorm: a batch of one is well defined
    check_batch_size(mixerflow(coupling="maf"), 1)
    check_batch_size(mixerflow(), 2)


def _settings(**changes):
    return {**TRAIN_DEFAULTS, "backbone_options": dict(MIXER), **changes}


@pytest.mark.parametrize("changes, error, words", [
    (dict(lam=NAN), SettingsError, "lam must be a finite number >= 0, got nan"),
    (dict(lam=-1.0), SettingsError, "lam"),
    (dict(lam="1"), SettingsError, "lam"),
    (dict(lr=INF), SettingsError, "TrainConfig.lr"),
    (dict(steps=-1), SettingsError, "TrainConfig.steps"),
    (dict(batch_size=1), SettingsError, "batch_size must be at least 2"),
    (dict(labelled_fraction=0.0), SettingsError, "labelled_fraction"),
    (dict(labelled_fraction=NAN), SettingsError, "labelled_fraction"),
    (dict(limit=0), SettingsError, "limit must be a positive integer"),
    (dict(val_limit=-3), SettingsError, "val_limit"),
    (dict(backbone="resnet"), UnknownBackboneError, "unknown backbone 'resnet'"),
    (dict(backbone_options=dict(hidden="abc")), BackboneOptionError, "hidden='abc' of mixerflow_tiny must be an integer"),
    (dict(backbone_options=dict(patch_size=[2, "a"])), BackboneOptionError, "patch_size"),
    (dict(backbone_options=dict(linear="XLU")), BackboneOptionError, "linear='XLU' .* one of 'LU', 'RLU'"),
    (dict(backbone_options=dict(compile_couplings="yes")), BackboneOptionError, "compile_couplings=.* true or false"),
    (dict(backbone_options=dict(input_shape=[1, 8, 8])), BackboneOptionError, "input_shape cannot be set"),
    (dict(backbone="glow", backbone_options=dict(num_steps=1.5)), BackboneOptionError, "num_steps=1.5 of glow_tiny"),
])
def test_check_train_settings_names_the_setting(changes, error, words):
    with pytest.raises(error, match=words):
        check_train_settings(_settings(**changes))


@pytest.mark.parametrize("device, words", [("gpu", "unknown device 'gpu'"), ("cuda:7", "cuda:7"), ("cpu:3", "cpu:3")])
def test_check_train_settings_refuses_devices_this_machine_lacks(device, words):
    if device == "cuda:7" and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    with pytest.raises(DeviceError, match=words):
        check_train_settings(_settings(), device=device)


def test_check_train_settings_accepts_glow_on_one_image_and_types_the_options():
    options = check_train_settings(_settings(backbone="glow", batch_size=1, backbone_options=dict(hidden=8)))
    assert options == {"hidden": 8}
    assert check_train_settings(_settings(backbone_options=dict(patch_size=[2, 2])))["patch_size"] == (2, 2)


def _hybrid() -> HybridModel:
    torch.manual_seed(0)
    return HybridModel("mixerflow_tiny", 3, input_shape=SHAPE, **MIXER)


def _data(n: int) -> ImageData:
    generator = torch.Generator().manual_seed(0)
    return ImageData(torch.randint(0, 256, (n, *SHAPE), generator=generator), torch.arange(n) % 3)


def test_train_refuses_batches_of_one_for_batch_norm():
    with pytest.raises(SettingsError, match="batch_size must be at least 2"):
        train(_hybrid(), _data(10), TrainConfig(steps=1, batch_size=1, progress=False))


def test_train_refuses_a_single_training_image_for_batch_norm():
    with pytest.raises(SettingsError, match="at least 2"):
        train(_hybrid(), _data(1), TrainConfig(steps=1, batch_size=64, progress=False))


@pytest.mark.parametrize("data, config, error, words", [
    (lambda: ImageData(torch.randint(0, 256, (4, *SHAPE)), torch.full((4,), 5)), {}, ValueError, "label 5 .* only 3"),
    (lambda: ImageData(torch.randint(0, 256, (4, 3, 8, 8)), torch.zeros(4, dtype=torch.long)), {}, ValueError,
     "shape"),
    (lambda: torch.zeros(4, *SHAPE), {}, TypeError, "ImageData"),
    (lambda: _data(4), dict(device="gpu"), DeviceError, "unknown device 'gpu'"),
])
def test_train_refuses_bad_data_and_devices(data, config, error, words):
    with pytest.raises(error, match=words):
        train(_hybrid(), data(), TrainConfig(steps=1, batch_size=2, progress=False, **config))
