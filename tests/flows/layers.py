"""THE registry of every invertible layer: the generic property tests (tests/flows/test_protocol.py)
run over each entry.

``LAYERS[name] = LayerCase(make, input_shape, param_scale, inputs)``; unpack the first two as
``make, shape = LAYERS[name][:2]``. Inputs are small so that the full Jacobian is cheap.

- ``param_scale``: how far :func:`~tests.flow_checks.randomize` moves the parameters from their
  (often identity) initialisation. The splines use tail_bound 1 on N(0, 1) inputs so that both the
  interior and the identity tails are exercised; their randomisation stays moderate because
  slopes near 1e-6 make any float32 inverse ill-conditioned.
- ``inputs``: ``"unit"``, uniform in (0.05, 0.95) (inside the logit's domain), or ``"normal"``, N(0, 1).

A new layer gets one line here, and with it the whole protocol (inverse, log-det against the
autograd Jacobian, gradients, state round trip, the inference copy of ``hybridflow.freeze``).
"""

from __future__ import annotations

from typing import Callable, Literal, NamedTuple

import torch
from torch import Tensor, nn

from hybridflow.backbones.glow import GlowLevel, glow_step
from hybridflow.backbones.mixerflow import MixerLayer, MixingFlow, Transpose
from hybridflow.flows import (
    ActNorm, AffineCoupling, Centre, ConvConditioner, FlowSequence, InvConv1x1, KANConditioner, Logit, LULinear,
    MAFLayer, Patchify, RandomPermutation, RepatchedFlow, ResidualMLP, ShiftedFlow, SplineCoupling, Squeeze, conv_spline_coupling, create_coupling,
    spline_params_per_feature,
)

__all__ = ["LAYERS", "LayerCase", "layer_input"]


class LayerCase(NamedTuple):
    make: Callable[[], nn.Module]
    input_shape: tuple[int, ...]
    param_scale: float = 0.05
    inputs: Literal["unit", "normal"] = "unit"


