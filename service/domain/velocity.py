"""Velocity limits against card testing, as values: limits, per-agency overrides, the checks of one request.

Card-testing bots push thousands of stolen card numbers through a public payment
form to learn which ones work.  The vault answers with velocity limits: how many
tokens and charges one client address, one publishable key, one card
(fingerprint), one staff member and one agency may make in a period.  This
module holds only the shapes and rules; the counting happens atomically in
Redis (``service.adapters.velocity_store``) and the policy that decides which
limits apply to a request lives in ``service.velocity``.

A limit "N per period" is enforced as a token bucket (GCRA): up to N requests
at once, then one more every period/N.  Nothing about a card is in a limit's
answer: whichever limit refuses, the caller learns only "too many requests".
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final


class Action(enum.StrEnum):
    TOKENS = "tokens"
    CHARGES = "charges"


class Dimension(enum.StrEnum):
    """What a limit counts per: the client address, the credential, the card, the whole agency."""

    ADDRESS = "address"  # the client's address (publishable-key traffic only)
    KEY = "key"  # the publishable key
    STAFF = "staff"  # the staff member keying an order in the virtual terminal
    CARD = "card"  # the card's fingerprint
    AGENCY = "agency"  # everything the agency receives


class Scope(enum.StrEnum):
    """Which decline ratio tightens a limit: the agency's, the address's, or none."""

    AGENCY = "agency"
    ADDRESS = "address"
    NONE = "none"


#: An agency-wide tightening divides the aggregate limits; an address's tightening divides its own.
#: Card and staff limits never change with decline ratios, so a refusal says nothing about a card's history.
SCOPE_OF: Final[Mapping[Dimension, Scope]] = {
    Dimension.ADDRESS: Scope.ADDRESS,
    Dimension.KEY: Scope.AGENCY,
    Dimension.AGENCY: Scope.AGENCY,
    Dimension.CARD: Scope.NONE,
    Dimension.STAFF: Scope.NONE,
}

LIMIT_NAMES: Final = tuple(f"{action}.{dimension}" for action in Action for dimension in Dimension)
OFF: Final = "off"
MAX_COUNT: Final = 1_000_000_000
MAX_PERIOD_SECONDS: Final = 7 * 86400
_UNITS: Final = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_LIMIT_PATTERN: Final = re.compile(r"^\s*(\d{1,10})\s*/\s*(\d{1,7})\s*([smhd]?)\s*$")


class InvalidVelocityInput(ValueError):
    """A limit or a limit name an operator typed that cannot be used."""


def limit_name(action: Action, dimension: Dimension) -> str:
    return f"{action}.{dimension}"


@dataclass(frozen=True)
class Limit:
    """At most ``count`` requests at once, refilling at ``count`` per ``period_seconds``."""

    count: int
    period_seconds: int

    def __str__(self) -> str:
        for unit, seconds in (("d", 86400), ("h", 3600), ("m", 60)):
            if self.period_seconds % seconds == 0:
                return f"{self.count}/{self.period_seconds // seconds}{unit}"
        return f"{self.count}/{self.period_seconds}s"

    def tightened(self, factor: int) -> Limit:
        return Limit(max(1, self.count // factor), self.period_seconds)


def parse_limit(text: str) -> Limit | None:
    """``"10/10m"`` (count per period: seconds, or with s, m, h, d) as a Limit; ``"off"`` as None."""
    if text.strip().lower() == OFF:
        return None
    match = _LIMIT_PATTERN.match(text)
    if match is None:
        raise InvalidVelocityInput(f"limit {text!r}: write COUNT/PERIOD such as 10/10m, 600/60, 5/1h, or off")
    count, period = int(match.group(1)), int(match.group(2)) * _UNITS[match.group(3)]
    if not 1 <= count <= MAX_COUNT:
        raise InvalidVelocityInput(f"limit {text!r}: the count must be between 1 and {MAX_COUNT}")
    if not 1 <= period <= MAX_PERIOD_SECONDS:
        raise InvalidVelocityInput(f"limit {text!r}: the period must be between 1 second and 7 days")
    return Limit(count, period)


def format_limit(limit: Limit | None) -> str:
    return OFF if limit is None else str(limit)


def check_name(name: str) -> str:
    if name not in LIMIT_NAMES:
        raise InvalidVelocityInput(f"no limit {name!r}; the limits are {', '.join(LIMIT_NAMES)}")
    return name


@dataclass(frozen=True)
class VelocityOverrides:
    """An agency's own limits, by name (``tokens.address``...); None turns that limit off for the agency."""

    items: tuple[tuple[str, Limit | None], ...] = ()

    def get(self, name: str) -> tuple[bool, Limit | None]:
        """(whether the agency overrides ``name``, its limit)."""
        for key, value in self.items:
            if key == name:
                return True, value
        return False, None

    def changed(self, changes: Mapping[str, Limit | None], removed: Iterable[str] = ()) -> VelocityOverrides:
        kept = {k: v for k, v in self.items if k not in set(removed)}
        kept.update(changes)
        return VelocityOverrides(tuple(sorted(kept.items())))

    def public(self) -> dict[str, str]:
        return {name: format_limit(limit) for name, limit in self.items}

    def to_json(self) -> str:
        return json.dumps(self.public(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes | None) -> VelocityOverrides:
        if not text:
            return cls()
        raw = json.loads(text)
        return cls(tuple(sorted((check_name(k), parse_limit(v)) for k, v in raw.items())))


@dataclass(frozen=True)
class Check:
    """One limit applied to one request: its name, the bucket it counts in, and the limit in force."""

    name: str  # e.g. "tokens.address"; what a trip is counted and logged as
    bucket: str  # an opaque id of what is counted (a keyed hash of the address, key or card; "-" for the agency)
    limit: Limit
    scope: Scope


@dataclass(frozen=True)
class GatePlan:
    """Everything the Redis gate needs for one request of one agency, decided before it is sent."""

    agency_id: str
    now_ms: int
    checks: tuple[Check, ...]
    tighten_factor: int
    address: str | None = None  # the address bucket, whose own tightening applies
    count_attempt: bool = False  # charges: count the attempt for the decline ratio
    ratio_window_ms: int = 600_000

    @property
    def window(self) -> int:
        return self.now_ms // self.ratio_window_ms


@dataclass(frozen=True)
class DeclinePlan:
    """A declined charge to add to the agency's (and the address's) decline ratio."""

    agency_id: str
    now_ms: int
    address: str | None
    ratio_window_ms: int
    ratio_threshold: float
    min_attempts_agency: int
    min_attempts_address: int
    tighten_ms: int

    @property
    def window(self) -> int:
        return self.now_ms // self.ratio_window_ms

    @property
    def previous_weight(self) -> float:
        """Sliding-window estimate: the previous window counts for the part of it still inside the window."""
        return 1.0 - (self.now_ms % self.ratio_window_ms) / self.ratio_window_ms


@dataclass(frozen=True)
class Tightening:
    """What a decline did: whether it newly tightened the agency or the address, and the ratio seen."""

    agency: bool
    address: bool
    agency_attempts: int
    agency_declines: int
    address_attempts: int
    address_declines: int


class LimitExceeded(Exception):
    """The gate refused a request: which limits it tripped, and when the first of them frees up."""

    def __init__(self, names: tuple[str, ...], wait_ms: int) -> None:
        super().__init__(f"velocity limits reached: {', '.join(names)}")
        self.names = names
        self.wait_ms = wait_ms
