"""Fixtures of the device tests: the 8x8 digits and tiny initialised models, built on the CPU
from a seed (so every device starts from the same weights) and moved to ``--device``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hybridflow import HybridModel, create_backbone
from hybridflow.backbones import FlowBackbone
from hybridflow.data import ImageData, load_digits_data

# one mixer layer / one Glow level of two steps: every call here takes milliseconds
BACKBONES = {
    "mixerflow": ("mixerflow_tiny", dict(input_shape=(1, 8, 8), patch_size=2, num_layers=1, hidden=8)),
    "glow": ("glow_tiny", dict(input_shape=(1, 8, 8), num_steps=2, hidden=8)),
}
KWARGS = dict(patch_size=2, num_layers=1, hidden=8)  # the same MixerFlow as backbone_kwargs of the estimators


@pytest.fixture(scope="package")
def digits() -> tuple[ImageData, ImageData]:
    """64 training and 32 validation digits."""
    data = load_digits_data(train=True)
    return data.subset(np.arange(64)), data.subset(np.arange(64, 96))


@pytest.fixture(scope="package")
def images(digits) -> torch.Tensor:
    """16 uint8 digits (16, 1, 8, 8) on the CPU."""
    return digits[0].images[:16]


def backbone(kind: str, images: torch.Tensor) -> FlowBackbone:
    """A tiny backbone, seeded and initialised (ActNorm) on ``images`` on the CPU, in evaluation mode."""
    name, options = BACKBONES[kind]
    torch.manual_seed(0)
    flow = create_backbone(name, **options)
    flow.train()
    flow.log_prob(images)  # data-dependent initialisation, on the CPU for every device alike
    return flow.eval()


def hybrid(images: torch.Tensor, labels: torch.Tensor) -> HybridModel:
    """A tiny MixerFlow hybrid model, seeded and initialised on the CPU, in evaluation mode."""
    torch.manual_seed(0)
    model = HybridModel("mixerflow_tiny", 10, **BACKBONES["mixerflow"][1])
    model.train()
    model(images, labels)
    return model.eval()


def close_tolerance(device: torch.device) -> float:
    """bits/dim agreement between a device and the CPU: CUDA convolutions may run in TF32."""
    return 1e-6 if device.type == "cpu" else 2e-3
