"""Voids and refunds from the receipt: a sale is voided until the processor settles it, refunded after.

The clock starts at 10:00 UTC (twelve hours before the sandbox's 22:00 cut-off), so an order taken in a
test is voidable until the test moves the clock past the cut-off.  The Authorize.Net cases run against the
local fake gateway, which refuses the void of a settled transaction as the real one does (reason 16).
"""

from __future__ import annotations

from typing import Any

import pytest

from service.domain.staff import Role
from service.staff_orders import NOT_SETTLED_MESSAGE, SETTLED_MESSAGE
from tests.conftest import AgencyKeys, FakeClock, create_agency
from tests.http.charge_fixtures import with_authorize_net
from tests.http.test_staff_orders import actions, take
from tests.support.fake_authorize_net import FakeAuthorizeNet
from tests.support.staff_pages import StaffUser, audit_records, move_to_morning, sign_in, staff_member

Client = Any
PAST_CUT_OFF = 13 * 3600  # from 10:00 UTC to 23:00 UTC


@pytest.fixture
def clock() -> FakeClock:
    return move_to_morning(FakeClock())


async def people(client: Client, clock: FakeClock, agency: AgencyKeys) -> tuple[StaffUser, StaffUser]:
    tag = agency.id[-8:]
    agent = await staff_member(client, clock, agency.slug, f"agent-{tag}", Role.AGENT)
    supervisor = await staff_member(client, clock, agency.slug, f"sup-{tag}", Role.SUPERVISOR)
    return agent, supervisor


async def charge_of(client: Client, agency: AgencyKeys, receipt_path: str) -> dict[str, Any]:
    """The charge as the public API shows it: the API and the staff pages must agree."""
    charge_id = receipt_path.rsplit("/", 1)[1]
    response = await client.get(f"/v1/charges/{charge_id}", headers=agency.auth)
    assert response.status == 200
    found: dict[str, Any] = await response.json()
    return found


async def confirm_and_void(supervisor: StaffUser, receipt_path: str) -> Any:
    confirm = await supervisor.browser.get(receipt_path + "/void")
    assert confirm.status == 200, confirm.text
    assert "cannot be undone" in confirm.text
    form = {"csrf": confirm.csrf, "form_id": confirm.hidden("form_id")}
    return await supervisor.browser.post(receipt_path + "/void", form), form


async def refund_in_full(supervisor: StaffUser, receipt_path: str) -> Any:
    confirm = await supervisor.browser.get(receipt_path + "/refund")
    assert confirm.status == 200, confirm.text
    assert 'value="25.00"' in confirm.text  # what is left to refund, proposed
    form = {"csrf": confirm.csrf, "form_id": confirm.hidden("form_id"), "amount": "25.00"}
    return await supervisor.browser.post(receipt_path + "/refund", form)


class TestVoidBeforeSettlement:
    async def test_supervisor_voids_an_approved_order_before_settlement(self, client: Client, clock: FakeClock) -> None:
        """The receipt offers Void (not Refund) until the cut-off; confirming voids it once, audited, and the
        public API shows the same charge voided."""
        agency = await create_agency(client)
        agent, supervisor = await people(client, clock, agency)
        done = await take(agent)
        receipt = await supervisor.browser.get(done.location)
        assert "Void…" in receipt.text
        assert "Refund…" not in receipt.text
        assert "can be voided until then" in receipt.text
        too_early = await supervisor.browser.get(done.location + "/refund")
        assert too_early.status == 409
        assert NOT_SETTLED_MESSAGE in too_early.text
        voided, form = await confirm_and_void(supervisor, done.location)
        assert voided.status == 200
        assert "The order was voided." in voided.text
        assert "Voided" in voided.text
        assert "Void…" not in voided.text
        assert "Refund…" not in voided.text
        again = await supervisor.browser.post(done.location + "/void", form)
        assert again.status == 409
        charge = await charge_of(client, agency, done.location)
        assert (charge["status"], charge["amount_captured"]) == ("voided", 0)
        charge_id = charge["id"]
        voids = [(r.outcome, r.actor) for r in await audit_records(client, agency.id) if r.action == "order.void"]
        assert voids == [("refused", supervisor.username), ("success", supervisor.username)]
        assert all(r.object == charge_id for r in await audit_records(client, agency.id) if r.action == "order.void")

    async def test_an_agent_may_not_void(self, client: Client, clock: FakeClock) -> None:
        """An agent sees no Void on the receipt; the page and its POST answer 403, audited; nothing is voided."""
        agency = await create_agency(client)
        agent, _ = await people(client, clock, agency)
        done = await take(agent)
        receipt = await agent.browser.get(done.location)
        assert "Void…" not in receipt.text
        assert (await agent.browser.get(done.location + "/void")).status == 403
        posted = await agent.browser.post(done.location + "/void", {"csrf": receipt.csrf, "form_id": "A" * 32})
        assert posted.status == 403
        assert ("authorization", "refused") in await actions(client, agency)
        assert (await charge_of(client, agency, done.location))["status"] == "succeeded"


