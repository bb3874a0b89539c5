r"""A flow over tabular rows: :class:`TabularFlow` models continuous ``(N, D)`` features (no
pixels, no dequantisation) with the library's layers, and :func:`fit_tabular_flow` trains it by
weighted maximum likelihood.

The density is ``log p(x) = log N(z; 0, I) + log|det dz/dx|`` in nats per row: the images'
accounting (:mod:`hybridflow.backbones.density`) without its ``- D log 256`` grid term, since
the data are continuous. Layers: an ActNorm that standardises the features (its statistics are
the weighted training statistics, set once from the whole training set), then ``num_layers``
blocks of affine coupling (an MLP conditioner), ActNorm and an invertible linear map that
starts as a reversal of the features (LU-parametrised, so it learns any mixing).

Example:
    >>> x = torch.randn(200, 3, dtype=torch.float64) * torch.tensor([1.0, 10.0, 0.1], dtype=torch.float64)
    >>> flow = TabularFlow(3, num_layers=2, hidden=8)
    >>> losses = fit_tabular_flow(flow, x, steps=20, seed=0)
    >>> flow.log_prob(x[:4]).shape, len(losses)
    (torch.Size([4]), 20)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..backbones.density import standard_normal_log_prob
from ..flows import INPUT_BOUND, ActNorm, AffineCoupling, Conditioner, FlowSequence, LULinear, soft_clamp

__all__ = ["FeatureMLP", "TabularFlow", "fit_tabular_flow", "weighted_actnorm_init"]


class FeatureMLP(Conditioner):
    """A coupling conditioner for feature vectors: ``Linear -> GELU -> Linear -> GELU -> Linear``,
    the last layer zero-initialised (the coupling starts as the identity), the input soft-clamped
    to ``±INPUT_BOUND``. Unlike :class:`~hybridflow.flows.ResidualMLP` it has no BatchNorm, so a
    row's output never depends on the other rows of its batch, in training too: a weighted batch
    and the same batch with repeated rows get the same gradient.

    Example:
        >>> FeatureMLP(2, 4, hidden=8)(torch.randn(5, 2)).abs().max().item()
        0.0
    """

    def __init__(self, in_features: int, out_features: int, hidden: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_features, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
                                 nn.Linear(hidden, out_features))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def compute(self, x: Tensor) -> Tensor:
        return self.net(soft_clamp(x, INPUT_BOUND))


class TabularFlow(nn.Module):
    """A normalising flow on ``(N, num_features)`` real-valued rows.

    Args:
        num_features: D, at least 2 (a coupling needs two parts).
        num_layers: coupling blocks.
        hidden: width of the conditioners.
        scale_bound: the soft bound of the couplings' log-scales.

    ``forward(x) -> (z, logdet)``, ``inverse(z) -> x``, ``log_prob(x)`` in nats per row,
    ``embed(x) = z``, ``sample(n)``. :func:`hybridflow.freeze` makes its inference copy.

    Example:
        >>> flow = TabularFlow(4, num_layers=1, hidden=8).double().eval()
        >>> x = torch.randn(3, 4, dtype=torch.float64)
        >>> z, logdet = flow(x)
        >>> bool(torch.allclose(flow.inverse(z), x)), flow.log_prob(x).shape
        (True, torch.Size([3]))
    """

    def __init__(self, num_features: int, num_layers: int = 4, hidden: int = 64, scale_bound: float = 3.0) -> None:
        super().__init__()
        for name, value, least in (("num_features", num_features, 2), ("num_layers", num_layers, 1),
                                   ("hidden", hidden, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"TabularFlow needs an integer {name} >= {least}, got {value!r}"
                                 + (" (a flow on one feature has nothing to couple)" if name == "num_features" else ""))
        self.num_features = num_features
        split = (num_features // 2, num_features - num_features // 2)
        layers: list[nn.Module] = [ActNorm((num_features,))]
        for _ in range(num_layers):
            conditioner = FeatureMLP(split[0], 2 * split[1], hidden)
            layers += [AffineCoupling(num_features, conditioner, scale_bound=scale_bound),
                       ActNorm((num_features,)), LULinear(num_features, permutation="reverse")]
        self.body = FlowSequence(*layers)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.body(x)

    def inverse(self, z: Tensor) -> Tensor:
        return self.body.inverse(z)

    def _input(self, x: Tensor) -> Tensor:
        if x.ndim != 2 or x.shape[1] != self.num_features:
            raise ValueError(f"TabularFlow over {self.num_features} features got input of shape {tuple(x.shape)}")
        weight = next(t for t in (*self.parameters(), *self.buffers()) if t.is_floating_point())
        return x.to(device=weight.device, dtype=weight.dtype)

    def log_prob(self, x: Tensor) -> Tensor:
        """``log p(x)`` in nats per row (a continuous density: no dequantisation)."""
        z, logdet = self(self._input(x))
        return standard_normal_log_prob(z) + logdet

    def embed(self, x: Tensor) -> Tensor:
        """The latent ``z`` of each row, ``(N, num_features)``."""
        return self(self._input(x))[0]

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` rows drawn from the model (``z ~ N(0, I)`` on the CPU, then inverted)."""
        weight = next(self.parameters(), None)
        z = torch.randn(int(n), self.num_features, generator=generator, dtype=torch.float64)
        return self.inverse(z.to(weight.dtype if weight is not None else torch.float64))


