"""Backprop through a sequence of invertible blocks without storing their activations.

An invertible network need not keep its activations for the backward pass: each layer's input
can be recomputed from its output (Gomez et al., 2017, RevNets; FrEIA and memcnn do the same).
:func:`invertible_backprop_forward` runs a :class:`~hybridflow.flows.FlowSequence` under
``no_grad`` keeping only its output; the backward pass walks the layers from last to first (into
nested sequences), rebuilds each layer's input with ``inverse`` (under ``no_grad``), re-runs that
layer's forward with autograd on the rebuilt input, and backpropagates the output's and the
log-det's gradients through it. Activation memory is then one layer's, whatever the depth.

The price is a second forward and the inverses. An affine coupling's inverse would run its
conditioner a third time; it sees the same ``x_a = y_a`` as the forward, so the walk runs it once
for both (and walks into MixerFlow's shift layers to reach theirs). Measured on 2 CPU cores (one
thread, CPU time, ``bench/memory_depth.py``), a MixerFlow training step costs 1.46x the ordinary
one; without the fused couplings it cost 1.7x.

What the recomputation keeps as it was:

- **BatchNorm** (the coupling conditioners' ``ResidualMLP``) in training mode: the inverse and the
  recomputed forward use the batch statistics of the rebuilt activations (the same as the first
  pass's, up to reconstruction drift), and the running statistics are updated once, by the first
  pass, never again by the recomputation.
- **ActNorm** data-dependent initialisation: while an ActNorm in the sequence is uninitialised,
  a first pass under ``no_grad`` (running statistics frozen) initialises every ActNorm from the
  real batch exactly as the ordinary first call would, so even the first training step saves
  memory (on a GPU the ordinary first step is the one that would run out of it).
- **Autocast**: an enclosing ``torch.autocast`` is re-entered for the recomputation; bfloat16
  conditioners (``Conditioner.compute_dtype``) run in bfloat16 both times.
- **Randomness**: the layers of this library draw no random numbers in ``forward``; a sequence
  holding an active dropout module is refused, since its input could not be rebuilt.

Gradients equal ordinary backprop up to the reconstruction drift (measured; the tests hold every
backbone family to them): in float64 to 1e-11 relative (spline couplings, whose inverse solves a
quadratic, to 3e-8); in float32 a 30-layer MixerFlow rebuilds its input to about 1e-5 and its
gradients agree to about 4e-6 relative; with bfloat16 conditioners to about 1e-3 (rounding a
conditioner's input to bfloat16 turns float32 drift into bfloat16 steps).
Higher-order gradients (``create_graph=True``) are refused. Under ``torch.compile`` of a whole
model the call runs eagerly (dynamo graph-breaks around it; evaluation without autograd is traced
as usual). ``set_compiled_couplings`` gains nothing here: the first pass runs without autograd,
so eagerly, and the walk runs the affine couplings' arithmetic itself (other couplings' recomputed
forwards still compile).

Example:
    >>> import torch
    >>> from hybridflow.flows import FlowSequence, LULinear
    >>> flow = FlowSequence(LULinear(4), LULinear(4))
    >>> x = torch.randn(8, 4, requires_grad=True)
    >>> y, logdet = invertible_backprop_forward(flow, x)
    >>> (y.square().sum() + logdet.sum()).backward()
    >>> grad = x.grad.clone(); x.grad = None
    >>> y, logdet = flow(x)                      # ordinary backprop gives the same gradient
    >>> (y.square().sum() + logdet.sum()).backward()
    >>> torch.allclose(grad, x.grad, atol=1e-5)
    True
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import Any, Iterator

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch.func import functional_call
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.dropout import _DropoutNd

from .actnorm import ActNorm
from .base import FlowSequence, zero_logdet
from .coupling import AffineCoupling
from .reshape import RepatchedFlow, ShiftedFlow, patchify, unpatchify

__all__ = ["check_invertible_backprop", "invertible_backprop_forward", "needs_graph"]


def check_invertible_backprop(value: Any) -> bool:
    """The backbones' ``invertible_backprop`` option, validated: ``True`` or ``False`` (a CLI
    ``-o invertible_backprop=true`` arrives as ``True``)."""
    if not isinstance(value, bool):
        # ValueError, not TypeError: create_backbone reads a TypeError as "unknown option"
        raise ValueError(f"invertible_backprop must be True or False, got {value!r}")
    return value


def needs_graph(module: nn.Module, x: Tensor) -> bool:
    """Whether a forward of ``module`` on ``x`` would record an autograd graph: autograd is on and
    ``x`` or a parameter of ``module`` requires a gradient."""
    return torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in module.parameters()))


def invertible_backprop_forward(sequence: FlowSequence, x: Tensor) -> tuple[Tensor, Tensor]:
    """``sequence(x)`` whose backward rebuilds each layer's activations by inverting it instead of
    storing them (see the module's docstring).

    Runs the ordinary ``sequence(x)`` where there is nothing to save (autograd off, or nothing
    requires a gradient).
    """
    if not isinstance(sequence, FlowSequence):
        raise TypeError(f"invertible backprop runs over a FlowSequence of invertible blocks, "
                        f"got {type(sequence).__name__}")
    if not isinstance(x, Tensor):
        raise TypeError(f"invertible backprop needs a tensor input, got {type(x).__name__}")
    if not torch.is_grad_enabled():  # evaluation: nothing to save (and torch.compile traces it)
        return sequence(x)
    return _run(sequence, x)


@torch.compiler.disable
def _run(sequence: FlowSequence, x: Tensor) -> tuple[Tensor, Tensor]:
    # dynamo cannot trace a backward that calls modules and autograd.grad (nor the data-dependent
    # ActNorm check): under torch.compile it graph-breaks here and runs this eagerly
    if not needs_graph(sequence, x):
        return sequence(x)
    _check_no_dropout(sequence)
    if not _actnorms_initialised(sequence):
        # ActNorm's data-dependent init, from this batch as the ordinary path would do it; the
        # BatchNorms' running statistics are left for the real pass below to update once
        with torch.no_grad(), _frozen_running_stats(sequence):
            sequence(x)
    params = tuple(p for p in sequence.parameters() if p.requires_grad)
    y, logdet = _InvertibleBackprop.apply(x, sequence, params, *params)
    return y, logdet


def _actnorms_initialised(sequence: nn.Module) -> bool:
    flags = [m.initialized for m in sequence.modules() if isinstance(m, ActNorm)]
    return not flags or bool(torch.stack(flags).all())  # one device sync, not one per ActNorm


def _check_no_dropout(sequence: nn.Module) -> None:
    for name, module in sequence.named_modules():
        if isinstance(module, _DropoutNd) and module.training and module.p > 0:
            raise ValueError(f"invertible backprop cannot rebuild activations through the active dropout "
                             f"{name!r} (its mask would differ); put the model in eval mode or drop the option")


@contextmanager
def _frozen_running_stats(sequence: nn.Module) -> Iterator[None]:
    """Training-mode BatchNorms keep normalising with batch statistics but stop updating their
    running statistics: the first pass has already updated them once."""
    norms = [m for m in sequence.modules() if isinstance(m, _BatchNorm) and m.training and m.track_running_stats]
    for norm in norms:
        norm.track_running_stats = False
    try:
        yield
    finally:
        for norm in norms:
            norm.track_running_stats = True


def _autocast_state(device_type: str) -> tuple[str, bool, torch.dtype] | None:
    try:
        return device_type, torch.is_autocast_enabled(device_type), torch.get_autocast_dtype(device_type)
    except (RuntimeError, TypeError):  # a device type without autocast
        return None


def _autocast(state: tuple[str, bool, torch.dtype] | None) -> Any:
    if state is None or not state[1]:
        return nullcontext()
    return torch.autocast(device_type=state[0], dtype=state[2])


class _InvertibleBackprop(torch.autograd.Function):
    """``(x, sequence, params, *params) -> (y, logdet)``; the parameters are inputs so that their
    gradients reach autograd (hooks, DDP, ``torch.autograd.grad``) as from an ordinary graph."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, sequence: FlowSequence, params: tuple[Tensor, ...],
                *_: Tensor) -> tuple[Tensor, Tensor]:
        y, total = x, zero_logdet(x)
        for flow in sequence.flows:  # autograd is off in here: each activation is freed at once
            y, logdet = flow(y)
            total = total + logdet
        if y.data_ptr() == x.data_ptr():  # an output must not alias the input
            y = y.clone()
        ctx.sequence, ctx.params = sequence, params
        ctx.autocast = _autocast_state(x.device.type)
        ctx.save_for_backward(y)
        return y, total

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_y: Tensor | None, grad_logdet: Tensor | None) -> tuple[Tensor | None, ...]:
        (y,) = ctx.saved_tensors
        sequence = ctx.sequence
        grad_y = torch.zeros_like(y) if grad_y is None else grad_y
        grad_logdet = y.new_zeros(y.shape[0]) if grad_logdet is None else grad_logdet
        # differentiate with respect to aliases of the parameters, swapped in once for the whole
        # walk: a hook on a parameter must fire once, on the gradient this function returns, not
        # on each partial one computed here
        slot = {id(p): i for i, p in enumerate(ctx.params)}
        named = [(n, p) for n, p in sequence.named_parameters() if id(p) in slot]
        aliases = {f"sequence.{n}": p.detach().requires_grad_(True) for n, p in named}
        rebuild = _Rebuild({id(a): slot[id(p)] for a, (_, p) in zip(aliases.values(), named)}, len(ctx.params),
                           grad_logdet)
        with _frozen_running_stats(sequence), _autocast(ctx.autocast):
            _, grad_x = functional_call(_Walk(sequence, rebuild), aliases, (y, grad_y, ctx.needs_input_grad[0]),
                                        strict=False)
        return (grad_x if ctx.needs_input_grad[0] else None, None, None, *rebuild.grads)


