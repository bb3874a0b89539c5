"""hybridflow: hybrid generative classifiers from one normalising flow.

Example:
    >>> import hybridflow
    >>> flow = hybridflow.create_backbone("mixerflow_tiny")
    >>> "mixerflow_cifar10" in hybridflow.list_backbones()
    True
"""

from .backbones import FlowBackbone, Glow, MixerFlow, create_backbone, list_backbones, register_backbone
from .flows import freeze
from .hybrid import HybridModel
from .training import TrainConfig, train
from .estimators import HybridFlowClassifier

__version__ = "0.1.0"

__all__ = ["FlowBackbone", "Glow", "MixerFlow", "create_backbone", "freeze", "list_backbones", "register_backbone",
           "HybridModel", "TrainConfig", "train", "HybridFlowClassifier"]
