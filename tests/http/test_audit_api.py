"""The REST API's audit records (PCI DSS 10.2) through the real app and Redis: refused keys (sampled), token
deletions, charges and what follows them, forwards, checkout completions; never card data; and the
staff audit page's chain line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from service.adapters.audit_log import audit_key
from service.adapters.keyring import MasterKeys
from service.agency_settings import AgencySettingsService
from service.app import create_app
from service.audit_chains import save_statuses, verify_chain
from service.domain.audit import AuditRecord
from service.domain.staff import Role
from service.http.state import SERVICES
from tests.conftest import AgencyKeys, FakeClock, make_settings
from tests.http.checkout_fixtures import DECLINED_CARD, complete, create_session, token_for
from tests.support import leaks
from tests.support.cards import CVC, VISA
from tests.support.destination_server import DestinationServer
from tests.support.redis_server import RedisServer
from tests.support.staff_pages import staff_member

Client = TestClient[Any, Any]


async def records(client: Client, agency_id: str) -> list[AuditRecord]:
    """The chain's queryable records, oldest first."""
    auditor = client.app[SERVICES].auditor
    assert auditor is not None
    return list(reversed(await auditor.log.newest(agency_id)))


async def system_seq(client: Client) -> int:
    newest = await records(client, "")
    return newest[-1].seq if newest else 0


def start_of_a_minute(clock: FakeClock) -> None:
    """Move the app's clock to just after a minute starts, so a burst stays within one sampling window."""
    clock.advance(60 - clock() % 60 + 0.5)


async def charge(client: Client, agency: AgencyKeys, number: str = VISA, **body: Any) -> Any:
    token = await token_for(client, agency, number)
    request = {"token": token, "amount": 2500, "currency": "usd", **body}
    return await client.post("/v1/charges", json=request, headers=agency.auth)


class TestRefusedKeys:
    async def test_bad_keys_are_sampled_per_address_and_minute(self, client: Client, clock: FakeClock) -> None:
        """25 unknown keys and 3 missing ones from one address in one minute: the 1st and 10th unknown key
        and the 1st missing one are recorded in the system chain, with the address; never the key."""
        start_of_a_minute(clock)
        before = await system_seq(client)
        bad_key = "sk_" + "x" * 40
        for _ in range(25):
            response = await client.get("/v1/tokens/tok_" + "a" * 24, headers={"Authorization": f"Bearer {bad_key}"})
            assert response.status == 401
        for _ in range(3):
            assert (await client.get("/v1/tokens/tok_" + "a" * 24)).status == 401
        mine = [r for r in await records(client, "") if r.seq > before and r.action == "api.auth"]
        assert [(r.outcome, r.detail.split(":")[0], r.source) for r in mine] == [
            ("refused", "invalid_api_key", "127.0.0.1"),
            ("refused", "invalid_api_key", "127.0.0.1"),
            ("refused", "missing_api_key", "127.0.0.1"),
        ]
        assert "10 so far this minute" in mine[1].detail
        assert all(bad_key not in json.dumps(r.to_fields()) for r in mine)

    async def test_a_publishable_key_from_a_foreign_origin_is_recorded_for_its_agency(
        self, client: Client, agency: AgencyKeys
    ) -> None:
        headers = {**agency.public_auth, "Origin": "https://evil.example"}
        body = {"card": {"number": VISA, "exp_month": 12, "exp_year": 2031, "cvc": CVC}}
        assert (await client.post("/v1/tokens", json=body, headers=headers)).status == 403
        assert (await client.get("/v1/tokens/tok_" + "a" * 24, headers=agency.public_auth)).status == 403
        found = [(r.action, r.outcome, r.detail, r.role) for r in await records(client, agency.id)]
        assert found == [
            ("api.authorization", "refused", "origin_not_allowed", "publishable_key"),
            ("api.authorization", "refused", "secret_key_required", "publishable_key"),
        ]


