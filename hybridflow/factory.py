"""Build a :class:`~hybridflow.hybrid.HybridModel` by backbone name, fitted to a dataset's image shape.

Example:
    >>> name = check_backbone_name("mixerflow")
    >>> options = fit_options(name, (1, 8, 8), {}, small=True)
    >>> options
    {'patch_size': 2, 'num_layers': 4, 'hidden': 32}
    >>> build_model(name, (1, 8, 8), num_classes=10, lam=1.0, options=options).input_shape
    (1, 8, 8)
"""

from __future__ import annotations

from typing import Any


from .backbones import FAMILY_DEFAULTS, backbone_description, backbone_family, create_backbone, list_backbones
from .hybrid import HybridModel
from .seeding import seeded

__all__ = ["UnknownBackboneError", "check_backbone_name", "option_family", "fit_options", "build_model",
           "describe_backbones"]


class UnknownBackboneError(ValueError):
    """A backbone name that is neither registered nor a family."""


def check_backbone_name(name: str) -> str:
    """The registered name ``name`` stands for (a family picks its default), or an
    :class:`UnknownBackboneError` listing the choices.

    Example:
        >>> check_backbone_name("glow")
        'glow_tiny'
    """
    key = FAMILY_DEFAULTS.get(name, name)
    if key not in list_backbones():
        raise UnknownBackboneError(f"unknown backbone {name!r}: choose one of {', '.join(list_backbones())} "
                                   f"(or a family: {', '.join(FAMILY_DEFAULTS)}); see `hybridflow backbones`")
    return key


def option_family(name: str) -> str:
    """The family that decides a backbone's fitted options (:func:`fit_options`): its
    :func:`~hybridflow.backbones.backbone_family`, with the ``nsf`` family counted as Glow.

    Example:
        >>> option_family("glow_tiny"), option_family("mixerflow_tiny")
        ('glow', 'mixerflow')
    """
    return "glow" if backbone_family(name) == "nsf" else backbone_family(name)


def fit_options(name: str, image_shape: tuple[int, int, int], options: dict[str, Any],
                small: bool = False) -> dict[str, Any]:
    """Backbone overrides for ``image_shape``: a MixerFlow on images of 16 pixels or fewer a side
    gets 2x2 patches (4x4 would leave 4 patches on the 8x8 digits); ``small`` adds the probe's
    light settings (fewer, narrower layers) unless the user set them."""
    out = dict(options)
    family = option_family(name)
    _, h, w = image_shape
    if family == "mixerflow" and max(h, w) <= 16:
        out.setdefault("patch_size", 2)
    if small:
        light = dict(num_layers=4, hidden=32) if family == "mixerflow" else dict(num_steps=4, hidden=32)
        for k, v in light.items():
            out.setdefault(k, v)
    return out


def build_model(name: str, image_shape: tuple[int, int, int], num_classes: int, lam: float,
                options: dict[str, Any], pooled: bool = False, seed: int = 0) -> HybridModel:
    """A :class:`HybridModel` on backbone ``name`` whose initial weights depend only on ``seed``.

    The weights are drawn under :func:`~hybridflow.seeding.seeded`, so the caller's random state is
    left as it was. At least one class is kept (a pure flow still has a head).
    """
    with seeded(seed):
        return HybridModel(name, max(1, num_classes), lam=lam, input_shape=image_shape, pooled=pooled, **options)


def describe_backbones(pattern: str | None = None, count_params: bool = False) -> list[dict[str, Any]]:
    """One row per registered backbone matching ``pattern``: name, family, description (the first
    paragraph of its factory's docstring) and, with ``count_params``, its default input shape and
    parameter count (each backbone is built: slower).

    Example:
        >>> [row["family"] for row in describe_backbones("glow_tiny")]
        ['glow']
    """
    rows = []
    for name in list_backbones(pattern):
        row = dict(name=name, family=option_family(name), description=backbone_description(name).replace("``", ""))
        if count_params:
            flow = create_backbone(name)
            row.update(input_shape=list(flow.input_shape), params=flow.num_params)
        rows.append(row)
    return rows
