"""The conditioner networks of coupling layers, and the one factory that builds them.

A conditioner maps the conditioning half of a coupling's input to the parameters of the
transform of the other half. It need not be invertible, so it may squash its input
(:data:`INPUT_BOUND`) and may compute in bfloat16 (:class:`Conditioner`).

Example:
    >>> import torch
    >>> net = create_conditioner("mlp", 3, 6, hidden=16)
    >>> net(torch.randn(4, 5, 3)).shape       # leading dimensions are one batch
    torch.Size([4, 5, 6])
    >>> float(net(torch.randn(2, 3)).detach().abs().max())   # zero-initialised output layer
    0.0
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .actnorm import ActNorm
from .precision import warn_if_slow_bfloat16
from .registry import Registry

__all__ = [
    "CONDITIONER_DTYPES", "Conditioner", "ConvConditioner", "INPUT_BOUND", "ResidualMLP", "create_conditioner",
    "list_conditioners", "register_conditioner", "soft_clamp",
]


def soft_clamp(raw: Tensor, bound: float) -> Tensor:
    """``bound * tanh(raw / bound)``: identity near 0, never beyond ``±bound``.

    Computed as ``bound * (2 * sigmoid(2 * raw / bound) - 1)``, the same function: this build's
    CPU ``tanh`` is about 6x slower than ``sigmoid`` (measured on 6272x8 floats, 55 us against
    9 us), and tanh was 10% of MixerFlow's ``log_prob`` time.
    """
    return torch.sigmoid(raw * (2.0 / bound)).mul(2.0 * bound).sub(bound)


INPUT_BOUND = 5.0
"""Conditioners see their input through ``soft_clamp(x, INPUT_BOUND)``. A conditioner need not be
invertible, so squashing its input is free; it keeps the conditioner in the range it was trained
on. Without it, one out-of-range activation (say ink on an MNIST border pixel that was blank in
every training image, amplified ~1000x by a per-element ActNorm) drives every later coupling to
its extreme scale, and a test image's bits/dim explodes to 1e16 instead of a finite penalty
(measured: mixerflow_tiny after 300 steps, 7% of MNIST test images above 10 bits/dim without
the bound, 0.1% with it)."""


CONDITIONER_DTYPES: dict[str, torch.dtype | None] = {"float32": None, "bfloat16": torch.bfloat16}
"""Precisions a conditioner may compute in (``None``: the input's own dtype). A backbone also
takes ``"auto"``, resolved when it is built (:func:`~hybridflow.flows.precision.resolve_conditioner_dtype`)."""


class Conditioner(nn.Module):
    """Base of the coupling networks: ``forward`` runs :meth:`compute`, optionally in bfloat16.

    A conditioner need not be invertible, so its precision does not touch the flow's exactness:
    with ``compute_dtype = torch.bfloat16`` its matmuls and convolutions run under autocast and
    its output is cast back to the input's dtype, while the coupling's affine map, its inverse and
    its log-det stay in float32. A coupling still inverts to float32 precision and its log-det is
    still the exact log-det of the function computed; only that function differs slightly from
    the float32 one. Across a deep flow, though, rounding a conditioner's input to bfloat16 turns
    the tiny float32 errors of the layers around it into jumps of one bfloat16 step, so a whole
    backbone inverts to about 1e-3 rather than 1e-5: fine for likelihoods, embeddings and
    samples, not for bit-exact reconstruction. Matmuls in bfloat16 run about 3x faster on CPUs
    with AVX512-BF16 (measured on 6272x64 @ 64x64); a whole MixerFlow training step about 1.35x.
    On CPUs without bfloat16 units (AVX2 only) it is emulated and about 4x slower (see
    :mod:`~hybridflow.flows.precision`).

    Example:
        >>> net = ResidualMLP(3, 6, hidden=16)
        >>> net.compute_dtype = torch.bfloat16
        >>> net(torch.randn(4, 3)).dtype
        torch.float32
    """

    compute_dtype: torch.dtype | None = None

    def compute(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        if self.compute_dtype is None or self.compute_dtype == x.dtype:
            return self.compute(x)
        if x.dtype == torch.float32:  # autocast lowers only float32
            warn_if_slow_bfloat16(x.device)
        with torch.autocast(device_type=x.device.type, dtype=self.compute_dtype):
            out = self.compute(x)
        return out.to(x.dtype)


class ResidualMLP(Conditioner):
    """MLP conditioner acting on the last dimension: a linear stem, ``num_blocks`` residual
    blocks ``h + Linear(GELU(BN(Linear(GELU(BN(h))))))``, and a zero-initialised output layer.

    Any leading dimensions are flattened into one batch, so one call handles every row of a
    mixer-matrix with shared weights. The input is soft-clamped to ``±input_bound`` (see
    :data:`INPUT_BOUND`).
    """

    def __init__(self, in_features: int, out_features: int, hidden: int = 128, num_blocks: int = 1,
                 input_bound: float | None = INPUT_BOUND) -> None:
        super().__init__()
        self.input_bound = input_bound
        self.stem = nn.Linear(in_features, hidden)
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.BatchNorm1d(hidden), nn.GELU(), nn.Linear(hidden, hidden),
                nn.BatchNorm1d(hidden), nn.GELU(), nn.Linear(hidden, hidden),
            )
            for _ in range(num_blocks)
        )
        self.head = nn.Sequential(nn.BatchNorm1d(hidden), nn.GELU(), nn.Linear(hidden, out_features))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    def compute(self, x: Tensor) -> Tensor:
        if self.input_bound is not None:
            x = soft_clamp(x, self.input_bound)
        h = self.stem(x.reshape(-1, x.shape[-1]))
        for block in self.blocks:
            h = h + block(h)
        return self.head(h).reshape(*x.shape[:-1], -1)


class ConvConditioner(Conditioner):
    """Glow's coupling network: conv3x3 - ActNorm - ReLU - conv1x1 - ActNorm - ReLU - zero conv3x3."""

    def __init__(self, in_channels: int, out_channels: int, hidden: int = 128,
                 input_bound: float | None = INPUT_BOUND) -> None:
        super().__init__()
        self.input_bound = input_bound
        self.conv_in = nn.Conv2d(in_channels, hidden, 3, padding=1, bias=False)
        self.norm_in = ActNorm((hidden, 1, 1))
        self.conv_mid = nn.Conv2d(hidden, hidden, 1, bias=False)
        self.norm_mid = ActNorm((hidden, 1, 1))
        self.conv_out = nn.Conv2d(hidden, out_channels, 3, padding=1)
        nn.init.normal_(self.conv_in.weight, std=0.05)
        nn.init.normal_(self.conv_mid.weight, std=0.05)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def compute(self, x: Tensor) -> Tensor:
        if self.input_bound is not None:
            x = soft_clamp(x, self.input_bound)
        h = torch.relu(self.norm_in(self.conv_in(x))[0])
        h = torch.relu(self.norm_mid(self.conv_mid(h))[0])
        return self.conv_out(h)


# -- conditioners by name: the one factory every coupling builds its network from ------------
_CONDITIONERS = Registry("conditioner")


def register_conditioner(name: str):
    """Register ``fn(in_features, out_features, hidden, **options) -> nn.Module`` as ``name``
    (``@register_conditioner("my_net")`` above the factory; see :class:`~hybridflow.flows.registry.Registry`).

    Example:
        >>> list_conditioners()
        ['conv', 'kan', 'mlp']
    """
    return _CONDITIONERS.register(name)


def create_conditioner(name: str, in_features: int, out_features: int, hidden: int = 128, **options) -> nn.Module:
    """Build the conditioner registered as ``name`` (``"mlp"``, ``"conv"``, ``"kan"``, ...)."""
    return _CONDITIONERS.create(name, in_features, out_features, hidden, **options)


def list_conditioners() -> list[str]:
    return _CONDITIONERS.names()


register_conditioner("mlp")(ResidualMLP)
register_conditioner("conv")(ConvConditioner)
