"""The tokens API over HTTP: create, read, list by fingerprint, delete, dedupe, expiry, metadata.

Storage effects are checked with a plain Redis client against the real
redis-server, using the key layout documented in ``service.adapters.store``.
"""

from __future__ import annotations

import asyncio
import base64
import calendar
import datetime as dt
import json
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from aiohttp.test_utils import TestClient

from service.adapters import redis_base
from service.adapters.keyring import MasterKeys
from service.app import create_app
from tests.conftest import AgencyKeys, FakeClock, create_agency, make_settings
from tests.support import keys as redis_keys
from tests.support import leaks
from tests.support.cards import (
    AMEX,
    AMEX_CVC,
    CVC,
    DINERS,
    DINERS_14,
    DISCOVER,
    JCB,
    MAESTRO,
    MASTERCARD,
    MASTERCARD_2_SERIES,
    UNIONPAY,
    VISA,
)
from tests.support.redis_server import RedisServer

Client = TestClient[Any, Any]
TOKEN_KEYS = {"id", "object", "format", "card", "cvc_retained", "created", "expires_at", "metadata"}
CARD_KEYS = {"brand", "last4", "bin", "exp_month", "exp_year", "fingerprint"}
OPAQUE_ID = re.compile(r"^tok_[A-Za-z0-9_-]{24}$")
FINGERPRINT = re.compile(r"^[0-9a-f]{32}$")


# --- helpers ------------------------------------------------------------------------------------


