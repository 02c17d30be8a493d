"""Checkout sessions over HTTP: the backend prices the purchase, the shopper pays it at most once."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from service.adapters.checkout_store import session_key
from service.adapters.keyring import MasterKeys
from service.app import create_app
from service.charges import ChargeRequest
from service.domain.checkout import STALE_ATTEMPT_SECONDS, CheckoutSession, SessionStatus, attempt_key
from service.http.state import SERVICES
from tests.conftest import AgencyKeys, FakeClock, create_agency, make_settings
from tests.http.checkout_fixtures import (
    DECLINED_CARD,
    SHOP,
    SLOW_CARD,
    Client,
    charges_of,
    complete,
    create_session,
    session_body,
    token_for,
)
from tests.support.cards import VISA
from tests.support.redis_server import RedisServer


def secret_header(session: dict[str, Any]) -> dict[str, str]:
    return {"Cardvault-Client-Secret": session["client_secret"]}


class TestCreateSession:
    async def test_backend_creates_an_open_session_with_a_client_secret(
        self, client: Client, agency: AgencyKeys, clock: FakeClock
    ) -> None:
        """The secret key creates an open, unpaid session that expires after 30 minutes and shows its secret once."""
        resp = await client.post("/v1/checkout/sessions", json=session_body(), headers=agency.auth)
        assert resp.status == 201
        created = await resp.json()
        assert resp.headers["Location"] == f"/v1/checkout/sessions/{created['id']}"
        assert created["id"].startswith("cs_")
        assert created["client_secret"].startswith(created["id"] + "_secret_")
        assert (created["status"], created["payment_status"], created["amount"]) == ("open", "unpaid", 2500)
        assert created["expires_at"] - created["created"] == 1800
        resp = await client.get(f"/v1/checkout/sessions/{created['id']}", headers=agency.auth)
        shown = await resp.json()
        assert resp.status == 200
        assert "client_secret" not in shown
        assert shown == {k: v for k, v in created.items() if k != "client_secret"}

    async def test_the_lifetime_is_configurable(
        self, aiohttp_client: Any, redis_server: RedisServer, master_keys: MasterKeys, tmp_path: Path
    ) -> None:
        """checkout.session_ttl_seconds sets how long a session can be paid."""
        settings = make_settings(redis_server.url, tmp_path / "var", checkout={"session_ttl_seconds": 120})
        app = create_app(settings, master_keys, redis_url=redis_server.url, tls=False)
        short: Client = await aiohttp_client(app)
        created = await create_session(short, await create_agency(short, SHOP))
        assert created["expires_at"] - created["created"] == 120

    async def test_a_publishable_key_cannot_create_a_session(self, client: Client, agency: AgencyKeys) -> None:
        """Only the backend prices a purchase: the publishable key gets 403 secret_key_required."""
        resp = await client.post("/v1/checkout/sessions", json=session_body(), headers=agency.public_auth)
        assert resp.status == 403
        assert (await resp.json())["code"] == "secret_key_required"

    @pytest.mark.parametrize(
        ("changes", "field", "code"),
        [
            ({"success_url": "https://evil.example.com/done"}, "success_url", "url_origin_not_registered"),
            ({"cancel_url": "javascript:alert(1)"}, "cancel_url", "invalid"),
            ({"amount": 0}, "amount", "invalid"),
            ({"amount": "25.00"}, "amount", "invalid"),
            ({"currency": "eur"}, "currency", "invalid"),
            ({"order_reference": VISA}, "order_reference", "invalid"),
            ({"metadata": {}}, "metadata", "unknown_field"),
        ],
    )
    async def test_bad_sessions_are_refused(
        self, client: Client, agency: AgencyKeys, changes: dict[str, Any], field: str, code: str
    ) -> None:
        """Amounts, currencies, references and return URLs off the agency's origins are 422 with a field code."""
        resp = await client.post("/v1/checkout/sessions", json=session_body(**changes), headers=agency.auth)
        assert resp.status == 422
        errors = (await resp.json())["errors"]
        assert (field, code) in {(e["field"], e["code"]) for e in errors}
        assert VISA not in await resp.text()


