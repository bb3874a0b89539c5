"""Two checks that find device and dtype mismatches on a CPU-only machine.

:class:`StrayDevice` emulates "the model is on a GPU, the default device is the CPU" with the
roles swapped: the model and its inputs stay on the CPU while every tensor that *library code*
creates without naming a device lands on the ``meta`` device. A tensor the library makes on the
default device and then meets the model's tensors with (the classic ``torch.zeros(n) + logdet``,
or CPU evaluation noise added to inputs on the model's device) then raises, as it would on CUDA;
so does any value read from it (a meta tensor has no data). Constructors (``nn.Module.__init__``)
are exempt: a model is built on the default device and moved, and so are code outside the library
(captum, torch itself) and ``hybridflow.data``, whose containers hold host-side data by design. Work the library does on the CPU on purpose must say ``device="cpu"``,
which also keeps it right under ``torch.set_default_device("cuda")``.

:class:`MixedPrecision` records every operation that library code runs on float32 and float64
tensors together (more than a scalar each): with a float64 model, such a meeting is a tensor made
in the default dtype that silently rounds the float64 computation to float32. (Operations that
third-party code runs are not the library's: captum keeps its integration weights in float32.)
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

import hybridflow

__all__ = ["MixedPrecision", "StrayDevice"]

_LIBRARY = str(Path(hybridflow.__file__).parent)
_TORCH = str(Path(torch.__file__).parent)
_HOST_DATA = str(Path(hybridflow.__file__).parent / "data")
_CONSTRUCTORS = {
    torch.arange, torch.empty, torch.empty_strided, torch.eye, torch.full, torch.linspace, torch.ones, torch.rand,
    torch.randint, torch.randn, torch.randperm, torch.scalar_tensor, torch.tensor, torch.zeros,
}


def _caller_is_library() -> bool:
    """Whether the nearest frame outside torch belongs to the library (``hybridflow.data`` included)."""
    frame = sys._getframe(2)
    while frame is not None and frame.f_code.co_filename.startswith(_TORCH):
        frame = frame.f_back
    return frame is not None and frame.f_code.co_filename.startswith(_LIBRARY)


def _made_by_library() -> bool:
    """Whether the constructor being called was called from library code outside a module's ``__init__``."""
    frame = sys._getframe(2)
    where = frame.f_code.co_filename
    if not where.startswith(_LIBRARY) or where.startswith(_HOST_DATA):
        return False
    while frame is not None:
        if frame.f_code.co_name == "__init__" and isinstance(frame.f_locals.get("self"), nn.Module):
            return False
        frame = frame.f_back
    return True


class StrayDevice(TorchFunctionMode):
    """Within it, tensors the library creates without a ``device`` are made on ``meta``."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func in _CONSTRUCTORS and kwargs.get("device") is None and _made_by_library():
            kwargs["device"] = "meta"
        return func(*args, **kwargs)


class MixedPrecision(TorchDispatchMode):
    """Records (in ``self.found``) each operation that meets float32 and float64 tensors."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func not in (torch.ops.aten.copy_.default, torch.ops.aten._to_copy.default):  # explicit casts
            dtypes = {t.dtype for t in _tensors((args, kwargs)) if t.is_floating_point() and t.dim() > 0}
            if {torch.float32, torch.float64} <= dtypes and _caller_is_library():
                self.found.append(str(func))
        return func(*args, **kwargs)


def _tensors(value):
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _tensors(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _tensors(v)
