"""Backbones on ``--device``: densities, latents and their inverse, samples and inference copies
land on the model's device and agree with the CPU."""

from __future__ import annotations

import copy

import pytest
import torch

from hybridflow import freeze
from hybridflow.flows import quantize
from tests.devices.conftest import backbone, close_tolerance


@pytest.fixture(params=["mixerflow", "glow"])
def pair(request, images, device):
    """(the model on the CPU, the same model on the device)."""
    cpu = backbone(request.param, images)
    return cpu, copy.deepcopy(cpu).to(device)


@pytest.mark.parametrize("inputs_on_device", [False, True], ids=["cpu-inputs", "device-inputs"])
def test_log_prob_on_device_matches_cpu(pair, images, device, inputs_on_device):
    cpu, moved = pair
    x = images.to(device) if inputs_on_device else images
    with torch.no_grad():
        bpd = moved.bits_per_dim(x)
        expected = cpu.bits_per_dim(images)
    assert bpd.device.type == device.type and bpd.dtype == torch.float32 and bpd.shape == (16,)
    assert torch.allclose(bpd.cpu(), expected, atol=close_tolerance(device), rtol=0)


def test_training_mode_noise_is_drawn_on_the_generator_and_moved(pair, images, device):
    _, moved = pair
    moved.train()
    a = moved.dequantize(images, generator=torch.Generator().manual_seed(3))
    b = moved.dequantize(images.to(device), generator=torch.Generator().manual_seed(3))
    moved.eval()
    assert a.device.type == device.type and torch.equal(a, b)  # the same seed, the same noise on any device
    assert bool(((a * 256 - images.to(device)) >= 0).all() and ((a * 256 - images.to(device)) < 1).all())


def test_encode_and_inverse_round_trip_on_device(pair, images, device):
    _, moved = pair
    with torch.no_grad():
        z, log_prob = moved.encode(images.to(device), noise="midpoint")
        back = quantize(moved.inverse(z))
    assert z.device.type == device.type and log_prob.device.type == device.type
    assert torch.equal(back.cpu(), images)


def test_embed_on_device(pair, images, device):
    cpu, moved = pair
    with torch.no_grad():
        h = moved.embed(images, pooled=True)
    assert h.device.type == device.type
    assert torch.allclose(h.cpu(), cpu.embed(images, pooled=True).detach(), atol=1e-3)


def test_sample_on_device_matches_cpu(pair, device):
    cpu, moved = pair
    x = moved.sample(6, temperature=0.7, generator=torch.Generator().manual_seed(1))
    expected = cpu.sample(6, temperature=0.7, generator=torch.Generator().manual_seed(1))
    assert x.device.type == device.type and x.dtype == torch.uint8 and x.shape == (6, 1, 8, 8)
    # the same latent on every device; the inverse may round a pixel at a bin edge the other way
    assert (x.cpu().int() - expected.int()).abs().max() <= 1


@pytest.mark.parametrize("how", ["moved-then-frozen", "frozen-onto-device", "inference_copy"])
def test_inference_copy_on_device(pair, images, device, how):
    cpu, moved = pair
    if how == "moved-then-frozen":
        fast = freeze(moved)
    elif how == "frozen-onto-device":
        fast = freeze(cpu, device=device)
    else:
        fast = moved.inference_copy()
    with torch.no_grad():
        bpd = fast.bits_per_dim(images)
        live = moved.bits_per_dim(images)
    assert bpd.device.type == device.type
    assert all(t.device.type == device.type for t in [*fast.parameters(), *fast.buffers()])
    assert torch.allclose(bpd, live, atol=1e-4, rtol=0)
