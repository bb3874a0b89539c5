"""The registered configurations: the paper's (Table 9) and small ones that train on a CPU.

Every factory takes ``input_shape`` and any constructor argument as an override.
"""

from __future__ import annotations

from .glow import Glow
from .mixerflow import MixerFlow
from .registry import register_backbone

__all__: list[str] = []


def _mixerflow(defaults: dict, overrides: dict) -> MixerFlow:
    return MixerFlow(**{**defaults, **overrides})


def _glow(defaults: dict, overrides: dict) -> Glow:
    return Glow(**{**defaults, **overrides})


@register_backbone
def mixerflow_cifar10(**overrides) -> MixerFlow:
    """Table 9, CIFAR-10 / ImageNet32: 30 layers, patch 4, hidden 128, shift 1, LU."""
    return _mixerflow(dict(input_shape=(3, 32, 32), patch_size=4, num_layers=30, hidden=128, steps=4,
                           shift=1, linear="LU"), overrides)


@register_backbone
def mixerflow_galaxy32(**overrides) -> MixerFlow:
    """Table 9, Galaxy32: as CIFAR-10 with hidden 64."""
    return _mixerflow(dict(input_shape=(3, 32, 32), patch_size=4, num_layers=30, hidden=64, steps=4,
                           shift=1, linear="LU"), overrides)


@register_backbone
def mixerflow_mnist(**overrides) -> MixerFlow:
    """Table 9, MNIST: 30 layers, patch 4, hidden 64, no shift, RLU (affine coupling here; the
    paper's MNIST model uses MAF steps)."""
    return _mixerflow(dict(input_shape=(1, 28, 28), patch_size=4, num_layers=30, hidden=64, steps=4,
                           shift=None, linear="RLU"), overrides)


@register_backbone
def mixerflow_64(**overrides) -> MixerFlow:
    """Table 9, ImageNet64 / AnimeFaces: 30 layers, patch 8, hidden 128, shift 2."""
    return _mixerflow(dict(input_shape=(3, 64, 64), patch_size=8, num_layers=30, hidden=128, steps=4,
                           shift=2, linear="LU"), overrides)


@register_backbone
def mixerflow_small(**overrides) -> MixerFlow:
    """A CPU-sized model for MNIST-like data: 12 layers, 2 steps, hidden 96."""
    return _mixerflow(dict(input_shape=(1, 28, 28), patch_size=4, num_layers=12, hidden=96, steps=2,
                           shift=1, linear="LU"), overrides)


@register_backbone
def mixerflow_tiny(**overrides) -> MixerFlow:
    """The smallest useful MixerFlow, for tests, the CLI default and CPU benchmarks."""
    return _mixerflow(dict(input_shape=(1, 28, 28), patch_size=4, num_layers=8, hidden=64, steps=2,
                           shift=1, linear="LU"), overrides)


@register_backbone
def mixerflow_wide(**overrides) -> MixerFlow:
    """The fast CPU MixerFlow: 4 layers of width 96, at the size of normflows' Glow reference.

    normflows' Glow with L=2, K=8 and 128 channels has 435,360 parameters; this has 435,337 on
    1x28x28, spent on fewer, wider layers than ``mixerflow_tiny``'s 8 of width 64.

    With shared weights a conditioner's matmul cost grows with its parameters, its element-wise
    work (GELU, BatchNorm, clamps) with its width, and the per-call overhead with the number of
    conditioners. Half the layers at 1.5x the width keep the parameters and the matmul work (23.2
    against 23.8 forward MFLOP per image), cut the element-wise work by a quarter and halve the
    kernel calls. Measured on 2 CPU threads, batch 128, bfloat16 conditioners
    (``bench/throughput.py``, 7 rounds): it trains 1.55x and scores (``log_prob``) 1.54x faster
    than ``mixerflow_tiny``. After 4 minutes of training (``bench/density.py``) it reaches 1.630
    bits/dim on MNIST against tiny's 1.623, and 3.487 on Fashion-MNIST against 3.525.

    Example:
        >>> from hybridflow import create_backbone
        >>> create_backbone("mixerflow_wide").num_params
        435337
    """
    return _mixerflow(dict(input_shape=(1, 28, 28), patch_size=4, num_layers=4, hidden=96, steps=2,
                           shift=1, linear="LU"), overrides)


@register_backbone
def glow_cifar10(**overrides) -> Glow:
    """Glow at the size the paper compares with on CIFAR-10 (about 11M parameters)."""
    return _glow(dict(input_shape=(3, 32, 32), num_levels=3, num_steps=16, hidden=320), overrides)


@register_backbone
def glow_mnist(**overrides) -> Glow:
    """Glow for 28x28 grey images: 2 levels of 16 steps, hidden 256."""
    return _glow(dict(input_shape=(1, 28, 28), num_levels=2, num_steps=16, hidden=256), overrides)


@register_backbone
def glow_tiny(**overrides) -> Glow:
    """A CPU-sized Glow, the baseline beside ``mixerflow_tiny``."""
    return _glow(dict(input_shape=(1, 28, 28), num_levels=2, num_steps=8, hidden=128), overrides)
