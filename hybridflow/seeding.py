"""Seeded draws from torch's global random stream that leave the caller's streams as they were.

Layers draw their initial weights from torch's global RNG (``nn.Linear``, ``nn.init``), and some
libraries this one calls (captum's GradientSHAP) draw from it too, with no way to pass a
generator. To make those draws a function of a seed without touching the caller's random
state, the library forks the global states (torch's, on the CPU and the device; Python's;
NumPy's), seeds, draws, and restores them: nothing the library does moves the caller's streams.
Everywhere else randomness comes from passed ``torch.Generator`` objects.

Example:
    >>> import torch
    >>> before = torch.get_rng_state()
    >>> with seeded(0):
    ...     a = torch.rand(2)
    >>> with seeded(0):
    ...     b = torch.rand(2)
    >>> bool(torch.equal(a, b)), bool(torch.equal(before, torch.get_rng_state()))
    (True, True)
"""

from __future__ import annotations

import contextlib
import random
from typing import Iterator

import numpy as np
import torch

__all__ = ["seeded"]


@contextlib.contextmanager
def seeded(seed: int, device: torch.device | str | None = None) -> Iterator[None]:
    """Seed torch's global RNG (CPU, and ``device`` when it is a CUDA device) with ``seed`` inside
    the block; Python's, NumPy's and torch's global states are restored afterwards."""
    device = torch.device(device) if device is not None else None
    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=[device] if device is not None and device.type == "cuda" else []):
            torch.manual_seed(int(seed))
            yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
