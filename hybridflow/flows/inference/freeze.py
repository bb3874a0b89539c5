"""The explicit inference path: :func:`freeze` makes a weight-owning copy of a model whose layers
are replaced by precomputed, fused forms.

The live model always computes the ordinary path from its parameters: nothing is cached, so
no optimiser, ``load_state_dict``, ``vector_to_parameters``, ``functional_call`` or ``.data``
edit can leave a stale answer behind. The copy owns its weights (buffers, not parameters), so
it cannot go stale either: it answers for the weights the model had when it was frozen, and
whoever changes the weights makes a new copy (the estimators after ``fit`` and
``partial_fit``, the OOD scorers when built, the training loop at each validation).

The copy computes the same function as the model in evaluation mode (to float32 rounding;
with bfloat16 conditioners, as close to the float32 function as the ordinary bfloat16 path),
with autograd on or off, on any device, and under ``torch.compile`` (where the fused oneDNN
kernels give way to ``F.linear``, which inductor fuses itself). :func:`freeze` says how close,
in bits/dim per image.

Example:
    >>> import torch
    >>> from hybridflow import create_backbone
    >>> flow = create_backbone("mixerflow_tiny", input_shape=(1, 8, 8), patch_size=2).eval()
    >>> fast = freeze(flow)
    >>> x = torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8)
    >>> with torch.no_grad():
    ...     same = torch.allclose(fast.log_prob(x), flow.log_prob(x), atol=1e-3)
    >>> same, fast.is_inference_copy
    (True, True)
"""

from __future__ import annotations

import copy
from typing import Any, Callable, TypeVar

import torch
from torch import nn

from ..actnorm import ActNorm
from ..conditioners import ResidualMLP
from ..linear import InvConv1x1, LULinear
from .frozen import FoldedConditioner, FrozenActNorm, FrozenLinear

__all__ = ["contains_inference_copy", "freeze", "inference_model", "is_inference_copy"]

M = TypeVar("M", bound=nn.Module)

#: The layers that have a frozen form, and how to build it (``None``: keep the layer as it is).
#: Matched by exact type: a subclass may compute another function, and keeps its live form.
FROZEN_FORMS: dict[type[nn.Module], Callable[[nn.Module], nn.Module | None]] = {
    LULinear: FrozenLinear,
    InvConv1x1: FrozenLinear,
    ActNorm: FrozenActNorm,
    ResidualMLP: FoldedConditioner.fold,
}


def freeze(model: M, dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> M:
    """An evaluation-only copy of ``model`` (a backbone, a :class:`~hybridflow.HybridModel` or any
    module holding flow layers) that owns its weights and runs the fused inference path.

    The copy is of the same class, in evaluation mode, with no parameter requiring gradients
    (inputs still can: attributions work), and every module in it is marked
    (:func:`is_inference_copy`). It computes the evaluation-mode function of the model as it was
    when frozen; training it is refused (``train()``, ``train(mode=True)`` on our models): freeze
    the model again after changing its weights. ``dtype`` and ``device`` move the copy before its
    layers are folded, so a float64 copy is folded in float64. Hooks are not copied: the copy's
    modules are not the live ones (register hooks on the copy if needed).

    How close the copy's bits/dim are to the live model's, per image, for the same images and
    ``eval_seed`` (``tests/test_paths_agree.py``; ``python -m tests.test_paths_agree`` measures
    trained checkpoints):

    - float32 conditioners: within 1e-5 bits/dim (float32 rounding; measured below 2e-6), and a
      float64 copy within 1e-10 of the float64 model. The estimators, the OOD scorers,
      ``evaluate_model`` and the CLI all evaluate through such a copy, so they agree as closely.
    - bfloat16 conditioners: the live path rounds the conditioners' weights and activations to
      bfloat16, the copy its BatchNorm-folded weights: two roundings of the same float32 function.
      For MixerFlow they differ by up to 2e-2 bits/dim per image on images like the training data
      (measured at most 8.6e-3 on 10-minute MNIST and Fashion-MNIST models; test-set means within
      1.5e-3). Glow's convolutional conditioners are not folded: its copy is exact. Either path lies
      as far from the float32 function (within 5e-2, measured 2e-2), and further on unfamiliar
      images (0.17 measured on a model's own samples). For figures to compare across models, use
      float32 conditioners or a float64 copy: bfloat16 applies to float32 inputs only, so
      ``freeze(model, dtype=torch.float64)`` computes the float32 function in float64.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"freeze expects a torch.nn.Module, got {type(model).__name__}")
    frozen = copy.deepcopy(model).eval().requires_grad_(False)
    if dtype is not None or device is not None:
        frozen = frozen.to(device=device, dtype=dtype)
    own_form = _frozen_form(frozen)  # a bare layer (an LULinear, an ActNorm) is replaced itself
    if own_form is not None:
        frozen = own_form.eval().requires_grad_(False)
    else:
        _replace_layers(frozen)
    for module in frozen.modules():
        module._forward_hooks.clear()
        module._forward_pre_hooks.clear()
        module.is_inference_copy = True
    return frozen


def is_inference_copy(model: nn.Module) -> bool:
    """Whether ``model`` was made by :func:`freeze` (or is a module inside such a copy)."""
    return bool(getattr(model, "is_inference_copy", False))


def contains_inference_copy(model: nn.Module) -> bool:
    """Whether any module in ``model`` belongs to an inference copy (training one is refused).

    Example:
        >>> from hybridflow.flows import FlowSequence, LULinear
        >>> contains_inference_copy(FlowSequence(LULinear(3), freeze(LULinear(3))))
        True
    """
    return any(is_inference_copy(m) for m in model.modules())


def inference_model(model: Any) -> Any:
    """What to evaluate with: an inference copy of a live ``nn.Module``; an inference copy, or a
    model that is no module (anything with ``log_prob``), as it is.

    Example:
        >>> from hybridflow import create_backbone
        >>> flow = create_backbone("mixerflow_tiny", input_shape=(1, 8, 8), patch_size=2)
        >>> fast = inference_model(flow)
        >>> is_inference_copy(fast), inference_model(fast) is fast
        (True, True)
    """
    if isinstance(model, nn.Module) and not is_inference_copy(model):
        return freeze(model)
    return model


def _frozen_form(module: nn.Module) -> nn.Module | None:
    build = FROZEN_FORMS.get(type(module))
    return None if build is None else build(module)


def _replace_layers(module: nn.Module) -> None:
    for name, child in list(module.named_children()):
        replacement = _frozen_form(child)
        if replacement is None:
            _replace_layers(child)
        else:
            setattr(module, name, replacement)
