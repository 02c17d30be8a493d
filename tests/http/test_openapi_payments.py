"""Real answers of the charges, forward and idempotency parts of openapi.yaml conform to it.

The app is the charges app of ``charge_fixtures`` (a local HTTPS Authorize.Net
fake behind ``anet_agency``, the in-process sandbox behind ``sandbox_agency``)
that also trusts a local HTTPS forward destination
(``tests.support.destination_server``).  Processor failures are provoked with
the fake's switches (``fail_next``, ``delay``, another transaction key,
``answer_next_with_error``, ``hold_for_review``, ``auto_settle``), forward
failures with the destination's modes.  Each test declares with ``@covers``
exactly which (operation, status) pairs, problem codes and field codes it
provokes; ``TestCoverageDeclarations`` in ``test_openapi.py`` proves that the
declarations of both modules together cover the whole document.

Set-up requests (tokens, charges to act on) go through the plain client and
are not recorded; every request a test is about goes through the contract.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from service.adapters import crypto
from service.adapters.idempotency_store import record_key
from service.adapters.keyring import MasterKey, MasterKeys
from service.adapters.redis_base import agency_data_pattern
from service.adapters.store import agency_key, token_key
from service.agency_settings import AgencySettingsService
from service.app import create_app
from service.charges import charge_id_for
from service.http.state import SERVICES
from tests.conftest import AgencyKeys, FakeClock, create_agency, make_settings
from tests.http.charge_fixtures import Client, charge, tokenize
from tests.support.cards import CVC, MASTERCARD, VISA
from tests.support.destination_server import DestinationServer
from tests.support.fake_authorize_net import FakeAuthorizeNet
from tests.support.openapi_check import UNROUTED, Contract, Exchange, covers
from tests.support.redis_server import RedisServer

PROCESSOR_TIMEOUT = 2.0
BREAKER_RESET = 2.0
# How long the fakes hold a request to keep it in flight while a test sends another: well inside the timeouts.
IN_FLIGHT = 1.0
FORWARD_TIMEOUT = 2.0
DECLINED_CARD = "4000000000000002"
PROCESSING_ERROR_CARD = "4000000000000119"
UNKNOWN_CHARGE = "ch_" + "A" * 24
UNKNOWN_TOKEN = "tok_" + "A" * 24
# Pan-shaped token ids always fail Luhn; derived at run time so no card-like literal but the test card is here.
UNKNOWN_PAN_SHAPED_TOKEN = VISA[:-1] + str((int(VISA[-1]) + 1) % 10)
SHOP = "https://shop.example.gov"

CHARGE_OPS = ("createCharge", "listCharges", "getCharge", "captureCharge", "voidCharge", "refundCharge")
ALL_OPS = (*CHARGE_OPS, "forwardRequest")


@pytest.fixture
async def destination(tmp_path: Path) -> Any:
    async with DestinationServer(tmp_path) as server:
        yield server


@pytest.fixture
async def pay_client(
    aiohttp_client: Any,
    redis_server: RedisServer,
    master_keys: MasterKeys,
    clock: FakeClock,
    tmp_path: Path,
    authnet: FakeAuthorizeNet,
    destination: DestinationServer,
) -> Client:
    """charge_fixtures' app (so anet_agency and sandbox_agency use it), also trusting the forward destination."""
    settings = make_settings(
        redis_server.url,
        tmp_path / "var",
        processors={
            "timeout_seconds": PROCESSOR_TIMEOUT,
            "breaker_failures": 3,
            "breaker_reset_seconds": BREAKER_RESET,
            "sandbox_slow_seconds": 3.0,
            "ca_file": str(authnet.write_ca_pem(tmp_path / "authnet-ca.pem")),
        },
        forward={"ca_file": str(destination.ca_pem), "timeout_seconds": FORWARD_TIMEOUT},
    )
    app = create_app(settings, master_keys, redis_url=redis_server.url, clock=clock, tls=False)
    client: Client = await aiohttp_client(app)
    return client


@pytest.fixture
def contract(pay_client: Client, request: pytest.FixtureRequest) -> Contract:
    """A contract checker bound to the payments app, expecting what the test declares with @covers."""
    return Contract(pay_client, expected=getattr(request.function, "contract_covers", None))


# --- helpers ----------------------------------------------------------------------------------


def keyed(agency: AgencyKeys, key: str | None = None) -> dict[str, str]:
    """The agency's secret-key header, with an Idempotency-Key when given."""
    return {**agency.auth, "Idempotency-Key": key} if key is not None else dict(agency.auth)


async def made(client: Client, agency: AgencyKeys, number: str = VISA, **body: Any) -> dict[str, Any]:
    """A charge made outside the contract (set-up), of a fresh token of ``number``."""
    response = await charge(client, agency, await tokenize(client, agency, number), **body)
    assert response.status in (201, 402), await response.text()
    made_charge: dict[str, Any] = await response.json()
    return made_charge


async def until(condition: Callable[[], bool]) -> None:
    """Wait (at most 5 s) for ``condition`` to come true."""
    deadline = time.monotonic() + 5.0
    while not condition():
        assert time.monotonic() < deadline, "the condition did not come true in time"
        await asyncio.sleep(0.005)


def forget_key(redis_server: RedisServer, agency: AgencyKeys, key: str) -> None:
    """What 24 hours do to an Idempotency-Key's record."""
    assert redis_server.client().delete(record_key(agency.id, hashlib.sha256(key.encode()).hexdigest())) == 1


def ref(token_id: str, field: str) -> str:
    return "{{ " + token_id + "." + field + " }}"


def forwarded(url: str, body: str, **changes: Any) -> dict[str, Any]:
    return {
        "destination": url,
        "method": "POST",
        "headers": {"Content-Type": "application/json"},
        "body": body,
        **changes,
    }


async def allow(client: Client, agency: AgencyKeys, url: str, *, allow_private: bool = True) -> None:
    agencies = client.app[SERVICES].agencies
    assert agencies is not None
    await AgencySettingsService(agencies).allow_destination(agency.slug, url, allow_private=allow_private)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def assert_replay(first: Exchange, again: Exchange) -> None:
    assert (again.status, again.data) == (first.status, first.data)
    assert again.replayed
    assert not first.replayed


async def plain_app(aiohttp_client: Any, redis_url: str, data_dir: Path, keys: MasterKeys) -> Client:
    app = create_app(make_settings(redis_url, data_dir), keys, redis_url=redis_url, tls=False)
    started: Client = await aiohttp_client(app)
    return started


def fresh_master_keys(*previous: MasterKeys) -> MasterKeys:
    return MasterKeys(MasterKey(crypto.random_key(), source="tests"), tuple(k.current for k in previous))


def every_operation(token: str, charge_id: str, url: str) -> list[tuple[str, str, dict[str, str] | None, Any]]:
    """(method, path, query, body) for one request to each operation this module covers."""
    return [
        ("POST", "/v1/charges", None, {"token": token, "amount": 2500}),
        ("GET", "/v1/charges", {"order_reference": "FL-2026-0042"}, None),
        ("GET", f"/v1/charges/{charge_id}", None, None),
        ("POST", f"/v1/charges/{charge_id}/capture", None, {}),
        ("POST", f"/v1/charges/{charge_id}/void", None, {}),
        ("POST", f"/v1/charges/{charge_id}/refunds", None, {}),
        ("POST", "/v1/forward", None, forwarded(url, "{}")),
    ]


# --- charges: what succeeds, what is declined ------------------------------------------------------


