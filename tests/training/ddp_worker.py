"""Worker of tests/training/test_distributed.py, started by ``torchrun --nproc_per_node=2``: trains
a tiny hybrid model on digits with gloo and writes what each rank ended with to ``<out>/rank<r>.*``.

Each rank builds its model from a different seed (DDP must make them agree), and rank 1 alone
sees a NaN loss at one step (every rank must skip that step together, or DDP would hang).
"""

from __future__ import annotations

import json
import math
import os
import sys

import torch
from safetensors.torch import save_file

from hybridflow.data import load_digits_data
from hybridflow.hybrid import HybridModel
from hybridflow.training import TrainCallback, TrainConfig, train

NAN_CALL = 4  # the backbone's 4th forward on rank 1 (1st is the ActNorm init): training step 2


class Recorder(TrainCallback):
    """Which hooks ran in this rank (only rank 0 may see any)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def on_train_start(self, info):
        self.calls.append(f"start {info.world_size}")

    def on_log(self, entry):
        self.calls.append(f"log {entry['split']} {entry['step']}")

    def on_checkpoint(self, path):
        self.calls.append(f"checkpoint {os.path.basename(path)}")

    def on_train_end(self, result):
        self.calls.append(f"end {result.steps}")


def main(out: str) -> None:
    rank = int(os.environ["RANK"])
    torch.set_num_threads(1)
    torch.manual_seed(100 + rank)  # different initial weights on each rank
    model = HybridModel("mixerflow_tiny", 10, lam=1.0, input_shape=(1, 8, 8), patch_size=2, num_layers=2,
                        hidden=16, steps=1)
    calls = {"n": 0}

    def poison(module, inputs, output):
        calls["n"] += 1
        if rank == 1 and calls["n"] == NAN_CALL:
            return output[0], output[1] * math.nan

    model.backbone.register_forward_hook(poison)
    data = load_digits_data(train=True)
    train_data, val_data = data.split(0.2, seed=0)
    config = TrainConfig(steps=6, batch_size=32, lr=1e-3, log_every=2, eval_every=3, checkpoint_every=3,
                         out_dir=os.path.join(out, "run"), progress=False, max_nonfinite=3, ema_decay=0.9)
    rng_before = torch.get_rng_state()
    recorder = Recorder()
    result = train(model, train_data, config, val_data=val_data, callbacks=[recorder])
    rng_untouched = torch.equal(rng_before, torch.get_rng_state())
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, os.path.join(out, f"rank{rank}.safetensors"))
    save_file({k: v.contiguous() for k, v in result.ema.state_dict().items()},
              os.path.join(out, f"rank{rank}-ema.safetensors"))
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump(dict(metrics=result.metrics, history=result.history, world_size=int(os.environ["WORLD_SIZE"]),
                       global_rng_untouched=rng_untouched, callback_calls=recorder.calls,
                       checkpoint=None if result.checkpoint is None else str(result.checkpoint)), f)


if __name__ == "__main__":
    main(sys.argv[1])
