"""pytorch-ood's ``Detector`` interface over a :class:`~hybridflow.ood.detector.FlowDensity`.

pytorch-ood's detectors score outliers *higher*, the opposite of scikit-learn's ``score_samples``,
so the adapter negates every score. pytorch-ood is an optional extra
(``pip install hybridflow[ood]``): without it the adapter is a plain object with the same methods.

Example:
    >>> import torch
    >>> from hybridflow import create_backbone
    >>> detector = FlowDensity.from_model(create_backbone("mixerflow_tiny", input_shape=(1, 8, 8), patch_size=2))
    >>> x = torch.zeros(2, 1, 8, 8)
    >>> outlier_scores = to_pytorch_ood(detector).predict(x)
    >>> bool(torch.allclose(outlier_scores, -torch.as_tensor(detector.score_samples(x)).float()))
    True
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..data import as_images
from .detector import FlowDensity

__all__ = ["FlowOODDetector", "to_pytorch_ood"]


class FlowOODDetector:
    """pytorch-ood's ``Detector`` interface over a :class:`FlowDensity` (or any object with
    ``score_samples``). pytorch-ood scores outliers *higher*, so every score is
    ``-detector.score_samples(x)``.

    Inputs are images as pytorch-ood's loaders give them: float tensors in [0, 1] (``ToTensor``,
    without mean/std normalisation) or uint8 pixels. A flow's "features" are its input, so
    ``fit_features`` / ``predict_features`` take images too. Use :func:`to_pytorch_ood`, which
    makes this a subclass of ``pytorch_ood.api.Detector`` when pytorch-ood is installed.
    """

    def __init__(self, detector: Any) -> None:
        self.detector = detector

    def fit(self, data_loader: Any, device: Any = None) -> FlowOODDetector:
        """Fit on in-distribution batches ``x`` or ``(x, y, ...)``: a fitted :class:`FlowDensity`
        only re-calibrates its scorer and threshold; an unfitted one trains."""
        batches = [batch[0] if isinstance(batch, (tuple, list)) else batch for batch in data_loader]
        return self.fit_features(torch.cat([torch.as_tensor(b) for b in batches]))

    def fit_features(self, x: Any, y: Any = None, device: Any = None) -> FlowOODDetector:
        images = as_images(x)
        if hasattr(self.detector, "calibrate") and hasattr(self.detector, "scorer_"):
            self.detector.calibrate(images)
        elif hasattr(self.detector, "fit"):
            self.detector.fit(images)
        return self

    def predict(self, x: Any) -> Tensor:
        """Outlier scores (higher = more OOD) as a float32 tensor, on ``x``'s device."""
        scores = torch.as_tensor(-np.asarray(self.detector.score_samples(as_images(x))), dtype=torch.float32)
        return scores.to(x.device) if isinstance(x, Tensor) else scores

    def predict_features(self, x: Any) -> Tensor:
        return self.predict(x)

    def __call__(self, x: Any) -> Tensor:
        return self.predict(x)


_ADAPTERS: dict[type, type] = {}


def to_pytorch_ood(detector: Any) -> FlowOODDetector:
    """Wrap a :class:`FlowDensity` (or a trained model, via :meth:`FlowDensity.from_model`) for
    pytorch-ood's benchmarks. With pytorch-ood installed (``pip install hybridflow[ood]``) the
    result is an instance of ``pytorch_ood.api.Detector``; without it, a plain
    :class:`FlowOODDetector` with the same methods.

    Example:
        >>> from hybridflow import create_backbone
        >>> flow = create_backbone("mixerflow_tiny", input_shape=(1, 8, 8), patch_size=2)
        >>> ood = to_pytorch_ood(flow)
        >>> ood.predict(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2])
    """
    if not hasattr(detector, "score_samples"):
        detector = FlowDensity.from_model(detector)
    try:  # imported lazily: pytorch-ood is an optional extra
        from pytorch_ood.api import Detector
    except ImportError:
        return FlowOODDetector(detector)
    if Detector not in _ADAPTERS:
        _ADAPTERS[Detector] = type("FlowOODDetector", (FlowOODDetector, Detector), {"__doc__": FlowOODDetector.__doc__})
    return _ADAPTERS[Detector](detector)