class TestCompleteSession:
    async def test_paying_charges_the_backends_amount_once(self, client: Client, agency: AgencyKeys) -> None:
        """The shopper's key and client secret pay the session; the charge is the session's amount and order."""
        session = await create_session(client, agency, amount=1750, order="FL-1")
        resp = await complete(client, agency, session, await token_for(client, agency))
        assert resp.status == 200, await resp.text()
        paid = await resp.json()
        assert (paid["status"], paid["payment_status"]) == ("complete", "paid")
        assert paid["charge"]["card"] == {"brand": "visa", "last4": "4242"}
        [charge] = await charges_of(client, agency, "FL-1")
        assert (charge["id"], charge["amount"], charge["status"]) == (paid["charge"]["id"], 1750, "succeeded")

    async def test_an_amount_sent_by_the_browser_is_refused(self, client: Client, agency: AgencyKeys) -> None:
        """A tampered body with an amount is 422 unknown_field and charges nothing."""
        session = await create_session(client, agency, order="FL-2")
        resp = await complete(client, agency, session, await token_for(client, agency), amount=1)
        assert resp.status == 422
        assert [(e["field"], e["code"]) for e in (await resp.json())["errors"]] == [("amount", "unknown_field")]
        assert await charges_of(client, agency, "FL-2") == []

    async def test_a_wrong_client_secret_is_refused(self, client: Client, agency: AgencyKeys) -> None:
        """Another session's secret, or none, cannot pay or read a session: 403 client_secret_invalid."""
        session = await create_session(client, agency, order="FL-3")
        other = await create_session(client, agency, order="FL-3b")
        forged = {**session, "client_secret": other["client_secret"]}
        resp = await complete(client, agency, forged, await token_for(client, agency))
        assert resp.status == 403
        assert (await resp.json())["code"] == "client_secret_invalid"
        resp = await client.get(f"/v1/checkout/sessions/{session['id']}", headers=agency.public_auth)
        assert resp.status == 403
        assert await charges_of(client, agency, "FL-3") == []

    async def test_a_paid_session_cannot_be_paid_again(self, client: Client, agency: AgencyKeys) -> None:
        """A second payment is 409 checkout_session_completed and the card is charged once."""
        session = await create_session(client, agency, order="FL-4")
        assert (await complete(client, agency, session, await token_for(client, agency))).status == 200
        resp = await complete(client, agency, session, await token_for(client, agency))
        assert resp.status == 409
        assert (await resp.json())["code"] == "checkout_session_completed"
        assert len(await charges_of(client, agency, "FL-4")) == 1

    async def test_a_decline_leaves_the_session_open_for_another_card(self, client: Client, agency: AgencyKeys) -> None:
        """A declined card is 402 with the reason; another card then pays the same session."""
        session = await create_session(client, agency, order="FL-5")
        resp = await complete(client, agency, session, await token_for(client, agency, DECLINED_CARD))
        assert resp.status == 402
        refused = await resp.json()
        assert (refused["status"], refused["payment_status"]) == ("open", "unpaid")
        assert refused["last_payment_error"]["code"] == "card_declined"
        assert refused["charge"]["decline_code"] == "generic_decline"
        resp = await complete(client, agency, session, await token_for(client, agency))
        assert resp.status == 200
        assert sorted(c["status"] for c in await charges_of(client, agency, "FL-5")) == ["declined", "succeeded"]

    async def test_an_expired_session_cannot_be_paid(
        self, client: Client, agency: AgencyKeys, clock: FakeClock
    ) -> None:
        """After expires_at the session shows expired and payment is 409 checkout_session_expired."""
        session = await create_session(client, agency, order="FL-6")
        token = await token_for(client, agency)
        clock.advance(1801)
        resp = await complete(client, agency, session, token)
        assert resp.status == 409
        assert (await resp.json())["code"] == "checkout_session_expired"
        resp = await client.get(f"/v1/checkout/sessions/{session['id']}", headers=agency.auth)
        assert (await resp.json())["status"] == "expired"
        assert await charges_of(client, agency, "FL-6") == []

    async def test_concurrent_payments_charge_once(self, client: Client, agency: AgencyKeys) -> None:
        """Ten simultaneous payments of one session: one is paid, the rest are refused, one charge exists."""
        session = await create_session(client, agency, order="FL-7")
        tokens = [await token_for(client, agency) for _ in range(10)]
        answers = await asyncio.gather(*(complete(client, agency, session, t) for t in tokens))
        statuses = sorted(a.status for a in answers)
        assert statuses == [200] + [409] * 9
        assert len(await charges_of(client, agency, "FL-7")) == 1

    async def test_a_retried_request_replays_the_first_answer(self, client: Client, agency: AgencyKeys) -> None:
        """The same Idempotency-Key after a lost answer replays the payment instead of refusing or charging again."""
        session = await create_session(client, agency, order="FL-8")
        token = await token_for(client, agency)
        first = await complete(client, agency, session, token, headers={"Idempotency-Key": "pay-1"})
        again = await complete(client, agency, session, token, headers={"Idempotency-Key": "pay-1"})
        assert (first.status, again.status) == (200, 200)
        assert again.headers["Idempotent-Replayed"] == "true"
        assert await first.read() == await again.read()
        assert len(await charges_of(client, agency, "FL-8")) == 1

    async def test_the_shopper_reads_the_outcome_with_the_client_secret(
        self, client: Client, agency: AgencyKeys
    ) -> None:
        """Reopening the page: the client secret (header) shows the paid session to the publishable key."""
        session = await create_session(client, agency, order="FL-9")
        await complete(client, agency, session, await token_for(client, agency))
        resp = await client.get(
            f"/v1/checkout/sessions/{session['id']}", headers={**agency.public_auth, **secret_header(session)}
        )
        assert resp.status == 200
        assert (await resp.json())["status"] == "complete"

    async def test_another_agencys_session_is_not_found(
        self, client: Client, agency: AgencyKeys, other_agency: AgencyKeys
    ) -> None:
        """A session id of another agency is 404 checkout_session_not_found, even with its client secret."""
        session = await create_session(client, agency, order="FL-10")
        resp = await client.get(
            f"/v1/checkout/sessions/{session['id']}", headers={**other_agency.public_auth, **secret_header(session)}
        )
        assert resp.status == 404
        assert (await resp.json())["code"] == "checkout_session_not_found"

    async def test_a_publishable_key_from_another_origin_pays_nothing(self, client: Client, agency: AgencyKeys) -> None:
        """A publishable key sent from an unregistered Origin is 403 origin_not_allowed."""
        session = await create_session(client, agency, order="FL-11")
        token = await token_for(client, agency)
        resp = await complete(client, agency, session, token, headers={"Origin": "https://evil.example.com"})
        assert resp.status == 403
        assert (await resp.json())["code"] == "origin_not_allowed"
        assert await charges_of(client, agency, "FL-11") == []

    async def test_a_publishable_key_cannot_charge_directly(self, client: Client, agency: AgencyKeys) -> None:
        """POST /v1/charges with the publishable key is 403 secret_key_required: only a session's amount is payable."""
        token = await token_for(client, agency)
        resp = await client.post(
            "/v1/charges", json={"token": token, "amount": 1, "order_reference": "FL-12"}, headers=agency.public_auth
        )
        assert resp.status == 403
        assert (await resp.json())["code"] == "secret_key_required"
        assert await charges_of(client, agency, "FL-12") == []


