"""The last good state of a run (parameters, buffers, optimiser moments and step counts, EMA) and
the check of a model's outputs that guards every checkpoint."""

from __future__ import annotations

import math

import torch
from torch import nn

from hybridflow.training import LastGoodState, find_nonfinite, make_adam
from tests.training.helpers import same_state, tiny_model


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 1))


def _step(net: nn.Module, opt: torch.optim.Optimizer) -> None:
    opt.zero_grad()
    net(torch.randn(8, 3)).pow(2).mean().backward()
    opt.step()


def _optimizer_tensors(opt: torch.optim.Optimizer) -> dict:
    return {(i, k): v.clone() for i, (p, s) in enumerate(opt.state.items()) for k, v in s.items()}


def test_restore_brings_back_parameters_buffers_optimizer_and_ema():
    net, ema = _net(), _net()
    opt = make_adam(net.parameters(), lr=1e-2)
    good = LastGoodState(list(net.parameters()), list(net.buffers()), opt, ema)
    _step(net, opt)
    _step(net, opt)
    good.hold_buffers()
    good.save()
    state, moments = {k: v.clone() for k, v in net.state_dict().items()}, _optimizer_tensors(opt)
    ema_state = {k: v.clone() for k, v in ema.state_dict().items()}
    for _ in range(3):  # moves weights, BatchNorm statistics, Adam moments and step counts
        _step(net, opt)
    with torch.no_grad():
        net[0].weight.fill_(math.nan)
        ema[2].bias.fill_(math.inf)
    good.restore()
    same_state(net.state_dict(), state, exact=True)
    same_state(ema.state_dict(), ema_state, exact=True)
    restored = _optimizer_tensors(opt)
    assert restored.keys() == moments.keys() and all(torch.equal(restored[k], moments[k]) for k in moments)
    assert float(next(iter(opt.state.values()))["step"]) == 2


def test_save_stores_the_buffers_held_before_the_forward():
    net = _net()
    opt = make_adam(net.parameters(), lr=1e-2)
    good = LastGoodState(list(net.parameters()), list(net.buffers()), opt)
    before = net[1].running_mean.clone()
    good.hold_buffers()
    net(torch.randn(8, 3) + 5.0)  # a training-mode forward moves the running statistics
    assert not torch.equal(net[1].running_mean, before)
    good.save()
    good.restore()
    assert torch.equal(net[1].running_mean, before) and int(net[1].num_batches_tracked) == 0
    net(torch.randn(8, 3))
    good.release_buffers()  # an abandoned forward is undone the same way
    assert torch.equal(net[1].running_mean, before)


def test_a_state_saved_before_the_first_update_clears_the_optimizer_and_copies_without_allocating():
    net = _net()
    opt = make_adam(net.parameters(), lr=1e-2)
    good = LastGoodState(list(net.parameters()), list(net.buffers()), opt)
    good.save(held_buffers=False)  # Adam has no state yet
    _step(net, opt)
    good.restore()
    assert not opt.state  # Adam starts afresh (step 0, zero moments) as it would have
    _step(net, opt)
    good.save(held_buffers=False)
    copies = [t.data_ptr() for t in good._param_copies + good._buffer_copies]
    moments = [t.data_ptr() for slot in good._opt_copies.values() for t in slot.values()]
    for _ in range(3):
        _step(net, opt)
        good.save(held_buffers=False)
    assert [t.data_ptr() for t in good._param_copies + good._buffer_copies] == copies  # the same tensors
    assert [t.data_ptr() for slot in good._opt_copies.values() for t in slot.values()] == moments


def test_find_nonfinite_sees_weights_and_outputs_and_moves_nothing():
    model = tiny_model()
    x = torch.randint(0, 256, (8, 1, 8, 8), dtype=torch.uint8)
    model.train()(x, torch.zeros(8, dtype=torch.int64))  # initialise ActNorm
    assert find_nonfinite(model, x) is None
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():  # finite weights whose class scores overflow: the lr=1000 failure
        model.head.weight.fill_(3e38)
    assert all(torch.isfinite(v).all() for v in model.state_dict().values() if v.is_floating_point())
    assert find_nonfinite(model, x, torch.zeros(8, dtype=torch.int64)) == \
        "its class scores on the last batch are not finite"
    assert model.training  # its mode is put back, and no statistic moved
    same_state({k: v for k, v in model.state_dict().items() if k != "head.weight"},
               {k: v for k, v in state.items() if k != "head.weight"}, exact=True)
    with torch.no_grad():
        model.head.weight.copy_(state["head.weight"])
        next(p for p in model.backbone.parameters() if p.numel()).view(-1)[0] = math.nan
    assert find_nonfinite(model, x).startswith("parameter 'backbone.")
