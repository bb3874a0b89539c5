"""Models with known densities for the OOD tests: the identity flow and an analytic Gaussian."""

from __future__ import annotations

import math

import torch
from torch import nn

from hybridflow.flows import evaluation_noise
from hybridflow import create_backbone

TINY = {"patch_size": 2, "num_layers": 2, "hidden": 16, "steps": 1}


def identity_flow() -> nn.Module:
    """A fresh MixerFlow in eval mode is the identity (identity LU / 1x1 conv, zero couplings,
    uninitialised ActNorm), so its density is a standard normal on the centred pixels."""
    return create_backbone("mixerflow_tiny", input_shape=(1, 8, 8), **TINY).eval()


def gaussian_log_prob_by_hand(x: torch.Tensor) -> torch.Tensor:
    """log p of integer images under the identity flow: eval mode dequantises every image with one
    own evaluation noise (seed 0); then N(u - 0.5; 0, I) and the 8 bits per dimension."""
    noise = evaluation_noise(x, seed=0)
    u = (x.double() + noise.double()) / 256 - 0.5
    d = x[0].numel()
    return -0.5 * (u.pow(2) + math.log(2 * math.pi)).flatten(1).sum(1) - d * math.log(256)


class GaussianToy(nn.Module):
    """An analytic density on pixel values: independent N(mean, std^2) per pixel."""

    def __init__(self, mean: float, std: float, input_shape=(1, 8, 8)) -> None:
        super().__init__()
        self.mean, self.std, self.input_shape = mean, std, input_shape

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        z = (x.double() - self.mean) / self.std
        return (-0.5 * z.pow(2) - math.log(self.std) - 0.5 * math.log(2 * math.pi)).flatten(1).sum(1)


class FakeHybrid(nn.Module):
    """A hybrid model stand-in: a backbone plus p(class 0 | x) = mean pixel / 255."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = identity_flow()

    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        a = x.double().mean(dim=(1, 2, 3)) / 255
        return torch.stack([a, 1 - a], 1)
