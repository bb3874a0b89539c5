"""The bag-of-patches reference: its log-likelihood is the sum over the patches, it wraps a
patch-shaped reference of the likelihood ratio, and it trains on the patches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hybridflow import create_backbone
from hybridflow.data import load_digits_data
from hybridflow.data.patches import PatchSizeError, image_patches
from hybridflow.ood import LikelihoodRatio, PatchDensity, fit_patch_reference, log_likelihood, patch_reference_for


def patch_flow(size: int = 4, channels: int = 1):
    torch.manual_seed(0)
    return create_backbone("mixerflow_tiny", input_shape=(channels, size, size), patch_size=2, num_layers=1,
                           hidden=8).eval()


def test_log_prob_is_the_sum_over_the_patches_and_batch_independent():
    flow, x = patch_flow(), torch.randint(0, 256, (5, 1, 8, 12), dtype=torch.uint8)
    density = PatchDensity(flow, (1, 8, 12))
    with torch.no_grad():
        per_patch = flow.log_prob(image_patches(x, 4)).reshape(5, 6)
        torch.testing.assert_close(density.log_prob(x), per_patch.sum(1))
        torch.testing.assert_close(density.log_prob(x[2:4]), density.log_prob(x)[2:4])
        torch.testing.assert_close(density.bits_per_dim(x), -density.log_prob(x) / (96 * np.log(2)))


def test_bad_pairings_are_named():
    with pytest.raises(ValueError, match="the patch model takes 1 channel"):
        PatchDensity(patch_flow(), (3, 8, 8))
    with pytest.raises(PatchSizeError, match="dividing the image size 10x10"):
        PatchDensity(patch_flow(), (1, 10, 10))
    with pytest.raises(ValueError, match="shape"):
        PatchDensity(patch_flow(), (1, 8, 8)).log_prob(torch.zeros(2, 1, 4, 4, dtype=torch.uint8))


def test_patch_reference_for_wraps_only_patch_shaped_models():
    flow = patch_flow()
    assert isinstance(patch_reference_for(flow, (1, 8, 8)), PatchDensity)
    assert patch_reference_for(flow, (1, 4, 4)) is flow          # the images' own shape: used as it is
    assert patch_reference_for(flow, (1, 10, 10)) is flow        # does not divide: left for the shape check


def test_likelihood_ratio_scores_against_the_patch_sum():
    model = create_backbone("mixerflow_tiny", input_shape=(1, 8, 8), patch_size=2, num_layers=1, hidden=8).eval()
    flow = patch_flow()
    x = torch.randint(0, 256, (6, 1, 8, 8), dtype=torch.uint8)
    expected = log_likelihood(model, x) - log_likelihood(PatchDensity(flow, (1, 8, 8)), x)
    np.testing.assert_allclose(LikelihoodRatio(model, flow).score(x), expected, rtol=1e-5, atol=1e-3)


def test_fit_patch_reference_learns_the_patches():
    images = load_digits_data().images[:256]
    untrained = fit_patch_reference(images, patch_size=4, steps=0, num_layers=1, hidden=16)
    trained = fit_patch_reference(images, patch_size=4, steps=60, batch_size=64, lr=3e-3, num_layers=1, hidden=16)
    assert not trained.training and trained.input_shape == (1, 8, 8) and trained.patch_size == 4
    with torch.no_grad():
        assert trained.bits_per_dim(images).mean() < untrained.bits_per_dim(images).mean() - 0.5
