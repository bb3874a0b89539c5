"""A registry of factories by name: the couplings and the conditioners that couplings build.

Example:
    >>> shapes = Registry("shape")
    >>> @shapes.register("square")
    ... def _square(side):
    ...     return side * side
    >>> shapes.create("square", 3), shapes.names()
    (9, ['square'])
    >>> shapes.create("circle", 1)
    Traceback (most recent call last):
    ...
    ValueError: unknown shape 'circle'; known: square
"""

from __future__ import annotations

from typing import Any, Callable

__all__ = ["Registry"]


class Registry:
    """Factories registered under names; ``kind`` names what they build in error messages."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._factories: dict[str, Callable[..., Any]] = {}

    def register(self, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """A decorator that registers its function (or class) as ``name``."""

        def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
            self._factories[name] = fn
            return fn

        return decorator

    def create(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Call the factory registered as ``name``; an unknown name lists the known ones."""
        if name not in self._factories:
            raise ValueError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}")
        return self._factories[name](*args, **kwargs)

    def names(self) -> list[str]:
        return sorted(self._factories)