@torch.no_grad()
def weighted_actnorm_init(flow: TabularFlow, x: Tensor, weights: Tensor, eps: float = 1e-6) -> None:
    """Set every ActNorm of ``flow`` from the weighted mean and standard deviation of its input
    over the whole training set ``x`` (rows weighted by ``weights``), layer by layer, so the
    initialisation does not depend on a batch and weight ``k`` counts as ``k`` repeated rows."""
    w = (weights / weights.sum()).unsqueeze(1)
    h = x
    for layer in flow.body:
        if isinstance(layer, ActNorm):
            mean = (w * h).sum(0)
            std = ((w * (h - mean) ** 2).sum(0)).sqrt()
            layer.bias.copy_(-mean)
            # A constant feature keeps scale 1 rather than exp(-log eps): its density is degenerate
            # either way, but a huge scale would turn any new value of it into an overflow.
            layer.log_scale.copy_(torch.where(std > eps, -torch.log(std), torch.zeros_like(std)))
            layer.initialized.fill_(True)
        h = layer(h)[0]


def fit_tabular_flow(flow: TabularFlow, x: Tensor, weights: Tensor | None = None, steps: int = 500,
                     batch_size: int = 64, lr: float = 1e-3, seed: int = 0, clip: float = 5.0,
                     verbose: int = 0) -> list[float]:
    """Train ``flow`` in place on float ``(N, D)`` rows ``x`` by minimising the weighted mean
    negative log-likelihood per feature, ``sum_i w_i nll_i / (D sum_i w_i)``, with Adam; returns
    the loss of every step (NaN for a skipped non-finite step). The flow computes in ``x``'s
    dtype and device.

    Batches of ``batch_size`` rows are drawn without replacement from a generator seeded with
    ``seed``; with ``N <= batch_size`` every step sees all rows, so integer weights are then
    exactly the same as repeating rows. Gradients are clipped at ``clip``; the flow is left in
    evaluation mode; global random states are untouched.
    """
    n, d = x.shape
    weights = torch.ones(n, dtype=x.dtype, device=x.device) if weights is None else weights.to(x)
    flow.to(device=x.device, dtype=x.dtype)
    weighted_actnorm_init(flow, x, weights)
    flow.train()
    optimiser = torch.optim.Adam(flow.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(int(seed))
    losses: list[float] = []
    for step in range(int(steps)):
        index = torch.arange(n) if n <= batch_size else torch.randperm(n, generator=generator)[:batch_size]
        w = weights[index.to(x.device)]
        if float(w.sum()) <= 0:  # only zero-weight rows drawn: nothing to learn from
            losses.append(math.nan)
            continue
        loss = -(w * flow.log_prob(x[index.to(x.device)])).sum() / (w.sum() * d)
        if not torch.isfinite(loss):
            losses.append(math.nan)
            continue
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(flow.parameters(), clip)
        optimiser.step()
        losses.append(float(loss.detach()))
        if verbose and (step + 1) % max(1, int(steps) // 10) == 0:
            print(f"step {step + 1}/{steps}: nll {losses[-1]:.4f} nats/feature")
    flow.eval()
    return losses
