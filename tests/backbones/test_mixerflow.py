"""MixerFlow: its blocks, its couplings, and its registered configurations (the paper's Table 9
and the small CPU ones)."""

from __future__ import annotations

import pytest
import torch

from hybridflow import create_backbone
from hybridflow.backbones.mixerflow import MixerFlow, MixerLayer, MixingFlow, Transpose
from hybridflow.flows import ActNorm, LULinear, ShiftedFlow
from tests.flow_checks import randomize


@pytest.mark.parametrize("coupling", ["affine", "spline", "maf", "kan"])
def test_mixerflow_with_each_coupling_inverts(coupling):
    torch.manual_seed(0)
    flow = MixerFlow((1, 8, 8), patch_size=2, num_layers=2, hidden=8, steps=1, shift_every=2, coupling=coupling)
    flow = randomize(flow, scale=0.1)
    u = torch.rand(3, 1, 8, 8)
    z, logdet = flow(u)
    assert torch.isfinite(z).all() and torch.isfinite(logdet).all()
    assert (flow.inverse(z) - u).abs().max() < 1e-4
    assert flow.config["coupling"] == coupling


@pytest.mark.parametrize("name, coupling", [("mixerflow_mnist_mlp", "affine"), ("mixerflow_mnist_kan", "kan"),
                                            ("mixerflow_mnist_spline", "spline"), ("mixerflow_mnist_maf", "maf"),
                                            ("mixerflow_tiny_kan", "kan")])
def test_variant_configs_take_overrides(name, coupling):
    flow = create_backbone(name, input_shape=(1, 8, 8), patch_size=2, num_layers=1, hidden=8).eval()
    assert flow.config["coupling"] == coupling and flow.input_shape == (1, 8, 8)
    x = torch.randint(0, 256, (2, 1, 8, 8), dtype=torch.uint8)
    assert torch.isfinite(flow.bits_per_dim(x)).all()


def test_mnist_variant_has_table_8_depth():
    config = create_backbone("mixerflow_mnist_spline").config
    assert (config["num_layers"], config["hidden"], config["linear"], config["shift"]) == (30, 64, "RLU", None)


def test_paper_config_size():
    cifar = create_backbone("mixerflow_cifar10")
    assert cifar.input_shape == (3, 32, 32) and cifar.config["num_layers"] == 30
    assert 10e6 < cifar.num_params < 15e6  # the paper reports 11.34M


def test_every_shift_every_th_layer_is_a_shift_layer():
    flow = MixerFlow((1, 8, 8), patch_size=2, num_layers=4, hidden=8, steps=1, shift=1, shift_every=2)
    shifted = [m for m in flow.modules() if isinstance(m, ShiftedFlow)]
    assert len(shifted) == 2 and shifted[0].shift == (1, 1)
    assert not any(isinstance(m, ShiftedFlow)
                   for m in MixerFlow((1, 8, 8), patch_size=2, num_layers=4, hidden=8, steps=1, shift=None).modules())


def test_mixing_flow_acts_on_each_row_alone():
    """One batched step for all rows (no Python loop over them): a row's output depends on that row alone."""
    flow = randomize(MixingFlow(5, 4, hidden=8, steps=2), scale=0.2)
    x = torch.randn(2, 5, 4)
    changed = x.clone()
    changed[:, 3] += 1.0
    y, y_changed = flow(x)[0], flow(changed)[0]
    rows = [0, 1, 2, 4]
    # ActNorm is per element, so a row is its own function of that row: the others do not move
    assert torch.equal(y[:, rows], y_changed[:, rows]) and not torch.allclose(y[:, 3], y_changed[:, 3])


def test_mixing_flow_with_one_feature_is_actnorms_and_linear_blocks():
    flow = MixingFlow(3, 1, hidden=8, steps=2)
    assert [type(m) for m in flow.flows] == [ActNorm, LULinear, ActNorm, LULinear, ActNorm]


def test_mixer_layer_mixes_channels_then_patches_through_a_transpose():
    layer = MixerLayer(4, 6, hidden=8, steps=1)
    kinds = [type(m) for m in layer.flows]
    assert kinds == [MixingFlow, Transpose, MixingFlow, Transpose]
    assert layer.flows[0].flows[1].dim == 6 and layer.flows[2].flows[1].dim == 4  # rows, then columns