async def forget_idempotency_records(client: Client, agency: AgencyKeys) -> None:
    """Drop the agency's Idempotency-Key records, as 24 hours would."""
    store = client.app[SERVICES].store
    assert store is not None
    async for key in store.redis.scan_iter(match=agency_data_pattern(agency.id)[:-1] + "idem:*", count=1000):
        await store.redis.delete(key)


class TestChargeConformance:
    @covers(
        ("createCharge", 201),
        ("createCharge", 402),
        ("getCharge", 200),
        ("listCharges", 200),
        ("captureCharge", 200),
        ("voidCharge", 200),
        ("refundCharge", 201),
    )
    async def test_the_charge_lifecycle_conforms(
        self, contract: Contract, pay_client: Client, sandbox_agency: AgencyKeys
    ) -> None:
        """Charges (201 or 402), captures, voids, refunds, look-ups and the order listing answer as documented."""
        agency = sandbox_agency
        token = await tokenize(pay_client, agency)
        everything = {
            "token": token,
            "amount": 2500,
            "currency": "usd",
            "capture": True,
            "description": "Annual fishing licence",
            "order_reference": "FL-2026-0042",
            "channel": "web",
        }
        created = await contract.call("POST", "/v1/charges", status=201, json=everything, headers=agency.auth)
        succeeded = created.json()
        assert created.headers["Location"] == f"/v1/charges/{succeeded['id']}"
        assert (succeeded["status"], succeeded["amount_captured"], succeeded["card"]) == (
            "succeeded",
            2500,
            {"brand": "visa", "last4": "4242"},
        )
        body = {"token": token, "amount": 5000, "capture": False, "order_reference": "FL-2026-0042", "channel": "phone"}
        held = (await contract.call("POST", "/v1/charges", status=201, json=body, headers=agency.auth)).json()
        assert (held["status"], held["processor"]["cvc_check"]) == ("requires_capture", "unchecked")
        quiet = {"token": token, "amount": 700, "description": None, "order_reference": None}
        other_held = await contract.call(
            "POST", "/v1/charges", status=201, json={**quiet, "capture": False}, headers=agency.auth
        )

        captured = await contract.call(
            "POST", f"/v1/charges/{held['id']}/capture", status=200, json={"amount": 4000}, headers=agency.auth
        )
        assert (captured.json()["status"], captured.json()["amount_captured"]) == ("succeeded", 4000)
        voided = await contract.call(
            "POST", f"/v1/charges/{other_held.json()['id']}/void", status=200, headers=agency.auth
        )
        assert voided.json()["status"] == "voided"
        part = await contract.call(
            "POST", f"/v1/charges/{held['id']}/refunds", status=201, json={"amount": 1500}, headers=agency.auth
        )
        assert (part.json()["object"], part.json()["amount"], part.json()["charge"]) == ("refund", 1500, held["id"])
        rest = await contract.call(
            "POST", f"/v1/charges/{held['id']}/refunds", status=201, json={"amount": None}, headers=agency.auth
        )
        assert rest.json()["amount"] == 2500
        await contract.call("POST", f"/v1/charges/{succeeded['id']}/refunds", status=201, headers=agency.auth)

        declined = await contract.call(
            "POST",
            "/v1/charges",
            status=402,
            json={"token": await tokenize(pay_client, agency, DECLINED_CARD), "amount": 2500},
            headers=agency.auth,
        )
        assert (declined.json()["status"], declined.json()["decline_code"]) == ("declined", "generic_decline")
        failed = await contract.call(
            "POST",
            "/v1/charges",
            status=402,
            json={"token": await tokenize(pay_client, agency, PROCESSING_ERROR_CARD), "amount": 2500},
            headers=agency.auth,
        )
        assert (failed.json()["status"], failed.json()["decline_code"]) == ("failed", "processing_error")

        looked_up = await contract.call("GET", f"/v1/charges/{held['id']}", status=200, headers=agency.auth)
        assert (looked_up.json()["amount_refunded"], len(looked_up.json()["refunds"])) == (4000, 2)
        assert [h["status"] for h in looked_up.json()["history"]] == ["requires_capture", "succeeded"]
        listed = await contract.call(
            "GET", "/v1/charges", status=200, params={"order_reference": "FL-2026-0042"}, headers=agency.auth
        )
        oldest_first = sorted([succeeded, held], key=lambda c: (c["created"], c["id"]))
        assert [c["id"] for c in listed.json()["data"]] == [c["id"] for c in oldest_first]
        none = await contract.call(
            "GET", "/v1/charges", status=200, params={"order_reference": "NOTHING-HERE"}, headers=agency.auth
        )
        assert none.json() == {"object": "list", "data": [], "has_more": False}
        contract.assert_covered()

    @covers(
        ("createCharge", 201), ("createCharge", 402), ("captureCharge", 200), ("voidCharge", 200), ("refundCharge", 402)
    )
    async def test_authorize_net_answers_conform(
        self, contract: Contract, pay_client: Client, anet_agency: AgencyKeys, authnet: FakeAuthorizeNet
    ) -> None:
        """Held-for-review charges (201 unknown), refused captures and voids (200) and refused refunds (402) conform."""
        agency = anet_agency
        authnet.hold_for_review = True
        held_for_review = await contract.call(
            "POST",
            "/v1/charges",
            status=201,
            json={"token": await tokenize(pay_client, agency), "amount": 2500},
            headers=agency.auth,
        )
        assert held_for_review.json()["status"] == "unknown"
        authnet.hold_for_review = False

        declined = await contract.call(
            "POST",
            "/v1/charges",
            status=402,
            json={"token": await tokenize(pay_client, agency, DECLINED_CARD), "amount": 900},
            headers=agency.auth,
        )
        assert (declined.json()["processor"]["name"], declined.json()["decline_code"]) == (
            "authorize_net",
            "generic_decline",
        )

        held = await made(pay_client, agency, capture=False)
        authnet.answer_next_with_error("E00027", "The transaction was unsuccessful.")
        refused = await contract.call("POST", f"/v1/charges/{held['id']}/capture", status=200, headers=agency.auth)
        assert (refused.json()["status"], refused.json()["failure_message"]) == (
            "requires_capture",
            "The transaction was unsuccessful.",
        )
        authnet.answer_next_with_error("E00027", "The transaction was unsuccessful.")
        not_voided = await contract.call("POST", f"/v1/charges/{held['id']}/void", status=200, headers=agency.auth)
        assert not_voided.json()["status"] == "requires_capture"

        authnet.auto_settle = False
        unsettled = await made(pay_client, agency)
        refund = await contract.call("POST", f"/v1/charges/{unsettled['id']}/refunds", status=402, headers=agency.auth)
        assert (refund.json()["object"], refund.json()["status"], refund.json()["amount"]) == ("refund", "failed", 2500)
        after = await pay_client.get(f"/v1/charges/{unsettled['id']}", headers=agency.auth)
        assert ((await after.json())["amount_refunded"], len((await after.json())["refunds"])) == (0, 1)
        contract.assert_covered()


# --- charges: refusals ------------------------------------------------------------------------------


