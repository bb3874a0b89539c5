"""Every invertible layer against the protocol: exact inverse, log-det equal to the autograd
Jacobian's, gradients to every parameter, state round trip."""

from __future__ import annotations

import math

import pytest
import torch

from tests.flow_checks import jacobian_logdet, max_inverse_error, params_without_grad, randomize, state_roundtrip
from hybridflow.backbones.mixerflow import MixerLayer, MixingFlow, Transpose
from hybridflow.flows import (
    ActNorm, AffineCoupling, Centre, ConvConditioner, FlowSequence, InvConv1x1, Logit, LULinear, Patchify,
    ResidualMLP, ShiftedFlow, Squeeze, check_pixels, create_coupling, dequantize, quantize,
)

# name -> (factory, input shape); inputs are small so the full Jacobian is cheap.
LAYERS = {
    "actnorm_channel": (lambda: ActNorm((3, 1, 1)), (2, 3, 4, 4)),
    "actnorm_element": (lambda: ActNorm((5, 6)), (2, 5, 6)),
    "lu_linear": (lambda: LULinear(6), (2, 5, 6)),
    "rlu_linear": (lambda: LULinear(6, permutation="reverse"), (2, 5, 6)),
    "lu_linear_random": (lambda: LULinear(5, init="random"), (2, 3, 5)),
    "inv_conv_1x1": (lambda: InvConv1x1(4), (2, 4, 3, 3)),
    "affine_coupling_mlp": (lambda: AffineCoupling(6, ResidualMLP(3, 6, hidden=8)), (2, 4, 6)),
    "affine_coupling_odd": (lambda: AffineCoupling(5, ResidualMLP(2, 6, hidden=8)), (2, 3, 5)),
    "affine_coupling_conv": (lambda: AffineCoupling(4, ConvConditioner(2, 4, hidden=8), dim=1), (2, 4, 3, 3)),
    "coupling_by_name": (lambda: create_coupling("affine", 6, 8), (2, 3, 6)),
    "patchify": (lambda: Patchify((2, 4, 6), patch_size=2), (2, 2, 4, 6)),
    "squeeze": (lambda: Squeeze(), (2, 2, 4, 4)),
    "transpose": (lambda: Transpose(), (2, 3, 5)),
    "centre": (lambda: Centre(), (2, 1, 3, 3)),
    "logit": (lambda: Logit(), (2, 1, 3, 3)),
    "mixing_flow": (lambda: MixingFlow(4, 6, hidden=8, steps=2), (2, 4, 6)),
    "mixer_layer": (lambda: MixerLayer(4, 4, hidden=8, steps=1), (2, 4, 4)),
    "shifted_mixer_layer": (
        lambda: FlowSequence(ShiftedFlow(MixerLayer(4, 4, hidden=8, steps=1), (1, 6, 6), 2, 1)), (2, 9, 4)),
    "sequence": (lambda: FlowSequence(ActNorm((2, 1, 1)), InvConv1x1(2), Squeeze()), (2, 2, 2, 2)),
}


def _input(shape, seed=1):
    x = torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return x * 0.9 + 0.05  # inside (0, 1) so the logit layer is defined too


@pytest.fixture(params=sorted(LAYERS))
def layer_case(request):
    make, shape = LAYERS[request.param]
    torch.manual_seed(0)
    return make, randomize(make().double()), _input(shape)


def test_inverse_of_forward_is_identity(layer_case):
    make, flow, x = layer_case
    assert max_inverse_error(flow.float(), x.float()) < 1e-4


def test_logdet_matches_autograd_jacobian(layer_case):
    make, flow, x = layer_case
    y, logdet = flow(x)
    assert logdet.shape == (x.shape[0],)
    torch.testing.assert_close(logdet, jacobian_logdet(flow, x), atol=1e-3, rtol=1e-4)


def test_every_parameter_gets_a_gradient(layer_case):
    make, flow, x = layer_case
    y, logdet = flow(x)
    assert params_without_grad(flow, (y.pow(2).sum() - logdet.sum())) == []


def test_state_dict_round_trip_gives_identical_output(layer_case):
    make, flow, x = layer_case
    fresh = state_roundtrip(lambda: make().double(), flow)
    torch.testing.assert_close(fresh(x)[0], flow(x)[0], rtol=0, atol=0)


def test_actnorm_initialises_once_from_data():
    norm = ActNorm((3, 1, 1)).train()
    x = torch.randn(64, 3, 5, 5) * torch.tensor([1.0, 2.0, 5.0]).view(1, 3, 1, 1) + 3.0
    y, _ = norm(x)
    torch.testing.assert_close(y.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4, rtol=0)
    torch.testing.assert_close(y.std(dim=(0, 2, 3), unbiased=False), torch.ones(3), atol=1e-3, rtol=0)
    before = norm.bias.detach().clone()
    norm(x * 10)  # a second batch must not re-initialise
    torch.testing.assert_close(norm.bias.detach(), before)
    fresh = ActNorm((3, 1, 1)).train()
    fresh.load_state_dict(norm.state_dict())
    assert bool(fresh.initialized)
    fresh(x * 10)
    torch.testing.assert_close(fresh.bias.detach(), before)


def test_actnorm_per_element_statistics():
    norm = ActNorm((4, 6)).train()
    x = torch.randn(128, 4, 6) * torch.linspace(0.5, 3, 24).view(1, 4, 6)
    y, logdet = norm(x)
    torch.testing.assert_close(y.std(dim=0, unbiased=False), torch.ones(4, 6), atol=1e-3, rtol=0)
    torch.testing.assert_close(logdet, norm.log_scale.sum().expand(128))


