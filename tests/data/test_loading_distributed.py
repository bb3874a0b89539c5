"""BatchSource under ``torchrun --nproc_per_node=2`` (gloo, CPU): the ranks split every epoch of a
map-style Dataset as DistributedSampler does -- disjoint shards covering the permutation -- read
through DataLoader workers, and deal an iterable Dataset's items round-robin."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch.distributed as dist

from tests.torchrun import run_two_ranks

WORKER = Path(__file__).with_name("ddp_loading_worker.py")


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("ddp-data")
    run_two_ranks(WORKER, out)
    return json.loads((out / "batches.json").read_text())


@pytest.mark.slow
@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_ranks_read_disjoint_shards_of_each_epoch_as_their_plans_say(report):
    assert report["world_size"] == 2 and report["batches_per_epoch"] == 3  # 25 per rank, batches of 8
    assert report["plan_ok"] == [[[1]], [[1]]] and report["labels_ok"] == [[[1]], [[1]]]
    rank0, rank1 = report["map"]
    per_epoch = report["batches_per_epoch"]
    for epoch in range(2):
        steps = range(epoch * per_epoch, (epoch + 1) * per_epoch)
        seen = [i for s in steps for i in rank0[s] + rank1[s]]
        assert len(seen) == 48 and len(set(seen)) == 48 and set(seen) <= set(range(50))  # no example twice
    first = [i for s in range(per_epoch) for i in rank0[s]]
    second = [i for s in range(per_epoch, 2 * per_epoch) for i in rank0[s]]
    assert first != second  # a new permutation each epoch


@pytest.mark.slow
@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_an_iterable_dataset_is_dealt_round_robin(report):
    rank0, rank1 = report["iterable"]
    assert rank0[0] == list(range(0, 16, 2)) and rank1[0] == list(range(1, 17, 2))
    assert rank0[2] == list(range(32, 48, 2)) and rank0[3] == rank0[0]  # 25 items a rank: 3 batches, then anew
