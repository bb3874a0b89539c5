"""Conditioner precision by hardware: ``"auto"`` picks bfloat16 only where it is native, the
choice is recorded in ``config``, and bfloat16 on a CPU that emulates it warns once."""

from __future__ import annotations

import warnings

import pytest
import torch

from hybridflow import create_backbone
from hybridflow.flows import ResidualMLP, SlowBfloat16Warning, native_bfloat16, precision, resolve_conditioner_dtype
from hybridflow.flows.inference import inference_model


@pytest.fixture
def cpu_without_bfloat16(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(precision, "native_bfloat16", lambda device_type="cpu": False)
    monkeypatch.setattr(precision, "_warned", False)


@pytest.fixture
def cpu_with_bfloat16(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(precision, "native_bfloat16", lambda device_type="cpu": device_type == "cpu")
    monkeypatch.setattr(precision, "_warned", False)


def test_explicit_precisions_pass_through_and_auto_follows_the_hardware(cpu_without_bfloat16, monkeypatch):
    assert resolve_conditioner_dtype("float32") == "float32"
    assert resolve_conditioner_dtype("bfloat16") == "bfloat16"
    assert resolve_conditioner_dtype("auto") == "float32"
    monkeypatch.setattr(precision, "native_bfloat16", lambda device_type="cpu": True)
    assert resolve_conditioner_dtype("auto") == "bfloat16"


def test_the_probe_reads_this_machine():
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    flags = [getattr(torch.cpu, name, lambda: False)() for name in probes]
    if torch.backends.cpu.get_cpu_capability() == "AVX2" and not any(flags):  # an x86 without bfloat16 units
        assert native_bfloat16("cpu") is False
    assert native_bfloat16("meta") is False
    assert native_bfloat16("cuda") == bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def test_auto_is_recorded_as_the_precision_it_chose(cpu_without_bfloat16, monkeypatch):
    flow = create_backbone("mixerflow_cpu")
    assert flow.conditioner_dtype == "float32" and "conditioner_dtype" not in flow.config
    assert all(m.compute_dtype is None for m in flow.modules() if isinstance(m, ResidualMLP))
    monkeypatch.setattr(precision, "native_bfloat16", lambda device_type="cpu": True)
    flow = create_backbone("mixerflow_cpu")
    assert flow.conditioner_dtype == "bfloat16" and flow.config["conditioner_dtype"] == "bfloat16"
    assert all(m.compute_dtype is torch.bfloat16 for m in flow.modules() if isinstance(m, ResidualMLP))
    # the recorded config rebuilds the same precision whatever the machine
    monkeypatch.setattr(precision, "native_bfloat16", lambda device_type="cpu": False)
    rebuilt = create_backbone("mixerflow_cpu", **{**flow.config, "input_shape": (1, 28, 28)})
    assert rebuilt.conditioner_dtype == "bfloat16"


def test_auto_on_a_flow_without_conditioners_is_float32(cpu_with_bfloat16):
    flow = create_backbone("mixerflow_tiny", input_shape=(1, 8, 8), coupling="maf", conditioner_dtype="auto")
    assert flow.conditioner_dtype == "float32"
    with pytest.raises(ValueError, match="no coupling conditioner that can run in bfloat16"):
        flow.set_conditioner_dtype("bfloat16")


def test_bad_precision_names_auto_among_the_choices():
    with pytest.raises(ValueError, match=r"conditioner_dtype must be one of \['bfloat16', 'float32', 'auto'\]"):
        create_backbone("mixerflow_tiny", conditioner_dtype="half")


def test_emulated_bfloat16_warns_once_per_process(cpu_without_bfloat16):
    flow = create_backbone("mixerflow_tiny", input_shape=(1, 8, 8), patch_size=2, num_layers=1, hidden=8,
                           conditioner_dtype="bfloat16")
    x = torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8)
    with pytest.warns(SlowBfloat16Warning, match="about 4x slower than float32.*conditioner_dtype='auto'"):
        flow.train().bits_per_dim(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        flow.bits_per_dim(x)  # once per process: a second call is silent


def test_the_fast_evaluation_copy_warns_too(cpu_without_bfloat16):
    flow = create_backbone("mixerflow_tiny", input_shape=(1, 8, 8), patch_size=2, num_layers=1, hidden=8,
                           conditioner_dtype="bfloat16")
    x = torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8)
    flow.train()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        flow.bits_per_dim(x)  # running statistics for the folded copy
    precision._warned = False
    with pytest.warns(SlowBfloat16Warning):
        inference_model(flow.eval()).bits_per_dim(x)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_native_or_float32_is_silent(cpu_with_bfloat16, dtype):
    flow = create_backbone("mixerflow_tiny", input_shape=(1, 8, 8), patch_size=2, num_layers=1, hidden=8,
                           conditioner_dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        flow.train().bits_per_dim(torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8))
