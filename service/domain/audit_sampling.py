"""Which of a flood of identical refusals get an audit record of their own.

Failed API authentication must be recorded (PCI DSS 10.2.1.4), but anyone on
the internet can send a million bad keys, and a record per attempt would let
them fill the audit store (and with it Redis) at will.  So within each
minute, per process, refusals are counted per (chain, source address, action, code):
the 1st, 10th, 100th, 1000th... of a kind are recorded as they happen, and
when the minute is over the exact total of every kind whose count was not
already recorded goes in one summary record (written when the next refusal
arrives, so a flood that stops still has its order of magnitude on record).
At most ``max_sources`` distinct kinds are tracked per minute; beyond that
new addresses share one bucket per (chain, action, code), recorded the same way.

Worst case per process and minute: about ``max_sources`` records plus a
handful of thresholds and summaries, whatever the attacker sends.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

MANY_SOURCES: Final = "*"


@dataclass(frozen=True)
class FloodKey:
    chain_agency: str  # the agency id, "" for the system chain
    source: str  # client address, or MANY_SOURCES for the overflow bucket
    action: str  # the audit action (api.auth, api.authorization)
    code: str  # the refusal's problem code


@dataclass(frozen=True)
class Sample:
    """One record to write: ``count`` refusals of ``key`` in the minute starting ``window_start``."""

    key: FloodKey
    count: int
    window_start: float
    summary: bool  # True: the minute's final total; False: the count just reached 1, 10, 100...

    def describe(self) -> str:
        whence = "from many addresses" if self.key.source == MANY_SOURCES else "from this address"
        if self.summary:
            return f"{self.key.code}: {self.count} in the minute {whence}"
        if self.count == 1 and self.key.source != MANY_SOURCES:
            return self.key.code
        return f"{self.key.code}: {self.count} so far this minute {whence} (1st, 10th, 100th... recorded)"


def _power_of_ten(n: int) -> bool:
    while n >= 10 and n % 10 == 0:
        n //= 10
    return n == 1


@dataclass
class _Tally:
    count: int = 0
    recorded: int = 0


class FloodSampler:
    def __init__(self, *, window_seconds: float = 60.0, max_sources: int = 100) -> None:
        self.window_seconds = window_seconds
        self.max_sources = max_sources
        self._window = -1
        self._tallies: dict[FloodKey, _Tally] = {}

    def note(self, key: FloodKey, now: float) -> list[Sample]:
        """Count one refusal; the records to write because of it (often none)."""
        window = int(now // self.window_seconds)
        samples: list[Sample] = []
        if window != self._window:
            samples += self._summaries()
            self._window, self._tallies = window, {}
        if key not in self._tallies and len(self._tallies) >= self.max_sources:
            key = FloodKey(key.chain_agency, MANY_SOURCES, key.action, key.code)
        tally = self._tallies.setdefault(key, _Tally())
        tally.count += 1
        if _power_of_ten(tally.count):
            tally.recorded = tally.count
            samples.append(Sample(key, tally.count, self._window * self.window_seconds, summary=False))
        return samples

    def _summaries(self) -> list[Sample]:
        start = self._window * self.window_seconds
        return [
            Sample(key, tally.count, start, summary=True)
            for key, tally in self._tallies.items()
            if tally.count > tally.recorded
        ]