class _Walk(nn.Module):
    """Holds the sequence so that one ``functional_call`` swaps all its parameters for aliases."""

    def __init__(self, sequence: FlowSequence, rebuild: _Rebuild) -> None:
        super().__init__()
        self.sequence = sequence
        self.rebuild = rebuild

    def forward(self, y: Tensor, grad_y: Tensor, need: bool) -> tuple[Tensor, Tensor | None]:
        return self.rebuild.through(self.sequence, y, grad_y, need)


class _Rebuild:
    """The backward walk: layer by layer from the output, rebuild the layer's input, re-run it with
    autograd and backpropagate through it; parameter gradients gather in ``grads``. It runs with
    the parameters swapped for aliases (``slot`` maps an alias to its parameter's position).
    """

    def __init__(self, slot: dict[int, int], count: int, grad_logdet: Tensor) -> None:
        self.slot = slot
        self.grads: list[Tensor | None] = [None] * count
        self.grad_logdet = grad_logdet  # every layer's log-det adds to the total: the same gradient

    def through(self, flow: nn.Module, y: Tensor, grad_y: Tensor, need: bool) -> tuple[Tensor, Tensor | None]:
        """``flow``'s input rebuilt from its output ``y`` (detached) and the gradient there (if ``need``)."""
        if isinstance(flow, FlowSequence) and type(flow).forward is FlowSequence.forward \
                and type(flow).inverse is FlowSequence.inverse:
            flows = list(flow.flows)
            for index in range(len(flows) - 1, -1, -1):
                y, grad_y = self.through(flows[index], y, grad_y, need or index > 0)
            return y, grad_y
        if type(flow) is AffineCoupling:
            return self._affine(flow, y, grad_y, need)
        if type(flow) is ShiftedFlow:
            return self._shifted(flow, y, grad_y, need)
        if type(flow) is RepatchedFlow:  # a permutation each way: walk the inner layer like any other
            inner_x, inner_grad = self.through(flow.inner, flow.recut(y, flow.patch_size, flow.inner_patch),
                                               flow.recut(grad_y, flow.patch_size, flow.inner_patch), need)
            back = flow.recut(inner_x, flow.inner_patch, flow.patch_size)
            return back, (flow.recut(inner_grad, flow.inner_patch, flow.patch_size) if need else None)
        return self._generic(flow, y, grad_y, need)

    def _shifted(self, flow: ShiftedFlow, y: Tensor, grad_y: Tensor, need: bool) -> tuple[Tensor, Tensor | None]:
        """MixerFlow's shift layer: its inner mixer layer walked layer by layer like any other (so its
        couplings run their conditioners once); the frame around the window passes unchanged, its
        gradient too. The window arithmetic is :class:`~hybridflow.flows.ShiftedFlow`'s."""
        rows, cols = flow.window

        def window(m: Tensor) -> Tensor:
            return patchify(unpatchify(m, flow.image_shape, flow.patch_size)[:, :, rows, cols], flow.patch_size)

        def paste(m: Tensor, inner: Tensor) -> Tensor:
            image = unpatchify(m, flow.image_shape, flow.patch_size).clone()
            image[:, :, rows, cols] = unpatchify(inner, flow.inner_shape, flow.patch_size)
            return patchify(image, flow.patch_size)

        inner_x, inner_grad = self.through(flow.inner, window(y), window(grad_y), need)
        return paste(y, inner_x), (paste(grad_y, inner_grad) if need else None)

    def _own(self, module: nn.Module) -> list[Tensor]:
        return [p for p in module.parameters() if id(p) in self.slot]

    def _gather(self, own: list[Tensor], found: tuple[Tensor | None, ...]) -> None:
        for p, g in zip(own, found):
            if g is not None:
                i = self.slot[id(p)]
                self.grads[i] = g if self.grads[i] is None else self.grads[i] + g

    def _grad(self, pairs: list[tuple[Tensor, Tensor]], wrt: list[Tensor]) -> tuple[Tensor | None, ...]:
        pairs = [(t, g) for t, g in pairs if t.requires_grad]
        if not pairs or not wrt:  # a layer without parameters that passes no gradient (never in practice)
            return (None,) * len(wrt)
        return torch.autograd.grad([t for t, _ in pairs], wrt, [g for _, g in pairs], allow_unused=True)

    def _generic(self, flow: nn.Module, y: Tensor, grad_y: Tensor, need: bool) -> tuple[Tensor, Tensor | None]:
        """Any invertible layer: ``inverse`` without autograd, then ``forward`` with it."""
        with torch.no_grad():
            x = flow.inverse(y)
        x = x.detach().requires_grad_(need)
        own = self._own(flow)
        with torch.enable_grad():
            out, logdet = flow(x)
        found = self._grad([(out, grad_y), (logdet, self.grad_logdet)], ([x] if need else []) + own)
        grad_x = None
        if need:
            grad_x, found = (torch.zeros_like(x) if found[0] is None else found[0]), found[1:]
        self._gather(own, found)
        return x.detach(), grad_x

    def _affine(self, layer: AffineCoupling, y: Tensor, grad_y: Tensor, need: bool) -> tuple[Tensor, Tensor | None]:
        """The affine coupling with its conditioner run once, not twice (once in ``inverse``, once
        in the recomputed ``forward``): it sees the same ``x_a = y_a`` both ways. This is the
        coupling's own arithmetic (:class:`~hybridflow.flows.AffineCoupling`); the gradient tests
        in float64 hold it to that. It saves a quarter of a MixerFlow training step."""
        own = self._own(layer.conditioner)
        y_a, y_b = layer.split_input(y)
        x_a = y_a.detach().requires_grad_(need)
        with torch.enable_grad():
            shift, raw = layer.conditioner(x_a).chunk(2, dim=layer.dim)
            log_scale = layer.log_scale_of(raw)
            with torch.no_grad():
                x_b = (y_b - shift) * torch.exp(-log_scale)
            x_b.requires_grad_(need)
            out_b = torch.addcmul(shift, x_b, torch.exp(log_scale))
            logdet = log_scale.flatten(1).sum(1)
        grad_a, grad_b = layer.split_input(grad_y)
        found = self._grad([(out_b, grad_b), (logdet, self.grad_logdet)],
                           ([x_a, x_b] if need else []) + own)
        grad_x = None
        if need:
            through_a = grad_a if found[0] is None else grad_a + found[0]
            grad_x = layer.join(through_a, torch.zeros_like(x_b) if found[1] is None else found[1])
            found = found[2:]
        self._gather(own, found)
        return layer.join(x_a.detach(), x_b.detach()), grad_x