class TestChargeRefusalConformance:
    @covers(
        ("captureCharge", 409),
        ("captureCharge", 422),
        ("voidCharge", 200),
        ("voidCharge", 409),
        ("refundCharge", 201),
        ("refundCharge", 409),
        ("refundCharge", 422),
        codes={
            "charge_already_captured",
            "charge_not_capturable",
            "charge_not_voidable",
            "charge_settled",
            "charge_not_refundable",
            "charge_fully_refunded",
            "validation_failed",
        },
        field_codes={"amount_too_large"},
    )
    async def test_charge_rule_refusals_conform(
        self, contract: Contract, pay_client: Client, sandbox_agency: AgencyKeys, clock: FakeClock
    ) -> None:
        """Capture twice, void after a refund or after settlement, over-refunds and the like answer 409 or 422."""
        agency = sandbox_agency
        succeeded = await made(pay_client, agency, amount=2000)
        settled = await made(pay_client, agency, amount=1000)
        path = f"/v1/charges/{succeeded['id']}"
        expectations = [
            ("capture", None, 409, "charge_already_captured"),
            ("refunds", {"amount": 2001}, 422, "validation_failed"),
            ("refunds", None, 201, None),
            ("void", None, 409, "charge_not_voidable"),
            ("refunds", {"amount": 1}, 409, "charge_fully_refunded"),
        ]
        held = await made(pay_client, agency, amount=3000, capture=False)
        held_path = f"/v1/charges/{held['id']}"
        for action, body, status, code in expectations:
            exchange = await contract.call("POST", f"{path}/{action}", status=status, json=body, headers=agency.auth)
            assert exchange.problem_code == code
        for action, body, status, code in [
            ("capture", {"amount": 3001}, 422, "validation_failed"),
            ("refunds", None, 409, "charge_not_refundable"),
            ("void", {}, 200, None),
            ("capture", None, 409, "charge_not_capturable"),
            ("void", None, 409, "charge_not_voidable"),
        ]:
            exchange = await contract.call(
                "POST", f"{held_path}/{action}", status=status, json=body, headers=agency.auth
            )
            assert exchange.problem_code == code
            if status == 422:
                assert exchange.field_errors == [("amount", "amount_too_large")]
        clock.advance(86400)  # past the sandbox's daily settlement cut-off
        late = await contract.call("POST", f"/v1/charges/{settled['id']}/void", status=409, headers=agency.auth)
        assert late.problem_code == "charge_settled"
        contract.assert_covered()

    @covers(
        ("captureCharge", 200),
        ("captureCharge", 409),
        ("voidCharge", 409),
        ("refundCharge", 409),
        codes={"charge_busy"},
    )
    async def test_concurrent_operations_on_a_charge_answer_charge_busy(
        self, contract: Contract, pay_client: Client, anet_agency: AgencyKeys, authnet: FakeAuthorizeNet
    ) -> None:
        """While a capture is at the processor, another capture, a void or a refund of the charge is charge_busy."""
        agency = anet_agency
        held = await made(pay_client, agency, capture=False)
        path = f"/v1/charges/{held['id']}"
        calls = authnet.total_requests
        authnet.delay = IN_FLIGHT
        first = asyncio.create_task(contract.call("POST", f"{path}/capture", status=200, headers=agency.auth))
        await until(lambda: authnet.total_requests > calls)
        for action in ("capture", "void", "refunds"):
            busy = await contract.call("POST", f"{path}/{action}", status=409, headers=agency.auth)
            assert busy.problem_code == "charge_busy"
        assert (await first).json()["status"] == "succeeded"
        contract.assert_covered()

    @covers(
        ("createCharge", 404),
        ("getCharge", 404),
        ("captureCharge", 404),
        ("voidCharge", 404),
        ("refundCharge", 404),
        codes={"token_not_found", "charge_not_found"},
    )
    async def test_unknown_and_foreign_tokens_and_charges_answer_404(
        self, contract: Contract, pay_client: Client, sandbox_agency: AgencyKeys
    ) -> None:
        """Unknown, malformed and other agencies' charge ids answer charge_not_found; such tokens token_not_found."""
        other = await create_agency(pay_client)
        theirs = await made(pay_client, other, capture=False)
        foreign_token = await tokenize(pay_client, other)
        for token in (foreign_token, UNKNOWN_TOKEN, UNKNOWN_PAN_SHAPED_TOKEN):
            refused = await contract.call(
                "POST", "/v1/charges", status=404, json={"token": token, "amount": 100}, headers=sandbox_agency.auth
            )
            assert refused.problem_code == "token_not_found"
        for charge_id in (theirs["id"], UNKNOWN_CHARGE, "not-a-charge"):
            path = f"/v1/charges/{charge_id}"
            await contract.call("GET", path, status=404, headers=sandbox_agency.auth)
            for action in ("capture", "void", "refunds"):
                await contract.call("POST", f"{path}/{action}", status=404, headers=sandbox_agency.auth)
        contract.assert_covered()

    @covers(
        ("createCharge", 422),
        ("createCharge", 201),
        ("captureCharge", 422),
        ("voidCharge", 422),
        ("refundCharge", 422),
        ("listCharges", 422),
        codes={"validation_failed"},
        field_codes={"invalid", "required", "unknown_field", "amount_over_limit"},
    )
    async def test_invalid_fields_conform(
        self, contract: Contract, pay_client: Client, sandbox_agency: AgencyKeys
    ) -> None:
        """Each kind of invalid charge field or query answers 422 naming the field and its code."""
        agency = sandbox_agency
        token = await tokenize(pay_client, agency)
        base = {"token": token, "amount": 100}
        cases: list[tuple[dict[str, Any], set[tuple[str, str]], bool]] = [
            ({}, {("token", "required"), ("amount", "required")}, False),
            ({**base, "amount": 0}, {("amount", "invalid")}, False),
            ({**base, "amount": -5}, {("amount", "invalid")}, False),
            ({**base, "amount": 12.5}, {("amount", "invalid")}, False),
            ({**base, "amount": 12.0}, {("amount", "invalid")}, True),
            ({**base, "amount": "100"}, {("amount", "invalid")}, False),
            ({**base, "amount": True}, {("amount", "invalid")}, False),
            ({**base, "amount": 100_000_000}, {("amount", "invalid")}, False),
            ({**base, "token": "not-a-token"}, {("token", "invalid")}, False),
            ({**base, "currency": "eur"}, {("currency", "invalid")}, False),
            ({**base, "currency": None}, {("currency", "invalid")}, False),
            ({**base, "capture": "yes"}, {("capture", "invalid")}, False),
            ({**base, "channel": "carrier-pigeon"}, {("channel", "invalid")}, False),
            ({**base, "description": ""}, {("description", "invalid")}, False),
            ({**base, "description": f"card {VISA}"}, {("description", "invalid")}, True),
            ({**base, "order_reference": "-starts-with-a-dash"}, {("order_reference", "invalid")}, False),
            ({**base, "order_reference": VISA}, {("order_reference", "invalid")}, True),
            ({**base, "surprise": 1}, {("surprise", "unknown_field")}, False),
        ]
        for body, expected, conforms in cases:
            exchange = await contract.call(
                "POST", "/v1/charges", status=422, json=body, headers=agency.auth, conforms=conforms
            )
            assert set(exchange.field_errors) == expected, (body, exchange.field_errors)

        agencies = pay_client.app[SERVICES].agencies
        assert agencies is not None
        await AgencySettingsService(agencies).set_max_amount(agency.slug, 5000)
        over = await contract.call(
            "POST", "/v1/charges", status=422, json={**base, "amount": 5001}, headers=agency.auth
        )
        assert over.field_errors == [("amount", "amount_over_limit")]
        await contract.call("POST", "/v1/charges", status=201, json={**base, "amount": 5000}, headers=agency.auth)

        held = await made(pay_client, agency, capture=False)
        path = f"/v1/charges/{held['id']}"
        action_cases: list[tuple[str, dict[str, Any], tuple[str, str]]] = [
            ("capture", {"amount": 0}, ("amount", "invalid")),
            ("capture", {"amount": "all"}, ("amount", "invalid")),
            ("capture", {"final": True}, ("final", "unknown_field")),
            ("void", {"amount": 1}, ("amount", "unknown_field")),
            ("refunds", {"amount": 1.5}, ("amount", "invalid")),
            ("refunds", {"reason": "duplicate"}, ("reason", "unknown_field")),
        ]
        for action, action_body, field_error in action_cases:
            exchange = await contract.call(
                "POST", f"{path}/{action}", status=422, json=action_body, headers=agency.auth, conforms=False
            )
            assert exchange.field_errors == [field_error]

        query_cases: list[tuple[dict[str, str] | None, tuple[str, str], bool]] = [
            (None, ("order_reference", "required"), False),
            ({"order_reference": "bad ref!"}, ("order_reference", "invalid"), False),
            ({"order_reference": "FL-1", "limit": "5"}, ("limit", "unknown_field"), True),
        ]
        for params, field_error, query_conforms in query_cases:
            exchange = await contract.call(
                "GET", "/v1/charges", status=422, params=params, headers=agency.auth, conforms=query_conforms
            )
            assert exchange.field_errors == [field_error]
        contract.assert_covered()


