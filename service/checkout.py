"""Checkout-session use cases: create (storefront backend), read (backend or shopper), complete (shopper).

Completing a session charges *the session's* amount through
``ChargeService.create``, under an idempotency key derived from the session id
and the attempt number, so the charge id of an attempt is fixed before the
processor is called: a retried or resumed attempt finds its charge instead of
charging again, and the session's compare-and-swap lets only one attempt run
at a time and none once the session is paid.  A broken connection therefore
never loses the purchase (the session keeps the real outcome, which reopening
the page reads) and never charges twice.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

import structlog

from service.adapters.checkout_store import CheckoutStore
from service.agencies import Principal
from service.charges import ChargeRequest, ChargeService, charge_id_for
from service.clock import Clock
from service.domain.agencies import InvalidAgencyInput, normalize_origin
from service.domain.charges import Channel, Charge, ChargeStatus
from service.domain.checkout import (
    RETENTION_SECONDS,
    ChargeSummary,
    CheckoutSession,
    PaymentError,
    SessionStatus,
    is_session_id,
    new_client_secret,
    new_session_id,
    secret_hash,
)
from service.errors import Conflict, FieldError, Forbidden, NotFound, ValidationFailed
from service.velocity import Subject

log = structlog.get_logger("cardvault.checkout")
MAX_URL_LENGTH = 2048


@dataclass(frozen=True)
class NewSession:
    amount: int
    currency: str
    order_reference: str
    success_url: str
    cancel_url: str
    description: str | None = None


@dataclass(frozen=True)
class CreatedSession:
    session: CheckoutSession
    client_secret: str


def summary_of(charge: Charge) -> ChargeSummary:
    return ChargeSummary(
        id=charge.id,
        status=str(charge.status),
        brand=charge.card_brand,
        last4=charge.card_last4,
        decline_code=charge.decline_code,
        failure_message=charge.failure_message,
    )


def after_charge(session: CheckoutSession, charge: Charge, now: int) -> CheckoutSession:
    """The session once its attempt's charge has this status."""
    summary = summary_of(charge)
    if charge.status in (ChargeStatus.SUCCEEDED, ChargeStatus.REQUIRES_CAPTURE):
        return session.paid(summary, now)
    if charge.status is ChargeStatus.UNKNOWN:
        return session.outcome_unknown(summary)
    if charge.status is ChargeStatus.DECLINED:
        return session.refused(summary, PaymentError("card_declined", charge.failure_message or "Card declined."))
    return session.refused(summary, PaymentError("payment_failed", charge.failure_message or "Payment failed."))


def _url_problem(field: str, url: str, origins: tuple[str, ...]) -> FieldError | None:
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. "https://[": an unclosed IPv6 literal
        return FieldError(field, "invalid", "Must be an absolute https URL")
    if len(url) > MAX_URL_LENGTH or parts.scheme not in ("https", "http") or not parts.netloc:
        return FieldError(field, "invalid", "Must be an absolute https URL")
    try:
        origin = normalize_origin(f"{parts.scheme}://{parts.netloc}")
    except InvalidAgencyInput:
        return FieldError(field, "invalid", "Must be an absolute https URL")
    if origin not in origins:
        return FieldError(field, "url_origin_not_registered", "Must be on one of the agency's registered origins")
    return None


