"""Features of a frozen flow for linear probes: its latent, its latents at every depth and the
hidden units of its coupling conditioners.

A flow's final latent is trained to look like Gaussian noise, which is what a density model
wants and not what a linear probe wants: on the embedded digits a trained MixerFlow's latent
probes below the raw pixels. The conditioners are where a flow computes nonlinear features of
its input (in MixerFlow they are MLP-Mixer blocks, in Glow small CNNs), and the latents at
intermediate depths are less Gaussianised than the last one. The feature sets:

- ``"latent"``: the final latent, flattened ``(N, D)`` (the backbone's ``embed``);
- ``"pooled"``: the latent averaged over positions (MixerFlow: over patches);
- ``"depths"``: the latent after every block (MixerFlow: every mixer layer, Glow: every step),
  flattened and concatenated;
- ``"hidden"``: every conditioner's last hidden activations (MixerFlow: ``GELU(BN(h))`` before
  the output layer of each channel- and patch-mixing coupling; Glow: the ReLU after the 1x1
  convolution), averaged and max-pooled over the rows (patches, or pixel positions within a
  patch) or spatial positions they are shared by, concatenated;
- ``"depths+hidden"``: both.

Everything is computed under ``torch.no_grad`` on an evaluation-mode copy of the backbone
(forward hooks on the copy: the caller's model is left as it is), with midpoint dequantisation,
so an image's features depend neither on noise nor on its batch.

Example:
    >>> import numpy as np
    >>> from hybridflow import create_backbone
    >>> flow = create_backbone("mixerflow_tiny", input_shape=(1, 8, 8), patch_size=2, num_layers=2, hidden=8)
    >>> flow_features(flow, np.zeros((3, 1, 8, 8), np.uint8), "hidden").shape   # 2 layers x 4 couplings x 16
    (3, 128)
"""

from __future__ import annotations

import contextlib
import copy
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import Tensor, nn

from .backbones.density import parameter_dtype_device
from .data import as_images
from .flows import ConvConditioner, ResidualMLP, inference_model, is_inference_copy

__all__ = ["FEATURE_SETS", "DEFAULT_FEATURES", "HIDDEN_POOLINGS", "flow_features", "check_features",
           "default_features", "hidden_width", "recording_hidden_units"]

FEATURE_SETS = ("latent", "pooled", "depths", "hidden", "depths+hidden")
"""Names :func:`flow_features` accepts."""

DEFAULT_FEATURES = "depths+hidden"
"""What ``embed_images`` and ``hybridflow probe`` use unless told otherwise: the best set of both
MixerFlow and Glow in ``bench/embedding_features.py`` on the digits (the README's main job:
MixerFlow 96.67% / log-loss 0.116 against 93.56% / 0.333 for the latent and 96.81% / 0.141 for
the raw pixels), and on 10-minute flows in ``bench/embeddings.py`` (MixerFlow on Fashion-MNIST
87.38% against 79.17% for its latent and 83.26% for the pixels; on the CIFAR-10 subset 50.00%
against 27.35% and 35.30%). It is wide (MixerFlow tiny on 28x28: 10,368 values), so a probe on a large
training set needs memory: ``"hidden"`` (4,096) or ``"latent"`` (784) are lighter."""


def check_features(features: str) -> str:
    """``features`` if it names a feature set, else ``ValueError`` listing the names.

    Example:
        >>> check_features("latent")
        'latent'
    """
    if features not in FEATURE_SETS:
        raise ValueError(f"unknown features {features!r}: choose one of {', '.join(FEATURE_SETS)}")
    return features


def default_features(model: Any) -> str:
    """:data:`DEFAULT_FEATURES` where ``model``'s backbone has the blocks and conditioners they read
    (MixerFlow and Glow with MLP or convolutional couplings, live or an inference copy), else
    ``"latent"``: a user's own backbone can always be probed.

    Example:
        >>> from hybridflow import create_backbone
        >>> default_features(create_backbone("glow_tiny")), default_features(create_backbone("mixerflow_tiny_maf"))
        ('depths+hidden', 'latent')
    """
    backbone = _backbone(model)
    try:
        _depth_taps(backbone), _hidden_taps(backbone)
    except ValueError:
        return "latent"
    return DEFAULT_FEATURES


