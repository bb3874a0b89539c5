"""ActNorm: data-dependent initialisation (once, kept across a state round trip), per-channel and
per-element statistics, and the pooled scale init of MixerFlow's per-element ActNorms."""

from __future__ import annotations

import pytest
import torch

from hybridflow.flows import ActNorm


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


def test_actnorm_pooled_scale_init_keeps_near_constant_elements_tame():
    norm = ActNorm((2, 3), pooled_scale_init=True).train()
    x = torch.randn(256, 2, 3)
    x[:, 0, 0] = 5e-2 * torch.rand(256)  # a "faint border pixel": almost constant in the first batch
    y, _ = norm(x)
    assert torch.allclose(norm.log_scale, norm.log_scale[0, 0].expand(2, 3))  # one shared scale
    torch.testing.assert_close(y.mean(dim=0), torch.zeros(2, 3), atol=1e-4, rtol=0)  # per-element centring
    assert norm.log_scale.max() < 1.0  # a per-element init would give about log(20 * sqrt(12)) = 4.2
    assert ActNorm((2, 3)).train()(x)[0][:, 0, 0].std() > 0.9  # ... and this is what it would do


def test_actnorm_in_eval_mode_does_not_initialise():
    norm = ActNorm((3, 1, 1)).eval()
    x = torch.randn(4, 3, 2, 2) * 5 + 2
    y, logdet = norm(x)
    assert not bool(norm.initialized)
    assert torch.equal(y, x) and torch.equal(logdet, torch.zeros(4))


def test_actnorm_log_det_counts_every_shared_position():
    norm = ActNorm((3, 1, 1)).eval()
    with torch.no_grad():
        norm.log_scale.copy_(torch.tensor([0.1, -0.2, 0.4]).view(3, 1, 1))
    _, logdet = norm(torch.randn(2, 3, 4, 5))
    torch.testing.assert_close(logdet, torch.full((2,), 0.3 * 4 * 5))


def test_actnorm_names_a_mismatched_input():
    with pytest.raises(ValueError, match="ActNorm with parameters of shape"):
        ActNorm((3, 1, 1))(torch.randn(2, 4, 2, 2))


@pytest.mark.parametrize("param_shape, batch", [
    ((3, 1, 1), torch.zeros(1, 3, 4, 4)),            # Glow style: one blank image
    ((3, 1, 1), torch.full((8, 3, 4, 4), 0.25)),      # a constant batch
    ((4, 6), torch.randn(1, 4, 6)),                   # MixerFlow style, one image: zero spread per element
    ((4, 6), torch.full((16, 4, 6), -0.5) + 1e-3 * torch.rand(16, 4, 6)),  # blank images + dequantisation
])
def test_a_degenerate_first_batch_keeps_scale_one_and_later_outputs_finite(param_shape, batch):
    for pooled in (False, True):
        norm = ActNorm(param_shape, pooled_scale_init=pooled).train()
        y, logdet = norm(batch)
        assert bool(norm.initialized)
        # before the fix: log_scale = -log(eps) = 9.2 (a 1e4 scale) and later outputs in the 1e4s
        assert torch.equal(norm.log_scale.detach(), torch.zeros(param_shape))
        torch.testing.assert_close(norm.bias.detach(), -batch.mean(dim=[0] + [i + 1 for i, p in enumerate(
            param_shape) if p == 1]).reshape(param_shape))
        later, _ = norm(torch.randn(5, *batch.shape[1:]))
        assert later.abs().max() < 10 and torch.isfinite(logdet).all()


def test_only_the_degenerate_parameters_keep_scale_one():
    norm = ActNorm((2, 1, 1)).train()
    x = torch.randn(32, 2, 3, 3) * 4.0
    x[:, 1] = 7.0  # channel 1 is constant
    norm(x)
    log_scale = norm.log_scale.detach().flatten()
    assert abs(float(log_scale[0] + torch.log(x[:, 0].std(unbiased=False)))) < 1e-3
    assert float(log_scale[1]) == 0.0


def test_a_non_finite_first_batch_is_refused_and_leaves_the_layer_uninitialised():
    norm = ActNorm((3, 1, 1)).train()
    x = torch.randn(4, 3, 2, 2)
    x[0, 1, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        norm(x)
    assert not bool(norm.initialized) and torch.equal(norm.bias.detach(), torch.zeros(3, 1, 1))
    norm(torch.randn(4, 3, 2, 2))  # a good batch then initialises it
    assert bool(norm.initialized)
