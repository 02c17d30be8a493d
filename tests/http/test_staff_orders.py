"""The virtual terminal's order pages over HTTP: taking orders, receipts, refunds by role, lists, exports, refusals."""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest

from service.domain.staff import Role
from service.http.state import SERVICES
from tests.conftest import AgencyKeys, FakeClock, create_agency
from tests.support import leaks
from tests.support.cards import AMEX, CVC
from tests.support.keys import agency_data_keys
from tests.support.redis_server import RedisServer
from tests.support.staff_pages import DAY, StaffUser, audit_records, sign_in, staff_member

Client = Any
DECLINED = "4000000000000002"


def order(page: Any, **changes: str) -> dict[str, str]:
    data = {
        "csrf": page.csrf,
        "form_id": page.hidden("form_id"),
        "channel": "phone",
        "amount": "25.00",
        "order_reference": "FL-2026-0042",
        "description": "Annual fishing licence",
        "cardholder_name": "A. Caller",
        "card_number": "4242 4242 4242 4242",
        "expiry": "12/31",
        "cvc": CVC,
        "postal_code": "40601",
    }
    data.update(changes)
    return data


async def take(user: StaffUser, **changes: str) -> Any:
    page = await user.browser.get("/staff/orders/new")
    assert page.status == 200
    return await user.browser.post("/staff/orders/new", order(page, **changes))


async def charges_in_index(client: Client, agency: AgencyKeys) -> int:
    redis = client.app[SERVICES].store.redis
    return int(await redis.zcard(f"cv:{{{agency.id}}}:staff-orders"))


async def actions(client: Client, agency: AgencyKeys) -> list[tuple[str, str]]:
    return [(r.action, r.outcome) for r in await audit_records(client, agency.id)]


@pytest.fixture
async def team(client: Client, clock: FakeClock) -> dict[str, Any]:
    agency = await create_agency(client)
    tag = agency.id[-8:]
    members = {"agency": agency}
    for role in Role:
        members[str(role)] = await staff_member(client, clock, agency.slug, f"{role}-{tag}", role)
    return members