class TestTokensAndCharges:
    async def test_token_deletions_and_their_refusals(self, client: Client, agency: AgencyKeys) -> None:
        """A deletion is recorded with the token id; deleting it again and a card number typed as a token id
        are refusals, and the card number is not in the record."""
        token = await token_for(client, agency)
        assert (await client.delete(f"/v1/tokens/{token}", headers=agency.auth)).status == 204
        assert (await client.delete(f"/v1/tokens/{token}", headers=agency.auth)).status == 404
        assert (await client.delete(f"/v1/tokens/{VISA}", headers=agency.auth)).status == 404
        found = [(r.action, r.outcome, r.object, r.detail) for r in await records(client, agency.id)]
        assert found[:2] == [
            ("token.delete", "success", token, ""),
            ("token.delete", "refused", token, "token_not_found"),
        ]
        assert found[2][:2] == ("token.delete", "refused")
        assert VISA not in found[2][2]

    async def test_charge_outcomes_refunds_and_replays(self, client: Client, agency: AgencyKeys) -> None:
        """An approved charge, a declined one, a refund, a refused second full refund: each one record with
        status, amount and codes; a replay under the same Idempotency-Key adds nothing."""
        approved = await charge(client, agency, order_reference="A-1")
        assert approved.status == 201
        charge_id = (await approved.json())["id"]
        declined = await charge(client, agency, DECLINED_CARD)
        assert declined.status == 402
        refund_headers = {**agency.auth, "Idempotency-Key": "refund-1"}
        for _ in range(2):  # the second is a replay of the first answer
            refund = await client.post(f"/v1/charges/{charge_id}/refunds", json={}, headers=refund_headers)
            assert refund.status == 201
        again = await client.post(f"/v1/charges/{charge_id}/refunds", json={}, headers=agency.auth)
        assert again.status == 409
        found = [(r.action, r.outcome, r.object, r.detail) for r in await records(client, agency.id)]
        assert found[0] == ("charge.create", "success", charge_id, "succeeded; 2500 usd")
        assert found[1][:2] == ("charge.create", "failure")
        assert found[1][3].startswith("declined; 2500 usd; decline ")
        assert found[2][:3] == ("charge.refund", "success", charge_id)
        assert found[2][3].endswith("succeeded; 2500 usd")
        assert found[3] == ("charge.refund", "refused", charge_id, "charge_fully_refunded")
        assert len(found) == 4

    async def test_capture_and_void(self, client: Client, agency: AgencyKeys) -> None:
        first = await (await charge(client, agency, capture=False)).json()
        second = await (await charge(client, agency, capture=False)).json()
        assert (await client.post(f"/v1/charges/{first['id']}/capture", headers=agency.auth)).status == 200
        assert (await client.post(f"/v1/charges/{second['id']}/void", headers=agency.auth)).status == 200
        found = [(r.action, r.outcome, r.object) for r in await records(client, agency.id)]
        assert ("charge.capture", "success", first["id"]) in found
        assert ("charge.void", "success", second["id"]) in found

    async def test_checkout_completion_is_recorded(self, client: Client, agency: AgencyKeys) -> None:
        session = await create_session(client, agency)
        token = await token_for(client, agency)
        assert (await complete(client, agency, session, token)).status == 200
        done = [r for r in await records(client, agency.id) if r.action == "checkout.complete"]
        assert [(r.outcome, r.object, r.role) for r in done] == [("success", session["id"], "publishable_key")]
        assert done[0].detail.startswith("paid; 2500 usd; charge ch_")
        assert done[0].detail.endswith(" succeeded")

    async def test_the_chain_of_api_records_verifies_and_holds_no_card_data(
        self, client: Client, agency: AgencyKeys, redis_server: RedisServer
    ) -> None:
        await charge(client, agency)
        await charge(client, agency, DECLINED_CARD)
        auditor = client.app[SERVICES].auditor
        assert auditor is not None
        assert (await verify_chain(auditor.log, agency.id)).ok
        raw = redis_server.client().xrange(audit_key(agency.id))
        text = json.dumps([{k.decode(): v.decode() for k, v in fields.items()} for _, fields in raw])
        assert leaks.cards_in_text(text) == []
        assert CVC not in {v.decode() for _, fields in raw for v in fields.values()}


class TestForward:
    async def test_forwards_are_recorded_with_method_host_and_status(
        self,
        aiohttp_client: Any,
        redis_server: RedisServer,
        master_keys: MasterKeys,
        tmp_path: Path,
        agency: AgencyKeys,
    ) -> None:
        async with DestinationServer(tmp_path) as destination:
            settings = make_settings(redis_server.url, tmp_path / "fwd", forward__ca_file=str(destination.ca_pem))
            client: Client = await aiohttp_client(
                create_app(settings, master_keys, redis_url=redis_server.url, tls=False)
            )
            agencies = client.app[SERVICES].agencies
            assert agencies is not None
            await AgencySettingsService(agencies).allow_destination(
                agency.slug, destination.url("/pay"), allow_private=True
            )
            token = await token_for(client, agency)
            body = {
                "destination": destination.url("/pay/charge?ref=secret-ref"),
                "method": "POST",
                "headers": {"Content-Type": "application/json"},
                "body": json.dumps({"n": "{{ " + token + ".number }}"}),
            }
            assert (await client.post("/v1/forward", json=body, headers=agency.auth)).status == 200
            refused = {**body, "destination": "https://elsewhere.example/pay"}
            assert (await client.post("/v1/forward", json=refused, headers=agency.auth)).status == 403
        found = [(r.action, r.outcome, r.detail) for r in await records(client, agency.id)]
        assert found == [
            ("forward.request", "success", f"POST https://localhost:{destination.port}; 200"),
            ("forward.request", "refused", "destination_not_allowed"),
        ]


class TestStaffPage:
    async def test_the_audit_page_shows_the_last_verification(
        self, client: Client, clock: FakeClock, agency: AgencyKeys
    ) -> None:
        auditor_user = await staff_member(client, clock, agency.slug, f"aud-{agency.id[-6:]}", Role.AUDITOR)
        page = await auditor_user.browser.get("/staff/audit")
        assert "has not been verified yet" in page.text
        auditor = client.app[SERVICES].auditor
        assert auditor is not None
        report = await verify_chain(auditor.log, agency.id)
        await save_statuses(auditor.log, [report], clock())
        page = await auditor_user.browser.get("/staff/audit")
        assert f"intact, {report.records} records." in page.text
        assert "Chain verified" in page.text
