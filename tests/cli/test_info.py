"""`hybridflow backbones` and `hybridflow recipes`."""

from __future__ import annotations

import json

from tests.cli.runner import run


def test_backbones_lists_the_registry():
    payload = json.loads(run("backbones", "--json").stdout)
    names = [r["name"] for r in payload["backbones"]]
    assert "mixerflow_tiny" in names and "glow_tiny" in names and payload["families"]["mixerflow"] == "mixerflow_tiny"
    counted = json.loads(run("backbones", "--pattern", "mixerflow_tiny", "--params", "--json").stdout)["backbones"]
    assert counted[0]["params"] > 0 and counted[0]["input_shape"] == [1, 28, 28]


def test_recipes_command_lists_them():
    listing = json.loads(run("recipes", "--json").stdout)["recipes"]
    assert {r["name"] for r in listing} >= {"cifar10_density", "mnist_density", "cifar10_probe"}
    assert "Table 1" in run("recipes").stdout
