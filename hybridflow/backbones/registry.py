"""A timm-style registry of backbone configurations.

Example:
    >>> from hybridflow import create_backbone, list_backbones
    >>> "mixerflow_cifar10" in list_backbones("mixerflow*")
    True
    >>> flow = create_backbone("glow_tiny", input_shape=(3, 32, 32))
    >>> flow.input_shape
    (3, 32, 32)
"""

from __future__ import annotations

import fnmatch
import re
from typing import Callable

from .base import FlowBackbone

__all__ = ["FAMILY_DEFAULTS", "UnknownBackboneError", "backbone_description", "backbone_family", "create_backbone",
           "list_backbones", "register_backbone", "registered_name"]

_REGISTRY: dict[str, Callable[..., FlowBackbone]] = {}

#: ``--backbone mixerflow`` means the family's small default configuration.
FAMILY_DEFAULTS = {"mixerflow": "mixerflow_tiny", "glow": "glow_tiny", "nsf_glow": "nsf_glow_tiny"}


class UnknownBackboneError(ValueError):
    """A backbone name that is neither registered nor a family."""


def registered_name(name: str) -> str:
    """The registered name ``name`` stands for (a family picks its default), or an
    :class:`UnknownBackboneError` listing the choices.

    Example:
        >>> registered_name("glow")
        'glow_tiny'
    """
    key = FAMILY_DEFAULTS.get(name, name) if isinstance(name, str) else name
    if not isinstance(key, str) or key not in _REGISTRY:
        raise UnknownBackboneError(f"unknown backbone {name!r}: choose one of {', '.join(list_backbones())} "
                                   f"(or a family: {', '.join(FAMILY_DEFAULTS)}); see `hybridflow backbones`")
    return key


def register_backbone(fn: Callable[..., FlowBackbone]) -> Callable[..., FlowBackbone]:
    """Register a factory under its function name; ``create_backbone(name)`` calls it."""
    _REGISTRY[fn.__name__] = fn
    return fn


def create_backbone(name: str, pretrained: str | None = None, **overrides) -> FlowBackbone:
    """Build a registered configuration, with keyword ``overrides`` (e.g. ``input_shape``), or
    with ``pretrained="mnist"`` load weights shipped in the package (see
    :mod:`hybridflow.pretrained`; they fix the architecture, so no overrides then).

    A family name (``"mixerflow"``, ``"glow"``) picks the family's small default. Each override
    is checked against the constructor's type hint first
    (:func:`~hybridflow.backbones.options.check_backbone_options`), so a wrong type is named.
    """
    if pretrained is not None:
        if overrides:
            raise ValueError(f"pretrained={pretrained!r} fixes the architecture: drop the overrides {sorted(overrides)}")
        from ..pretrained import pretrained_backbone  # late: it loads through the training package

        return pretrained_backbone(name, pretrained)
    from .options import check_backbone_options  # late: options builds user families through here

    key = registered_name(name)
    options = {k: v for k, v in overrides.items() if k != "input_shape"}
    if options:
        overrides = {**overrides, **check_backbone_options(key, options)}
    from .options import BackboneOptionError

    try:
        model = _REGISTRY[key](**overrides)
    except TypeError as error:  # an unknown override: name it, not the coupling function that refused it
        unknown = re.search(r"unexpected keyword argument '(\w+)'", str(error))
        what = (f"has no option {unknown.group(1)!r}" if unknown
                else f"does not accept these options {sorted(overrides)}: {error}")
        raise BackboneOptionError(f"backbone {key!r} {what}") from None
    except ValueError as error:  # a value the constructor refuses (hidden=0, a patch that does not divide...)
        if type(error) is not ValueError:  # the library's own kinds keep their type
            raise
        raise BackboneOptionError(f"backbone {key!r}: {error}") from None
    model.name = key
    return model


def list_backbones(pattern: str | None = None) -> list[str]:
    """Registered configuration names, sorted, optionally filtered by a shell-style ``pattern``."""
    names = sorted(_REGISTRY)
    return [n for n in names if fnmatch.fnmatch(n, pattern)] if pattern else names


def backbone_description(name: str) -> str:
    """The first paragraph of the registered factory's docstring, on one line.

    Example:
        >>> backbone_description("glow_tiny")
        'A CPU-sized Glow, the baseline beside ``mixerflow_tiny``.'
    """
    key = registered_name(name)
    return " ".join((_REGISTRY[key].__doc__ or "").strip().split("\n\n")[0].split())


def backbone_family(name: str) -> str:
    """``"mixerflow_tiny" -> "mixerflow"``, ``"nsf_glow_tiny" -> "nsf_glow"``: the longest family
    name that ``name`` starts with (else the part before the first underscore)."""
    name = FAMILY_DEFAULTS.get(name, name)
    families = [f for f in FAMILY_DEFAULTS if name == f or name.startswith(f + "_")]
    return max(families, key=len) if families else name.split("_")[0]
