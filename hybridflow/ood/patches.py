"""A bag-of-patches density: one small flow on every non-overlapping patch of an image, its
log-likelihood the sum over the patches. It is the reference that makes the likelihood ratio work.

A flow trained on Fashion-MNIST gives MNIST digits a *higher* likelihood (Nalisnick et al. 2019):
what dominates ``log p(x)`` is local statistics (flat black background, sharp strokes), not the
image's content. A model that sees only patches, position unknown, learns those local
statistics and nothing global, so ``log p(x) - log p_patches(x)`` keeps what the full model knows
beyond them (Schirrmeister et al. 2020 use a local model the same way). Measured on Fashion-MNIST
-> MNIST with ``pretrained:fashionmnist`` (2,000 test images a side; ``bench/ood_reference.py``):
AUROC 0.990 with a 4x4-patch MixerFlow trained for 1,500 steps, against 0.775 for Ren et al.'s
perturbed-input reference trained as long as the model, 0.814 for the same flow trained on
CIFAR-10 in grey, and 0.101 for the likelihood alone.

Example:
    >>> import torch
    >>> from hybridflow import create_backbone
    >>> patch_flow = create_backbone("mixerflow_tiny", input_shape=(1, 4, 4), patch_size=2, num_layers=1)
    >>> density = PatchDensity(patch_flow, (1, 8, 8))
    >>> x = torch.randint(0, 256, (3, 1, 8, 8), dtype=torch.uint8)
    >>> density.log_prob(x).shape
    torch.Size([3])
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from ..backbones import create_backbone
from ..data import as_images
from ..data.patches import check_patch_size, image_patches
from ..seeding import seeded

__all__ = ["PatchDensity", "patch_reference_for", "fit_patch_reference", "PATCH_REFERENCE_OPTIONS"]

#: The patch flow :func:`fit_patch_reference` trains unless told otherwise: ``mixerflow_tiny``
#: with 4 mixer layers of width 64 and logit preprocessing (129,093 parameters on 4x4 patches).
PATCH_REFERENCE_OPTIONS = dict(num_layers=4, hidden=64, preprocess="logit")


class PatchDensity(nn.Module):
    """``log p(x) = sum over patches of log p_patch(patch)`` for images of ``image_shape``, with
    ``patch_flow`` a density over ``(C, P, P)`` patches that divide the image.

    Args:
        patch_flow: a model with ``log_prob`` on uint8 patches and an ``input_shape`` ``(C, P, P)``.
        image_shape: ``(C, H, W)`` of the images scored; ``P`` must divide ``H`` and ``W``.
    """

    def __init__(self, patch_flow: nn.Module, image_shape: tuple[int, int, int]) -> None:
        super().__init__()
        c, p, q = tuple(patch_flow.input_shape)
        if p != q:
            raise ValueError(f"the patch model takes {p}x{q} images: patches must be square")
        if tuple(image_shape)[0] != c:
            raise ValueError(f"the patch model takes {c} channel(s), the images have {tuple(image_shape)[0]}")
        self.patch_size = check_patch_size(p, tuple(image_shape))
        self.patch_flow = patch_flow
        self.input_shape = tuple(int(v) for v in image_shape)

    @property
    def num_dims(self) -> int:
        return math.prod(self.input_shape)

    def log_prob(self, x: Tensor) -> Tensor:
        """``log p(x)`` in nats of uint8 images ``(N, C, H, W)``: the patches' sum."""
        x = as_images(x, self.input_shape)
        per_patch = self.patch_flow.log_prob(image_patches(x, self.patch_size))
        return per_patch.reshape(len(x), -1).sum(dim=1)

    def bits_per_dim(self, x: Tensor) -> Tensor:
        return -self.log_prob(x) / (self.num_dims * math.log(2))

    def extra_repr(self) -> str:
        return f"patch_size={self.patch_size}, input_shape={self.input_shape}"


def patch_reference_for(reference: Any, image_shape: tuple[int, int, int]) -> Any:
    """``reference`` as it scores images of ``image_shape``: a model over smaller square patches
    that divide the image is wrapped in a :class:`PatchDensity`; any other model is returned as it is.

    Example:
        >>> from hybridflow import create_backbone
        >>> flow = create_backbone("mixerflow_tiny", input_shape=(1, 4, 4), patch_size=2, num_layers=1)
        >>> type(patch_reference_for(flow, (1, 28, 28))).__name__
        'PatchDensity'
    """
    shape = tuple(getattr(reference, "input_shape", ()) or ())
    if len(shape) != 3 or len(tuple(image_shape)) != 3 or shape == tuple(image_shape):
        return reference
    c, p, q = shape
    _, h, w = image_shape
    if p == q and p < min(h, w) and h % p == 0 and w % p == 0:
        return PatchDensity(reference, tuple(image_shape))
    return reference


def fit_patch_reference(images: Any, patch_size: int = 4, steps: int = 1500, batch_size: int = 256,
                        lr: float = 3e-3, seed: int = 0, backbone: str = "mixerflow_tiny", verbose: int = 0,
                        device: str | torch.device = "cpu", **options: Any) -> PatchDensity:
    """Train a bag-of-patches reference on uint8 ``images`` ``(N, C, H, W)``: ``backbone`` (default
    options :data:`PATCH_REFERENCE_OPTIONS`, overridden by ``options``) by maximum likelihood on
    their ``patch_size`` x ``patch_size`` patches (:func:`~hybridflow.training.fit_backbone`, Adam
    at a constant ``lr``, on ``device``), returned in evaluation mode as a :class:`PatchDensity` on the images' shape.

    Example:
        >>> import torch
        >>> x = torch.randint(0, 256, (16, 1, 8, 8), dtype=torch.uint8)
        >>> fit_patch_reference(x, patch_size=4, steps=2, batch_size=8, num_layers=1).input_shape
        (1, 8, 8)
    """
    from ..training import fit_backbone

    images = as_images(images)
    c, h, w = images.shape[1:]
    patch_size = check_patch_size(patch_size, (c, h, w))
    kwargs = {**PATCH_REFERENCE_OPTIONS, **options}
    kwargs.setdefault("patch_size", 2 if patch_size % 2 == 0 else 1)
    with seeded(seed):  # the initial weights depend on ``seed`` only; the caller's RNG is left alone
        flow = create_backbone(backbone, input_shape=(c, patch_size, patch_size), **kwargs).to(device)
    fit_backbone(flow, image_patches(images, patch_size), steps, batch_size, lr, seed=seed, verbose=verbose)
    return PatchDensity(flow, (c, h, w)).eval()
