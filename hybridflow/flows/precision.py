"""Which conditioner precision is fast where: bfloat16 only pays on hardware that computes it.

bfloat16 conditioners train MixerFlow about 1.35x faster on a CPU with AVX512-BF16 or AMX, but a
CPU without them (AVX2 only) emulates bfloat16 matmuls and convolutions. There, measured on a 2-core AMD EPYC
with AVX2 (one thread, batch 64, ``bench/precision.py``), a ``mixerflow_cpu`` training step took
4.4x as long with bfloat16 conditioners as with float32 ones and a ``glow_tiny`` step 4.2x;
``log_prob`` 6.5x and 8.8x. So:

- ``conditioner_dtype="auto"`` picks ``"bfloat16"`` where it is native (CUDA with bfloat16 when a
  GPU is present, as the library then trains there; otherwise the CPU's AVX512-BF16, AMX or Arm
  BF16) and ``"float32"`` elsewhere. It is resolved once, when the flow is built, and the
  backbone's ``config`` records the precision chosen, so a checkpoint rebuilds the same function
  on any machine.
- A flow that computes bfloat16 conditioners on a CPU without native bfloat16 warns once per
  process (:class:`SlowBfloat16Warning`), saying how to switch. Switching a bfloat16-trained model
  to float32 barely moves its figures: on 1,000 MNIST test images the shipped ``mnist`` model's
  bits/dim moved by a median 1.0e-3 per image (at most 6.2e-3) and 0.0004 on average.
- On such a CPU the fast evaluation copy's fused oneDNN kernels, which have no emulated bfloat16
  inner product, fall back to ``F.linear`` (:mod:`~hybridflow.flows.inference.kernels`).

Example:
    >>> resolve_conditioner_dtype("float32")
    'float32'
    >>> resolve_conditioner_dtype("auto") in ("float32", "bfloat16")
    True
"""

from __future__ import annotations

import functools
import platform
import warnings

import torch

__all__ = ["SlowBfloat16Warning", "native_bfloat16", "resolve_conditioner_dtype", "warn_if_slow_bfloat16"]


class SlowBfloat16Warning(UserWarning):
    """bfloat16 conditioners run on a CPU that emulates bfloat16 (several times slower than float32)."""


def _cpu_flag(name: str) -> bool:
    """A private ``torch.cpu`` capability probe, or False where this torch lacks it."""
    probe = getattr(torch.cpu, name, None)
    try:
        return bool(probe()) if callable(probe) else False
    except RuntimeError:
        return False


@functools.lru_cache(maxsize=None)
def native_bfloat16(device_type: str = "cpu") -> bool:
    """Whether ``device_type`` ("cpu" or "cuda") computes bfloat16 matmuls in hardware.

    CPU: x86 with AVX512-BF16 or AMX (checked through torch's own CPU probes), or Arm (aarch64)
    where oneDNN reports bfloat16 support. CUDA: ``torch.cuda.is_bf16_supported()`` (Ampere and
    later). Any other device: False.
    """
    if device_type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device_type != "cpu":
        return False
    if platform.machine().lower() in ("aarch64", "arm64"):
        check = getattr(getattr(torch.ops, "mkldnn", None), "_is_mkldnn_bf16_supported", None)
        try:
            return bool(check()) if check is not None else False
        except RuntimeError:
            return False
    return _cpu_flag("_is_avx512_bf16_supported") or _cpu_flag("_is_amx_tile_supported")


def resolve_conditioner_dtype(dtype: str) -> str:
    """``dtype`` itself, or for ``"auto"`` the precision that is fast here: ``"bfloat16"`` where
    the device the library would train on (CUDA when present, else the CPU) computes it natively,
    ``"float32"`` elsewhere."""
    if dtype != "auto":
        return dtype
    device_type = "cuda" if torch.cuda.is_available() else "cpu"
    return "bfloat16" if native_bfloat16(device_type) else "float32"


_warned = False


def warn_if_slow_bfloat16(device: torch.device) -> None:
    """Warn once per process when bfloat16 conditioners run on a CPU that emulates bfloat16."""
    global _warned
    if _warned or device.type != "cpu" or native_bfloat16("cpu"):
        return
    _warned = True
    warnings.warn(
        "bfloat16 conditioners on this CPU (no AVX512-BF16, AMX or Arm BF16) are emulated: a training "
        "step measured about 4x slower than float32, log_prob 6-9x. Build the flow with conditioner_dtype='auto' or "
        "'float32', or call set_conditioner_dtype('float32') (this changes the computed function "
        "slightly: the shipped MNIST model's per-image bits/dim by about 1e-3)", SlowBfloat16Warning, stacklevel=3)
