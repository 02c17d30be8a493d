"""Card-testing defence over HTTP: 429 with Retry-After and a generic body, nothing written, overrides,
adaptive tightening, tenant isolation, the staff terminal.  (The 1,000-card bot run is test_velocity_bot.py.)

The apps here turn velocity limits on (the suite's default settings leave them
off) and take the client address from a test header, the way the proxy
middleware gives handlers the address the trusted proxy saw.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from service.adapters.charges_store import charge_key
from service.adapters.redis_base import agency_data_pattern
from service.adapters.velocity_store import VelocityStore
from service.agency_settings import AgencySettingsService
from service.charges import charge_id_for
from service.domain.staff import Role
from service.domain.velocity import Limit, parse_limit
from service.http.state import SERVICES
from tests.conftest import AgencyKeys, FakeClock, create_agency
from tests.http.velocity_fixtures import (
    DECLINED,
    Client,
    StartApp,
    complete,
    new_session,
    public,
    sk_token,
    start_app,
    token_body,
)
from tests.support import leaks
from tests.support.cards import MASTERCARD, VISA, VISA_ALT
from tests.support.staff_pages import audit_records, staff_member

GENERIC_DETAIL = "Too many attempts in a short time. Wait a little, then try again."


def without_request_id(problem: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in problem.items() if k != "request_id"}


async def token_keys(client: Client, agency: AgencyKeys) -> int:
    redis = client.app[SERVICES].store.redis
    return len([k async for k in redis.scan_iter(match=agency_data_pattern(agency.id)[:-1] + "tok:*", count=1000)])


async def override(client: Client, agency: AgencyKeys, **limits: str | None) -> None:
    agencies = client.app[SERVICES].agencies
    changes: dict[str, Limit | None] = {k.replace("_", ".", 1): parse_limit(v or "off") for k, v in limits.items()}
    await AgencySettingsService(agencies).set_velocity(agency.slug, changes)


async def trips(client: Client, agency: AgencyKeys) -> dict[str, int]:
    return await VelocityStore(client.app[SERVICES].store.redis).trip_counts(agency.id)


class TestRefusals:
    async def test_a_refused_token_is_a_generic_429_and_writes_nothing(self, start_app: StartApp) -> None:
        """Past the address's limit: 429, Retry-After, a problem that names no limit and no card; no token."""
        client = await start_app(tokens_per_address="2/10m")
        agency = await create_agency(client)
        headers = public(agency, "203.0.113.10")
        for _ in range(2):
            assert (await client.post("/v1/tokens", json=token_body(VISA), headers=headers)).status == 201
        before = await token_keys(client, agency)
        refused = await client.post("/v1/tokens", json=token_body(MASTERCARD), headers=headers)
        assert refused.status == 429
        assert refused.headers["Retry-After"] == "60"
        assert refused.headers["Content-Type"].startswith("application/problem+json")
        problem = await refused.json()
        assert without_request_id(problem) == {
            "type": "urn:cardvault:problem:rate_limited",
            "title": "Too many requests",
            "status": 429,
            "code": "rate_limited",
            "detail": GENERIC_DETAIL,
        }
        assert problem["request_id"] == refused.headers["X-Request-Id"]
        assert await token_keys(client, agency) == before
        text = await refused.text() + json.dumps(dict(refused.headers))
        assert not leaks.cards_in_text(text)
        assert "4444" not in leaks.without_request_ids(text)  # not even the last four of the refused card

    async def test_the_answer_is_the_same_whichever_limit_refused(self, start_app: StartApp) -> None:
        """Address, publishable key, card or agency: one body (but its request id), one Retry-After."""
        client = await start_app()
        answers = []
        for limit in ("tokens_address", "tokens_key", "tokens_card", "tokens_agency"):
            agency = await create_agency(client)
            await override(client, agency, **{limit: "1/1h"})
            first = await client.post("/v1/tokens", json=token_body(VISA), headers=public(agency, "203.0.113.20"))
            assert first.status == 201
            # The same card from another address trips only the card limit; the same address with another
            # card only the address limit; either trips the key and agency limits.
            again = VISA if limit == "tokens_card" else MASTERCARD
            address = "203.0.113.21" if limit != "tokens_address" else "203.0.113.20"
            refused = await client.post("/v1/tokens", json=token_body(again), headers=public(agency, address))
            assert refused.status == 429, limit
            assert await trips(client, agency) == {limit.replace("_", ".", 1): 1}
            answers.append((without_request_id(await refused.json()), refused.headers["Retry-After"]))
        assert all(answer == answers[0] for answer in answers)

    async def test_the_card_limit_is_blind_to_what_the_vault_knows_of_a_card(
        self, start_app: StartApp, clock: FakeClock
    ) -> None:
        """A card with a live token, a card just declined and a card never seen trip the per-card limit alike."""
        client = await start_app(tokens_per_card="2/1h", charges_per_card="5/1h")
        agency = await create_agency(client)
        known = await sk_token(client, agency, MASTERCARD)
        declined = await sk_token(client, agency, DECLINED)
        charged = await client.post("/v1/charges", json={"token": declined, "amount": 500}, headers=agency.auth)
        assert charged.status == 402
        assert (await client.get(f"/v1/tokens/{known}", headers=agency.auth)).status == 200
        clock.advance(7200)  # every bucket full again: only the cards' histories differ
        seen = {}
        for index, number in enumerate((MASTERCARD, DECLINED, VISA_ALT)):
            answers = []
            for attempt in range(3):
                response = await client.post(
                    "/v1/tokens", json=token_body(number), headers=public(agency, f"198.51.100.{index * 3 + attempt}")
                )
                body = await response.json()
                answers.append((response.status, without_request_id(body) if response.status == 429 else None))
            seen[number[-4:]] = answers
        assert seen["4444"] == seen["0002"] == seen["1111"]
        assert [status for status, _ in seen["4444"]] == [201, 201, 429]

    async def test_a_refused_charge_records_nothing_and_keeps_the_cvc(self, start_app: StartApp) -> None:
        """POST /v1/charges past the card's limit: 429, no charge under the key's id, the CVC still held."""
        client = await start_app(charges_per_card="1/1h")
        agency = await create_agency(client)
        first = await sk_token(client, agency, VISA)
        second = await sk_token(client, agency, VISA)
        ok = await client.post("/v1/charges", json={"token": first, "amount": 2500}, headers=agency.auth)
        assert ok.status == 201
        headers = {**agency.auth, "Idempotency-Key": "order-42-try-2"}
        refused = await client.post("/v1/charges", json={"token": second, "amount": 2500}, headers=headers)
        assert refused.status == 429
        assert refused.headers["Retry-After"] == "60"
        redis = client.app[SERVICES].store.redis
        assert await redis.exists(charge_key(agency.id, charge_id_for(agency.id, "order-42-try-2"))) == 0
        token = await (await client.get(f"/v1/tokens/{second}", headers=agency.auth)).json()
        assert token["cvc_retained"] is True
        # The Idempotency-Key was released: the same request is refused again, not replayed or "in progress".
        again = await client.post("/v1/charges", json={"token": second, "amount": 2500}, headers=headers)
        assert again.status == 429
        assert "Idempotent-Replayed" not in again.headers

    async def test_a_refused_checkout_payment_leaves_the_session_open(self, start_app: StartApp) -> None:
        """The card form's payment past the address's charge limit: 429, nothing charged, the session payable."""
        client = await start_app(charges_per_address="1/10m")
        agency = await create_agency(client)
        shopper = public(agency, "192.0.2.50")
        first = await new_session(client, agency, "FL-1")
        token = await (await client.post("/v1/tokens", json=token_body(VISA), headers=shopper)).json()
        assert (await complete(client, first, token["id"], shopper)).status == 200
        second = await new_session(client, agency, "FL-2")
        token = await (await client.post("/v1/tokens", json=token_body(VISA), headers=shopper)).json()
        refused = await complete(client, second, token["id"], shopper)
        assert refused.status == 429
        assert refused.headers["Retry-After"] == "60"
        session = await (await client.get(f"/v1/checkout/sessions/{second['id']}", headers=agency.auth)).json()
        assert session["status"] == "open"
        assert session["charge"] is None
        listed = await client.get("/v1/charges", params={"order_reference": "FL-2"}, headers=agency.auth)
        assert (await listed.json())["data"] == []
        # Another shopper pays it.
        other = public(agency, "192.0.2.51")
        token = await (await client.post("/v1/tokens", json=token_body(VISA), headers=other)).json()
        assert (await complete(client, second, token["id"], other)).status == 200

    async def test_every_trip_is_logged_counted_and_audited_without_card_data(
        self, start_app: StartApp, session_logs: Path
    ) -> None:
        client = await start_app(tokens_per_card="1/1h")
        agency = await create_agency(client)
        created = await client.post("/v1/tokens", json=token_body(VISA), headers=public(agency, "203.0.113.30"))
        fingerprint = (await created.json())["card"]["fingerprint"]
        for address in ("203.0.113.31", "203.0.113.32"):
            refused = await client.post("/v1/tokens", json=token_body(VISA), headers=public(agency, address))
            assert refused.status == 429
        assert await trips(client, agency) == {"tokens.card": 2}
        records = [r for r in await audit_records(client, agency.id) if r.action == "velocity.trip"]
        assert [(r.outcome, r.source, r.detail) for r in records] == [
            ("refused", "203.0.113.32", "tokens.card"),
            ("refused", "203.0.113.31", "tokens.card"),
        ]
        log_text = await asyncio.to_thread(session_logs.read_text, encoding="utf-8")
        lines = [json.loads(line) for line in log_text.splitlines() if agency.id in line]
        logged = [line for line in lines if line.get("event") == "velocity limit reached"]
        assert [(e["limits"], e["source"], e["level"]) for e in logged] == [
            ("tokens.card", "203.0.113.31", "warning"),
            ("tokens.card", "203.0.113.32", "warning"),
        ]
        everything = log_text + "".join(r.detail for r in records)
        assert fingerprint not in everything
        assert not leaks.cards_in_text(everything)
        # Nothing in Redis names the card, the address or the key either: buckets are keyed hashes.
        redis = client.app[SERVICES].store.redis
        names = [k.decode() async for k in redis.scan_iter(match=f"cv:{{{agency.id}}}:vel:*", count=1000)]
        assert names
        for name in names:
            assert fingerprint not in name
            assert "203.0.113" not in name
            assert agency.publishable not in name

    async def test_staff_orders_are_limited_per_staff_member(self, start_app: StartApp, clock: FakeClock) -> None:
        """The terminal's second order past the agent's limit: the form again with why, 429, nothing charged."""
        client = await start_app(charges_per_staff="1/10m")
        agency = await create_agency(client)
        agent = await staff_member(client, clock, agency.slug, f"agent-{agency.id[-8:]}", Role.AGENT)
        colleague = await staff_member(client, clock, agency.slug, f"agent2-{agency.id[-8:]}", Role.AGENT)
        for user, expected in ((agent, 303), (agent, 429), (colleague, 303)):
            page = await user.browser.get("/staff/orders/new")
            done = await user.browser.post("/staff/orders/new", staff_order(page))
            assert done.status == expected, done.text
        redis = client.app[SERVICES].store.redis
        assert await redis.zcard(f"cv:{{{agency.id}}}:staff-orders") == 2
        assert await token_keys(client, agency) == 0  # the refused order's token was deleted at once
        records = [r for r in await audit_records(client, agency.id) if r.action == "velocity.trip"]
        assert [(r.actor, r.detail) for r in records] == [(agent.username, "charges.staff")]

    async def test_the_refused_staff_page_says_why(self, start_app: StartApp, clock: FakeClock) -> None:
        client = await start_app(tokens_per_staff="1/10m")
        agency = await create_agency(client)
        agent = await staff_member(client, clock, agency.slug, f"agent-{agency.id[-8:]}", Role.AGENT)
        page = await agent.browser.get("/staff/orders/new")
        assert (await agent.browser.post("/staff/orders/new", staff_order(page))).status == 303
        page = await agent.browser.get("/staff/orders/new")
        refused = await agent.browser.post("/staff/orders/new", staff_order(page))
        assert refused.status == 429
        assert refused.headers["Retry-After"] == "60"
        assert "Too many orders in a short time; nothing was charged." in refused.text
        assert not leaks.cards_in_text(refused.text)


