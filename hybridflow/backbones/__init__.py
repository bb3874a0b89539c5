"""Backbones (MixerFlow, Glow) and their registry."""

from .base import FlowBackbone
from .density import bits_per_dim, integer_log_prob, log_prob_from_latent, standard_normal_log_prob
from .glow import Glow
from .mixerflow import MixerFlow, MixerLayer, MixingFlow
from .registry import (
    FAMILY_DEFAULTS, backbone_description, backbone_family, create_backbone, list_backbones, register_backbone,
)

__all__ = [
    "FAMILY_DEFAULTS", "FlowBackbone", "backbone_description", "Glow", "MixerFlow", "MixerLayer", "MixingFlow", "backbone_family", "bits_per_dim",
    "create_backbone", "integer_log_prob", "list_backbones", "log_prob_from_latent", "register_backbone",
    "standard_normal_log_prob",
]
