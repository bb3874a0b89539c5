"""Backbones against the protocol and the density accounting of DESIGN.md."""

from __future__ import annotations

import math

import pytest
import torch

import hybridflow
from flow_checks import jacobian_logdet, params_without_grad, randomize, state_roundtrip
from hybridflow import create_backbone, list_backbones

# (config, overrides): small enough for a full Jacobian; 1 and 3 channels, square or not.
SMALL = {
    "mixerflow_1x8x8": ("mixerflow_tiny", dict(input_shape=(1, 8, 8), patch_size=2, num_layers=4, hidden=8, steps=1)),
    "mixerflow_3x4x6": ("mixerflow_tiny", dict(input_shape=(3, 4, 6), patch_size=2, num_layers=4, hidden=8, steps=1)),
    "mixerflow_rlu_noshift": ("mixerflow_mnist", dict(input_shape=(1, 8, 8), patch_size=4, num_layers=2, hidden=8, steps=1)),
    "mixerflow_shift2_p4": ("mixerflow_64", dict(input_shape=(3, 8, 8), patch_size=4, num_layers=4, hidden=8, steps=1)),
    "glow_1x8x8": ("glow_tiny", dict(input_shape=(1, 8, 8), num_steps=2, hidden=8)),
    "glow_3x4x8": ("glow_tiny", dict(input_shape=(3, 4, 8), num_levels=2, num_steps=2, hidden=8)),
}
# the CPU configurations at their real size
REAL = ["mixerflow_tiny", "mixerflow_small", "glow_tiny"]


def _make(case: str):
    name, overrides = SMALL[case]
    return create_backbone(name, **overrides)


