"""Tests for hybridflow.factory: backbone names, fitted options, seeded model building, the listing."""

from __future__ import annotations

import pytest
import torch

from hybridflow.factory import (
    UnknownBackboneError,
    build_model,
    check_backbone_name,
    describe_backbones,
    fit_options,
)


def test_check_backbone_name():
    assert check_backbone_name("mixerflow") == "mixerflow_tiny" and check_backbone_name("glow_tiny") == "glow_tiny"
    with pytest.raises(UnknownBackboneError, match="unknown backbone 'resnet': choose one of .*mixerflow_tiny"):
        check_backbone_name("resnet")


def test_fit_options():
    assert fit_options("mixerflow_tiny", (1, 8, 8), {}) == {"patch_size": 2}
    assert fit_options("mixerflow_tiny", (3, 32, 32), {}) == {}
    assert fit_options("mixerflow_tiny", (1, 8, 8), {"patch_size": 4, "hidden": 8}, small=True) == \
        {"patch_size": 4, "hidden": 8, "num_layers": 4}
    assert fit_options("glow_tiny", (1, 8, 8), {}, small=True) == {"num_steps": 4, "hidden": 32}
    options = {"hidden": 8}
    fit_options("mixerflow_tiny", (1, 8, 8), options, small=True)
    assert options == {"hidden": 8}  # the caller's dict is left alone


def test_build_model_is_seeded_and_leaves_the_global_rng_alone():
    options = dict(patch_size=2, num_layers=1, hidden=8)
    state = torch.get_rng_state()
    a = build_model("mixerflow_tiny", (1, 8, 8), 10, 1.0, options, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    b = build_model("mixerflow_tiny", (1, 8, 8), 10, 1.0, options, seed=3)
    c = build_model("mixerflow_tiny", (1, 8, 8), 10, 1.0, options, seed=4)
    same = [torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values())]
    assert all(same)
    assert not all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), c.state_dict().values()))
    # the weights are those of HybridModel built right after torch.manual_seed(seed)
    from hybridflow.hybrid import HybridModel

    torch.manual_seed(3)
    direct = HybridModel("mixerflow_tiny", 10, lam=1.0, input_shape=(1, 8, 8), **options)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), direct.state_dict().values()))
    assert build_model("glow_tiny", (1, 8, 8), 0, 0.0, dict(hidden=8)).num_classes == 1  # a pure flow keeps a head
    assert build_model("mixerflow_tiny", (1, 8, 8), 2, 1.0, options, pooled=True).pooled


def test_describe_backbones():
    rows = describe_backbones("mixerflow_tiny*")
    assert rows and all(r["name"].startswith("mixerflow_tiny") and r["family"] == "mixerflow" for r in rows)
    assert all(r["description"] and "\n" not in r["description"] and "``" not in r["description"] for r in rows)
    counted = describe_backbones("glow_tiny", count_params=True)[0]
    assert counted["params"] > 0 and len(counted["input_shape"]) == 3
    assert describe_backbones("zzz*") == []


def test_check_backbone_options_types_each_value_and_names_the_key():
    from hybridflow.factory import BackboneOptionError, backbone_option_types, check_backbone_options

    assert backbone_option_types("mixerflow")["hidden"] is int and "input_shape" not in backbone_option_types("glow")
    assert check_backbone_options("mixerflow", {"patch_size": [2, 2], "shift": None, "num_bins": 5}) == \
        {"patch_size": (2, 2), "shift": None, "num_bins": 5}  # a coupling option passes through
    for options, words in [({"hidden": "abc"}, "hidden='abc' of mixerflow_tiny must be an integer"),
                           ({"linear": "X"}, "one of 'LU', 'RLU'"), ({"hidden": True}, "hidden=True"),
                           ({"patch_size": [2]}, "a list of 2 integers"), ({"input_shape": (1, 8, 8)}, "input_shape")]:
        with pytest.raises(BackboneOptionError, match=words):
            check_backbone_options("mixerflow", options)
    with pytest.raises(UnknownBackboneError):
        check_backbone_options("resnet", {})


def test_check_backbone_batch_size_builds_only_for_a_batch_of_one():
    from hybridflow.factory import check_backbone_batch_size
    from hybridflow.training.config import SettingsError

    check_backbone_batch_size("mixerflow_cifar10", {}, 64)  # cheap: nothing built
    check_backbone_batch_size("glow_tiny", dict(hidden=8, num_steps=1), 1)
    with pytest.raises(SettingsError, match="at least 2"):
        check_backbone_batch_size("mixerflow_tiny", dict(num_layers=1, hidden=8, steps=1), 1)
