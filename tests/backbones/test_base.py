"""What every backbone offers (``FlowBackbone``), on every small configuration: the layer protocol,
deterministic evaluation, state round trips, samples, embeddings, input validation and precision."""

from __future__ import annotations

import math

import pytest
import torch

from hybridflow import create_backbone
from tests.backbones.cases import REAL, SMALL, make, pixels
from tests.flow_checks import jacobian_logdet, params_without_grad, randomize, state_roundtrip


@pytest.fixture(params=sorted(SMALL))
def case(request):
    torch.manual_seed(0)
    return request.param


def test_inverse_of_forward(case):
    flow = randomize(make(case), scale=0.02)
    u = torch.rand(3, *flow.input_shape)
    z, _ = flow(u)
    assert z.shape == (3, *flow.latent_shape)
    assert (flow.inverse(z) - u).abs().max() < 1e-4


def test_logdet_matches_autograd_jacobian(case):
    flow = randomize(make(case), scale=0.02).double()
    u = torch.rand(2, *flow.input_shape, dtype=torch.float64)
    _, logdet = flow(u)
    torch.testing.assert_close(logdet, jacobian_logdet(flow, u), atol=1e-3, rtol=1e-5)


def test_every_parameter_gets_a_gradient(case):
    flow = randomize(make(case), scale=0.02).train()
    assert params_without_grad(flow, flow.bits_per_dim(pixels(flow.input_shape, n=8)).mean()) == []


def test_eval_log_prob_is_deterministic_and_state_round_trips(case):
    flow = make(case).train()
    flow.log_prob(pixels(flow.input_shape, n=16))  # data-dependent ActNorm init
    flow.eval()
    x = pixels(flow.input_shape, seed=1)
    first = flow.log_prob(x)
    torch.testing.assert_close(flow.log_prob(x), first, rtol=0, atol=0)
    torch.testing.assert_close(flow.log_prob(x.flip(0)).flip(0), first)  # independent of batch order
    torch.testing.assert_close(flow.log_prob(x[1:2])[0], first[1])
    fresh = state_roundtrip(lambda: make(case), flow)
    assert all(bool(m.initialized) for m in fresh.modules() if hasattr(m, "initialized"))
    torch.testing.assert_close(fresh.log_prob(x), first, rtol=0, atol=0)
    fresh.train()
    fresh.log_prob(pixels(flow.input_shape, n=16, seed=5))  # must not re-initialise
    torch.testing.assert_close(fresh.eval().log_prob(x), first, rtol=0, atol=0)


def test_sample_and_embed(case):
    flow = randomize(make(case), scale=0.02)
    images = flow.sample(5, temperature=0.7, generator=torch.Generator().manual_seed(0))
    assert images.shape == (5, *flow.input_shape) and images.dtype == torch.uint8
    x = pixels(flow.input_shape)
    assert flow.embed(x).shape == (4, math.prod(flow.input_shape))
    assert flow.embed(x).isfinite().all() and flow.embed(x, pooled=True).shape[0] == 4


def test_sampling_is_reproducible_and_keeps_the_mode():
    flow = randomize(make("mixerflow_1x8x8"), scale=0.02).train()
    first = flow.sample(3, generator=torch.Generator().manual_seed(1))
    assert torch.equal(flow.sample(3, generator=torch.Generator().manual_seed(1)), first)
    assert flow.training  # sampling ran in eval mode and gave the mode back
    with pytest.raises(ValueError, match="number of samples"):
        flow.sample(0)
    with pytest.raises(ValueError, match="temperature"):
        flow.sample(2, temperature=-1.0)


@pytest.mark.parametrize("temperature", [float("nan"), float("inf"), -float("inf"), -1.0, -1e-9])
def test_sample_refuses_a_temperature_that_is_not_finite_and_non_negative(temperature):
    # nan and inf used to give all-grey images (the NaN inverse was mapped to mid-grey)
    flow = randomize(make("glow_1x8x8"), scale=0.02)
    with pytest.raises(ValueError, match=r"temperature must be a finite number >= 0, got"):
        flow.sample(2, temperature=temperature)


@pytest.mark.parametrize("n", [0, -3, 2.5, True])
def test_sample_refuses_a_count_that_is_not_a_positive_integer(n):
    flow = make("mixerflow_1x8x8")
    with pytest.raises(ValueError, match="number of samples n must be a positive integer"):
        flow.sample(n)


def test_sample_takes_numpy_counts_and_temperatures_and_refuses_other_types():
    import numpy as np

    flow = make("mixerflow_1x8x8")
    assert flow.sample(np.int64(2), temperature=np.float32(0.0)).shape == (2, 1, 8, 8)
    with pytest.raises(TypeError, match="temperature must be a number, got str"):
        flow.sample(2, temperature="hot")


def test_embedding_uses_the_midpoint_and_ignores_the_batch():
    flow = randomize(make("glow_1x8x8"), scale=0.02)
    x = pixels(flow.input_shape)
    expected = flow((x.float() + 0.5) / 256)[0].flatten(1)
    torch.testing.assert_close(flow.embed(x), expected)
    torch.testing.assert_close(flow.embed(x[2:3])[0], expected[2])


@pytest.mark.parametrize("name", REAL)
def test_real_cpu_configs_train_step_and_invert(name):
    flow = create_backbone(name)
    x = pixels(flow.input_shape, n=8)
    loss = flow.train().bits_per_dim(x).mean()
    loss.backward()
    assert torch.isfinite(loss)
    flow.eval()
    u = torch.rand(2, *flow.input_shape)
    assert (flow.inverse(flow(u)[0]) - u).abs().max() < 1e-4


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
    flow = make("mixerflow_1x8x8").eval()
    for bad, message in [(pixels((3, 8, 8)), "channel"), (pixels((1, 6, 8)), "size"),
                         (pixels((1, 8, 8))[0], "batch dimension")]:
        with pytest.raises(ValueError, match=message):
            flow.log_prob(bad)


def test_float64_model_scores_in_float64():
    flow = make("mixerflow_1x8x8").double().eval()
    assert flow.log_prob(pixels(flow.input_shape)).dtype == torch.float64


# -- bfloat16 conditioners ----------------------------------------------------------------------
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
    x = pixels(shape, n=8)
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