def luhn_ok(digits: str) -> bool:
    """An independent Luhn check (the service's own is not trusted to test itself)."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def card(
    number: str = VISA, *, cvc: str | None = CVC, month: int = 12, year: int = 2031, **extra: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {"number": number, "exp_month": month, "exp_year": year, **extra}
    if cvc is not None:
        body["cvc"] = cvc
    return body


def token_key(agency: AgencyKeys, token_id: str) -> str:
    return redis_base.token_key(agency.id, token_id)


def cvc_key(agency: AgencyKeys, token_id: str) -> str:
    return redis_base.cvc_key(agency.id, token_id)


def fingerprint_key(agency: AgencyKeys, fingerprint: str) -> str:
    return redis_base.fingerprint_key(agency.id, fingerprint)


def agency_keys(r: redis.Redis, agency: AgencyKeys) -> set[bytes]:
    """Every Redis key that belongs to the agency (its record included)."""
    return redis_keys.agency_keys(r, agency.id)


def expires_at_ms(r: redis.Redis, key: str) -> int:
    """The absolute Unix time in ms at which Redis will expire ``key`` (PEXPIRETIME, Redis 7.0+)."""
    at = int(r.execute_command("PEXPIRETIME", key))
    assert at > 0, f"{key} has no TTL ({at})"
    return at


def end_of_month(year: int, month: int) -> int:
    last_day = calendar.monthrange(year, month)[1]
    return int(dt.datetime(year, month, last_day, 23, 59, 59, tzinfo=dt.UTC).timestamp())


def walk(value: Any) -> list[tuple[str | None, Any]]:
    """Every (key, scalar) pair of a JSON document."""
    found: list[tuple[str | None, Any]] = []
    stack: list[tuple[str | None, Any]] = [(None, value)]
    while stack:
        key, node = stack.pop()
        if isinstance(node, dict):
            stack.extend(node.items())
        elif isinstance(node, list):
            stack.extend((key, item) for item in node)
        else:
            found.append((key, node))
    return found


def assert_no_card_data(text: str, *, cvc: str = CVC) -> None:
    """No test card number (in any grouping) and no CVC value or cvc/number field in a JSON body."""
    assert leaks.cards_in_text(text) == []
    for key, value in walk(json.loads(text)):
        assert key not in {"number", "cvc", "pan"}
        assert value != cvc


async def create(client: Client, agency: AgencyKeys, body: dict[str, Any], status: int = 201) -> dict[str, Any]:
    resp = await client.post("/v1/tokens", json=body, headers=agency.auth)
    text = await resp.text()
    assert resp.status == status, text
    assert_no_card_data(text)
    result: dict[str, Any] = json.loads(text)
    return result


async def problem(resp: Any, status: int, code: str) -> dict[str, Any]:
    text = await resp.text()
    assert resp.status == status, text
    assert resp.content_type == "application/problem+json"
    assert leaks.cards_in_text(text) == []
    body: dict[str, Any] = json.loads(text)
    assert body["code"] == code
    assert body["status"] == status
    return body


def fields_of(body: dict[str, Any]) -> list[str]:
    return [error["field"] for error in body.get("errors", [])]


@pytest.fixture
def r(redis_server: RedisServer) -> redis.Redis:
    return redis_server.client()


AppFactory = Callable[..., Awaitable[Client]]


@pytest.fixture
def app_with(
    aiohttp_client: Any, redis_server: RedisServer, master_keys: MasterKeys, clock: FakeClock, tmp_path: Path
) -> AppFactory:
    """Build an app on the session Redis with setting overrides (``tokens__cvc_ttl_seconds=120``...)."""

    async def build(**overrides: Any) -> Client:
        settings = make_settings(redis_server.url, tmp_path / "var", **overrides)
        app = create_app(settings, master_keys, redis_url=redis_server.url, clock=clock, tls=False)
        built: Client = await aiohttp_client(app)
        return built

    return build


# --- tests ----------------------------------------------------------------------------------------


class TestCreate:
    async def test_body_has_exactly_the_documented_shape(
        self, client: Client, agency: AgencyKeys, clock: FakeClock
    ) -> None:
        """A create answers 201 with exactly the documented fields and the card reduced to brand, bin, last4."""
        before = int(clock())
        resp = await client.post("/v1/tokens", json={"card": card()}, headers=agency.auth)
        after = int(clock())
        assert resp.status == 201
        assert resp.content_type == "application/json"
        body = await resp.json()
        assert set(body) == TOKEN_KEYS
        assert set(body["card"]) == CARD_KEYS
        assert body["object"] == "token"
        assert body["format"] == "opaque"
        assert OPAQUE_ID.match(body["id"])
        assert {k: v for k, v in body["card"].items() if k != "fingerprint"} == {
            "brand": "visa",
            "last4": "4242",
            "bin": "424242",
            "exp_month": 12,
            "exp_year": 2031,
        }
        assert FINGERPRINT.match(body["card"]["fingerprint"])
        assert body["cvc_retained"] is True
        assert before <= body["created"] <= after
        assert body["expires_at"] == end_of_month(2031, 12)
        assert body["metadata"] == {}
        assert_no_card_data(await resp.text())

    async def test_location_names_the_new_token(self, client: Client, agency: AgencyKeys) -> None:
        """The 201 carries a Location header that a GET with the secret key resolves to the same token."""
        resp = await client.post("/v1/tokens", json={"card": card()}, headers=agency.auth)
        body = await resp.json()
        assert resp.headers["Location"] == f"/v1/tokens/{body['id']}"
        again = await client.get(resp.headers["Location"], headers=agency.auth)
        assert again.status == 200
        assert (await again.json())["id"] == body["id"]

    async def test_without_cvc_nothing_is_retained(self, client: Client, agency: AgencyKeys, r: redis.Redis) -> None:
        """A card sent without a CVC gives cvc_retained false and no CVC key in Redis."""
        body = await create(client, agency, {"card": card(cvc=None)})
        assert body["cvc_retained"] is False
        assert r.exists(token_key(agency, body["id"])) == 1
        assert r.exists(cvc_key(agency, body["id"])) == 0

    @pytest.mark.parametrize(
        "written",
        ["4242 4242 4242 4242", "4242-4242-4242-4242", " 4242-4242 4242-4242 ", "4242--4242  42424242"],
    )
    async def test_spaces_and_dashes_are_stripped(self, client: Client, agency: AgencyKeys, written: str) -> None:
        """Spaces and dashes in the number are ignored: same brand, bin, last4 and fingerprint as the plain number."""
        plain = await create(client, agency, {"card": card(VISA)})
        grouped = await create(client, agency, {"card": card(written)})
        assert grouped["card"] == plain["card"]

    async def test_two_digit_year_is_read_as_20yy(self, client: Client, agency: AgencyKeys) -> None:
        """An exp_year of 31 is the year 2031 in the answer and in the default expiry."""
        body = await create(client, agency, {"card": card(year=31)})
        assert body["card"]["exp_year"] == 2031
        assert body["expires_at"] == end_of_month(2031, 12)

    @pytest.mark.parametrize(
        ("number", "cvc", "brand"),
        [
            (VISA, CVC, "visa"),
            (MASTERCARD, CVC, "mastercard"),
            (MASTERCARD_2_SERIES, CVC, "mastercard"),
            (AMEX, AMEX_CVC, "amex"),
            (DISCOVER, CVC, "discover"),
            (DINERS, CVC, "diners"),
            (DINERS_14, CVC, "diners"),
            (JCB, CVC, "jcb"),
            (UNIONPAY, CVC, "unionpay"),
            (MAESTRO, CVC, "maestro"),
        ],
    )
    async def test_brand_is_detected(
        self, client: Client, agency: AgencyKeys, number: str, cvc: str, brand: str
    ) -> None:
        """Each supported brand is recognised, with its first six, last four and its CVC length accepted."""
        resp = await client.post("/v1/tokens", json={"card": card(number, cvc=cvc)}, headers=agency.auth)
        text = await resp.text()
        assert resp.status == 201, text
        assert_no_card_data(text, cvc=cvc)
        body = json.loads(text)
        assert body["card"]["brand"] == brand
        assert body["card"]["bin"] == number[:6]
        assert body["card"]["last4"] == number[-4:]
        assert body["cvc_retained"] is True

    async def test_created_uses_the_service_clock(self, client: Client, agency: AgencyKeys, clock: FakeClock) -> None:
        """created comes from the service's clock, not from anything the client sends."""
        clock.advance(3 * 86400)
        body = await create(client, agency, {"card": card()})
        assert abs(body["created"] - clock()) < 60


