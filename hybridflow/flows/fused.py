"""Inference kernels: linear layers through oneDNN, with the GELU or the add that follows fused in.

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

from typing import Callable, Generic, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["CachesParameters", "ParameterCache", "fused_kernels_available", "linear", "linear_add"]

_ONEDNN = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def fused_kernels_available(x: Tensor) -> bool:
    """Whether :func:`linear` runs on oneDNN for ``x``: a CPU tensor, autograd off, oneDNN built
    in and not switched off (``torch.backends.mkldnn.flags(enabled=False)`` turns this path off)."""
    return (_ONEDNN and x.device.type == "cpu" and torch._C._get_mkldnn_enabled()
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
    return (fused_kernels_available(x) and x.dtype == weight.dtype and x.dtype in (torch.float32, torch.bfloat16)
            and not (torch.is_grad_enabled() and weight.requires_grad))


T = TypeVar("T")


class ParameterCache(Generic[T]):
    """A value derived from a module's parameters and buffers, rebuilt when one of them changes.

    An in-place edit, ``load_state_dict`` or a plain optimiser step bumps a tensor's version,
    which the next :meth:`get` sees (comparing versions costs about 1 us for 20 tensors, where
    walking the module tree each call cost 20 us). Fused optimisers (``Adam(fused=True)``, which
    this library's training uses) write without bumping versions, so a module that holds a
    cache derives from :class:`CachesParameters` and also clears it whenever it runs with
    autograd on (no optimiser step without one) or enters training mode, and when ``.to()`` and
    friends swap storages or ``load_state_dict(assign=True)`` swaps tensors. Used for eval-mode
    folded weights, so a model can move between training and evaluation freely.

    Example:
        >>> layer = nn.Linear(3, 3)
        >>> cache = ParameterCache()
        >>> first = cache.get(layer, lambda: layer.weight.detach() * 2)
        >>> with torch.no_grad():
        ...     _ = layer.weight.add_(1.0)
        >>> bool(torch.equal(cache.get(layer, lambda: layer.weight.detach() * 2), first))
        False
    """

    def __init__(self) -> None:
        self.clear()

    def get(self, module: nn.Module, build: Callable[[], T], *extra_key) -> T:
        if self._tensors is None:
            self._tensors = [*module.parameters(), *module.buffers()]
        key = (extra_key, [t._version for t in self._tensors])
        if key != self._key:
            self._value, self._key = build(), key
        return self._value

    def invalidate(self) -> None:
        """Rebuild at the next :meth:`get` (the parameters may have changed in place)."""
        self._key: tuple | None = None
        self._value: T | None = None

    def clear(self) -> None:
        """Also forget which tensors to watch (they may have been swapped for others)."""
        self.invalidate()
        self._tensors: list[Tensor] | None = None

    # A pickled or deep-copied module starts with an empty cache: the cached copies would double
    # the size of a pickled model, and the copy rebuilds them on first use anyway.
    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self.clear()


class CachesParameters(nn.Module):
    """Mixin for modules that keep :class:`ParameterCache` attributes: clears them whenever
    ``.to()``, ``.cuda()``, ``.double()`` ... or ``load_state_dict`` may have swapped a tensor,
    and on ``train()``. Subclasses call :meth:`_clear_parameter_caches` from their forward
    whenever autograd is on."""

    def _clear_parameter_caches(self, swapped: bool = False) -> None:
        """Invalidate every cache; ``swapped``: tensors may have been replaced, not just edited."""
        for value in self.__dict__.values():
            if isinstance(value, ParameterCache) and swapped:
                value.clear()
            elif isinstance(value, ParameterCache):
                value.invalidate()

    def train(self, mode: bool = True):
        if mode:
            self._clear_parameter_caches()
        return super().train(mode)

    def _apply(self, fn, recurse: bool = True):
        self._clear_parameter_caches(swapped=True)
        return super()._apply(fn, recurse)

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        self._clear_parameter_caches(swapped=True)
        super()._load_from_state_dict(*args, **kwargs)
