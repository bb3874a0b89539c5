"""Invertible layers, all on one protocol: ``forward(x) -> (y, logdet)``, ``inverse(y) -> x``."""

from .actnorm import ActNorm
from .base import Flow, FlowSequence, zero_logdet
from .coupling import (
    AffineCoupling, ConvConditioner, ResidualMLP, create_coupling, list_couplings, register_coupling, soft_clamp,
)
from .linear import InvConv1x1, LULinear
from .preprocess import NUM_BINS, Centre, Logit, check_pixels, dequantize, quantize
from .reshape import Patchify, ShiftedFlow, Squeeze, patchify, unpatchify

__all__ = [
    "ActNorm", "AffineCoupling", "Centre", "ConvConditioner", "Flow", "FlowSequence", "InvConv1x1",
    "Logit", "LULinear", "NUM_BINS", "Patchify", "ResidualMLP", "ShiftedFlow", "Squeeze",
    "check_pixels", "create_coupling", "dequantize", "list_couplings", "register_coupling", "patchify", "quantize", "soft_clamp", "unpatchify", "zero_logdet",
]
