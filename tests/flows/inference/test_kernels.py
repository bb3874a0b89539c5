"""The oneDNN kernels of the inference copy: the same function as ``F.linear`` (+ GELU / add),
off under autograd, with oneDNN switched off and inside ``torch.compile``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hybridflow.flows.inference.kernels import fused_kernels_available, linear, linear_add


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_linear_matches_f_linear(dtype):
    x = torch.randn(7, 5, 12)[..., ::2].to(dtype)  # non-contiguous on purpose
    weight, bias, other = torch.randn(4, 6).to(dtype), torch.randn(4).to(dtype), torch.randn(7, 5, 4).to(dtype)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-2)
    expected = F.linear(x.float(), weight.float(), bias.float())
    with torch.no_grad():
        torch.testing.assert_close(linear(x, weight, bias).float(), expected, **tol)
        torch.testing.assert_close(linear(x, weight, bias, gelu=True).float(), F.gelu(expected), **tol)
        torch.testing.assert_close(linear_add(x, weight, bias, other).float(), expected + other.float(), **tol)
        torch.testing.assert_close(linear(x, weight).float(), F.linear(x.float(), weight.float()), **tol)


@pytest.mark.filterwarnings("ignore:TF32 acceleration")  # torch's own note from mkldnn.flags()
def test_switching_onednn_off_takes_f_linear():
    x, weight, bias = torch.randn(3, 4), torch.randn(5, 4), torch.randn(5)
    with torch.no_grad(), torch.backends.mkldnn.flags(enabled=False):
        assert not fused_kernels_available(x)
        torch.testing.assert_close(linear(x, weight, bias, gelu=True), F.gelu(F.linear(x, weight, bias)))


def test_fused_linear_keeps_autograd_when_it_is_on():
    """With autograd on, the kernels fall back to F.linear: gradients reach every input."""
    x, weight, bias = (torch.randn(5, 3, requires_grad=True), torch.randn(4, 3, requires_grad=True),
                       torch.randn(4, requires_grad=True))
    assert not fused_kernels_available(x)
    linear_add(x, weight, bias, linear(x, weight, bias, gelu=True)).sum().backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in (x, weight, bias))


def test_kernels_step_aside_while_compiling(monkeypatch):
    """Inductor cannot lower the private oneDNN op: under torch.compile the kernels are F.linear."""
    x = torch.randn(3, 4)
    with torch.no_grad():
        assert fused_kernels_available(x) == (torch.backends.mkldnn.is_available()
                                              and hasattr(torch.ops.mkldnn, "_linear_pointwise"))
        monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
        assert not fused_kernels_available(x)


def test_bfloat16_takes_onednn_only_where_the_cpu_computes_it(monkeypatch):
    """Without AVX512-BF16 / AMX oneDNN has no bfloat16 inner product (it raised "could not create a
    primitive descriptor" for the shipped models' fast copy on an AVX2 CPU): F.linear serves there."""
    from hybridflow.flows.inference import kernels

    x, weight = torch.randn(3, 4), torch.randn(5, 4)
    with torch.no_grad():
        fused = fused_kernels_available(x)
        monkeypatch.setattr(kernels, "native_bfloat16", lambda device_type="cpu": False)
        assert not kernels._use_onednn(x.bfloat16(), weight.bfloat16())
        assert kernels._use_onednn(x, weight) == fused  # float32 is unaffected
        torch.testing.assert_close(linear(x.bfloat16(), weight.bfloat16()), F.linear(x.bfloat16(), weight.bfloat16()),
                                   rtol=0, atol=0)
        monkeypatch.setattr(kernels, "native_bfloat16", lambda device_type="cpu": True)
        assert kernels._use_onednn(x.bfloat16(), weight.bfloat16()) == fused
