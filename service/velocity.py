"""Card-testing defence: which velocity limits a request meets, and what happens when one refuses.

The HTTP layer (and the staff terminal) describe who is asking as a
:class:`Subject`; the token and charge use cases ask :meth:`Velocity.plan` for
the request's gate and hand it to the store, whose write script checks it in
the same round trip.  When the gate refuses, :meth:`Velocity.enforced` logs
the trip (limit names and agency, never a card or a fingerprint), records it
in the audit trail and raises ``TooManyRequests``: 429 with the same body and
the same ``Retry-After`` whichever limit tripped, so the answer says nothing
about the card.  Declined charges feed the decline ratios that tighten an
agency's or an address's limits for a while (:meth:`Velocity.record_decline`).

Which limits apply:

- publishable-key requests (the storefront's page and the hosted card form):
  per client address, per publishable key, per card, per agency;
- secret-key requests (the agency's own backend, one address for all its
  shoppers): per card and per agency;
- staff orders (an authenticated employee at the virtual terminal): per staff
  member, per card, per agency; never per address, since a call centre shares one.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

import structlog

from service.adapters.keyring import Keyring
from service.adapters.velocity_store import VelocityStore
from service.audit import Actor, Auditor
from service.clock import Clock, millis
from service.domain.agencies import Agency
from service.domain.audit import Outcome
from service.domain.velocity import (
    LIMIT_NAMES,
    SCOPE_OF,
    Action,
    Check,
    DeclinePlan,
    Dimension,
    GatePlan,
    Limit,
    LimitExceeded,
    VelocityOverrides,
    limit_name,
    parse_limit,
)
from service.errors import StoreUnavailable, TooManyRequests
from service.metrics import record_rate_limit_trip
from service.settings import VelocitySettings

log = structlog.get_logger("cardvault.velocity")

TRIP_ACTION = "velocity.trip"
TIGHTEN_ACTION = "velocity.tighten"
AGENCY_BUCKET = "-"
BUCKET_PERSON = b"cv-velocity"
#: The order a gate's checks are listed (and tripped limits named) in.
CHECK_ORDER = (Dimension.ADDRESS, Dimension.KEY, Dimension.STAFF, Dimension.CARD, Dimension.AGENCY)
IN_FORCE_CACHE_MAX = 1024
#: The limits on one action that are not off: (dimension, limit name, limit), in CHECK_ORDER.
InForce = tuple[tuple[Dimension, str, Limit], ...]


@dataclass(frozen=True, repr=False)
class Subject:
    """Who is asking, as far as velocity limits care.  ``key`` is a raw API key: hashed before any use."""

    source: str  # the client address, for the log and the audit trail ("-" when unknown)
    address: str | None = None  # counted per address (publishable-key traffic)
    key: str | None = None  # counted per publishable key
    staff: str | None = None  # counted per staff member
    actor: Actor | None = None  # who the audit trail names (staff); anonymous otherwise

    def __repr__(self) -> str:
        return f"Subject(source={self.source!r}, staff={self.staff!r})"


def default_limits(settings: VelocitySettings) -> dict[str, Limit | None]:
    """The settings' limits by name (``tokens.address`` is ``velocity.tokens_per_address``)."""
    return {
        limit_name(action, dimension): parse_limit(getattr(settings, f"{action}_per_{dimension}"))
        for action in Action
        for dimension in Dimension
    }


def effective_limits(defaults: Mapping[str, Limit | None], overrides: VelocityOverrides) -> dict[str, Limit | None]:
    """The limits in force for an agency: its overrides over the defaults."""
    limits = dict(defaults)
    for name in LIMIT_NAMES:
        overridden, limit = overrides.get(name)
        if overridden:
            limits[name] = limit
    return limits


@dataclass(frozen=True)
class VelocityState:
    """What an operator sees: limits in force, tightening, trip counts."""

    limits: dict[str, Limit | None]
    overrides: VelocityOverrides
    tightened_until_ms: int
    tightened_addresses: int
    trips: dict[str, int]


