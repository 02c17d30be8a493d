"""Time as the service sees it, injectable so tests can move it without sleeping."""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], float]
"""Seconds since the epoch, like time.time."""

system_clock: Clock = time.time


def millis(seconds: float) -> int:
    return int(seconds * 1000)
