"""Real answers of the checkout-session and hosted-fields parts of openapi.yaml conform to it.

Each test declares with ``@covers`` exactly which (operation, status) pairs,
problem codes and field codes it provokes; ``TestCoverageDeclarations`` in
``test_openapi.py`` proves that the declarations of every ``test_openapi_*``
module together cover the whole document.  Set-up requests (sessions, tokens)
go through the plain client and are not recorded.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from service.adapters.idempotency_store import record_key
from service.adapters.keyring import MasterKeys
from service.adapters.store import token_key
from service.app import create_app
from service.http.state import SERVICES
from tests.conftest import AgencyKeys, FakeClock, create_agency, make_settings
from tests.http.checkout_fixtures import SHOP, SLOW_CARD, Client, create_session, session_body, token_for
from tests.support.openapi_check import Contract, covers
from tests.support.redis_server import RedisServer

SESSIONS = "/v1/checkout/sessions"
UNKNOWN_SESSION = "cs_" + "0" * 32
UNKNOWN_TOKEN = "tok_" + "A" * 24
DECLINED_CARD = "4000000000000002"


@pytest.fixture
def contract(client: Client, request: pytest.FixtureRequest) -> Contract:
    """A contract checker bound to the session app, expecting what the test declares with @covers."""
    return Contract(client, expected=getattr(request.function, "contract_covers", None))


def complete_path(session: dict[str, Any]) -> str:
    return f"{SESSIONS}/{session['id']}/complete"


def pay_body(session: dict[str, Any], token: str) -> dict[str, Any]:
    return {"client_secret": session["client_secret"], "token": token}


async def app_with(
    aiohttp_client: Any, redis_url: str, tmp_path: Path, keys: MasterKeys, **settings: Any
) -> TestClient[Any, Any]:
    app = create_app(make_settings(redis_url, tmp_path / "var", **settings), keys, redis_url=redis_url, tls=False)
    started: TestClient[Any, Any] = await aiohttp_client(app)
    return started


def in_flight(agency_id: str, method: str, path: str, body: dict[str, Any]) -> tuple[str, str]:
    """An Idempotency-Key record claimed by a request still in flight (what a concurrent duplicate finds)."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    digest = hashlib.sha256()
    for part in (method.encode(), path.encode(), canonical):
        digest.update(len(part).to_bytes(8, "big") + part)
    key = record_key(agency_id, hashlib.sha256(b"dup-1").hexdigest())
    return key, json.dumps({"state": "in_flight", "fingerprint": digest.hexdigest()})