def test_lu_and_rlu_initialisation():
    x = torch.randn(3, 7)
    assert torch.equal(LULinear(7)(x)[0], x)
    torch.testing.assert_close(LULinear(7, permutation="reverse")(x)[0], x.flip(-1))


def test_coupling_is_identity_at_initialisation():
    coupling = create_coupling("affine", 8, 16)
    x = torch.randn(5, 3, 8)
    y, logdet = coupling(x)
    assert torch.equal(y, x) and torch.equal(logdet, torch.zeros(5))


def test_coupling_scale_is_bounded():
    coupling = AffineCoupling(4, ResidualMLP(2, 4, hidden=8), scale_bound=3.0)
    with torch.no_grad():
        coupling.conditioner.head[-1].bias.fill_(1e4)  # an absurd conditioner output
    y, logdet = coupling.eval()(torch.ones(2, 1, 4))
    assert torch.isfinite(y).all() and torch.all(logdet <= 2 * 3.0 + 1e-4)
    assert torch.isfinite(coupling.inverse(y)).all()


def test_soft_clamp_is_bound_times_tanh():
    from hybridflow.flows.coupling import soft_clamp

    raw = torch.cat([torch.linspace(-60, 60, 2001), torch.tensor([0.0, 1e-6, -1e-6])]).double()
    for bound in (1.0, 3.0, 5.0):
        torch.testing.assert_close(soft_clamp(raw, bound), bound * torch.tanh(raw / bound), rtol=0, atol=1e-12)
        single = soft_clamp(raw.float(), bound)
        torch.testing.assert_close(single, bound * torch.tanh(raw.float() / bound), rtol=0, atol=2e-6)
        assert single.abs().max() <= bound and soft_clamp(torch.zeros(3), bound).eq(0).all()


def test_shift_layer_keeps_the_frame():
    inner = randomize(MixerLayer(4, 4, hidden=8, steps=1))
    shift = ShiftedFlow(inner, (1, 6, 6), patch_size=2, shift=1).eval()
    image = torch.randn(2, 1, 6, 6)
    patches = Patchify((1, 6, 6), 2)
    out = patches.inverse(shift(patches(image)[0])[0])
    frame = torch.ones(6, 6, dtype=torch.bool)
    frame[1:5, 1:5] = False
    assert torch.equal(out[:, :, frame], image[:, :, frame])
    assert not torch.allclose(out[:, :, ~frame], image[:, :, ~frame])


@pytest.mark.parametrize("shift", [0, 2, (1, 3)])
def test_shift_must_lie_inside_the_patch(shift):
    with pytest.raises(ValueError, match="shift"):
        ShiftedFlow(MixerLayer(4, 4, hidden=8, steps=1), (1, 6, 6), patch_size=2, shift=shift)


def test_dequantisation_and_quantisation():
    pixels = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)
    u = dequantize(pixels, generator=torch.Generator().manual_seed(0))
    assert u.min() >= 0 and u.max() < 1
    assert torch.equal(quantize(u), pixels)
    assert torch.equal(u, dequantize(pixels, generator=torch.Generator().manual_seed(0)))
    torch.testing.assert_close(dequantize(pixels, noise="midpoint")[0, 0, 0, :2], torch.tensor([0.5, 1.5]) / 256)


def test_logit_log_det_by_hand():
    u = torch.full((1, 1, 1, 1), 0.5)
    y, logdet = Logit(alpha=0.05)(u)
    # s = 0.5, dy/du = (1 - 2 alpha) / (s (1 - s)) = 0.9 / 0.25
    assert abs(y.item()) < 1e-7 and abs(logdet.item() - math.log(0.9 / 0.25)) < 1e-6


@pytest.mark.parametrize(
    "bad, message",
    [
        (torch.zeros(1, 3, 4, 4), "channel"),
        (torch.zeros(3, 4, 4), "batch dimension"),
        (torch.zeros(2, 1, 5, 4), "size"),
        (torch.zeros(0, 1, 4, 4), "empty"),
        (torch.full((1, 1, 4, 4), float("nan")), "NaN"),
        (torch.full((1, 1, 4, 4), 0.5), "integer"),
        (torch.full((1, 1, 4, 4), 300), "0..255"),
        (torch.full((1, 1, 4, 4), -1), "0..255"),
    ],
)
def test_check_pixels_names_the_problem(bad, message):
    with pytest.raises(ValueError, match=message):
        check_pixels(bad, (1, 4, 4))


def test_actnorm_pooled_scale_init_keeps_near_constant_elements_tame():
    norm = ActNorm((2, 3), pooled_scale_init=True).train()
    x = torch.randn(256, 2, 3)
    x[:, 0, 0] = 1e-2 * torch.rand(256)  # a "blank border pixel": almost constant in the first batch
    y, _ = norm(x)
    assert torch.allclose(norm.log_scale, norm.log_scale[0, 0].expand(2, 3))  # one shared scale
    torch.testing.assert_close(y.mean(dim=0), torch.zeros(2, 3), atol=1e-4, rtol=0)  # per-element centring
    assert norm.log_scale.max() < 1.0  # a per-element init would give about log(100 * sqrt(12)) = 5.8
    assert ActNorm((2, 3)).train()(x)[0][:, 0, 0].std() > 0.9  # ... and this is what it would do
