"""Masked autoregressive flow step (Papamakarios et al., 2017) with a MADE conditioner
(Germain et al., 2015), acting on the last dimension of ``(B, rows, features)``.

MADE is an MLP whose weight matrices are masked so that output ``i`` depends only on inputs
``< i`` (in the natural order; the LU / RLU block in front of every MixerFlow step changes the
order between steps). One pass gives every feature's shift and log-scale, so the density
(``forward``) costs one network call; the inverse must rebuild the features one after another
and costs ``features`` calls.

Example:
    >>> import torch
    >>> layer = MAFLayer(5, hidden=16)
    >>> x = torch.randn(3, 4, 5)
    >>> y, logdet = layer(x)                # identity at initialisation
    >>> bool(torch.equal(y, x)), float(logdet.detach().abs().max())
    (True, 0.0)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Flow
from .conditioners import INPUT_BOUND, soft_clamp
from .coupling import register_coupling

__all__ = ["MADE", "MAFLayer", "MaskedLinear"]


class MaskedLinear(nn.Linear):
    """``nn.Linear`` whose weight is multiplied by a fixed 0/1 ``mask`` (out_features, in_features)."""

    def __init__(self, mask: Tensor, bias: bool = True) -> None:
        super().__init__(mask.shape[1], mask.shape[0], bias=bias)
        self.register_buffer("mask", mask.to(self.weight.dtype))

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


class MADE(nn.Module):
    """Masked autoencoder: ``features`` inputs to ``features * outputs_per_feature`` outputs, laid
    out as ``outputs_per_feature`` blocks of ``features``; block entry ``i`` depends on inputs ``< i``.

    Args:
        features: input size ``D``.
        hidden: width of each hidden layer.
        num_hidden_layers: masked hidden layers (GELU after each).
        outputs_per_feature: e.g. 2 for a shift and a log-scale.
        input_bound: inputs pass through ``soft_clamp(x, input_bound)`` first (element-wise, so
            the masks still hold; why: see :data:`~hybridflow.flows.conditioners.INPUT_BOUND`).

    Hidden units get degrees ``1 .. D-1`` cyclically (deterministic, so a checkpoint rebuilds the
    same masks); the output layer is zero-initialised. Output ``i`` with degree ``i + 1`` sees
    hidden units of degree ``<= i``, which see inputs of degree ``<=`` theirs: strictly earlier inputs.

    Example:
        >>> made = MADE(4, hidden=8)
        >>> made(torch.randn(2, 4)).shape
        torch.Size([2, 8])
    """

    def __init__(self, features: int, hidden: int, num_hidden_layers: int = 2, outputs_per_feature: int = 2,
                 input_bound: float | None = INPUT_BOUND) -> None:
        super().__init__()
        self.input_bound = input_bound
        if features < 1 or hidden < 1 or num_hidden_layers < 1 or outputs_per_feature < 1:
            raise ValueError(f"MADE needs positive sizes, got features={features}, hidden={hidden}, "
                             f"num_hidden_layers={num_hidden_layers}, outputs_per_feature={outputs_per_feature}")
        self.features = features
        self.outputs_per_feature = outputs_per_feature
        input_degrees = torch.arange(1, features + 1)
        hidden_degrees = torch.arange(hidden) % max(features - 1, 1) + 1
        layers: list[nn.Module] = []
        previous = input_degrees
        for _ in range(num_hidden_layers):
            layers += [MaskedLinear((hidden_degrees[:, None] >= previous[None, :]).float()), nn.GELU()]
            previous = hidden_degrees
        output_degrees = input_degrees.repeat(outputs_per_feature)
        self.hidden = nn.Sequential(*layers)
        self.output = MaskedLinear((output_degrees[:, None] > previous[None, :]).float())
        nn.init.zeros_(self.output.weight)
        nn.init.zeros_(self.output.bias)

    def forward(self, x: Tensor) -> Tensor:
        if self.input_bound is not None:
            x = soft_clamp(x, self.input_bound)
        return self.output(self.hidden(x))


class MAFLayer(Flow):
    """Affine autoregressive step on the last dim: ``y_i = x_i * exp(s_i(x_<i)) + t_i(x_<i)``.

    The log-scale is soft-clamped like :class:`~hybridflow.flows.AffineCoupling`'s
    (``scale_bound * tanh(raw / scale_bound)``). ``forward`` (density evaluation) is one MADE
    pass; ``inverse`` (sampling) is **sequential**: ``features`` MADE passes, the ``i``-th fixing
    feature ``i``, so sampling is ``features`` times slower than a coupling layer's.

    Args:
        features: size of the last dimension.
        hidden: MADE hidden width.
        num_hidden_layers: MADE hidden layers.
        scale_bound: soft-clamp bound of the log-scale.
    """

    def __init__(self, features: int, hidden: int = 64, num_hidden_layers: int = 2, scale_bound: float = 3.0) -> None:
        super().__init__()
        self.features = features
        self.made = MADE(features, hidden, num_hidden_layers, outputs_per_feature=2)
        self.scale_bound = scale_bound

    def _shift_and_log_scale(self, x: Tensor) -> tuple[Tensor, Tensor]:
        shift, raw = self.made(x).chunk(2, dim=-1)
        return shift, soft_clamp(raw, self.scale_bound)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if x.shape[-1] != self.features:
            raise ValueError(f"MAFLayer for {self.features} features got input of shape {tuple(x.shape)}")
        shift, log_scale = self._shift_and_log_scale(x)
        return x * torch.exp(log_scale) + shift, log_scale.flatten(1).sum(1)

    def inverse(self, y: Tensor) -> Tensor:
        # Sequential by necessity: after pass i the features 0..i are exact, since feature i
        # depends only on features < i. All rows and examples still go through in one batch.
        x = torch.zeros_like(y)
        for _ in range(self.features):
            shift, log_scale = self._shift_and_log_scale(x)
            x = (y - shift) * torch.exp(-log_scale)
        return x

    def extra_repr(self) -> str:
        return f"features={self.features}, scale_bound={self.scale_bound}"


@register_coupling("maf")
def _maf_step(features: int, hidden: int, num_hidden_layers: int = 2, scale_bound: float = 3.0) -> Flow:
    return MAFLayer(features, hidden, num_hidden_layers, scale_bound)
