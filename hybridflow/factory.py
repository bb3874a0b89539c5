"""Build a :class:`~hybridflow.hybrid.HybridModel` by backbone name, fitted to a dataset's image shape.

Example:
    >>> name = check_backbone_name("mixerflow")
    >>> options = fit_options(name, (1, 8, 8), {}, small=True)
    >>> options
    {'patch_size': 2, 'num_layers': 4, 'hidden': 32}
    >>> build_model(name, (1, 8, 8), num_classes=10, lam=1.0, options=options).input_shape
    (1, 8, 8)

Backbone options (``-o key=value`` on the command line) are checked against the backbone
constructor's type hints before anything is built or loaded:

    >>> check_backbone_options("mixerflow", {"hidden": "abc"})
    Traceback (most recent call last):
    ...
    hybridflow.backbones.options.BackboneOptionError: backbone option hidden='abc' of mixerflow_tiny must be an integer
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Mapping

from torch import nn

from .backbones import backbone_description, backbone_family, create_backbone, list_backbones
from .backbones.options import BackboneOptionError, backbone_option_types, check_backbone_options
from .backbones.registry import UnknownBackboneError, registered_name
from .hybrid import HEAD_INPUTS, HybridModel
from .seeding import seeded
from .training.config import SettingsError, TrainConfig, check_batch_size

__all__ = ["UnknownBackboneError", "BackboneOptionError", "check_backbone_name", "option_family", "fit_options",
           "build_model", "describe_backbones", "backbone_option_types", "check_backbone_options",
           "check_backbone_batch_size", "check_train_settings"]

#: The registered name a backbone name stands for (a family picks its default), or an
#: :class:`UnknownBackboneError` listing the choices.
check_backbone_name = registered_name


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
                options: dict[str, Any], pooled: bool = False, seed: int = 0,
                head_input: str | None = None) -> HybridModel:
    """A :class:`HybridModel` on backbone ``name`` whose initial weights depend only on ``seed``.

    The weights are drawn under :func:`~hybridflow.seeding.seeded`, so the caller's random state is
    left as it was. At least one class is kept (a pure flow still has a head).
    """
    with seeded(seed):
        return HybridModel(name, max(1, num_classes), lam=lam, input_shape=image_shape, pooled=pooled,
                           head_input=head_input, **options)


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


def check_backbone_batch_size(name: str, options: Mapping[str, Any], batch_size: int) -> None:
    """Refuse (``SettingsError``) a batch size backbone ``name`` with ``options`` cannot train on:
    one image where its conditioners hold BatchNorm layers (see
    :func:`~hybridflow.training.config.check_batch_size`). Cheap for ``batch_size >= 2``; for 1
    the backbone is built at its default image shape to see (if the options do not fit that
    shape, the check is left to :func:`~hybridflow.training.train`).

    Example:
        >>> check_backbone_batch_size("glow_tiny", {"hidden": 8, "num_steps": 1}, 1)  # ActNorm only: fine
        >>> check_backbone_batch_size("mixerflow_tiny", {"num_layers": 1}, 1)
        Traceback (most recent call last):
        ...
        hybridflow.training.config.SettingsError: batch_size must be at least 2 for a model with BatchNorm layers (BatchNorm1d), got 1
    """
    if isinstance(batch_size, numbers.Integral) and not isinstance(batch_size, bool) and batch_size >= 2:
        return
    key = check_backbone_name(name)
    try:
        with seeded(0):
            flow = create_backbone(key, **check_backbone_options(key, options))
    except (ValueError, TypeError):
        flow = None
    check_batch_size(flow if flow is not None else nn.Identity(), batch_size)


def _number(settings: Mapping[str, Any], key: str, low: float, high: float | None = None,
            low_open: bool = False) -> None:
    value = settings.get(key)
    ok = (isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
          and (value > low if low_open else value >= low) and (high is None or value <= high))
    if not ok:
        where = f"in ({low:g}, {high:g}]" if high is not None else f"{'>' if low_open else '>='} {low:g}"
        raise SettingsError(f"training setting {key} must be a finite number {where}, got {value!r}")


def check_train_settings(settings: Mapping[str, Any], device: str = "auto") -> dict[str, Any]:
    """Check a training run's merged settings (the keys of :data:`hybridflow.runs.TRAIN_DEFAULTS`
    plus ``backbone_options``) before any data loads; returns the backbone options checked
    against their types. Raises :class:`UnknownBackboneError`, :class:`BackboneOptionError`,
    ``SettingsError`` (non-finite ``lr``/``lam``, ``batch_size`` 1 with BatchNorm...) or
    ``DeviceError``, each naming the setting.

    Example:
        >>> from hybridflow.runs import TRAIN_DEFAULTS
        >>> check_train_settings({**TRAIN_DEFAULTS, "lam": float("nan")})
        Traceback (most recent call last):
        ...
        hybridflow.training.config.SettingsError: training setting lam must be a finite number >= 0, got nan
    """
    from .training.distributed import resolve_device

    name = check_backbone_name(settings["backbone"])
    options = check_backbone_options(name, settings.get("backbone_options") or {})
    _number(settings, "lam", 0.0)
    if settings.get("pseudo_labels") is not None and not settings["lam"] > 0:
        raise SettingsError("training setting pseudo_labels trains the head on guessed labels: it needs lam > 0, "
                            f"got lam={settings['lam']}")
    head_input = settings.get("head_input")
    if head_input is not None:
        if head_input not in HEAD_INPUTS:
            raise SettingsError(f"training setting head_input must be one of {', '.join(HEAD_INPUTS)}, got {head_input!r}")
        if settings.get("pooled") and head_input != "pooled":
            raise SettingsError(f"training settings pooled=true and head_input={head_input!r} contradict each other")
    if settings.get("labelled_fraction") is not None:
        _number(settings, "labelled_fraction", 0.0, 1.0, low_open=True)
    for key in ("limit", "val_limit"):
        value = settings.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1):
            raise SettingsError(f"training setting {key} must be a positive integer or None, got {value!r}")
    resolve_device(device)
    # the same fields train_run hands to TrainConfig, so their checks (with the field's name) run now
    TrainConfig(steps=settings["steps"], batch_size=settings["batch_size"], lr=settings["lr"],
                betas=tuple(settings["betas"]), warmup_steps=settings["warmup_steps"],
                grad_clip=settings["grad_clip"], ema_decay=settings["ema_decay"], log_every=settings["log_every"],
                eval_every=settings["eval_every"], checkpoint_every=settings["checkpoint_every"],
                seed=settings["seed"], labelled_per_batch=settings.get("labelled_per_batch"),
                pseudo_labels=settings.get("pseudo_labels"), translate=settings.get("translate") or 0,
                align_pseudo_labels=settings.get("align_pseudo_labels") or False,
                device=device, progress=False)
    check_backbone_batch_size(name, options, settings["batch_size"])
    return options
