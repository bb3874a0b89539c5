"""Features of a frozen flow (hybridflow.features): latents, latents at every depth, conditioners' hidden units."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hybridflow import create_backbone, freeze
from hybridflow.data import load_digits_data
from hybridflow.features import DEFAULT_FEATURES, FEATURE_SETS, check_features, default_features, flow_features
from hybridflow.flows import ResidualMLP
from hybridflow.flows.conditioners import soft_clamp
from hybridflow.hybrid import HybridModel
from hybridflow.probe import linear_probe

SMALL = dict(input_shape=(1, 8, 8), patch_size=2, num_layers=2, hidden=8, steps=1)


@pytest.fixture(scope="module")
def digits():
    return load_digits_data(train=True), load_digits_data(train=False)


def initialised(flow, images):
    """Run one training-mode pass so ActNorm is initialised (else the flow is near the identity)."""
    flow.train()
    with torch.no_grad():
        flow.bits_per_dim(images)
    return flow.eval()


def test_latent_is_the_backbones_embedding(digits):
    flow = initialised(create_backbone("mixerflow_tiny", **SMALL), digits[0].images[:64])
    x = digits[0].images[:20]
    with torch.no_grad():
        np.testing.assert_allclose(flow_features(flow, x, "latent"), flow.embed(x).numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(flow_features(flow, x, "pooled"), flow.embed(x, pooled=True).numpy(),
                                   rtol=1e-4, atol=1e-5)


def test_dimensions_of_each_set():
    flow = create_backbone("mixerflow_tiny", **SMALL)
    x = np.zeros((3, 1, 8, 8), np.uint8)
    # 2 layers x (1 channel- + 1 patch-mixing coupling) x (mean and max of 8 hidden units)
    dims = {name: flow_features(flow, x, name).shape[1] for name in FEATURE_SETS}
    assert dims == {"latent": 64, "pooled": 4, "depths": 2 * 64, "hidden": 4 * 2 * 8, "depths+hidden": 128 + 64}
    glow = create_backbone("glow_tiny", input_shape=(1, 8, 8), num_levels=2, num_steps=2, hidden=8)
    # 4 steps, each a conditioner of 8 hidden channels (mean and max); the second level's 2 steps
    # act on the half the first level kept (32 values), the first level's on all 64
    assert flow_features(glow, x, "hidden").shape == (3, 4 * 2 * 8)
    assert flow_features(glow, x, "depths").shape == (3, 2 * 64 + 2 * 32)


def test_depths_end_with_the_final_latent(digits):
    flow = initialised(create_backbone("mixerflow_tiny", **{**SMALL, "shift": None}), digits[0].images[:64])
    x = digits[0].images[:10]
    last = flow_features(flow, x, "depths")[:, -64:]  # the last mixer layer's mixer-matrix
    latent = flow_features(flow, x, "latent")
    # the same numbers, in mixer-matrix order instead of image order
    np.testing.assert_allclose(np.sort(last, 1), np.sort(latent, 1), rtol=1e-4, atol=1e-5)


def test_hidden_units_are_per_image_and_batch_independent(digits):
    flow = initialised(create_backbone("mixerflow_tiny", **SMALL), digits[0].images[:64])
    x = digits[0].images[:13]
    whole = flow_features(flow, x, "depths+hidden", batch_size=256)
    one_by_one = flow_features(flow, x, "depths+hidden", batch_size=1)
    np.testing.assert_allclose(whole, one_by_one, rtol=1e-4, atol=1e-5)  # a wrong reshape mixes images
    perm = np.random.default_rng(0).permutation(13)
    np.testing.assert_allclose(flow_features(flow, x[perm], "hidden", batch_size=5), whole[perm, 128:],
                               rtol=1e-4, atol=1e-5)


def test_hidden_units_match_the_conditioner(digits):
    """The first channel-mixing conditioner's pooled GELU units, recomputed from its own input."""
    flow = initialised(create_backbone("mixerflow_tiny", **SMALL), digits[0].images[:64])
    x = digits[0].images[:7]
    conditioner = next(m for m in flow.modules() if isinstance(m, ResidualMLP))
    seen = []
    hook = conditioner.register_forward_pre_hook(lambda m, inp: seen.append(inp[0]))
    with torch.no_grad():
        flow.embed(x)
    hook.remove()
    rows = seen[0]  # (7, 16 patches, 2 features)
    assert rows.shape == (7, 16, 2)
    with torch.no_grad():  # recompute: the input clamp, the stem, the blocks and the head's BN + GELU
        h = conditioner.stem(soft_clamp(rows, conditioner.input_bound).reshape(-1, 2))
        for block in conditioner.blocks:
            h = h + block(h)
        units = conditioner.head[1](conditioner.head[0](h)).reshape(7, 16, -1)
    expected = torch.cat([units.mean(1), units.amax(1)], 1).numpy()
    np.testing.assert_allclose(flow_features(flow, x, "hidden")[:, :16], expected, rtol=1e-4, atol=1e-5)


