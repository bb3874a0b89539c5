"""Run state: the data order, the per-step noise generators and the optimiser state split."""

from __future__ import annotations

import torch

from hybridflow.training import (
    EpochBatches, make_adam, mix_seed, noise_generator, optimizer_state_from_parts,
    optimizer_state_parts,
)


def test_epoch_batches_cover_each_epoch_and_shard_like_distributed_sampler():
    single = EpochBatches(n=10, batch_size=5, seed=3)
    assert single.batches_per_epoch == 2
    epoch = torch.cat([single.indices(0), single.indices(1)])
    assert sorted(epoch.tolist()) == list(range(10))
    assert not torch.equal(epoch, torch.cat([single.indices(2), single.indices(3)]))  # a new order per epoch
    # two ranks: 5 each of the same permutation, disjoint; revisiting an epoch gives its order again
    ranks = [EpochBatches(n=10, batch_size=5, seed=3, rank=r, world_size=2) for r in (0, 1)]
    both = torch.cat([r.indices(0) for r in ranks])
    assert sorted(both.tolist()) == list(range(10))
    assert torch.equal(ranks[0].indices(4), ranks[0].indices(4)) and torch.equal(ranks[0].indices(0), both[:5])


def test_noise_generators_depend_on_seed_rank_and_step_only():
    draw = lambda *key: torch.rand(4, generator=noise_generator(*key))  # noqa: E731
    assert torch.equal(draw(0, 0, 7), draw(0, 0, 7))
    assert not torch.equal(draw(0, 0, 7), draw(0, 1, 7))
    assert not torch.equal(draw(0, 0, 7), draw(0, 0, 8))
    assert not torch.equal(draw(0, 0, 7), draw(1, 0, 7))
    assert mix_seed(1, 2) == mix_seed(1, 2) != mix_seed(2, 1)


def test_optimizer_state_survives_the_split_into_json_and_tensors():
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    opt = make_adam(net.parameters(), lr=1e-2, betas=(0.8, 0.9))
    net(torch.randn(4, 3)).sum().backward()
    opt.step()
    json_part, tensors = optimizer_state_parts(opt.state_dict())
    assert all(k.startswith("optimizer.") for k in tensors)
    other = make_adam(torch.nn.Linear(3, 2).parameters(), lr=1.0)
    other.load_state_dict(optimizer_state_from_parts(json_part, tensors))
    restored, original = other.state_dict(), opt.state_dict()
    assert restored["param_groups"] == original["param_groups"]
    for index, values in original["state"].items():
        for name, value in values.items():
            assert torch.equal(torch.as_tensor(restored["state"][index][name]), torch.as_tensor(value))
