"""Training-time ``torch.compile`` for the coupling layers, opt in, with an eager fallback.

A training step of MixerFlow spends most of its time outside the matmuls: each conditioner's
BatchNorms and GELUs and each coupling's clamp, ``exp`` and ``addcmul``, forward and backward,
as dozens of small element-wise kernels. Compiled with inductor, a whole coupling forward
(conditioner included) becomes a few fused loops, and autograd's backward too. Measured by
``bench/compiled.py`` (batch 128, 2 threads, eager and compiled steps in turns in one process,
median of 5 rounds), training runs faster by:

- mixerflow_tiny on 1x28x28: 1.19x in float32, 1.12x with bfloat16 conditioners;
- mixerflow_tiny on 3x32x32: 1.06x and 1.11x;
- glow_tiny: 1.07x (1x28x28) and 0.97x (3x32x32); its ActNorm initialisation breaks the graph.

The unit is the coupling: compiling larger pieces gained nothing more (mixerflow_tiny with
bfloat16 conditioners, in turns in one process: 1.13x per coupling, 1.11x per mixer layer, 1.08x
for the whole flow as one graph, whose cold compile took about 2 minutes).

Evaluation without autograd runs the couplings eagerly: fast evaluation is the inference copy's job
(:func:`~hybridflow.flows.inference.freeze`), whose folded oneDNN kernels a compiled graph cannot
use (compiling just the couplings' element-wise tail there gained nothing: 0.99x; the whole copy
compiles under ``torch.compile``, with ``F.linear`` in place of the oneDNN kernels).

Compiling needs a working C++ compiler and costs seconds on the first step (inductor keeps its
code in an on-disk cache, so later runs start faster). Where it fails, the layers warn once and
run eagerly: the same function, only slower.

Example:
    >>> import torch
    >>> def double(x):
    ...     return 2 * x
    >>> bool(torch.equal(compiled_call(double, torch.ones(2)), torch.full((2,), 2.0)))
    True
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

import torch

__all__ = ["compiled_call", "compile_failed"]

_COMPILED: dict[Callable, Callable] = {}
_FAILURE: list[str] = []


def compiled_call(fn: Callable, *args: Any) -> Any:
    """``fn(*args)`` through ``torch.compile`` (one compiled function per ``fn``, shared by every
    layer that calls it; a shape it has not seen compiles a graph of its own, up to
    :data:`RECOMPILE_LIMIT`, which opting in raises dynamo's process-wide limit to). If compiling
    fails, warns once, runs ``fn`` eagerly and keeps doing so in this process."""
    if _FAILURE:
        return fn(*args)
    compiled = _COMPILED.get(fn)
    if compiled is None:
        _raise_recompile_limit()
        compiled = _COMPILED[fn] = torch.compile(fn, dynamic=False)
    try:
        return compiled(*args)
    except Exception as error:  # noqa: BLE001 - any compiler failure; the eager call below re-raises input errors
        lines = str(error).strip().splitlines()
        failure = f"{type(error).__name__}: {lines[0] if lines else ''}"
    out = fn(*args)  # bad input fails here too, with its ordinary error, before anything is switched off
    _FAILURE.append(failure)
    warnings.warn(f"torch.compile failed ({failure}); the compiled layers run eagerly from now on",
                  RuntimeWarning, stacklevel=2)
    return out


RECOMPILE_LIMIT = 64
"""Graphs one compiled function may keep. Static shapes run faster than dynamic ones here
(mixerflow_tiny trained 1.12x faster than eagerly with bfloat16 conditioners, against 1.02x with
``dynamic=True``), but every coupling shape, precision and batch size is a graph of its own:
MixerFlow's channel-, patch-, shifted-channel- and shifted-patch-mixing couplings make 4 per
batch size, and dynamo's default limit of 8 would send the rest of a run back to eager."""


def _raise_recompile_limit() -> None:
    config = torch._dynamo.config
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"  # older torch
    setattr(config, name, max(getattr(config, name), RECOMPILE_LIMIT))


def compile_failed() -> str | None:
    """Why compiling failed in this process (the layers then run eagerly), or ``None``."""
    return _FAILURE[0] if _FAILURE else None
