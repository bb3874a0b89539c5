"""Invertible layers, all on one protocol: ``forward(x) -> (y, logdet)``, ``inverse(y) -> x``."""

from .actnorm import ActNorm
from .base import Flow, FlowSequence, zero_logdet
from .conditioners import (
    CONDITIONER_DTYPES, INPUT_BOUND, Conditioner, ConvConditioner, ResidualMLP, create_conditioner, list_conditioners,
    register_conditioner, soft_clamp,
)
from .coupling import COUPLING_SCALES, AffineCoupling, Coupling, create_coupling, list_couplings, register_coupling
from .invertible_backprop import invertible_backprop_forward
from .inference import contains_inference_copy, freeze, inference_model, is_inference_copy
from .kan import KANConditioner, KANLayer, b_spline_basis
from .linear import InvConv1x1, LULinear, RandomPermutation
from .maf import MADE, MAFLayer, MaskedLinear
from .preprocess import (
    NUM_BINS, PREPROCESSING, Centre, Logit, check_pixels, dequantize, evaluation_noise, make_preprocess, noise_draw,
    quantize,
)
from .dequantization import DEQUANTIZATIONS, VariationalDequantizer
from .precision import SlowBfloat16Warning, native_bfloat16, resolve_conditioner_dtype
from .reshape import Patchify, RepatchedFlow, ShiftedFlow, Squeeze, patchify, unpatchify
from .spline import SplineCoupling, conv_spline_coupling, rational_quadratic_spline, spline_params_per_feature

__all__ = [
    "ActNorm", "AffineCoupling", "COUPLING_SCALES", "CONDITIONER_DTYPES", "Centre", "Conditioner", "ConvConditioner", "Coupling", "Flow",
    "INPUT_BOUND", "create_conditioner", "contains_inference_copy", "freeze", "inference_model", "is_inference_copy", "list_conditioners", "register_conditioner",
    "FlowSequence", "InvConv1x1", "Logit", "LULinear", "RandomPermutation", "NUM_BINS", "PREPROCESSING", "Patchify", "ResidualMLP",
    "RepatchedFlow", "ShiftedFlow", "Squeeze", "check_pixels", "create_coupling", "dequantize", "evaluation_noise", "list_couplings", "make_preprocess",
    "register_coupling", "patchify", "quantize", "soft_clamp", "unpatchify", "zero_logdet",
    # variants (issue 6): spline, MAF and KAN couplings
    "KANConditioner", "KANLayer", "MADE", "MAFLayer", "MaskedLinear", "SplineCoupling", "b_spline_basis",
    "conv_spline_coupling", "rational_quadratic_spline", "spline_params_per_feature",
    # issue 17: backprop that rebuilds activations by inversion instead of storing them
    "invertible_backprop_forward",
    # issue 20: variational dequantisation
    "DEQUANTIZATIONS", "VariationalDequantizer", "noise_draw",
    # conditioner precision that is fast on the hardware at hand
    "SlowBfloat16Warning", "native_bfloat16", "resolve_conditioner_dtype",
]