class TestCheckoutConformance:
    @covers(
        ("createCheckoutSession", 201),
        ("getCheckoutSession", 200),
        ("completeCheckoutSession", 200),
        ("completeCheckoutSession", 402),
    )
    async def test_a_session_is_created_declined_then_paid(
        self, contract: Contract, client: Client, agency: AgencyKeys
    ) -> None:
        """Create, a declined card (402, still open), another card (200, complete), read by both keys."""
        created = await contract.call("POST", SESSIONS, status=201, json=session_body(), headers=agency.auth)
        session = created.json()
        declined = await contract.call(
            "POST",
            complete_path(session),
            status=402,
            json=pay_body(session, await token_for(client, agency, DECLINED_CARD)),
            headers=agency.public_auth,
        )
        assert declined.json()["last_payment_error"]["code"] == "card_declined"
        paid = await contract.call(
            "POST",
            complete_path(session),
            status=200,
            json=pay_body(session, await token_for(client, agency)),
            headers=agency.public_auth,
        )
        assert paid.json()["status"] == "complete"
        path = f"{SESSIONS}/{session['id']}"
        await contract.call("GET", path, status=200, headers=agency.auth)
        shopper = {**agency.public_auth, "Cardvault-Client-Secret": session["client_secret"]}
        await contract.call("GET", path, status=200, headers=shopper)
        contract.assert_covered()

    @covers(
        ("createCheckoutSession", 401),
        ("createCheckoutSession", 403),
        ("getCheckoutSession", 401),
        ("getCheckoutSession", 403),
        ("getCheckoutSession", 404),
        ("completeCheckoutSession", 401),
        ("completeCheckoutSession", 403),
        ("completeCheckoutSession", 404),
        codes={
            "missing_api_key",
            "secret_key_required",
            "client_secret_invalid",
            "origin_not_allowed",
            "checkout_session_not_found",
            "token_not_found",
        },
    )
    async def test_keys_secrets_and_ids_are_refused_as_documented(
        self, contract: Contract, client: Client, agency: AgencyKeys
    ) -> None:
        """No key 401; a publishable key creating, without the client secret or from elsewhere 403; unknown ids 404."""
        session = await create_session(client, agency)
        path = f"{SESSIONS}/{session['id']}"
        token = await token_for(client, agency)
        await contract.call("POST", SESSIONS, status=401, json=session_body(), conforms=False)
        await contract.call("GET", path, status=401, conforms=False)
        await contract.call("POST", complete_path(session), status=401, json=pay_body(session, token), conforms=False)
        await contract.call("POST", SESSIONS, status=403, json=session_body(), headers=agency.public_auth)
        await contract.call("GET", path, status=403, headers=agency.public_auth)
        wrong = {**session, "client_secret": session["client_secret"][:-4] + "AAAA"}
        await contract.call(
            "POST", complete_path(session), status=403, json=pay_body(wrong, token), headers=agency.public_auth
        )
        foreign = {**agency.public_auth, "Origin": "https://elsewhere.example.com"}
        await contract.call("POST", complete_path(session), status=403, json=pay_body(session, token), headers=foreign)
        await contract.call("GET", f"{SESSIONS}/{UNKNOWN_SESSION}", status=404, headers=agency.auth)
        missing = {"id": UNKNOWN_SESSION, "client_secret": UNKNOWN_SESSION + "_secret_x"}
        await contract.call(
            "POST", complete_path(missing), status=404, json=pay_body(missing, token), headers=agency.public_auth
        )
        await contract.call(
            "POST",
            complete_path(session),
            status=404,
            json=pay_body(session, UNKNOWN_TOKEN),
            headers=agency.public_auth,
        )
        contract.assert_covered()

    @covers(
        ("createCheckoutSession", 201),
        ("createCheckoutSession", 400),
        ("createCheckoutSession", 409),
        ("createCheckoutSession", 413),
        ("createCheckoutSession", 415),
        ("createCheckoutSession", 422),
        ("completeCheckoutSession", 400),
        ("completeCheckoutSession", 413),
        ("completeCheckoutSession", 415),
        ("completeCheckoutSession", 422),
        codes={
            "malformed_request",
            "idempotency_key_invalid",
            "idempotency_request_in_progress",
            "idempotency_key_reused",
            "payload_too_large",
            "unsupported_media_type",
            "validation_failed",
        },
        field_codes={"url_origin_not_registered", "invalid", "required", "unknown_field"},
    )
    async def test_bodies_and_idempotency_keys_are_refused_as_documented(
        self, contract: Contract, client: Client, agency: AgencyKeys
    ) -> None:
        """Unreadable, oversized and mistyped bodies, bad return URLs, an amount from the browser, key misuse."""
        session = await create_session(client, agency)
        token = await token_for(client, agency)
        json_headers = {**agency.auth, "Content-Type": "application/json"}
        for path in (SESSIONS, complete_path(session)):
            await contract.call("POST", path, status=400, body=b'{"amount": ', headers=json_headers, conforms=False)
            await contract.call("POST", path, status=413, json={"x": "x" * 40_000}, headers=agency.auth, conforms=False)
            await contract.call("POST", path, status=415, body=b"{}", headers=agency.auth, conforms=False)
        await contract.call(
            "POST",
            SESSIONS,
            status=400,
            json=session_body(),
            headers={**agency.auth, "Idempotency-Key": "k" * 256},
            conforms=False,
        )
        await contract.call(
            "POST",
            complete_path(session),
            status=400,
            json=pay_body(session, token),
            headers={**agency.public_auth, "Idempotency-Key": "k" * 256},
            conforms=False,
        )
        urls = await contract.call(
            "POST",
            SESSIONS,
            status=422,
            json=session_body(success_url="https://evil.example.com/done", cancel_url="ftp://x"),
            headers=agency.auth,
        )
        assert set(urls.field_errors) == {("success_url", "url_origin_not_registered"), ("cancel_url", "invalid")}
        amount = await contract.call(
            "POST", SESSIONS, status=422, json=session_body(amount=0), headers=agency.auth, conforms=False
        )
        assert amount.field_errors == [("amount", "invalid")]
        await contract.call(
            "POST", SESSIONS, status=422, json={"amount": 100}, headers=agency.auth, conforms=False
        )  # required fields missing
        tampered = await contract.call(
            "POST",
            complete_path(session),
            status=422,
            json={**pay_body(session, token), "amount": 1},
            headers=agency.public_auth,
            conforms=False,
        )
        assert tampered.field_errors == [("amount", "unknown_field")]
        keyed = {**agency.auth, "Idempotency-Key": "same-key"}
        await contract.call("POST", SESSIONS, status=201, json=session_body(order="A-1"), headers=keyed)
        await contract.call("POST", SESSIONS, status=422, json=session_body(order="A-2"), headers=keyed)
        svc = client.app[SERVICES]
        assert svc.store is not None
        key, record = in_flight(agency.id, "POST", SESSIONS, session_body(order="A-3"))
        await svc.store.redis.set(key, record, ex=60)
        await contract.call(
            "POST",
            SESSIONS,
            status=409,
            json=session_body(order="A-3"),
            headers={**agency.auth, "Idempotency-Key": "dup-1"},
        )
        contract.assert_covered()

    @covers(
        ("completeCheckoutSession", 200),
        ("completeCheckoutSession", 409),
        codes={"checkout_session_completed", "checkout_session_expired"},
    )
    async def test_paid_and_expired_sessions_are_refused(
        self, contract: Contract, client: Client, agency: AgencyKeys, clock: FakeClock
    ) -> None:
        """Paying a paid session is 409 checkout_session_completed; an expired one 409 checkout_session_expired."""
        paid = await create_session(client, agency, order="B-1")
        stale = await create_session(client, agency, order="B-2")
        for _ in range(2):
            token = await token_for(client, agency)
            await contract.call(
                "POST",
                complete_path(paid),
                status=200 if _ == 0 else 409,
                json=pay_body(paid, token),
                headers=agency.public_auth,
            )
        clock.advance(3600)
        await contract.call(
            "POST",
            complete_path(stale),
            status=409,
            json=pay_body(stale, await token_for(client, agency)),
            headers=agency.public_auth,
        )
        contract.assert_covered()


