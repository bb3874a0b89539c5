"""Fixtures of the bad-input suite: tiny models (a training step takes milliseconds) and one thread."""

from __future__ import annotations

import pytest
import torch

from hybridflow.backbones import create_backbone
from hybridflow.hybrid import HybridModel

#: A one-layer MixerFlow on 2x2 patches of 8x8 images, and a two-level Glow of one step.
MIXER = dict(patch_size=2, num_layers=1, hidden=8, steps=1)
GLOW = dict(hidden=8, num_steps=1, num_levels=2)
SHAPE = (1, 8, 8)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def mixerflow(**overrides):
    return create_backbone("mixerflow_tiny", input_shape=SHAPE, **{**MIXER, **overrides})


def glow(**overrides):
    return create_backbone("glow_tiny", input_shape=SHAPE, **{**GLOW, **overrides})


@pytest.fixture(scope="module")
def models() -> dict:
    """A fresh MixerFlow, Glow and hybrid model, in evaluation mode (no ActNorm initialisation)."""
    torch.manual_seed(0)
    return dict(mixerflow=mixerflow().eval(), glow=glow().eval(),
                hybrid=HybridModel("mixerflow_tiny", 3, input_shape=SHAPE, **MIXER).eval())