def _pixels(shape, n=4, seed=0):
    return torch.randint(0, 256, (n, *shape), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


@pytest.fixture(params=sorted(SMALL))
def case(request):
    torch.manual_seed(0)
    return request.param


def test_inverse_of_forward(case):
    flow = randomize(_make(case), scale=0.02)
    u = torch.rand(3, *flow.input_shape)
    z, _ = flow(u)
    assert z.shape == (3, *flow.latent_shape)
    assert (flow.inverse(z) - u).abs().max() < 1e-4


def test_logdet_matches_autograd_jacobian(case):
    flow = randomize(_make(case), scale=0.02).double()
    u = torch.rand(2, *flow.input_shape, dtype=torch.float64)
    _, logdet = flow(u)
    torch.testing.assert_close(logdet, jacobian_logdet(flow, u), atol=1e-3, rtol=1e-5)


def test_identity_initialised_flow_gives_the_gaussian_bits_per_dim(case):
    flow = _make(case).eval()  # ActNorm not yet initialised: every layer is the identity
    x = _pixels(flow.input_shape)
    noise = torch.rand((1, *x.shape[1:]), generator=torch.Generator().manual_seed(flow.eval_seed))
    z = (x.double() + noise.double()) / 256 - 0.5
    d = z[0].numel()
    by_hand = (0.5 * z.pow(2) + 0.5 * math.log(2 * math.pi)).flatten(1).sum(1) / (d * math.log(2)) + 8.0
    torch.testing.assert_close(flow.bits_per_dim(x).double(), by_hand, atol=1e-4, rtol=0)


def test_every_parameter_gets_a_gradient(case):
    flow = randomize(_make(case), scale=0.02).train()
    assert params_without_grad(flow, flow.bits_per_dim(_pixels(flow.input_shape, n=8)).mean()) == []


def test_eval_log_prob_is_deterministic_and_state_round_trips(case):
    flow = _make(case).train()
    flow.log_prob(_pixels(flow.input_shape, n=16))  # data-dependent ActNorm init
    flow.eval()
    x = _pixels(flow.input_shape, seed=1)
    first = flow.log_prob(x)
    torch.testing.assert_close(flow.log_prob(x), first, rtol=0, atol=0)
    torch.testing.assert_close(flow.log_prob(x.flip(0)).flip(0), first)  # independent of batch order
    torch.testing.assert_close(flow.log_prob(x[1:2])[0], first[1])
    fresh = state_roundtrip(lambda: _make(case), flow)
    assert all(bool(m.initialized) for m in fresh.modules() if hasattr(m, "initialized"))
    torch.testing.assert_close(fresh.log_prob(x), first, rtol=0, atol=0)
    fresh.train()
    fresh.log_prob(_pixels(flow.input_shape, n=16, seed=5))  # must not re-initialise
    torch.testing.assert_close(fresh.eval().log_prob(x), first, rtol=0, atol=0)


def test_sample_and_embed(case):
    flow = randomize(_make(case), scale=0.02)
    images = flow.sample(5, temperature=0.7, generator=torch.Generator().manual_seed(0))
    assert images.shape == (5, *flow.input_shape) and images.dtype == torch.uint8
    x = _pixels(flow.input_shape)
    assert flow.embed(x).shape == (4, math.prod(flow.input_shape))
    assert flow.embed(x).isfinite().all() and flow.embed(x, pooled=True).shape[0] == 4


@pytest.mark.parametrize("name", REAL)
def test_real_cpu_configs_train_step_and_invert(name):
    flow = create_backbone(name)
    x = _pixels(flow.input_shape, n=8)
    loss = flow.train().bits_per_dim(x).mean()
    loss.backward()
    assert torch.isfinite(loss)
    flow.eval()
    u = torch.rand(2, *flow.input_shape)
    assert (flow.inverse(flow(u)[0]) - u).abs().max() < 1e-4


def test_registry_lists_and_filters():
    names = list_backbones()
    for expected in ["mixerflow_cifar10", "mixerflow_mnist", "mixerflow_64", "mixerflow_tiny", "glow_cifar10", "glow_tiny"]:
        assert expected in names
    assert all(n.startswith("glow") for n in list_backbones("glow*"))
    assert create_backbone("mixerflow").name == "mixerflow_tiny"
    with pytest.raises(ValueError, match="unknown backbone"):
        create_backbone("no_such_flow")
    with pytest.raises(ValueError, match="does not accept"):
        create_backbone("glow_tiny", no_such_option=3)


def test_paper_config_sizes():
    cifar = create_backbone("mixerflow_cifar10")
    assert cifar.input_shape == (3, 32, 32) and cifar.config["num_layers"] == 30
    assert 10e6 < cifar.num_params < 15e6  # the paper reports 11.34M
    assert 9e6 < create_backbone("glow_cifar10").num_params < 14e6  # paper's Glow: 11.02M


@pytest.mark.parametrize(
    "name, overrides, message",
    [
        ("mixerflow_tiny", dict(input_shape=(2, 28, 28)), "1 or 3 channels"),
        ("mixerflow_tiny", dict(input_shape=(3, 30, 30), patch_size=4), "divide"),
        ("mixerflow_tiny", dict(input_shape=(28, 28)), "channels, height, width"),
        ("glow_tiny", dict(input_shape=(1, 28, 28), num_levels=3), "divisible by 8"),
    ],
)
def test_bad_configurations_raise(name, overrides, message):
    with pytest.raises(ValueError, match=message):
        create_backbone(name, **overrides)


def test_bad_inputs_raise_value_error():
    flow = _make("mixerflow_1x8x8").eval()
    for bad, message in [(_pixels((3, 8, 8)), "channel"), (_pixels((1, 6, 8)), "size"),
                         (_pixels((1, 8, 8))[0], "batch dimension")]:
        with pytest.raises(ValueError, match=message):
            flow.log_prob(bad)


def test_float64_model_scores_in_float64():
    flow = _make("mixerflow_1x8x8").double().eval()
    assert flow.log_prob(_pixels(flow.input_shape)).dtype == torch.float64


def test_top_level_api():
    assert hybridflow.list_backbones() == list_backbones()