class TestCheckoutFailureConformance:
    @covers(
        ("createCheckoutSession", 201),
        ("completeCheckoutSession", 202),
        ("completeCheckoutSession", 409),
        ("completeCheckoutSession", 503),
        codes={"checkout_session_processing", "processor_circuit_open"},
    )
    async def test_an_unconfirmed_payment_and_a_paused_processor(
        self,
        contract: Contract,
        aiohttp_client: Any,
        redis_server: RedisServer,
        master_keys: MasterKeys,
        tmp_path: Path,
    ) -> None:
        """No answer in time: 202 and never again (409 processing); then the paused processor: 503, still open."""
        slow = await app_with(
            aiohttp_client,
            redis_server.url,
            tmp_path,
            master_keys,
            processors={"timeout_seconds": 0.3, "sandbox_slow_seconds": 1.0, "breaker_failures": 1},
        )
        on_slow = contract.using(slow)
        agency = await create_agency(slow, SHOP)
        first = (await on_slow.call("POST", SESSIONS, status=201, json=session_body(), headers=agency.auth)).json()
        await on_slow.call(
            "POST",
            complete_path(first),
            status=202,
            json=pay_body(first, await token_for(slow, agency, SLOW_CARD)),
            headers=agency.public_auth,
        )
        await on_slow.call(
            "POST",
            complete_path(first),
            status=409,
            json=pay_body(first, await token_for(slow, agency)),
            headers=agency.public_auth,
        )
        second = await create_session(slow, agency, order="C-2")
        paused = await on_slow.call(
            "POST",
            complete_path(second),
            status=503,
            json=pay_body(second, await token_for(slow, agency)),
            headers=agency.public_auth,
        )
        assert int(paused.headers["Retry-After"]) >= 1
        resp = await slow.get(f"{SESSIONS}/{second['id']}", headers=agency.auth)
        assert (await resp.json())["status"] == "open"
        contract.assert_covered()

    @covers(
        ("createCheckoutSession", 500),
        ("getCheckoutSession", 500),
        ("completeCheckoutSession", 500),
        codes={"internal_error", "integrity_error"},
    )
    async def test_server_failures_answer_problems(
        self, contract: Contract, client: Client, agency: AgencyKeys, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A token whose ciphertext fails authentication is 500 integrity_error; a bug 500 internal_error."""
        session = await create_session(client, agency)
        token = await token_for(client, agency)
        svc = client.app[SERVICES]
        assert svc.store is not None
        assert svc.checkout is not None
        await svc.store.redis.set(token_key(agency.id, token), b"C" + b"\0" * 60, keepttl=True)
        await contract.call(
            "POST", complete_path(session), status=500, json=pay_body(session, token), headers=agency.public_auth
        )
        resp = await client.get(f"{SESSIONS}/{session['id']}", headers=agency.auth)
        assert (await resp.json())["status"] == "open"

        async def broken(*_: Any, **__: Any) -> Any:
            raise RuntimeError("a bug")

        monkeypatch.setattr(svc.checkout, "create", broken)
        monkeypatch.setattr(svc.checkout, "get", broken)
        await contract.call("POST", SESSIONS, status=500, json=session_body(), headers=agency.auth)
        await contract.call("GET", f"{SESSIONS}/{session['id']}", status=500, headers=agency.auth)
        contract.assert_covered()

    @covers(
        ("createCheckoutSession", 503),
        ("getCheckoutSession", 503),
        ("completeCheckoutSession", 503),
        ("getCardFrame", 503),
        codes={"store_unavailable"},
    )
    async def test_an_app_without_redis_answers_store_unavailable(
        self, contract: Contract, aiohttp_client: Any, master_keys: MasterKeys, tmp_path: Path
    ) -> None:
        """Every checkout operation and the card form answer 503 store_unavailable while the vault is not ready."""
        app = await app_with(aiohttp_client, f"unix://{tmp_path / 'none.sock'}", tmp_path, master_keys)
        on_app = contract.using(app)
        key = {"Authorization": "Bearer sk_" + "x" * 43}
        session = {"id": UNKNOWN_SESSION, "client_secret": UNKNOWN_SESSION + "_secret_x"}
        await on_app.call("POST", SESSIONS, status=503, json=session_body(), headers=key)
        await on_app.call("GET", f"{SESSIONS}/{UNKNOWN_SESSION}", status=503, headers=key)
        await on_app.call(
            "POST", complete_path(session), status=503, json=pay_body(session, UNKNOWN_TOKEN), headers=key
        )
        await on_app.call("GET", "/elements/v1/frame", status=503, params={"key": "pk_" + "x" * 43, "origin": SHOP})
        contract.assert_covered()


class TestElementsConformance:
    @covers(
        ("getCardFrame", 200),
        ("getCardFrame", 401),
        ("getCardFrame", 403),
        ("getCardvaultScript", 200),
        ("getCardvaultScriptIntegrity", 200),
        ("getCardFrameScript", 200),
        ("getCardBrands", 200),
        ("getCardFrameStyles", 200),
        codes={"missing_api_key", "invalid_api_key", "origin_not_allowed", "publishable_key_required"},
    )
    async def test_the_card_form_and_its_files_conform(self, contract: Contract, agency: AgencyKeys) -> None:
        """The frame for a registered origin, its refusals, and the scripts and stylesheet it uses."""
        frame = "/elements/v1/frame"
        await contract.call("GET", frame, status=200, params={"key": agency.publishable, "origin": SHOP})
        await contract.call("GET", frame, status=401, params={"origin": SHOP}, conforms=False)
        await contract.call("GET", frame, status=401, params={"key": "pk_" + "x" * 43, "origin": SHOP})
        await contract.call(
            "GET", frame, status=403, params={"key": agency.publishable, "origin": "https://elsewhere.example.com"}
        )
        await contract.call("GET", frame, status=403, params={"key": agency.secret, "origin": SHOP})
        for path in (
            "/elements/v1/cardvault.js",
            "/elements/v1/cardvault.js.sri",
            "/elements/v1/frame.js",
            "/elements/v1/brands.js",
            "/elements/v1/frame.css",
        ):
            await contract.call("GET", path, status=200)
        contract.assert_covered()
