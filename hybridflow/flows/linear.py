"""Invertible linear maps in PLU form: the mixer's linear block and Glow's 1x1 convolution.

``W = P L U`` with a fixed permutation ``P``, a unit lower-triangular ``L`` and an upper
triangular ``U`` whose diagonal is ``sign * exp(log_diag)``, so ``log|det W| = sum(log_diag)``
costs nothing and ``W`` can never become singular.

Example:
    >>> import torch
    >>> layer = LULinear(6)                 # identity at initialisation
    >>> x = torch.randn(2, 5, 6)
    >>> y, logdet = layer(x)
    >>> bool(torch.allclose(y, x)), logdet.tolist()
    (True, [0.0, 0.0])
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Flow

__all__ = ["InvConv1x1", "LULinear", "RandomPermutation", "mix_channels", "per_example"]


class LULinear(Flow):
    """Invertible linear map with bias on the last dimension, ``y = x W^T + b``.

    Args:
        dim: size of the last dimension.
        permutation: ``"identity"`` (LU, the paper's default), ``"reverse"`` (RLU: ``P`` reverses
            the order of the dimensions, so the layer starts as a reversal rather than the identity).
        init: ``"identity"`` (``L = U = I``, as the paper initialises every linear block) or
            ``"random"`` (the PLU factors of a random rotation, as in Glow).
        bias: learn an additive bias (zero at initialisation).
    """

    def __init__(
        self,
        dim: int,
        permutation: Literal["identity", "reverse"] = "identity",
        init: Literal["identity", "random"] = "identity",
        bias: bool = True,
    ) -> None:
        super().__init__()
        if permutation not in ("identity", "reverse"):
            raise ValueError(f"permutation must be 'identity' or 'reverse', got {permutation!r}")
        self.dim = dim
        eye = torch.eye(dim)
        if init == "random":
            rotation = torch.linalg.qr(torch.randn(dim, dim))[0]
            p, lower, upper = torch.linalg.lu(rotation)
            diag = torch.diagonal(upper)
        elif init == "identity":
            p = eye.flip(0) if permutation == "reverse" else eye
            lower, upper, diag = eye, eye, torch.ones(dim)
        else:
            raise ValueError(f"init must be 'identity' or 'random', got {init!r}")
        self.register_buffer("permutation", p.clone())
        self.register_buffer("sign", torch.sign(diag))
        # Only the strictly triangular entries are parameters: no dead, masked-out weights.
        self.register_buffer("tril_index", torch.tril_indices(dim, dim, -1), persistent=False)
        rows, cols = self.tril_index
        self.lower = nn.Parameter(lower[rows, cols].clone())
        self.upper = nn.Parameter(upper[cols, rows].clone())
        self.log_diag = nn.Parameter(torch.log(diag.abs()))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def _factors(self) -> tuple[Tensor, Tensor]:
        rows, cols = self.tril_index
        eye = torch.eye(self.dim, device=self.lower.device, dtype=self.lower.dtype)
        lower = eye.index_put((rows, cols), self.lower)
        upper = torch.diag(self.sign * torch.exp(self.log_diag)).index_put((cols, rows), self.upper)
        return lower, upper

    def weight(self) -> Tensor:
        """The current ``W = P L U``."""
        lower, upper = self._factors()
        return self.permutation @ (lower @ upper)

    def inverse_weight(self) -> Tensor:
        """``W^{-1} = U^{-1} L^{-1} P^T`` by triangular solves (exact, no general inverse)."""
        lower, upper = self._factors()
        eye = torch.eye(self.dim, device=lower.device, dtype=lower.dtype)
        lower_inv = torch.linalg.solve_triangular(lower, eye, upper=False, unitriangular=True)
        upper_inv = torch.linalg.solve_triangular(upper, eye, upper=True)
        return upper_inv @ lower_inv @ self.permutation.T

    def positions(self, x: Tensor) -> int:
        """How many times ``W`` acts on one example of ``x`` (its log-det counts that often)."""
        return math.prod(x.shape[1:]) // self.dim  # shape arithmetic: no tensor op

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        y = F.linear(x, self.weight(), self.bias)
        return y, per_example(self.log_diag.sum() * self.positions(x), x)

    def inverse(self, y: Tensor) -> Tensor:
        if self.bias is not None:
            y = y - self.bias
        return F.linear(y, self.inverse_weight())


class InvConv1x1(LULinear):
    """Glow's invertible 1x1 convolution on ``(B, C, H, W)``: one ``LULinear`` over the channels.

    Example:
        >>> conv = InvConv1x1(3, init="random")
        >>> x = torch.randn(2, 3, 4, 4)
        >>> bool(torch.allclose(conv.inverse(conv(x)[0]), x, atol=1e-5))
        True
    """

    def __init__(self, channels: int, init: Literal["identity", "random"] = "random") -> None:
        super().__init__(channels, init=init, bias=False)

    def positions(self, x: Tensor) -> int:
        return x.shape[2] * x.shape[3]

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return mix_channels(self.weight(), x), per_example(self.log_diag.sum() * self.positions(x), x)

    def inverse(self, y: Tensor) -> Tensor:
        return mix_channels(self.inverse_weight(), y)


class RandomPermutation(Flow):
    """A fixed random permutation of the last dimension (Jet's replacement for a learned linear
    block): no parameters, no matmul, log-det 0. The order is drawn from the global RNG at
    construction (seed it for a reproducible model) and kept as a buffer, so a checkpoint
    restores it.

    Example:
        >>> layer = RandomPermutation(5)
        >>> x = torch.randn(2, 3, 5)
        >>> y, logdet = layer(x)
        >>> bool(torch.equal(layer.inverse(y), x)), logdet.tolist()
        (True, [0.0, 0.0])
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"a permutation needs a positive dimension, got {dim}")
        self.dim = dim
        order = torch.randperm(dim)
        self.register_buffer("order", order)
        self.register_buffer("inverse_order", torch.argsort(order))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x[..., self.order], x.new_zeros(x.shape[0])

    def inverse(self, y: Tensor) -> Tensor:
        return y[..., self.inverse_order]

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


def per_example(logdet: Tensor | float, x: Tensor) -> Tensor:
    """A log-det shared by every example, as the ``(batch,)`` tensor of the protocol."""
    if isinstance(logdet, Tensor):
        return logdet.expand(x.shape[0])
    return x.new_full((x.shape[0],), logdet)


def mix_channels(weight: Tensor, x: Tensor) -> Tensor:
    """A 1x1 convolution as one batched matmul over the channels (cheaper than conv2d here)."""
    return torch.matmul(weight, x.flatten(2)).view_as(x)
