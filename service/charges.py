"""Charge use cases: send a token's card straight to the agency's processor (capture, void and refund
come after, in ``service.charge_lifecycle``).

The card is decrypted only here, for the one processor call, and its CVC is
taken (read and deleted) by the same Redis script that records the charge, so
a CVC never outlives the first authorization that uses it, whatever the
outcome.  The charge record is written *before* the processor is called, with
status ``unknown``; if the process dies mid-call the record says exactly
that.  With an Idempotency-Key the charge id is derived from the key, so even
a retry that arrives after the idempotency record is gone finds the charge
instead of charging again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from service.adapters.charges_store import ChargeStore
from service.adapters.processors.base import (
    AuthorizationRequest,
    CardDetails,
    Outcome,
    ProcessorError,
    ProcessorResult,
    ProcessorTimeout,
)
from service.adapters.processors.registry import ProcessorRegistry
from service.agencies import Principal
from service.charge_lifecycle import ChargeLifecycle, ChargeOutcome, refund_id_for
from service.clock import Clock
from service.domain.cards import parse_cvc
from service.domain.charges import (
    Channel,
    Charge,
    ChargeStatus,
    ProcessorInfo,
    new_charge_id,
)
from service.domain.ids import key_derived_id
from service.domain.tokens import StoredCard, is_token_id
from service.domain.velocity import Action, GatePlan
from service.errors import DecryptionFailed, FieldError, NotFound, ValidationFailed
from service.metrics import record_charge
from service.velocity import Subject, Velocity, enforce

__all__ = ["ChargeOutcome", "ChargeRequest", "ChargeService", "charge_id_for", "refund_id_for"]


@dataclass(frozen=True)
class ChargeRequest:
    token: str
    amount: int
    currency: str
    capture: bool = True
    description: str | None = None
    order_reference: str | None = None
    channel: Channel = Channel.WEB


#: Told each outcome ``ChargeService.create`` returns (the API's audit record): ``(outcome) -> None``.
Witness = Callable[[ChargeOutcome], Awaitable[None]]


@dataclass(frozen=True)
class _OpenedCard:
    """A token's ciphertext as the velocity gate read it, and the card in it."""

    blob: bytes
    card: StoredCard


def charge_id_for(agency_id: str, idempotency_key: str | None) -> str:
    if idempotency_key is None:
        return new_charge_id()
    return key_derived_id("ch_", b"cv-charge-id", agency_id, idempotency_key)


