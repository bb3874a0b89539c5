"""The one protocol every invertible piece follows.

A :class:`Flow` maps ``x`` to ``(y, logdet)`` in ``forward`` and ``y`` back to ``x`` in
``inverse``. ``logdet`` is ``log|det dy/dx|`` per example, shape ``(batch,)``.

Example:
    >>> import torch
    >>> from hybridflow.flows import FlowSequence, ActNorm
    >>> flow = FlowSequence(ActNorm((3, 1, 1)), ActNorm((3, 1, 1)))
    >>> x = torch.randn(4, 3, 8, 8)
    >>> y, logdet = flow(x)
    >>> torch.allclose(flow.inverse(y), x, atol=1e-5)
    True
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["Flow", "FlowSequence", "zero_logdet"]


def zero_logdet(x: Tensor) -> Tensor:
    """A ``(batch,)`` tensor of zeros matching ``x``'s batch, device and dtype."""
    return x.new_zeros(x.shape[0])


class Flow(nn.Module):
    """Base class: ``forward(x) -> (y, logdet)`` and ``inverse(y) -> x``."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def inverse(self, y: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class FlowSequence(Flow):
    """A composition of flows: log-dets add up, the inverse runs in reverse order."""

    def __init__(self, *flows: Flow) -> None:
        super().__init__()
        self.flows = nn.ModuleList(flows)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        total = zero_logdet(x)
        for flow in self.flows:
            x, logdet = flow(x)
            total = total + logdet
        return x, total

    def inverse(self, y: Tensor) -> Tensor:
        for flow in reversed(self.flows):
            y = flow.inverse(y)
        return y

    def __len__(self) -> int:
        return len(self.flows)

    def __getitem__(self, index: int) -> Flow:
        return self.flows[index]