def _backbone(model: Any) -> Any:
    # A hybrid model's backbone holds the representation (its own embed() is the head's input).
    backbone = model.backbone if hasattr(getattr(model, "backbone", None), "embed") else model
    if not hasattr(backbone, "embed"):
        raise TypeError(f"{type(model).__name__} has no embed method (nor a .backbone with one)")
    return backbone


def _hidden_taps(backbone: nn.Module) -> list[tuple[nn.Module, Callable[[Any], Tensor], int]]:
    """``(module, hidden_of(output), width)`` for each conditioner's last hidden layer, live or in an
    inference copy (a folded MLP conditioner passes its hidden units through ``hidden_tap``)."""
    from .flows.inference.frozen import FoldedConditioner

    taps: list[tuple[nn.Module, Callable[[Any], Tensor], int]] = []
    for module in backbone.modules():
        if isinstance(module, ResidualMLP):  # head = BN, GELU, Linear: the GELU's output
            taps.append((module.head[1], lambda out: out, module.head[2].in_features))
        elif isinstance(module, FoldedConditioner):
            taps.append((module.hidden_tap, lambda out: out, module.folded.head_0.shape[1]))
        elif isinstance(module, ConvConditioner):  # ReLU(ActNorm(conv1x1)); ActNorm returns (y, logdet)
            taps.append((module.norm_mid, lambda out: torch.relu(out[0]), module.conv_mid.out_channels))
    if not taps:
        raise ValueError(f"{type(backbone).__name__} has no MLP or convolutional coupling conditioner whose "
                         "hidden units could be read: use features='latent' or 'depths'")
    return taps


HIDDEN_POOLINGS = ("mean+max", "mean")
"""How :func:`recording_hidden_units` pools each conditioner's hidden units over the rows or
positions that share it: ``"mean+max"`` (the probes' ``"hidden"`` features) or ``"mean"`` (the
hybrid head's: as accurate, a better density and about 20% faster to train, ``bench/notes.md``)."""


def hidden_width(backbone: nn.Module, pooling: str = "mean+max") -> int:
    """Width of the ``"hidden"`` features of ``backbone`` pooled by ``pooling`` (mean and max, or
    mean, of every conditioner's hidden units), found without running the flow, so no
    data-dependent initialisation fires.

    Example:
        >>> from hybridflow import create_backbone
        >>> hidden_width(create_backbone("mixerflow_tiny", input_shape=(1, 8, 8), patch_size=2, num_layers=2, hidden=8))
        128
    """
    width = sum(tap[2] for tap in _hidden_taps(backbone))
    return width * (2 if _check_pooling(pooling) == "mean+max" else 1)


def _check_pooling(pooling: str) -> str:
    if pooling not in HIDDEN_POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}: choose one of {', '.join(HIDDEN_POOLINGS)}")
    return pooling


@contextlib.contextmanager
def recording_hidden_units(backbone: nn.Module, batch: int, pooling: str = "mean+max") -> Iterator[list[Tensor]]:
    """Inside the block, every pass of ``batch`` images through ``backbone`` appends each
    conditioner's pooled hidden units to the yielded list, in forward order, with their autograd
    graph: a head on them trains the conditioners too (:class:`~hybridflow.HybridModel` with
    ``head_input="hidden"``). ``pooling`` (:data:`HIDDEN_POOLINGS`) over the rows or positions that
    share the conditioner: ``"mean+max"`` gives ``(batch, 2 * hidden)`` per conditioner, ``"mean"``
    ``(batch, hidden)``.

    Example:
        >>> import torch
        >>> from hybridflow import create_backbone
        >>> flow = create_backbone("mixerflow_tiny", input_shape=(1, 8, 8), patch_size=2, num_layers=2, hidden=8)
        >>> with recording_hidden_units(flow.eval(), 3) as units:
        ...     _ = flow.embed(torch.zeros(3, 1, 8, 8, dtype=torch.uint8))
        >>> torch.cat(units, 1).shape
        torch.Size([3, 128])
    """
    with_max = _check_pooling(pooling) == "mean+max"
    units: list[Tensor] = []
    hooks = [module.register_forward_hook(
        lambda m, i, out, f=hidden_of: units.append(_pool_hidden(f(out), batch, with_max)))
        for module, hidden_of, _ in _hidden_taps(backbone)]
    try:
        yield units
    finally:
        for hook in hooks:
            hook.remove()