class TestTakingOrders:
    async def test_an_approved_phone_order_shows_a_receipt_without_the_card(self, client: Client, team: Any) -> None:
        """Submitting tokenizes and charges at once; the receipt has status, brand, last four, auth code and who."""
        agent = team["agent"]
        done = await take(agent)
        assert done.status == 303
        receipt = await agent.browser.get(done.location)
        assert receipt.status == 200
        text = receipt.text
        assert "Approved" in text
        assert "Visa ending in 4242" in text
        assert "$25.00" in text
        assert agent.username in text
        assert "sbx_" in text
        assert not leaks.cards_in_text(text)
        assert f">{CVC}<" not in text
        assert f'value="{CVC}"' not in text
        assert receipt.headers["Cache-Control"] == "no-store"

    async def test_a_declined_card_is_recorded_and_shown_as_declined(self, client: Client, team: Any) -> None:
        """The sandbox's decline card gives a receipt that says Declined with the reason, audited as a failure."""
        agent = team["agent"]
        done = await take(agent, card_number=DECLINED)
        receipt = await agent.browser.get(done.location)
        assert "Declined" in receipt.text
        assert "generic decline" in receipt.text
        assert ("order.create", "failure") in await actions(client, team["agency"])

    async def test_submitting_the_same_form_twice_charges_once(self, client: Client, team: Any) -> None:
        """A double click or reload of the POST lands on the same receipt; the processor is called once."""
        agent = team["agent"]
        page = await agent.browser.get("/staff/orders/new")
        first = await agent.browser.post("/staff/orders/new", order(page))
        second = await agent.browser.post("/staff/orders/new", order(page))
        assert first.status == second.status == 303
        assert second.location.split("?")[0] == first.location
        assert await charges_in_index(client, team["agency"]) == 1
        assert ("order.create", "refused") in await actions(client, team["agency"])

    async def test_the_token_is_gone_after_the_order(
        self, client: Client, team: Any, redis_server: RedisServer
    ) -> None:
        """After the processor answered, the vault holds no ciphertext of the card (refunds use the processor id)."""
        await take(team["agent"])
        tokens = list(agency_data_keys(redis_server.client(), team["agency"].id, "tok"))
        assert tokens == []

    async def test_invalid_fields_answer_inline_errors_and_keep_what_was_typed(self, client: Client, team: Any) -> None:
        """A bad amount and expiry answer 422 with accessible errors; other fields are kept, card and CVC are not."""
        agent = team["agent"]
        page = await take(agent, amount="25.001", expiry="13/20", cardholder_name="Kept Name")
        assert page.status == 422
        assert 'role="alert"' in page.text
        assert 'aria-invalid="true"' in page.text
        assert 'aria-describedby="f-amount-hint f-amount-error"' in page.text
        assert 'value="Kept Name"' in page.text
        assert 'value="25.001"' in page.text
        assert not leaks.cards_in_text(page.text)
        assert await charges_in_index(client, team["agency"]) == 0

    @pytest.mark.parametrize("field", ["description", "order_reference"])
    async def test_a_card_number_in_another_field_is_refused(self, client: Client, team: Any, field: str) -> None:
        """A card number pasted into the description or reference is refused, not echoed, not charged, audited."""
        agent = team["agent"]
        page = await take(agent, **{field: f"card {AMEX} from caller" if field == "description" else AMEX})
        assert page.status == 422
        assert "Card numbers go only in the card number field" in page.text
        assert not leaks.cards_in_text(page.text)
        assert await charges_in_index(client, team["agency"]) == 0
        records = await audit_records(client, team["agency"].id)
        assert any(r.action == "order.input" and field in r.detail for r in records)

    async def test_tampered_form_id_is_refused(self, client: Client, team: Any) -> None:
        """A form id that was never issued, or issued to someone else, charges nothing and is audited."""
        agent, supervisor = team["agent"], team["supervisor"]
        page = await agent.browser.get("/staff/orders/new")
        forged = await agent.browser.post("/staff/orders/new", order(page, form_id="A" * 32))
        assert forged.status == 422
        assert "no longer valid" in forged.text
        theirs = await supervisor.browser.get("/staff/orders/new")
        stolen = await agent.browser.post("/staff/orders/new", order(page, form_id=theirs.hidden("form_id")))
        assert stolen.status == 422
        assert await charges_in_index(client, team["agency"]) == 0
        assert ("order.form", "refused") in await actions(client, team["agency"])

    @pytest.mark.parametrize("token", [None, "forged-token-value"])
    async def test_missing_or_forged_csrf_is_refused(self, client: Client, team: Any, token: str | None) -> None:
        """Without the session's CSRF token the order is refused with 403, nothing is charged, and it is audited."""
        agent = team["agent"]
        page = await agent.browser.get("/staff/orders/new")
        data = order(page)
        if token is None:
            del data["csrf"]
        else:
            data["csrf"] = token
        refused = await agent.browser.post("/staff/orders/new", data)
        assert refused.status == 403
        assert await charges_in_index(client, team["agency"]) == 0
        assert ("csrf", "refused") in await actions(client, team["agency"])


