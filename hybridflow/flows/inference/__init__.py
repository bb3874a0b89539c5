"""The explicit inference path (:func:`freeze`), its kernels and folded layers, and the opt-in
``torch.compile`` of coupling layers for training."""

from .compiled import compile_failed, compiled_call
from .freeze import FROZEN_FORMS, contains_inference_copy, freeze, inference_model, is_inference_copy
from .frozen import FoldedConditioner, FrozenActNorm, FrozenLinear
from .kernels import fused_kernels_available

__all__ = [
    "FROZEN_FORMS", "FoldedConditioner", "contains_inference_copy", "FrozenActNorm", "FrozenLinear", "compile_failed", "compiled_call", "freeze",
    "inference_model",
    "fused_kernels_available", "is_inference_copy",
]
