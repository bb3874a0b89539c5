"""Glow: its step and level, the spline variant (NSF-Glow), and its registered configurations."""

from __future__ import annotations

import pytest
import torch

from hybridflow import create_backbone
from hybridflow.backbones.glow import Glow, glow_step
from hybridflow.flows import SplineCoupling
from tests.flow_checks import randomize


def test_nsf_glow_tiny_inverts_and_counts_bits():
    torch.manual_seed(0)
    flow = create_backbone("nsf_glow_tiny", input_shape=(1, 8, 8), num_steps=2, hidden=8)
    assert isinstance(flow, Glow) and flow.config["coupling"] == "spline"
    assert any(isinstance(m, SplineCoupling) for m in flow.modules())
    flow = randomize(flow, scale=0.1)
    u = torch.rand(3, 1, 8, 8)
    z, logdet = flow(u)
    assert (flow.inverse(z) - u).abs().max() < 1e-4
    bpd = flow.bits_per_dim(torch.randint(0, 256, (2, 1, 8, 8), dtype=torch.uint8))
    assert torch.isfinite(bpd).all() and bpd.min() > 0


def test_glow_default_is_unchanged_and_bad_couplings_are_named():
    glow = Glow((1, 8, 8), num_levels=1, num_steps=1, hidden=4)
    assert "coupling" not in glow.config
    assert not any(isinstance(m, SplineCoupling) for m in glow.modules())
    with pytest.raises(ValueError, match="coupling"):
        Glow((1, 8, 8), num_levels=1, num_steps=1, hidden=4, coupling="maf")
    with pytest.raises(ValueError, match="num_bins"):
        create_backbone("glow_tiny", num_bins=4)


def test_paper_config_size():
    assert 9e6 < create_backbone("glow_cifar10").num_params < 14e6  # paper's Glow: 11.02M


def test_affine_glow_step_takes_no_spline_options():
    with pytest.raises(TypeError, match="takes no options"):
        glow_step(4, 8, num_bins=3)


def test_glow_latent_keeps_the_image_shape_and_sizes_its_levels():
    flow = Glow((3, 8, 8), num_levels=3, num_steps=1, hidden=4)
    z, logdet = flow(torch.rand(2, 3, 8, 8))
    assert z.shape == (2, 3, 8, 8) and logdet.shape == (2,)
    with pytest.raises(ValueError, match="must be positive"):
        Glow((1, 8, 8), num_levels=0)
