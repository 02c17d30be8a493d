"""Charges after they are made: reading them, and moving them along with capture, void and refund.

``ChargeService`` (``service.charges``) makes charges; this is the part it
shares with what comes after.  Every change to a stored charge is a
compare-and-swap of its whole record (``ChargeStore.replace``), and capture,
void and refund each hold the charge's lock while the processor is called, so
two of them never race.  A refund is recorded as pending before the processor
is called, and with an Idempotency-Key its id comes from the key, so a retry
finds it instead of refunding again.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from service.adapters.charges_store import ChargeStore
from service.adapters.processors.base import (
    TRANSACTION_SETTLED,
    CircuitOpen,
    ProcessorError,
    ProcessorTimeout,
)
from service.adapters.processors.registry import GuardedProcessor, ProcessorRegistry
from service.agencies import Principal
from service.clock import Clock
from service.domain.charges import (
    REFUND_FAILED,
    REFUND_PENDING,
    REFUND_SUCCEEDED,
    REFUND_UNKNOWN,
    Charge,
    ChargeRuleError,
    ChargeStatus,
    Refund,
    new_refund_id,
)
from service.domain.ids import key_derived_id
from service.errors import Conflict, FieldError, NotFound, ValidationFailed

LOCK_SECONDS = 120
LIST_LIMIT = 100


@dataclass(frozen=True)
class ChargeOutcome:
    """A charge and how its processor call ended (for the HTTP status)."""

    charge: Charge
    created: bool
    error: ProcessorError | None = None


def refund_id_for(agency_id: str, charge_id: str, idempotency_key: str | None) -> str:
    if idempotency_key is None:
        return new_refund_id()
    return key_derived_id("re_", b"cv-refund-id", agency_id, charge_id, idempotency_key)


def _rule_error(exc: ChargeRuleError) -> Exception:
    if exc.code == "amount_too_large":
        return ValidationFailed(errors=[FieldError("amount", exc.code, str(exc))])
    return Conflict(str(exc), code=exc.code)


class ChargeLifecycle:
    """A stored charge read, captured, voided or refunded (``ChargeService`` adds making one)."""

    def __init__(self, store: ChargeStore, processors: ProcessorRegistry, clock: Clock) -> None:
        self.store = store
        self.processors = processors
        self.clock = clock

    def _now(self) -> int:
        return int(self.clock())

    def _processor(self, principal: Principal) -> GuardedProcessor:
        return self.processors.for_agency(principal.agency.processor, principal.keys)

    async def _save(self, agency_id: str, before: Charge, after: Charge) -> None:
        if not await self.store.replace(agency_id, after.id, before.to_json(), after.to_json()):
            raise Conflict("The charge changed while it was being updated; fetch it again", code="charge_busy")

    async def get(self, principal: Principal, charge_id: str) -> Charge:
        raw = await self.store.get(principal.agency.id, charge_id) if charge_id.startswith("ch_") else None
        if raw is None:
            raise NotFound("No such charge", code="charge_not_found")
        return Charge.from_json(raw)

    async def by_order_reference(self, principal: Principal, reference: str) -> tuple[list[Charge], bool]:
        """The oldest LIST_LIMIT charges with that reference, and whether there are more."""
        found = [Charge.from_json(raw) for raw in await self.store.by_order_reference(principal.agency.id, reference)]
        found.sort(key=lambda c: (c.created, c.id))
        return found[:LIST_LIMIT], len(found) > LIST_LIMIT

    async def _locked(self, principal: Principal, charge_id: str) -> Charge:
        charge = await self.get(principal, charge_id)
        if not await self.store.lock(principal.agency.id, charge_id, LOCK_SECONDS):
            raise Conflict("Another operation on this charge is in progress", code="charge_busy")
        return charge

    async def capture(self, principal: Principal, charge_id: str, amount: int | None) -> ChargeOutcome:
        charge = await self._locked(principal, charge_id)
        try:
            try:
                wanted = charge.check_capture(amount)
            except ChargeRuleError as exc:
                raise _rule_error(exc) from None
            transaction_id = charge.processor.transaction_id or ""
            try:
                result = await self._processor(principal).capture(transaction_id, wanted, charge.currency)
            except ProcessorError as exc:
                return ChargeOutcome(charge, created=False, error=exc)
            if result.approved:
                # The capture's id: Authorize.Net repeats the authorization's; the sandbox's names the settlement day.
                captured_id = result.transaction_id or charge.processor.transaction_id
                info = replace(charge.processor, transaction_id=captured_id)
                after = charge.with_status(
                    ChargeStatus.SUCCEEDED,
                    self._now(),
                    "captured",
                    amount_captured=wanted,
                    processor=info,
                    settles_at=result.settles_at,
                )
            else:
                after = replace(charge, failure_message=result.message)
            await self._save(principal.agency.id, charge, after)
            return ChargeOutcome(after, created=False)
        finally:
            await self.store.unlock(principal.agency.id, charge_id)

    async def void(self, principal: Principal, charge_id: str) -> ChargeOutcome:
        """Void an authorization, or a capture until the processor settles it (then: 409 charge_settled)."""
        charge = await self._locked(principal, charge_id)
        try:
            try:
                charge.check_void(self._now())
            except ChargeRuleError as exc:
                raise _rule_error(exc) from None
            try:
                result = await self._processor(principal).void(charge.processor.transaction_id or "")
            except ProcessorError as exc:
                return ChargeOutcome(charge, created=False, error=exc)
            if result.decline_code == TRANSACTION_SETTLED and charge.status is ChargeStatus.SUCCEEDED:
                # Remember it, so the receipt offers the refund and a retry is refused without a call.
                now = self._now()
                settled = replace(charge, settles_at=min(now, charge.settles_at or now))
                await self._save(principal.agency.id, charge, settled)
                raise Conflict(
                    "The processor has already settled this charge, so it can no longer be voided; refund it.",
                    code="charge_settled",
                )
            after = (
                charge.with_status(ChargeStatus.VOIDED, self._now(), "voided", amount_captured=0)
                if result.approved
                else replace(charge, failure_message=result.message)
            )
            await self._save(principal.agency.id, charge, after)
            return ChargeOutcome(after, created=False)
        finally:
            await self.store.unlock(principal.agency.id, charge_id)

    async def refund(
        self, principal: Principal, charge_id: str, amount: int | None, idempotency_key: str | None = None
    ) -> tuple[ChargeOutcome, Refund | None]:
        """Refund once: the refund is recorded as pending before the processor is called, and with an
        Idempotency-Key its id comes from the key, so a retry finds it instead of refunding again."""
        charge = await self._locked(principal, charge_id)
        try:
            refund_id = refund_id_for(principal.agency.id, charge_id, idempotency_key)
            earlier = charge.refund_by_id(refund_id)
            if earlier is not None:
                return ChargeOutcome(charge, created=False), earlier
            try:
                wanted = charge.check_refund(amount)
            except ChargeRuleError as exc:
                raise _rule_error(exc) from None
            processor = self._processor(principal)
            try:
                processor.admit()  # a paused processor is refused before anything is recorded
            except CircuitOpen as exc:
                return ChargeOutcome(charge, created=False, error=exc), None
            pending = Refund(refund_id, wanted, REFUND_PENDING, None, self._now())
            reserved = charge.with_refund(pending)
            try:
                await self._save(principal.agency.id, charge, reserved)
            except BaseException:
                processor.breaker.release()
                raise
            try:
                result = await processor.refund(
                    charge.processor.transaction_id or "", wanted, charge.currency, charge.card_last4, admitted=True
                )
            except ProcessorError as exc:
                status = REFUND_UNKNOWN if isinstance(exc, ProcessorTimeout) else REFUND_FAILED
                after = reserved.with_refund(replace(pending, status=status))
                await self._save(principal.agency.id, reserved, after)
                return ChargeOutcome(after, created=False, error=exc), after.refund_by_id(refund_id)
            status = REFUND_SUCCEEDED if result.approved else REFUND_FAILED
            refund = replace(pending, status=status, processor_transaction_id=result.transaction_id)
            after = reserved.with_refund(refund)
            await self._save(principal.agency.id, reserved, after)
            return ChargeOutcome(after, created=False), refund
        finally:
            await self.store.unlock(principal.agency.id, charge_id)