def staff_order(page: Any) -> dict[str, str]:
    return {
        "csrf": page.csrf,
        "form_id": page.hidden("form_id"),
        "channel": "phone",
        "amount": "25.00",
        "order_reference": "FL-2026-0042",
        "description": "Annual fishing licence",
        "cardholder_name": "A. Caller",
        "card_number": "4242 4242 4242 4242",
        "expiry": "12/31",
        "cvc": "737",
        "postal_code": "40601",
    }


class TestOverrides:
    async def test_an_agency_gets_its_own_limits(self, start_app: StartApp) -> None:
        """An override applies to its agency only; "off" turns one limit off for it."""
        client = await start_app(tokens_per_address="2/1h")
        strict = await create_agency(client)
        lenient = await create_agency(client)
        await override(client, strict, tokens_address="1/1h")
        await override(client, lenient, tokens_address="off")
        statuses = {}
        for agency in (strict, lenient):
            headers = public(agency, "198.51.100.40")
            statuses[agency.slug] = [
                (await client.post("/v1/tokens", json=token_body(number), headers=headers)).status
                for number in (VISA, MASTERCARD, VISA_ALT, VISA)
            ]
        assert statuses[strict.slug] == [201, 429, 429, 429]
        assert statuses[lenient.slug] == [201, 201, 201, 201]

    async def test_an_override_can_go_back_to_the_default(self, start_app: StartApp) -> None:
        client = await start_app(tokens_per_address="3/1h")
        agency = await create_agency(client)
        await override(client, agency, tokens_address="1/1h")
        settings = AgencySettingsService(client.app[SERVICES].agencies)
        changed = await settings.set_velocity(agency.slug, {}, back_to_default=["tokens.address"])
        assert changed.velocity.public() == {}
        headers = public(agency, "198.51.100.41")
        statuses = [(await client.post("/v1/tokens", json=token_body(VISA), headers=headers)).status for _ in range(4)]
        assert statuses == [201, 201, 201, 429]  # the default 3 per hour again, not the override's 1


