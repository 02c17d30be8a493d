"""The processor interface: what the vault asks of any payment processor.

An adapter turns a card (revealed only inside it, for the request it sends)
and an amount into the processor's own API call, and the processor's answer
into a :class:`ProcessorResult`.  Adapters never log card data, never retry a
call that could move money, and raise the errors below for every outcome
that is not an answer::

    ProcessorError
    ├── ProcessorTimeout       no answer in time: the charge's outcome is unknown
    ├── ProcessorUnavailable   could not reach it, or it answered with a server error
    ├── ProcessorRejected      it answered that the request itself is wrong (credentials, format)
    └── CircuitOpen            we stopped calling it for a while after repeated failures
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from service.domain.cards import CardNumber, Cvc

#: ``decline_code`` of a void the processor refused because the transaction has settled.
TRANSACTION_SETTLED = "transaction_settled"


class Outcome(enum.StrEnum):
    APPROVED = "approved"
    DECLINED = "declined"
    HELD = "held_for_review"
    ERROR = "error"  # it answered, but could not process this card (a processing error)


class ProcessorError(Exception):
    """The processor gave no usable answer."""

    code = "processor_error"


class ProcessorTimeout(ProcessorError):
    code = "processor_timeout"


class ProcessorUnavailable(ProcessorError):
    code = "processor_unavailable"


class ProcessorRejected(ProcessorError):
    code = "processor_rejected"


class CircuitOpen(ProcessorError):
    code = "processor_circuit_open"

    def __init__(self, message: str, *, retry_after: float = 5.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True, repr=False)
class CardDetails:
    """What an authorization needs of the card; prints masked."""

    number: CardNumber
    exp_month: int
    exp_year: int
    cvc: Cvc | None = None
    name: str | None = None
    postal_code: str | None = None

    def __repr__(self) -> str:
        return f"CardDetails({self.number!r})"


@dataclass(frozen=True, repr=False)
class AuthorizationRequest:
    card: CardDetails
    amount: int  # minor units
    currency: str
    capture: bool
    reference: str  # our charge id, sent as the processor's invoice/reference field
    description: str | None = None
    order_reference: str | None = None

    def __repr__(self) -> str:
        return f"AuthorizationRequest({self.reference}, {self.amount} {self.currency}, capture={self.capture})"


@dataclass(frozen=True)
class ProcessorResult:
    """A processor's answer, in our words."""

    outcome: Outcome
    transaction_id: str | None = None
    auth_code: str | None = None
    avs_result: str | None = None  # the processor's AVS letter, e.g. "Y", "N", "P"
    cvc_check: str | None = None  # "pass" | "fail" | "unavailable" | "unchecked"
    decline_code: str | None = None  # generic_decline, insufficient_funds, lost_card, ...
    message: str | None = None
    settles_at: int | None = None  # a capture: when the processor settles it, if it says (then: void no more)

    @property
    def approved(self) -> bool:
        return self.outcome is Outcome.APPROVED


class Processor(Protocol):
    """One processor account (credentials bound at construction)."""

    name: str

    async def authorize(self, request: AuthorizationRequest) -> ProcessorResult:
        """Authorize (and, when ``request.capture``, capture) a card payment."""

    async def capture(self, transaction_id: str, amount: int, currency: str) -> ProcessorResult:
        """Capture a previous authorization, for at most its amount."""

    async def void(self, transaction_id: str) -> ProcessorResult:
        """Cancel an authorization, or a capture the processor has not settled yet; a settled one is
        refused with ``decline_code`` :data:`TRANSACTION_SETTLED` (refund it instead)."""

    async def refund(self, transaction_id: str, amount: int, currency: str, card_last4: str) -> ProcessorResult:
        """Return ``amount`` of a captured payment to the card."""


def format_amount(amount: int) -> str:
    """Minor units to the decimal string processors expect (USD: cents to dollars)."""
    return f"{amount // 100}.{amount % 100:02d}"
