"""Backbone options checked against the constructor's type hints, so that ``hidden="abc"`` is
refused with a message naming the option (``-o key=value`` on the command line, keyword overrides
of :func:`~hybridflow.backbones.create_backbone` in Python) instead of failing inside the model.

Example:
    >>> check_backbone_options("mixerflow", {"hidden": "abc"})
    Traceback (most recent call last):
    ...
    hybridflow.backbones.options.BackboneOptionError: backbone option hidden='abc' of mixerflow_tiny must be an integer
"""

from __future__ import annotations

import math
import numbers
import types
import typing
from typing import Any, Literal, Mapping, Union

__all__ = ["BackboneOptionError", "backbone_option_types", "check_backbone_options"]


class BackboneOptionError(ValueError):
    """A backbone option of the wrong type or value (the message names the option and the type it
    needs), or one that must not be set by hand (``input_shape`` comes from the data)."""


def _family_classes() -> dict[str, type]:
    """The class each built-in family's factories build (imported late: the families import this)."""
    from .glow import Glow
    from .mixerflow import MixerFlow

    return {"mixerflow": MixerFlow, "glow": Glow, "nsf_glow": Glow}


def backbone_option_types(name: str) -> dict[str, Any]:
    """The type hint of every keyword option the backbone ``name`` takes (``input_shape`` left out).

    Example:
        >>> backbone_option_types("glow")["num_steps"]
        <class 'int'>
    """
    from .registry import backbone_family, create_backbone, registered_name

    key = registered_name(name)
    cls = _family_classes().get(backbone_family(key))
    if cls is None:  # a user-registered family: build it once to see its class
        cls = type(create_backbone(key))
    hints = typing.get_type_hints(cls.__init__)
    for skip in ("return", "input_shape"):
        hints.pop(skip, None)
    return hints


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is type(None):
        return "null"
    if origin is Literal:
        return "one of " + ", ".join(map(repr, args))
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is tuple:
        return f"a list of {len(args)} {_describe(args[0]).removeprefix('an ').removeprefix('a ')}s (e.g. [2, 2])"
    return {int: "an integer", float: "a finite number", bool: "true or false", str: "a string"}.get(
        hint, getattr(hint, "__name__", str(hint)))


def _coerce(value: Any, hint: Any) -> Any:
    """``value`` as type ``hint`` wants it; ``TypeError`` when it does not fit."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is type(None):
        if value is None:
            return None
    elif origin is Literal:
        if value in args:
            return value
    elif origin in (Union, types.UnionType):
        for arg in args:
            try:
                return _coerce(value, arg)
            except TypeError:
                continue
    elif origin is tuple:
        if isinstance(value, (list, tuple)) and len(value) == len(args):
            return tuple(_coerce(v, a) for v, a in zip(value, args))
    elif hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return int(value)
    elif hint is float:
        if isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    else:
        return value  # a hint this check does not know: the constructor judges
    raise TypeError(hint)


def check_backbone_options(name: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` for backbone ``name``, each checked against the constructor's type hint
    (lists become tuples); :class:`BackboneOptionError` names the first that does not fit. Options
    the constructor does not name (a coupling's ``num_bins``...) pass through unchanged.

    Example:
        >>> check_backbone_options("mixerflow", {"patch_size": [2, 2], "hidden": 16})
        {'patch_size': (2, 2), 'hidden': 16}
    """
    from .registry import registered_name

    key = registered_name(name)
    hints = backbone_option_types(key)
    out: dict[str, Any] = {}
    for option, value in options.items():
        if option == "input_shape":
            raise BackboneOptionError("backbone option input_shape cannot be set: it comes from the data's images")
        if option not in hints:
            out[option] = value
            continue
        try:
            out[option] = _coerce(value, hints[option])
        except TypeError:
            raise BackboneOptionError(f"backbone option {option}={value!r} of {key} must be "
                                      f"{_describe(hints[option])}") from None
    return out
