"""Checkout sessions: a purchase the storefront backend prices, and the shopper's browser pays at most once.

The storefront backend creates a session with the amount, currency and order
reference (the browser never sets any of them) and hands the shopper's page
the session's *client secret*.  The page pays with the client secret and a
token from the hosted fields; the vault charges the session's own amount.
The session's status machine::

    open --complete--> processing --approved--------------> complete (payment_status paid)
                                  --declined or failed----> open     (last_payment_error; pay again)
                                  --no answer in time-----> processing (payment_status unknown; never again)
    open --expires_at passes--> expired            (shown as expired; nothing can be paid)

Each payment attempt has its own number; the charge id derives from the
session id and that number (``ChargeService`` with an idempotency key), so a
retried attempt finds its charge instead of charging again, and only one
attempt can be in flight at a time (the store swaps ``open`` for
``processing`` atomically).  The client secret is stored only as its
SHA-256 (192 random bits need no pepper) and is shown once, when the session
is created.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
import secrets
from dataclasses import asdict, dataclass, replace
from typing import Any

from service.domain.ids import card_free

SESSION_ID_PREFIX = "cs_"
SECRET_MARKER = "_secret_"  # noqa: S105 - a separator, not a password
#: How long a finished or expired session stays readable after it expires.
RETENTION_SECONDS = 30 * 24 * 3600
#: An attempt still ``processing`` this long after it started was cut off (a crash); see ``stale_attempt``.
STALE_ATTEMPT_SECONDS = 300


class SessionStatus(enum.StrEnum):
    OPEN = "open"
    PROCESSING = "processing"
    COMPLETE = "complete"
    EXPIRED = "expired"


class PaymentStatus(enum.StrEnum):
    UNPAID = "unpaid"
    PAID = "paid"
    UNKNOWN = "unknown"


def new_session_id() -> str:
    return card_free(lambda: SESSION_ID_PREFIX + secrets.token_hex(16))


def is_session_id(value: str) -> bool:
    body = value.removeprefix(SESSION_ID_PREFIX)
    return value.startswith(SESSION_ID_PREFIX) and len(body) == 32 and all(c in "0123456789abcdef" for c in body)


def new_client_secret(session_id: str) -> str:
    return f"{session_id}{SECRET_MARKER}{secrets.token_urlsafe(24)}"


def secret_hash(client_secret: str) -> str:
    return hashlib.sha256(client_secret.encode()).hexdigest()


def session_id_of_secret(client_secret: str) -> str | None:
    """The session a client secret belongs to (the page needs only the secret)."""
    session_id, marker, _ = client_secret.partition(SECRET_MARKER)
    return session_id if marker and is_session_id(session_id) else None


def attempt_key(session_id: str, attempt: int) -> str:
    """The idempotency key of one payment attempt: its charge id derives from it."""
    return f"checkout:{session_id}:{attempt}"


@dataclass(frozen=True)
class ChargeSummary:
    """What a session shows of its latest charge: never the card number, only brand and last four."""

    id: str
    status: str
    brand: str
    last4: str
    decline_code: str | None = None
    failure_message: str | None = None


@dataclass(frozen=True)
class PaymentError:
    code: str
    message: str


@dataclass(frozen=True)
class CheckoutSession:
    id: str
    secret_hash: str
    amount: int
    currency: str
    order_reference: str
    success_url: str
    cancel_url: str
    created: int
    expires_at: int
    description: str | None = None
    status: SessionStatus = SessionStatus.OPEN
    payment_status: PaymentStatus = PaymentStatus.UNPAID
    attempts: int = 0
    attempt_started: int | None = None
    completed_at: int | None = None
    charge: ChargeSummary | None = None
    last_payment_error: PaymentError | None = None

    # -- reading -----------------------------------------------------------
    def status_at(self, now: int) -> SessionStatus:
        """The status as shown: an open session past its expiry is expired."""
        if self.status is SessionStatus.OPEN and now >= self.expires_at:
            return SessionStatus.EXPIRED
        return self.status

    def secret_matches(self, client_secret: str) -> bool:
        return hmac.compare_digest(self.secret_hash, secret_hash(client_secret))

    def stale_attempt(self, now: int) -> bool:
        """An attempt left ``processing`` (with no known outcome) long past any processor timeout."""
        return (
            self.status is SessionStatus.PROCESSING
            and self.payment_status is PaymentStatus.UNPAID
            and self.attempt_started is not None
            and now - self.attempt_started > STALE_ATTEMPT_SECONDS
        )

    @property
    def current_attempt_key(self) -> str:
        return attempt_key(self.id, self.attempts)

    # -- transitions -------------------------------------------------------
    def begin_attempt(self, now: int) -> CheckoutSession:
        return replace(self, status=SessionStatus.PROCESSING, attempts=self.attempts + 1, attempt_started=now)

    def paid(self, charge: ChargeSummary, now: int) -> CheckoutSession:
        return replace(
            self,
            status=SessionStatus.COMPLETE,
            payment_status=PaymentStatus.PAID,
            completed_at=now,
            charge=charge,
            last_payment_error=None,
        )

    def refused(self, charge: ChargeSummary | None, error: PaymentError) -> CheckoutSession:
        """The attempt moved no money: the shopper may pay again (until the session expires)."""
        return replace(
            self,
            status=SessionStatus.OPEN,
            payment_status=PaymentStatus.UNPAID,
            charge=charge or self.charge,
            last_payment_error=error,
        )

    def outcome_unknown(self, charge: ChargeSummary) -> CheckoutSession:
        """The processor did not answer: the money may have moved, so the session never takes another attempt."""
        return replace(
            self,
            status=SessionStatus.PROCESSING,
            payment_status=PaymentStatus.UNKNOWN,
            charge=charge,
            last_payment_error=PaymentError(
                "payment_outcome_unknown",
                "The payment could not be confirmed. Do not pay again: the agency will confirm it.",
            ),
        )

    # -- storage -----------------------------------------------------------
    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> CheckoutSession:
        raw: dict[str, Any] = json.loads(data)
        charge = raw.pop("charge")
        error = raw.pop("last_payment_error")
        return cls(
            **{
                **raw,
                "status": SessionStatus(raw["status"]),
                "payment_status": PaymentStatus(raw["payment_status"]),
            },
            charge=ChargeSummary(**charge) if charge else None,
            last_payment_error=PaymentError(**error) if error else None,
        )
