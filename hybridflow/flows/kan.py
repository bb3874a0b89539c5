"""Kolmogorov-Arnold network layers (Liu et al., 2024) and a KAN-conditioned affine coupling.

A KAN layer puts a learnable function on every input-output edge and sums them:
``out_j = sum_i  w_base[j, i] * silu(x_i) + sum_g c[j, i, g] * B_g(x_i)``, where ``B_g`` are the
cubic (order ``k = 3``) B-splines of a uniform grid of ``grid_size`` intervals on ``grid_range``,
extended by ``k`` knots on each side so that ``grid_size + k`` bases cover the range fully
(pykan's and efficient-kan's layout).

Inputs outside the grid: nothing is clamped. Beyond the extended grid ``[lo - k h, hi + k h]``
(``h`` the knot spacing) every basis is 0, so the spline branch vanishes and the SiLU base
branch carries the signal; in the ``k`` outer intervals the bases taper off smoothly. Clamping
instead would give a flat function with zero gradient there; extending the grid on the fly
would change the parameters' meaning during training. In the coupling, :class:`KANConditioner`
batch-normalises each layer's input, which keeps most inputs on the grid in the first place.

Example:
    >>> import torch
    >>> coupling = AffineCoupling(6, KANConditioner(3, 6, hidden=8))
    >>> x = torch.randn(4, 3, 6)
    >>> y, logdet = coupling(x)             # identity at initialisation
    >>> bool(torch.equal(y, x)), float(logdet.detach().abs().max())
    (True, 0.0)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Flow
from .conditioners import INPUT_BOUND, register_conditioner, soft_clamp
from .coupling import AffineCoupling, register_coupling

__all__ = ["KANConditioner", "KANLayer", "b_spline_basis"]


def b_spline_basis(x: Tensor, knots: Tensor, order: int) -> Tensor:
    """B-spline bases of ``order`` on ``knots`` (uniform or not) at ``x``: shape ``x.shape + (len(knots) - order - 1,)``.

    Cox-de Boor recursion, vectorised over the bases; the only loop is over the ``order`` (3).

    Example:
        >>> knots = torch.arange(-3.0, 5.0)          # uniform, spacing 1: 4 cubic bases, full on [0, 1]
        >>> round(b_spline_basis(torch.tensor([0.5]), knots, 3).sum().item(), 6)   # partition of unity
        1.0
    """
    x = x.unsqueeze(-1)
    bases = ((x >= knots[:-1]) & (x < knots[1:])).to(x.dtype)
    for p in range(1, order + 1):
        left = (x - knots[: -(p + 1)]) / (knots[p:-1] - knots[: -(p + 1)])
        right = (knots[p + 1:] - x) / (knots[p + 1:] - knots[1:-p])
        bases = left * bases[..., :-1] + right * bases[..., 1:]
    return bases


class _CubicBSpline(torch.autograd.Function):
    """``B_j(x) = beta((x - centre_j) / step)`` with ``beta(r) = ((2-|r|)+^3 - 4 (1-|r|)+^3) / 6``,
    and its analytic derivative in ``backward`` (no graph of intermediates is kept)."""

    @staticmethod
    def forward(ctx, x: Tensor, centres: Tensor, step: float) -> Tensor:
        r = (x.unsqueeze(-1) - centres) / step
        a = r.abs()
        p, q = (2 - a).clamp_min(0), (1 - a).clamp_min(0)
        ctx.save_for_backward(r)
        ctx.step = step
        return (p * p * p - 4 * q * q * q) / 6

    @staticmethod
    def backward(ctx, grad: Tensor):
        (r,) = ctx.saved_tensors
        a = r.abs()
        p, q = (2 - a).clamp_min(0), (1 - a).clamp_min(0)
        slope = (2 * q * q - 0.5 * p * p) * torch.sign(r) / ctx.step   # d beta / dx
        return (grad * slope).sum(-1), None, None


class KANLayer(nn.Module):
    """One KAN layer on the last dimension: a B-spline plus a SiLU base branch per edge.

    Args:
        in_features, out_features: sizes.
        grid_size: intervals of the uniform grid on ``grid_range`` (pykan's default, 5).
        spline_order: B-spline order ``k`` (3: cubic).
        grid_range: the interval the grid covers before its ``k``-knot extension.
        zero_init: zero the spline and base weights (the layer starts as the zero function).

    Example:
        >>> layer = KANLayer(3, 4)
        >>> layer(torch.randn(2, 5, 3)).shape
        torch.Size([2, 5, 4])
    """

    def __init__(self, in_features: int, out_features: int, grid_size: int = 5, spline_order: int = 3,
                 grid_range: tuple[float, float] = (-1.0, 1.0), zero_init: bool = False) -> None:
        super().__init__()
        lo, hi = float(grid_range[0]), float(grid_range[1])
        if grid_size < 1 or spline_order < 0 or not hi > lo:
            raise ValueError(f"KANLayer needs grid_size >= 1, spline_order >= 0 and grid_range lo < hi, got "
                             f"{grid_size}, {spline_order}, {grid_range}")
        self.in_features, self.out_features = in_features, out_features
        self.spline_order = spline_order
        step = (hi - lo) / grid_size
        knots = lo + step * torch.arange(-spline_order, grid_size + spline_order + 1, dtype=torch.float32)
        self.register_buffer("knots", knots)
        num_bases = grid_size + spline_order
        self.base_weight = nn.Parameter(torch.empty(out_features, in_features))
        self.spline_weight = nn.Parameter(torch.empty(out_features, in_features, num_bases))
        if zero_init:
            nn.init.zeros_(self.base_weight)
            nn.init.zeros_(self.spline_weight)
        else:
            # As pykan: base weights like a linear layer, spline coefficients small noise.
            nn.init.kaiming_uniform_(self.base_weight, a=5 ** 0.5)
            nn.init.normal_(self.spline_weight, std=0.1 / in_features ** 0.5)

    def _bases(self, x: Tensor) -> Tensor:
        knots = self.knots.to(x.dtype)
        if self.spline_order != 3:
            return b_spline_basis(x, knots, self.spline_order)
        # Cubic on a uniform grid: each basis is the cardinal cubic B-spline centred 2 knots
        # after its first. Same values as the recursion at a fraction of the elementwise work
        # (forward and backward), which dominates a KAN layer's cost on a CPU.
        return _CubicBSpline.apply(x, knots[2:-2], float(knots[1] - knots[0]))

    def forward(self, x: Tensor) -> Tensor:
        bases = self._bases(x)                                                  # (..., in, G + k)
        spline = bases.flatten(-2) @ self.spline_weight.flatten(1).T            # (..., out)
        return F.linear(F.silu(x), self.base_weight) + spline

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"grid_size={len(self.knots) - 2 * self.spline_order - 1}, spline_order={self.spline_order}")


class KANConditioner(nn.Module):
    """Stacked KAN layers ``in -> hidden -> ... -> out`` on the last dimension; the last layer is
    zero-initialised, so an :class:`AffineCoupling` using it starts as the identity.

    With ``norm=True`` (default) a BatchNorm (no affine part) precedes every KAN layer. Why: flow
    activations are unbounded, the grid covers about ``[-2.2, 2.2]``, and without it the SiLU base
    branch passes outliers through every layer and the coupling's (unclamped) shift explodes in
    the first steps of training. ``ResidualMLP`` normalises the same way. Leading dimensions are
    flattened into the batch, so all rows of a mixer-matrix share the statistics and weights.

    The input is first soft-clamped to ``±input_bound``, as in ``ResidualMLP`` (see
    :data:`~hybridflow.flows.conditioners.INPUT_BOUND`): BatchNorm alone rescales but would still pass
    a single far outlier through.

    Args:
        num_layers: KAN layers in the stack (2: one hidden layer of width ``hidden``).
        norm: BatchNorm the input of every KAN layer.
        input_bound: soft-clamp bound of the input (``None``: none).
        **kan_options: ``grid_size``, ``spline_order``, ``grid_range`` of every layer.

    Example:
        >>> net = KANConditioner(3, 6, hidden=8)
        >>> float(net(torch.randn(4, 5, 3)).detach().abs().max())
        0.0
    """

    def __init__(self, in_features: int, out_features: int, hidden: int = 64, num_layers: int = 2,
                 norm: bool = True, input_bound: float | None = INPUT_BOUND, **kan_options) -> None:
        super().__init__()
        self.input_bound = input_bound
        if num_layers < 1:
            raise ValueError(f"KANConditioner needs at least one layer, got {num_layers}")
        sizes = [in_features] + [hidden] * (num_layers - 1) + [out_features]
        self.norms = nn.ModuleList(
            nn.BatchNorm1d(a, affine=False) if norm else nn.Identity() for a in sizes[:-1])
        self.layers = nn.ModuleList(KANLayer(a, b, zero_init=(i == num_layers - 1), **kan_options)
                                    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])))

    def forward(self, x: Tensor) -> Tensor:
        h = x.reshape(-1, x.shape[-1])
        if self.input_bound is not None:
            h = soft_clamp(h, self.input_bound)
        for norm, layer in zip(self.norms, self.layers):
            h = layer(norm(h))
        return h.reshape(*x.shape[:-1], -1)


register_conditioner("kan")(KANConditioner)


# ``kan_layers``, not ``num_layers``: MixerFlow keeps ``num_layers`` for its own depth.
@register_coupling("kan")
def _kan_coupling(features: int, hidden: int, kan_layers: int = 2, grid_size: int = 5, spline_order: int = 3,
                  grid_range: tuple[float, float] = (-1.0, 1.0), kan_norm: bool = True,
                  scale_bound: float = 3.0) -> Flow:
    return AffineCoupling(features, "kan", scale_bound=scale_bound, hidden=hidden, num_layers=kan_layers,
                          norm=kan_norm, grid_size=grid_size, spline_order=spline_order, grid_range=grid_range)
