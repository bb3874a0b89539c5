"""The last known-good state of a training run, and the check that a model gives finite outputs.

A learning rate that is far too large (``lr=1000``) gives a *finite* loss and gradient whose
update leaves weights that give NaN on every later batch: skipping the later steps would keep
those weights. So the loop keeps :class:`LastGoodState`, a copy of the state before the last
step whose forward pass was finite -- trainable parameters, every buffer (BatchNorm statistics,
ActNorm's data-dependent affine and its flag), the optimiser state (Adam's moments and step
counts) and the EMA weights -- and puts all of it back when a step turns out non-finite.

The copies go into tensors allocated once (one ``torch._foreach_copy_`` per step, no per-step
allocation); only a parameter that gets optimiser state for the first time adds tensors.
:func:`find_nonfinite` is the check run before every checkpoint and at the end of training: all
weights finite *and* an evaluation-mode forward pass on a batch finite.

Example:
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    >>> opt = torch.optim.Adam(net.parameters(), lr=1.0)
    >>> good = LastGoodState(list(net.parameters()), list(net.buffers()), opt)
    >>> good.hold_buffers(); good.save()
    >>> with torch.no_grad():
    ...     _ = net[0].weight.fill_(float("nan"))
    >>> good.restore()
    >>> bool(torch.isfinite(net[0].weight).all())
    True
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor, nn

__all__ = ["LastGoodState", "find_nonfinite"]


class LastGoodState:
    """Preallocated copies of the parameters, buffers, optimiser state and (optionally) EMA tensors
    of a run, taken with :meth:`save` and put back with :meth:`restore`.

    ``hold_buffers`` copies the buffers before a forward pass (which moves BatchNorm statistics):
    :meth:`save` then stores the state *before* that forward, and ``release_buffers`` undoes a
    forward that is abandoned (Ctrl-C).
    """

    def __init__(self, params: Sequence[Tensor], buffers: Sequence[Tensor], optimizer: torch.optim.Optimizer,
                 ema: nn.Module | None = None) -> None:
        self.params = list(params)
        self.buffers = list(buffers)
        self.optimizer = optimizer
        self.ema = [t for t in (*ema.parameters(), *ema.buffers())] if ema is not None else []
        with torch.no_grad():
            self._param_copies = [p.detach().clone() for p in self.params]
            self._held = [b.detach().clone() for b in self.buffers]  # the buffers before the forward in progress
            self._buffer_copies = [b.detach().clone() for b in self.buffers]
            self._ema_copies = [t.detach().clone() for t in self.ema]
        self._opt_copies: dict[int, dict[str, Any]] = {}  # parameter index -> its optimiser state
        self._opt_present: set[int] = set()  # the parameters that had optimiser state when saved
        self._pairs: tuple[Any, list[Tensor], list[Tensor]] | None = None  # (key, live, copies)

    def hold_buffers(self) -> None:
        """Copy the buffers as they are now (before a forward pass)."""
        with torch.no_grad():
            torch._foreach_copy_(self._held, self.buffers)

    def release_buffers(self) -> None:
        """Put back the buffers :meth:`hold_buffers` copied: undo an abandoned forward pass."""
        with torch.no_grad():
            torch._foreach_copy_(self.buffers, self._held)

    def save(self, held_buffers: bool = True) -> None:
        """Make the current parameters, optimiser state and EMA, with the held buffers (or the
        current ones: ``held_buffers=False``), the last good state."""
        live, copies = self._optimizer_pairs()
        with torch.no_grad():
            torch._foreach_copy_(
                [*self._param_copies, *self._buffer_copies, *self._ema_copies, *copies],
                [*self.params, *(self._held if held_buffers else self.buffers), *self.ema, *live])

    def restore(self) -> None:
        """Put the last good state back into the model, the optimiser and the EMA."""
        state = self.optimizer.state
        live: list[Tensor] = []
        copies: list[Tensor] = []
        self._pairs = None  # entries may be dropped or replaced below
        for index, param in enumerate(self.params):
            if index not in self._opt_present:
                state.pop(param, None)  # it had no state then: the optimiser initialises it afresh
                continue
            current = state[param]
            for name, saved in self._opt_copies[index].items():
                value = current.get(name)
                if not isinstance(saved, Tensor):
                    current[name] = saved
                elif isinstance(value, Tensor) and value.shape == saved.shape and value.dtype == saved.dtype:
                    live.append(value)
                    copies.append(saved)
                else:
                    current[name] = saved.clone()
        with torch.no_grad():
            torch._foreach_copy_([*self.params, *self.buffers, *self.ema, *live],
                                 [*self._param_copies, *self._buffer_copies, *self._ema_copies, *copies])
            torch._foreach_copy_(self._held, self._buffer_copies)

    def _optimizer_pairs(self) -> tuple[list[Tensor], list[Tensor]]:
        # Adam creates a parameter's state at its first update (and load_state_dict a new state
        # dict), then updates its tensors in place: the pairs are rebuilt only when the state
        # changes shape that way, or after a restore -- walking ~1000 entries costs more than the copy.
        key = (id(self.optimizer.state), len(self.optimizer.state))
        if self._pairs is not None and self._pairs[0] == key:
            return self._pairs[1], self._pairs[2]
        live: list[Tensor] = []
        copies: list[Tensor] = []
        present = set()
        state = self.optimizer.state
        for index, param in enumerate(self.params):
            values = state.get(param)
            if not values:
                continue
            present.add(index)
            slot = self._opt_copies.setdefault(index, {})
            for name, value in values.items():
                if not isinstance(value, Tensor):
                    slot[name] = value  # a plain number: immutable, kept as it is
                    continue
                copy = slot.get(name)
                if not (isinstance(copy, Tensor) and copy.shape == value.shape and copy.dtype == value.dtype
                        and copy.device == value.device):
                    copy = slot[name] = torch.empty_like(value)
                live.append(value)
                copies.append(copy)
        self._opt_present = present
        self._pairs = (key, live, copies)
        return live, copies


def find_nonfinite(model: nn.Module, images: Tensor, labels: Tensor | None = None) -> str | None:
    """Why ``model`` (a :class:`~hybridflow.hybrid.HybridModel`) cannot be trusted, or ``None``:
    a parameter or buffer that is not finite, or non-finite bits/dim or logits from an
    evaluation-mode forward pass (no gradient, no statistics moved) on ``images``.

    Weights can all be finite and still give NaN (an overflow inside the flow), so both are checked.

    Example:
        >>> from hybridflow.hybrid import HybridModel
        >>> model = HybridModel("mixerflow_tiny", 3, input_shape=(1, 8, 8), patch_size=2, num_layers=1)
        >>> find_nonfinite(model, torch.zeros(2, 1, 8, 8, dtype=torch.uint8)) is None
        True
    """
    for kind, named in (("parameter", model.named_parameters()), ("buffer", model.named_buffers())):
        for name, value in named:
            if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                return f"{kind} {name!r} is not finite"
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            parts = model(images, labels)
    finally:
        model.train(was_training)
    if not bool(torch.isfinite(parts.bits_per_dim).all()):
        return "its bits/dim on the last batch are not finite"
    if not bool(torch.isfinite(parts.logits).all()):
        return "its class scores on the last batch are not finite"
    return None
