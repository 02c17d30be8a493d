"""A circuit breaker per processor account: answer 503 fast while a processor keeps failing.

After ``threshold`` consecutive failures (timeouts, unreachable, server errors)
the circuit opens: calls fail at once with CircuitOpen for ``reset_seconds``.
Then one trial call is let through (half-open); its success closes the
circuit, its failure opens it again.  Declines are answers, not failures.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from service.adapters.processors.base import CircuitOpen


class CircuitBreaker:
    def __init__(self, *, threshold: int = 5, reset_seconds: float = 30.0, clock: Callable[[], float] = time.monotonic):
        self.threshold = threshold
        self.reset_seconds = reset_seconds
        self.clock = clock
        self.failures = 0
        self.opened_at: float | None = None
        self._trial_in_flight = False

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "half_open" if self.clock() - self.opened_at >= self.reset_seconds else "open"

    def before_call(self) -> None:
        """Raise CircuitOpen unless a call may go through now."""
        state = self.state
        if state == "open" or (state == "half_open" and self._trial_in_flight):
            waited = self.clock() - (self.opened_at or self.clock())
            raise CircuitOpen(
                "the processor is failing; calls are paused", retry_after=max(1.0, self.reset_seconds - waited)
            )
        if state == "half_open":
            self._trial_in_flight = True

    def release(self) -> None:
        """An admitted call that was not made after all: give its trial slot back."""
        self._trial_in_flight = False

    def record_success(self) -> None:
        self.failures = 0
        self.opened_at = None
        self._trial_in_flight = False

    def record_failure(self) -> None:
        self.failures += 1
        self._trial_in_flight = False
        if self.opened_at is not None or self.failures >= self.threshold:
            self.opened_at = self.clock()
