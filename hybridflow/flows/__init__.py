"""Invertible layers, all on one protocol: ``forward(x) -> (y, logdet)``, ``inverse(y) -> x``."""

from .actnorm import ActNorm
from .base import Flow, FlowSequence, zero_logdet
from .coupling import (
    CONDITIONER_DTYPES, AffineCoupling, Conditioner, ConvConditioner, ResidualMLP, create_coupling, list_couplings,
    register_coupling, soft_clamp,
)
from .kan import KANConditioner, KANLayer, b_spline_basis
from .linear import InvConv1x1, LULinear
from .maf import MADE, MAFLayer, MaskedLinear
from .preprocess import NUM_BINS, PREPROCESSING, Centre, Logit, check_pixels, dequantize, make_preprocess, quantize
from .reshape import Patchify, ShiftedFlow, Squeeze, patchify, unpatchify
from .spline import SplineCoupling, conv_spline_coupling, rational_quadratic_spline, spline_params_per_feature

__all__ = [
    "ActNorm", "AffineCoupling", "CONDITIONER_DTYPES", "Centre", "Conditioner", "ConvConditioner", "Flow",
    "FlowSequence", "InvConv1x1", "Logit", "LULinear", "NUM_BINS", "PREPROCESSING", "Patchify", "ResidualMLP",
    "ShiftedFlow", "Squeeze", "check_pixels", "create_coupling", "dequantize", "list_couplings", "make_preprocess",
    "register_coupling", "patchify", "quantize", "soft_clamp", "unpatchify", "zero_logdet",
    # variants (issue 6): spline, MAF and KAN couplings
    "KANConditioner", "KANLayer", "MADE", "MAFLayer", "MaskedLinear", "SplineCoupling", "b_spline_basis",
    "conv_spline_coupling", "rational_quadratic_spline", "spline_params_per_feature",
]
