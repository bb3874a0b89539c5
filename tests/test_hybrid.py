"""HybridModel: the objective against a hand computation, unlabelled masking, the Nalisnick
mapping, evaluation-time predictions, the frozen mode and rebuilding from the config."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from hybridflow import create_backbone
from hybridflow.hybrid import HybridLoss, HybridModel, nalisnick_weight

TINY = dict(input_shape=(1, 8, 8), patch_size=2, num_layers=2, hidden=16, steps=1)
LN2 = math.log(2)


def _model(lam: float = 1.0, pooled: bool = False, seed: int = 0) -> HybridModel:
    torch.manual_seed(seed)
    model = HybridModel("mixerflow_tiny", 10, lam=lam, pooled=pooled, **TINY)
    model.train()
    model(_images(32, seed=99))  # ActNorm's data-dependent initialisation, so the flow is not trivial
    with torch.no_grad():  # a non-trivial head, so the cross-entropy is not log(10) everywhere
        model.head.weight.normal_(0, 0.05)
    return model.eval()


def _images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("pooled", [False, True])
def test_objective_matches_hand_computation(pooled):
    model, lam = _model(lam=2.5, pooled=pooled), 2.5
    x, y = _images(6), torch.tensor([0, 3, 9, 1, 1, 7])
    parts = model(x, y)
    assert isinstance(parts, HybridLoss)
    z, log_prob = model.backbone.encode(x)  # eval mode: the same seeded noise
    bpd = -log_prob / (64 * LN2)
    features = model.backbone._pool(z) if pooled else z.flatten(1)
    assert features.shape[1] == model.num_features == (4 if pooled else 64)
    logits = features @ model.head.weight.T + model.head.bias
    ce = F.cross_entropy(logits, y, reduction="none")
    torch.testing.assert_close(parts.bits_per_dim, bpd)
    torch.testing.assert_close(parts.bits_per_dim, model.backbone.bits_per_dim(x))
    torch.testing.assert_close(parts.logits, logits)
    torch.testing.assert_close(parts.cross_entropy, ce)
    torch.testing.assert_close(parts.total, (bpd + lam * ce / LN2).mean())
    assert model.loss(x, y).total == parts.total


def test_unlabelled_examples_contribute_only_bits_per_dim():
    model, lam = _model(lam=3.0), 3.0
    x = _images(6)
    full = model(x, torch.tensor([0, 3, 9, 1, 1, 7]))
    partial = model(x, torch.tensor([0, -1, 9, -1, -1, 7]))
    mask = torch.tensor([True, False, True, False, False, True])
    torch.testing.assert_close(partial.bits_per_dim, full.bits_per_dim)
    assert torch.equal(partial.cross_entropy[~mask], torch.zeros(3))
    torch.testing.assert_close(partial.cross_entropy[mask], full.cross_entropy[mask])
    # the mean runs over all six examples; the masked ones add their bits/dim only
    expected = (full.bits_per_dim.sum() + lam / LN2 * full.cross_entropy[mask].sum()) / 6
    torch.testing.assert_close(partial.total, expected)
    assert partial.num_labelled == 3 and torch.equal(partial.labelled, mask)


def test_all_unlabelled_batch_and_lam_zero_are_pure_flow():
    x = _images(5)
    model = _model(lam=4.0)
    for y in (None, torch.full((5,), -1)):
        parts = model(x, y)
        torch.testing.assert_close(parts.total, parts.bits_per_dim.mean())
    model.zero_grad()
    model(x, torch.full((5,), -1)).total.backward()
    assert model.head.weight.grad.abs().max() == 0  # no label, no signal to the head

    pure = _model(lam=0.0)
    parts = pure(x, torch.tensor([1, 2, 3, 4, 5]))
    torch.testing.assert_close(parts.total, pure.backbone.bits_per_dim(x).mean())


def test_nalisnick_mapping():
    lam = 0.5
    model = _model(lam=lam)
    x, y = _images(4), torch.tensor([1, 2, 3, 4])
    parts = model(x, y)
    a = model.nalisnick_weight
    assert a == pytest.approx(1 / (lam * 64)) and nalisnick_weight(0.0, 64) == math.inf
    log_prob = model.backbone.encode(x)[1]
    # our loss, rescaled by ln 2 / lam, is Nalisnick et al.'s -(log p(y|x) + a log p(x))
    torch.testing.assert_close(parts.total * LN2 / lam, (parts.cross_entropy - a * log_prob).mean())


def test_predictions_do_not_depend_on_noise_batch_or_mode():
    model = _model()
    model.train()
    x = _images(8)
    logits = model.predict_logits(x)
    assert model.training and model.backbone.training  # the mode is restored
    torch.testing.assert_close(model.predict_logits(x[:3]), logits[:3])
    torch.testing.assert_close(model.predict_logits(x), logits)
    proba = model.predict_proba(x)
    torch.testing.assert_close(proba.sum(1), torch.ones(8))
    assert torch.equal(model.predict(x), logits.argmax(1))
    torch.testing.assert_close(model.embed(x), model.backbone.eval().embed(x))
    model.train()
    torch.testing.assert_close(model.bits_per_dim(x), -model.log_prob(x) / (64 * LN2))
    torch.testing.assert_close(model.bits_per_dim(x[:2]), model.bits_per_dim(x)[:2])


def test_frozen_backbone_trains_only_the_head():
    model = _model().freeze_backbone()
    model.train()
    assert model.frozen and not model.backbone.training and model.head.training
    assert not any(p.requires_grad for p in model.backbone.parameters())
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.1)
    head_before = model.head.weight.clone()
    for seed in range(2):
        parts = model(_images(16, seed), torch.randint(0, 10, (16,)))
        assert parts.logits.requires_grad and not parts.bits_per_dim.requires_grad
        optimizer.zero_grad()
        parts.total.backward()
        optimizer.step()
    after = model.backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BatchNorm statistics too
    assert not torch.equal(model.head.weight, head_before)
    model.freeze_backbone(False)
    assert model.backbone.training and all(p.requires_grad for p in model.backbone.parameters())


@pytest.mark.parametrize("name,options", [("mixerflow_tiny", TINY),
                                          ("glow_tiny", dict(input_shape=(1, 8, 8), num_levels=2, num_steps=1,
                                                             hidden=8))])
def test_every_parameter_gets_a_gradient(name, options):
    """DistributedDataParallel (without find_unused_parameters) needs every parameter used."""
    torch.manual_seed(0)
    model = HybridModel(name, 10, **options).train()
    model(_images(16), torch.arange(16) % 10).total.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing


@pytest.mark.parametrize("pooled", [False, True])
def test_config_round_trip(pooled):
    model = HybridModel("mixerflow_tiny", 7, lam=0.3, pooled=pooled, **TINY)
    config = model.config()
    rebuilt = HybridModel.from_config(config)
    assert rebuilt.config() == config
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    glow = HybridModel("glow", 3, input_shape=(1, 8, 8), num_levels=2, num_steps=1, hidden=8)
    assert HybridModel.from_config(glow.config()).config() == glow.config()


def test_bad_arguments_are_named():
    backbone = create_backbone("mixerflow_tiny", **TINY)
    model = HybridModel(backbone, 10)
    with pytest.raises(ValueError, match="lam"):
        HybridModel(backbone, 10, lam=-1)
    with pytest.raises(ValueError, match="num_classes"):
        HybridModel(backbone, 0)
    with pytest.raises(ValueError, match="need a backbone name"):
        HybridModel(backbone, 10, hidden=3)
    with pytest.raises(ValueError, match="labels must lie in -1..9"):
        model(_images(2), torch.tensor([0, 10]))
    with pytest.raises(ValueError, match="integer tensor"):
        model(_images(2), torch.tensor([0.0, 1.0]))
    backbone.name = None  # as if built by hand
    with pytest.raises(ValueError, match="create_backbone"):
        HybridModel(backbone, 10).config()
