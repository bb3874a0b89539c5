"""Frozen forms of the layers whose evaluation can be precomputed: each owns a copy of what it
needs, computed once from the live layer's parameters when the inference copy is made.

- :class:`FrozenLinear`: an LU linear block (or Glow's 1x1 convolution) with ``W = P L U``,
  ``W^{-1}`` and ``log|det W|`` precomputed (rebuilding ``W`` from its factors is a dozen small
  ops per call on the live layer).
- :class:`FrozenActNorm`: ``y = x * s + b s`` with ``s = exp(log_scale)`` precomputed.
- :class:`FoldedConditioner`: a :class:`~hybridflow.flows.ResidualMLP` whose BatchNorms are folded
  into its linear layers and whose GELUs are fused into the products (see
  :mod:`~hybridflow.flows.inference.folding`).

Example:
    >>> import torch
    >>> from hybridflow.flows import LULinear
    >>> live = LULinear(4, init="random")
    >>> frozen = FrozenLinear(live)
    >>> x = torch.randn(3, 5, 4)
    >>> bool(torch.allclose(frozen(x)[0], live(x)[0], atol=1e-6))
    True
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..actnorm import ActNorm
from ..base import Flow
from ..conditioners import ResidualMLP
from ..linear import InvConv1x1, LULinear, mix_channels
from ..precision import warn_if_slow_bfloat16
from .folding import fold_residual_mlp
from .kernels import linear

__all__ = ["FoldedConditioner", "FrozenActNorm", "FrozenLinear"]


class FrozenLinear(Flow):
    """The function of an :class:`~hybridflow.flows.LULinear` (or ``InvConv1x1``) with fixed weights."""

    def __init__(self, layer: LULinear) -> None:
        super().__init__()
        with torch.no_grad():
            self.register_buffer("weight", layer.weight().detach().clone())
            self.register_buffer("inverse_weight", layer.inverse_weight().detach().clone())
            self.register_buffer("bias", None if layer.bias is None else layer.bias.detach().clone())
            self.log_det = float(layer.log_diag.sum())  # per position
        self.dim = layer.dim
        self.channel_mixing = isinstance(layer, InvConv1x1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.channel_mixing:
            y, positions = mix_channels(self.weight, x), x.shape[2] * x.shape[3]
        else:
            y, positions = linear(x, self.weight, self.bias), math.prod(x.shape[1:]) // self.dim
        return y, x.new_full((x.shape[0],), self.log_det * positions)

    def inverse(self, y: Tensor) -> Tensor:
        if self.channel_mixing:
            return mix_channels(self.inverse_weight, y)
        if self.bias is not None:
            y = y - self.bias
        return F.linear(y, self.inverse_weight)


class FrozenActNorm(Flow):
    """The function of an :class:`~hybridflow.flows.ActNorm` with fixed parameters (no
    initialisation: an uninitialised ActNorm is frozen as it is, the identity)."""

    def __init__(self, layer: ActNorm) -> None:
        super().__init__()
        with torch.no_grad():
            scale = torch.exp(layer.log_scale)
            self.register_buffer("scale", scale.detach().clone())
            self.register_buffer("shift", (layer.bias * scale).detach().clone())
            self.register_buffer("inverse_scale", torch.exp(-layer.log_scale).detach().clone())
            self.register_buffer("bias", layer.bias.detach().clone())
            self.log_det = float(layer.log_scale.sum())  # per position
        self.param_shape = layer.param_shape
        self.num_params = layer.log_scale.numel()

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if x.dim() != len(self.param_shape) + 1 or any(p not in (1, s) for p, s in zip(self.param_shape, x.shape[1:])):
            raise ValueError(f"ActNorm with parameters of shape {self.param_shape} got input of shape {tuple(x.shape)}")
        positions = math.prod(x.shape[1:]) // self.num_params
        return torch.addcmul(self.shift, x, self.scale), x.new_full((x.shape[0],), self.log_det * positions)

    def inverse(self, y: Tensor) -> Tensor:
        return y * self.inverse_scale - self.bias


class FoldedConditioner(nn.Module):
    """A :class:`~hybridflow.flows.ResidualMLP` folded for evaluation.

    Its input clamp ``soft_clamp(x, bound)`` becomes ``sigmoid(2 x / bound) - 1/2`` here, whose
    factor ``2 bound`` is folded into the stem. The folded weights keep the parameters' precision;
    with a bfloat16 ``compute_dtype`` a bfloat16 copy of them serves float32 inputs, as autocast
    lowers only float32 (a float64 model computes in float64, like the live one). ``.to()`` moves
    the weights and remakes that copy. The output is cast back to the input's dtype.
    """

    def __init__(self, mlp: ResidualMLP, folded: nn.Module) -> None:
        super().__init__()
        self.folded = folded
        self.input_bound = mlp.input_bound
        self.compute_dtype = mlp.compute_dtype
        # Where the hidden units GELU(BN(h)) before the output layer pass: a hook on it reads them
        # as on the live conditioner's ``head[1]`` (a hybrid head on them, hybridflow.features).
        self.hidden_tap = nn.Identity()
        self._lowered: list[nn.Module] = []  # a list: not a submodule, so not moved or saved with the weights
        self._lower()

    @classmethod
    def fold(cls, mlp: ResidualMLP) -> FoldedConditioner | None:
        """The folded form of ``mlp``, or ``None`` if a BatchNorm has no running statistics."""
        with torch.no_grad():
            folded = fold_residual_mlp(mlp, mlp.stem.weight.dtype)
        return None if folded is None else cls(mlp, folded)

    def _lower(self) -> None:
        lowered = self.compute_dtype is not None and self.compute_dtype != torch.float32
        self._lowered = [copy.deepcopy(self.folded).to(self.compute_dtype)] if lowered else []

    def _apply(self, fn, recurse: bool = True):
        out = super()._apply(fn, recurse)
        self._lower()
        return out

    def forward(self, x: Tensor) -> Tensor:
        net = self._lowered[0] if self._lowered and x.dtype == torch.float32 else self.folded
        dtype = self.compute_dtype if net is not self.folded else x.dtype
        if dtype == torch.bfloat16:
            warn_if_slow_bfloat16(x.device)
        if self.input_bound is not None:
            x = torch.sigmoid(x * (2.0 / self.input_bound)) - 0.5  # not in place: input gradients need it
        h = x.reshape(-1, x.shape[-1]).to(dtype)
        if not self.hidden_tap._forward_hooks:  # the usual case: one fused call
            return net(h).reshape(*x.shape[:-1], -1).to(x.dtype)
        out = net.output(self.hidden_tap(net.hidden_units(h)))
        return out.reshape(*x.shape[:-1], -1).to(x.dtype)
