"""From integer pixels to the flow's continuous input: validation, uniform dequantisation and
invertible preprocessing (centring, logit) with their log-dets.

Pixels are integers in ``{0..255}``. Dequantisation gives ``u = (x + noise) / 256`` in
``[0, 1)``; the ``+8`` bits that move a density on ``[0, 1)^D`` to the integer grid are added by
the backbone's ``bits_per_dim`` (see DESIGN.md, "Density accounting").

Example:
    >>> import torch
    >>> pixels = torch.tensor([[[[0, 255]]]], dtype=torch.uint8)
    >>> dequantize(pixels, noise="midpoint")
    tensor([[[[0.0020, 0.9980]]]])
"""

from __future__ import annotations

import hashlib
import math
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from .base import Flow, zero_logdet

__all__ = ["NUM_BINS", "NoiseKind", "check_pixels", "dequantize", "evaluation_noise", "noise_draw", "quantize", "Centre", "Logit"]

NUM_BINS = 256


def check_pixels(x: Tensor | np.ndarray, input_shape: tuple[int, int, int]) -> Tensor:
    """Validate a batch of integer images for a model with ``input_shape`` (C, H, W).

    Returns the batch as a float32 tensor; raises ``ValueError`` naming the problem for a wrong
    rank, shape or channel count, an empty batch, NaNs, non-integer or out-of-range values.
    """
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, Tensor):
        raise TypeError(f"expected a tensor of integer pixels, got {type(x).__name__}")
    c, h, w = input_shape
    if x.dim() != 4:
        hint = " (a single image? add a batch dimension: x[None])" if x.dim() == 3 else ""
        raise ValueError(f"expected a batch of images (B, {c}, {h}, {w}), got shape {tuple(x.shape)}{hint}")
    if x.shape[0] == 0:
        raise ValueError("empty input: the batch holds no images")
    if x.shape[1] != c:
        raise ValueError(f"expected {c} channel(s), got {x.shape[1]} (input shape {tuple(x.shape)})")
    if tuple(x.shape[2:]) != (h, w):
        raise ValueError(f"expected images of size {h}x{w}, got {x.shape[2]}x{x.shape[3]}")
    if x.is_floating_point():
        if not torch.isfinite(x).all():
            raise ValueError("input holds NaN or infinite pixel values")
        if not torch.equal(x, x.round()):
            raise ValueError("expected integer pixel values in 0..255, got fractional values "
                             "(convert float images with hybridflow.data.as_images)")
    elif x.dtype == torch.bool or x.is_complex():
        raise TypeError(f"expected integer pixel values, got dtype {x.dtype}")
    if x.dtype != torch.uint8 and (x.min() < 0 or x.max() > NUM_BINS - 1):
        raise ValueError(f"pixel values must lie in 0..255, got range [{x.min().item()}, {x.max().item()}]")
    return x.float()


NoiseKind = Literal["uniform", "midpoint", "evaluation"]

def evaluation_noise(pixels: Tensor, seed: int = 0) -> Tensor:
    """Dequantisation noise in ``[0, 1)`` for evaluation, float32 on ``pixels``' device:
    deterministic, independent across images and batch-independent.

    Each image's noise is drawn from its own generator, seeded with a keyed hash (BLAKE2b) of the
    image's 8-bit pixels and ``seed``: the same image gets the same noise in any batch and on any
    device, and different images get independent noise, so a test-set mean moves with ``seed``
    by about the noise's own standard error over the images, not by a shared noise image's whole
    effect. (torch's CPU generator keeps 32 bits of a seed: two of N distinct images share a draw
    with probability about N^2 / 2^33, 1% for 10,000 images, which moves no statistic.) The draws
    run on the CPU (one small ``torch.rand`` per image, microseconds each, in tensors made on the
    CPU by name, so ``torch.set_default_device`` cannot move them) and move to the device.

    Example:
        >>> import torch
        >>> x = torch.randint(0, 256, (3, 1, 4, 4), dtype=torch.uint8)
        >>> noise = evaluation_noise(x, seed=0)
        >>> bool(torch.equal(noise[1:], evaluation_noise(x[1:], seed=0)))   # batch-independent
        True
        >>> bool(torch.equal(noise, evaluation_noise(x, seed=1)))
        False
    """
    batch, dims = pixels.shape[0], math.prod(pixels.shape[1:])
    rows = pixels.detach().reshape(batch, dims).to(device="cpu", dtype=torch.uint8).numpy()
    key = int(seed).to_bytes(16, "little", signed=True)
    generator = torch.Generator(device="cpu")
    noise = torch.empty((batch, dims), dtype=torch.float32, device="cpu")
    for i, row in enumerate(rows):  # one seeded draw per image: its noise is its own
        digest = hashlib.blake2b(row.tobytes(), digest_size=8, key=key).digest()
        generator.manual_seed(int.from_bytes(digest, "little"))
        torch.rand(dims, generator=generator, out=noise[i], device="cpu")
    return noise.reshape(pixels.shape).to(pixels.device)