class CheckoutService:
    def __init__(self, store: CheckoutStore, charges: ChargeService, clock: Clock, ttl_seconds: int) -> None:
        self.store = store
        self.charges = charges
        self.clock = clock
        self.ttl_seconds = ttl_seconds

    def _now(self) -> int:
        return int(self.clock())

    async def create(self, principal: Principal, new: NewSession) -> CreatedSession:
        agency = principal.agency
        problems = [
            problem
            for field, url in (("success_url", new.success_url), ("cancel_url", new.cancel_url))
            if (problem := _url_problem(field, url, agency.origins)) is not None
        ]
        if agency.max_amount is not None and new.amount > agency.max_amount:
            problems.append(FieldError("amount", "amount_over_limit", f"At most {agency.max_amount} for this agency"))
        if problems:
            raise ValidationFailed(errors=problems)
        now = self._now()
        while True:  # 128 random bits: a second round is a theoretical possibility only
            session_id = new_session_id()
            client_secret = new_client_secret(session_id)
            session = CheckoutSession(
                id=session_id,
                secret_hash=secret_hash(client_secret),
                amount=new.amount,
                currency=new.currency,
                order_reference=new.order_reference,
                description=new.description,
                success_url=new.success_url,
                cancel_url=new.cancel_url,
                created=now,
                expires_at=now + self.ttl_seconds,
            )
            keep_until = session.expires_at + RETENTION_SECONDS
            if await self.store.create(agency.id, session_id, session.to_json(), keep_until):
                break
        return CreatedSession(session, client_secret)

    async def get(self, principal: Principal, session_id: str, client_secret: str | None) -> CheckoutSession:
        """Backends (secret key) read any of their sessions; a publishable key needs the client secret."""
        session, _ = await self._load(principal, session_id, client_secret)
        return session

    async def complete(
        self, principal: Principal, session_id: str, client_secret: str, token: str, subject: Subject | None = None
    ) -> CheckoutSession:
        """Pay the session with ``token``; a velocity refusal (429) reopens it, nothing charged."""
        session, raw = await self._load(principal, session_id, client_secret, require_secret=True)
        now = self._now()
        status = session.status_at(now)
        if status is SessionStatus.COMPLETE:
            raise Conflict("This checkout session has already been paid", code="checkout_session_completed")
        if status is SessionStatus.EXPIRED:
            raise Conflict(
                "This checkout session has expired; start the purchase again", code="checkout_session_expired"
            )
        if status is SessionStatus.PROCESSING:
            raise Conflict(
                "A payment for this checkout session is in progress or awaiting confirmation",
                code="checkout_session_processing",
            )
        attempt = session.begin_attempt(now)
        attempt_raw = attempt.to_json()
        if not await self.store.replace(principal.agency.id, session.id, raw, attempt_raw):
            raise Conflict(
                "Another payment for this checkout session started first", code="checkout_session_processing"
            )
        charge_request = ChargeRequest(
            token=token,
            amount=session.amount,  # the backend's amount: nothing the browser sends can change it
            currency=session.currency,
            capture=True,
            description=session.description,
            order_reference=session.order_reference,
            channel=Channel.WEB,
        )
        try:
            outcome = await self.charges.create(principal, charge_request, attempt.current_attempt_key, subject)
        except BaseException:
            await asyncio.shield(self._settle_interrupted(principal, attempt, attempt_raw))
            raise
        final = after_charge(attempt, outcome.charge, self._now())
        if not await self.store.replace(principal.agency.id, session.id, attempt_raw, final.to_json()):
            log.error("checkout session changed during its payment", session=session.id)
        return final

    async def _load(
        self, principal: Principal, session_id: str, client_secret: str | None, *, require_secret: bool = False
    ) -> tuple[CheckoutSession, bytes]:
        raw = await self.store.get(principal.agency.id, session_id) if is_session_id(session_id) else None
        if raw is None:
            raise NotFound("No such checkout session", code="checkout_session_not_found")
        session = CheckoutSession.from_json(raw)
        needs_secret = require_secret or not principal.secret or client_secret is not None
        if needs_secret and (client_secret is None or not session.secret_matches(client_secret)):
            raise Forbidden("The client secret does not match this checkout session", code="client_secret_invalid")
        if session.stale_attempt(self._now()):
            return await self._reconcile(principal, session, raw)
        return session, raw

    async def _charge_of_attempt(self, principal: Principal, session: CheckoutSession) -> Charge | None:
        try:
            return await self.charges.get(principal, charge_id_for(principal.agency.id, session.current_attempt_key))
        except NotFound:
            return None

    async def _reconcile(
        self, principal: Principal, session: CheckoutSession, raw: bytes
    ) -> tuple[CheckoutSession, bytes]:
        """An attempt cut off by a crash: take its charge's outcome, or reopen when it never reached the store."""
        charge = await self._charge_of_attempt(principal, session)
        now = self._now()
        settled = replace(session, status=SessionStatus.OPEN) if charge is None else after_charge(session, charge, now)
        settled_raw = settled.to_json()
        if await self.store.replace(principal.agency.id, session.id, raw, settled_raw):
            log.warning("checkout attempt reconciled", session=session.id, status=str(settled.status))
            return settled, settled_raw
        fresh = await self.store.get(principal.agency.id, session.id)
        assert fresh is not None
        return CheckoutSession.from_json(fresh), fresh

    async def _settle_interrupted(self, principal: Principal, attempt: CheckoutSession, attempt_raw: bytes) -> None:
        """The charge call raised: settle the attempt from what the charge store says, if it can be read."""
        with contextlib.suppress(Exception):
            charge = await self._charge_of_attempt(principal, attempt)
            settled = (
                replace(attempt, status=SessionStatus.OPEN)
                if charge is None
                else after_charge(attempt, charge, self._now())
            )
            await self.store.replace(principal.agency.id, attempt.id, attempt_raw, settled.to_json())
