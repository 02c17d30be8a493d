"""Bad input to POST /v1/tokens and friends: each is a 4xx problem+json, nothing is stored, service keeps serving.

Every test here sends something wrong, then checks the answer (status, the
``application/problem+json`` content type, the stable ``code`` and the field
of each error), that no key was added to Redis, that no card number came back
in the raw body, and that the next well-formed request still succeeds.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip
import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from aiohttp.test_utils import TestClient

from tests.conftest import AgencyKeys, FakeClock
from tests.support import leaks
from tests.support.cards import AMEX, AMEX_CVC, CVC, VISA
from tests.support.keys import agency_keys
from tests.support.redis_server import RedisServer

Client = TestClient[Any, Any]
PROBLEM_KEYS = {"type", "title", "status", "code", "detail", "errors", "request_id"}
MAX_BODY = 32 * 1024


def good_card(number: str = VISA, cvc: str = CVC, **extra: Any) -> dict[str, Any]:
    return {"number": number, "exp_month": 12, "exp_year": 2031, "cvc": cvc, **extra}


def raw_json(value: Any) -> bytes:
    return json.dumps(value).encode()


def with_check_digit(partial: str) -> str:
    """``partial`` plus the digit that makes it Luhn-valid (independent of the service's code)."""
    for digit in "0123456789":
        candidate = partial + digit
        total = 0
        for position, char in enumerate(reversed(candidate)):
            value = int(char)
            if position % 2:
                value = value * 2 - 9 if value > 4 else value * 2
            total += value
        if total % 10 == 0:
            return candidate
    raise AssertionError("unreachable")


@dataclass
class Outcome:
    status: int
    text: str
    body: dict[str, Any]
    headers: Any

    @property
    def fields(self) -> list[str]:
        return [e["field"] for e in self.body.get("errors", [])]

    @property
    def error_codes(self) -> list[str]:
        return [e["code"] for e in self.body.get("errors", [])]


class Harness:
    """Sends one bad request and checks everything a refusal promises."""

    def __init__(self, client: Client, agency: AgencyKeys, r: redis.Redis) -> None:
        self.client = client
        self.agency = agency
        self.redis = r

    def keys(self) -> set[bytes]:
        """Every key but the audit log's: a refusal is recorded there on purpose (PCI DSS 10.2)."""
        return {key for key in self.redis.scan_iter(count=1000) if not key.startswith(b"cv:audit:")}

    def agency_keys(self) -> set[bytes]:
        return agency_keys(self.redis, self.agency.id)

    async def refused(
        self,
        status: int,
        code: str,
        *,
        method: str = "POST",
        path: str = "/v1/tokens",
        secret: str | None = None,
        **kwargs: Any,
    ) -> Outcome:
        """Send the request, assert a refusal with nothing stored, then prove a good request still works."""
        kwargs.setdefault("headers", self.agency.auth)
        before, agency_before = self.keys(), self.agency_keys()
        resp = await self.client.request(method, path, **kwargs)
        text = await resp.text()
        assert resp.status == status, text
        assert resp.content_type == "application/problem+json", resp.content_type
        assert leaks.cards_in_text(text) == [], text
        if secret is not None:
            assert secret not in text
            assert secret not in json.dumps(dict(resp.headers))
        body = json.loads(text)
        assert set(body) <= PROBLEM_KEYS
        assert body["status"] == status
        assert body["code"] == code
        assert body["type"] == f"urn:cardvault:problem:{code}"
        assert isinstance(body["title"], str)
        assert body["title"]
        assert body["request_id"] == resp.headers["X-Request-Id"]
        for error in body.get("errors", []):
            assert set(error) == {"field", "code", "message"}
        assert self.keys() - before == set(), "a refused request stored something"
        assert self.agency_keys() == agency_before
        await self.still_serving()
        return Outcome(resp.status, text, body, resp.headers)

    def agency_findings(self) -> list[str]:
        """Test card numbers in any key or value of this agency's keyspace."""
        findings = []
        for key in self.agency_keys():
            kind = self.redis.type(key)
            if kind == b"string":
                values = [self.redis.get(key) or b""]
            elif kind == b"hash":
                values = [b for pair in self.redis.hgetall(key).items() for b in pair]
            elif kind == b"zset":  # the fingerprint index
                values = list(self.redis.zrange(key, 0, -1))
            else:
                values = list(self.redis.smembers(key))
            findings += [f"{key!r}: {pan[:6]}" for v in [key, *values] for pan in leaks.cards_in_bytes(v)]
        return findings

    async def still_serving(self) -> None:
        resp = await self.client.post("/v1/tokens", json={"card": good_card()}, headers=self.agency.auth)
        assert resp.status == 201, await resp.text()


@pytest.fixture
async def h(client: Client, agency: AgencyKeys, redis_server: RedisServer) -> AsyncIterator[Harness]:
    harness = Harness(client, agency, redis_server.client())
    yield harness
    assert harness.agency_findings() == []


def today(clock: FakeClock) -> dt.date:
    return dt.datetime.fromtimestamp(clock(), dt.UTC).date()


class TestMalformedBodies:
    @pytest.mark.parametrize(
        "raw",
        [
            pytest.param(b'{"card": {"number": "4242424242424242"', id="truncated"),
            pytest.param(b"card=4242424242424242", id="not-json"),
            pytest.param(b"", id="empty"),
            pytest.param(b"{'card': {}}", id="single-quotes"),
            pytest.param(b'{"card": {"number": "4242424242424242",}}', id="trailing-comma"),
            pytest.param(b'\xef\xbb\xbf{"card": {}}', id="utf8-bom"),
        ],
    )
    async def test_not_json(self, h: Harness, raw: bytes) -> None:
        """A body that is not JSON is 400 malformed_request and the number inside is not echoed."""
        headers = {**h.agency.auth, "Content-Type": "application/json"}
        await h.refused(400, "malformed_request", data=raw, headers=headers)

    @pytest.mark.parametrize("raw", [b"[]", b'["4242424242424242"]', b'"4242424242424242"', b"42", b"null", b"true"])
    async def test_not_an_object(self, h: Harness, raw: bytes) -> None:
        """JSON whose top level is not an object is 400 malformed_request."""
        headers = {**h.agency.auth, "Content-Type": "application/json"}
        await h.refused(400, "malformed_request", data=raw, headers=headers)

    @pytest.mark.parametrize(
        "raw",
        [
            pytest.param(
                b'{"card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2031},'
                b' "card": {"number": "5555555555554444", "exp_month": 12, "exp_year": 2031}}',
                id="top-level",
            ),
            pytest.param(
                b'{"card": {"number": "4242424242424242", "number": "5555555555554444",'
                b' "exp_month": 12, "exp_year": 2031}}',
                id="inside-card",
            ),
            pytest.param(
                b'{"card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2031},'
                b' "metadata": {"a": "1", "a": "2"}}',
                id="inside-metadata",
            ),
        ],
    )
    async def test_duplicate_keys(self, h: Harness, raw: bytes) -> None:
        """A repeated key anywhere is 400 malformed_request: two parsers could disagree on which one wins."""
        headers = {**h.agency.auth, "Content-Type": "application/json"}
        await h.refused(400, "malformed_request", data=raw, headers=headers)

    @pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
    async def test_nan_and_infinity(self, h: Harness, constant: bytes) -> None:
        """NaN and Infinity are not JSON: 400 malformed_request."""
        raw = b'{"card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2031}, "expires_at": ' + constant
        raw += b"}"
        headers = {**h.agency.auth, "Content-Type": "application/json"}
        await h.refused(400, "malformed_request", data=raw, headers=headers)

    @pytest.mark.parametrize(
        "raw",
        [
            b'{"card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2031, "name": "\xff\xfe"}}',
            b'{"card": {"number": "4242424242424242\xc3", "exp_month": 12, "exp_year": 2031}}',
            b'{"card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2031, "name": "\xed\xa0\x80"}}',
        ],
    )
    async def test_invalid_utf8(self, h: Harness, raw: bytes) -> None:
        """Bytes that are not UTF-8 (including an encoded surrogate) are 400 malformed_request."""
        headers = {**h.agency.auth, "Content-Type": "application/json; charset=utf-8"}
        await h.refused(400, "malformed_request", data=raw, headers=headers)

    @pytest.mark.parametrize(
        "raw",
        [
            rb'{"card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2031, "name": "\ud800"}}',
            rb'{"metadata": {"\udfff": "x"}, "card": {"number": "4242424242424242"}}',
        ],
    )
    async def test_lone_surrogate_escape(self, h: Harness, raw: bytes) -> None:
        """A \\u escape of half a character is valid JSON but no text: 400 malformed_request, not a 500."""
        headers = {**h.agency.auth, "Content-Type": "application/json"}
        await h.refused(400, "malformed_request", data=raw, headers=headers)

    @pytest.mark.parametrize("depth", [9, 20, 15_000])
    async def test_deep_nesting(self, h: Harness, depth: int) -> None:
        """Objects or arrays nested beyond the limit (even thousands deep) are 400 malformed_request."""
        nested = "[" * depth + "]" * depth
        raw = '{"card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2031}, "metadata": ' + nested
        raw += "}"
        assert len(raw) < MAX_BODY
        headers = {**h.agency.auth, "Content-Type": "application/json"}
        await h.refused(400, "malformed_request", data=raw.encode(), headers=headers)

    async def test_nesting_at_the_limit_reaches_validation(self, h: Harness) -> None:
        """Nesting within the limit is parsed and refused by validation instead (422 on metadata)."""
        body = {"card": good_card(), "metadata": {"a": {"b": {"c": "d"}}}}
        outcome = await h.refused(422, "validation_failed", json=body)
        assert outcome.fields == ["metadata.a.value"]

    async def test_huge_integer(self, h: Harness) -> None:
        """An integer too long for the parser is refused with a 4xx, never a 500."""
        raw = b'{"card": {"number": "4242424242424242", "exp_month": ' + b"9" * 5000 + b', "exp_year": 2031}}'
        headers = {**h.agency.auth, "Content-Type": "application/json"}
        await h.refused(400, "malformed_request", data=raw, headers=headers)


class TestMediaTypeAndSize:
    @pytest.mark.parametrize(
        "content_type",
        [
            "text/plain",
            "application/x-www-form-urlencoded",
            "application/octet-stream",
            "multipart/form-data; boundary=x",
            "application/json-patch+json",
            "application/json; charset=latin-1",
            "application/json; charset=utf-16",
        ],
    )
    async def test_wrong_content_type_is_415(self, h: Harness, content_type: str) -> None:
        """Anything but (UTF-8) application/json is 415 unsupported_media_type, even when the body is JSON."""
        headers = {**h.agency.auth, "Content-Type": content_type}
        await h.refused(415, "unsupported_media_type", data=raw_json({"card": good_card()}), headers=headers)

    async def test_missing_content_type_is_415(self, h: Harness) -> None:
        """A body without any Content-Type is 415 unsupported_media_type."""
        await h.refused(
            415,
            "unsupported_media_type",
            data=raw_json({"card": good_card()}),
            headers=h.agency.auth,
            skip_auto_headers=["Content-Type"],
        )

    async def test_explicit_utf8_charset_is_accepted(self, client: Client, agency: AgencyKeys) -> None:
        """application/json; charset=utf-8 is the same as application/json (201)."""
        headers = {**agency.auth, "Content-Type": "application/json; charset=UTF-8"}
        resp = await client.post("/v1/tokens", data=raw_json({"card": good_card()}), headers=headers)
        assert resp.status == 201

    async def test_body_at_the_limit_is_accepted(self, client: Client, agency: AgencyKeys) -> None:
        """A valid body of exactly 32 KiB (padded with JSON whitespace) is read and tokenized."""
        raw = raw_json({"card": good_card()})
        raw = raw[:-1] + b" " * (MAX_BODY - len(raw)) + b"}"
        assert len(raw) == MAX_BODY
        headers = {**agency.auth, "Content-Type": "application/json"}
        resp = await client.post("/v1/tokens", data=raw, headers=headers)
        assert resp.status == 201, await resp.text()

    @pytest.mark.parametrize("size", [MAX_BODY + 1, 4 * MAX_BODY, 1024 * 1024])
    async def test_oversized_body_is_413(self, h: Harness, size: int) -> None:
        """A body over the 32 KiB default limit is 413 payload_too_large before any of it is parsed."""
        raw = raw_json({"card": good_card()})
        raw = raw[:-1] + b" " * (size - len(raw)) + b"}"
        headers = {**h.agency.auth, "Content-Type": "application/json"}
        await h.refused(413, "payload_too_large", data=raw, headers=headers)

    async def test_compressed_body_counts_its_expanded_size(self, h: Harness) -> None:
        """A small gzip body that expands past the limit is 413 too (no decompression bomb)."""
        raw = raw_json({"card": good_card()})
        raw = raw[:-1] + b" " * (2 * 1024 * 1024) + b"}"
        packed = gzip.compress(raw)
        assert len(packed) < MAX_BODY
        headers = {**h.agency.auth, "Content-Type": "application/json", "Content-Encoding": "gzip"}
        await h.refused(413, "payload_too_large", data=packed, headers=headers)


class TestUnknownFields:
    async def test_unknown_top_level_field(self, h: Harness) -> None:
        """An unknown top-level field is 422 with that field and code unknown_field."""
        outcome = await h.refused(422, "validation_failed", json={"card": good_card(), "amount": 100})
        assert outcome.fields == ["amount"]
        assert outcome.error_codes == ["unknown_field"]

    @pytest.mark.parametrize("name", ["cvv", "pan", "card_number", "expiry"])
    async def test_unknown_card_field(self, h: Harness, name: str) -> None:
        """An unknown field inside card is 422 on card.<name>, code unknown_field."""
        card = good_card()
        card[name] = "x"
        outcome = await h.refused(422, "validation_failed", json={"card": card})
        assert outcome.fields == [f"card.{name}"]
        assert outcome.error_codes == ["unknown_field"]

    @pytest.mark.parametrize("name", [VISA, "4242 4242 4242 4242", "4242-4242-4242-4242", "x4242424242424242x"])
    async def test_card_number_as_top_level_field_name(self, h: Harness, name: str) -> None:
        """A card number used as a field NAME is refused and the error does not repeat it."""
        outcome = await h.refused(422, "validation_failed", json={"card": good_card(), name: "1"})
        assert outcome.error_codes == ["unknown_field"]
        assert "4242" not in outcome.fields[0]

    @pytest.mark.parametrize("name", [AMEX, "3782 822463 10005"])
    async def test_card_number_as_card_field_name(self, h: Harness, name: str) -> None:
        """A card number as an unknown field name inside card is refused without echoing it."""
        card = good_card()
        card[name] = CVC
        outcome = await h.refused(422, "validation_failed", json={"card": card})
        assert outcome.error_codes == ["unknown_field"]
        assert outcome.fields[0].startswith("card.")
        assert "822463" not in leaks.without_request_ids(outcome.text)
        assert "10005" not in leaks.without_request_ids(outcome.text)


class TestWrongTypes:
    @pytest.mark.parametrize(
        ("card_patch", "field"),
        [
            ({"number": 4242424242424242}, "card.number"),
            ({"number": None}, "card.number"),
            ({"number": ["4242424242424242"]}, "card.number"),
            ({"number": ""}, "card.number"),
            ({"exp_month": "12"}, "card.exp_month"),
            ({"exp_month": True}, "card.exp_month"),
            ({"exp_month": 12.0}, "card.exp_month"),
            ({"exp_month": 12.5}, "card.exp_month"),
            ({"exp_year": "2031"}, "card.exp_year"),
            ({"exp_year": False}, "card.exp_year"),
            ({"cvc": 737}, "card.cvc"),
            ({"cvc": ""}, "card.cvc"),
            ({"name": 5}, "card.name"),
            ({"postal_code": 97301}, "card.postal_code"),
            ({"postal_code": "97301<"}, "card.postal_code"),
        ],
    )
    async def test_wrong_card_field_types(self, h: Harness, card_patch: dict[str, Any], field: str) -> None:
        """A card field of the wrong JSON type is 422 naming exactly that field."""
        outcome = await h.refused(422, "validation_failed", json={"card": {**good_card(), **card_patch}})
        assert outcome.fields == [field]

    @pytest.mark.parametrize("missing", ["number", "exp_month", "exp_year"])
    async def test_missing_required_card_field(self, h: Harness, missing: str) -> None:
        """Leaving out number, exp_month or exp_year is 422 with code required on that field."""
        card = good_card()
        del card[missing]
        outcome = await h.refused(422, "validation_failed", json={"card": card})
        assert outcome.fields == [f"card.{missing}"]
        assert outcome.error_codes == ["required"]

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({}, "card"),
            ({"card": None}, "card"),
            ({"card": VISA}, "card"),
            ({"card": [VISA]}, "card"),
            ({"card": {}}, None),
            ({"card": good_card(), "expires_at": "soon"}, "expires_at"),
            ({"card": good_card(), "expires_at": True}, "expires_at"),
            ({"card": good_card(), "expires_at": 1.5e9}, "expires_at"),
            ({"card": good_card(), "expires_at": -1}, "expires_at"),
            ({"card": good_card(), "format": 1}, "format"),
            ({"card": good_card(), "deduplicate": 1}, "deduplicate"),
            ({"card": good_card(), "deduplicate": None}, "deduplicate"),
        ],
    )
    async def test_wrong_top_level_types(self, h: Harness, body: dict[str, Any], field: str | None) -> None:
        """A top-level field of the wrong type (or a card that is not an object) is 422 on that field."""
        outcome = await h.refused(422, "validation_failed", json=body)
        if field is None:
            assert sorted(outcome.fields) == ["card.exp_month", "card.exp_year", "card.number"]
        else:
            assert outcome.fields == [field]