def dequantize(pixels: Tensor, noise: NoiseKind = "uniform", generator: torch.Generator | None = None,
               seed: int = 0, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> Tensor:
    """``u = (x + noise) / 256`` in ``dtype`` (float32 unless asked), on ``device`` (``pixels``' by default).

    ``noise``: ``"uniform"``, drawn from ``U(0, 1)`` with ``generator`` on the generator's device
    (the CPU for the global RNG and for a CPU generator, so a seed gives the same noise on every
    device); ``"midpoint"``, ``noise = 0.5``; ``"evaluation"``, :func:`evaluation_noise` with ``seed``.
    The noise is drawn in float32 whatever ``dtype`` (a float64 model sees the same noise values as a
    float32 one) and the sum is formed in ``dtype``, so a float64 ``u`` is not rounded to float32.

    Example:
        >>> pixels = torch.tensor([[[[0, 255]]]], dtype=torch.uint8)
        >>> dequantize(pixels, noise="midpoint", dtype=torch.float64).dtype
        torch.float64
    """
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    device = pixels.device if device is None else torch.device(device)
    draw = noise_draw(pixels, noise, generator, seed)
    return (pixels.to(device=device, dtype=dtype) + draw.to(device=device, dtype=dtype)) / NUM_BINS


def noise_draw(pixels: Tensor, noise: NoiseKind = "uniform", generator: torch.Generator | None = None,
               seed: int = 0) -> Tensor:
    """The draw :func:`dequantize` adds to ``pixels``, float32: ``U(0, 1)`` on ``generator``'s device
    (``"uniform"``), each image's own :func:`evaluation_noise` (``"evaluation"``), or the scalar
    0.5 (``"midpoint"``). A variational dequantiser maps the same draw through ``q(v | x)``."""
    if noise == "midpoint":
        return torch.full((), 0.5, device=pixels.device)
    if noise == "evaluation":
        return evaluation_noise(pixels, seed)
    if noise == "uniform":
        source = generator.device if generator is not None else torch.device("cpu")
        return torch.rand(pixels.shape, generator=generator, device=source)
    raise ValueError(f"noise must be 'uniform', 'midpoint' or 'evaluation', got {noise!r}")


def quantize(u: Tensor) -> Tensor:
    """Continuous values in ``[0, 1)`` back to ``uint8`` pixels (clamped)."""
    return torch.floor(u * NUM_BINS).clamp(0, NUM_BINS - 1).to(torch.uint8)


class Centre(Flow):
    """``y = u - 0.5``: data in ``[-0.5, 0.5)``; log-det 0."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x - 0.5, zero_logdet(x)

    def inverse(self, y: Tensor) -> Tensor:
        return y + 0.5


class Logit(Flow):
    """RealNVP's ``y = logit(alpha + (1 - 2 alpha) u)``, which spreads ``[0, 1)`` over the real line."""

    def __init__(self, alpha: float = 0.05) -> None:
        super().__init__()
        self.alpha = alpha

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        s = self.alpha + (1 - 2 * self.alpha) * x
        y = torch.log(s) - torch.log1p(-s)
        logdet = (math.log(1 - 2 * self.alpha) - torch.log(s) - torch.log1p(-s)).flatten(1).sum(1)
        return y, logdet

    def inverse(self, y: Tensor) -> Tensor:
        return (torch.sigmoid(y) - self.alpha) / (1 - 2 * self.alpha)


PREPROCESSING = ("centre", "logit")


def make_preprocess(name: str) -> Flow:
    """The preprocessing flow a backbone puts before its body: ``"centre"`` (Glow's ``u - 0.5``)
    or ``"logit"`` (RealNVP's logit with ``alpha = 0.05``). Both log-dets count in bits/dim.

    Example:
        >>> make_preprocess("logit")
        Logit()
    """
    if name == "centre":
        return Centre()
    if name == "logit":
        return Logit()
    raise ValueError(f"preprocess must be one of {', '.join(PREPROCESSING)}, got {name!r}")
