"""Pretrained models shipped inside the package: nothing is downloaded.

Each is a checkpoint folder under ``hybridflow/pretrained_weights/<name>/`` (the run's
``run.json``, ``checkpoint.json`` and ``model.safetensors``, loaded without running code and with
the config bound to the weights, like every checkpoint) plus ``card.json``, its model card: what
it was trained on, by which command, and its measured test figures. ``hybridflow pretrained``
prints the cards; anywhere a command takes ``--checkpoint`` it takes ``pretrained:<name>``.

Example:
    >>> [card["name"] for card in list_pretrained()]
    ['fashionmnist', 'fashionmnist-patches', 'mnist', 'mnist-hybrid']
    >>> model = load_pretrained("mnist")
    >>> model.input_shape, model.training
    ((1, 28, 28), False)
    >>> flow = pretrained_backbone("mixerflow", "mnist")  # the same weights, the flow alone
    >>> flow.num_params
    435337
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from .backbones import FlowBackbone
from .backbones.registry import backbone_family, registered_name
from .hybrid import HybridModel

__all__ = ["PRETRAINED_PREFIX", "UnknownPretrainedError", "list_pretrained", "pretrained_folder", "load_pretrained",
           "pretrained_backbone", "resolve_model_path", "named_model"]

#: ``--checkpoint pretrained:mnist`` names a shipped model instead of a folder.
PRETRAINED_PREFIX = "pretrained:"
_WEIGHTS = "pretrained_weights"
_CARD = "card.json"


def _root() -> Path:
    return Path(str(resources.files("hybridflow") / _WEIGHTS))


def list_pretrained() -> list[dict[str, Any]]:
    """The model card of every shipped model, sorted by name (``name``, ``backbone``,
    ``dataset``, ``kind``, ``parameters``, ``test_bits_per_dim``, ``test_accuracy``, ``command``...)."""
    root = _root()
    cards = [json.loads((folder / _CARD).read_text()) for folder in sorted(root.iterdir())
             if (folder / _CARD).is_file()] if root.is_dir() else []
    return sorted(cards, key=lambda card: card["name"])


class UnknownPretrainedError(ValueError):
    """``pretrained:NAME`` names no model shipped in the package (a command-line mistake: exit code 2)."""


def pretrained_folder(name: str) -> Path:
    """The checkpoint folder of the shipped model ``name`` (:class:`UnknownPretrainedError` listing the names)."""
    folder = _root() / str(name)
    if not (folder / _CARD).is_file():
        names = ", ".join(card["name"] for card in list_pretrained()) or "none"
        raise UnknownPretrainedError(f"no pretrained model {name!r}: choose one of {names} "
                                     "(see `hybridflow pretrained`)")
    return folder


def resolve_model_path(path: str | Path) -> Path:
    """``pretrained:<name>`` as its shipped folder; any other path unchanged.

    Example:
        >>> resolve_model_path("pretrained:mnist").name, resolve_model_path("runs/digits")
        ('mnist', PosixPath('runs/digits'))
    """
    text = str(path)
    if text.startswith(PRETRAINED_PREFIX):
        return pretrained_folder(text[len(PRETRAINED_PREFIX):])
    return Path(path)


def load_pretrained(name: str, device: str = "cpu") -> HybridModel:
    """The shipped model ``name`` as a :class:`HybridModel` in eval mode on ``device``."""
    from .training.checkpoint import load_checkpoint  # late: training imports much of the package

    model = load_checkpoint(pretrained_folder(name), map_location=device)
    return model.eval()


def pretrained_backbone(backbone: str, name: str, device: str = "cpu") -> FlowBackbone:
    """The flow of the shipped model ``name``, after checking that it is a ``backbone``
    (a registered name such as ``"mixerflow_wide"`` or a family such as ``"mixerflow"``):
    what ``create_backbone(backbone, pretrained=name)`` returns."""
    card = json.loads((pretrained_folder(name) / _CARD).read_text())
    key = registered_name(backbone)
    if backbone not in (card["backbone"], backbone_family(card["backbone"])) and key != card["backbone"]:
        raise ValueError(f"pretrained model {name!r} is a {card['backbone']}, not a {backbone}: ask for "
                         f"create_backbone({card['backbone']!r}, pretrained={name!r})")
    return load_pretrained(name, device).backbone


def named_model(model: Any) -> Any:
    """``"pretrained:<name>"`` as the shipped model (:func:`load_pretrained`); anything else unchanged.

    Example:
        >>> named_model("pretrained:mnist").input_shape, named_model(None)
        ((1, 28, 28), None)
    """
    if isinstance(model, str) and model.startswith(PRETRAINED_PREFIX):
        return load_pretrained(model[len(PRETRAINED_PREFIX):])
    return model
