"""Backbone configurations small enough for a full Jacobian (1 and 3 channels, square or not), the
CPU configurations at their real size, and random integer images: shared by the backbone tests."""

from __future__ import annotations

import torch

from hybridflow import create_backbone
from hybridflow.backbones import FlowBackbone

__all__ = ["REAL", "SMALL", "make", "pixels"]

# case -> (config, overrides)
SMALL = {
    "mixerflow_1x8x8": ("mixerflow_tiny", dict(input_shape=(1, 8, 8), patch_size=2, num_layers=4, hidden=8, steps=1)),
    "mixerflow_3x4x6": ("mixerflow_tiny", dict(input_shape=(3, 4, 6), patch_size=2, num_layers=4, hidden=8, steps=1)),
    "mixerflow_rlu_noshift": ("mixerflow_mnist",
                              dict(input_shape=(1, 8, 8), patch_size=4, num_layers=2, hidden=8, steps=1)),
    "mixerflow_shift2_p4": ("mixerflow_64", dict(input_shape=(3, 8, 8), patch_size=4, num_layers=4, hidden=8, steps=1)),
    # Jet's coupling design (issue 20) and a patch schedule, all at once
    "mixerflow_jet_schedule": ("mixerflow_tiny", dict(input_shape=(1, 8, 8), patch_size=2, num_layers=4, hidden=8,
                                                      steps=2, patch_steps=1, linear="permute", scale="sigmoid2",
                                                      patch_sizes=[2, 4])),
    "glow_1x8x8": ("glow_tiny", dict(input_shape=(1, 8, 8), num_steps=2, hidden=8)),
    "glow_3x4x8": ("glow_tiny", dict(input_shape=(3, 4, 8), num_levels=2, num_steps=2, hidden=8)),
}
# the CPU configurations at their real size
REAL = ["mixerflow_tiny", "mixerflow_small", "mixerflow_wide", "glow_tiny"]


def make(case: str, **extra) -> FlowBackbone:
    name, overrides = SMALL[case]
    return create_backbone(name, **overrides, **extra)


def pixels(shape, n=4, seed=0) -> torch.Tensor:
    return torch.randint(0, 256, (n, *shape), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)