class TestRoles:
    async def test_supervisor_refunds_after_confirming(self, client: Client, clock: FakeClock, team: Any) -> None:
        """After settlement a supervisor sees Refund on the agent's order, confirms, and the refund is recorded
        once even if posted twice (voids before settlement: test_staff_voids.py)."""
        done = await take(team["agent"])
        supervisor = team["supervisor"]
        clock.advance(DAY)  # past the sandbox's daily settlement cut-off
        await sign_in(supervisor, clock)
        receipt = await supervisor.browser.get(done.location)
        assert "Void…" not in receipt.text
        assert "Refund…" in receipt.text
        confirm = await supervisor.browser.get(done.location + "/refund")
        assert confirm.status == 200
        assert "cannot be undone" in confirm.text
        form = {"csrf": confirm.csrf, "form_id": confirm.hidden("form_id"), "amount": "25.00"}
        refunded = await supervisor.browser.post(done.location + "/refund", form)
        assert refunded.status == 200
        assert "Refunded 25.00" in refunded.text
        again = await supervisor.browser.post(done.location + "/refund", form)
        assert again.status == 409
        charge_id = done.location.rsplit("/", 1)[1]
        records = [r for r in await audit_records(client, team["agency"].id) if r.object == charge_id]
        assert [(r.action, r.outcome) for r in records if r.action == "order.refund"] == [
            ("order.refund", "refused"),
            ("order.refund", "success"),
        ]

    async def test_an_agent_may_not_refund(self, client: Client, team: Any) -> None:
        """The refund page and its POST answer 403 to an agent, and the refusal is audited."""
        agent = team["agent"]
        done = await take(agent)
        receipt = await agent.browser.get(done.location)
        assert "Refund…" not in receipt.text
        assert (await agent.browser.get(done.location + "/refund")).status == 403
        posted = await agent.browser.post(done.location + "/refund", {"csrf": receipt.csrf, "amount": "1.00"})
        assert posted.status == 403
        assert ("authorization", "refused") in await actions(client, team["agency"])

    async def test_roles_reach_only_their_pages(self, client: Client, team: Any) -> None:
        """Auditors cannot take orders, agents cannot read the audit trail, admins see only the team page."""
        refusals = [
            (team["auditor"], "/staff/orders/new"),
            (team["agent"], "/staff/audit"),
            (team["supervisor"], "/staff/audit"),
            (team["admin"], "/staff/orders"),
            (team["agent"], "/staff/team"),
            (team["agent"], "/staff/orders.csv"),
        ]
        for user, path in refusals:
            assert (await user.browser.get(path)).status == 403, (user.username, path)
        assert (await team["auditor"].browser.get("/staff/audit")).status == 200
        assert (await team["admin"].browser.get("/staff/team")).status == 200

    async def test_agents_see_only_their_own_orders(self, client: Client, team: Any) -> None:
        """An agent cannot open the supervisor's order (404) and the list shows only the agent's own."""
        mine = await take(team["agent"], order_reference="MINE-1")
        theirs = await take(team["supervisor"], order_reference="THEIRS-1")
        agent = team["agent"]
        assert (await agent.browser.get(theirs.location)).status == 404
        listing = await agent.browser.get("/staff/orders")
        assert "MINE-1" in listing.text
        assert "THEIRS-1" not in listing.text
        team_view = await team["auditor"].browser.get("/staff/orders")
        assert "MINE-1" in team_view.text
        assert "THEIRS-1" in team_view.text
        assert (await agent.browser.get(mine.location)).status == 200

    async def test_another_agencys_staff_see_nothing(self, client: Client, clock: FakeClock, team: Any) -> None:
        """A supervisor of another agency gets 404 for this agency's order and an empty list; it is audited there."""
        done = await take(team["agent"], order_reference="OURS-7")
        other = await create_agency(client)
        stranger = await staff_member(client, clock, other.slug, f"sup-{other.id[-8:]}", Role.SUPERVISOR)
        assert (await stranger.browser.get(done.location)).status == 404
        assert (await stranger.browser.get(done.location + "/refund")).status == 404
        assert "OURS-7" not in (await stranger.browser.get("/staff/orders")).text
        assert ("order.view", "refused") in await actions(client, other)