class TestTokenIds:
    async def test_opaque_id_carries_at_least_128_random_bits(self, client: Client, agency: AgencyKeys) -> None:
        """An opaque id is tok_ plus 24 urlsafe base64 characters: 144 bits, nothing of the card."""
        body = await create(client, agency, {"card": card()})
        token_id = body["id"]
        assert OPAQUE_ID.match(token_id)
        raw = base64.urlsafe_b64decode(token_id[4:])
        assert len(raw) * 8 >= 128
        assert "4242" not in token_id
        assert "424242" not in token_id

    async def test_every_call_gets_a_new_id(self, client: Client, agency: AgencyKeys) -> None:
        """Tokenizing the same card repeatedly never repeats an id."""
        ids = [(await create(client, agency, {"card": card()}))["id"] for _ in range(25)]
        assert len(set(ids)) == len(ids)


class TestExpiry:
    async def test_default_is_the_last_second_of_the_expiry_month(
        self, client: Client, agency: AgencyKeys, r: redis.Redis
    ) -> None:
        """Without expires_at the token lives until 23:59:59 UTC on the last day of the card's month (leap day here)."""
        body = await create(client, agency, {"card": card(month=2, year=2028)})
        assert body["expires_at"] == int(dt.datetime(2028, 2, 29, 23, 59, 59, tzinfo=dt.UTC).timestamp())
        assert abs(expires_at_ms(r, token_key(agency, body["id"])) - body["expires_at"] * 1000) <= 5

    async def test_card_expiring_this_month_is_accepted(
        self, client: Client, agency: AgencyKeys, clock: FakeClock, r: redis.Redis
    ) -> None:
        """A card valid through the current month tokenizes and expires at the end of this month."""
        today = dt.datetime.fromtimestamp(clock(), dt.UTC)
        body = await create(client, agency, {"card": card(month=today.month, year=today.year)})
        assert body["expires_at"] == end_of_month(today.year, today.month)
        assert abs(expires_at_ms(r, token_key(agency, body["id"])) - body["expires_at"] * 1000) <= 5

    async def test_explicit_expires_at_is_honoured(
        self, client: Client, agency: AgencyKeys, clock: FakeClock, r: redis.Redis
    ) -> None:
        """An expires_at between now and the card's expiry is used as given, in the answer and in Redis."""
        wanted = int(clock()) + 7200
        body = await create(client, agency, {"card": card(), "expires_at": wanted})
        assert body["expires_at"] == wanted
        assert abs(expires_at_ms(r, token_key(agency, body["id"])) - wanted * 1000) <= 5
        fetched = await client.get(f"/v1/tokens/{body['id']}", headers=agency.auth)
        assert (await fetched.json())["expires_at"] == wanted

    async def test_expires_at_may_equal_the_card_expiry(self, client: Client, agency: AgencyKeys) -> None:
        """The card's own last second is the latest expires_at accepted."""
        body = await create(client, agency, {"card": card(), "expires_at": end_of_month(2031, 12)})
        assert body["expires_at"] == end_of_month(2031, 12)

    async def test_cvc_never_outlives_its_token(
        self, client: Client, agency: AgencyKeys, clock: FakeClock, r: redis.Redis
    ) -> None:
        """A token that expires before the CVC TTL takes its CVC with it at the same instant."""
        wanted = int(clock()) + 120
        body = await create(client, agency, {"card": card(), "expires_at": wanted})
        assert abs(expires_at_ms(r, cvc_key(agency, body["id"])) - wanted * 1000) <= 5

    @pytest.mark.parametrize(
        ("label", "offset"),
        [("in the past", -3600), ("now", 0), ("under a minute ahead", 30), ("after the card expiry", None)],
    )
    async def test_unusable_expires_at_is_refused(
        self, client: Client, agency: AgencyKeys, clock: FakeClock, r: redis.Redis, label: str, offset: int | None
    ) -> None:
        """An expires_at in the past, too close, or after the card's own expiry is 422 on field expires_at."""
        wanted = end_of_month(2031, 12) + 1 if offset is None else int(clock()) + offset
        before = agency_keys(r, agency)
        resp = await client.post("/v1/tokens", json={"card": card(), "expires_at": wanted}, headers=agency.auth)
        body = await problem(resp, 422, "validation_failed")
        assert fields_of(body) == ["expires_at"], label
        assert agency_keys(r, agency) == before

    async def test_default_ttl_days_caps_the_default(self, app_with: AppFactory, r: redis.Redis) -> None:
        """With tokens.default_ttl_days set, a token without expires_at lives that many days, not to card expiry."""
        client = await app_with(tokens__default_ttl_days=2)
        agency = await create_agency(client)
        body = await create(client, agency, {"card": card()})
        assert body["expires_at"] == body["created"] + 2 * 86400
        assert abs(expires_at_ms(r, token_key(agency, body["id"])) - body["expires_at"] * 1000) <= 5

    async def test_default_ttl_days_never_extends_past_the_card(self, app_with: AppFactory, clock: FakeClock) -> None:
        """default_ttl_days longer than the card's life still ends the token at the card's expiry."""
        client = await app_with(tokens__default_ttl_days=3000)
        agency = await create_agency(client)
        today = dt.datetime.fromtimestamp(clock(), dt.UTC)
        body = await create(client, agency, {"card": card(month=today.month, year=today.year)})
        assert body["expires_at"] == end_of_month(today.year, today.month)


