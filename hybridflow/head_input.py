"""What a :class:`~hybridflow.HybridModel`'s linear head reads (its ``head_input``), and the pass
that gives the conditioners' hidden units to a ``"hidden"`` head.

Example:
    >>> check_head_input(None, pooled=True)
    'pooled'
"""

from __future__ import annotations

from typing import Callable, TypeVar

import torch
from torch import Tensor, nn

from .features import recording_hidden_units

__all__ = ["HEAD_INPUTS", "HEAD_POOLING", "check_head_input", "hidden_units_of_pass"]

HEAD_INPUTS = ("latent", "pooled", "hidden")
"""What a head can read: the flattened latent, the latent pooled over positions, or the coupling
conditioners' hidden units from the same pass."""

HEAD_POOLING = "mean"
"""How a ``"hidden"`` head pools each conditioner's hidden units over the rows or positions that
share it. The probes' ``"hidden"`` features add the max; for a head trained with the flow the mean
alone measured as accurate, with a better density, and trains about 20% faster (bench/notes.md)."""

T = TypeVar("T")


def check_head_input(head_input: str | None, pooled: bool) -> str:
    """``head_input``, or what ``pooled`` implies when it is ``None``; ``ValueError`` naming an
    unknown value or a contradiction with ``pooled=True``.

    Example:
        >>> check_head_input("hidden", pooled=False)
        'hidden'
    """
    if head_input is None:
        return "pooled" if pooled else "latent"
    if head_input not in HEAD_INPUTS:
        raise ValueError(f"unknown head_input {head_input!r}: choose one of {', '.join(HEAD_INPUTS)}")
    if pooled and head_input != "pooled":
        raise ValueError(f"pooled=True asks for head_input='pooled', which contradicts head_input={head_input!r}")
    return head_input


def hidden_units_of_pass(backbone: nn.Module, batch: int, run: Callable[[], T], training: bool) -> tuple[Tensor, T]:
    """``(hidden units (batch, width), run())``: the conditioners' hidden units pooled by
    :data:`HEAD_POOLING` during the pass ``run`` makes through ``backbone`` over ``batch`` images.

    Raises ``ValueError`` when training through ``invertible_backprop`` (it keeps no activations for
    the head's gradient) and ``RuntimeError`` when the pass recorded nothing (a compiled backbone
    runs without module hooks).
    """
    if training and torch.is_grad_enabled() and getattr(backbone, "invertible_backprop", False):
        raise ValueError("head_input='hidden' trains through the conditioners' hidden units, which "
                         "invertible_backprop does not keep: train without invertible_backprop")
    with recording_hidden_units(backbone, batch, HEAD_POOLING) as units:
        out = run()
    if not units:
        raise RuntimeError("head_input='hidden' recorded no hidden units in this pass (a compiled "
                           "backbone runs without module hooks): use head_input='latent'")
    return torch.cat(units, 1), out