# --- who may call, what bodies are read ---------------------------------------------------------------


class TestKeysAndBodiesConformance:
    @covers(
        *((op, status) for op in ALL_OPS for status in (401, 403)),
        codes={"missing_api_key", "invalid_api_key", "secret_key_required"},
    )
    async def test_missing_unknown_and_publishable_keys_are_refused(
        self, contract: Contract, pay_client: Client, sandbox_agency: AgencyKeys, destination: DestinationServer
    ) -> None:
        """Every charge and forward operation answers 401 without a usable key and 403 to a publishable key."""
        held = await made(pay_client, sandbox_agency, capture=False)
        unknown_key = {"Authorization": "Bearer sk_" + "x" * 43}
        public = {**sandbox_agency.public_auth, "Origin": SHOP}
        for method, path, params, body in every_operation(UNKNOWN_TOKEN, held["id"], destination.url("/pay")):
            missing = await contract.call(method, path, status=401, params=params, json=body, conforms=False)
            assert missing.headers["WWW-Authenticate"] == 'Bearer realm="cardvault"'
            await contract.call(method, path, status=401, params=params, json=body, headers=unknown_key)
            refused = await contract.call(method, path, status=403, params=params, json=body, headers=public)
            assert refused.problem_code == "secret_key_required"
        contract.assert_covered()

    @covers(
        *(
            (op, status)
            for op in ("createCharge", "captureCharge", "voidCharge", "refundCharge", "forwardRequest")
            for status in (400, 413, 415)
        ),
        ("createToken", 400),
        codes={"malformed_request", "idempotency_key_invalid", "payload_too_large", "unsupported_media_type"},
    )
    async def test_unreadable_bodies_and_bad_keys_conform(
        self, contract: Contract, pay_client: Client, sandbox_agency: AgencyKeys, destination: DestinationServer
    ) -> None:
        """Every POST answers 415, 413 and 400 for unreadable bodies, and 400 for a malformed Idempotency-Key."""
        agency = sandbox_agency
        held = await made(pay_client, agency, capture=False)
        json_headers = {**agency.auth, "Content-Type": "application/json"}
        pad = "x" * 40_000  # over server.max_body_bytes (32768)
        charge_body = b'{"token": "' + UNKNOWN_TOKEN.encode() + b'", "amount": 1}'
        forward_body = b'{"destination": "https://a.example/", "method": "POST", "body": ""}'
        # (path, a readable body, an oversized one and whether the document accepts it, a body repeating a key
        # and whether the document accepts what a JSON parser makes of it)
        targets: list[tuple[str, bytes, dict[str, Any], bool, bytes, bool]] = [
            ("/v1/charges", charge_body, {"description": pad}, False, charge_body[:-1] + b', "amount": 2}', True),
            (f"/v1/charges/{held['id']}/capture", b"{}", {"note": pad}, False, b'{"amount": 1, "amount": 2}', True),
            (f"/v1/charges/{held['id']}/void", b"{}", {"note": pad}, False, b'{"a": 1, "a": 2}', False),
            (f"/v1/charges/{held['id']}/refunds", b"{}", {"note": pad}, False, b'{"amount": 1, "amount": 2}', True),
            ("/v1/forward", forward_body, forwarded(destination.url("/pay"), pad), True, b'{"a": 1, "a": 2}', False),
        ]
        text = {**agency.auth, "Content-Type": "text/plain"}
        for path, good, huge, huge_conforms, repeated, repeated_conforms in targets:
            await contract.call("POST", path, status=415, body=good, headers=text, conforms=False)
            await contract.call("POST", path, status=413, json=huge, headers=agency.auth, conforms=huge_conforms)
            # An oversized body of the wrong type: the type is checked first, unless an Idempotency-Key is sent,
            # whose handling reads the body (and so meets the size limit) before the type is looked at.
            oversized = json.dumps(huge).encode()
            await contract.call("POST", path, status=415, body=oversized, headers=text, conforms=False)
            keyed_text = {**text, "Idempotency-Key": "size-first"}
            await contract.call("POST", path, status=413, body=oversized, headers=keyed_text, conforms=False)
            for raw in (b'{"amount": ', b"[]", b'{"amount": NaN}'):
                await contract.call("POST", path, status=400, body=raw, headers=json_headers, conforms=False)
            await contract.call(
                "POST", path, status=400, body=repeated, headers=json_headers, conforms=repeated_conforms
            )
            for key in ("x" * 256, "tab\there", ""):
                headers = {**json_headers, "Idempotency-Key": key}
                bad = await contract.call("POST", path, status=400, body=good, headers=headers, conforms=False)
                assert bad.problem_code == "idempotency_key_invalid"
        token_body = {"card": {"number": VISA, "exp_month": 12, "exp_year": 2031}}
        bad = await contract.call(
            "POST", "/v1/tokens", status=400, json=token_body, headers=keyed(agency, "x" * 256), conforms=False
        )
        assert bad.problem_code == "idempotency_key_invalid"
        contract.assert_covered()


# --- idempotency ---------------------------------------------------------------------------------------