class ChargeService(ChargeLifecycle):
    """Making a charge (``create``), and everything after it (``ChargeLifecycle``: get, capture, void, refund)."""

    def __init__(
        self, store: ChargeStore, processors: ProcessorRegistry, clock: Clock, velocity: Velocity | None = None
    ) -> None:
        super().__init__(store, processors, clock)
        self.velocity = velocity  # card-testing defence: its gate rides in the charge start's round trip

    async def create(
        self,
        principal: Principal,
        request: ChargeRequest,
        idempotency_key: str | None,
        subject: Subject | None = None,
        witness: Witness | None = None,
    ) -> ChargeOutcome:
        """Charge a token once; with a ``subject``, within its velocity limits (else 429, nothing written).

        ``witness`` is told every outcome this returns (an existing charge's too), the new charge's
        beside its final write; nothing is told of a refusal raised instead.
        """
        agency = principal.agency
        if agency.max_amount is not None and request.amount > agency.max_amount:
            raise ValidationFailed(
                errors=[FieldError("amount", "amount_over_limit", f"At most {agency.max_amount} for this agency")]
            )
        if not is_token_id(request.token):
            raise NotFound("No such token", code="token_not_found")
        gate, read_first = await self._velocity_gate(principal, request.token, subject)
        processor = self._processor(principal)
        processor.admit()  # a paused processor is refused here, before the CVC is taken
        now = self._now()
        placeholder = Charge(
            id=charge_id_for(agency.id, idempotency_key),
            token=request.token,
            amount=request.amount,
            currency=request.currency,
            status=ChargeStatus.UNKNOWN,
            channel=request.channel,
            card_brand="",
            card_last4="",
            processor=ProcessorInfo(name=processor.name),
            created=now,
            description=request.description,
            order_reference=request.order_reference,
            failure_message="Awaiting the processor's answer.",
        )
        try:
            async with enforce(self.velocity, gate, subject):
                started = await self.store.start(
                    agency.id, placeholder.id, request.token, placeholder.to_json(), request.order_reference, gate
                )
        except BaseException:
            processor.breaker.release()
            raise
        if started.outcome != "started":
            processor.breaker.release()
        if started.outcome == "exists":
            assert started.existing is not None
            existing = ChargeOutcome(Charge.from_json(started.existing), created=False)
            if witness is not None:
                await witness(existing)
            return existing
        if started.outcome == "no_token":
            raise NotFound("No such token", code="token_not_found")
        assert started.card_blob is not None
        try:
            # The gate's read opened this very ciphertext a moment ago: no need to open it twice.
            stored = (
                read_first.card
                if read_first is not None and read_first.blob == started.card_blob
                else principal.keys.open_stored_card(request.token, started.card_blob)
            )
            cvc = (
                parse_cvc(principal.keys.open_cvc(request.token, started.cvc_blob).decode(), stored.number.brand)
                if started.cvc_blob
                else None
            )
        except DecryptionFailed:
            processor.breaker.release()
            failed = placeholder.with_status(
                ChargeStatus.FAILED,
                now,
                "integrity_error",
                failure_message="The stored card failed its integrity check.",
            )
            await self._save(agency.id, placeholder, failed)
            raise
        pending = replace(placeholder, card_brand=str(stored.number.brand), card_last4=stored.number.last4)
        authorization = AuthorizationRequest(
            card=CardDetails(
                number=stored.number,
                exp_month=stored.exp_month,
                exp_year=stored.exp_year,
                cvc=cvc,
                name=stored.name,
                postal_code=stored.postal_code,
            ),
            amount=request.amount,
            currency=request.currency,
            capture=request.capture,
            reference=placeholder.id.removeprefix("ch_")[:20],  # Authorize.Net caps refId and invoiceNumber at 20
            description=request.description,
            order_reference=request.order_reference,
        )
        error: ProcessorError | None = None
        try:
            result = await processor.authorize(authorization, admitted=True)
            final = self._after_authorization(pending, result, request.capture)
        except ProcessorError as exc:
            error = exc
            final = self._after_error(pending, exc)
        outcome = ChargeOutcome(final, created=True, error=error)
        # The final record, the witness (the audit record) and a decline's count are independent writes:
        # sent together they share a round trip (and an fsync) instead of waiting for each other.  The
        # witness goes first: its audit append takes one more task hop (the chain's flusher) before its
        # command is queued, and started first it reaches the auto-pipeline in time for the same batch.
        writes: list[Awaitable[None]] = [] if witness is None else [witness(outcome)]
        writes.append(self._save(agency.id, placeholder, final))
        if final.status is ChargeStatus.DECLINED and self.velocity is not None:
            writes.append(self.velocity.record_decline(agency, subject))  # feeds the decline ratios
        for written in await asyncio.gather(*writes, return_exceptions=True):
            if isinstance(written, BaseException):
                raise written
        record_charge(processor.name, str(final.status), final.decline_code)
        return outcome

    async def _velocity_gate(
        self, principal: Principal, token_id: str, subject: Subject | None
    ) -> tuple[GatePlan | None, _OpenedCard | None]:
        """The charge's velocity gate, and the card it read.  The per-card limit needs the card's fingerprint,
        sealed inside the token: one read of the token before the charge starts (the only round trip
        velocity adds to a charge)."""
        velocity = self.velocity
        if velocity is None or subject is None:
            return None, None
        opened = None
        if velocity.counts_cards(Action.CHARGES, principal.agency, subject):
            blob = await self.store.token_blob(principal.agency.id, token_id)
            if blob is not None:
                # A card that fails its integrity check is refused (and recorded) by the start as before.
                with contextlib.suppress(DecryptionFailed):
                    opened = _OpenedCard(blob, principal.keys.open_stored_card(token_id, blob))
        fingerprint = opened.card.fingerprint if opened is not None else None
        return velocity.plan(Action.CHARGES, principal.agency, subject, fingerprint), opened

    def _after_authorization(self, charge: Charge, result: ProcessorResult, capture: bool) -> Charge:
        now = self._now()
        info = ProcessorInfo(
            name=charge.processor.name,
            transaction_id=result.transaction_id,
            auth_code=result.auth_code,
            avs_result=result.avs_result,
            cvc_check=result.cvc_check,
        )
        if result.outcome is Outcome.APPROVED:
            status = ChargeStatus.SUCCEEDED if capture else ChargeStatus.REQUIRES_CAPTURE
            captured = charge.amount if capture else 0
            return charge.with_status(
                status,
                now,
                result.message,
                processor=info,
                amount_captured=captured,
                failure_message=None,
                settles_at=result.settles_at if capture else None,
            )
        if result.outcome is Outcome.DECLINED:
            return charge.with_status(
                ChargeStatus.DECLINED,
                now,
                result.message,
                processor=info,
                decline_code=result.decline_code or "generic_decline",
                failure_message=result.message,
            )
        if result.outcome is Outcome.HELD:
            return charge.with_status(
                ChargeStatus.UNKNOWN,
                now,
                "held for review at the processor",
                processor=info,
                failure_message="The processor is holding this payment for review.",
            )
        return charge.with_status(
            ChargeStatus.FAILED,
            now,
            result.message,
            processor=info,
            decline_code=result.decline_code or "processing_error",
            failure_message=result.message,
        )

    def _after_error(self, charge: Charge, error: ProcessorError) -> Charge:
        now = self._now()
        if isinstance(error, ProcessorTimeout):
            return charge.with_status(
                ChargeStatus.UNKNOWN,
                now,
                error.code,
                failure_message="The processor did not answer in time; the outcome is unknown. "
                "Do not charge again: reconcile this charge with the processor.",
            )
        return charge.with_status(ChargeStatus.FAILED, now, error.code, failure_message=str(error))