class TestCardValidation:
    async def test_luhn_failure(self, h: Harness) -> None:
        """A number that fails the Luhn check is card_number_luhn on card.number, not echoed."""
        outcome = await h.refused(422, "validation_failed", json={"card": good_card("4242 4242 4242 4241")})
        assert (outcome.fields, outcome.error_codes) == (["card.number"], ["card_number_luhn"])
        assert "4241" not in leaks.without_request_ids(outcome.text)

    @pytest.mark.parametrize("number", ["4242 4242", "42424242421", "1" * 20, "9" * 40])
    async def test_wrong_length(self, h: Harness, number: str) -> None:
        """Fewer than 12 or more than 19 digits is card_number_length."""
        outcome = await h.refused(422, "validation_failed", json={"card": good_card(number)})
        assert (outcome.fields, outcome.error_codes) == (["card.number"], ["card_number_length"])

    async def test_too_long_for_the_field(self, h: Harness) -> None:
        """A number field longer than 40 characters is refused on card.number before any digit checks."""
        outcome = await h.refused(422, "validation_failed", json={"card": good_card("4" * 41)})
        assert outcome.fields == ["card.number"]

    @pytest.mark.parametrize(
        "number",
        ["4242x4242424242424", "4242.4242.4242.4242", "4242_4242_4242_4242", "４２４２４２４２４２４２４２４２", "-"],
    )
    async def test_non_digits(self, h: Harness, number: str) -> None:
        """Characters other than digits, spaces and dashes are card_number_format, the number not echoed."""
        outcome = await h.refused(422, "validation_failed", json={"card": good_card(number)})
        assert (outcome.fields, outcome.error_codes) == (["card.number"], ["card_number_format"])

    async def test_unsupported_brand(self, h: Harness, session_logs: Path) -> None:
        """A Luhn-valid number of no supported brand is card_brand_unsupported and goes nowhere."""
        number = with_check_digit("1" + "0" * 14)  # synthetic, like the unit tests': no issuer uses 1
        outcome = await h.refused(422, "validation_failed", json={"card": good_card(number)})
        assert (outcome.fields, outcome.error_codes) == (["card.number"], ["card_brand_unsupported"])
        assert number not in outcome.text
        assert number not in await asyncio.to_thread(session_logs.read_text)

    async def test_wrong_length_for_the_brand(self, h: Harness, session_logs: Path) -> None:
        """A Luhn-valid 14-digit number with a Visa prefix is card_number_length (Visa is 13, 16 or 19)."""
        number = with_check_digit("4" + "0" * 12)  # synthetic 14-digit Visa-prefixed number
        outcome = await h.refused(422, "validation_failed", json={"card": good_card(number)})
        assert (outcome.fields, outcome.error_codes) == (["card.number"], ["card_number_length"])
        assert number not in outcome.text
        assert number not in await asyncio.to_thread(session_logs.read_text)

    async def test_expired_last_month(self, h: Harness, clock: FakeClock) -> None:
        """A card whose expiry month has passed is card_expired."""
        first_of_month = today(clock).replace(day=1)
        last_month = first_of_month - dt.timedelta(days=1)
        card = {**good_card(), "exp_month": last_month.month, "exp_year": last_month.year}
        outcome = await h.refused(422, "validation_failed", json={"card": card})
        assert outcome.error_codes == ["card_expired"]
        assert outcome.fields == ["card.exp_year"]

    async def test_expired_years_ago(self, h: Harness) -> None:
        """A card that expired in 2020 is card_expired."""
        outcome = await h.refused(422, "validation_failed", json={"card": {**good_card(), "exp_year": 2020}})
        assert outcome.error_codes == ["card_expired"]

    @pytest.mark.parametrize("month", [0, 13, -1, 100])
    async def test_month_out_of_range(self, h: Harness, month: int) -> None:
        """A month outside 1..12 is card_expiry_invalid on card.exp_month."""
        outcome = await h.refused(422, "validation_failed", json={"card": {**good_card(), "exp_month": month}})
        assert (outcome.fields, outcome.error_codes) == (["card.exp_month"], ["card_expiry_invalid"])

    @pytest.mark.parametrize("year", [1999, 2200, 10**6])
    async def test_year_out_of_range(self, h: Harness, year: int) -> None:
        """A year before 2000 or decades ahead is card_expiry_invalid on card.exp_year."""
        outcome = await h.refused(422, "validation_failed", json={"card": {**good_card(), "exp_year": year}})
        assert (outcome.fields, outcome.error_codes) == (["card.exp_year"], ["card_expiry_invalid"])

    @pytest.mark.parametrize(
        ("number", "cvc"),
        [(VISA, AMEX_CVC), (VISA, "73"), (AMEX, CVC), (AMEX, "73737"), (VISA, "7a7"), (VISA, "٧٣٧")],
    )
    async def test_cvc_wrong_for_the_brand(self, h: Harness, number: str, cvc: str) -> None:
        """A CVC of the wrong length for the brand (Amex 4, others 3) or with non-digits is card_cvc_invalid."""
        outcome = await h.refused(422, "validation_failed", json={"card": good_card(number, cvc)})
        assert (outcome.fields, outcome.error_codes) == (["card.cvc"], ["card_cvc_invalid"])
        assert f'"{cvc}"' not in outcome.text

    async def test_every_card_problem_is_reported_at_once(self, h: Harness) -> None:
        """A bad number and a bad month in one request are both listed."""
        card = {**good_card("4242 4242 4242 4241"), "exp_month": 13}
        outcome = await h.refused(422, "validation_failed", json={"card": card})
        assert sorted(zip(outcome.fields, outcome.error_codes, strict=True)) == [
            ("card.exp_month", "card_expiry_invalid"),
            ("card.number", "card_number_luhn"),
        ]