class TestPanShaped:
    @pytest.mark.parametrize(("number", "cvc"), [(VISA, CVC), (AMEX, AMEX_CVC), (DINERS_14, CVC), (MAESTRO, CVC)])
    async def test_id_looks_like_a_card_but_is_not_one(
        self, client: Client, agency: AgencyKeys, number: str, cvc: str
    ) -> None:
        """A pan_shaped id is all digits, as long as the card, ends in its last four and fails Luhn."""
        assert luhn_ok(number)  # the independent checker agrees with the test card
        resp = await client.post(
            "/v1/tokens", json={"card": card(number, cvc=cvc), "format": "pan_shaped"}, headers=agency.auth
        )
        assert resp.status == 201
        body = await resp.json()
        token_id = body["id"]
        assert body["format"] == "pan_shaped"
        assert token_id.isascii()
        assert token_id.isdigit()
        assert len(token_id) == len(number)
        assert token_id[-4:] == number[-4:]
        assert token_id != number
        assert not luhn_ok(token_id)
        assert resp.headers["Location"] == f"/v1/tokens/{token_id}"
        fetched = await client.get(f"/v1/tokens/{token_id}", headers=agency.auth)
        assert fetched.status == 200
        assert await fetched.json() == body

    async def test_many_for_one_card_are_unique(self, client: Client, agency: AgencyKeys) -> None:
        """Forty pan_shaped tokens of the same card all get distinct ids, none of them Luhn-valid."""
        ids = [(await create(client, agency, {"card": card(), "format": "pan_shaped"}))["id"] for _ in range(40)]
        assert len(set(ids)) == len(ids)
        assert not any(luhn_ok(i) for i in ids)

    async def test_unknown_format_is_refused(self, client: Client, agency: AgencyKeys) -> None:
        """A format other than opaque or pan_shaped is 422 on field format."""
        resp = await client.post("/v1/tokens", json={"card": card(), "format": "numeric"}, headers=agency.auth)
        assert fields_of(await problem(resp, 422, "validation_failed")) == ["format"]


