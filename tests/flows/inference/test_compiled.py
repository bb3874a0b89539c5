"""Compiled couplings (``set_compiled_couplings``): the same function, loss and gradients as the
eager path; evaluation without autograd stays eager; a failing compiler falls back with a warning."""

from __future__ import annotations

import copy

import pytest
import torch

from tests.flow_checks import randomize
from hybridflow import create_backbone
from hybridflow.flows import AffineCoupling, ResidualMLP
from hybridflow.flows.inference import compiled as compiled_module
from hybridflow.flows import coupling as coupling_module

SMALL = dict(input_shape=(1, 8, 8), patch_size=2, num_layers=1, hidden=16, steps=1)  # no shift layer: 2 shapes


@pytest.fixture
def fresh_compile_state(monkeypatch):
    """Each test sees (and leaves) the module's compile cache and failure record as they were."""
    monkeypatch.setattr(compiled_module, "_COMPILED", {})
    monkeypatch.setattr(compiled_module, "_FAILURE", [])


def pixels(n: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 1, 8, 8), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def trained_pair(**overrides):
    """An eager model with non-trivial parameters and its copy with compiled couplings."""
    torch.manual_seed(0)
    eager = create_backbone("mixerflow_tiny", **{**SMALL, **overrides}).train()
    eager.bits_per_dim(pixels())  # data-dependent ActNorm initialisation
    randomize(eager, scale=0.05, seed=1).train()  # randomize() leaves eval mode
    return eager, copy.deepcopy(eager).set_compiled_couplings()


def loss_and_grads(model, x):
    torch.manual_seed(3)  # the same dequantisation noise for both models
    loss = model.bits_per_dim(x).mean()
    model.zero_grad()
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None and p.numel()]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_compiled_training_pass_matches_eager(fresh_compile_state, dtype):
    eager, compiled = trained_pair(conditioner_dtype=dtype)
    x = pixels()
    loss_e, grads_e = loss_and_grads(eager, x)
    loss_c, grads_c = loss_and_grads(compiled, x)
    assert compiled_module.compile_failed() is None
    assert AffineCoupling._affine_forward in compiled_module._COMPILED  # the compiled path really ran
    tol = 1e-5 if dtype == "float32" else 2e-2  # bfloat16: fused kernels round in another order
    assert torch.allclose(loss_c, loss_e, rtol=tol, atol=tol)
    assert len(grads_c) == len(grads_e)
    for g_c, g_e in zip(grads_c, grads_e):
        assert torch.allclose(g_c, g_e, rtol=tol, atol=tol * max(1.0, float(g_e.abs().max())))
    for b_c, b_e in zip(compiled.buffers(), eager.buffers()):  # BatchNorm running statistics updated alike
        assert torch.allclose(b_c.float(), b_e.float(), rtol=tol, atol=tol)


def test_evaluation_without_autograd_stays_eager(fresh_compile_state, monkeypatch):
    eager, compiled = trained_pair()

    def refuse(*args):
        raise AssertionError("compiled_call used without autograd")

    monkeypatch.setattr(coupling_module, "compiled_call", refuse)
    compiled.eval()
    eager.eval()
    with torch.no_grad():
        assert torch.allclose(compiled.bits_per_dim(pixels()), eager.bits_per_dim(pixels()), atol=1e-6)


def test_a_failing_compiler_warns_once_and_runs_eagerly(fresh_compile_state, monkeypatch):
    def broken_compile(fn, **kwargs):
        def run(*args):
            raise RuntimeError("no C++ compiler found")
        return run

    monkeypatch.setattr(compiled_module.torch, "compile", broken_compile)
    eager, compiled = trained_pair()
    with pytest.warns(RuntimeWarning, match="no C\\+\\+ compiler found"):
        loss_c, grads_c = loss_and_grads(compiled, pixels())
    assert "no C++ compiler found" in compiled_module.compile_failed()
    loss_e, grads_e = loss_and_grads(eager, pixels())
    assert torch.equal(loss_c, loss_e)
    assert all(torch.equal(a, b) for a, b in zip(grads_c, grads_e))


def test_bad_input_raises_the_ordinary_error_and_keeps_compiling(fresh_compile_state):
    coupling = AffineCoupling(6, ResidualMLP(3, 6, hidden=8))
    coupling.compiled = True
    with pytest.raises(RuntimeError, match="split_with_sizes"):
        coupling(torch.randn(4, 5, 8))  # 8 features where the conditioner expects 6
    assert compiled_module.compile_failed() is None


def test_compiled_couplings_option():
    flow = create_backbone("mixerflow_tiny", compile_couplings=True, **SMALL)
    couplings = [m for m in flow.modules() if isinstance(m, AffineCoupling)]
    assert couplings and all(m.compiled for m in couplings)
    assert "compile_couplings" not in flow.config  # a run option: checkpoints are unchanged
    flow.set_compiled_couplings(False)
    assert not any(m.compiled for m in couplings) and not flow.compiled_couplings
    with pytest.raises(ValueError, match="no affine coupling"):
        create_backbone("mixerflow_tiny_maf", **SMALL).set_compiled_couplings()