class TestAuthentication:
    @pytest.mark.parametrize(
        ("headers", "code"),
        [
            ({}, "missing_api_key"),
            ({"Authorization": ""}, "missing_api_key"),
            ({"Authorization": "Bearer"}, "missing_api_key"),
            ({"Authorization": "Bearer    "}, "missing_api_key"),
            ({"Authorization": "Basic dXNlcjpwYXNz"}, "missing_api_key"),
            ({"Authorization": "Token sk_abcdefghijklmnopqrstuvwxyz"}, "missing_api_key"),
            ({"Authorization": "Bearer sk_short"}, "invalid_api_key"),
            ({"Authorization": "Bearer not-a-key-at-all-but-long-enough"}, "invalid_api_key"),
            ({"Authorization": "Bearer sk_" + "A" * 300}, "invalid_api_key"),
            ({"Authorization": f"Bearer {VISA}"}, "invalid_api_key"),
        ],
    )
    async def test_missing_or_malformed_key_is_401(self, h: Harness, headers: dict[str, str], code: str) -> None:
        """No key, another scheme, or a malformed key is 401 with WWW-Authenticate and nothing stored."""
        outcome = await h.refused(401, code, json={"card": good_card()}, headers=headers)
        assert outcome.headers["WWW-Authenticate"] == 'Bearer realm="cardvault"'

    @pytest.mark.parametrize("prefix", ["sk_", "pk_"])
    async def test_unknown_well_formed_key_is_401(self, h: Harness, prefix: str) -> None:
        """A key of the right shape that was never issued is 401 invalid_api_key, and it is not echoed."""
        key = prefix + secrets.token_urlsafe(32)
        outcome = await h.refused(
            401, "invalid_api_key", json={"card": good_card()}, headers={"Authorization": f"Bearer {key}"}, secret=key
        )
        assert outcome.headers["WWW-Authenticate"] == 'Bearer realm="cardvault"'

    async def test_bad_key_wins_over_bad_body(self, h: Harness) -> None:
        """Without a valid key the body is never looked at: a malformed body still answers 401."""
        headers = {"Authorization": "Bearer sk_" + secrets.token_urlsafe(32), "Content-Type": "application/json"}
        await h.refused(401, "invalid_api_key", data=b"{not json", headers=headers)

    @pytest.mark.parametrize(
        ("method", "path"),
        [("GET", "/v1/tokens/tok_" + "A" * 24), ("DELETE", "/v1/tokens/tok_" + "A" * 24), ("GET", "/v1/tokens")],
    )
    async def test_every_tokens_route_needs_a_key(self, h: Harness, method: str, path: str) -> None:
        """GET, DELETE and list without a key are 401 missing_api_key."""
        await h.refused(401, "missing_api_key", method=method, path=path, headers={})

    async def test_lowercase_scheme_is_accepted(self, client: Client, agency: AgencyKeys) -> None:
        """The Bearer scheme is case-insensitive, as RFC 9110 says."""
        headers = {"Authorization": f"bearer {agency.secret}"}
        resp = await client.post("/v1/tokens", json={"card": good_card()}, headers=headers)
        assert resp.status == 201