class TestListsAndExports:
    async def test_filters_and_search(self, client: Client, team: Any) -> None:
        """The list filters by status, channel, staff member and reference."""
        await take(team["agent"], order_reference="PHONE-1")
        await take(team["agent"], order_reference="FAX-1", channel="fax", card_number=DECLINED, cvc="")
        auditor = team["auditor"]
        declined = (await auditor.browser.get("/staff/orders?status=declined")).text
        assert "FAX-1" in declined
        assert "PHONE-1" not in declined
        fax = (await auditor.browser.get("/staff/orders?channel=fax")).text
        assert "FAX-1" in fax
        assert "PHONE-1" not in fax
        search = (await auditor.browser.get("/staff/orders?q=phone")).text
        assert "PHONE-1" in search
        assert "FAX-1" not in search
        nobody = (await auditor.browser.get("/staff/orders?staff=someone-else")).text
        assert "PHONE-1" not in nobody
        bad = await auditor.browser.get("/staff/orders?from=yesterday")
        assert bad.status == 422

    async def test_csv_export_escapes_formulas_and_is_audited(self, client: Client, team: Any) -> None:
        """A description that starts with = is exported as text ('=...), and the export is in the audit trail."""
        await take(team["agent"], description='=HYPERLINK("http://x")', order_reference="CSV-1")
        response = await client.get(
            "/staff/orders.csv", headers={"Cookie": f"__Host-cv_staff={team['supervisor'].browser.cookie}"}
        )
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(await response.text())))
        assert rows[0]["description"].startswith("'=")
        assert rows[0]["last4"] == "4242"
        assert not leaks.cards_in_text(await response.text())
        assert ("export.orders", "success") in await actions(client, team["agency"])

    async def test_audit_page_and_csv_for_auditors(self, client: Client, team: Any) -> None:
        """Auditors read the trail with filters and export it; every record names who, what, outcome and source."""
        await take(team["agent"])
        auditor = team["auditor"]
        page = await auditor.browser.get("/staff/audit?action=order.create")
        assert page.status == 200
        assert "<td>order.create</td>" in page.text
        assert "<td>login.password</td>" not in page.text
        response = await client.get(
            "/staff/audit.csv?outcome=success", headers={"Cookie": f"__Host-cv_staff={auditor.browser.cookie}"}
        )
        rows = list(csv.DictReader(io.StringIO(await response.text())))
        assert rows
        assert all(r["outcome"] == "success" for r in rows)
        assert {"at", "actor", "action", "outcome", "source", "object"} <= set(rows[0])
        assert ("export.audit", "success") in await actions(client, team["agency"])


class TestHeaders:
    async def test_every_staff_page_has_a_nonce_csp_and_no_store(self, client: Client, team: Any) -> None:
        """Staff pages send CSP with a per-response script nonce and frame-ancestors 'none', and no-store."""
        agent = team["agent"]
        first = await agent.browser.get("/staff/orders/new")
        second = await agent.browser.get("/staff/orders/new")
        for page in (first, second):
            policy = page.headers["Content-Security-Policy"]
            assert "frame-ancestors 'none'" in policy
            assert "script-src 'nonce-" in policy
            assert "unsafe-inline" not in policy
            assert page.headers["Cache-Control"] == "no-store"
            nonce = policy.split("'nonce-")[1].split("'")[0]
            assert all(f'nonce="{nonce}"' in tag for tag in page.text.split("<script")[1:])
        assert first.headers["Content-Security-Policy"] != second.headers["Content-Security-Policy"]
        assert 'autocomplete="off"' in first.text
        login = await client.get("/staff/login")
        assert login.headers["Cache-Control"] == "no-store"
        assert "http://" not in first.text
        assert "https://" not in first.text

    async def test_hsts_over_tls(self, aiohttp_client: Any, settings: Any, master_keys: Any) -> None:
        """An app serving TLS adds Strict-Transport-Security to staff pages."""
        from service.app import create_app

        app = create_app(settings, master_keys, redis_url=settings.redis.url or "", tls=True)
        tls_client = await aiohttp_client(app)
        response = await tls_client.get("/staff/login")
        assert response.headers["Strict-Transport-Security"].startswith("max-age=")
        assert (await tls_client.get("/staff/static/staff.css")).status == 200
