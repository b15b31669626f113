"""Waiting for the event loop in tests: timers fire, queued signals arrive, and nothing else blocks."""

from __future__ import annotations

import time
from collections.abc import Callable

from PySide6.QtTest import QTest


def waitUntil(condition: Callable[[], bool], timeout_s: float, step_ms: int = 20) -> None:
    """Run the event loop until ``condition()`` holds; AssertionError after ``timeout_s`` seconds."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"still not true after {timeout_s:g} s: {condition}")
        QTest.qWait(step_ms)
