"""Ctrl-C (or SIGTERM, as a scheduler or ``kill`` sends it) at a step boundary: the first signal
becomes a flag that the training loop checks between steps, so a checkpoint never catches an update
half-done.

Example:
    >>> with DeferredInterrupt() as interrupt:
    ...     pass
    >>> interrupt.requested
    False
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

__all__ = ["DeferredInterrupt"]


class DeferredInterrupt:
    """Turn the first SIGINT or SIGTERM into ``requested = True``; a second one interrupts at once.
    Both end the run the same way: a checkpoint, then ``KeyboardInterrupt``. Signal handlers can
    only be set from the main thread: elsewhere this does nothing."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> DeferredInterrupt:
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous = {}
