"""Issue 4's bad input that the other staff tests leave out: each gets a clear refusal, changes nothing, and is
in the audit trail of the agency concerned.

A session cookie edited to name another agency, a card number in any field but the card number, and the
hidden form id of a void or refund form moved to another order or another action.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from service.domain.staff import Role
from service.http.state import SERVICES
from tests.conftest import FakeClock, create_agency
from tests.http.test_staff_orders import take
from tests.support import leaks
from tests.support.cards import MASTERCARD
from tests.support.staff_pages import DAY, StaffBrowser, audit_records, sign_in, staff_member

Client = Any


async def charges_of(client: Client, agency: Any) -> int:
    return int(await client.app[SERVICES].store.redis.zcard(f"cv:{{{agency.id}}}:staff-orders"))


class TestForeignCookies:
    async def test_a_cookie_edited_to_name_another_agency_is_refused_and_audited_there(
        self, client: Client, clock: FakeClock
    ) -> None:
        """The edited cookie is no session (401, the sign-in page); the named agency's trail records the attempt
        with its source; a made-up agency id starts no trail of its own."""
        ours = await create_agency(client)
        theirs = await create_agency(client)
        user = await staff_member(client, clock, ours.slug, f"agent-{ours.id[-8:]}", Role.AGENT)
        assert user.browser.cookie is not None
        forged = StaffBrowser(client)
        forged.cookie = re.sub(r"agy_[0-9a-f]{16}", theirs.id, user.browser.cookie)
        refused = await forged.get("/staff/orders")
        assert refused.status == 401
        assert "Sign in" in refused.text
        attempts = [r for r in await audit_records(client, theirs.id) if r.action == "session.invalid"]
        assert [(r.outcome, r.actor, r.source) for r in attempts] == [("refused", "-", "127.0.0.1")]
        made_up = "agy_" + "0" * 16
        forged.cookie = re.sub(r"agy_[0-9a-f]{16}", made_up, user.browser.cookie)
        assert (await forged.get("/staff/orders")).status == 401
        assert await audit_records(client, made_up) == []


class TestCardNumbersInTheWrongField:
    @pytest.mark.parametrize("field", ["cardholder_name", "postal_code"])
    async def test_a_card_number_in_the_name_or_postal_code_is_refused(
        self, client: Client, clock: FakeClock, field: str
    ) -> None:
        """Like the description and reference: refused inline, not echoed, nothing charged, audited."""
        agency = await create_agency(client)
        agent = await staff_member(client, clock, agency.slug, f"agent-{agency.id[-8:]}", Role.AGENT)
        page = await take(agent, **{field: MASTERCARD})
        assert page.status == 422
        assert "Card numbers go only in the card number field" in page.text
        assert not leaks.cards_in_text(page.text)
        assert await charges_of(client, agency) == 0
        inputs = [r for r in await audit_records(client, agency.id) if r.action == "order.input"]
        assert len(inputs) == 1
        assert field in inputs[0].detail


class TestTamperedActionForms:
    async def test_a_void_or_refund_form_id_only_works_for_its_own_order_and_action(
        self, client: Client, clock: FakeClock
    ) -> None:
        """A void form's hidden id posted to another order, or as a refund, is refused and audited; the orders
        are untouched, and the genuine form still works afterwards."""
        agency = await create_agency(client)
        supervisor = await staff_member(client, clock, agency.slug, f"sup-{agency.id[-8:]}", Role.SUPERVISOR)
        first = (await take(supervisor, order_reference="TAMPER-1")).location
        second = (await take(supervisor, order_reference="TAMPER-2")).location
        confirm = await supervisor.browser.get(first + "/void")
        form = {"csrf": confirm.csrf, "form_id": confirm.hidden("form_id")}
        elsewhere = await supervisor.browser.post(second + "/void", form)
        assert elsewhere.status == 422
        assert "no longer valid" in elsewhere.text
        assert "Voided" not in elsewhere.text
        clock.advance(DAY)  # settled: a refund may be asked for, but not with the void form's id
        await sign_in(supervisor, clock)
        form["csrf"] = (await supervisor.browser.get(first)).csrf
        as_refund = await supervisor.browser.post(first + "/refund", {**form, "amount": "1.00"})
        assert as_refund.status == 422
        assert "no longer valid" in as_refund.text
        records = [(r.action, r.outcome, r.detail) for r in await audit_records(client, agency.id)]
        assert ("order.void", "refused", "form nonce mismatch") in records
        assert ("order.refund", "refused", "form nonce mismatch") in records
        assert "TAMPER-" not in (await supervisor.browser.get("/staff/orders?status=voided")).text
        listing = await supervisor.browser.get("/staff/orders?status=succeeded")
        assert ("TAMPER-1" in listing.text, "TAMPER-2" in listing.text, "(refunded" in listing.text) == (
            True,
            True,
            False,
        )