class TestRouting:
    @pytest.mark.parametrize(
        ("method", "path"),
        [
            ("PUT", "/v1/tokens"),
            ("PATCH", "/v1/tokens"),
            ("DELETE", "/v1/tokens"),
            ("POST", "/v1/tokens/tok_" + "A" * 24),
            ("PUT", "/v1/tokens/tok_" + "A" * 24),
            ("POST", "/healthz"),
        ],
    )
    async def test_method_not_allowed_is_a_problem(self, h: Harness, method: str, path: str) -> None:
        """A known path with the wrong method is 405 method_not_allowed problem+json with an Allow header."""
        outcome = await h.refused(405, "method_not_allowed", method=method, path=path, json={"card": good_card()})
        assert outcome.headers["Allow"]
        assert method not in outcome.headers["Allow"]

    async def test_head_where_only_get_is_routed_is_405(self, h: Harness) -> None:
        """HEAD on the tokens list (GET only, no implicit HEAD) is 405 with an Allow header and nothing stored."""
        before = h.keys()
        resp = await h.client.head("/v1/tokens", headers=h.agency.auth)
        assert resp.status == 405
        assert "HEAD" not in resp.headers["Allow"]
        assert resp.headers["Cache-Control"] == "no-store"
        assert h.keys() - before == set()

    @pytest.mark.parametrize(
        "path", ["/", "/v1", "/v2/tokens", "/v1/token", "/v1/tokens/tok_x/extra", f"/v1/cards/{VISA}"]
    )
    async def test_unknown_route_is_a_problem(self, h: Harness, path: str) -> None:
        """An unknown path is 404 not_found problem+json, without echoing the path."""
        await h.refused(404, "not_found", method="GET", path=path)

    async def test_card_number_as_token_id_is_not_found(self, h: Harness) -> None:
        """A card number where a token id belongs is 404 token_not_found and not echoed."""
        await h.refused(404, "token_not_found", method="GET", path=f"/v1/tokens/{VISA}")
        await h.refused(404, "token_not_found", method="DELETE", path=f"/v1/tokens/{VISA}")


class TestKeepsServing:
    async def test_a_burst_of_bad_requests_changes_nothing(self, h: Harness) -> None:
        """Fifty mixed bad requests in a row leave no key behind and the service answers good requests after."""
        before = h.keys()
        bodies: list[Any] = [b"{", b"[]", b"\xff", raw_json({"card": good_card("4242 4242 4242 4241")})]
        for i in range(50):
            headers = {**h.agency.auth, "Content-Type": "application/json"}
            resp = await h.client.post("/v1/tokens", data=bodies[i % len(bodies)], headers=headers)
            assert 400 <= resp.status < 500
            assert leaks.cards_in_text(await resp.text()) == []
        assert h.keys() - before == set()
        await h.still_serving()