class TestTenantIsolation:
    async def test_one_agencys_trips_never_limit_another(self, start_app: StartApp) -> None:
        """Same address, same card, two agencies: each has its own buckets, trips and tightening."""
        client = await start_app(tokens_per_address="2/1h", tokens_per_agency="3/1h")
        first = await create_agency(client)
        second = await create_agency(client)
        address = "203.0.113.60"
        statuses = [
            (await client.post("/v1/tokens", json=token_body(VISA), headers=public(first, address))).status
            for _ in range(4)
        ]
        assert statuses == [201, 201, 429, 429]
        for other_address in ("203.0.113.61", "203.0.113.62"):  # the first agency's agency-wide limit
            await client.post("/v1/tokens", json=token_body(VISA), headers=public(first, other_address))
        assert (await trips(client, first))["tokens.agency"] >= 1
        statuses = [
            (await client.post("/v1/tokens", json=token_body(VISA), headers=public(second, address))).status
            for _ in range(2)
        ]
        assert statuses == [201, 201]
        assert await trips(client, second) == {}


class TestAdaptiveTightening:
    async def test_declines_from_one_address_tighten_that_address(self, start_app: StartApp) -> None:
        """Four of four payments declined from an address: its limits quarter; another address keeps its own."""
        client = await start_app(
            tokens_per_address="8/1h",
            tokens_per_card="100/1m",
            charges_per_card="100/1m",
            charges_per_address="100/1h",
            decline_min_attempts_address=4,
            decline_min_attempts_agency=1000,
        )
        agency = await create_agency(client)
        tester = public(agency, "192.0.2.66")
        session = await new_session(client, agency, "FL-66")
        for _ in range(6):  # six of the address's eight tokens, four declined payments
            token = await (await client.post("/v1/tokens", json=token_body(DECLINED), headers=tester)).json()
            if _ < 4:
                assert (await complete(client, session, token["id"], tester)).status == 402
        # 8 / 4 = 2 per hour now, and 6 of 8 are used: nothing left for this address.
        assert (await client.post("/v1/tokens", json=token_body(VISA), headers=tester)).status == 429
        shopper = public(agency, "192.0.2.67")
        statuses = [(await client.post("/v1/tokens", json=token_body(VISA), headers=shopper)).status for _ in range(8)]
        assert statuses == [201] * 8
        records = [r for r in await audit_records(client, agency.id) if r.action == "velocity.tighten"]
        assert [(r.outcome, r.source) for r in records] == [("success", "192.0.2.66")]
        assert records[0].detail == "address limits divided by 4 for 1800s: 4 of 4 charge attempts declined in 600s"
        assert (await trips(client, agency))["tightened.address"] == 1

    async def test_declines_across_an_agency_tighten_the_agency_for_a_while(
        self, start_app: StartApp, clock: FakeClock
    ) -> None:
        """Backend charges mostly declined: the agency's aggregate limits quarter for the cool-down, then recover."""
        client = await start_app(
            tokens_per_agency="8/1h",
            tokens_per_card="100/1m",
            charges_per_card="100/1m",
            decline_min_attempts_agency=4,
            tighten_seconds=600,
        )
        agency = await create_agency(client)
        other = await create_agency(client)
        tokens = [await sk_token(client, agency, DECLINED) for _ in range(6)]  # six of the agency's eight
        for token in tokens[:4]:
            charged = await client.post("/v1/charges", json={"token": token, "amount": 100}, headers=agency.auth)
            assert charged.status == 402
        refused = await client.post("/v1/tokens", json=token_body(VISA), headers=agency.auth)
        assert refused.status == 429  # 2 of 8 would be left; tightened to 2 per hour, 6 of 8 used is all
        for _ in range(8):
            await sk_token(client, other, VISA)  # another agency keeps its whole limit
        state = await client.app[SERVICES].velocity.state((await client.app[SERVICES].agencies.row(agency.slug)).agency)
        assert state.tightened_until_ms > 0
        clock.advance(601)
        assert (await client.post("/v1/tokens", json=token_body(VISA), headers=agency.auth)).status == 201


__all__ = ["start_app"]  # the fixture, imported for pytest
