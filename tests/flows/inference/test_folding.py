"""Folding a ResidualMLP's BatchNorms into its linear layers computes the same function."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hybridflow.flows import ResidualMLP
from hybridflow.flows.inference import FoldedConditioner
from hybridflow.flows.inference.folding import fold_residual_mlp
from tests.flow_checks import randomize


def randomized_mlp(num_blocks: int, input_bound: float | None = 5.0, seed: int = 0) -> ResidualMLP:
    mlp = ResidualMLP(4, 6, hidden=16, num_blocks=num_blocks, input_bound=input_bound)
    randomize(mlp, scale=0.3, seed=seed)
    with torch.no_grad():  # far from the identity, so a wrong fold cannot hide
        for norm in mlp.modules():
            if isinstance(norm, nn.BatchNorm1d):
                norm.weight.normal_(1.0, 0.5)
                norm.bias.normal_(0.0, 0.5)
                norm.running_mean.normal_(0.0, 0.5)
                norm.running_var.uniform_(0.5, 2.0)
    return mlp.eval()


@pytest.mark.parametrize("num_blocks", [0, 1, 2, 3])
@pytest.mark.parametrize("input_bound", [5.0, None])
@pytest.mark.parametrize("grad", [False, True])
def test_folded_conditioner_is_the_same_function(num_blocks, input_bound, grad):
    mlp = randomized_mlp(num_blocks, input_bound)
    folded = FoldedConditioner.fold(mlp)
    x = torch.randn(3, 10, 4) * 3
    with torch.set_grad_enabled(grad):
        fast = folded(x)
    slow = mlp(x)
    assert fast.dtype == torch.float32 and fast.shape == (3, 10, 6)
    assert slow.abs().max() > 1.0  # a real, non-trivial output
    torch.testing.assert_close(fast, slow.detach(), rtol=1e-5, atol=1e-5)


def test_folded_bfloat16_stays_near_the_float32_function_and_keeps_small_inputs_precise():
    """In bfloat16 the folded path is no coarser than the ordinary (autocast) path, for inputs
    near 0 too (a clamp folded as ``2 bound sigmoid - bound`` rounded them to about 0.02)."""
    mlp = randomized_mlp(1)
    x = torch.randn(8, 50, 4) * 0.05
    reference = mlp(x).detach()
    mlp.compute_dtype = torch.bfloat16
    ordinary = mlp(x).detach()
    fast = FoldedConditioner.fold(mlp)(x).detach()
    assert fast.dtype == torch.float32 and not torch.equal(fast, reference)
    ordinary_error, fast_error = (ordinary - reference).abs().mean(), (fast - reference).abs().mean()
    assert 0 < ordinary_error and fast_error < 2 * ordinary_error


def test_batchnorm_without_running_statistics_cannot_be_folded():
    mlp = randomized_mlp(1)
    mlp.blocks[0][0].track_running_stats = False
    mlp.blocks[0][0].running_mean = mlp.blocks[0][0].running_var = None
    assert fold_residual_mlp(mlp, torch.float32) is None and FoldedConditioner.fold(mlp) is None


def test_folded_weights_are_owned_buffers():
    mlp = randomized_mlp(2)
    folded = FoldedConditioner.fold(mlp)
    assert not list(folded.parameters()) and len(list(folded.buffers())) > 0
    own = {t.data_ptr() for t in folded.buffers()}
    assert not own & {t.data_ptr() for t in mlp.parameters()}
    x = torch.randn(5, 4)
    before = folded(x)
    with torch.no_grad():
        for p in mlp.parameters():
            p.add_(1.0)
    torch.testing.assert_close(folded(x), before, rtol=0, atol=0)
