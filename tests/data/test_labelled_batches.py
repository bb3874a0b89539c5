"""LabelledBatches: k labelled images in every batch, replacement-free cycles reshuffled each time,
a function of (seed, step, rank) only, and clear errors for data it cannot serve."""

from __future__ import annotations

import random

import pytest
import torch

from hybridflow.data import BatchSource, ImageData
from hybridflow.data.labelled_batches import LabelledBatches


def semi_labels(n: int = 100, labelled: int = 12, seed: int = 0) -> torch.Tensor:
    """``n`` labels of which ``labelled`` (scattered) are classes 0..3, the rest -1."""
    labels = torch.full((n,), -1, dtype=torch.int64)
    where = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:labelled]
    labels[where] = torch.arange(labelled) % 4
    return labels


@pytest.mark.parametrize("labelled", [12, 10])  # a multiple of k, and cycles that end mid-batch
def test_each_batch_holds_k_labelled_then_unlabelled_and_cycles_without_replacement(labelled):
    labels = semi_labels(labelled=labelled)
    plan = LabelledBatches(labels, labelled_per_batch=4, batch_size=10, seed=3)
    batches = [plan.indices(s) for s in range(30)]
    assert all(len(b) == 10 for b in batches)
    assert all(labels[b[:4]].ge(0).all() and labels[b[4:]].eq(-1).all() for b in batches)
    stream = torch.cat([b[:4] for b in batches])  # 120 labelled draws
    pool = sorted(torch.nonzero(labels >= 0).flatten().tolist())
    cycles = [stream[i : i + labelled] for i in range(0, len(stream) - labelled + 1, labelled)]
    assert len(cycles) >= 10
    assert all(sorted(c.tolist()) == pool for c in cycles)  # each cycle: every labelled image once
    assert len({tuple(c.tolist()) for c in cycles}) == len(cycles)  # reshuffled: no two cycles alike
    unlabelled = torch.cat([b[4:] for b in batches])  # 180 of 100 - labelled unlabelled images
    u = 100 - labelled
    assert sorted(unlabelled[:u].tolist()) == sorted(torch.nonzero(labels < 0).flatten().tolist())
    assert plan.batches_per_epoch == u // 6


def test_the_plan_is_a_function_of_seed_and_step_whatever_the_order_asked():
    labels = semi_labels()
    forward = LabelledBatches(labels, 4, 10, seed=7)
    expected = [forward.indices(s).tolist() for s in range(40)]
    order = list(range(40))
    random.Random(0).shuffle(order)  # a resume at any step, jumps back (the ActNorm batch), any order
    jumping = LabelledBatches(labels, 4, 10, seed=7)
    assert all(jumping.indices(s).tolist() == expected[s] for s in order)
    before = torch.get_rng_state()
    other = [LabelledBatches(labels, 4, 10, seed=8).indices(s).tolist() for s in range(40)]
    assert other != expected
    assert torch.equal(torch.get_rng_state(), before)  # the global RNG is never read


def test_ranks_read_disjoint_slots_of_one_stream():
    labels = semi_labels(n=200, labelled=16)
    single = LabelledBatches(labels, 4, 8, seed=1)
    ranks = [LabelledBatches(labels, 4, 8, seed=1, rank=r, world_size=2) for r in range(2)]
    for step in range(6):
        a, b = (plan.indices(step) for plan in ranks)
        # step s on rank r is slot 2s + r of the single-process stream
        assert torch.equal(a, single.indices(2 * step)) and torch.equal(b, single.indices(2 * step + 1))
        assert not set(a.tolist()) & set(b.tolist())  # 8 labelled of 16 per step: no overlap
    assert ranks[0].batches_per_epoch == 184 // 8


def test_batch_source_streams_the_plan_from_memory_and_through_the_dataloader():
    labels = semi_labels(n=40, labelled=6)
    n = len(labels)
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 4, 4).contiguous()
    data = ImageData(images, labels)
    plan = LabelledBatches(BatchSource(data.to_dataset()).labels(), 3, 8, seed=2)
    direct = BatchSource(data).stream(plan, seed=2)
    loaded = BatchSource(data.to_dataset(), num_workers=1).stream(plan, seed=2, start=5)
    for step in range(5, 12):
        for stream in (direct, loaded):
            x, y = stream.batch(step)
            assert x[:, 0, 0, 0].tolist() == plan.indices(step).tolist()
            assert y[:3].ge(0).all() and y[3:].eq(-1).all()
    loaded.close()


def test_bad_data_and_settings_get_errors_that_name_them():
    labels = semi_labels(labelled=3)
    with pytest.raises(ValueError, match=r"labelled_per_batch=4 but the training data holds only 3 labelled"):
        LabelledBatches(labels, 4, 10, seed=0)
    with pytest.raises(ValueError, match=r"all 20 training images are labelled"):
        LabelledBatches(torch.arange(20) % 3, 4, 10, seed=0)
    with pytest.raises(ValueError, match=r"labelled_per_batch \(10\) must be below batch_size \(10\)"):
        LabelledBatches(labels, 10, 10, seed=0)
    with pytest.raises(ValueError, match="labelled_per_batch must be an integer >= 1"):
        LabelledBatches(labels, 0, 10, seed=0)
    with pytest.raises(ValueError, match="1-D integer tensor"):
        LabelledBatches(labels.float(), 2, 10, seed=0)
    with pytest.raises(ValueError, match="rank must lie in 0..1"):
        LabelledBatches(labels, 2, 10, seed=0, rank=2, world_size=2)
    with pytest.raises(ValueError, match="step must be an integer >= 0"):
        LabelledBatches(labels, 2, 10, seed=0).indices(-1)
