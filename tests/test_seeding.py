"""Seeded draws from the global stream leave the caller's Python, NumPy and torch streams alone."""

from __future__ import annotations

import random

import numpy as np
import torch

from hybridflow.seeding import seeded


def test_seeded_draws_repeat_and_restore_every_global_stream():
    random.seed(5)
    np.random.seed(5)
    torch.manual_seed(5)
    states = random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state()
    with seeded(3):
        a = torch.rand(4)
        random.random()
        np.random.rand()
    with seeded(3):
        b = torch.rand(4)
    assert torch.equal(a, b)
    assert random.getstate() == states[0]
    assert np.array_equal(np.random.get_state()[1], states[1])
    assert torch.equal(torch.get_rng_state(), states[2])


def test_seeded_restores_even_when_the_block_raises():
    before = torch.get_rng_state()
    try:
        with seeded(1):
            torch.rand(3)
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert torch.equal(torch.get_rng_state(), before)