class TestDeduplicate:
    async def test_returns_the_live_token_for_the_same_card(self, client: Client, agency: AgencyKeys) -> None:
        """deduplicate: true answers 200 with the existing token (same id, same object) instead of a new one."""
        first = await create(client, agency, {"card": card()})
        resp = await client.post(
            "/v1/tokens", json={"card": card("4242 4242 4242 4242"), "deduplicate": True}, headers=agency.auth
        )
        assert resp.status == 200
        assert "Location" not in resp.headers
        assert await resp.json() == first

    async def test_without_it_every_call_creates(self, client: Client, agency: AgencyKeys) -> None:
        """deduplicate: false (and the default) creates a new token even when the card already has one."""
        first = await create(client, agency, {"card": card()})
        second = await create(client, agency, {"card": card(), "deduplicate": False})
        third = await create(client, agency, {"card": card()})
        assert len({first["id"], second["id"], third["id"]}) == 3

    async def test_a_different_card_is_not_a_duplicate(self, client: Client, agency: AgencyKeys) -> None:
        """deduplicate never returns a token of another card."""
        visa = await create(client, agency, {"card": card(VISA)})
        other = await create(client, agency, {"card": card(MASTERCARD), "deduplicate": True})
        assert other["id"] != visa["id"]
        assert other["card"]["last4"] == "4444"

    async def test_only_within_the_same_format(self, client: Client, agency: AgencyKeys) -> None:
        """An opaque token is not returned to a pan_shaped dedupe request, and vice versa."""
        opaque = await create(client, agency, {"card": card()})
        shaped = await create(client, agency, {"card": card(), "format": "pan_shaped", "deduplicate": True}, 201)
        assert shaped["id"] != opaque["id"]
        assert shaped["id"].isdigit()
        again = await create(client, agency, {"card": card(), "format": "pan_shaped", "deduplicate": True}, 200)
        assert again["id"] == shaped["id"]
        opaque_again = await create(client, agency, {"card": card(), "deduplicate": True}, 200)
        assert opaque_again["id"] == opaque["id"]

    async def test_new_cvc_is_retained_on_the_existing_token(
        self, client: Client, agency: AgencyKeys, r: redis.Redis
    ) -> None:
        """A CVC sent with a dedupe request is kept on the existing token, with the CVC TTL."""
        first = await create(client, agency, {"card": card(cvc=None)})
        assert r.exists(cvc_key(agency, first["id"])) == 0
        again = await create(client, agency, {"card": card(cvc=CVC), "deduplicate": True}, 200)
        assert again["id"] == first["id"]
        assert again["cvc_retained"] is True
        ttl = r.ttl(cvc_key(agency, first["id"]))
        assert 0 < ttl <= 900
        assert r.get(cvc_key(agency, first["id"]))[:1] == b"C"
        fetched = await client.get(f"/v1/tokens/{first['id']}", headers=agency.auth)
        assert (await fetched.json())["cvc_retained"] is True

    async def test_dedupe_without_cvc_keeps_the_existing_cvc(self, client: Client, agency: AgencyKeys) -> None:
        """A dedupe request without a CVC reports (and leaves) the CVC the token already holds."""
        first = await create(client, agency, {"card": card(cvc=CVC)})
        again = await create(client, agency, {"card": card(cvc=None), "deduplicate": True}, 200)
        assert again["id"] == first["id"]
        assert again["cvc_retained"] is True

    async def test_a_publishable_key_may_not_ask_for_it(
        self, client: Client, agency: AgencyKeys, r: redis.Redis
    ) -> None:
        """With the key anyone can read off the storefront, deduplicate would say whether a card is on file,
        show that token's metadata and replace its CVC: 403 secret_key_required, and nothing is written."""
        on_file = await create(client, agency, {"card": card(cvc=None), "metadata": {"customer": "c_1"}})
        before = {key: r.get(key) for key in redis_keys.agency_data_keys(r, agency.id) if r.type(key) == b"string"}
        for body in ({"card": card(cvc=CVC), "deduplicate": True}, {"card": card(MASTERCARD), "deduplicate": True}):
            resp = await client.post("/v1/tokens", json=body, headers=agency.public_auth)
            refused = await problem(resp, 403, "secret_key_required")
            assert "deduplicate" in refused["detail"]
            assert on_file["id"] not in await resp.text()
        after = {key: r.get(key) for key in redis_keys.agency_data_keys(r, agency.id) if r.type(key) == b"string"}
        assert after == before  # no CVC taken on, no token made
        plain = await client.post("/v1/tokens", json={"card": card()}, headers=agency.public_auth)
        assert plain.status == 201  # without deduplicate the publishable key tokenizes as before
        deduplicated = await client.post("/v1/tokens", json={"card": card(), "deduplicate": True}, headers=agency.auth)
        assert deduplicated.status == 200  # and the secret key still may

    async def test_concurrent_dedupe_requests_agree(self, client: Client, agency: AgencyKeys) -> None:
        """Ten simultaneous dedupe requests for a new card create exactly one token and all return it."""
        posts = [
            client.post("/v1/tokens", json={"card": card(MASTERCARD), "deduplicate": True}, headers=agency.auth)
            for _ in range(10)
        ]
        responses = await asyncio.gather(*posts)
        statuses = sorted(resp.status for resp in responses)
        assert statuses == [200] * 9 + [201]
        assert len({(await resp.json())["id"] for resp in responses}) == 1

    async def test_after_delete_a_new_token_is_created(self, client: Client, agency: AgencyKeys) -> None:
        """Once the card's token is deleted, a dedupe request creates a fresh token (201, new id)."""
        first = await create(client, agency, {"card": card()})
        deleted = await client.delete(f"/v1/tokens/{first['id']}", headers=agency.auth)
        assert deleted.status == 204
        again = await create(client, agency, {"card": card(), "deduplicate": True}, 201)
        assert again["id"] != first["id"]

    async def test_deduplicate_must_be_a_boolean(self, client: Client, agency: AgencyKeys) -> None:
        """deduplicate given as a string is 422 on field deduplicate."""
        resp = await client.post("/v1/tokens", json={"card": card(), "deduplicate": "true"}, headers=agency.auth)
        assert fields_of(await problem(resp, 422, "validation_failed")) == ["deduplicate"]


