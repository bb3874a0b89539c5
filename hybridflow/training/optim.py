"""The optimiser side of training: Adam, the learning-rate schedule and the weight average.

Example:
    >>> from torch import nn
    >>> opt = make_adam(nn.Linear(3, 2).parameters(), lr=1e-3)
    >>> scheduler = make_scheduler(opt, total_steps=10, warmup_steps=2)
    >>> scheduler.get_last_lr()
    [0.0005]
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

__all__ = ["MIN_TIMM_FOR_EMA", "make_adam", "lr_factor", "make_scheduler", "make_ema"]


def make_adam(params: Iterable[nn.Parameter], lr: float,
              betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.Adam:
    """Adam, fused into one kernel per step where torch supports it (float parameters on CPU or
    CUDA), else the default implementation. A flow has hundreds of small parameter tensors, and
    torch's CPU default loops over them one by one.

    Example:
        >>> opt = make_adam(nn.Linear(3, 2).parameters(), lr=1e-3)
        >>> opt.defaults["fused"]
        True
    """
    params = list(params)
    fusable = all(p.device.type in ("cpu", "cuda") and p.dtype.is_floating_point for p in params)
    if fusable:
        try:
            return torch.optim.Adam(params, lr=lr, betas=betas, fused=True)
        except (RuntimeError, ValueError):  # an older torch or an unsupported device or dtype
            pass
    return torch.optim.Adam(params, lr=lr, betas=betas)


def lr_factor(step: int, total_steps: int, warmup_steps: int = 0, schedule: str = "cosine") -> float:
    """Learning-rate multiplier at ``step``: linear warm-up to 1, then cosine decay to 0 at
    ``total_steps`` (``schedule="cosine"``) or 1 throughout (``schedule="constant"``).

    Example:
        >>> [round(lr_factor(s, 10, 2), 3) for s in (0, 1, 2, 6, 10)]
        [0.5, 1.0, 1.0, 0.5, 0.0]
        >>> lr_factor(6, 10, 2, schedule="constant")
        1.0
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    if schedule != "cosine":
        raise ValueError(f"schedule must be 'cosine' or 'constant', got {schedule!r}")
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def make_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 0,
                   schedule: str = "cosine") -> LambdaLR:
    """A ``LambdaLR`` following :func:`lr_factor` (step it once per optimisation step)."""
    return LambdaLR(optimizer, lambda s: lr_factor(s, total_steps, warmup_steps, schedule))


#: The oldest timm with ``ModelEmaV3``, whose ``update(model, step=...)`` the training loop calls
#: (``ModelEmaV2`` before it takes no ``step``); pyproject.toml declares the same bound.
MIN_TIMM_FOR_EMA = "0.9.16"


def make_ema(model: nn.Module, decay: float) -> Any:
    """timm's exponential moving average of ``model``'s weights (``.module`` holds the copy),
    updated with ``ema.update(model, step=step)``.

    Example:
        >>> ema = make_ema(nn.Linear(3, 2), decay=0.9)
        >>> type(ema.module).__name__
        'Linear'
    """
    try:
        from timm.utils import ModelEmaV3
    except ImportError:
        from importlib.metadata import PackageNotFoundError, version

        try:
            found = f"timm {version('timm')} is installed"
        except PackageNotFoundError:
            found = "timm is not installed"
        raise ImportError(f"the weight average (ema_decay) needs timm>={MIN_TIMM_FOR_EMA} (its ModelEmaV3); "
                          f"{found}: pip install 'timm>={MIN_TIMM_FOR_EMA}'") from None
    return ModelEmaV3(model, decay=decay)
