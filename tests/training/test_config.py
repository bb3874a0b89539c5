"""TrainConfig: settings are checked when made, and their names are in the errors."""

from __future__ import annotations

import pytest

from hybridflow.hybrid import HybridModel
from hybridflow.training import TrainConfig, train
from tests.training.helpers import TINY, tiny_config, tiny_model


def test_bad_settings_are_named(digits):
    train_data, _ = digits
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="betas"):
        TrainConfig(betas=(0.9, 1.5))
    with pytest.raises(ValueError, match="ema_decay"):
        TrainConfig(ema_decay=1.0)
    with pytest.raises(ValueError, match="shape"):
        train(HybridModel("mixerflow_tiny", 10, patch_size=4, num_layers=1), train_data, tiny_config())
    with pytest.raises(ValueError, match="only 3 classes"):
        train(HybridModel("mixerflow_tiny", 3, **TINY), train_data, tiny_config())


def test_schedule_and_time_budget_are_checked():
    with pytest.raises(ValueError, match="lr_schedule"):
        TrainConfig(lr_schedule="linear")
    with pytest.raises(ValueError, match="max_seconds"):
        TrainConfig(max_seconds=-1.0)
    assert TrainConfig(max_seconds=0.0, lr_schedule="constant").max_seconds == 0.0


def test_to_dict_is_plain_json_and_rebuilds_the_config(tmp_path):
    config = TrainConfig(steps=5, out_dir=tmp_path, betas=(0.8, 0.9))
    data = config.to_dict()
    assert data["out_dir"] == str(tmp_path) and data["betas"] == [0.8, 0.9]
    assert TrainConfig(**data) == TrainConfig(steps=5, out_dir=str(tmp_path), betas=(0.8, 0.9))


def test_non_finite_settings_are_refused_with_the_field_named():
    from hybridflow.training.config import SettingsError

    for kwargs, field in [(dict(lr=float("nan")), "lr"), (dict(grad_clip=float("inf")), "grad_clip"),
                          (dict(max_seconds=float("nan")), "max_seconds"), (dict(betas=(0.9, float("nan"))), "betas")]:
        with pytest.raises(SettingsError, match=f"TrainConfig.{field} must be a finite number"):
            TrainConfig(**kwargs)


def test_check_batch_size_needs_two_images_only_with_batch_norm():
    from torch import nn

    from hybridflow.training.config import SettingsError, check_batch_size, uses_batch_statistics

    mixer = HybridModel("mixerflow_tiny", 3, **TINY)
    glow = HybridModel("glow_tiny", 3, input_shape=(1, 8, 8), hidden=8, num_steps=1)
    assert uses_batch_statistics(mixer) and not uses_batch_statistics(glow)
    with pytest.raises(SettingsError, match="batch_size must be at least 2 .*BatchNorm1d.*got 1"):
        check_batch_size(mixer, 1)
    check_batch_size(glow, 1)
    check_batch_size(mixer, 2)
    with pytest.raises(SettingsError, match="train_data holds"):
        check_batch_size(nn.BatchNorm1d(2), 1, what="train_data holds 1 image: batch_size")


def test_labelled_per_batch_is_a_count_below_the_batch_size():
    from hybridflow.training.config import SettingsError

    assert TrainConfig(batch_size=64, labelled_per_batch=16).labelled_per_batch == 16
    assert TrainConfig().labelled_per_batch is None
    assert TrainConfig(labelled_per_batch=16).to_dict()["labelled_per_batch"] == 16
    for bad in (0, -2, 2.5, True, "16"):
        with pytest.raises(SettingsError, match="TrainConfig.labelled_per_batch must be a positive integer or None"):
            TrainConfig(labelled_per_batch=bad)
    for k in (64, 65):
        with pytest.raises(SettingsError, match=r"labelled_per_batch must be below batch_size \(64\).*got " + str(k)):
            TrainConfig(batch_size=64, labelled_per_batch=k)


def test_settings_that_do_not_fit_the_data_are_refused_or_named(digits):
    train_data, _ = digits
    small = train_data.subset(list(range(40)))
    # a shift of a whole side can move an 8x8 digit out of frame: refused before any step
    with pytest.raises(ValueError, match=r"translate must be below the image side \(8 pixels"):
        train(tiny_model(), small, tiny_config(translate=8))
    # a batch larger than the data trains on all of it, and says so
    with pytest.warns(UserWarning, match="batch_size 64 is larger than the 40 training examples"):
        result = train(tiny_model(), small, tiny_config(steps=2, batch_size=64, translate=7))
    assert result.steps == 2
    # a warm-up longer than the run never reaches lr
    with pytest.warns(UserWarning, match="warmup_steps 5 is not below steps 2"):
        train(tiny_model(), small, tiny_config(steps=2, warmup_steps=5))
