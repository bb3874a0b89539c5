"""hybridflow: hybrid generative classifiers from one normalising flow.

``import hybridflow`` is light: the public names below load their module (and torch, or
scikit-learn for the estimators) on first use (PEP 562), so ``hybridflow --help`` and scripts that
only need one part do not pay for the rest.

Example:
    >>> import hybridflow
    >>> flow = hybridflow.create_backbone("mixerflow_tiny")
    >>> "mixerflow_cifar10" in hybridflow.list_backbones()
    True
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["FlowBackbone", "Glow", "MixerFlow", "create_backbone", "freeze", "list_backbones", "register_backbone",
           "HybridModel", "TrainConfig", "train", "HybridFlowClassifier", "load_pretrained"]

#: Where each public name lives; its module is imported on first access.
_EXPORTS = {
    "FlowBackbone": "backbones", "Glow": "backbones", "MixerFlow": "backbones", "create_backbone": "backbones",
    "list_backbones": "backbones", "register_backbone": "backbones", "freeze": "flows", "HybridModel": "hybrid",
    "TrainConfig": "training", "train": "training", "HybridFlowClassifier": "estimators",
    "load_pretrained": "pretrained",
}

if TYPE_CHECKING:  # what type checkers and IDEs see: the same names, imported eagerly
    from .backbones import FlowBackbone, Glow, MixerFlow, create_backbone, list_backbones, register_backbone
    from .estimators import HybridFlowClassifier
    from .flows import freeze
    from .hybrid import HybridModel
    from .pretrained import load_pretrained
    from .training import TrainConfig, train


def __getattr__(name: str) -> Any:
    """Import a public name's module on first access (and any subpackage, as ``hybridflow.data``)."""
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    if name in {m.name for m in pkgutil.iter_modules(__path__)}:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
