r"""The estimator's evaluation: an inference copy of the fitted model, and the logits, head
features and ``log p(x)`` of pixel images computed from it in batches.

Everything :class:`~hybridflow.estimators.HybridFlowClassifier` predicts, transforms or scores
goes through :func:`model_outputs` on the copy that :func:`build_inference_model` makes after
every ``fit`` and ``partial_fit``: the library's explicit inference path
(:func:`hybridflow.freeze`) and its one density accounting (``HybridModel.log_prob``: each
image's own seeded evaluation noise), in the estimator's ``inference_dtype``.

Example:
    >>> from hybridflow.hybrid import HybridModel
    >>> model = HybridModel("mixerflow_tiny", 3, input_shape=(1, 8, 8), patch_size=2).eval()
    >>> fast = build_inference_model(model, "cpu", "float64")
    >>> out = model_outputs(fast, torch.zeros(5, 1, 8, 8, dtype=torch.uint8), logits=True, log_prob=True)
    >>> sorted(out), out["logits"].shape, out["log_prob"].dtype
    (['log_prob', 'logits'], (5, 3), dtype('float64'))
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..backbones.density import parameter_dtype_device
from ..flows import freeze
from ..hybrid import HybridModel

__all__ = ["INFERENCE_DTYPES", "build_inference_model", "model_outputs"]

#: The estimator's ``inference_dtype`` choices.
INFERENCE_DTYPES = {"float64": torch.float64, "float32": torch.float32}


def build_inference_model(model: HybridModel, device: torch.device | str, dtype: str) -> HybridModel:
    """An inference copy of ``model`` on ``device`` in ``dtype`` (a key of
    :data:`INFERENCE_DTYPES`), folded in that dtype; ``model`` itself stays as it is, ready to train on."""
    return freeze(model, dtype=INFERENCE_DTYPES[dtype], device=device)


@torch.no_grad()
def model_outputs(model: HybridModel, images: Tensor, batch_size: int = 256, logits: bool = False,
                  features: bool = False, log_prob: bool = False) -> dict[str, np.ndarray]:
    """The asked-for outputs of uint8 ``(N, C, H, W)`` ``images`` as float64 numpy arrays.

    ``logits`` and ``features`` (the head's input) use midpoint dequantisation; ``log_prob`` is
    ``log p(x)`` in nats of the integer image (``model.log_prob``, the one density accounting).
    """
    device = parameter_dtype_device(model)[1]
    out: dict[str, list[Tensor]] = {"logits": [], "features": [], "log_prob": []}
    for chunk in images.split(max(256, int(batch_size))):
        x = chunk.to(device)
        if logits or features:
            h = model.embed(x)
            if features:
                out["features"].append(h)
            if logits:
                out["logits"].append(model.head(h))
        if log_prob:
            out["log_prob"].append(model.log_prob(x))
    return {k: torch.cat(v).double().cpu().numpy() for k, v in out.items() if v}
