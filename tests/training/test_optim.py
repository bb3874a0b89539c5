"""Adam, the learning-rate schedule and the weight average."""

from __future__ import annotations

import pytest
import torch

from hybridflow.training import lr_factor, make_adam, make_ema, make_scheduler


def test_lr_schedule_warms_up_then_decays_to_zero():
    assert lr_factor(0, 100, 10) == pytest.approx(0.1)
    assert lr_factor(9, 100, 10) == pytest.approx(1.0)
    assert lr_factor(10, 100, 10) == pytest.approx(1.0)
    assert lr_factor(55, 100, 10) == pytest.approx(0.5)
    assert lr_factor(100, 100, 10) == pytest.approx(0.0, abs=1e-12)


def test_constant_schedule_and_scheduler_follow_lr_factor():
    assert [lr_factor(s, 100, 10, "constant") for s in (0, 9, 10, 100)] == pytest.approx([0.1, 1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="schedule"):
        lr_factor(0, 10, schedule="step")
    opt = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.5)
    scheduler = make_scheduler(opt, total_steps=10, warmup_steps=2)
    seen = []
    for _ in range(11):
        seen.append(scheduler.get_last_lr()[0])
        opt.step()
        scheduler.step()
    assert seen == pytest.approx([0.5 * lr_factor(s, 10, 2) for s in range(11)])


def test_make_adam_is_fused_and_steps_like_plain_adam():
    torch.manual_seed(0)
    nets = [torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.GELU(), torch.nn.Linear(7, 3)) for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    start = nets[0][0].weight.detach().clone()
    fused = make_adam(nets[0].parameters(), lr=1e-2, betas=(0.8, 0.99))
    plain = torch.optim.Adam(nets[1].parameters(), lr=1e-2, betas=(0.8, 0.99))
    assert fused.defaults["fused"] is True and not plain.defaults["fused"]
    x = torch.randn(16, 5)
    for _ in range(5):
        for net, opt in zip(nets, (fused, plain)):
            opt.zero_grad()
            net(x).square().mean().backward()
            opt.step()
    for a, b in zip(nets[0].parameters(), nets[1].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(nets[0][0].weight, start, atol=1e-3)  # it did train


def test_ema_averages_the_weights():
    net = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        net.weight.zero_()
    ema = make_ema(net, decay=0.5)
    with torch.no_grad():
        net.weight.fill_(1.0)
    ema.update(net, step=10)  # past timm's warm-up: a plain exponential average
    torch.testing.assert_close(ema.module.weight, torch.full((1, 2), 0.5))


def test_ema_on_a_timm_without_model_ema_v3_says_which_timm_it_needs(monkeypatch):
    """timm before 0.9.16 has only ModelEmaV2, whose update() takes no ``step``: the training loop's
    ``ema.update(model, step=...)`` would fail mid-run, so refuse up front and name the version."""
    import sys
    import types

    import timm.utils

    old_timm_utils = types.ModuleType("timm.utils")
    old_timm_utils.ModelEmaV2 = timm.utils.ModelEmaV2
    monkeypatch.setitem(sys.modules, "timm.utils", old_timm_utils)
    monkeypatch.setattr(sys.modules["timm"], "utils", old_timm_utils)
    with pytest.raises(ImportError, match=r"needs timm>=0\.9\.16 .*timm [0-9.]+ is installed"):
        make_ema(torch.nn.Linear(2, 1), decay=0.5)


def test_the_declared_timm_bound_is_the_one_the_ema_needs():
    import re
    from pathlib import Path

    from hybridflow.training.optim import MIN_TIMM_FOR_EMA

    pyproject = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    assert re.search(rf'"timm>={re.escape(MIN_TIMM_FOR_EMA)}[",]', pyproject)
