"""Virtual-terminal order use cases: take an order (tokenize and charge in one step), look up, list, refund, void.

Orders are sales (authorized and captured at once).  A sale is voided until
the processor settles its batch and refunded after; the rule is the charge
use case's (``Charge.check_void``), so the public API and these pages agree.

Taking an order claims the form's one-time nonce first; the charge id is
derived from that nonce (``charge_id_for``), so a double click, a reload or
two tabs submitting the same form reach the processor once and are shown
the same receipt.  The card is tokenized for the one authorization and the
token is deleted as soon as the processor has answered: refunds and voids
need only the processor's transaction id, so after an order the vault holds
no card of it at all.  Who took which order lives beside the charge
(``staff_orders_store``); agents see their own orders, supervisors and
auditors the team's.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from dataclasses import dataclass, field

from service.adapters.staff_forms import FormNonces
from service.adapters.staff_orders_store import OrderMeta, StaffOrderStore
from service.agencies import AgencyService, Principal
from service.audit import Actor, Auditor
from service.charges import ChargeRequest, ChargeService, charge_id_for
from service.clock import Clock
from service.domain.agencies import KeyKind
from service.domain.audit import Action, Outcome
from service.domain.charges import Charge, ChargeStatus
from service.domain.order_form import StaffOrder, format_amount
from service.domain.staff import Permission, allows
from service.domain.staff_sessions import StaffSession
from service.errors import ApiError, NotFound, StoreUnavailable, TooManyRequests
from service.vault import TokenizeRequest, Vault
from service.velocity import Subject

ORDER_PURPOSE = "order"
LIMITED_MESSAGE = "Too many orders in a short time; nothing was charged. Wait a few minutes, then submit again."
NOT_SETTLED_MESSAGE = (
    "This order has not settled with the processor yet: void it instead. A refund is possible once it has settled."
)
SETTLED_MESSAGE = (
    "The processor has already settled this order, so it can no longer be voided. Refund it instead: "
    "the money goes back to the card in a few days."
)


@dataclass(frozen=True)
class OrderRow:
    meta: OrderMeta
    charge: Charge


@dataclass(frozen=True)
class OrderFilter:
    status: str = ""
    channel: str = ""
    staff: str = ""
    reference: str = ""
    since: float = 0.0
    until: float = float("inf")

    def keeps(self, row: OrderRow) -> bool:
        return (
            (not self.status or str(row.charge.status) == self.status)
            and (not self.channel or row.meta.channel == self.channel)
            and (not self.staff or row.meta.username == self.staff)
            and (not self.reference or self.reference.lower() in (row.charge.order_reference or "").lower())
        )


@dataclass
class TakeResult:
    """``charged`` (a new charge), ``duplicate`` (this form was already submitted), ``refused`` (see errors),
    ``limited`` (the staff member's or the agency's velocity limits: nothing was charged; retry after a while)."""

    kind: str
    charge_id: str = ""
    charge: Charge | None = None
    errors: dict[str, str] = field(default_factory=dict)
    retry_after: int = 0


@dataclass
class ActionResult:
    """A refund or void: ``done``, ``duplicate`` or ``refused`` with a message."""

    kind: str
    charge: Charge | None = None
    message: str = ""


def order_idempotency_key(nonce: str) -> str:
    return f"staff-order:{nonce}"


class StaffOrders:
    def __init__(
        self,
        agencies: AgencyService,
        vault: Vault,
        charges: ChargeService,
        orders: StaffOrderStore,
        forms: FormNonces,
        auditor: Auditor,
        clock: Clock,
    ) -> None:
        self.agencies = agencies
        self.vault = vault
        self.charges = charges
        self.orders = orders
        self.forms = forms
        self.auditor = auditor
        self.clock = clock

    async def principal(self, agency_id: str) -> Principal:
        """The agency as the charges and vault use cases want it (acting with its full rights)."""
        row = await self.agencies.store.agency(agency_id)
        if row is None or not row.agency.active:
            raise NotFound("No such agency", code="agency_not_found")
        return Principal(row.agency, KeyKind.SECRET, self.agencies.keys_for(row))

    async def new_form(self, session: StaffSession, purpose: str = ORDER_PURPOSE, target: str = "new") -> str:
        return await self.forms.issue(session.agency_id, session.staff_id, purpose, target)

    # -- taking an order --------------------------------------------------------------------------
    async def take(self, session: StaffSession, actor: Actor, nonce: str, order: StaffOrder) -> TakeResult:
        principal = await self.principal(session.agency_id)
        limit = principal.agency.max_amount
        if limit is not None and order.amount > limit:
            return TakeResult("refused", errors={"amount": f"This agency accepts at most {format_amount(limit)}."})
        charge_id = charge_id_for(session.agency_id, order_idempotency_key(nonce))
        claim = await self.forms.claim(session.agency_id, nonce, session.staff_id, ORDER_PURPOSE, "new", charge_id)
        if claim.state in ("unknown", "mismatch"):
            await self.auditor.record(actor, Action.ORDER_FORM, Outcome.REFUSED, "-", f"form nonce {claim.state}")
            return TakeResult("refused", errors={"form": "This form is no longer valid. Start a new order."})
        if claim.state != "claimed":
            await self.auditor.record(actor, Action.ORDER, Outcome.REFUSED, claim.result, "form submitted again")
            return TakeResult("duplicate", charge_id=claim.result)
        meta = OrderMeta(charge_id, session.staff_id, session.username, str(order.channel), round(self.clock(), 3))
        await self.orders.record(session.agency_id, meta)
        subject = Subject(source=actor.source, staff=session.staff_id, actor=actor)
        try:
            charge = await self._tokenize_and_charge(principal, nonce, order, subject)
        except TooManyRequests as exc:
            await self._undo_claim(session.agency_id, nonce, charge_id)
            return TakeResult("limited", errors={"form": LIMITED_MESSAGE}, retry_after=exc.retry_after)
        except BaseException:
            await self._undo_claim(session.agency_id, nonce, charge_id)
            raise
        await self.forms.finish(session.agency_id, nonce)
        outcome = Outcome.SUCCESS if charge.status is ChargeStatus.SUCCEEDED else Outcome.FAILURE
        detail = f"{order.channel} {format_amount(charge.amount)} {charge.status}"
        if charge.decline_code:
            detail += f" ({charge.decline_code})"
        await self.auditor.record(actor, Action.ORDER, outcome, charge.id, detail)
        return TakeResult("charged", charge_id=charge.id, charge=charge)

    async def _undo_claim(self, agency_id: str, nonce: str, charge_id: str) -> None:
        """The charge was never started: free the form for another try and drop its index entry."""
        with contextlib.suppress(StoreUnavailable):
            if await self.charges.store.get(agency_id, charge_id) is None:
                await self.orders.forget(agency_id, charge_id)
                await self.forms.release(agency_id, nonce)

    async def _tokenize_and_charge(
        self, principal: Principal, nonce: str, order: StaffOrder, subject: Subject
    ) -> Charge:
        tokenized = await self.vault.tokenize(
            principal,
            TokenizeRequest(
                number=order.number,
                exp_month=order.exp_month,
                exp_year=order.exp_year,
                cvc=order.cvc,
                name=order.cardholder_name,
                postal_code=order.postal_code,
                metadata={"source": "virtual-terminal"},
            ),
            subject,
        )
        token_id = tokenized.token.id
        try:
            outcome = await self.charges.create(
                principal,
                ChargeRequest(
                    token=token_id,
                    amount=order.amount,
                    currency="usd",
                    capture=True,
                    description=order.description,
                    order_reference=order.order_reference,
                    channel=order.channel,
                ),
                order_idempotency_key(nonce),
                subject,
            )
        finally:
            # The processor has answered (or the charge was refused before it): the card is not needed again.
            with contextlib.suppress(StoreUnavailable, NotFound):
                await self.vault.delete(principal, token_id)
        return outcome.charge

    # -- reading ----------------------------------------------------------------------------------------
    def may_see(self, session: StaffSession, meta: OrderMeta) -> bool:
        if allows(session.role, Permission.VIEW_TEAM_ORDERS):
            return True
        return allows(session.role, Permission.VIEW_OWN_ORDERS) and meta.staff_id == session.staff_id

    async def get(self, session: StaffSession, charge_id: str) -> OrderRow | None:
        """The order if it exists in the session's agency, was taken here, and this session may see it."""
        meta = await self.orders.meta(session.agency_id, charge_id) if charge_id.startswith("ch_") else None
        if meta is None or not self.may_see(session, meta):
            return None
        principal = await self.principal(session.agency_id)
        try:
            charge = await self.charges.get(principal, charge_id)
        except NotFound:
            return None
        return OrderRow(meta, charge)

    async def list(self, session: StaffSession, wanted: OrderFilter) -> list[OrderRow]:
        rows = []
        for meta, raw in await self.orders.between(session.agency_id, wanted.since, wanted.until):
            row = OrderRow(meta, Charge.from_json(raw))
            if self.may_see(session, meta) and wanted.keeps(row):
                rows.append(row)
        return rows

    # -- refunds and voids -------------------------------------------------------------------------------
    async def _claim_action(
        self, session: StaffSession, actor: Actor, action: str, charge_id: str, nonce: str
    ) -> ActionResult | None:
        claim = await self.forms.claim(session.agency_id, nonce, session.staff_id, action, charge_id, action)
        if claim.state in ("unknown", "mismatch"):
            await self.auditor.record(actor, action, Outcome.REFUSED, charge_id, f"form nonce {claim.state}")
            return ActionResult("refused", message="This form is no longer valid. Open the order and try again.")
        if claim.state != "claimed":
            await self.auditor.record(actor, action, Outcome.REFUSED, charge_id, "form submitted again")
            return ActionResult("duplicate", message="This was already submitted; nothing was done twice.")
        return None

    async def refund(
        self, session: StaffSession, actor: Actor, charge_id: str, nonce: str, amount: int | None
    ) -> ActionResult:
        refused = await self._claim_action(session, actor, Action.REFUND, charge_id, nonce)
        if refused is not None:
            return refused
        principal = await self.principal(session.agency_id)
        if (await self.charges.get(principal, charge_id)).voidable(self.clock()):
            await self.forms.release(session.agency_id, nonce)
            await self.auditor.record(actor, Action.REFUND, Outcome.REFUSED, charge_id, "not settled: void instead")
            return ActionResult("refused", message=NOT_SETTLED_MESSAGE)
        try:
            outcome, refund = await self.charges.refund(principal, charge_id, amount)
        except ApiError as exc:
            await self.forms.release(session.agency_id, nonce)
            await self.auditor.record(actor, Action.REFUND, Outcome.REFUSED, charge_id, exc.code)
            return ActionResult("refused", message=str(exc.detail or exc))
        await self.forms.finish(session.agency_id, nonce)
        if outcome.error is not None or refund is None or refund.status != "succeeded":
            reason = outcome.error.code if outcome.error is not None else "declined by the processor"
            await self.auditor.record(actor, Action.REFUND, Outcome.FAILURE, charge_id, reason)
            return ActionResult("refused", outcome.charge, f"The processor did not refund this order ({reason}).")
        await self.auditor.record(
            actor, Action.REFUND, Outcome.SUCCESS, charge_id, f"{format_amount(refund.amount)} refund {refund.id}"
        )
        return ActionResult("done", outcome.charge, f"Refunded {format_amount(refund.amount)}.")

    async def void(self, session: StaffSession, actor: Actor, charge_id: str, nonce: str) -> ActionResult:
        refused = await self._claim_action(session, actor, Action.VOID, charge_id, nonce)
        if refused is not None:
            return refused
        principal = await self.principal(session.agency_id)
        try:
            outcome = await self.charges.void(principal, charge_id)
        except ApiError as exc:
            await self.forms.release(session.agency_id, nonce)
            await self.auditor.record(actor, Action.VOID, Outcome.REFUSED, charge_id, exc.code)
            message = SETTLED_MESSAGE if exc.code == "charge_settled" else str(exc.detail or exc)
            return ActionResult("refused", message=message)
        await self.forms.finish(session.agency_id, nonce)
        if outcome.error is not None or outcome.charge.status is not ChargeStatus.VOIDED:
            await self.auditor.record(actor, Action.VOID, Outcome.FAILURE, charge_id, "not voided")
            return ActionResult("refused", outcome.charge, "The processor did not void this order.")
        await self.auditor.record(actor, Action.VOID, Outcome.SUCCESS, charge_id)
        return ActionResult("done", outcome.charge, "The order was voided.")


def refundable(charge: Charge) -> bool:
    return charge.status is ChargeStatus.SUCCEEDED and charge.amount_captured > charge.amount_refunded


def utc_day_bounds(day: dt.date) -> tuple[float, float]:
    start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp()
    return start, start + 86400
