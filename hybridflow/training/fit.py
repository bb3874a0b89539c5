"""Maximum-likelihood training of a bare backbone, through the one training loop: used by
:class:`hybridflow.ood.FlowDensity` and the benchmarks.

Example:
    >>> import torch
    >>> from hybridflow import create_backbone
    >>> flow = create_backbone("mixerflow_tiny", input_shape=(1, 8, 8), patch_size=2, num_layers=1)
    >>> losses = fit_backbone(flow, torch.randint(0, 256, (32, 1, 8, 8), dtype=torch.uint8), steps=2)
    >>> len(losses), flow.training
    (2, False)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..backbones import FlowBackbone
from ..flows import contains_inference_copy
from ..data import ImageData
from ..hybrid import HybridModel
from .config import TrainConfig
from .loop import train

__all__ = ["fit_backbone"]


def fit_backbone(backbone: FlowBackbone, images: Tensor, steps: int, batch_size: int = 64, lr: float = 1e-3,
                 clip: float = 5.0, seed: int = 0, max_seconds: float | None = None,
                 verbose: int = 0) -> list[float]:
    """Minimise the mean bits/dim of uint8 ``images`` (N, C, H, W) with Adam at a constant
    learning rate for ``steps`` steps (or until ``max_seconds`` have passed); returns the loss of
    every step (NaN for a skipped non-finite step).

    This is :func:`~hybridflow.training.train` on the pure-flow objective (``lam = 0``) with the
    backbone's own device: batches follow its seeded epoch order, gradients are clipped at
    ``clip``, non-finite steps are skipped (and roll the backbone back), ``verbose`` shows a progress
    bar. The backbone is trained in place and left in evaluation mode, also when
    :class:`~hybridflow.training.NonFiniteLossError` stops a diverging run; the global RNGs are left alone.
    """
    if steps < 0:
        raise ValueError(f"steps must be non-negative, got {steps}")
    if not isinstance(backbone, FlowBackbone):
        raise TypeError(f"fit_backbone needs a FlowBackbone, got {type(backbone).__name__}")
    if contains_inference_copy(backbone):
        raise ValueError("fit_backbone got an inference copy (hybridflow.freeze): train the live model instead")
    if steps == 0:
        backbone.eval()
        return []
    device = next(backbone.parameters()).device
    with torch.random.fork_rng(devices=[]):  # the unused head's random init must not move the caller's RNG
        model = HybridModel(backbone, num_classes=1, lam=0.0)
    model.head.requires_grad_(False)  # lam = 0 gives it no gradient: keep it out of Adam and clipping
    config = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, lr_schedule="constant", grad_clip=clip,
                         log_every=1, max_seconds=max_seconds, seed=seed, device=str(device), progress=bool(verbose))
    try:
        result = train(model, ImageData(images), config)
    finally:  # a diverged run leaves the rolled-back (finite) backbone, in evaluation mode too
        backbone.eval()
    return [math.nan if e["loss"] is None else e["loss"] for e in result.history if e["split"] == "train"]