class TestRead:
    async def test_get_returns_the_created_object(self, client: Client, agency: AgencyKeys) -> None:
        """GET answers 200 with exactly the object the create returned, and never the number or CVC."""
        created = await create(
            client, agency, {"card": card(name="Pat Doe", postal_code="97301"), "metadata": {"a": "b"}}
        )
        resp = await client.get(f"/v1/tokens/{created['id']}", headers=agency.auth)
        text = await resp.text()
        assert resp.status == 200
        assert_no_card_data(text)
        assert json.loads(text) == created
        assert "Pat Doe" not in text
        assert "97301" not in text

    async def test_cvc_key_is_short_lived_by_default(self, client: Client, agency: AgencyKeys, r: redis.Redis) -> None:
        """The CVC is stored apart from the card under a key that expires within 900 seconds."""
        created = await create(client, agency, {"card": card()})
        ttl = r.ttl(cvc_key(agency, created["id"]))
        assert 0 < ttl <= 900
        assert r.ttl(token_key(agency, created["id"])) > 900

    async def test_cvc_ttl_setting_changes_it(self, app_with: AppFactory, r: redis.Redis) -> None:
        """tokens.cvc_ttl_seconds = 120 makes the CVC key expire within 120 seconds."""
        client = await app_with(tokens__cvc_ttl_seconds=120)
        agency = await create_agency(client)
        created = await create(client, agency, {"card": card()})
        ttl = r.ttl(cvc_key(agency, created["id"]))
        assert 60 < ttl <= 120

    async def test_cvc_retained_goes_false_when_the_cvc_key_is_gone(
        self, client: Client, agency: AgencyKeys, r: redis.Redis
    ) -> None:
        """cvc_retained reports the CVC key's existence: once it expires, GET says false and the token remains."""
        created = await create(client, agency, {"card": card()})
        assert created["cvc_retained"] is True
        r.delete(cvc_key(agency, created["id"]))  # what the TTL does, without waiting 15 minutes
        resp = await client.get(f"/v1/tokens/{created['id']}", headers=agency.auth)
        assert (await resp.json())["cvc_retained"] is False

    @pytest.mark.parametrize("token_id", ["tok_" + "A" * 24, "1234567890123", "nope", "tok_short"])
    async def test_unknown_id_is_token_not_found(self, client: Client, agency: AgencyKeys, token_id: str) -> None:
        """A token id that does not exist (well-formed or not) answers 404 token_not_found."""
        assert not luhn_ok("1234567890123")
        resp = await client.get(f"/v1/tokens/{token_id}", headers=agency.auth)
        await problem(resp, 404, "token_not_found")


class TestDelete:
    async def test_delete_removes_token_and_cvc(self, client: Client, agency: AgencyKeys, r: redis.Redis) -> None:
        """DELETE answers 204 with no body, and the token and CVC ciphertexts are gone from Redis."""
        created = await create(client, agency, {"card": card()})
        token_id = created["id"]
        assert r.exists(token_key(agency, token_id), cvc_key(agency, token_id)) == 2
        resp = await client.delete(f"/v1/tokens/{token_id}", headers=agency.auth)
        assert resp.status == 204
        assert await resp.read() == b""
        assert r.exists(token_key(agency, token_id), cvc_key(agency, token_id)) == 0
        fingerprint = created["card"]["fingerprint"]
        index = fingerprint_key(agency, fingerprint)
        assert r.zscore(index, redis_base.fingerprint_member(fingerprint, token_id)) is None

    async def test_get_after_delete_is_not_found(self, client: Client, agency: AgencyKeys) -> None:
        """After DELETE, GET and a second DELETE both answer 404 token_not_found."""
        created = await create(client, agency, {"card": card()})
        await client.delete(f"/v1/tokens/{created['id']}", headers=agency.auth)
        await problem(await client.get(f"/v1/tokens/{created['id']}", headers=agency.auth), 404, "token_not_found")
        await problem(await client.delete(f"/v1/tokens/{created['id']}", headers=agency.auth), 404, "token_not_found")

    async def test_delete_leaves_other_tokens_of_the_card(self, client: Client, agency: AgencyKeys) -> None:
        """Deleting one token of a card leaves the card's other tokens readable and listed."""
        first = await create(client, agency, {"card": card()})
        second = await create(client, agency, {"card": card()})
        await client.delete(f"/v1/tokens/{first['id']}", headers=agency.auth)
        resp = await client.get(
            "/v1/tokens", params={"fingerprint": second["card"]["fingerprint"]}, headers=agency.auth
        )
        assert [t["id"] for t in (await resp.json())["data"]] == [second["id"]]

    async def test_delete_of_a_pan_shaped_token(self, client: Client, agency: AgencyKeys, r: redis.Redis) -> None:
        """A pan_shaped token is deleted by its digit id like any other."""
        created = await create(client, agency, {"card": card(), "format": "pan_shaped"})
        resp = await client.delete(f"/v1/tokens/{created['id']}", headers=agency.auth)
        assert resp.status == 204
        assert r.exists(token_key(agency, created["id"]), cvc_key(agency, created["id"])) == 0


