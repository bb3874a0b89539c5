r"""Attributions with captum: which pixels drive a class prediction, and which make an image unlikely.

A hybrid model has two things worth explaining from the same pass of the flow:

* a **class score**, the logit ``W z + b`` of a class (the predicted one by default), and
* the **negative log-likelihood** ``-log2 p(x)`` in bits of the whole image (``target="nll"``):
  a positive attribution marks a pixel that *adds* code length, i.e. makes the image less
  likely under the model; a negative one a pixel that makes it more likely.

Attributions are taken with respect to the midpoint-dequantised image ``u = (x + 0.5) / 256`` in
``[0, 1)^D``, the flow's continuous input (the ``- D log 256`` of the integer density is a
constant and has no gradient). Integrated Gradients is invariant to that linear rescaling, so its
attributions read the same in pixel units. Methods (captum):

==============  ==========================================================================
``ig``          Integrated Gradients (Sundararajan et al. 2017), from a baseline image;
                *completeness*: the attributions sum to ``f(x) - f(baseline)``
``saliency``    ``|df/du|`` (Simonyan et al. 2014): unsigned sensitivity
``gradshap``    GradientSHAP (Lundberg & Lee 2017): expected gradients over random baselines
``inputxgrad``  ``(u - 0) * df/du``
==============  ==========================================================================

Baselines: ``"black"`` (every pixel 0), ``"mean"`` (the mean of ``references``), ``"blur"`` (the
image under a 5x5 box blur) or an image tensor.

Example:
    >>> import torch
    >>> from hybridflow.hybrid import HybridModel
    >>> model = HybridModel("mixerflow_tiny", 10, input_shape=(1, 8, 8), patch_size=2,
    ...                     num_layers=1, hidden=8, steps=1).eval()
    >>> x = torch.randint(0, 256, (2, 1, 8, 8), dtype=torch.uint8)
    >>> result = attribute(model, x, target="nll", method="ig", n_steps=16)
    >>> result.attributions.shape
    torch.Size([2, 1, 8, 8])
    >>> bool((result.attributions.flatten(1).sum(1) - (result.values - result.baseline_values)).abs().max() < 0.5)
    True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence, Union

import torch
from torch import Tensor, nn

from .backbones import FlowBackbone, bits_per_dim, log_prob_from_latent
from .data import as_images
from .flows import NUM_BINS, dequantize
from .seeding import seeded

__all__ = [
    "METHODS", "Attribution", "attribute", "explain", "pixels_to_input", "NegativeLogLikelihood", "ClassLogits",
]

#: Method names and what they are called in plots.
METHODS = {"ig": "Integrated Gradients", "saliency": "Saliency", "gradshap": "GradientSHAP",
           "inputxgrad": "Input x Gradient"}

Target = Union[int, str]


def pixels_to_input(images: Any, image_shape: Sequence[int] | None = None, dtype: torch.dtype = torch.float32,
                    device: torch.device | str | None = None) -> Tensor:
    """Integer pixels ``(B, C, H, W)`` -> the flow's continuous input ``(x + 0.5) / 256`` in ``dtype``
    on ``device`` (the images' by default)."""
    return dequantize(as_images(images, image_shape), noise="midpoint", dtype=dtype, device=device)


def _split(model: Any) -> tuple[FlowBackbone, Any]:
    """``(backbone, hybrid model or None)``."""
    if isinstance(model, FlowBackbone):
        return model, None
    backbone = getattr(model, "backbone", None)
    if isinstance(backbone, FlowBackbone) and hasattr(model, "head"):
        return backbone, model
    raise TypeError(f"expected a HybridModel or a FlowBackbone, got {type(model).__name__}")


class NegativeLogLikelihood(nn.Module):
    """``u -> -log2 p(x)`` in bits per image ``(B,)``, differentiable in the continuous input ``u``."""

    def __init__(self, backbone: FlowBackbone) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, u: Tensor) -> Tensor:
        z, logdet = self.backbone(u)
        num_dims = self.backbone.num_dims
        return bits_per_dim(log_prob_from_latent(z, logdet, num_dims), num_dims) * num_dims


