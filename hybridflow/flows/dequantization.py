"""Variational dequantisation (Ho et al., 2019, Flow++; Ma et al., 2019, MaCow): the noise that
turns integer pixels into continuous inputs comes from a learnt conditional flow ``q(v | x)``
instead of ``U(0, 1)``.

Uniform dequantisation trains and reports ``log p(x) >= log p((x + v) / 256) - D log 256`` with
``v ~ U(0, 1)^D``. With ``q`` the bound is

    log p(x) >= log p((x + v) / 256) - D log 256 - log q(v | x),    v ~ q(. | x)

(uniform noise is the case ``log q = 0``), so the bits/dim stay the same kind of figure, a
variational upper bound, and the two are compared as they are. ``q`` maps the same uniform draw
``eps`` the uniform case uses: ``a = logit(eps)``, then ``steps`` affine steps in logit space whose
scale and shift come from a small convolutional network of the image (the first step moves every
pixel given the image alone, later ones half of them, on a checkerboard, given the image and the
other half), then ``v = sigmoid(b)``. Every step's last layer starts at zero, so a new model
starts as uniform dequantisation, and in evaluation ``eps`` is each image's own seeded noise, so
a test figure stays deterministic and batch-independent.

Measured on MNIST (issue 20, ``bench/time_to_quality.py``, one CPU core): MixerFlow's 5-minute
test bits/dim 1.632 against 1.701 with uniform noise, for about 19% more time per step (the network
is 8 channels wide); our Glow's 10-minute figure 1.520 against 1.676.

Example:
    >>> import torch
    >>> q = VariationalDequantizer((1, 4, 4))
    >>> pixels = torch.randint(0, 256, (2, 1, 4, 4), dtype=torch.uint8)
    >>> v, log_q = q(pixels, torch.rand(2, 1, 4, 4))
    >>> tuple(v.shape), bool(log_q.detach().abs().max() < 1e-4)   # uniform at initialisation
    ((2, 1, 4, 4), True)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .conditioners import soft_clamp

__all__ = ["DEQUANTIZATIONS", "VariationalDequantizer"]

DEQUANTIZATIONS = ("uniform", "variational")
"""The dequantisations a backbone offers (``create_backbone(..., dequantization=...)``)."""

_EPS = 1e-6  # keeps eps and v off 0 and 1, where the logit and its log-det are infinite
_NUM_BINS = 256


def _conv(cin: int, cout: int, zero: bool = False) -> nn.Conv2d:
    layer = nn.Conv2d(cin, cout, 3, padding=1)
    if zero:
        nn.init.zeros_(layer.weight)
        nn.init.zeros_(layer.bias)
    return layer


class VariationalDequantizer(nn.Module):
    """``q(v | x)`` on images of ``input_shape`` (C, H, W): ``forward(pixels, eps) -> (v, log q)``.

    Args:
        input_shape: (C, H, W) of the images.
        hidden: channels of the convolutional networks (8 keeps it under a fifth of a MixerFlow step).
        steps: affine steps in logit space (the first conditioned on the image alone).
    """

    channels_last: bool = True
    """Run the convolutions channels-last: oneDNN's CPU backward of these narrow 3x3 convolutions
    is 2-3x faster so (a 9 -> 8 channel one, batch 64 of 28x28, one thread: 6.5 against 2.6 ms),
    which makes a whole ``mixerflow_cpu`` training step 1.16x faster (98.7 against 114.9 ms for
    64 images, one thread) and our Glow's 1.05x. The same numbers either way (tested); ``False`` is
    the ordinary layout."""

    def __init__(self, input_shape: tuple[int, int, int], hidden: int = 8, steps: int = 2) -> None:
        super().__init__()
        c, h, w = (int(s) for s in input_shape)
        if hidden < 1 or steps < 1:
            raise ValueError(f"hidden and steps must be positive, got {hidden} and {steps}")
        self.input_shape = (c, h, w)
        self.context = nn.Sequential(_conv(c, hidden), nn.ReLU(), _conv(hidden, hidden), nn.ReLU())
        self.steps = nn.ModuleList(nn.Sequential(_conv(hidden + c, hidden), nn.ReLU(), _conv(hidden, 2 * c, zero=True))
                                   for _ in range(steps))
        rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        board = ((rows + cols) % 2).float().expand(c, h, w)
        masks = [torch.zeros(c, h, w)] + [board if k % 2 else 1 - board for k in range(1, steps)]
        self.register_buffer("masks", torch.stack(masks), persistent=False)  # 1 = conditions, 0 = moves

    def forward(self, pixels: Tensor, eps: Tensor) -> tuple[Tensor, Tensor]:
        """``v`` in ``(0, 1)`` of ``pixels``' shape and ``log q(v | x)`` per image, in nats, from the
        uniform draw ``eps`` (same shape) and integer ``pixels``; in the dtype of the weights."""
        dtype = self.masks.dtype
        layout = torch.channels_last if self.channels_last else torch.contiguous_format
        x = (pixels.to(dtype) / (_NUM_BINS - 1) - 0.5).to(memory_format=layout)
        eps = eps.to(dtype).clamp(_EPS, 1 - _EPS).to(memory_format=layout)
        b = torch.log(eps) - torch.log1p(-eps)
        logdet = -(torch.log(eps) + torch.log1p(-eps)).flatten(1).sum(1)  # of logit(eps)
        context = self.context(x)
        for step, mask in zip(self.steps, self.masks):
            inputs = torch.cat([context, b * mask], dim=1).contiguous(memory_format=layout)
            shift, raw = step(inputs).chunk(2, dim=1)
            log_scale = soft_clamp(raw, 3.0) * (1 - mask)  # bounded, as the couplings' scales
            b = b + (b * torch.expm1(log_scale) + shift) * (1 - mask)
            logdet = logdet + log_scale.flatten(1).sum(1)
        logdet = logdet + (F.logsigmoid(b) + F.logsigmoid(-b)).flatten(1).sum(1)  # of the sigmoid
        # eps is uniform on (0, 1): log q(v) = -log |dv / d eps|
        return torch.sigmoid(b).clamp(_EPS, 1 - _EPS).contiguous(), -logdet

    def extra_repr(self) -> str:
        return f"input_shape={self.input_shape}, steps={len(self.steps)}"