class TestListByFingerprint:
    async def test_lists_the_agency_tokens_of_that_card(self, client: Client, agency: AgencyKeys) -> None:
        """GET /v1/tokens?fingerprint= lists every token of that card (any format) and no other card's."""
        first = await create(client, agency, {"card": card()})
        second = await create(client, agency, {"card": card("4242-4242-4242-4242", month=3, year=2030)})
        shaped = await create(client, agency, {"card": card(), "format": "pan_shaped"})
        await create(client, agency, {"card": card(MASTERCARD)})
        fingerprint = first["card"]["fingerprint"]
        assert second["card"]["fingerprint"] == fingerprint  # the number alone, not the expiry
        resp = await client.get("/v1/tokens", params={"fingerprint": fingerprint}, headers=agency.auth)
        text = await resp.text()
        assert resp.status == 200
        assert_no_card_data(text)
        body = json.loads(text)
        assert set(body) == {"object", "data", "has_more"}
        assert body["has_more"] is False
        assert body["object"] == "list"
        assert sorted(body["data"], key=lambda t: t["id"]) == sorted([first, second, shaped], key=lambda t: t["id"])

    async def test_unknown_fingerprint_is_an_empty_list(self, client: Client, agency: AgencyKeys) -> None:
        """A well-formed fingerprint no card has gives an empty list, not an error."""
        resp = await client.get("/v1/tokens", params={"fingerprint": "0" * 32}, headers=agency.auth)
        assert resp.status == 200
        assert await resp.json() == {"object": "list", "data": [], "has_more": False}

    async def test_deleted_and_expired_tokens_are_not_listed(
        self, client: Client, agency: AgencyKeys, r: redis.Redis
    ) -> None:
        """A deleted token and one whose key expired drop out of the list."""
        kept = await create(client, agency, {"card": card()})
        deleted = await create(client, agency, {"card": card()})
        expired = await create(client, agency, {"card": card()})
        await client.delete(f"/v1/tokens/{deleted['id']}", headers=agency.auth)
        r.delete(token_key(agency, expired["id"]))  # what the TTL does
        resp = await client.get("/v1/tokens", params={"fingerprint": kept["card"]["fingerprint"]}, headers=agency.auth)
        assert [t["id"] for t in (await resp.json())["data"]] == [kept["id"]]

    async def test_missing_fingerprint_is_refused(self, client: Client, agency: AgencyKeys) -> None:
        """Listing without a fingerprint is 422 with field fingerprint."""
        resp = await client.get("/v1/tokens", headers=agency.auth)
        assert fields_of(await problem(resp, 422, "validation_failed")) == ["fingerprint"]

    @pytest.mark.parametrize("bad", ["", "xyz", "0" * 31, "0" * 33, "A" * 32, "g" * 32])
    async def test_malformed_fingerprint_is_refused(self, client: Client, agency: AgencyKeys, bad: str) -> None:
        """A fingerprint that is not 32 lowercase hex characters is 422 with field fingerprint."""
        resp = await client.get("/v1/tokens", params={"fingerprint": bad}, headers=agency.auth)
        assert fields_of(await problem(resp, 422, "validation_failed")) == ["fingerprint"]

    async def test_card_number_as_fingerprint_is_refused_without_echo(self, client: Client, agency: AgencyKeys) -> None:
        """A card number pasted as the fingerprint is refused and never echoed back."""
        resp = await client.get("/v1/tokens", params={"fingerprint": VISA}, headers=agency.auth)
        assert fields_of(await problem(resp, 422, "validation_failed")) == ["fingerprint"]

    async def test_unknown_query_parameter_is_refused(self, client: Client, agency: AgencyKeys) -> None:
        """Query parameters other than fingerprint are 422 unknown fields."""
        resp = await client.get("/v1/tokens", params={"fingerprint": "0" * 32, "limit": "5"}, headers=agency.auth)
        assert fields_of(await problem(resp, 422, "validation_failed")) == ["limit"]

    async def test_card_number_as_query_parameter_name_is_not_echoed(self, client: Client, agency: AgencyKeys) -> None:
        """A card number used as a query parameter NAME is refused without repeating it in the field."""
        resp = await client.get(
            "/v1/tokens", params={"fingerprint": "0" * 32, "4242-4242-4242-4242": "1"}, headers=agency.auth
        )
        assert fields_of(await problem(resp, 422, "validation_failed")) == ["[redacted]"]


