r"""How the estimator builds and trains its :class:`~hybridflow.hybrid.HybridModel`.

:func:`build_classifier_model` makes the model for an image shape (a MixerFlow falls back to a
patch that divides the images), its initial weights drawn under :func:`~hybridflow.seeding.seeded`;
:func:`train_model` runs one :func:`~hybridflow.training.train` call (its own generators) and keeps
the EMA weights when there are any. Neither moves the caller's global random states.

Example:
    >>> model = build_classifier_model("mixerflow_tiny", 2, (1, 1, 6), seed=0,
    ...                                backbone_kwargs=dict(num_layers=1, hidden=8))
    >>> model.backbone.patch_size, model.num_classes
    ((1, 1), 2)
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from ..backbones import backbone_family
from ..data import ImageData
from ..hybrid import HybridModel
from ..seeding import seeded
from ..training import TrainConfig, TrainResult, train

__all__ = ["build_classifier_model", "train_model"]


def build_classifier_model(backbone: str, num_classes: int, image_shape: tuple[int, int, int], seed: int,
                           lam: float = 1.0, pooled: bool = False,
                           backbone_kwargs: dict[str, Any] | None = None) -> HybridModel:
    """A new :class:`~hybridflow.hybrid.HybridModel` whose initial weights are a function of
    ``seed``; a MixerFlow without an explicit ``patch_size`` whose default patch does not divide
    ``image_shape`` gets the largest side <= 4 that does (1 for tabular rows)."""
    kwargs = dict(backbone_kwargs or {})  # copied: a parameter is never modified
    make = lambda **kw: HybridModel(backbone, num_classes, lam=float(lam), input_shape=image_shape,  # noqa: E731
                                    pooled=bool(pooled), **kw)
    with seeded(seed):  # the initial weights are a function of random_state
        try:
            return make(**kwargs)
        except ValueError as error:
            # The registered MixerFlows cut 28x28 or 32x32 images in 4x4 (or 8x8) patches; tabular
            # rows (1, 1, D) and small images need a patch that divides them.
            if "patch_size" in kwargs or backbone_family(backbone) != "mixerflow":
                raise ValueError(f"backbone {backbone!r} cannot be built for images of shape {image_shape}: "
                                 f"{error}") from None
            patch = max(p for p in range(1, 5) if image_shape[1] % p == 0 and image_shape[2] % p == 0)
            try:
                return make(patch_size=patch, **kwargs)
            except ValueError:
                raise ValueError(f"backbone {backbone!r} cannot be built for images of shape {image_shape}: "
                                 f"{error}") from None


def train_model(model: HybridModel, images: Tensor, labels: Tensor, config: TrainConfig) -> TrainResult:
    """Train ``model`` on uint8 ``images`` and int64 ``labels`` (-1 = unlabelled) with ``config``;
    afterwards ``model`` holds the EMA weights when ``config.ema_decay`` is set, in eval mode."""
    result = train(model, ImageData(images, labels), config)  # its own generators: no global RNG
    if result.ema is not None:  # the averaged weights are the ones to predict with
        model.load_state_dict(result.ema.state_dict())
    model.eval()
    return result
