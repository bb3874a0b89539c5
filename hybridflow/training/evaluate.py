"""Validation figures of a hybrid model: mean bits/dim, accuracy and cross-entropy over a data
set, optionally split across the ranks of a process group.

(Named :func:`evaluate_model` so that it is not confused with :func:`hybridflow.ood.evaluate`,
which scores an OOD detector.)

Example:
    >>> from hybridflow.data import load_digits_data
    >>> from hybridflow.hybrid import HybridModel
    >>> model = HybridModel("mixerflow_tiny", 10, input_shape=(1, 8, 8), patch_size=2, num_layers=1)
    >>> figures = evaluate_model(model, load_digits_data(train=False).subset(range(20)))
    >>> figures["num_examples"], 0.0 <= figures["accuracy"] <= 1.0
    (20, True)
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..backbones.density import parameter_dtype_device
from ..data import ImageData
from ..flows import freeze, is_inference_copy
from ..hybrid import HybridModel
from .distributed import DistributedContext, all_reduce, current_context

__all__ = ["evaluate_model"]


@torch.no_grad()
def evaluate_model(model: HybridModel, data: ImageData, batch_size: int = 256,
                   device: str | torch.device | None = None, distributed: bool = False) -> dict[str, Any]:
    """Mean bits/dim and accuracy of ``model`` on ``data``, in batches, in evaluation mode.

    The figures come from an inference copy of ``model`` (:func:`hybridflow.freeze`; an
    inference copy is used as it is), so they are the fused path's numbers for the weights the
    model has now. bits/dim uses each image's own seeded dequantisation noise and covers every example;
    accuracy (midpoint dequantisation) covers the labelled ones (``None`` if there are none).
    ``distributed=True`` splits the work across the ranks of the process group (every rank
    must call it) and returns the same figures on all of them.

    Example:
        >>> evaluate_model(model, load_dataset("mnist", train=False))  # doctest: +SKIP
        {'bits_per_dim': 1.32, 'accuracy': 0.97, 'cross_entropy': 0.09, 'num_examples': 10000, ...}
    """
    device = torch.device(device) if device is not None else parameter_dtype_device(model)[1]
    model = model if is_inference_copy(model) else freeze(model)
    ctx = current_context() if distributed else DistributedContext()
    indices = torch.arange(ctx.rank, len(data), ctx.world_size, device="cpu")  # indexes the data, held on the CPU
    sums = [0.0, 0.0, 0.0, 0.0, 0.0]  # bpd, correct, cross-entropy, labelled, examples
    for start in range(0, len(indices), batch_size):
        chunk = indices[start : start + batch_size]
        x, y = data.images[chunk].to(device), data.labels[chunk].to(device)
        bpd = model.bits_per_dim(x)
        logits = model.predict_logits(x)
        labelled = y >= 0
        sums[0] += float(bpd.double().sum())
        sums[4] += len(chunk)
        if labelled.any():
            yl, ll = y[labelled], logits[labelled]
            sums[1] += float((ll.argmax(1) == yl).sum())
            sums[2] += float(F.cross_entropy(ll.double(), yl, reduction="sum"))
            sums[3] += float(labelled.sum())
    sums = all_reduce(sums, ctx, device)
    bpd_sum, correct, ce_sum, labelled, examples = sums
    return dict(
        bits_per_dim=bpd_sum / examples if examples else None,
        accuracy=correct / labelled if labelled else None,
        cross_entropy=ce_sum / labelled if labelled else None,
        num_examples=int(examples), num_labelled=int(labelled),
    )
