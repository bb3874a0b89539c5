"""Reusable checks every invertible layer must pass (imported by the layer and backbone tests)."""

from __future__ import annotations

import io

import torch
from torch import Tensor, nn

__all__ = [
    "jacobian_logdet", "max_inverse_error", "params_without_grad", "perturb", "randomize", "state_roundtrip",
    "trained_on",
]


def randomize(module: nn.Module, scale: float = 0.05, seed: int = 0) -> nn.Module:
    """Move every parameter away from its (often identity) initialisation, give BatchNorm
    non-trivial running statistics, mark ActNorms initialised, and switch to eval mode."""
    generator = torch.Generator().manual_seed(seed)
    perturb(module, scale, generator)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=generator) * 0.1)
                m.running_var.copy_(1 + torch.rand(m.running_var.shape, generator=generator))
            if hasattr(m, "initialized") and isinstance(m.initialized, Tensor):
                m.initialized.fill_(True)
    return module.eval()


def perturb(module: nn.Module, scale: float = 0.05, generator: torch.Generator | int = 0) -> nn.Module:
    """Add ``scale * N(0, 1)`` noise to every parameter (zero-initialised heads then stop being the
    identity); ``generator`` is a generator or a seed."""
    if isinstance(generator, int):
        generator = torch.Generator().manual_seed(generator)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=generator, dtype=p.dtype) * scale)
    return module


def trained_on(module: nn.Module, x: Tensor, scale: float = 0.05, seed: int = 0) -> nn.Module:
    """Perturb every parameter, run one training-mode call on ``x`` (ActNorms initialise from the
    data, BatchNorms get running statistics), and switch to eval mode: a layer as training leaves it."""
    perturb(module, scale, seed).train()
    with torch.no_grad():
        module(x)
    return module.eval()


def max_inverse_error(flow: nn.Module, x: Tensor) -> float:
    y, _ = flow(x)
    return (flow.inverse(y) - x).abs().max().item()


def jacobian_logdet(flow: nn.Module, x: Tensor) -> Tensor:
    """``log|det J|`` per example from the full autograd Jacobian (float64, small inputs only)."""
    batch = x.shape[0]
    jac = torch.autograd.functional.jacobian(lambda inp: flow(inp)[0], x)
    jac = jac.reshape(batch, -1, batch, x[0].numel())
    return torch.stack([torch.linalg.slogdet(jac[i, :, i, :])[1] for i in range(batch)])


def state_roundtrip(make, flow: nn.Module) -> nn.Module:
    """Serialise ``flow``'s state dict, load it into a freshly made module, return that module."""
    buffer = io.BytesIO()
    torch.save(flow.state_dict(), buffer)
    buffer.seek(0)
    fresh = make()
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    return fresh.eval()


def params_without_grad(flow: nn.Module, loss: Tensor) -> list[str]:
    """Names of the parameters that ``loss.backward()`` leaves without a finite, non-zero gradient."""
    if not any(True for _ in flow.parameters()):
        return []
    flow.zero_grad()
    loss.backward()
    return [n for n, p in flow.named_parameters()
            if p.numel() and (p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0)]
