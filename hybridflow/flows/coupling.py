"""Coupling layers (Dinh et al., 2017): the :class:`Coupling` base that owns the split and builds
its conditioner, the affine coupling, and the registry of couplings by name.

The input is split in two along ``dim``; the first part passes unchanged and conditions an
element-wise invertible map of the second. The affine coupling's scale is
``exp(c * tanh(raw / c))``: a soft clamp that is the identity near zero (so a zero-initialised
conditioner makes the layer the identity), bounded in ``[exp(-c), exp(c)]`` in both directions (so
neither ``forward`` nor ``inverse`` can overflow or divide by zero after a bad step) and smooth
everywhere (unlike a hard clamp, it never cuts the gradient off). Glow's ``sigmoid(raw + 2)`` can
only shrink and is not the identity at zero; a raw ``exp`` is the classic source of NaNs.
``scale="sigmoid2"`` is Jet's (Kolesnikov et al., 2024) ``2 * sigmoid(raw)``: the identity at
zero too, in ``(0, 2)``, so it can shrink without bound but grow at most 2x per layer.

Example:
    >>> import torch
    >>> coupling = AffineCoupling(6, "mlp", hidden=16)
    >>> x = torch.randn(4, 10, 6)
    >>> y, logdet = coupling(x)             # identity at initialisation
    >>> bool(torch.allclose(y, x)), float(logdet.detach().abs().max())
    (True, 0.0)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Flow
from .conditioners import create_conditioner, soft_clamp
from .inference.compiled import compiled_call
from .registry import Registry

__all__ = ["AffineCoupling", "COUPLING_SCALES", "Coupling", "create_coupling", "list_couplings", "register_coupling"]

COUPLING_SCALES = ("softclamp", "sigmoid2")
"""How an affine coupling turns its conditioner's raw output into a log-scale (module docstring)."""
_LOG_2 = math.log(2.0)


class Coupling(Flow):
    """Base of coupling layers: splits ``num_features`` along ``dim`` into ``(n_a, n_b)`` with
    ``n_a = num_features // 2`` and builds the conditioner ``n_a -> n_b * params_per_feature``.

    Args:
        num_features: size of ``dim``.
        conditioner: a registered conditioner name (``"mlp"``, ``"conv"``, ``"kan"``; built by
            :func:`~hybridflow.flows.conditioners.create_conditioner` with ``hidden`` and
            ``conditioner_options``) or a built module with that many outputs along ``dim``.
        dim: the split dimension (``-1`` for mixer rows, ``1`` for image channels).

    Subclasses set ``params_per_feature`` before calling ``super().__init__``.
    """

    params_per_feature: int = 2

    def __init__(self, num_features: int, conditioner: nn.Module | str = "mlp", dim: int = -1, hidden: int = 128,
                 **conditioner_options) -> None:
        super().__init__()
        if num_features < 2:
            raise ValueError(f"a coupling layer needs at least 2 features to split, got {num_features}")
        self.split = (num_features // 2, num_features - num_features // 2)
        self.dim = dim
        if isinstance(conditioner, str):
            conditioner = create_conditioner(conditioner, self.split[0], self.split[1] * self.params_per_feature,
                                             hidden, **conditioner_options)
        elif conditioner_options:
            raise ValueError(f"conditioner options {sorted(conditioner_options)} need a conditioner name, "
                             "not a built conditioner")
        self.conditioner = conditioner

    def split_input(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(x_a, x_b)``: the conditioning part and the part that is transformed."""
        return x.split(self.split, dim=self.dim)

    def join(self, x_a: Tensor, y_b: Tensor) -> Tensor:
        return torch.cat([x_a, y_b], dim=self.dim)


class AffineCoupling(Coupling):
    """``y_b = x_b * exp(s(x_a)) + t(x_a)``, ``y_a = x_a``, split along ``dim``.

    The conditioner's output along ``dim`` is the shift, then the raw log-scale. ``scale``:
    ``"softclamp"`` (``exp(c * tanh(raw / c))`` with ``c = scale_bound``) or ``"sigmoid2"``
    (``2 * sigmoid(raw)``, Jet's; ``scale_bound`` unused). Other arguments: see :class:`Coupling`.
    """

    def __init__(self, num_features: int, conditioner: nn.Module | str = "mlp", dim: int = -1,
                 scale_bound: float = 3.0, hidden: int = 128, scale: str = "softclamp",
                 **conditioner_options) -> None:
        if scale not in COUPLING_SCALES:
            raise ValueError(f"scale must be one of {COUPLING_SCALES}, got {scale!r}")
        super().__init__(num_features, conditioner, dim, hidden, **conditioner_options)
        self.scale_bound = scale_bound
        self.scale = scale

    def log_scale_of(self, raw: Tensor) -> Tensor:
        """The log-scale from the conditioner's raw output (0 at 0 for both ``scale`` kinds)."""
        if self.scale == "sigmoid2":
            return F.logsigmoid(raw) + _LOG_2
        return soft_clamp(raw, self.scale_bound)

    compiled: bool = False
    """Run :meth:`forward` through ``torch.compile`` whenever autograd is on (training); see
    :mod:`~hybridflow.flows.inference.compiled` and ``FlowBackbone.set_compiled_couplings``."""

    def _shift_and_log_scale(self, x_a: Tensor) -> tuple[Tensor, Tensor]:
        shift, raw = self.conditioner(x_a).chunk(2, dim=self.dim)
        return shift, self.log_scale_of(raw)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.compiled and torch.is_grad_enabled():
            return compiled_call(AffineCoupling._affine_forward, self, x)
        return self._affine_forward(x)

    def _affine_forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x_a, x_b = self.split_input(x)
        shift, log_scale = self._shift_and_log_scale(x_a)
        y_b = torch.addcmul(shift, x_b, torch.exp(log_scale))
        return self.join(x_a, y_b), log_scale.flatten(1).sum(1)

    def inverse(self, y: Tensor) -> Tensor:
        y_a, y_b = self.split_input(y)
        shift, log_scale = self._shift_and_log_scale(y_a)
        return self.join(y_a, (y_b - shift) * torch.exp(-log_scale))


# -- couplings by name, for MixerFlow's ``coupling=`` argument ---------------------------------
_COUPLINGS = Registry("coupling")


def register_coupling(name: str):
    """Register a factory ``fn(features, hidden, **options) -> Flow`` acting on the last dim
    (``@register_coupling("my_affine")`` above the factory; see :class:`~hybridflow.flows.registry.Registry`).

    Example:
        >>> list_couplings()[:2], type(create_coupling("affine", 6, hidden=16)).__name__
        (['affine', 'kan'], 'AffineCoupling')
    """
    return _COUPLINGS.register(name)


def create_coupling(name: str, features: int, hidden: int, **options) -> Flow:
    """Build the coupling registered as ``name`` for rows of ``features`` values."""
    return _COUPLINGS.create(name, features, hidden, **options)


def list_couplings() -> list[str]:
    return _COUPLINGS.names()


@register_coupling("affine")
def _affine_mlp_coupling(features: int, hidden: int, num_blocks: int = 1, scale_bound: float = 3.0,
                         scale: str = "softclamp") -> Flow:
    return AffineCoupling(features, "mlp", scale_bound=scale_bound, hidden=hidden, num_blocks=num_blocks, scale=scale)
