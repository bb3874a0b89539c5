"""Worker of tests/data/test_loading_distributed.py, started by ``torchrun --nproc_per_node=2``: each
rank streams its batches of a map-style Dataset (through DataLoader workers) and of an iterable one,
all-gathers what every rank read over gloo, and rank 0 writes it to ``<out>/batches.json``."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Dataset, IterableDataset

from hybridflow.data import BatchSource
from hybridflow.training import EpochBatches, current_context

N, BATCH, STEPS, SEED = 50, 8, 7, 3


class Numbered(Dataset):
    """Image i is an (H, W, C) array filled with i; its label is i % 10."""

    def __len__(self) -> int:
        return N

    def __getitem__(self, i: int):
        return np.full((4, 4, 3), i, dtype=np.uint8), i % 10


class Stream(IterableDataset):
    def __iter__(self):
        for i in range(N):
            yield torch.full((1, 4, 4), i, dtype=torch.uint8), -1


def gathered(ids: list[list[int]]) -> list[list[list[int]]]:
    """Every rank's list of batches."""
    mine = torch.tensor(ids, dtype=torch.int64)
    out = [torch.empty_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(out, mine)
    return [t.tolist() for t in out]


def main(out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    ctx = current_context()
    plan = EpochBatches(N, BATCH, SEED, ctx.rank, ctx.world_size)
    stream = BatchSource(Numbered(), num_workers=2).stream(plan, seed=SEED, rank=ctx.rank,
                                                           world_size=ctx.world_size, stop=STEPS)
    batches = [stream.batch(step) for step in range(STEPS)]
    map_ids = [x[:, 0, 0, 0].tolist() for x, _ in batches]
    labels_ok = all(torch.equal(y, x[:, 0, 0, 0].long() % 10) for x, y in batches)
    plan_ok = all(ids == plan.indices(step).tolist() for step, ids in enumerate(map_ids))
    iterable = BatchSource(Stream()).stream(plan, seed=SEED, rank=ctx.rank, world_size=ctx.world_size)
    stream_ids = [iterable.batch(step)[0][:, 0, 0, 0].tolist() for step in range(4)]
    report = dict(world_size=ctx.world_size, batches_per_epoch=plan.batches_per_epoch, map=gathered(map_ids),
                  iterable=gathered(stream_ids), labels_ok=gathered([[int(labels_ok)]]),
                  plan_ok=gathered([[int(plan_ok)]]))
    if ctx.rank == 0:
        with open(os.path.join(out, "batches.json"), "w") as f:
            json.dump(report, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