class TestInterruptedPayments:
    async def _force_processing(self, client: Client, agency: AgencyKeys, session_id: str, started: int) -> None:
        """Leave the session as a crashed process would: processing, attempt 1, started at ``started``."""
        svc = client.app[SERVICES]
        assert svc.store is not None
        key = session_key(agency.id, session_id)
        stored = CheckoutSession.from_json(await svc.store.redis.get(key))
        await svc.store.redis.set(key, stored.begin_attempt(started).to_json(), keepttl=True)

    async def test_a_crashed_attempt_that_never_charged_reopens(
        self, client: Client, agency: AgencyKeys, clock: FakeClock
    ) -> None:
        """A session stuck in processing with no charge reopens once the attempt is stale, and can be paid."""
        session = await create_session(client, agency, order="FL-20")
        await self._force_processing(client, agency, session["id"], int(clock()))
        resp = await complete(client, agency, session, await token_for(client, agency))
        assert (await resp.json())["code"] == "checkout_session_processing"
        clock.advance(STALE_ATTEMPT_SECONDS + 1)
        resp = await client.get(f"/v1/checkout/sessions/{session['id']}", headers=agency.auth)
        assert (await resp.json())["status"] == str(SessionStatus.OPEN)
        assert (await complete(client, agency, session, await token_for(client, agency))).status == 200
        assert len(await charges_of(client, agency, "FL-20")) == 1

    async def test_a_crashed_attempt_that_charged_takes_its_charges_outcome(
        self, client: Client, agency: AgencyKeys, clock: FakeClock
    ) -> None:
        """A process that charged and died before recording it: the stale attempt adopts that charge, paid once."""
        session = await create_session(client, agency, order="FL-22")
        token = await token_for(client, agency)
        await self._force_processing(client, agency, session["id"], int(clock()))
        svc = client.app[SERVICES]
        assert svc.agencies is not None
        assert svc.charges is not None
        principal = await svc.agencies.authenticate(agency.secret)
        assert principal is not None
        request = ChargeRequest(token=token, amount=2500, currency="usd", order_reference="FL-22")
        outcome = await svc.charges.create(principal, request, attempt_key(session["id"], 1))
        clock.advance(STALE_ATTEMPT_SECONDS + 1)
        resp = await client.get(f"/v1/checkout/sessions/{session['id']}", headers=agency.auth)
        shown = await resp.json()
        assert (shown["status"], shown["payment_status"]) == ("complete", "paid")
        assert shown["charge"]["id"] == outcome.charge.id
        assert (await complete(client, agency, session, await token_for(client, agency))).status == 409
        assert len(await charges_of(client, agency, "FL-22")) == 1

    async def test_a_processor_timeout_is_never_paid_twice(
        self, aiohttp_client: Any, redis_server: RedisServer, master_keys: MasterKeys, tmp_path: Path
    ) -> None:
        """No answer in time: 202 with payment_status unknown, and every later payment is 409 processing."""
        settings = make_settings(
            redis_server.url,
            tmp_path / "var",
            processors={"timeout_seconds": 0.3, "sandbox_slow_seconds": 1.0, "breaker_failures": 100},
        )
        slow: Client = await aiohttp_client(create_app(settings, master_keys, redis_url=redis_server.url, tls=False))
        agency = await create_agency(slow, SHOP)
        session = await create_session(slow, agency, order="FL-21")
        resp = await complete(slow, agency, session, await token_for(slow, agency, SLOW_CARD))
        assert resp.status == 202
        body = await resp.json()
        assert (body["status"], body["payment_status"]) == ("processing", "unknown")
        assert body["last_payment_error"]["code"] == "payment_outcome_unknown"
        resp = await complete(slow, agency, session, await token_for(slow, agency))
        assert (await resp.json())["code"] == "checkout_session_processing"
        assert [c["status"] for c in await charges_of(slow, agency, "FL-21")] == ["unknown"]