class TestIdempotencyConformance:
    @covers(
        ("createToken", 201),
        ("createToken", 422),
        ("createCharge", 201),
        ("createCharge", 200),
        ("createCharge", 402),
        ("createCharge", 422),
        ("captureCharge", 200),
        ("captureCharge", 422),
        ("voidCharge", 200),
        ("voidCharge", 422),
        ("refundCharge", 201),
        ("refundCharge", 422),
        codes={"idempotency_key_reused"},
    )
    async def test_retries_replay_and_reused_keys_are_refused(
        self, contract: Contract, pay_client: Client, sandbox_agency: AgencyKeys, redis_server: RedisServer
    ) -> None:
        """A retry replays the first answer with Idempotent-Replayed; another request with the key answers 422."""
        agency = sandbox_agency
        token_body = {"card": {"number": VISA, "exp_month": 12, "exp_year": 2031, "cvc": CVC}}
        first = await contract.call("POST", "/v1/tokens", status=201, json=token_body, headers=keyed(agency, "tok-1"))
        again = await contract.call("POST", "/v1/tokens", status=201, json=token_body, headers=keyed(agency, "tok-1"))
        assert_replay(first, again)
        assert again.headers["Location"] == first.headers["Location"]
        other_card = {"card": {**token_body["card"], "number": MASTERCARD}}
        reused = await contract.call("POST", "/v1/tokens", status=422, json=other_card, headers=keyed(agency, "tok-1"))
        assert reused.problem_code == "idempotency_key_reused"
        assert "errors" not in reused.json()
        token = first.json()["id"]

        body = {"token": token, "amount": 2500, "capture": False}
        first = await contract.call("POST", "/v1/charges", status=201, json=body, headers=keyed(agency, "ch-1"))
        again = await contract.call("POST", "/v1/charges", status=201, json=body, headers=keyed(agency, "ch-1"))
        assert_replay(first, again)
        held = first.json()
        assert held["id"] == charge_id_for(agency.id, "ch-1")
        await contract.call(
            "POST", "/v1/charges", status=422, json={**body, "amount": 2600}, headers=keyed(agency, "ch-1")
        )
        forget_key(redis_server, agency, "ch-1")
        found = await contract.call(
            "POST", "/v1/charges", status=200, json={**body, "amount": 2600}, headers=keyed(agency, "ch-1")
        )
        assert (found.json()["id"], found.json()["amount"], found.replayed) == (held["id"], 2500, False)

        declined_body = {"token": await tokenize(pay_client, agency, DECLINED_CARD), "amount": 2500}
        first = await contract.call("POST", "/v1/charges", status=402, json=declined_body, headers=keyed(agency, "d-1"))
        again = await contract.call("POST", "/v1/charges", status=402, json=declined_body, headers=keyed(agency, "d-1"))
        assert_replay(first, again)
        forget_key(redis_server, agency, "d-1")
        still = await contract.call("POST", "/v1/charges", status=402, json=declined_body, headers=keyed(agency, "d-1"))
        assert (still.json()["id"], still.replayed) == (first.json()["id"], False)

        path = f"/v1/charges/{held['id']}"
        first = await contract.call("POST", f"{path}/capture", status=200, json={}, headers=keyed(agency, "cap-1"))
        again = await contract.call("POST", f"{path}/capture", status=200, json={}, headers=keyed(agency, "cap-1"))
        assert_replay(first, again)
        assert first.json()["status"] == "succeeded"
        await contract.call("POST", f"{path}/capture", status=422, json={"amount": 5}, headers=keyed(agency, "cap-1"))
        await contract.call("POST", f"{path}/void", status=422, json={}, headers=keyed(agency, "cap-1"))
        first = await contract.call(
            "POST", f"{path}/refunds", status=201, json={"amount": 100}, headers=keyed(agency, "ref-1")
        )
        again = await contract.call(
            "POST", f"{path}/refunds", status=201, json={"amount": 100}, headers=keyed(agency, "ref-1")
        )
        assert_replay(first, again)
        await contract.call("POST", f"{path}/refunds", status=422, json={"amount": 200}, headers=keyed(agency, "ref-1"))
        looked_up = await pay_client.get(path, headers=agency.auth)
        assert (await looked_up.json())["amount_refunded"] == 100

        other_held = await made(pay_client, agency, capture=False)
        other_path = f"/v1/charges/{other_held['id']}"
        first = await contract.call("POST", f"{other_path}/void", status=200, headers=keyed(agency, "void-1"))
        again = await contract.call("POST", f"{other_path}/void", status=200, headers=keyed(agency, "void-1"))
        assert_replay(first, again)
        contract.assert_covered()

    @covers(
        ("createToken", 201),
        ("createToken", 409),
        ("createCharge", 201),
        ("createCharge", 409),
        ("captureCharge", 200),
        ("captureCharge", 409),
        ("voidCharge", 200),
        ("voidCharge", 409),
        ("refundCharge", 201),
        ("refundCharge", 409),
        ("forwardRequest", 200),
        ("forwardRequest", 409),
        codes={"idempotency_request_in_progress"},
    )
    async def test_duplicates_in_flight_answer_409(
        self,
        contract: Contract,
        pay_client: Client,
        anet_agency: AgencyKeys,
        authnet: FakeAuthorizeNet,
        destination: DestinationServer,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """A duplicate that arrives while the first request with its key is in flight answers 409 on every POST."""
        agency = anet_agency
        vault = pay_client.app[SERVICES].vault
        assert vault is not None
        tokenize_now = vault.tokenize
        entered, release = asyncio.Event(), asyncio.Event()

        async def held_tokenize(*args: Any, **kwargs: Any) -> Any:
            entered.set()
            await release.wait()
            return await tokenize_now(*args, **kwargs)

        monkeypatch.setattr(vault, "tokenize", held_tokenize)
        token_body = {"card": {"number": VISA, "exp_month": 12, "exp_year": 2031}}
        call = contract.call("POST", "/v1/tokens", status=201, json=token_body, headers=keyed(agency, "t-1"))
        first = asyncio.create_task(call)
        await entered.wait()
        await contract.call("POST", "/v1/tokens", status=409, json=token_body, headers=keyed(agency, "t-1"))
        release.set()
        await first
        monkeypatch.undo()

        held, other_held, succeeded = (
            await made(pay_client, agency, capture=False),
            await made(pay_client, agency, capture=False),
            await made(pay_client, agency),
        )
        authnet.delay = IN_FLIGHT
        requests: list[tuple[str, str, int, Any]] = [
            ("in-1", "/v1/charges", 201, {"token": await tokenize(pay_client, agency), "amount": 1200}),
            ("in-2", f"/v1/charges/{held['id']}/capture", 200, {"amount": 1000}),
            ("in-3", f"/v1/charges/{other_held['id']}/void", 200, {}),
            ("in-4", f"/v1/charges/{succeeded['id']}/refunds", 201, {"amount": 100}),
        ]
        for key, path, status, body in requests:
            calls = authnet.total_requests
            call = contract.call("POST", path, status=status, json=body, headers=keyed(agency, key))
            first = asyncio.create_task(call)

            def arrived(before: int = calls) -> bool:
                return authnet.total_requests > before

            await until(arrived)
            duplicate = await contract.call("POST", path, status=409, json=body, headers=keyed(agency, key))
            assert duplicate.problem_code == "idempotency_request_in_progress"
            await first
        authnet.delay = 0

        await allow(pay_client, agency, destination.url("/pay"))
        destination.mode, destination.slow_seconds = "slow", IN_FLIGHT
        body = forwarded(destination.url("/pay"), "{}")
        first = asyncio.create_task(
            contract.call("POST", "/v1/forward", status=200, json=body, headers=keyed(agency, "f-1"))
        )
        await until(lambda: destination.calls == 1)
        await contract.call("POST", "/v1/forward", status=409, json=body, headers=keyed(agency, "f-1"))
        await first
        assert destination.calls == 1
        contract.assert_covered()


# --- charges: the processor fails --------------------------------------------------------------------------


class TestProcessorFailureConformance:
    @covers(
        ("createCharge", 502),
        ("captureCharge", 502),
        ("voidCharge", 502),
        ("refundCharge", 502),
        codes={"processor_unavailable", "processor_rejected"},
    )
    async def test_unreachable_and_rejecting_processors_answer_502_with_the_charge(
        self, contract: Contract, pay_client: Client, anet_agency: AgencyKeys, authnet: FakeAuthorizeNet
    ) -> None:
        """A processor answering 500 or refusing the credentials answers 502 with the charge as it was left."""
        agency = anet_agency
        held, other_held, succeeded = (
            await made(pay_client, agency, capture=False),
            await made(pay_client, agency, capture=False),
            await made(pay_client, agency),
        )
        transaction_key, authnet.transaction_key = authnet.transaction_key, "other"
        body = {"token": await tokenize(pay_client, agency), "amount": 2500}
        rejected = await contract.call("POST", "/v1/charges", status=502, json=body, headers=agency.auth)
        assert (rejected.problem_code, rejected.json()["charge"]["status"]) == ("processor_rejected", "failed")
        authnet.transaction_key = transaction_key

        authnet.fail_next(1)
        body = {"token": await tokenize(pay_client, agency), "amount": 2500}
        failed = await contract.call("POST", "/v1/charges", status=502, json=body, headers=agency.auth)
        shown = failed.json()["charge"]
        assert (failed.problem_code, shown["status"], shown["history"][-1]["note"]) == (
            "processor_unavailable",
            "failed",
            "processor_unavailable",
        )
        authnet.fail_next(1)
        capture = await contract.call("POST", f"/v1/charges/{held['id']}/capture", status=502, headers=agency.auth)
        assert capture.json()["charge"] == held
        await made(pay_client, agency)  # a success: the breaker's count of failures in a row starts again
        authnet.fail_next(1)
        void = await contract.call("POST", f"/v1/charges/{other_held['id']}/void", status=502, headers=agency.auth)
        assert void.json()["charge"] == other_held
        authnet.fail_next(1)
        refund = await contract.call("POST", f"/v1/charges/{succeeded['id']}/refunds", status=502, headers=agency.auth)
        shown = refund.json()["charge"]
        assert {k: v for k, v in shown.items() if k != "refunds"} == {
            k: v for k, v in succeeded.items() if k != "refunds"
        }
        assert [r["status"] for r in shown["refunds"]] == ["failed"]  # recorded, amount reserved or released
        contract.assert_covered()

    @covers(
        ("createCharge", 504),
        ("getCharge", 200),
        ("captureCharge", 504),
        ("voidCharge", 504),
        ("refundCharge", 504),
        ("refundCharge", 202),
        codes={"processor_timeout"},
    )
    async def test_timeouts_answer_504_with_the_charge_and_replay(
        self, contract: Contract, pay_client: Client, anet_agency: AgencyKeys, authnet: FakeAuthorizeNet
    ) -> None:
        """No answer in time is 504 with the charge (a new one unknown); the retry replays it without a call."""
        agency = anet_agency
        held, other_held, succeeded = (
            await made(pay_client, agency, capture=False),
            await made(pay_client, agency, capture=False),
            await made(pay_client, agency),
        )
        authnet.delay = PROCESSOR_TIMEOUT + 0.5
        body = {"token": await tokenize(pay_client, agency), "amount": 2500}
        first = await contract.call("POST", "/v1/charges", status=504, json=body, headers=keyed(agency, "slow-1"))
        assert first.json()["charge"]["status"] == "unknown"
        calls = authnet.total_requests
        again = await contract.call("POST", "/v1/charges", status=504, json=body, headers=keyed(agency, "slow-1"))
        assert_replay(first, again)
        assert authnet.total_requests == calls
        stored = await contract.call(
            "GET", f"/v1/charges/{first.json()['charge']['id']}", status=200, headers=agency.auth
        )
        assert stored.json() == first.json()["charge"]
        timed_out = await contract.call("POST", f"/v1/charges/{held['id']}/capture", status=504, headers=agency.auth)
        assert timed_out.json()["charge"] == held
        authnet.delay = 0
        await made(pay_client, agency)  # a success: the breaker's count of failures in a row starts again
        authnet.delay = PROCESSOR_TIMEOUT + 0.5
        await contract.call("POST", f"/v1/charges/{other_held['id']}/void", status=504, headers=agency.auth)
        refund_path = f"/v1/charges/{succeeded['id']}/refunds"
        refund = await contract.call("POST", refund_path, status=504, headers=keyed(agency, "rf-slow"))
        shown = refund.json()["charge"]
        assert {k: v for k, v in shown.items() if k != "refunds"} == {
            k: v for k, v in succeeded.items() if k != "refunds"
        }
        assert [r["status"] for r in shown["refunds"]] == ["unknown"]  # recorded, its amount reserved
        authnet.delay = 0
        await forget_idempotency_records(pay_client, agency)
        calls = authnet.total_requests
        found = await contract.call("POST", refund_path, status=202, headers=keyed(agency, "rf-slow"))
        assert (found.json()["status"], found.json()["id"]) == ("unknown", shown["refunds"][0]["id"])
        assert authnet.total_requests == calls
        contract.assert_covered()

    @covers(
        ("createCharge", 201),
        ("createCharge", 502),
        ("createCharge", 503),
        ("captureCharge", 503),
        ("voidCharge", 503),
        ("refundCharge", 503),
        codes={"processor_unavailable", "processor_circuit_open"},
    )
    async def test_an_open_circuit_answers_503_then_lets_one_trial_through(
        self, contract: Contract, pay_client: Client, anet_agency: AgencyKeys, authnet: FakeAuthorizeNet
    ) -> None:
        """After three failures charges answer 503 at once (a new one has no charge); later one trial goes through."""
        agency = anet_agency
        held, other_held, succeeded = (
            await made(pay_client, agency, capture=False),
            await made(pay_client, agency, capture=False),
            await made(pay_client, agency),
        )
        authnet.fail_next(3)
        for _ in range(3):
            body = {"token": await tokenize(pay_client, agency), "amount": 2500}
            await contract.call("POST", "/v1/charges", status=502, json=body, headers=agency.auth)
        calls = authnet.total_requests
        token = await tokenize(pay_client, agency)
        paused = await contract.call(
            "POST", "/v1/charges", status=503, json={"token": token, "amount": 2500}, headers=agency.auth
        )
        assert (paused.problem_code, "charge" in paused.json()) == ("processor_circuit_open", False)
        assert 1 <= int(paused.headers["Retry-After"]) <= BREAKER_RESET + 1
        for path, unchanged in [
            (f"/v1/charges/{held['id']}/capture", held),
            (f"/v1/charges/{other_held['id']}/void", other_held),
            (f"/v1/charges/{succeeded['id']}/refunds", succeeded),
        ]:
            refused = await contract.call("POST", path, status=503, headers=agency.auth)
            assert (refused.problem_code, refused.json()["charge"]) == ("processor_circuit_open", unchanged)
        assert authnet.total_requests == calls
        still_held = await pay_client.get(f"/v1/tokens/{token}", headers=agency.auth)
        assert (await still_held.json())["cvc_retained"] is True

        await asyncio.sleep(BREAKER_RESET + 0.1)
        authnet.delay = IN_FLIGHT
        trial = asyncio.create_task(
            contract.call("POST", "/v1/charges", status=201, json={"token": token, "amount": 2500}, headers=agency.auth)
        )
        await until(lambda: authnet.total_requests > calls)
        second_token = await tokenize(pay_client, agency)
        second = {"token": second_token, "amount": 2500}
        refused = await contract.call("POST", "/v1/charges", status=503, json=second, headers=keyed(agency, "t-2"))
        assert (refused.problem_code, "charge" in refused.json()) == ("processor_circuit_open", False)
        assert int(refused.headers["Retry-After"]) >= 1
        second_kept = await pay_client.get(f"/v1/tokens/{second_token}", headers=agency.auth)
        assert (await second_kept.json())["cvc_retained"] is True
        assert (await trial).json()["status"] == "succeeded"
        # The refusal changed nothing, so it freed the key: once the circuit is closed the retry charges.
        again = await contract.call("POST", "/v1/charges", status=201, json=second, headers=keyed(agency, "t-2"))
        assert again.json()["processor"]["cvc_check"] == "pass"
        taken = await pay_client.get(f"/v1/tokens/{second_token}", headers=agency.auth)
        assert (await taken.json())["cvc_retained"] is False
        contract.assert_covered()


# --- stored data, Redis and keys fail ----------------------------------------------------------------------


class TestServerFailureConformance:
    @covers(
        ("createCharge", 500),
        ("createCharge", 402),
        ("getCharge", 200),
        ("forwardRequest", 500),
        *((op, 500) for op in CHARGE_OPS),
        codes={"integrity_error"},
    )
    async def test_data_failing_authentication_answers_integrity_error(
        self,
        contract: Contract,
        pay_client: Client,
        sandbox_agency: AgencyKeys,
        redis_server: RedisServer,
        destination: DestinationServer,
    ) -> None:
        """A moved card ciphertext fails its charge or forward with 500; corrupted agency keys fail every operation."""
        agency = sandbox_agency
        redis = redis_server.client()
        mine, other = await tokenize(pay_client, agency), await tokenize(pay_client, agency, MASTERCARD)
        held = await made(pay_client, agency, capture=False)
        other_blob = redis.get(token_key(agency.id, other))
        assert isinstance(other_blob, bytes)
        redis.set(token_key(agency.id, mine), other_blob, keepttl=True)

        body = {"token": mine, "amount": 2500}
        await contract.call("POST", "/v1/charges", status=500, json=body, headers=keyed(agency, "broken-1"))
        recorded = await contract.call(
            "GET", f"/v1/charges/{charge_id_for(agency.id, 'broken-1')}", status=200, headers=agency.auth
        )
        assert (recorded.json()["status"], recorded.json()["card"]) == ("failed", {"brand": "", "last4": ""})
        retried = await contract.call("POST", "/v1/charges", status=402, json=body, headers=keyed(agency, "broken-1"))
        assert retried.json() == recorded.json()

        await allow(pay_client, agency, destination.url("/pay"))
        await contract.call(
            "POST",
            "/v1/forward",
            status=500,
            json=forwarded(destination.url("/pay"), ref(mine, "number")),
            headers=agency.auth,
        )
        assert destination.calls == 0

        wrapped_blob = redis.hget(agency_key(agency.id), "dk:1")
        assert isinstance(wrapped_blob, bytes)
        wrapped = bytearray(wrapped_blob)
        wrapped[-1] ^= 0x01
        redis.hset(agency_key(agency.id), "dk:1", bytes(wrapped))
        for method, path, params, request_body in every_operation(other, held["id"], destination.url("/pay")):
            failed = await contract.call(
                method, path, status=500, params=params, json=request_body, headers=agency.auth
            )
            assert failed.problem_code == "integrity_error"
        contract.assert_covered()

    @covers(*((op, 503) for op in ALL_OPS), codes={"store_unavailable"})
    async def test_stopped_redis_answers_store_unavailable(
        self, contract: Contract, aiohttp_client: Any, fresh_redis: RedisServer, master_keys: MasterKeys, tmp_path: Path
    ) -> None:
        """With its Redis killed every charge and forward operation answers 503 store_unavailable with Retry-After."""
        app = await plain_app(aiohttp_client, fresh_redis.url, tmp_path / "var", master_keys)
        agency = await create_agency(app)
        on_app = contract.using(app)
        fresh_redis.kill()
        try:
            for method, path, params, body in every_operation(UNKNOWN_TOKEN, UNKNOWN_CHARGE, "https://a.example/"):
                down = await on_app.call(method, path, status=503, params=params, json=body, headers=agency.auth)
                assert (down.problem_code, down.headers["Retry-After"]) == ("store_unavailable", "1")
        finally:
            fresh_redis.restart_same_port()
        contract.assert_covered()

    @covers(*((op, 503) for op in ALL_OPS), codes={"keys_unavailable"})
    async def test_keys_under_an_unloaded_master_key_answer_keys_unavailable(
        self, contract: Contract, aiohttp_client: Any, fresh_redis: RedisServer, tmp_path: Path
    ) -> None:
        """A process without the master key an agency's keys are wrapped under answers 503 keys_unavailable."""
        old = fresh_master_keys()
        old_app = await plain_app(aiohttp_client, fresh_redis.url, tmp_path / "old", old)
        new_app = await plain_app(aiohttp_client, fresh_redis.url, tmp_path / "new", fresh_master_keys(old))
        agency = await create_agency(new_app)
        on_old = contract.using(old_app)
        for method, path, params, body in every_operation(UNKNOWN_TOKEN, UNKNOWN_CHARGE, "https://a.example/"):
            down = await on_old.call(method, path, status=503, params=params, json=body, headers=agency.auth)
            assert down.problem_code == "keys_unavailable"
            assert "Retry-After" not in down.headers
        contract.assert_covered()


# --- forward ---------------------------------------------------------------------------------------------


class TestForwardConformance:
    @covers(("forwardRequest", 200))
    async def test_forwards_answer_200_with_the_destinations_answer(
        self, contract: Contract, pay_client: Client, sandbox_agency: AgencyKeys, destination: DestinationServer
    ) -> None:
        """The destination's answer, whatever its status, comes back redacted in a 200; a retry replays it."""
        agency = sandbox_agency
        await allow(pay_client, agency, destination.url("/pay"))
        token = await tokenize(pay_client, agency, name="Ada Lovelace")
        template = (
            f'{{"number": "{ref(token, "number")}", "exp_month": {ref(token, "exp_month")}, '
            f'"exp_year": {ref(token, "exp_year")}, "cvc": "{ref(token, "cvc")}", "name": "{ref(token, "name")}"}}'
        )
        body = forwarded(destination.url("/pay/charge"), template)
        first = await contract.call("POST", "/v1/forward", status=200, json=body, headers=keyed(agency, "fwd-1"))
        answer = first.json()
        assert (answer["status"], answer["headers"]["x-request-id"]) == (200, "dst-req-0001")
        assert "[REDACTED CARD ****4242]" in answer["body"]
        assert "[REDACTED CVC]" in answer["body"]
        again = await contract.call("POST", "/v1/forward", status=200, json=body, headers=keyed(agency, "fwd-1"))
        assert_replay(first, again)
        assert destination.calls == 1

        destination.mode, destination.redirect_to = "redirect", destination.url("/pay/elsewhere")
        redirected = await contract.call(
            "POST",
            "/v1/forward",
            status=200,
            json=forwarded(destination.url("/pay"), "{}", method="PUT"),
            headers=agency.auth,
        )
        assert (redirected.json()["status"], redirected.json()["headers"]["location"]) == (
            302,
            destination.url("/pay/elsewhere"),
        )
        destination.mode = "card"
        carded = await contract.call(
            "POST",
            "/v1/forward",
            status=200,
            json=forwarded(destination.url("/pay"), "x", headers={}),
            headers=agency.auth,
        )
        assert carded.json()["headers"]["x-request-id"] == "dst-[REDACTED CARD ****4242]"
        contract.assert_covered()

    @covers(
        ("forwardRequest", 200),
        ("forwardRequest", 403),
        ("forwardRequest", 422),
        codes={
            "destination_not_allowed",
            "destination_address_forbidden",
            "validation_failed",
            "template_invalid",
            "template_token_not_found",
            "cvc_unavailable",
            "template_value_missing",
            "template_value_unsafe",
            "idempotency_key_reused",
        },
        field_codes={
            "required",
            "invalid",
            "unknown_field",
            "charset_unknown",
            "template_invalid",
            "template_token_not_found",
            "cvc_unavailable",
            "template_value_missing",
            "template_value_unsafe",
        },
    )
    async def test_refused_forwards_conform(
        self, contract: Contract, pay_client: Client, sandbox_agency: AgencyKeys, destination: DestinationServer
    ) -> None:
        """Destinations off the allowlist or on loopback answer 403; bad fields and templates 422; nothing is sent."""
        agency = sandbox_agency
        url = destination.url("/pay")
        await allow(pay_client, agency, url)
        with_cvc = await tokenize(pay_client, agency, name="Ada {Lovelace}")
        without = await tokenize(pay_client, agency, cvc=None)

        for target in (destination.url("/payments"), f"https://localhost:{destination.port}/pay/../admin"):
            refused = await contract.call(
                "POST", "/v1/forward", status=403, json=forwarded(target, ref(with_cvc, "cvc")), headers=agency.auth
            )
            assert refused.problem_code == "destination_not_allowed"
        private = await create_agency(pay_client)
        await allow(pay_client, private, url, allow_private=False)
        loopback = await contract.call(
            "POST", "/v1/forward", status=403, json=forwarded(url, "{}"), headers=private.auth
        )
        assert loopback.problem_code == "destination_address_forbidden"

        fields: list[tuple[dict[str, Any], set[tuple[str, str]], bool]] = [
            ({"destination": url, "method": "POST"}, {("body", "required")}, False),
            (forwarded(url, "{}", method="GET"), {("method", "invalid")}, False),
            (forwarded(url, "{}", headers={"X-Bad": "a\r\nInjected: 1"}), {("headers.X-Bad.value", "invalid")}, False),
            (forwarded(url, "{}", headers={"Bad Name": "x"}), {("headers.Bad Name.key", "invalid")}, False),
            (forwarded(url, "{}", headers={"X-A": "1", "x-a": "2"}), {("headers", "invalid")}, True),
            (forwarded(url, "{}", follow_redirects=True), {("follow_redirects", "unknown_field")}, False),
            (
                forwarded(url, "{}", headers={"content-type": "application/json; charset=klingon"}),
                {("headers.Content-Type", "charset_unknown")},
                True,
            ),
        ]
        for body, expected, conforms in fields:
            exchange = await contract.call(
                "POST", "/v1/forward", status=422, json=body, headers=agency.auth, conforms=conforms
            )
            assert (exchange.problem_code, set(exchange.field_errors)) == ("validation_failed", expected)

        templates = [
            ('{"n": "{{ number }}"}', {}, "template_invalid"),
            (ref(UNKNOWN_TOKEN, "number"), {}, "template_token_not_found"),
            (ref(without, "cvc"), {}, "cvc_unavailable"),
            (ref(without, "name"), {}, "template_value_missing"),
            (ref(with_cvc, "name"), {"headers": {"Content-Type": "text/plain"}}, "template_value_unsafe"),
        ]
        for template, changes, code in templates:
            exchange = await contract.call(
                "POST", "/v1/forward", status=422, json=forwarded(url, template, **changes), headers=agency.auth
            )
            assert (exchange.problem_code, exchange.field_errors) == (code, [("body", code)])
        assert destination.calls == 0
        token_state = await pay_client.get(f"/v1/tokens/{with_cvc}", headers=agency.auth)
        assert (await token_state.json())["cvc_retained"] is True

        await contract.call("POST", "/v1/forward", status=200, json=forwarded(url, "{}"), headers=keyed(agency, "f-2"))
        reused = await contract.call(
            "POST", "/v1/forward", status=422, json=forwarded(url, '{"a": 1}'), headers=keyed(agency, "f-2")
        )
        assert (reused.problem_code, "errors" in reused.json()) == ("idempotency_key_reused", False)
        contract.assert_covered()

    @covers(
        ("forwardRequest", 502),
        ("forwardRequest", 504),
        codes={
            "destination_unreachable",
            "destination_response_too_large",
            "destination_response_unreadable",
            "destination_timeout",
        },
    )
    async def test_failed_destinations_answer_502_and_504(
        self, contract: Contract, pay_client: Client, sandbox_agency: AgencyKeys, destination: DestinationServer
    ) -> None:
        """Unreachable, oversized, compressed and silent destinations answer as documented; a retry replays it."""
        agency = sandbox_agency
        url = destination.url("/pay")
        await allow(pay_client, agency, url)
        nowhere = f"https://localhost:{closed_port()}/pay"
        await allow(pay_client, agency, nowhere)
        token = await tokenize(pay_client, agency)

        unreachable = await contract.call(
            "POST", "/v1/forward", status=502, json=forwarded(nowhere, ref(token, "cvc")), headers=keyed(agency, "u-1")
        )
        assert unreachable.problem_code == "destination_unreachable"
        again = await contract.call(
            "POST", "/v1/forward", status=502, json=forwarded(nowhere, ref(token, "cvc")), headers=keyed(agency, "u-1")
        )
        assert_replay(unreachable, again)
        token_state = await pay_client.get(f"/v1/tokens/{token}", headers=agency.auth)
        assert (await token_state.json())["cvc_retained"] is False

        for mode, status, code in [
            ("huge", 502, "destination_response_too_large"),
            ("huge_chunked", 502, "destination_response_too_large"),
            ("gzip", 502, "destination_response_unreadable"),
            ("slow", 504, "destination_timeout"),
        ]:
            destination.mode = mode
            failed = await contract.call(
                "POST", "/v1/forward", status=status, json=forwarded(url, "{}"), headers=agency.auth
            )
            assert failed.problem_code == code
        contract.assert_covered()


# --- routes the document does not list ---------------------------------------------------------------------


class TestUnroutedPaymentsConformance:
    @covers((UNROUTED, 404), (UNROUTED, 405), codes={"not_found", "method_not_allowed"})
    async def test_unlisted_methods_on_payment_paths_answer_405(self, contract: Contract) -> None:
        """Other methods on the charge and forward paths answer 405 with Allow; deeper paths 404."""
        allowed = {
            ("PUT", "/v1/charges"): "GET,POST",
            ("HEAD", "/v1/charges"): "GET,POST",
            ("DELETE", f"/v1/charges/{UNKNOWN_CHARGE}"): "GET",
            ("GET", f"/v1/charges/{UNKNOWN_CHARGE}/capture"): "POST",
            ("PUT", f"/v1/charges/{UNKNOWN_CHARGE}/void"): "POST",
            ("GET", f"/v1/charges/{UNKNOWN_CHARGE}/refunds"): "POST",
            ("GET", "/v1/forward"): "POST",
        }
        for (method, path), allow_header in allowed.items():
            exchange = await contract.call_unrouted(method, path, status=405)
            assert set(exchange.headers["Allow"].split(",")) == set(allow_header.split(","))
        await contract.call_unrouted("GET", f"/v1/charges/{UNKNOWN_CHARGE}/refunds/re_x", status=404)
        contract.assert_covered()
