"""Evaluating a model over many images: the one place where OOD code reads a model's density
(:func:`log_likelihood`) or its class probabilities (:func:`class_probabilities`).

Every density scorer, the detector's ``score`` and the benchmarks go through
:func:`log_likelihood`. Both functions run the explicit inference path: a live model is frozen
first (:func:`inference_model`), an inference copy is used as it is; scorers freeze their model
once, when they are built.

Example:
    >>> import numpy as np
    >>> from hybridflow import create_backbone
    >>> flow = create_backbone("mixerflow_tiny", input_shape=(1, 8, 8), patch_size=2)
    >>> log_likelihood(flow, np.zeros((3, 1, 8, 8), np.uint8), batch_size=2).shape
    (3,)
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import Tensor, nn

from ..backbones.density import parameter_dtype_device
from ..data import as_images
from ..flows import inference_model

__all__ = ["as_model_input", "class_probabilities", "log_likelihood", "model_device", "split_model"]


def split_model(model: Any) -> tuple[Any, Any]:
    """``(density, full model)``: a hybrid model's ``.backbone`` holds the density; a flow (anything
    with ``log_prob`` and no such backbone) is both.

    Example:
        >>> from hybridflow import create_backbone
        >>> flow = create_backbone("glow_tiny")
        >>> split_model(flow) == (flow, flow)
        True
    """
    if hasattr(getattr(model, "backbone", None), "log_prob"):
        return model.backbone, model
    if hasattr(model, "log_prob"):
        return model, model
    raise TypeError(f"expected a backbone name, a FlowBackbone or a model with .backbone or .log_prob, "
                    f"got {type(model).__name__}")


def as_model_input(images: Any, model: Any) -> Tensor:
    """``images`` as the uint8 ``(N, C, H, W)`` tensor ``model`` takes; the model's ``input_shape``
    (when it has one) reads flattened ``(N, D)`` input and rejects images of another shape. A
    model over tabular rows (``num_features`` and no ``input_shape``, a
    :class:`~hybridflow.ood.tabular.TabularFlow`) takes ``(N, D)`` float64 features instead.

    Example:
        >>> import numpy as np
        >>> from hybridflow import create_backbone
        >>> flow = create_backbone("mixerflow_tiny", input_shape=(1, 8, 8), patch_size=2)
        >>> as_model_input(np.zeros((2, 64), np.uint8), flow).shape
        torch.Size([2, 1, 8, 8])
    """
    num_features = getattr(model, "num_features", None)
    if getattr(model, "input_shape", None) is None and isinstance(num_features, int):
        # A flow over tabular rows (TabularFlow): real-valued (N, D) features, no pixels.
        x = images.detach().cpu() if isinstance(images, Tensor) else torch.from_numpy(np.asarray(images, np.float64))
        if x.ndim != 2 or x.shape[1] != num_features:
            raise ValueError(f"this flow models rows of {num_features} features, got input of shape {tuple(x.shape)}")
        return x.to(torch.float64)
    return as_images(images, getattr(model, "input_shape", None))


def model_device(model: Any) -> torch.device:
    """The device of ``model``'s first floating parameter or buffer (an inference copy holds its
    weights as buffers); the CPU for a model without any.

    Example:
        >>> model_device(torch.nn.Linear(2, 2))
        device(type='cpu')
    """
    if isinstance(model, nn.Module):
        return parameter_dtype_device(model)[1]
    return torch.device("cpu")


@contextmanager
def _eval_mode(model: Any) -> Iterator[None]:
    """Evaluation mode (seeded dequantisation, BatchNorm running stats) and no_grad; restores the
    caller's mode afterwards."""
    was_training = isinstance(model, nn.Module) and model.training
    if isinstance(model, nn.Module):
        model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        if was_training:
            model.train()


def _batched(model: Any, images: Tensor, fn: Callable[[Tensor], Any], batch_size: int) -> np.ndarray:
    """``fn`` over ``images`` in batches on the model's device, in evaluation mode, as float64."""
    device = model_device(model)
    out = []
    with _eval_mode(model):
        for batch in images.split(int(batch_size)):
            value = fn(batch.to(device))
            out.append(np.asarray(value.detach().cpu().double() if isinstance(value, Tensor) else value,
                                  dtype=np.float64))
    return np.concatenate(out)


def log_likelihood(model: Any, images: Any, batch_size: int = 256) -> np.ndarray:
    """Per-image ``model.log_prob`` in nats, batched, in evaluation mode without gradients.

    Example:
        >>> import numpy as np
        >>> from hybridflow import create_backbone
        >>> flow = create_backbone("mixerflow_tiny", input_shape=(1, 8, 8), patch_size=2)
        >>> log_likelihood(flow, np.zeros((3, 1, 8, 8), np.uint8)).shape
        (3,)
    """
    model = inference_model(model)
    return _batched(model, as_model_input(images, model), model.log_prob, batch_size)


def class_probabilities(model: Any, images: Any, batch_size: int = 256) -> np.ndarray:
    """Per-image class probabilities ``(N, K)`` of a hybrid model (anything with
    ``predict_proba``), batched, in evaluation mode without gradients.

    Example:
        >>> from hybridflow import HybridModel
        >>> model = HybridModel("mixerflow_tiny", num_classes=3, input_shape=(1, 8, 8), patch_size=2)
        >>> class_probabilities(model, torch.zeros(2, 1, 8, 8, dtype=torch.uint8)).shape
        (2, 3)
    """
    if not hasattr(model, "predict_proba"):
        raise TypeError(f"{type(model).__name__} has no predict_proba: max_softmax and entropy need a "
                        "hybrid model (a classifier head), not a bare backbone")
    # The image shape is the density's: a hybrid model's backbone knows it.
    images = as_model_input(images, getattr(model, "backbone", model))
    model = inference_model(model)
    return _batched(model, images, model.predict_proba, batch_size)
