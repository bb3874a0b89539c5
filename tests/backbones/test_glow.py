"""Glow: its step and level, the spline variant (NSF-Glow), and its registered configurations."""

from __future__ import annotations

import pytest
import torch

from hybridflow import create_backbone
from hybridflow.backbones.glow import Glow, GlowLevel, glow_step
from hybridflow.flows import SplineCoupling
from tests.backbones.cases import SMALL, make
from tests.flow_checks import perturb, randomize
from tests.flows.test_invertible_backprop import backbone_gradients_match


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


# -- invertible backprop (issue 17): the steps' activations rebuilt by inversion ---------------------
@pytest.mark.parametrize("case", [c for c in SMALL if c.startswith("glow")])
def test_invertible_backprop_gives_ordinary_gradients(case):
    backbone_gradients_match(make(case))


def test_invertible_backprop_with_spline_couplings():
    """To 1e-6, not 1e-8: a spline's inverse solves a quadratic, which rebuilds the input to only
    1e-13..5e-12 in float64 (measured), and the steep bins of these perturbed splines amplify
    that into gradients that differ by up to ~3e-8 relative."""
    backbone_gradients_match(create_backbone("nsf_glow_tiny", input_shape=(1, 8, 8), num_steps=2, hidden=8),
                             atol=1e-6)


def test_the_factored_out_half_gets_its_gradient_through_the_rebuilt_steps():
    """A loss on the first level's factored-out half alone: its gradient flows back through the
    split's prior and into the first level's steps, whose activations are rebuilt."""
    torch.manual_seed(0)
    flow = perturb(Glow((1, 8, 8), num_levels=2, num_steps=2, hidden=8).double().train(), 0.05, generator=0)
    u = torch.rand(8, 1, 8, 8, dtype=torch.float64)
    flow(u)  # ActNorm initialisation
    level = flow.body
    steps = list(level.steps.parameters())

    def gradients() -> list[torch.Tensor]:
        z, _ = flow(u)
        factored = level.squeeze(z)[0][:, level.kept:]  # the first level's factored-out channels
        return torch.autograd.grad(factored.square().sum(), steps)

    reference = gradients()
    flow.invertible_backprop = True
    for a, b in zip(gradients(), reference, strict=True):
        torch.testing.assert_close(a, b, atol=1e-8, rtol=1e-8)
    assert sum(float(g.abs().sum()) for g in reference) > 1e-3


def test_invertible_backprop_switches_every_level():
    flow = create_backbone("glow_tiny", invertible_backprop=True)
    levels = [m for m in flow.modules() if isinstance(m, GlowLevel)]
    assert len(levels) == 2 and all(level.invertible_backprop for level in levels)
    flow.invertible_backprop = False
    assert not any(level.invertible_backprop for level in levels) and "invertible_backprop" not in flow.config
    with pytest.raises(ValueError, match="invertible_backprop"):
        create_backbone("glow_tiny", invertible_backprop=1)
