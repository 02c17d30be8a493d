"""Charges: amounts, statuses, and the rules for capture, void and refund.

A charge never holds a card number: only the token it was made with, the
card's brand and last four, and what the processor answered.  The status
machine::

    create(capture=true)   -> succeeded | declined | failed | unknown
    create(capture=false)  -> requires_capture | declined | failed | unknown
    requires_capture --capture(amount <= authorized)--> succeeded
    requires_capture --void--> voided
    succeeded --void, before the processor settles it--> voided (no money moves)
    succeeded --refund(amount <= captured - refunded)--> succeeded (amount_refunded grows)

A captured charge can be voided until the processor settles its batch (the
same day, at the processor's cut-off) and refunded after.  ``settles_at`` is
when the processor said it settles (the sandbox says; Authorize.Net does
not), or when the vault learned it had (a void refused as settled); ``None``
means not known, and then the processor decides.

``unknown`` means the processor did not answer in time: the money may or may
not have moved, so nothing further is allowed until an operator reconciles it.
"""

from __future__ import annotations

import enum
import json
import re
import secrets
from dataclasses import dataclass, field, replace
from typing import Any

from service.domain.ids import card_free

_dumps = json.JSONEncoder(separators=(",", ":")).encode

CURRENCIES = frozenset({"usd"})
MAX_AMOUNT = 99_999_999  # $999,999.99: the most any processor we speak to accepts
REFERENCE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/#-]{0,63}\Z")


class ChargeStatus(enum.StrEnum):
    SUCCEEDED = "succeeded"
    REQUIRES_CAPTURE = "requires_capture"
    DECLINED = "declined"
    FAILED = "failed"
    UNKNOWN = "unknown"
    VOIDED = "voided"


class Channel(enum.StrEnum):
    WEB = "web"
    PHONE = "phone"
    FAX = "fax"
    MAIL = "mail"