class TestAfterSettlement:
    async def test_a_void_after_the_cut_off_is_refused_and_the_refund_works(
        self, client: Client, clock: FakeClock
    ) -> None:
        """A void confirmed before the cut-off and sent after it is refused with the reason and a Refund
        button; the receipt then offers only Refund, and the refund goes through."""
        agency = await create_agency(client)
        agent, supervisor = await people(client, clock, agency)
        done = await take(agent)
        confirm = await supervisor.browser.get(done.location + "/void")
        stale = {"csrf": confirm.csrf, "form_id": confirm.hidden("form_id")}
        clock.advance(PAST_CUT_OFF)
        assert (await sign_in(supervisor, clock)).status == 303
        stale["csrf"] = (await supervisor.browser.get(done.location)).csrf
        refused = await supervisor.browser.post(done.location + "/void", stale)
        assert refused.status == 422
        assert SETTLED_MESSAGE in refused.text
        assert 'role="alert"' in refused.text
        assert "Refund…" in refused.text
        assert "Void…" not in refused.text
        assert (await supervisor.browser.get(done.location + "/void")).status == 409
        refunded = await refund_in_full(supervisor, done.location)
        assert refunded.status == 200
        assert "Refunded 25.00" in refunded.text
        charge = await charge_of(client, agency, done.location)
        assert (charge["status"], charge["amount_refunded"]) == ("succeeded", 2500)
        assert ("order.void", "refused") in await actions(client, agency)
        assert ("order.refund", "success") in await actions(client, agency)


class TestAuthorizeNet:
    async def test_unsettled_sale_is_voided_at_the_gateway(
        self, pay_client: Client, clock: FakeClock, authnet: FakeAuthorizeNet
    ) -> None:
        """Before the gateway's batch runs, the supervisor's void reaches voidTransaction and succeeds."""
        authnet.auto_settle = False
        agency = await create_agency(pay_client)
        await with_authorize_net(pay_client, agency, authnet)
        agent, supervisor = await people(pay_client, clock, agency)
        done = await take(agent)
        voided, _ = await confirm_and_void(supervisor, done.location)
        assert voided.status == 200
        charge = await charge_of(pay_client, agency, done.location)
        assert charge["status"] == "voided"
        assert authnet.transactions[charge["processor"]["transaction_id"]].status == "voided"

    async def test_gateway_says_settled_then_the_page_offers_the_refund(
        self, pay_client: Client, clock: FakeClock, authnet: FakeAuthorizeNet
    ) -> None:
        """The vault cannot know an Authorize.Net merchant's cut-off: the receipt offers Void, the gateway
        refuses it as settled, the page says so and offers Refund, and the refund is approved."""
        authnet.auto_settle = False
        agency = await create_agency(pay_client)
        await with_authorize_net(pay_client, agency, authnet)
        agent, supervisor = await people(pay_client, clock, agency)
        done = await take(agent)
        authnet.settle()
        assert "Void…" in (await supervisor.browser.get(done.location)).text
        refused, _ = await confirm_and_void(supervisor, done.location)
        assert refused.status == 422
        assert SETTLED_MESSAGE in refused.text
        assert "Refund…" in refused.text
        assert "Void…" not in refused.text
        assert "Settled by the processor" in refused.text
        calls = authnet.counts["voidTransaction"]
        assert (await supervisor.browser.get(done.location + "/void")).status == 409
        refunded = await refund_in_full(supervisor, done.location)
        assert refunded.status == 200
        assert "Refunded 25.00" in refunded.text
        assert authnet.counts["voidTransaction"] == calls
        assert authnet.counts["refundTransaction"] == 1
