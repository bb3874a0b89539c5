"""Activation normalisation (Kingma & Dhariwal, 2018) with data-dependent initialisation.

``param_shape`` is the shape of the scale and bias without the batch dimension; a 1 marks a
dimension whose positions share one parameter. Glow normalises per channel,
``ActNorm((C, 1, 1))``; MixerFlow normalises every activation of the mixer-matrix,
``ActNorm((n_patches, patch_dim))``.

Example:
    >>> import torch
    >>> norm = ActNorm((4, 1, 1))
    >>> y, logdet = norm(torch.randn(16, 4, 5, 5) * 3 + 1)   # first training batch initialises
    >>> bool(norm.initialized)
    True
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .base import Flow

__all__ = ["ActNorm"]


class ActNorm(Flow):
    """``y = (x + bias) * exp(log_scale)``, initialised so the first batch has zero mean, unit variance.

    The ``initialized`` flag is a registered buffer, so a loaded checkpoint never re-initialises.
    Under ``torch.distributed`` the first-batch statistics are all-reduced, so every rank
    starts from identical parameters.

    ``pooled_scale_init=True`` starts every element with one scale, from the variance pooled over
    all elements (the bias stays per element); training then learns per-element scales. Used on
    MixerFlow's per-element ActNorms: a pixel that is blank in the first batch (an MNIST border)
    would otherwise start with a ~1000x scale, and the first later image with ink there costs
    hundreds of bits/dim and derails training.

    A degenerate first batch cannot poison the layer: a standard deviation below ``min_std``
    (one image per parameter, blank or constant images, whose spread is only the dequantisation
    noise of ~1e-3) says nothing about the data's scale, so those parameters keep scale 1 and
    are only centred; a first batch with a non-finite value is refused (``ValueError``) and
    leaves the layer uninitialised. ``flow.eval()`` skips the initialisation altogether.
    """

    def __init__(self, param_shape: tuple[int, ...], eps: float = 1e-4, pooled_scale_init: bool = False,
                 min_std: float = 1e-2) -> None:
        super().__init__()
        self.param_shape = tuple(int(s) for s in param_shape)
        self.eps = eps
        self.min_std = min_std
        self.pooled_scale_init = pooled_scale_init
        self.bias = nn.Parameter(torch.zeros(self.param_shape))
        self.log_scale = nn.Parameter(torch.zeros(self.param_shape))
        self.register_buffer("initialized", torch.tensor(False))

    def _check(self, x: Tensor) -> None:
        if x.dim() != len(self.param_shape) + 1 or any(
            p not in (1, s) for p, s in zip(self.param_shape, x.shape[1:])
        ):
            raise ValueError(
                f"ActNorm with parameters of shape {self.param_shape} got input of shape "
                f"{tuple(x.shape)}"
            )

    @torch.no_grad()
    def initialize(self, x: Tensor) -> None:
        """Set bias and scale from the statistics of ``x`` (all-reduced across ranks)."""
        dims = [0] + [i + 1 for i, p in enumerate(self.param_shape) if p == 1]
        count = torch.tensor(float(x.numel() // self.bias.numel()), device=x.device)
        moments = torch.stack([x.sum(dim=dims).reshape(self.param_shape),
                               (x * x).sum(dim=dims).reshape(self.param_shape)])
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(moments)
            dist.all_reduce(count)
        if not bool(torch.isfinite(moments).all()):
            raise ValueError("ActNorm's first training batch holds non-finite values (NaN or inf): the layer "
                             "was not initialised; check the inputs")
        mean = moments[0] / count
        var = (moments[1] / count - mean * mean).clamp_min(0.0)
        if self.pooled_scale_init:
            var = var.mean().expand_as(var)
        std = var.sqrt()
        # A spread below min_std (one example per parameter, blank images) would give scales of
        # 1/eps = 1e4 that turn every later image's log_prob into -1e7 or NaN: keep scale 1 there.
        log_scale = torch.where(std < self.min_std, torch.zeros_like(std), -torch.log(std + self.eps))
        self.bias.copy_(-mean)
        self.log_scale.copy_(log_scale)
        self.initialized.fill_(True)

    def positions_per_param(self, x: Tensor) -> int:
        """How many activations of one example share each parameter (its log-det counts that often)."""
        return math.prod(x.shape[1:]) // self.log_scale.numel()  # shape arithmetic: no tensor op

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if not self.initialized:
            self._check(x)
            if self.training and x.shape[0] > 0:
                self.initialize(x)
        scale = torch.exp(self.log_scale)
        y = torch.addcmul(self.bias * scale, x, scale)  # one pass over x instead of two
        logdet = self.log_scale.sum() * self.positions_per_param(x)
        return y, logdet.expand(x.shape[0])

    def inverse(self, y: Tensor) -> Tensor:
        return y * torch.exp(-self.log_scale) - self.bias
