"""Backbones (MixerFlow, Glow) and their registry."""

from . import configs as _configs  # noqa: F401  (registers the configurations)
from . import variants as _variants  # noqa: F401  (spline / MAF / KAN / NSF-Glow configurations)
from .base import FlowBackbone, standard_normal_log_prob
from .glow import Glow
from .mixerflow import MixerFlow, MixerLayer, MixingFlow
from .registry import FAMILY_DEFAULTS, backbone_family, create_backbone, list_backbones, register_backbone

__all__ = [
    "FAMILY_DEFAULTS", "FlowBackbone", "Glow", "MixerFlow", "MixerLayer", "MixingFlow", "backbone_family",
    "create_backbone", "list_backbones", "register_backbone", "standard_normal_log_prob",
]
