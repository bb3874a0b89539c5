"""A minimal maximum-likelihood loop for a bare backbone (internal; ``hybridflow.train`` will
replace it). Used by :class:`hybridflow.ood.FlowDensity` and the benchmarks.

Example:
    >>> import torch
    >>> from hybridflow import create_backbone
    >>> flow = create_backbone("mixerflow_tiny", input_shape=(1, 8, 8), patch_size=2, num_layers=1)
    >>> losses = fit_backbone(flow, torch.randint(0, 256, (32, 1, 8, 8), dtype=torch.uint8), steps=2)
    >>> len(losses)
    2
"""

from __future__ import annotations

import time

import torch
from torch import Tensor, nn

from .train import make_adam

__all__ = ["fit_backbone"]


def fit_backbone(backbone: nn.Module, images: Tensor, steps: int, batch_size: int = 64, lr: float = 1e-3,
                 clip: float = 5.0, seed: int = 0, max_seconds: float | None = None,
                 verbose: int = 0) -> list[float]:
    """Minimise the mean bits/dim of uint8 ``images`` (N, C, H, W) with Adam for ``steps`` steps
    (or until ``max_seconds`` have passed); returns the loss of every step. Leaves the model in
    evaluation mode. Batches are drawn with replacement from a generator seeded by ``seed``."""
    if steps < 0:
        raise ValueError(f"steps must be non-negative, got {steps}")
    device = next(backbone.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    optimiser = make_adam(backbone.parameters(), lr=lr)
    losses: list[float] = []
    start = time.monotonic()
    backbone.train()
    for step in range(steps):
        idx = torch.randint(len(images), (min(batch_size, len(images)),), generator=generator)
        loss = backbone.bits_per_dim(images[idx].to(device)).mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        # Clipping keeps one bad batch (a near-singular coupling) from wrecking the flow.
        nn.utils.clip_grad_norm_(backbone.parameters(), clip)
        optimiser.step()
        losses.append(loss.item())
        if verbose and (step % max(1, steps // 10) == 0 or step == steps - 1):
            print(f"step {step + 1}/{steps}: {losses[-1]:.4f} bits/dim", flush=True)
        if max_seconds is not None and time.monotonic() - start > max_seconds:
            break
    backbone.eval()
    return losses