def test_the_model_is_left_as_it_was(digits):
    flow = create_backbone("mixerflow_tiny", **SMALL).train()
    before = {k: v.clone() for k, v in flow.state_dict().items()}
    flow_features(flow, digits[0].images[:9], "depths+hidden")
    assert flow.training
    assert all(torch.equal(before[k], v) for k, v in flow.state_dict().items())  # no ActNorm init, no BN update
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in flow.modules())


def test_hybrid_model_uses_its_backbone(digits):
    model = HybridModel("mixerflow_tiny", num_classes=10, **SMALL)
    x = digits[0].images[:6]
    np.testing.assert_allclose(flow_features(model, x), flow_features(model.backbone, x))


def test_bfloat16_conditioners_give_float32_features(digits):
    flow = initialised(create_backbone("mixerflow_tiny", **SMALL), digits[0].images[:64])
    x = digits[0].images[:8]
    exact = flow_features(flow, x, "hidden")
    fast = flow_features(flow.set_conditioner_dtype("bfloat16"), x, "hidden")
    assert fast.dtype == np.float32 and np.isfinite(fast).all()
    np.testing.assert_allclose(fast, exact, atol=0.05 * np.abs(exact).max())


def test_hidden_units_of_an_initialised_flow_are_discriminative(digits):
    train, test = digits
    flow = initialised(create_backbone("mixerflow_tiny", **SMALL), train.images[:256])
    result = linear_probe(flow_features(flow, train.images), train.labels, flow_features(flow, test.images),
                          test.labels, seeds=(0,), Cs=[0.1])
    assert result.accuracy_mean > 0.85  # chance is 0.1


@pytest.mark.parametrize("name", ["mixerflow_tiny", "glow_tiny"])
def test_an_inference_copy_gives_the_live_models_features(digits, name):
    options = SMALL if name == "mixerflow_tiny" else dict(input_shape=(1, 8, 8), num_steps=2, hidden=8)
    flow = initialised(create_backbone(name, **options), digits[0].images[:64])
    x = digits[0].images[:20]
    fast = freeze(flow)
    for features in ("hidden", "depths", "depths+hidden"):
        live = flow_features(flow, x, features)
        np.testing.assert_allclose(flow_features(fast, x, features), live, rtol=1e-4, atol=1e-4 * np.abs(live).max())
    assert default_features(fast) == DEFAULT_FEATURES


def test_bad_requests():
    flow = create_backbone("mixerflow_tiny", **SMALL)
    x = np.zeros((2, 1, 8, 8), np.uint8)
    with pytest.raises(ValueError, match="unknown features 'hiden'.*latent"):
        flow_features(flow, x, "hiden")
    with pytest.raises(ValueError, match="batch_size"):
        flow_features(flow, x, "latent", batch_size=0)
    with pytest.raises(TypeError, match="embed"):
        flow_features(object(), x)
    maf = create_backbone("mixerflow_tiny_maf", **SMALL)
    with pytest.raises(ValueError, match="no MLP or convolutional coupling conditioner"):
        flow_features(maf, x, "hidden")
    assert flow_features(maf, x, "depths").shape == (2, 128)  # what it has can still be probed
    assert check_features(DEFAULT_FEATURES) == DEFAULT_FEATURES