LAYERS: dict[str, LayerCase] = {
    # -- ActNorm ---------------------------------------------------------------------------------
    "actnorm_channel": LayerCase(lambda: ActNorm((3, 1, 1)), (2, 3, 4, 4)),
    "actnorm_element": LayerCase(lambda: ActNorm((5, 6)), (2, 5, 6)),
    "actnorm_pooled": LayerCase(lambda: ActNorm((5, 6), pooled_scale_init=True), (2, 5, 6)),
    # -- linear blocks ---------------------------------------------------------------------------
    "lu_linear": LayerCase(lambda: LULinear(6), (2, 5, 6)),
    "rlu_linear": LayerCase(lambda: LULinear(6, permutation="reverse"), (2, 5, 6)),
    "lu_linear_random": LayerCase(lambda: LULinear(5, init="random"), (2, 3, 5)),
    "lu_linear_no_bias": LayerCase(lambda: LULinear(4, bias=False), (2, 3, 4)),
    "inv_conv_1x1": LayerCase(lambda: InvConv1x1(4), (2, 4, 3, 3)),
    "random_permutation": LayerCase(lambda: RandomPermutation(6), (2, 3, 6)),
    # -- affine couplings: conditioners built from a module and by name -------------------------
    "affine_coupling_mlp": LayerCase(lambda: AffineCoupling(6, ResidualMLP(3, 6, hidden=8)), (2, 4, 6)),
    "affine_coupling_odd": LayerCase(lambda: AffineCoupling(5, ResidualMLP(2, 6, hidden=8)), (2, 3, 5)),
    "affine_coupling_conv": LayerCase(lambda: AffineCoupling(4, ConvConditioner(2, 4, hidden=8), dim=1), (2, 4, 3, 3)),
    "affine_coupling_mlp_by_name": LayerCase(lambda: AffineCoupling(6, "mlp", hidden=8), (2, 4, 6)),
    "affine_coupling_mlp_two_blocks": LayerCase(lambda: AffineCoupling(7, "mlp", hidden=8, num_blocks=2), (2, 3, 7)),
    "affine_coupling_conv_by_name": LayerCase(lambda: AffineCoupling(5, "conv", dim=1, hidden=8), (2, 5, 2, 3)),
    "affine_coupling_kan_by_name": LayerCase(lambda: AffineCoupling(6, "kan", hidden=4, grid_size=3), (2, 3, 6),
                                             0.3, "normal"),
    "coupling_by_name": LayerCase(lambda: create_coupling("affine", 6, 8), (2, 3, 6)),
    "affine_coupling_sigmoid2": LayerCase(lambda: create_coupling("affine", 6, 8, scale="sigmoid2"), (2, 3, 6),
                                          0.3, "normal"),
    "kan_coupling": LayerCase(lambda: create_coupling("kan", 6, 8), (2, 3, 6), 0.3, "normal"),
    "kan_coupling_odd": LayerCase(
        lambda: AffineCoupling(5, KANConditioner(2, 6, hidden=4, num_layers=3, grid_size=3)), (2, 2, 5), 0.3, "normal"),
    # -- spline couplings (mlp and conv conditioners) -------------------------------------------
    "spline_mlp": LayerCase(lambda: create_coupling("spline", 6, 8, num_bins=4, tail_bound=1.0), (2, 3, 6),
                            0.3, "normal"),
    "spline_mlp_odd": LayerCase(lambda: create_coupling("spline", 5, 8, num_bins=3, tail_bound=1.0), (2, 2, 5),
                                0.5, "normal"),
    "spline_mlp_module": LayerCase(
        lambda: SplineCoupling(6, ResidualMLP(3, 3 * spline_params_per_feature(4), hidden=8), num_bins=4,
                               tail_bound=1.0), (2, 3, 6), 0.3, "normal"),
    "spline_conv": LayerCase(lambda: conv_spline_coupling(4, 8, num_bins=4, tail_bound=1.0), (2, 4, 2, 3),
                             0.15, "normal"),
    "spline_conv_by_name": LayerCase(lambda: SplineCoupling(5, "conv", dim=1, num_bins=3, tail_bound=1.0, hidden=8),
                                     (2, 5, 2, 2), 0.15, "normal"),
    # -- autoregressive --------------------------------------------------------------------------
    "maf": LayerCase(lambda: MAFLayer(5, hidden=8), (2, 3, 5), 0.3, "normal"),
    "maf_by_name": LayerCase(lambda: create_coupling("maf", 4, 8, num_hidden_layers=1), (2, 2, 4), 0.3, "normal"),
    # -- rearrangements and preprocessing --------------------------------------------------------
    "patchify": LayerCase(lambda: Patchify((2, 4, 6), patch_size=2), (2, 2, 4, 6)),
    "patchify_rectangular": LayerCase(lambda: Patchify((1, 4, 6), patch_size=(2, 3)), (2, 1, 4, 6)),
    "squeeze": LayerCase(lambda: Squeeze(), (2, 2, 4, 4)),
    "transpose": LayerCase(lambda: Transpose(), (2, 3, 5)),
    "centre": LayerCase(lambda: Centre(), (2, 1, 3, 3)),
    "logit": LayerCase(lambda: Logit(), (2, 1, 3, 3)),
    # -- blocks of the backbones -----------------------------------------------------------------
    "mixing_flow": LayerCase(lambda: MixingFlow(4, 6, hidden=8, steps=2), (2, 4, 6)),
    "mixing_flow_rlu": LayerCase(lambda: MixingFlow(3, 5, hidden=8, steps=1, permutation="reverse"), (2, 3, 5)),
    "mixing_flow_one_feature": LayerCase(lambda: MixingFlow(3, 1, hidden=8, steps=2), (2, 3, 1)),
    "mixing_flow_spline": LayerCase(
        lambda: MixingFlow(3, 4, hidden=8, steps=1, coupling="spline", num_bins=3, tail_bound=1.0), (2, 3, 4),
        0.15, "normal"),
    "mixer_layer": LayerCase(lambda: MixerLayer(4, 4, hidden=8, steps=1), (2, 4, 4)),
    "shifted_mixer_layer": LayerCase(
        lambda: FlowSequence(ShiftedFlow(MixerLayer(4, 4, hidden=8, steps=1), (1, 6, 6), 2, 1)), (2, 9, 4)),
    "mixer_layer_patch_steps": LayerCase(lambda: MixerLayer(4, 4, hidden=8, steps=2, patch_steps=1), (2, 4, 4)),
    "mixing_flow_random_permutation": LayerCase(lambda: MixingFlow(3, 5, hidden=8, steps=2, permutation="random"),
                                                (2, 3, 5)),
    "repatched_mixer_layer": LayerCase(
        lambda: FlowSequence(RepatchedFlow(MixerLayer(4, 9, hidden=8, steps=1), (1, 6, 6), 2, 3)), (2, 9, 4)),
    "glow_step": LayerCase(lambda: glow_step(4, 8), (2, 4, 2, 2)),
    "glow_step_spline": LayerCase(lambda: glow_step(4, 8, coupling="spline", num_bins=3), (2, 4, 2, 2),
                                  0.15, "normal"),
    "glow_level": LayerCase(lambda: GlowLevel(1, 2, 1, 8), (2, 1, 4, 4)),
    "sequence": LayerCase(lambda: FlowSequence(ActNorm((2, 1, 1)), InvConv1x1(2), Squeeze()), (2, 2, 2, 2)),
}


def layer_input(case: LayerCase, seed: int = 1, dtype: torch.dtype = torch.float64) -> Tensor:
    """A deterministic input of ``case``'s shape and distribution."""
    generator = torch.Generator().manual_seed(seed)
    if case.inputs == "normal":
        return torch.randn(case.input_shape, generator=generator, dtype=dtype)
    x = torch.rand(case.input_shape, generator=generator, dtype=dtype)
    return x * 0.9 + 0.05  # inside (0, 1) so the logit layer is defined too
