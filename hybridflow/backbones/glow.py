"""Glow (Kingma & Dhariwal, 2018), the multi-scale baseline.

``num_levels`` levels of: squeeze, ``num_steps`` steps of (ActNorm, invertible 1x1 convolution,
affine coupling with a convolutional conditioner), then, except at the last level, a split whose
factored-out half is scored under a Gaussian whose mean and scale are predicted from the kept
half (the learned prior). The factored-out halves are whitened by that prior and put back in
place, so ``forward`` returns a latent of the input's shape under a standard normal.

``coupling="spline"`` swaps the affine coupling for a rational-quadratic spline coupling with the
same conditioner: the Glow-like model of Neural Spline Flows (Durkan et al., 2019).

Example:
    >>> import torch
    >>> glow = Glow((1, 8, 8), num_levels=2, num_steps=2, hidden=16)
    >>> u = torch.rand(3, 1, 8, 8)
    >>> z, logdet = glow(u)
    >>> tuple(z.shape), torch.allclose(glow.inverse(z), u, atol=1e-5)
    ((3, 1, 8, 8), True)
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..flows import (
    ActNorm, AffineCoupling, ConvConditioner, Flow, FlowSequence, InvConv1x1, Squeeze, conv_spline_coupling,
    make_preprocess, soft_clamp,
)
from ..flows.invertible_backprop import check_invertible_backprop, invertible_backprop_forward
from .base import FlowBackbone
from .registry import register_backbone

__all__ = ["Glow", "GlowLevel", "glow_step"]


GLOW_COUPLINGS = ("affine", "spline")


def glow_step(channels: int, hidden: int, scale_bound: float = 3.0, coupling: str = "affine",
              **coupling_options) -> FlowSequence:
    """ActNorm, invertible 1x1 convolution (random rotation init), then a channel coupling with a
    convolutional conditioner: ``"affine"`` (Glow) or ``"spline"`` (``coupling_options``:
    ``num_bins``, ``tail_bound``, ``min_bin_width``, ``min_bin_height``, ``min_derivative``)."""
    if coupling == "affine":
        if coupling_options:  # TypeError, as for any unknown keyword (create_backbone reports it)
            raise TypeError(f"Glow's affine coupling takes no options, got {sorted(coupling_options)}")
        half = channels // 2
        conditioner = ConvConditioner(half, 2 * (channels - half), hidden)
        layer: Flow = AffineCoupling(channels, conditioner, dim=1, scale_bound=scale_bound)
    elif coupling == "spline":
        layer = conv_spline_coupling(channels, hidden, **coupling_options)
    else:
        raise ValueError(f"Glow coupling must be one of {GLOW_COUPLINGS}, got {coupling!r}")
    return FlowSequence(ActNorm((channels, 1, 1)), InvConv1x1(channels, init="random"), layer)


class GlowLevel(Flow):
    """One scale: squeeze, steps, then split off half the channels and recurse on the rest.

    With ``invertible_backprop`` the steps run through
    :func:`~hybridflow.flows.invertible_backprop.invertible_backprop_forward` (rebuilt layer by
    layer in the backward pass); the split, its prior and the factored-out half stay on the ordinary graph, so their
    gradients flow into the steps' backward like any other.
    """

    invertible_backprop: bool = False

    def __init__(self, channels: int, levels_left: int, num_steps: int, hidden: int, prior_bound: float = 6.0,
                 coupling: str = "affine", **coupling_options) -> None:
        super().__init__()
        channels = channels * 4
        self.squeeze = Squeeze()
        self.steps = FlowSequence(*(glow_step(channels, hidden, coupling=coupling, **coupling_options)
                                    for _ in range(num_steps)))
        self.prior_bound = prior_bound
        if levels_left > 1:
            self.kept = channels // 2
            factored = channels - self.kept
            self.prior = nn.Conv2d(self.kept, 2 * factored, 3, padding=1)
            nn.init.zeros_(self.prior.weight)
            nn.init.zeros_(self.prior.bias)
            self.inner = GlowLevel(self.kept, levels_left - 1, num_steps, hidden, prior_bound, coupling,
                                   **coupling_options)
        else:
            self.inner = None

    def _prior(self, kept: Tensor) -> tuple[Tensor, Tensor]:
        mean, raw = self.prior(kept).chunk(2, dim=1)
        return mean, soft_clamp(raw, self.prior_bound)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        y, _ = self.squeeze(x)
        y, logdet = invertible_backprop_forward(self.steps, y) if self.invertible_backprop else self.steps(y)
        if self.inner is not None:
            kept, factored = y[:, : self.kept], y[:, self.kept :]
            mean, log_std = self._prior(kept)
            factored = (factored - mean) * torch.exp(-log_std)
            kept, logdet_inner = self.inner(kept)
            logdet = logdet + logdet_inner - log_std.flatten(1).sum(1)
            y = torch.cat([kept, factored], dim=1)
        return self.squeeze.inverse(y), logdet

    def inverse(self, z: Tensor) -> Tensor:
        y, _ = self.squeeze(z)
        if self.inner is not None:
            kept = self.inner.inverse(y[:, : self.kept])
            mean, log_std = self._prior(kept)
            y = torch.cat([kept, y[:, self.kept :] * torch.exp(log_std) + mean], dim=1)
        return self.squeeze.inverse(self.steps.inverse(y))


class Glow(FlowBackbone):
    """Multi-scale Glow on images of ``input_shape`` (C, H, W); H and W must be divisible by
    ``2 ** num_levels``.

    Args:
        num_levels: number of scales ``L``.
        num_steps: flow steps ``K`` per scale.
        hidden: channels of the coupling conditioners.
        coupling: ``"affine"`` (Glow) or ``"spline"`` (Neural Spline Flows); any further keyword
            (``num_bins``, ``tail_bound``, ...) goes to the spline coupling.
        conditioner_dtype: ``"bfloat16"`` runs the conditioners in mixed precision (see
            ``set_conditioner_dtype``); ``"auto"`` picks bfloat16 only where it is native.
        preprocess: ``"centre"`` (``u - 0.5``, the default) or ``"logit"`` (RealNVP's logit).
        compile_couplings: train the couplings through ``torch.compile`` (see
            ``set_compiled_couplings``; a run option, not stored in ``config``).
        invertible_backprop: train without storing the flow steps' activations: the backward
            pass rebuilds them by inverting each step (memory flat in the number of steps; see
            :mod:`~hybridflow.flows.invertible_backprop`). A run option, not stored in
            ``config``; also a settable attribute.
        dequantization: ``"uniform"`` or ``"variational"`` (a learnt ``q(v | x)``, see
            :mod:`~hybridflow.flows.dequantization`).
    """

    def __init__(self, input_shape: tuple[int, int, int], num_levels: int = 3, num_steps: int = 32,
                 hidden: int = 512, coupling: str = "affine", conditioner_dtype: str = "float32",
                 preprocess: str = "centre", compile_couplings: bool = False, invertible_backprop: bool = False,
                 dequantization: str = "uniform", **coupling_options) -> None:
        super().__init__(input_shape, make_preprocess(preprocess))
        c, h, w = self.input_shape
        if num_levels < 1 or num_steps < 1 or hidden < 1:
            raise ValueError("num_levels, num_steps and hidden must be positive")
        factor = 2 ** num_levels
        if h % factor or w % factor:
            raise ValueError(f"Glow with {num_levels} levels needs height and width divisible by {factor}, "
                             f"got {h}x{w}")
        self.body = GlowLevel(c, num_levels, num_steps, hidden, coupling=coupling, **coupling_options)
        self.config = dict(num_levels=num_levels, num_steps=num_steps, hidden=hidden)
        if coupling != "affine":  # keep the affine config exactly as before
            self.config.update(coupling=coupling, **coupling_options)
        self._record_options(preprocess, conditioner_dtype, compile_couplings, dequantization)
        self.invertible_backprop = invertible_backprop

    @property
    def invertible_backprop(self) -> bool:
        """Whether training rebuilds the steps' activations by inversion instead of storing them
        (set it to switch every level at once)."""
        return self.body.invertible_backprop

    @invertible_backprop.setter
    def invertible_backprop(self, enabled: bool) -> None:
        enabled = check_invertible_backprop(enabled)
        for level in self.body.modules():
            if isinstance(level, GlowLevel):
                level.invertible_backprop = enabled


# -- registered configurations -------------------------------------------------------------------
# Every factory takes ``input_shape`` and any constructor argument as an override.

# Neural Spline Flows' image spline settings (Durkan et al. 2019, 8-bit configs): 8 bins on
# [-3, 3], minimum bin width, height and derivative 1e-3.
_NSF_SPLINE = dict(coupling="spline", num_bins=8, tail_bound=3.0)


def _config(defaults: dict, overrides: dict) -> Glow:
    return Glow(**{**defaults, **overrides})


@register_backbone
def glow_cifar10(**overrides) -> Glow:
    """Glow at the size the paper compares with on CIFAR-10 (about 11M parameters)."""
    return _config(dict(input_shape=(3, 32, 32), num_levels=3, num_steps=16, hidden=320), overrides)


@register_backbone
def glow_mnist(**overrides) -> Glow:
    """Glow for 28x28 grey images: 2 levels of 16 steps, hidden 256."""
    return _config(dict(input_shape=(1, 28, 28), num_levels=2, num_steps=16, hidden=256), overrides)


@register_backbone
def glow_tiny(**overrides) -> Glow:
    """A CPU-sized Glow, the baseline beside ``mixerflow_tiny``."""
    return _config(dict(input_shape=(1, 28, 28), num_levels=2, num_steps=8, hidden=128), overrides)


@register_backbone
def nsf_glow_cifar10(**overrides) -> Glow:
    """Neural Spline Flows' Glow-like CIFAR-10 model (3 levels of 7 steps, 8-bin splines); our
    conditioner is Glow's conv stack of width 96, not NSF's ResNet, so parameter counts differ."""
    return _config(dict(input_shape=(3, 32, 32), num_levels=3, num_steps=7, hidden=96, **_NSF_SPLINE), overrides)


@register_backbone
def nsf_glow_mnist(**overrides) -> Glow:
    """Spline-coupling Glow for 28x28 grey images, shaped like ``glow_mnist`` (2 levels of 16 steps)."""
    return _config(dict(input_shape=(1, 28, 28), num_levels=2, num_steps=16, hidden=256, **_NSF_SPLINE), overrides)


@register_backbone
def nsf_glow_tiny(**overrides) -> Glow:
    """A CPU-sized spline-coupling Glow, shaped like ``glow_tiny``."""
    return _config(dict(input_shape=(1, 28, 28), num_levels=2, num_steps=8, hidden=64, **_NSF_SPLINE), overrides)