class TestMetadata:
    async def test_metadata_round_trips(self, client: Client, agency: AgencyKeys) -> None:
        """Up to 20 string keys with values up to 500 characters are stored and returned as sent."""
        metadata = {f"k{i:02d}": f"value {i}" for i in range(19)}
        metadata["x" * 40] = "v" * 500
        created = await create(client, agency, {"card": card(), "metadata": metadata})
        assert created["metadata"] == metadata
        resp = await client.get(f"/v1/tokens/{created['id']}", headers=agency.auth)
        assert (await resp.json())["metadata"] == metadata

    async def test_digits_that_are_not_a_card_are_fine(self, client: Client, agency: AgencyKeys) -> None:
        """Order numbers and phone numbers that are not Luhn-valid card numbers are accepted."""
        order = "123456789012"
        assert not luhn_ok(order)
        metadata = {"order": order, "phone": "503-555-0100", "year": "2031"}
        assert (await create(client, agency, {"card": card(), "metadata": metadata}))["metadata"] == metadata

    @pytest.mark.parametrize(
        ("metadata", "field"),
        [
            ({f"k{i}": "v" for i in range(21)}, "metadata"),
            ({"x" * 41: "v"}, "metadata." + "x" * 41 + ".key"),
            ({"": "v"}, "metadata..key"),
            ({"note": "v" * 501}, "metadata.note.value"),
            ({"note": 5}, "metadata.note.value"),
            ({"note": True}, "metadata.note.value"),
            ({"note": None}, "metadata.note.value"),
            ({"note": {"a": "b"}}, "metadata.note.value"),
            ({"note": ["a"]}, "metadata.note.value"),
            (["note"], "metadata"),
            ("note", "metadata"),
            (None, "metadata"),
        ],
    )
    async def test_bad_metadata_is_refused(
        self, client: Client, agency: AgencyKeys, r: redis.Redis, metadata: Any, field: str
    ) -> None:
        """Too many keys, over-long keys or values, non-string values and non-objects are 422 naming the field."""
        before = agency_keys(r, agency)
        resp = await client.post("/v1/tokens", json={"card": card(), "metadata": metadata}, headers=agency.auth)
        assert fields_of(await problem(resp, 422, "validation_failed")) == [field]
        assert agency_keys(r, agency) == before

    @pytest.mark.parametrize(
        "value",
        [
            VISA,
            "4242 4242 4242 4242",
            "4242-4242-4242-4242",
            "3782 822463 10005",
            "paid with 5555-5555-5555-4444 on the phone",
            "card:4242424242424242;",
            "4242 4242 4242 4242 737",
        ],
    )
    async def test_card_number_in_a_value_is_refused(
        self, client: Client, agency: AgencyKeys, r: redis.Redis, value: str
    ) -> None:
        """A metadata value holding a card number in any grouping is 422 on that field, not echoed, not stored."""
        before = agency_keys(r, agency)
        resp = await client.post(
            "/v1/tokens", json={"card": card(), "metadata": {"ok": "fine", "note": value}}, headers=agency.auth
        )
        body = await problem(resp, 422, "validation_failed")
        assert fields_of(body) == ["metadata.note.value"]
        assert agency_keys(r, agency) == before
        assert leaks.redis_findings(r) == []

    async def test_card_number_as_a_key_is_refused(self, client: Client, agency: AgencyKeys, r: redis.Redis) -> None:
        """A metadata key that is a card number is 422 and the field path does not repeat the number."""
        before = agency_keys(r, agency)
        resp = await client.post(
            "/v1/tokens", json={"card": card(), "metadata": {"4242-4242-4242-4242": "x"}}, headers=agency.auth
        )
        body = await problem(resp, 422, "validation_failed")
        assert len(fields_of(body)) == 1
        assert fields_of(body)[0].startswith("metadata.")
        assert agency_keys(r, agency) == before

    @pytest.mark.parametrize("name", [VISA, "Pat 4242 4242 4242 4242", "3782-822463-10005"])
    async def test_card_number_in_the_name_is_refused(
        self, client: Client, agency: AgencyKeys, r: redis.Redis, name: str
    ) -> None:
        """card.name holding a card number is 422 on card.name and nothing is stored."""
        before = agency_keys(r, agency)
        resp = await client.post("/v1/tokens", json={"card": card(name=name)}, headers=agency.auth)
        assert fields_of(await problem(resp, 422, "validation_failed")) == ["card.name"]
        assert agency_keys(r, agency) == before

    async def test_card_number_in_the_postal_code_is_refused(
        self, client: Client, agency: AgencyKeys, r: redis.Redis
    ) -> None:
        """card.postal_code is free text too: a card number there is 422 on card.postal_code, nothing stored."""
        before = agency_keys(r, agency)
        resp = await client.post("/v1/tokens", json={"card": card(postal_code=VISA)}, headers=agency.auth)
        assert fields_of(await problem(resp, 422, "validation_failed")) == ["card.postal_code"]
        assert agency_keys(r, agency) == before
