"""fit_backbone: maximum likelihood for a bare backbone, through the one training loop."""

from __future__ import annotations

import math

import pytest
import torch

from hybridflow import create_backbone
from hybridflow.training import fit_backbone


def _flow(seed: int = 0):
    torch.manual_seed(seed)
    return create_backbone("mixerflow_tiny", input_shape=(1, 8, 8), patch_size=2, num_layers=1, hidden=8)


def test_fit_backbone_lowers_bits_per_dim_deterministically_and_leaves_rngs_alone(digits):
    images = digits[0].images
    flow = _flow()
    start = {k: v.clone() for k, v in flow.state_dict().items()}
    before = torch.get_rng_state()
    losses = fit_backbone(flow, images, steps=12, batch_size=32, lr=3e-3, seed=5)
    assert torch.equal(torch.get_rng_state(), before)
    assert len(losses) == 12 and all(math.isfinite(v) for v in losses)
    assert sum(losses[-3:]) < sum(losses[:3])
    assert not flow.training
    assert any(not torch.equal(start[k], v) for k, v in flow.state_dict().items())

    again = _flow()
    torch.manual_seed(123)  # the global RNG plays no part
    assert fit_backbone(again, images, steps=12, batch_size=32, lr=3e-3, seed=5) == losses
    assert fit_backbone(_flow(), images, steps=12, batch_size=32, lr=3e-3, seed=6) != losses


def test_fit_backbone_stops_at_its_time_budget_and_accepts_zero_steps(digits):
    images = digits[0].images
    assert len(fit_backbone(_flow(), images, steps=50, max_seconds=0.0)) == 1
    flow = _flow()
    start = {k: v.clone() for k, v in flow.state_dict().items()}
    assert fit_backbone(flow, images, steps=0) == []
    assert all(torch.equal(start[k], v) for k, v in flow.state_dict().items())
    with pytest.raises(ValueError, match="non-negative"):
        fit_backbone(flow, images, steps=-1)
    with pytest.raises(TypeError, match="FlowBackbone"):
        fit_backbone(torch.nn.Linear(2, 2), images, steps=1)
