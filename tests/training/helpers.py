"""Shared pieces of the training tests: tiny models on a slice of the digits."""

from __future__ import annotations

import torch

from hybridflow.hybrid import HybridModel
from hybridflow.training import TrainConfig

TINY = dict(input_shape=(1, 8, 8), patch_size=2, num_layers=2, hidden=16, steps=1)


def tiny_model(seed: int = 0, **options) -> HybridModel:
    torch.manual_seed(seed)
    return HybridModel("mixerflow_tiny", 10, **{**TINY, **options})


def tiny_config(out_dir=None, **options) -> TrainConfig:
    defaults = dict(steps=8, batch_size=32, log_every=2, progress=False, num_threads=1, out_dir=out_dir)
    return TrainConfig(**{**defaults, **options})


def same_state(a: dict, b: dict, exact: bool = False) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if exact:
            assert torch.equal(a[key], b[key]), key
        else:
            torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=key)


def temp_files(root) -> list[str]:
    return [str(p) for p in root.rglob("*.tmp")]
