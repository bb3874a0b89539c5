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
    x[:, 0, 0] = 1e-2 * torch.rand(256)  # a "blank border pixel": almost constant in the first batch
    y, _ = norm(x)
    assert torch.allclose(norm.log_scale, norm.log_scale[0, 0].expand(2, 3))  # one shared scale
    torch.testing.assert_close(y.mean(dim=0), torch.zeros(2, 3), atol=1e-4, rtol=0)  # per-element centring
    assert norm.log_scale.max() < 1.0  # a per-element init would give about log(100 * sqrt(12)) = 5.8
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
