"""Backbones against the protocol and the density accounting of DESIGN.md."""

from __future__ import annotations

import math

import pytest
import torch

import hybridflow
from tests.flow_checks import jacobian_logdet, params_without_grad, randomize, state_roundtrip
from hybridflow.flows import evaluation_noise
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
REAL = ["mixerflow_tiny", "mixerflow_small", "mixerflow_wide", "glow_tiny"]


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
    noise = evaluation_noise(x, flow.eval_seed)  # each image its own, seeded noise
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
    for expected in ["mixerflow_cifar10", "mixerflow_mnist", "mixerflow_64", "mixerflow_tiny", "mixerflow_wide",
                     "glow_cifar10", "glow_tiny"]:
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


# -- bfloat16 conditioners ----------------------------------------------------------------------
def _bf16_coupling():
    from hybridflow.flows import AffineCoupling, ResidualMLP

    torch.manual_seed(0)
    coupling = AffineCoupling(6, ResidualMLP(3, 6, hidden=16))
    return randomize(coupling, scale=0.3)


def test_bfloat16_conditioner_keeps_a_coupling_exact():
    coupling = _bf16_coupling()
    x = torch.randn(5, 7, 6, generator=torch.Generator().manual_seed(0))
    y32, logdet32 = coupling(x)
    coupling.conditioner.compute_dtype = torch.bfloat16
    y, logdet = coupling(x)
    assert y.dtype == torch.float32 and logdet.dtype == torch.float32
    # it really ran in bfloat16 (the output moved) but stays close to the float32 function
    assert not torch.equal(y, y32)
    torch.testing.assert_close(y, y32, rtol=0.02, atol=0.02)  # bfloat16 keeps 8 bits: 0.4% steps
    # the conditioner is a function of the untouched half, so the inverse is exact ...
    assert (coupling.inverse(y) - x).abs().max() < 1e-5
    # ... and the log-det is the exact log-det of the function computed
    small = torch.randn(2, 1, 6, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(coupling(small)[1], jacobian_logdet(coupling, small), rtol=0, atol=1e-3)


@pytest.mark.parametrize("name", ["mixerflow_tiny", "glow_tiny"])
def test_bfloat16_conditioners_on_a_backbone(name, tmp_path):
    from hybridflow import HybridModel
    from hybridflow.training import load_checkpoint, save_checkpoint

    torch.manual_seed(0)
    shape = (1, 16, 16)
    overrides = dict(input_shape=shape, num_steps=2, hidden=16) if name == "glow_tiny" else \
        dict(input_shape=shape, num_layers=4, hidden=16)
    model = HybridModel(name, num_classes=3, conditioner_dtype="bfloat16", **overrides)
    assert model.backbone.config["conditioner_dtype"] == "bfloat16"
    x = _pixels(shape, n=8)
    randomize(model.backbone, scale=0.01).train()
    assert params_without_grad(model.backbone, model.backbone.bits_per_dim(x).mean()) == []
    model.eval()
    bpd = model.backbone.bits_per_dim(x)
    assert torch.isfinite(bpd).all() and bpd.dtype == torch.float32
    # the same weights in float32 give nearly the same density
    model.backbone.set_conditioner_dtype("float32")
    assert "conditioner_dtype" not in model.backbone.config
    torch.testing.assert_close(model.backbone.bits_per_dim(x), bpd, rtol=0, atol=0.02)
    model.backbone.set_conditioner_dtype("bfloat16")
    # a checkpoint rebuilds the bfloat16 model: the same numbers
    loaded = load_checkpoint(save_checkpoint(model, tmp_path / "ckpt")).eval()
    assert loaded.backbone.conditioner_dtype == "bfloat16"
    torch.testing.assert_close(loaded.backbone.bits_per_dim(x), bpd, rtol=0, atol=1e-5)
    # the whole flow inverts to well within one pixel level (rounding of the conditioners'
    # inputs to bfloat16 amplifies the float32 inversion error of the layers around them)
    u = torch.rand(4, *shape) - 0.5
    assert (model.backbone.inverse(model.backbone(u)[0]) - u).abs().max() < 1.0 / 256


def test_bad_conditioner_dtype_is_refused():
    with pytest.raises(ValueError, match="conditioner_dtype must be one of"):
        create_backbone("mixerflow_tiny", conditioner_dtype="float16")
    with pytest.raises(ValueError, match="no coupling conditioner"):
        create_backbone("mixerflow_tiny_maf", conditioner_dtype="bfloat16")


@pytest.mark.parametrize("case", ["mixerflow_1x8x8", "glow_3x4x8"])
def test_logit_preprocessing_gives_the_hand_computed_bits_per_dim(case):
    name, overrides = SMALL[case]
    flow = create_backbone(name, preprocess="logit", **overrides).eval()  # identity body
    assert flow.config["preprocess"] == "logit"
    x = _pixels(flow.input_shape)
    noise = evaluation_noise(x, flow.eval_seed)  # each image its own, seeded noise
    s = 0.05 + 0.9 * (x.double() + noise.double()) / 256
    z = torch.log(s / (1 - s))
    logdet = (math.log(0.9) - torch.log(s) - torch.log(1 - s)).flatten(1).sum(1)
    d = z[0].numel()
    nll = (0.5 * z.pow(2) + 0.5 * math.log(2 * math.pi)).flatten(1).sum(1) - logdet
    torch.testing.assert_close(flow.bits_per_dim(x).double(), nll / (d * math.log(2)) + 8.0, atol=1e-4, rtol=0)
    # sampling goes back through the sigmoid: valid pixels
    randomize(flow, scale=0.02)
    u = torch.rand(3, *flow.input_shape)
    assert (flow.inverse(flow(u)[0]) - u).abs().max() < 1e-4
    assert flow.sample(3).shape == (3, *flow.input_shape)
    with pytest.raises(ValueError, match="preprocess must be one of"):
        create_backbone(name, preprocess="tanh", **overrides)
