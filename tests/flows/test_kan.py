"""KAN layers: the B-spline bases and the behaviour outside the grid."""

from __future__ import annotations

import pytest
import torch

from hybridflow.flows import KANConditioner, KANLayer, b_spline_basis


def test_b_spline_bases_partition_unity_inside_and_vanish_outside():
    layer = KANLayer(1, 1, grid_size=4, grid_range=(-1.0, 1.0))
    inside = torch.linspace(-1, 1 - 1e-6, 50, dtype=torch.float64)
    bases = b_spline_basis(inside, layer.knots.double(), 3)
    torch.testing.assert_close(bases.sum(-1), torch.ones(50, dtype=torch.float64))
    assert (bases >= 0).all()
    far = torch.tensor([-10.0, 10.0])
    assert torch.equal(b_spline_basis(far, layer.knots, 3), torch.zeros(2, 7))


def test_kan_layer_outside_the_grid_is_the_silu_branch():
    layer = KANLayer(2, 3)
    x = torch.tensor([[-20.0, 30.0]])
    expected = torch.nn.functional.silu(x) @ layer.base_weight.T
    torch.testing.assert_close(layer(x), expected)


def test_kan_conditioner_needs_a_layer():
    with pytest.raises(ValueError, match="at least one layer"):
        KANConditioner(3, 4, num_layers=0)
