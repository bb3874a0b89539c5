"""MAF: the autoregressive structure of MADE and of the flow step."""

from __future__ import annotations

import pytest
import torch

from hybridflow.flows import MADE, MAFLayer
from tests.flow_checks import randomize


def test_maf_jacobian_is_lower_triangular():
    layer = randomize(MAFLayer(6, hidden=12).double(), scale=0.3)
    x = torch.randn(1, 6, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda v: layer(v)[0], x)[0, :, 0, :]
    assert torch.equal(torch.triu(jac, diagonal=1), torch.zeros_like(jac))
    assert (torch.diagonal(jac) > 0).all() and torch.tril(jac, -1).abs().sum() > 0


def test_made_output_i_ignores_inputs_from_i_on():
    made = randomize(MADE(5, hidden=7, num_hidden_layers=3, outputs_per_feature=3), scale=0.5)
    x = torch.randn(4, 5)
    for i in range(5):
        changed = x.clone()
        changed[:, i:] = torch.randn(4, 5 - i)
        before, after = made(x).view(4, 3, 5), made(changed).view(4, 3, 5)
        assert torch.equal(before[..., : i + 1], after[..., : i + 1])


def test_maf_names_a_wrong_feature_count():
    with pytest.raises(ValueError, match="MAFLayer for 5 features"):
        MAFLayer(5, hidden=8)(torch.randn(2, 3, 4))