class ChargeRuleError(ValueError):
    """A capture, void or refund the charge's state does not allow."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def new_charge_id() -> str:
    return card_free(lambda: "ch_" + secrets.token_urlsafe(18))


REFUND_PENDING = "pending"  # recorded before the processor is called
REFUND_SUCCEEDED = "succeeded"
REFUND_FAILED = "failed"
REFUND_UNKNOWN = "unknown"  # the processor did not answer: reconcile before refunding again


def new_refund_id() -> str:
    return card_free(lambda: "re_" + secrets.token_urlsafe(18))


@dataclass(frozen=True)
class ProcessorInfo:
    name: str
    transaction_id: str | None = None
    auth_code: str | None = None
    avs_result: str | None = None
    cvc_check: str | None = None


@dataclass(frozen=True)
class Refund:
    id: str
    amount: int
    status: str  # pending | succeeded | failed | unknown
    processor_transaction_id: str | None
    created: int


@dataclass(frozen=True)
class StatusChange:
    status: str
    at: int
    note: str | None = None


@dataclass(frozen=True)
class Charge:
    """A charge record as stored (JSON) and shown (the API adds nothing secret to it)."""

    id: str
    token: str
    amount: int
    currency: str
    status: ChargeStatus
    channel: Channel
    card_brand: str
    card_last4: str
    processor: ProcessorInfo
    created: int
    amount_captured: int = 0
    amount_refunded: int = 0
    description: str | None = None
    order_reference: str | None = None
    decline_code: str | None = None
    failure_message: str | None = None
    refunds: tuple[Refund, ...] = ()
    history: tuple[StatusChange, ...] = field(default_factory=tuple)
    settles_at: int | None = None

    # -- rules -------------------------------------------------------------
    def check_capture(self, amount: int | None) -> int:
        """The amount a capture may take, or ChargeRuleError."""
        if self.status is ChargeStatus.SUCCEEDED:
            raise ChargeRuleError("charge_already_captured", "This charge has already been captured.")
        if self.status is not ChargeStatus.REQUIRES_CAPTURE:
            raise ChargeRuleError("charge_not_capturable", f"A {self.status} charge cannot be captured.")
        wanted = self.amount if amount is None else amount
        if wanted > self.amount:
            raise ChargeRuleError("amount_too_large", "A capture may not exceed the authorized amount.")
        return wanted

    def settled(self, now: float) -> bool:
        """Known to be settled at the processor by ``now`` (refund, do not void)."""
        return self.status is ChargeStatus.SUCCEEDED and self.settles_at is not None and now >= self.settles_at

    def check_void(self, now: float) -> None:
        """Void an authorization, or a capture the processor has not settled (as far as the vault knows)."""
        if self.status is ChargeStatus.SUCCEEDED:
            if self.refunds:
                raise ChargeRuleError("charge_not_voidable", "A charge with refunds cannot be voided; refund the rest.")
            if self.settled(now):
                raise ChargeRuleError(
                    "charge_settled", "The processor has settled this charge, so it can no longer be voided; refund it."
                )
            return
        if self.status is not ChargeStatus.REQUIRES_CAPTURE:
            raise ChargeRuleError("charge_not_voidable", f"A {self.status} charge cannot be voided.")

    def voidable(self, now: float) -> bool:
        try:
            self.check_void(now)
        except ChargeRuleError:
            return False
        return True

    @property
    def amount_reserved(self) -> int:
        """Refunds sent (or about to be) whose outcome is not known: they count against what is left."""
        return sum(r.amount for r in self.refunds if r.status in (REFUND_PENDING, REFUND_UNKNOWN))

    def refund_by_id(self, refund_id: str) -> Refund | None:
        return next((r for r in self.refunds if r.id == refund_id), None)

    def check_refund(self, amount: int | None) -> int:
        if self.status is not ChargeStatus.SUCCEEDED:
            raise ChargeRuleError("charge_not_refundable", f"A {self.status} charge cannot be refunded.")
        remaining = self.amount_captured - self.amount_refunded - self.amount_reserved
        if remaining <= 0:
            raise ChargeRuleError("charge_fully_refunded", "This charge has already been refunded in full.")
        wanted = remaining if amount is None else amount
        if wanted > remaining:
            raise ChargeRuleError("amount_too_large", "A refund may not exceed what was captured and not yet refunded.")
        return wanted

    # -- transitions ---------------------------------------------------------
    def with_status(self, status: ChargeStatus, at: int, note: str | None = None, **changes: Any) -> Charge:
        return replace(self, status=status, history=(*self.history, StatusChange(str(status), at, note)), **changes)

    def with_refund(self, refund: Refund) -> Charge:
        """Add a refund, or replace the one with the same id (a pending refund getting its outcome)."""
        if any(r.id == refund.id for r in self.refunds):
            refunds = tuple(refund if r.id == refund.id else r for r in self.refunds)
        else:
            refunds = (*self.refunds, refund)
        refunded = sum(r.amount for r in refunds if r.status == REFUND_SUCCEEDED)
        return replace(self, refunds=refunds, amount_refunded=refunded)

    # -- storage ---------------------------------------------------------------
    def to_json(self) -> bytes:
        """The stored record, in field order: the same bytes ``json.dumps(dataclasses.asdict(self))`` gives.

        Built by hand because ``asdict`` deep-copies every field (a tenth of a charge's CPU), and kept
        byte-for-byte the same because updates compare the stored record with this (``ChargeStore.replace``).
        Computed once per instance: a charge is frozen, and its record is needed for the write and the check.
        """
        cached: bytes | None = self.__dict__.get("_json")
        if cached is None:
            cached = _dumps(self._record()).encode()
            object.__setattr__(self, "_json", cached)
        return cached

    def _record(self) -> dict[str, Any]:
        p = self.processor
        return {
            "id": self.id,
            "token": self.token,
            "amount": self.amount,
            "currency": self.currency,
            "status": str(self.status),
            "channel": str(self.channel),
            "card_brand": self.card_brand,
            "card_last4": self.card_last4,
            "processor": {
                "name": p.name,
                "transaction_id": p.transaction_id,
                "auth_code": p.auth_code,
                "avs_result": p.avs_result,
                "cvc_check": p.cvc_check,
            },
            "created": self.created,
            "amount_captured": self.amount_captured,
            "amount_refunded": self.amount_refunded,
            "description": self.description,
            "order_reference": self.order_reference,
            "decline_code": self.decline_code,
            "failure_message": self.failure_message,
            "refunds": [
                {
                    "id": r.id,
                    "amount": r.amount,
                    "status": r.status,
                    "processor_transaction_id": r.processor_transaction_id,
                    "created": r.created,
                }
                for r in self.refunds
            ],
            "history": [{"status": h.status, "at": h.at, "note": h.note} for h in self.history],
            "settles_at": self.settles_at,
        }

    @classmethod
    def from_json(cls, data: bytes) -> Charge:
        raw = json.loads(data)
        return cls(
            **{
                **raw,
                "status": ChargeStatus(raw["status"]),
                "channel": Channel(raw["channel"]),
                "processor": ProcessorInfo(**raw["processor"]),
                "refunds": tuple(Refund(**r) for r in raw["refunds"]),
                "history": tuple(StatusChange(**h) for h in raw["history"]),
            }
        )
