"""The flow over tabular rows (hybridflow.ood.tabular): exact log-dets, inverse, weighted training."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hybridflow.flows import freeze
from hybridflow.ood import TabularFlow, fit_tabular_flow, weighted_actnorm_init


def trained_flow(d: int = 3, seed: int = 0) -> TabularFlow:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(64, d, generator=gen, dtype=torch.float64) @ torch.randn(d, d, generator=gen, dtype=torch.float64)
    torch.manual_seed(seed)
    flow = TabularFlow(d, num_layers=2, hidden=8)
    fit_tabular_flow(flow, x, steps=15, lr=1e-2, seed=seed)
    return flow


def test_log_det_is_the_autograd_jacobian_and_the_inverse_inverts():
    flow = trained_flow()
    x = torch.randn(4, 3, dtype=torch.float64)
    z, logdet = flow(x)
    for i in range(4):
        jacobian = torch.autograd.functional.jacobian(lambda row: flow(row[None])[0][0], x[i])
        assert float(logdet[i].detach()) == pytest.approx(float(torch.linalg.slogdet(jacobian)[1]), abs=1e-9)
    np.testing.assert_allclose(flow.inverse(z).detach().numpy(), x.numpy(), atol=1e-10)
    log_normal = -0.5 * (z.pow(2) + math.log(2 * math.pi)).sum(1)
    np.testing.assert_allclose(flow.log_prob(x).detach().numpy(), (log_normal + logdet).detach().numpy())


def test_the_inference_copy_computes_the_same_density():
    flow = trained_flow()
    x = torch.randn(50, 3, dtype=torch.float64)
    fast = freeze(flow, dtype=torch.float64)
    np.testing.assert_allclose(fast.log_prob(x).numpy(), flow.log_prob(x).detach().numpy(), rtol=1e-12)
    assert fast.log_prob(x[:7]).numpy() == pytest.approx(fast.log_prob(x).numpy()[:7], rel=1e-12)


def test_weighted_actnorm_init_standardises_with_the_weights():
    x = torch.tensor([[0.0, 10.0], [2.0, 30.0], [4.0, 50.0]], dtype=torch.float64)
    w = torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64)  # the middle row does not count
    flow = TabularFlow(2, num_layers=1, hidden=4).double()
    weighted_actnorm_init(flow, x, w)
    first = flow.body[0]
    np.testing.assert_allclose((-first.bias).detach().numpy(), [2.0, 30.0])
    np.testing.assert_allclose(first.log_scale.detach().exp().numpy(), [1 / 2.0, 1 / 20.0])
    assert bool(first.initialized)


def test_training_lowers_the_nll_and_leaves_global_rng_alone():
    x = torch.randn(200, 2, dtype=torch.float64) * torch.tensor([1.0, 0.1], dtype=torch.float64)
    x[:, 1] += x[:, 0] ** 2  # a curved density: the couplings have something to learn
    torch.manual_seed(0)
    flow = TabularFlow(2, num_layers=2, hidden=16)
    before = torch.get_rng_state().clone()
    losses = fit_tabular_flow(flow, x, steps=150, batch_size=64, lr=1e-2, seed=3)
    assert torch.equal(before, torch.get_rng_state()) and not flow.training
    assert np.mean(losses[-10:]) < np.mean(losses[:10]) - 0.3


def test_bad_configurations_are_refused():
    with pytest.raises(ValueError, match="nothing to couple"):
        TabularFlow(1)
    with pytest.raises(ValueError, match="num_layers"):
        TabularFlow(3, num_layers=0)
    with pytest.raises(ValueError, match="got input of shape"):
        TabularFlow(3).log_prob(torch.zeros(2, 4))