class Velocity:
    def __init__(
        self,
        store: VelocityStore,
        settings: VelocitySettings,
        clock: Clock,
        keyring: Keyring,
        auditor: Auditor | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock
        self.keyring = keyring
        self.auditor = auditor
        self.defaults = default_limits(settings)
        self._in_force: dict[tuple[Action, VelocityOverrides], InForce] = {}

    # -- the gate ------------------------------------------------------------------------------
    def _bucket(self, agency_id: str, dimension: Dimension, value: str) -> str:
        """A keyed hash (under the pepper) of what a bucket counts: no address, key or fingerprint in Redis."""
        return self.keyring.mac(f"{agency_id}\0{dimension}\0{value}".encode(), person=BUCKET_PERSON)[:32]

    def _limits_in_force(self, action: Action, overrides: VelocityOverrides) -> InForce:
        """(dimension, limit name, limit) of every limit on ``action`` that is not off, in check order.

        Worked out once per action and distinct set of agency overrides (a frozen value; an agency's new
        overrides are a new one), not on every request; the table is emptied if it ever holds
        ``IN_FORCE_CACHE_MAX`` of them.
        """
        key = (action, overrides)
        found = self._in_force.get(key)
        if found is None:
            limits = effective_limits(self.defaults, overrides)
            found = tuple(
                (dimension, limit_name(action, dimension), limit)
                for dimension in CHECK_ORDER
                if (limit := limits[limit_name(action, dimension)]) is not None
            )
            if len(self._in_force) >= IN_FORCE_CACHE_MAX:
                self._in_force.clear()
            self._in_force[key] = found
        return found

    def plan(
        self, action: Action, agency: Agency, subject: Subject | None, fingerprint: str | None = None
    ) -> GatePlan | None:
        """The gate of one request, or None when velocity limits are off (or nobody is asking: internal calls)."""
        if subject is None or not self.settings.enabled:
            return None
        values = {
            Dimension.ADDRESS: subject.address,
            Dimension.KEY: subject.key,
            Dimension.STAFF: subject.staff,
            Dimension.CARD: fingerprint,
            Dimension.AGENCY: AGENCY_BUCKET,
        }
        address = self._bucket(agency.id, Dimension.ADDRESS, subject.address) if subject.address else None
        checks = []
        for dimension, name, limit in self._limits_in_force(action, agency.velocity):
            value = values[dimension]
            if value is None:
                continue
            if dimension is Dimension.AGENCY:
                bucket = AGENCY_BUCKET
            elif dimension is Dimension.ADDRESS and address is not None:
                bucket = address  # the same keyed hash: computed once
            else:
                bucket = self._bucket(agency.id, dimension, value)
            checks.append(Check(name, bucket, limit, SCOPE_OF[dimension]))
        return GatePlan(
            agency_id=agency.id,
            now_ms=millis(self.clock()),
            checks=tuple(checks),
            tighten_factor=self.settings.tighten_factor,
            address=address,
            count_attempt=action is Action.CHARGES,
            ratio_window_ms=self.settings.decline_window_seconds * 1000,
        )

    def counts_cards(self, action: Action, agency: Agency, subject: Subject | None) -> bool:
        """Whether a request of ``subject`` would be held to a per-card limit (worth reading the card for)."""
        limits = effective_limits(self.defaults, agency.velocity)
        return subject is not None and self.settings.enabled and limits[limit_name(action, Dimension.CARD)] is not None

    @contextlib.asynccontextmanager
    async def enforced(self, plan: GatePlan | None, subject: Subject | None) -> AsyncIterator[None]:
        """Turn the gate's refusal into a logged, audited 429 that says nothing about which limit refused."""
        try:
            yield
        except LimitExceeded as exc:
            if plan is None or subject is None:
                raise
            await self._report_trip(plan, subject, exc)
            raise TooManyRequests(retry_after=self.settings.retry_after_seconds) from None

    async def _report_trip(self, plan: GatePlan, subject: Subject, exc: LimitExceeded) -> None:
        limits = ",".join(exc.names)
        log.warning("velocity limit reached", agency=plan.agency_id, limits=limits, source=subject.source)
        for name in exc.names:
            record_rate_limit_trip(name)  # the limit's name (tokens.card, ...), never who or what tripped it
        # A bot can trip limits at will: sample the trips (1st, 10th, 100th... per address and minute,
        # plus the minute's total) so the refusals cannot flood the audit store; the counters above count all.
        if self.auditor is None:
            return
        try:
            await self.auditor.record_refusal(
                subject.actor or Actor.anonymous(subject.source), TRIP_ACTION, limits, agency_id=plan.agency_id
            )
        except StoreUnavailable:
            log.warning("velocity event not audited: store unavailable", agency=plan.agency_id, action=TRIP_ACTION)

    async def _audit(self, agency_id: str, subject: Subject | None, action: str, outcome: Outcome, detail: str) -> None:
        if self.auditor is None:
            return
        actor = subject.actor if subject and subject.actor else Actor.anonymous(subject.source if subject else "-")
        try:
            await self.auditor.record(actor, action, outcome, "-", detail, agency_id=agency_id)
        except StoreUnavailable:
            log.warning("velocity event not audited: store unavailable", agency=agency_id, action=action)

    # -- decline ratios -----------------------------------------------------------------------
    async def record_decline(self, agency: Agency, subject: Subject | None) -> None:
        """Count a declined charge; tighten the agency's or the address's limits when too many decline.

        Best effort: the charge has happened and its answer must go out, so a Redis failure here is
        logged, never raised.
        """
        if subject is None or not self.settings.enabled:
            return
        settings = self.settings
        plan = DeclinePlan(
            agency_id=agency.id,
            now_ms=millis(self.clock()),
            address=self._bucket(agency.id, Dimension.ADDRESS, subject.address) if subject.address else None,
            ratio_window_ms=settings.decline_window_seconds * 1000,
            ratio_threshold=settings.decline_ratio,
            min_attempts_agency=settings.decline_min_attempts_agency,
            min_attempts_address=settings.decline_min_attempts_address,
            tighten_ms=settings.tighten_seconds * 1000,
        )
        try:
            tightening = await self.store.record_decline(plan)
        except StoreUnavailable as exc:
            log.warning("decline not counted: store unavailable", agency=agency.id, reason=str(exc))
            return
        for scope, fresh, attempts, declines in (
            ("agency", tightening.agency, tightening.agency_attempts, tightening.agency_declines),
            ("address", tightening.address, tightening.address_attempts, tightening.address_declines),
        ):
            if fresh:
                detail = (
                    f"{scope} limits divided by {settings.tighten_factor} for {settings.tighten_seconds}s: "
                    f"{declines} of {attempts} charge attempts declined in {settings.decline_window_seconds}s"
                )
                log.warning(
                    "velocity limits tightened",
                    agency=agency.id,
                    scope=scope,
                    source=subject.source,
                    attempts=attempts,
                    declines=declines,
                )
                await self._audit(agency.id, subject, TIGHTEN_ACTION, Outcome.SUCCESS, detail)

    # -- what operators see --------------------------------------------------------------------
    async def state(self, agency: Agency) -> VelocityState:
        until, addresses = await self.store.tightened(agency.id, millis(self.clock()))
        return VelocityState(
            limits=effective_limits(self.defaults, agency.velocity),
            overrides=agency.velocity,
            tightened_until_ms=until,
            tightened_addresses=addresses,
            trips=await self.store.trip_counts(agency.id),
        )


def enforce(
    velocity: Velocity | None, plan: GatePlan | None, subject: Subject | None
) -> contextlib.AbstractAsyncContextManager[None]:
    """``velocity.enforced(plan, subject)``, or nothing to enforce when the use case has no velocity limits."""
    return velocity.enforced(plan, subject) if velocity is not None else contextlib.nullcontext()


async def trip_counts(store: VelocityStore, agency_ids: list[str]) -> dict[str, dict[str, int]]:
    """Refusals per agency and limit name (plus ``tightened.agency``/``tightened.address``), for metrics."""
    return {agency_id: await store.trip_counts(agency_id) for agency_id in agency_ids}
