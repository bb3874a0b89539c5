"""Other libraries' models, built the way their documentation builds them, for side-by-side runs.

normflows is an optional extra (``pip install -e ".[bench]"``).
"""

from __future__ import annotations

import warnings

from torch import Tensor, nn

__all__ = ["NormflowsGlow", "normflows_available"]


def normflows_available() -> bool:
    try:
        import normflows  # noqa: F401
    except ImportError:
        return False
    return True


class NormflowsGlow(nn.Module):
    """normflows' multi-scale Glow (its README's recipe: GlowBlocks, Squeeze, Merge, DiagGaussian
    priors) behind our backbone's two calls: ``bits_per_dim_loss`` and ``log_prob``.

    Input: dequantised, centred images ``(B, C, H, W)`` as floats.
    """

    def __init__(self, input_shape: tuple[int, int, int] = (1, 28, 28), num_levels: int = 2,
                 num_steps: int = 8, hidden: int = 128) -> None:
        super().__init__()
        import normflows as nf

        warnings.filterwarnings("ignore", message=".*torch.lu is deprecated.*")
        c, h, w = input_shape
        levels = num_levels
        q0, merges, flows = [], [], []
        for i in range(levels):
            steps = [nf.flows.GlowBlock(c * 2 ** (levels + 1 - i), hidden, split_mode="channel", scale=True)
                     for _ in range(num_steps)]
            flows.append(steps + [nf.flows.Squeeze()])
            if i > 0:
                merges.append(nf.flows.Merge())
                latent = (c * 2 ** (levels - i), h // 2 ** (levels - i), w // 2 ** (levels - i))
            else:
                latent = (c * 2 ** (levels + 1), h // 2 ** levels, w // 2 ** levels)
            q0.append(nf.distributions.DiagGaussian(latent))
        self.model = nf.MultiscaleFlow(q0, flows, merges)
        self.input_shape = tuple(input_shape)

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def log_prob(self, x: Tensor) -> Tensor:
        return self.model.log_prob(x, None)
