"""The hybrid model, training with validation, evaluation and checkpoints on ``--device``."""

from __future__ import annotations

import copy

import torch

from hybridflow import HybridModel, TrainConfig, freeze, train
from hybridflow.training import evaluate_model, find_checkpoint, load_checkpoint, save_checkpoint
from tests.devices.conftest import BACKBONES, close_tolerance, hybrid


def test_hybrid_loss_and_gradients_on_device(digits, device):
    data = digits[0]
    cpu = hybrid(data.images[:16], data.labels[:16])
    model = copy.deepcopy(cpu).to(device).train()
    labels = data.labels[:16].clone()
    labels[::2] = -1  # half unlabelled
    parts = model(data.images[:16], labels)  # CPU inputs and labels: the model moves what it needs
    parts.total.backward()
    assert parts.logits.device.type == device.type and parts.targets.device.type == device.type
    assert all(p.grad is not None and p.grad.device.type == device.type and bool(torch.isfinite(p.grad).all())
               for p in model.parameters() if p.requires_grad)


def test_hybrid_predictions_on_device_match_cpu(digits, device):
    data = digits[0]
    cpu = hybrid(data.images[:16], data.labels[:16])
    model = copy.deepcopy(cpu).to(device)
    with torch.no_grad():
        proba = model.predict_proba(data.images[:16].to(device))
        bpd = model.bits_per_dim(data.images[:16])
        fast = freeze(model).predict_proba(data.images[:16])
        expected_proba, expected_bpd = cpu.predict_proba(data.images[:16]), cpu.bits_per_dim(data.images[:16])
    assert proba.device.type == device.type and fast.device.type == device.type
    assert torch.allclose(proba.cpu(), expected_proba, atol=1e-3)
    assert torch.allclose(fast.cpu(), expected_proba, atol=1e-3)
    assert torch.allclose(bpd.cpu(), expected_bpd, atol=close_tolerance(device), rtol=0)


def test_train_with_validation_and_checkpoint_on_device(digits, device, tmp_path):
    data, val = digits
    torch.manual_seed(0)
    model = HybridModel("mixerflow_tiny", 10, **BACKBONES["mixerflow"][1])
    config = TrainConfig(steps=4, batch_size=16, lr=1e-3, eval_every=2, device=str(device), out_dir=str(tmp_path),
                         progress=False, seed=0)
    result = train(model, data, config, val_data=val)
    assert next(result.model.parameters()).device.type == device.type
    assert result.steps == 4
    assert 0.0 < result.metrics["val_bits_per_dim"] < 20.0
    figures = evaluate_model(result.model, val)
    assert abs(figures["bits_per_dim"] - result.metrics["val_bits_per_dim"]) < 1e-9  # the same inference path
    loaded = load_checkpoint(find_checkpoint(tmp_path), map_location=device)
    assert next(loaded.parameters()).device.type == device.type
    with torch.no_grad():
        assert torch.equal(loaded.bits_per_dim(val.images[:8]), result.model.bits_per_dim(val.images[:8]))


def test_save_and_load_a_model_on_device(digits, device, tmp_path):
    data = digits[0]
    model = hybrid(data.images[:16], data.labels[:16]).to(device)
    save_checkpoint(model, tmp_path / "ckpt")
    for where in ("cpu", device):
        loaded = load_checkpoint(tmp_path / "ckpt", map_location=where)
        with torch.no_grad():
            bpd, expected = loaded.bits_per_dim(data.images[:8]), model.bits_per_dim(data.images[:8])
        assert bpd.device.type == torch.device(where).type
        assert torch.allclose(bpd.cpu(), expected.cpu(), atol=close_tolerance(device), rtol=0)
