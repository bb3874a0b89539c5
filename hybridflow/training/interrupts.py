"""Ctrl-C at a step boundary: the first SIGINT becomes a flag that the training loop checks
between steps, so a checkpoint never catches an update half-done.

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
    """Turn the first Ctrl-C into ``requested = True``; a second one interrupts at once. Signal
    handlers can only be set from the main thread: elsewhere this does nothing."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> DeferredInterrupt:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
