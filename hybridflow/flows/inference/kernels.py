"""Kernels of the explicit inference copy (:func:`~hybridflow.flows.inference.freeze`): linear
layers through oneDNN, with the GELU or the add that follows fused in.

On the CPUs this project is measured on (AMD EPYC), PyTorch's float32 ``addmm`` goes through
MKL, whose generic code path there is slow; oneDNN's own kernels do the same product about 1.9x
faster and can fuse the GELU after it (6272x64 @ 64x64, 2 threads: 130 us against 243 us, and
168 us against 284 us with the GELU; same float32 result to 1e-6). The oneDNN op has no
autograd formula, so these kernels serve only when autograd is off (``torch.no_grad()``,
``torch.inference_mode()``); elsewhere, and off the CPU, they fall back to ``F.linear``, the
same function.

Example:
    >>> import torch
    >>> x, weight, bias = torch.randn(5, 3), torch.randn(4, 3), torch.randn(4)
    >>> with torch.no_grad():
    ...     y = linear(x, weight, bias, gelu=True)
    >>> bool(torch.allclose(y, torch.nn.functional.gelu(x @ weight.T + bias), atol=1e-5))
    True
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..precision import native_bfloat16

__all__ = ["fused_kernels_available", "linear", "linear_add"]

_ONEDNN = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def fused_kernels_available(x: Tensor) -> bool:
    """Whether :func:`linear` runs on oneDNN for ``x``: a CPU tensor, autograd off, oneDNN built
    in and not switched off (``torch.backends.mkldnn.flags(enabled=False)`` turns this path off),
    and not inside ``torch.compile``: inductor cannot lower the private oneDNN op (it crashed
    with an InductorError), while it fuses ``F.linear`` and the GELU after it by itself."""
    return (_ONEDNN and x.device.type == "cpu" and torch._C._get_mkldnn_enabled()
            and not torch.compiler.is_compiling()
            and not (torch.is_grad_enabled() and x.requires_grad))


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None, gelu: bool = False) -> Tensor:
    """``x @ weight.T + bias``, then an exact GELU if ``gelu``; oneDNN on the CPU without autograd."""
    if _use_onednn(x, weight):
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "gelu" if gelu else "none", [],
                                                  "none" if gelu else "")
    y = F.linear(x, weight, bias)
    return F.gelu(y) if gelu else y


def linear_add(x: Tensor, weight: Tensor, bias: Tensor | None, other: Tensor) -> Tensor:
    """``x @ weight.T + bias + other`` in one pass (oneDNN's binary post-op) where it can."""
    if _use_onednn(x, weight) and other.dtype == x.dtype:
        return torch.ops.mkldnn._linear_pointwise.binary(x, other, weight, bias, "add")
    return F.linear(x, weight, bias) + other


def _use_onednn(x: Tensor, weight: Tensor) -> bool:
    # bfloat16 only where the CPU computes it: without AVX512-BF16 or AMX oneDNN has no bfloat16
    # inner product ("could not create a primitive descriptor"), and F.linear emulates it instead.
    native = x.dtype == torch.float32 or (x.dtype == torch.bfloat16 and native_bfloat16("cpu"))
    return (native and fused_kernels_available(x) and x.dtype == weight.dtype
            and not (torch.is_grad_enabled() and weight.requires_grad))