class ClassLogits(nn.Module):
    """``u -> logits (B, K)`` of a hybrid model, differentiable in the continuous input ``u``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, u: Tensor) -> Tensor:
        return self.model.logits_of_flow_input(u)


@dataclass
class Attribution:
    """Attributions of one method for a batch.

    Attributes:
        method: a key of :data:`METHODS`.
        target: ``"nll"`` or ``"class k"``.
        attributions: ``(B, C, H, W)`` float32, the images' shape.
        values: ``(B,)`` the explained quantity ``f(x)`` (bits for ``nll``, the logit for a class).
        baseline_values: ``(B,)`` ``f(baseline)`` for Integrated Gradients, else ``None``.
        delta: ``(B,)`` IG's completeness error ``sum(attributions) - (f(x) - f(baseline))``.
        classes: ``(B,)`` the class explained per image (``None`` for ``nll``).
    """

    method: str
    target: str
    attributions: Tensor
    values: Tensor
    baseline_values: Tensor | None = None
    delta: Tensor | None = None
    classes: Tensor | None = None


def _baseline(kind: Any, u: Tensor, references: Tensor | None) -> Tensor:
    if isinstance(kind, Tensor):
        base = pixels_to_input(kind.reshape(-1, *u.shape[1:])) if kind.dtype == torch.uint8 else kind
        base = base.to(device=u.device, dtype=u.dtype)
        return base.expand_as(u) if len(base) == 1 else base
    if kind == "black":
        return torch.full_like(u, 0.5 / NUM_BINS)
    if kind == "mean":
        if references is None:
            raise ValueError("baseline='mean' needs references= (in-distribution images)")
        return references.mean(0, keepdim=True).expand_as(u).contiguous()
    if kind == "blur":
        c = u.shape[1]
        kernel = torch.full((c, 1, 5, 5), 1 / 25.0, dtype=u.dtype, device=u.device)
        padded = nn.functional.pad(u, (2, 2, 2, 2), mode="replicate")
        return nn.functional.conv2d(padded, kernel, groups=c)
    raise ValueError(f"unknown baseline {kind!r}; choose 'black', 'mean', 'blur' or pass an image tensor")


def attribute(model: Any, images: Any, target: Target = "predicted", method: str = "ig",
              baseline: Any = "black", references: Any = None, n_steps: int = 64, n_samples: int = 16,
              seed: int = 0) -> Attribution:
    """Attributions of ``method`` for integer ``images`` ``(B, C, H, W)``.

    Args:
        model: a :class:`~hybridflow.hybrid.HybridModel` (any target) or a bare backbone
            (``target="nll"`` only). It is put in evaluation mode for the call.
        target: ``"nll"`` (bits), ``"predicted"`` (each image's most likely class) or a class index.
        method: ``"ig"``, ``"saliency"``, ``"gradshap"`` or ``"inputxgrad"``.
        baseline: IG's reference: ``"black"``, ``"mean"``, ``"blur"`` or an image tensor.
        references: in-distribution images: the ``"mean"`` baseline, and GradientSHAP's random
            baselines (otherwise black plus uniform noise images).
        n_steps: IG's integration points (Gauss-Legendre).
        n_samples: GradientSHAP's samples per image.
        seed: GradientSHAP's random draws (the global RNG is left as it was).

    Example:
        >>> attribute(model, test.images[:1], target=3, method="saliency")  # doctest: +SKIP
    """
    from captum.attr import GradientShap, InputXGradient, IntegratedGradients, Saliency

    if method not in METHODS:
        raise ValueError(f"unknown attribution method {method!r}; choose from {', '.join(METHODS)}")
    backbone, hybrid = _split(model)
    dtype, device = backbone._dtype_device()  # a float64 model is explained in float64
    u = pixels_to_input(images, backbone.input_shape, dtype, device).requires_grad_()
    ref = None if references is None else pixels_to_input(references, backbone.input_shape, dtype, device)
    owner = hybrid if hybrid is not None else backbone
    was_training = owner.training
    owner.eval()
    try:
        if target == "nll":
            function: nn.Module = NegativeLogLikelihood(backbone)
            captum_target, classes, name = None, None, "nll"
        else:
            if hybrid is None:
                raise ValueError("explaining a class needs a hybrid model (with a classifier head); "
                                 "a bare backbone explains only target='nll'")
            function = ClassLogits(hybrid)
            with torch.no_grad():
                logits = function(u)
            if target == "predicted":
                classes = logits.argmax(1)
            else:
                k = int(target)
                if not 0 <= k < logits.shape[1]:
                    raise ValueError(f"class {k} out of range: the model has {logits.shape[1]} classes")
                classes = torch.full((len(u),), k, dtype=torch.int64, device=u.device)
            captum_target = classes
            name = "predicted class" if target == "predicted" else f"class {int(target)}"
        with torch.no_grad():
            out = function(u)
            values = out if classes is None else out.gather(1, classes[:, None])[:, 0]
        delta = baseline_values = None
        if method == "ig":
            base = _baseline(baseline, u.detach(), ref)
            attributions, delta = IntegratedGradients(function).attribute(
                u, baselines=base, target=captum_target, n_steps=n_steps, return_convergence_delta=True)
            with torch.no_grad():
                b_out = function(base)
                baseline_values = b_out if classes is None else b_out.gather(1, classes[:, None])[:, 0]
        elif method == "saliency":
            attributions = Saliency(function).attribute(u, target=captum_target, abs=True)
        elif method == "inputxgrad":
            attributions = InputXGradient(function).attribute(u, target=captum_target)
        else:
            if ref is not None:
                pool = ref
            else:
                generator = torch.Generator(device="cpu").manual_seed(seed)  # the same draws on every device
                noise = torch.rand((7, *u.shape[1:]), generator=generator, device="cpu").to(u.device, u.dtype)
                pool = torch.cat([torch.full_like(u[:1], 0.5 / NUM_BINS), noise])
            with seeded(seed, u.device):  # captum draws from the global RNG: seed it, restore it after
                attributions = GradientShap(function).attribute(u, baselines=pool, target=captum_target,
                                                               n_samples=n_samples, stdevs=0.0)
    finally:
        owner.train(was_training)
    attributions = attributions.detach().float().cpu()
    if not bool(torch.isfinite(attributions).all()):
        raise FloatingPointError(f"{METHODS[method]} gave non-finite attributions (the flow overflowed on some "
                                 "interpolated input); try another baseline or method")
    return Attribution(method=method, target=name, attributions=attributions, values=values.detach().cpu(),
                       baseline_values=None if baseline_values is None else baseline_values.detach().cpu(),
                       delta=None if delta is None else delta.detach().float().cpu(),
                       classes=None if classes is None else classes.cpu())


def explain(model: Any, image: Any, methods: Sequence[str] = ("ig", "saliency"),
            targets: Sequence[Target] = ("predicted", "nll"), **options: Any) -> dict[str, Attribution]:
    """Every method for every target on one image ``(C, H, W)`` or ``(1, C, H, W)``.

    Returns ``{"<Method>: <target>": Attribution}`` in order, ready for
    :func:`hybridflow.plots.plot_attributions` (``{k: a.attributions[0]}``). Class targets are
    skipped for a bare backbone.

    Example:
        >>> maps = explain(model, test.images[0])  # doctest: +SKIP
        >>> list(maps)  # doctest: +SKIP
        ['Integrated Gradients: class 3', 'Saliency: class 3', 'Integrated Gradients: nll', ...]
    """
    x = image if isinstance(image, Tensor) else torch.as_tensor(image)
    if x.dim() == 3:
        x = x[None]
    if x.dim() != 4 or len(x) != 1:
        raise ValueError(f"explain takes one image (C, H, W), got shape {tuple(x.shape)}")
    _, hybrid = _split(model)
    out: dict[str, Attribution] = {}
    for target in targets:
        if target != "nll" and hybrid is None:
            continue
        for method in methods:
            result = attribute(model, x, target=target, method=method, **options)
            label = "nll (bits)" if result.target == "nll" else f"class {int(result.classes[0])}"
            out[f"{METHODS[method]}: {label}"] = result
    return out
