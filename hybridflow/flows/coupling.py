"""Affine coupling (Dinh et al., 2017) and the conditioner networks it uses.

The input is split in two along ``dim``; the first part passes unchanged and conditions an
element-wise affine map of the second. The scale is ``exp(c * tanh(raw / c))``: a soft clamp
that is the identity near zero (so a zero-initialised conditioner makes the layer the
identity), bounded in ``[exp(-c), exp(c)]`` in both directions (so neither ``forward`` nor
``inverse`` can overflow or divide by zero after a bad step) and smooth everywhere (unlike a
hard clamp, it never cuts the gradient off). Glow's ``sigmoid(raw + 2)`` can only shrink and is
not the identity at zero; a raw ``exp`` is the classic source of NaNs.

Example:
    >>> import torch
    >>> coupling = AffineCoupling(6, ResidualMLP(3, 6, hidden=16))
    >>> x = torch.randn(4, 10, 6)
    >>> y, logdet = coupling(x)             # identity at initialisation
    >>> bool(torch.allclose(y, x)), float(logdet.abs().max())
    (True, 0.0)
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from .actnorm import ActNorm
from .base import Flow
from .compiled import compiled_call
from .folding import FoldedMLP, fold_residual_mlp
from .fused import CachesParameters, ParameterCache, fused_kernels_available

__all__ = [
    "AffineCoupling", "CONDITIONER_DTYPES", "Conditioner", "ConvConditioner", "INPUT_BOUND", "ResidualMLP",
    "create_coupling", "list_couplings", "register_coupling", "soft_clamp",
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
"""Precisions a conditioner may compute in (``None``: the input's own dtype)."""


class Conditioner(CachesParameters):
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

    Example:
        >>> net = ResidualMLP(3, 6, hidden=16)
        >>> net.compute_dtype = torch.bfloat16
        >>> net(torch.randn(4, 3)).dtype
        torch.float32
    """

    compute_dtype: torch.dtype | None = None

    def compute(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def compute_inference(self, x: Tensor) -> Tensor | None:
        """The same function, faster, for evaluation mode with autograd off (folded weights,
        fused kernels), in ``compute_dtype`` and cast back to ``x.dtype``; ``None`` where a
        subclass has no such path. Only called when neither training nor autograd needs the
        ordinary graph."""
        return None

    def forward(self, x: Tensor) -> Tensor:
        if not self.training and not torch.is_grad_enabled():
            out = self.compute_inference(x)
            if out is not None:
                return out
        elif torch.is_grad_enabled():
            self._clear_parameter_caches()  # a fused optimiser may step after this pass
        if self.compute_dtype is None or self.compute_dtype == x.dtype:
            return self.compute(x)
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
        self._folded: ParameterCache[FoldedMLP | None] = ParameterCache()

    def compute(self, x: Tensor) -> Tensor:
        if self.input_bound is not None:
            x = soft_clamp(x, self.input_bound)
        h = self.stem(x.reshape(-1, x.shape[-1]))
        for block in self.blocks:
            h = h + block(h)
        return self.head(h).reshape(*x.shape[:-1], -1)

    def compute_inference(self, x: Tensor) -> Tensor | None:
        """Evaluation without autograd (see :mod:`~hybridflow.flows.folding`): each BatchNorm, now a
        fixed affine map, is folded into a linear layer and each GELU fused into the product
        before it. Same function to float32 rounding; in bfloat16, as close to the float32
        function as the ordinary bfloat16 path. With the LU and ActNorm caches, mixerflow_tiny's
        ``log_prob`` runs 1.54x faster in float32 and 1.62x in bfloat16 (``bench/throughput.py``).
        ``None`` (the ordinary path) off the CPU, without oneDNN, or for a BatchNorm that has
        no running statistics."""
        if not fused_kernels_available(x):
            return None
        dtype = self.compute_dtype or x.dtype
        folded = self._folded.get(self, lambda: fold_residual_mlp(self, dtype), dtype)
        if folded is None:
            return None
        if self.input_bound is not None:  # soft_clamp(x) / (2 bound); the factor is folded into the stem
            x = torch.sigmoid(x * (2.0 / self.input_bound)).sub_(0.5)
        return folded(x.to(dtype)).to(x.dtype)


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


class AffineCoupling(Flow):
    """``y_b = x_b * exp(s(x_a)) + t(x_a)``, ``y_a = x_a``, split along ``dim``.

    Args:
        num_features: size of ``dim``; the first ``num_features // 2`` entries condition the rest.
        conditioner: maps ``x_a`` to ``2 * (num_features - num_features // 2)`` features along
            ``dim`` (shift first, then the raw log-scale).
        dim: the split dimension (``-1`` for mixer rows, ``1`` for image channels).
        scale_bound: the soft-clamp bound ``c`` of the log-scale.
    """

    def __init__(self, num_features: int, conditioner: nn.Module, dim: int = -1, scale_bound: float = 3.0) -> None:
        super().__init__()
        if num_features < 2:
            raise ValueError(f"a coupling layer needs at least 2 features to split, got {num_features}")
        self.split = (num_features // 2, num_features - num_features // 2)
        self.conditioner = conditioner
        self.dim = dim
        self.scale_bound = scale_bound

    compiled: bool = False
    """Run :meth:`forward` through ``torch.compile`` whenever autograd is on (training); see
    :mod:`~hybridflow.flows.compiled` and ``FlowBackbone.set_compiled_couplings``."""

    def _shift_and_log_scale(self, x_a: Tensor) -> tuple[Tensor, Tensor]:
        shift, raw = self.conditioner(x_a).chunk(2, dim=self.dim)
        return shift, soft_clamp(raw, self.scale_bound)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.compiled and torch.is_grad_enabled():
            return compiled_call(AffineCoupling._affine_forward, self, x)
        return self._affine_forward(x)

    def _affine_forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x_a, x_b = x.split(self.split, dim=self.dim)
        shift, log_scale = self._shift_and_log_scale(x_a)
        y_b = torch.addcmul(shift, x_b, torch.exp(log_scale))
        return torch.cat([x_a, y_b], dim=self.dim), log_scale.flatten(1).sum(1)

    def inverse(self, y: Tensor) -> Tensor:
        y_a, y_b = y.split(self.split, dim=self.dim)
        shift, log_scale = self._shift_and_log_scale(y_a)
        return torch.cat([y_a, (y_b - shift) * torch.exp(-log_scale)], dim=self.dim)


# -- couplings by name, for MixerFlow's ``coupling=`` argument ---------------------------------
_COUPLINGS: dict[str, Callable[..., Flow]] = {}


def register_coupling(name: str):
    """Register a factory ``fn(features, hidden, **options) -> Flow`` acting on the last dim.

    Example:
        >>> @register_coupling("my_affine")
        ... def _make(features, hidden, **options):
        ...     return AffineCoupling(features, ResidualMLP(features // 2, 2 * (features - features // 2), hidden))
    """

    def decorator(fn):
        _COUPLINGS[name] = fn
        return fn

    return decorator


def create_coupling(name: str, features: int, hidden: int, **options) -> Flow:
    """Build the coupling registered as ``name`` for rows of ``features`` values."""
    if name not in _COUPLINGS:
        raise ValueError(f"unknown coupling {name!r}; known: {', '.join(sorted(_COUPLINGS))}")
    return _COUPLINGS[name](features, hidden, **options)


def list_couplings() -> list[str]:
    return sorted(_COUPLINGS)


@register_coupling("affine")
def _affine_mlp_coupling(features: int, hidden: int, num_blocks: int = 1, scale_bound: float = 3.0) -> Flow:
    out = 2 * (features - features // 2)
    return AffineCoupling(features, ResidualMLP(features // 2, out, hidden, num_blocks), scale_bound=scale_bound)