def _depth_taps(backbone: nn.Module) -> list[nn.Module]:
    """The blocks whose outputs are the latents at every depth."""
    from .backbones import Glow, MixerFlow
    from .backbones.glow import GlowLevel

    if isinstance(backbone, MixerFlow):
        return list(backbone.body)[2:]  # after the 1x1 convolution and the patchify: the mixer layers
    if isinstance(backbone, Glow):
        return [step for level in backbone.modules() if isinstance(level, GlowLevel) for step in level.steps]
    raise ValueError(f"features='depths' knows MixerFlow and Glow, not {type(backbone).__name__}")


def _pool_hidden(h: Tensor, batch: int, with_max: bool = True) -> Tensor:
    """Mean (and max) over the rows or positions that share the conditioner's weights (bfloat16 or
    half hidden units, from mixed-precision conditioners, in float32; float64 ones stay float64)."""
    if h.dtype in (torch.bfloat16, torch.float16):
        h = h.float()
    if h.dim() == 4:  # (batch, hidden, H, W): a convolutional conditioner's positions
        rows, dim = h.flatten(2), 2
    else:  # (batch * rows, hidden): the rows of a batch share the MLP conditioner
        rows, dim = h.reshape(batch, -1, h.shape[-1]), 1
    mean = rows.mean(dim)
    return torch.cat([mean, rows.amax(dim)], 1) if with_max else mean  # (batch, 2 * hidden) or (batch, hidden)


def _hooked_features(backbone: nn.Module, x: Tensor, features: str) -> Tensor:
    depths: list[Tensor] = []
    hooks = []
    batch = len(x)
    try:
        if "depths" in features:
            for block in _depth_taps(backbone):
                hooks.append(block.register_forward_hook(lambda m, i, out: depths.append(out[0].float().flatten(1))))
        with recording_hidden_units(backbone, batch) if "hidden" in features else contextlib.nullcontext([]) as hidden:
            backbone.embed(x)
    finally:
        for hook in hooks:
            hook.remove()
    return torch.cat(depths + hidden, 1)  # the depths first, then the hidden units, each in forward order


def flow_features(model: Any, images: Any, features: str = DEFAULT_FEATURES, batch_size: int = 256) -> np.ndarray:
    """The ``features`` (see :data:`FEATURE_SETS`) of ``images`` under a backbone (a hybrid
    model's: its ``.backbone``'s) as float32 ``(N, dim)``.

    ``"latent"`` and ``"pooled"`` run the fused inference copy; the others an evaluation-mode
    copy of the live model with forward hooks (an inference copy is read as it is: its folded
    conditioners pass their hidden units through a tap).

    Example:
        >>> import numpy as np
        >>> from hybridflow import create_backbone
        >>> flow = create_backbone("mixerflow_tiny", input_shape=(1, 8, 8), patch_size=2, num_layers=2, hidden=8)
        >>> flow_features(flow, np.zeros((2, 1, 8, 8), np.uint8), "depths").shape   # 2 layers x 64
        (2, 128)
    """
    check_features(features)
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    backbone = _backbone(model)
    images = as_images(images, getattr(backbone, "input_shape", None))
    pooled = features == "pooled"
    if features in ("latent", "pooled"):
        if isinstance(backbone, nn.Module):  # the fused inference path, on weights it owns
            backbone = inference_model(backbone)
        run = lambda b: backbone.embed(b, pooled=pooled)  # noqa: E731
    else:
        if not isinstance(backbone, nn.Module):
            raise ValueError(f"features={features!r} needs a torch module (its conditioners' hidden units and "
                             f"blocks), not a {type(backbone).__name__}")
        if not is_inference_copy(backbone):  # hooks and eval mode on a copy: the model stays as it is
            backbone = copy.deepcopy(backbone).eval()
        run = lambda b: _hooked_features(backbone, b, features)  # noqa: E731
    device = parameter_dtype_device(backbone)[1] if isinstance(backbone, nn.Module) else torch.device("cpu")
    with torch.no_grad():
        out = [run(b.to(device)).float().cpu() for b in images.split(int(batch_size))]
    return torch.cat(out).numpy()
