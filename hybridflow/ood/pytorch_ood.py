"""pytorch-ood's ``Detector`` interface over a :class:`~hybridflow.ood.detector.FlowDensity`.

pytorch-ood's detectors score outliers *higher*, the opposite of scikit-learn's ``score_samples``,
so the adapter negates every score. pytorch-ood is an optional extra
(``pip install hybridflow[ood]``): without it the adapter is a plain object with the same methods.

What a pytorch-ood pipeline feeds it: float tensors from ``transforms.ToTensor()`` (pixels / 255
in [0, 1]) or uint8 pixels are the images the flow models. ``transforms.Normalize(mean, std)``
is undone when the adapter is told ``normalization=(mean, std)``; input that is still normalised
(values outside [0, 1]) is refused with a message naming the transform to drop. Resizing or
colour transforms must give the image shape the flow was trained on.

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

from typing import Any, Sequence

import numpy as np
import torch
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted
from torch import Tensor

from .detector import FlowDensity

__all__ = ["FlowOODDetector", "to_pytorch_ood"]


def _not_fitted(message: str) -> Exception:
    """pytorch-ood's ``RequiresFittingException`` when it is installed, else scikit-learn's."""
    try:
        from pytorch_ood.api import RequiresFittingException
    except ImportError:
        return NotFittedError(message)
    return RequiresFittingException(message)


class FlowOODDetector:
    """pytorch-ood's ``Detector`` interface over a :class:`FlowDensity` (or any scikit-learn
    estimator with ``score_samples``). pytorch-ood scores outliers *higher*, so every score is
    ``-detector.score_samples(x)``.

    Args:
        detector: a fitted or unfitted :class:`FlowDensity`. Unfitted, ``fit`` trains it
            (``requires_fit`` is ``True`` until then); fitted, ``fit`` only re-calibrates its
            scorer statistics and threshold on the loader's data.
        normalization: ``(mean, std)`` of a ``transforms.Normalize`` in the pipeline, per channel:
            inputs are mapped back to ``x * std + mean`` before scoring. ``None``: inputs must be
            ``ToTensor`` floats in [0, 1] or uint8 pixels.

    A flow's "features" are its input, so ``fit_features`` / ``predict_features`` take images
    too. Use :func:`to_pytorch_ood`, which makes this a subclass of pytorch-ood's ``Detector``
    when pytorch-ood is installed.
    """

    def __init__(self, detector: Any, normalization: tuple[Sequence[float], Sequence[float]] | None = None) -> None:
        self.detector = detector
        self.normalization = normalization

    @property
    def requires_fit(self) -> bool:  # a class attribute in pytorch-ood; a property here: it changes at fit
        """Whether ``fit`` must be called before scoring: true until the detector is fitted."""
        try:
            check_is_fitted(self.detector)
        except NotFittedError:
            return True
        return False

    def _images(self, x: Any) -> Any:
        """Undo ``Normalize``, refuse input that is still normalised, leave the rest to the detector."""
        if not isinstance(x, Tensor) or not x.is_floating_point():
            return x
        x = x.detach().cpu()
        if self.normalization is not None:
            mean, std = (torch.as_tensor(v, dtype=x.dtype).reshape(1, -1, 1, 1) for v in self.normalization)
            x = x * std + mean
            x = torch.where((x > -1e-4) & (x < 0), torch.zeros_like(x), x)  # rounding of the inverse map
            x = torch.where((x < 1 + 1e-4) & (x > 1), torch.ones_like(x), x)
        image_input = getattr(self.detector, "input_kind_", "images") == "images"
        if image_input and x.numel() and (float(x.min()) < 0 or float(x.max()) > 1):
            raise ValueError(
                f"the flow models pixels, but got floats in [{float(x.min()):.3g}, {float(x.max()):.3g}]: these "
                "look normalised by transforms.Normalize(mean, std). Drop Normalize from the pipeline (keep "
                "ToTensor: floats in [0, 1]) or pass normalization=(mean, std) to to_pytorch_ood")
        return x

    def fit(self, data_loader: Any) -> FlowOODDetector:
        """Fit on in-distribution batches ``x`` or ``(x, y, ...)`` (labels are not used)."""
        batches = [batch[0] if isinstance(batch, (tuple, list)) else batch for batch in data_loader]
        if not batches:
            raise ValueError("fit got an empty data loader: need in-distribution batches")
        return self.fit_features(torch.cat([torch.as_tensor(b) for b in batches]), None)

    def fit_features(self, x: Tensor, y: Tensor | None = None) -> FlowOODDetector:
        """Fit on in-distribution images ``x`` (``y`` is not used): an unfitted detector trains, a
        fitted :class:`FlowDensity` only re-calibrates its scorer and threshold."""
        x = self._images(x)
        if not self.requires_fit and hasattr(self.detector, "calibrate"):
            self.detector.calibrate(x)
        else:
            self.detector.fit(x)
        return self

    def predict(self, x: Tensor) -> Tensor:
        """Outlier scores (higher = more OOD) as a float32 tensor of shape ``(B,)``, on ``x``'s device."""
        if self.requires_fit:
            raise _not_fitted(f"this {type(self.detector).__name__} is not fitted: call fit(loader) before predict()")
        scores = -np.asarray(self.detector.score_samples(self._images(x)))
        out = torch.as_tensor(scores, dtype=torch.float32)
        return out.to(x.device) if isinstance(x, Tensor) else out

    def predict_features(self, x: Tensor) -> Tensor:
        """The same as :meth:`predict`: a flow's features are its input."""
        return self.predict(x)

    def __call__(self, x: Tensor) -> Tensor:
        return self.predict(x)


_ADAPTERS: dict[type, type] = {}


def to_pytorch_ood(detector: Any, normalization: tuple[Sequence[float], Sequence[float]] | None = None
                   ) -> FlowOODDetector:
    """Wrap a :class:`FlowDensity` (or a trained model, via :meth:`FlowDensity.from_model`) for
    pytorch-ood's benchmarks. With pytorch-ood installed (``pip install hybridflow[ood]``) the
    result is an instance of ``pytorch_ood.api.Detector`` (its ``FeaturesDetector`` from 0.3 on);
    without it, a plain :class:`FlowOODDetector` with the same methods. ``normalization``: see
    :class:`FlowOODDetector`.

    Example:
        >>> from hybridflow import create_backbone
        >>> flow = create_backbone("mixerflow_tiny", input_shape=(1, 8, 8), patch_size=2)
        >>> ood = to_pytorch_ood(flow)
        >>> ood.requires_fit, ood.predict(torch.zeros(2, 1, 8, 8)).shape
        (False, torch.Size([2]))
    """
    if not hasattr(detector, "score_samples"):
        detector = FlowDensity.from_model(detector)
    try:  # imported lazily: pytorch-ood is an optional extra
        from pytorch_ood import api
    except ImportError:
        return FlowOODDetector(detector, normalization)
    base = getattr(api, "FeaturesDetector", api.Detector)  # 0.2 has only Detector
    if base not in _ADAPTERS:
        # The adapter's own methods come first: pytorch-ood's wrap predict_features to move
        # tensors to a device the adapter does not have.
        _ADAPTERS[base] = type("FlowOODDetector", (FlowOODDetector, base), {"__doc__": FlowOODDetector.__doc__})
    return _ADAPTERS[base](detector, normalization)
