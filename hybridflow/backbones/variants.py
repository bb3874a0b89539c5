"""Registered configurations with other flow layers in place of the affine coupling.

MixerFlow with the couplings of the paper's Table 8 (MNIST, 30 layers: MLP / KAN / spline / MAF),
their CPU-sized counterparts, and the Neural-Spline-Flow Glow baseline (``nsf_glow_*``). Every
factory takes ``input_shape`` and any constructor argument as an override, as in ``configs.py``.

Example:
    >>> from hybridflow import create_backbone, list_backbones
    >>> "mixerflow_mnist_spline" in list_backbones("mixerflow_mnist_*")
    True
    >>> create_backbone("mixerflow_tiny_maf", input_shape=(1, 8, 8), patch_size=2).config["coupling"]
    'maf'
"""

from __future__ import annotations

from .glow import Glow
from .mixerflow import MixerFlow
from .registry import register_backbone

__all__: list[str] = []

# Table 9's MNIST column (30 layers, patch 4, hidden 64, 4 steps, no shift, RLU).
_MNIST = dict(input_shape=(1, 28, 28), patch_size=4, num_layers=30, hidden=64, steps=4, shift=None, linear="RLU")
# ``mixerflow_tiny``'s settings, so the tiny variants differ from it only in the coupling.
_TINY = dict(input_shape=(1, 28, 28), patch_size=4, num_layers=8, hidden=64, steps=2, shift=1, linear="LU")
# Neural Spline Flows' image spline settings (Durkan et al. 2019, 8-bit configs): 8 bins on
# [-3, 3], minimum bin width, height and derivative 1e-3.
_NSF_SPLINE = dict(coupling="spline", num_bins=8, tail_bound=3.0)


def _mixerflow(defaults: dict, coupling: str, overrides: dict) -> MixerFlow:
    return MixerFlow(**{**defaults, "coupling": coupling, **overrides})


def _glow(defaults: dict, overrides: dict) -> Glow:
    return Glow(**{**defaults, **_NSF_SPLINE, **overrides})


@register_backbone
def mixerflow_mnist_mlp(**overrides) -> MixerFlow:
    """Table 8, MLP coupling: ``mixerflow_mnist`` with affine couplings (ResidualMLP conditioners)."""
    return _mixerflow(_MNIST, "affine", overrides)


@register_backbone
def mixerflow_mnist_kan(**overrides) -> MixerFlow:
    """Table 8, KAN coupling: affine couplings whose conditioners are 2-layer KANs (grid 5, cubic)."""
    return _mixerflow(_MNIST, "kan", overrides)


@register_backbone
def mixerflow_mnist_spline(**overrides) -> MixerFlow:
    """Table 8, splines: rational-quadratic spline couplings (8 bins on [-3, 3])."""
    return _mixerflow(_MNIST, "spline", overrides)


@register_backbone
def mixerflow_mnist_maf(**overrides) -> MixerFlow:
    """Table 8 / Table 3, MAF-based: every coupling is a MAF step (sampling is sequential)."""
    return _mixerflow(_MNIST, "maf", overrides)


@register_backbone
def mixerflow_tiny_spline(**overrides) -> MixerFlow:
    """``mixerflow_tiny`` with spline couplings, for CPU runs."""
    return _mixerflow(_TINY, "spline", overrides)


@register_backbone
def mixerflow_tiny_maf(**overrides) -> MixerFlow:
    """``mixerflow_tiny`` with MAF steps, for CPU runs."""
    return _mixerflow(_TINY, "maf", overrides)


@register_backbone
def mixerflow_tiny_kan(**overrides) -> MixerFlow:
    """``mixerflow_tiny`` with KAN-conditioned couplings, for CPU runs."""
    return _mixerflow(_TINY, "kan", overrides)


@register_backbone
def nsf_glow_cifar10(**overrides) -> Glow:
    """Neural Spline Flows' Glow-like CIFAR-10 model (3 levels of 7 steps, 8-bin splines); our
    conditioner is Glow's conv stack of width 96, not NSF's ResNet, so parameter counts differ."""
    return _glow(dict(input_shape=(3, 32, 32), num_levels=3, num_steps=7, hidden=96), overrides)


@register_backbone
def nsf_glow_mnist(**overrides) -> Glow:
    """Spline-coupling Glow for 28x28 grey images, shaped like ``glow_mnist`` (2 levels of 16 steps)."""
    return _glow(dict(input_shape=(1, 28, 28), num_levels=2, num_steps=16, hidden=256), overrides)


@register_backbone
def nsf_glow_tiny(**overrides) -> Glow:
    """A CPU-sized spline-coupling Glow, shaped like ``glow_tiny``."""
    return _glow(dict(input_shape=(1, 28, 28), num_levels=2, num_steps=8, hidden=64), overrides)
