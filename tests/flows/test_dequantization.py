"""Variational dequantisation (issue 20): q(v | x)'s log-density against an autograd Jacobian, a new
model equal to uniform dequantisation, the bound's parts, checkpoints, the inference copy, errors."""

from __future__ import annotations

import pytest
import torch

from hybridflow import create_backbone, freeze
from hybridflow.backbones.density import bits_per_dim, standard_normal_log_prob
from hybridflow.flows import NUM_BINS, VariationalDequantizer, evaluation_noise
from hybridflow.hybrid import HybridModel
from hybridflow.training import load_checkpoint, save_checkpoint

SMALL = dict(input_shape=(1, 4, 4), patch_size=2, num_layers=2, hidden=8, steps=1)


def randomise_last_layers(q: VariationalDequantizer, seed: int = 1) -> VariationalDequantizer:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for step in q.steps:
            for tensor in (step[-1].weight, step[-1].bias):
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.3)
    return q


def pixels(n: int = 5, shape=(1, 4, 4), seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("steps", [1, 3])
def test_log_q_is_minus_the_log_jacobian_of_the_noise_map(steps):
    torch.manual_seed(0)
    q = randomise_last_layers(VariationalDequantizer((2, 3, 3), hidden=4, steps=steps).double())
    x = pixels(1, (2, 3, 3))
    eps = torch.rand(1, 2, 3, 3, dtype=torch.float64) * 0.8 + 0.1
    jacobian = torch.autograd.functional.jacobian(lambda e: q(x, e.view_as(eps))[0].flatten(), eps.flatten())
    v, log_q = q(x, eps)
    torch.testing.assert_close(log_q[0], -torch.linalg.slogdet(jacobian)[1], atol=1e-9, rtol=1e-9)
    assert ((v > 0) & (v < 1)).all()
    assert torch.linalg.slogdet(jacobian)[0] > 0  # increasing in eps: q is a bijection of (0, 1)^D


def test_the_channels_last_fast_path_gives_the_ordinary_layouts_numbers_and_gradients():
    torch.manual_seed(0)
    q = randomise_last_layers(VariationalDequantizer((1, 6, 6), hidden=5, steps=3))
    x, eps = pixels(4, (1, 6, 6)), torch.rand(4, 1, 6, 6)

    def run(channels_last: bool):
        q.channels_last = channels_last
        q.zero_grad()
        v, log_q = q(x, eps)
        (v.square().sum() + log_q.sum()).backward()
        return v.detach(), log_q.detach(), [p.grad.clone() for p in q.parameters()]

    seen = []
    hook = q.steps[0][0].register_forward_pre_hook(lambda module, args: seen.append(args[0].stride()))
    fast, ordinary = run(True), run(False)
    hook.remove()
    assert seen[0] != seen[1]  # the fast path really ran channels-last (the stride of C is 1)
    assert seen[0][1] == 1 and v_is_contiguous(q, x, eps)
    torch.testing.assert_close(fast[0], ordinary[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(fast[1], ordinary[1], atol=1e-4, rtol=1e-6)
    for a, b in zip(fast[2], ordinary[2]):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def v_is_contiguous(q: VariationalDequantizer, x: torch.Tensor, eps: torch.Tensor) -> bool:
    q.channels_last = True
    return q(x, eps)[0].is_contiguous()


@pytest.mark.parametrize("name", ["mixerflow_tiny", "glow_tiny"])
def test_a_new_model_scores_as_uniform_dequantisation(name):
    options = SMALL if name == "mixerflow_tiny" else dict(input_shape=(1, 4, 4), num_levels=1, num_steps=2, hidden=8)
    torch.manual_seed(0)
    uniform = create_backbone(name, **options).eval()
    torch.manual_seed(0)  # the dequantiser is built after the body: the same body weights
    variational = create_backbone(name, dequantization="variational", **options).eval()
    x = pixels()
    torch.testing.assert_close(variational.bits_per_dim(x), uniform.bits_per_dim(x), atol=1e-5, rtol=0)
    assert variational.config["dequantization"] == "variational" and "dequantization" not in uniform.config


def test_the_bound_is_the_flow_density_of_the_q_noise_minus_log_q():
    torch.manual_seed(0)
    flow = create_backbone("mixerflow_tiny", dequantization="variational", **SMALL).eval()
    randomise_last_layers(flow.dequantizer)
    x = pixels()
    v, log_q = flow.dequantizer(x, evaluation_noise(x, flow.eval_seed))
    z, logdet = flow((x.float() + v) / NUM_BINS)
    expected = standard_normal_log_prob(z) + logdet - 16 * torch.log(torch.tensor(256.0)) - log_q
    torch.testing.assert_close(flow.log_prob(x), expected, atol=1e-4, rtol=1e-6)
    assert log_q.abs().min() > 1e-3  # q is not uniform any more
    # each image's own noise: the same figure alone as in a batch; the midpoint embedding ignores q
    torch.testing.assert_close(flow.log_prob(x[2:3]), flow.log_prob(x)[2:3], atol=1e-4, rtol=0)
    torch.testing.assert_close(flow.embed(x), create_backbone_like(flow).embed(x), atol=1e-6, rtol=0)


def create_backbone_like(flow):
    """The same weights without the dequantiser."""
    torch.manual_seed(0)
    twin = create_backbone("mixerflow_tiny", **SMALL).eval()
    twin.load_state_dict({k: v for k, v in flow.state_dict().items() if not k.startswith("dequantizer.")})
    return twin


def test_training_reaches_the_dequantiser_and_the_copy_agrees():
    torch.manual_seed(0)
    model = HybridModel("mixerflow_tiny", num_classes=3, lam=1.0, dequantization="variational", **SMALL)
    x, y = pixels(8), torch.tensor([0, 1, 2, -1, 0, 1, 2, -1])
    model(x, y).total.backward()
    grads = [p.grad for p in model.backbone.dequantizer.parameters()]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    model.eval()
    randomise_last_layers(model.backbone.dequantizer)
    torch.testing.assert_close(freeze(model).bits_per_dim(x), model.bits_per_dim(x), atol=1e-5, rtol=0)


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    model = HybridModel("mixerflow_tiny", num_classes=3, dequantization="variational", **SMALL).eval()
    randomise_last_layers(model.backbone.dequantizer)
    save_checkpoint(model, tmp_path / "ckpt")
    loaded = load_checkpoint(tmp_path / "ckpt")
    x = pixels()
    assert loaded.backbone.dequantizer is not None
    torch.testing.assert_close(loaded.bits_per_dim(x), model.bits_per_dim(x), atol=0, rtol=0)


def test_bad_dequantization_is_refused():
    with pytest.raises(ValueError, match="dequantization must be one of"):
        create_backbone("mixerflow_tiny", dequantization="gaussian", **SMALL)
    with pytest.raises(ValueError, match="positive"):
        VariationalDequantizer((1, 4, 4), steps=0)


def test_bits_per_dim_helper_agrees():
    torch.manual_seed(0)
    flow = create_backbone("mixerflow_tiny", dequantization="variational", **SMALL).eval()
    x = pixels()
    torch.testing.assert_close(flow.bits_per_dim(x), bits_per_dim(flow.log_prob(x), 16))
