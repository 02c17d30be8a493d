"""The sandbox processor's settlement: captures settle at the daily cut-off; voids before it, refunds after."""

from __future__ import annotations

import datetime as dt

from service.adapters.processors.base import TRANSACTION_SETTLED, AuthorizationRequest, CardDetails, Outcome
from service.adapters.processors.sandbox import SandboxProcessor, next_settlement, settles_at_of
from service.domain.cards import parse_card_number
from tests.support.cards import VISA

CUTOFF = dt.time(22, 0)
NINE_AM = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC).timestamp()
TEN_PM = dt.datetime(2026, 3, 2, 22, 0, tzinfo=dt.UTC).timestamp()


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def sale(capture: bool = True) -> AuthorizationRequest:
    card = CardDetails(parse_card_number(VISA), 12, 2031)
    return AuthorizationRequest(card=card, amount=2500, currency="usd", capture=capture, reference="ref")


class TestSettlement:
    def test_next_cut_off_is_strictly_after_the_capture(self) -> None:
        """A capture before 22:00 settles that day at 22:00; one at or after it settles the next day."""
        assert next_settlement(NINE_AM, CUTOFF) == int(TEN_PM)
        assert next_settlement(TEN_PM, CUTOFF) == int(TEN_PM) + 86400
        assert next_settlement(TEN_PM + 3600, CUTOFF) == int(TEN_PM) + 86400

    async def test_a_sale_voids_before_the_cut_off_and_not_after(self) -> None:
        """The sale's id carries its settlement time; a void after it is refused as transaction_settled."""
        clock = Clock(NINE_AM)
        sandbox = SandboxProcessor(settlement_cutoff=CUTOFF, clock=clock)
        approved = await sandbox.authorize(sale())
        assert approved.settles_at == int(TEN_PM)
        assert approved.transaction_id is not None
        assert settles_at_of(approved.transaction_id) == int(TEN_PM)
        assert (await sandbox.void(approved.transaction_id)).approved
        clock.now = TEN_PM
        refused = await sandbox.void(approved.transaction_id)
        assert (refused.outcome, refused.decline_code) == (Outcome.ERROR, TRANSACTION_SETTLED)
        assert (await sandbox.refund(approved.transaction_id, 2500, "usd", VISA[-4:])).approved

    async def test_an_authorization_settles_only_once_captured(self) -> None:
        """An authorization is voidable any day; its capture gets an id with the capture day's cut-off."""
        clock = Clock(NINE_AM)
        sandbox = SandboxProcessor(settlement_cutoff=CUTOFF, clock=clock)
        held = await sandbox.authorize(sale(capture=False))
        assert held.settles_at is None
        assert held.transaction_id is not None
        clock.now = NINE_AM + 3 * 86400
        assert (await sandbox.void(held.transaction_id)).approved
        captured = await sandbox.capture(held.transaction_id, 2500, "usd")
        assert captured.settles_at == int(TEN_PM) + 3 * 86400
        assert captured.transaction_id is not None
        assert captured.transaction_id.startswith(held.transaction_id + "_")
        again = await sandbox.capture(captured.transaction_id, 2500, "usd")
        assert again.transaction_id == captured.transaction_id
