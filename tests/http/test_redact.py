"""POST /v1/redact end to end: masks, tokens that really exist, all-or-nothing, and huge inputs bounded.

The app runs in process against the session's real Redis (``client`` fixture);
conformance to openapi.yaml is ``test_openapi_redact.py``'s job.  Only public
test card numbers appear as literals; other Luhn-valid numbers are computed.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from service.adapters.keyring import MasterKeys
from service.adapters.store import token_key
from service.app import create_app
from service.domain.card_finder import contains_card_number
from service.domain.cards import luhn_check_digit
from service.http.state import SERVICES
from service.redact import REDACTION_METADATA
from service.vault import Vault
from tests.conftest import AgencyKeys, FakeClock, create_agency, make_settings
from tests.support.cards import AMEX, CVC, MASTERCARD, VISA
from tests.support.keys import agency_data_keys
from tests.support.redis_server import RedisServer

REDACT = "/v1/redact"
UNBRANDED = "9" * 15 + luhn_check_digit("9" * 15)  # Luhn-valid, 16 digits, no brand issues it


async def redact(client: TestClient[Any, Any], agency: AgencyKeys, text: str, mode: str = "mask") -> dict[str, Any]:
    response = await client.post(REDACT, json={"text": text, "mode": mode}, headers=agency.auth)
    assert response.status == 200, await response.text()
    answer: dict[str, Any] = await response.json()
    return answer


def token_ids(redis_server: RedisServer, agency: AgencyKeys) -> set[str]:
    return {key.decode().rsplit(":", 1)[1] for key in agency_data_keys(redis_server.client(), agency.id, "tok")}


class TestMaskMode:
    async def test_a_transcript_comes_back_masked_with_its_findings(
        self, client: TestClient[Any, Any], agency: AgencyKeys
    ) -> None:
        """Cards and SSNs masked, offsets into the text as sent, brand and last four; the rest untouched."""
        text = (
            f"[10:02] Customer: my card is {AMEX[:4]} {AMEX[4:10]} {AMEX[10:]} and ssn: 078051120\n"
            f"[10:03] Agent: thanks, order #20240115 confirmed, call 502-555-0134\n"
            f"[10:04] Customer: or use {'-'.join(MASTERCARD[i : i + 4] for i in range(0, 16, 4))} cvv {CVC}"
        )
        answer = await redact(client, agency, text)
        assert answer["text"] == (
            "[10:02] Customer: my card is **** **** *** 0005 and ssn: *********\n"
            "[10:03] Agent: thanks, order #20240115 confirmed, call 502-555-0134\n"
            f"[10:04] Customer: or use **** **** **** 4444 cvv {CVC}"
        )
        assert [(f["kind"], f["brand"], f["last4"]) for f in answer["findings"]] == [
            ("card", "amex", "0005"),
            ("ssn", None, None),
            ("card", "mastercard", "4444"),
        ]
        for finding in answer["findings"]:
            written = text[finding["start"] : finding["end"]]
            assert written.replace(" ", "").replace("-", "")[-4:] == (finding["last4"] or "1120")
        assert answer["counts"] == {"card": 2, "ssn": 1}
        assert (answer["mode"], answer["tokens_created"]) == ("mask", 0)

    async def test_offsets_are_code_points_of_the_text_sent(
        self, client: TestClient[Any, Any], agency: AgencyKeys
    ) -> None:
        """Emoji and accents before a card (sent escaped or raw) count one offset each."""
        text = f"🙂 café {VISA}"
        for body in (json.dumps({"text": text}), json.dumps({"text": text}, ensure_ascii=False)):
            response = await client.post(
                REDACT, data=body.encode(), headers={**agency.auth, "Content-Type": "application/json"}
            )
            [finding] = (await response.json())["findings"]
            assert text[finding["start"] : finding["end"]] == VISA

    async def test_mask_mode_stores_nothing(
        self, client: TestClient[Any, Any], agency: AgencyKeys, redis_server: RedisServer
    ) -> None:
        """Without an Idempotency-Key a masked redaction writes nothing of the text to Redis."""
        redis = redis_server.client()
        before = set(redis.scan_iter(match=f"*{agency.id}*"))
        await redact(client, agency, f"card {VISA} ssn 078-05-1120 note zebra-7731")
        after = set(redis.scan_iter(match=f"*{agency.id}*"))
        assert not any(b"idem" in key or b":tok:" in key for key in after - before)
        for key in after:
            if redis.type(key) == b"string":
                assert b"zebra-7731" not in redis.get(key)

    async def test_text_with_control_characters_is_answered(
        self, client: TestClient[Any, Any], agency: AgencyKeys
    ) -> None:
        """Odd but valid JSON strings (a NUL escape) are redacted, not refused."""
        body = '{"text": "x\\u0000 ' + VISA + '"}'
        response = await client.post(
            REDACT, data=body.encode(), headers={**agency.auth, "Content-Type": "application/json"}
        )
        assert response.status == 200
        assert (await response.json())["text"] == "x\x00 **** **** **** 4242"

    async def test_a_lone_surrogate_escape_is_refused_without_echoing_the_text(
        self, client: TestClient[Any, Any], agency: AgencyKeys
    ) -> None:
        """A \\ud800 escape is half a character: 400 malformed_request, and the card is not echoed back."""
        body = '{"text": "\\ud800 x ' + VISA + '"}'
        response = await client.post(
            REDACT, data=body.encode(), headers={**agency.auth, "Content-Type": "application/json"}
        )
        assert response.status == 400
        text = await response.text()
        assert (await response.json())["code"] == "malformed_request"
        assert VISA not in text

    async def test_invalid_utf8_is_refused(self, client: TestClient[Any, Any], agency: AgencyKeys) -> None:
        """A body that is not UTF-8 is 400 malformed_request."""
        response = await client.post(
            REDACT, data=b'{"text": "\xff\xfe"}', headers={**agency.auth, "Content-Type": "application/json"}
        )
        assert response.status == 400
        assert (await response.json())["code"] == "malformed_request"


class TestTokenizeMode:
    async def test_cards_become_real_tokens_of_the_agency(
        self, client: TestClient[Any, Any], agency: AgencyKeys, clock: FakeClock
    ) -> None:
        """Each accepted card becomes a token GET /v1/tokens/{id} knows: brand, last four, stand-in expiry, metadata."""
        text = f"visa {VISA}, amex {AMEX}, SSN 078-05-1120, visa again {VISA[:8]} {VISA[8:]}"
        answer = await redact(client, agency, text, "tokenize")
        visa, amex, ssn, visa_again = answer["findings"]
        assert visa["token"] == visa_again["token"] != amex["token"]
        assert ssn["token"] is None
        assert ssn["replacement"] == "***-**-****"
        assert answer["tokens_created"] == 2
        assert (
            answer["text"] == f"visa {visa['token']}, amex {amex['token']}, SSN ***-**-****, visa again {visa['token']}"
        )
        response = await client.get(f"/v1/tokens/{visa['token']}", headers=agency.auth)
        token = await response.json()
        expires = dt.datetime.fromtimestamp(token["expires_at"], tz=dt.UTC)
        assert token["card"]["brand"] == "visa"
        assert token["card"]["last4"] == "4242"
        assert (token["card"]["exp_month"], token["card"]["exp_year"]) == (expires.month, expires.year)
        assert token["metadata"] == dict(REDACTION_METADATA)
        assert token["cvc_retained"] is False
        assert abs(token["expires_at"] - (clock() + 30 * 86400)) < 60

    async def test_a_redaction_token_has_the_fingerprint_of_the_card(
        self, client: TestClient[Any, Any], agency: AgencyKeys, card_body: dict[str, Any]
    ) -> None:
        """The token made from a transcript finds the card's other tokens by fingerprint."""
        created = await client.post("/v1/tokens", json=card_body, headers=agency.auth)
        fingerprint = (await created.json())["card"]["fingerprint"]
        [finding] = (await redact(client, agency, f"number {VISA}", "tokenize"))["findings"]
        listed = await client.get("/v1/tokens", params={"fingerprint": fingerprint}, headers=agency.auth)
        assert finding["token"] in {t["id"] for t in (await listed.json())["data"]}

    async def test_numbers_of_no_accepted_brand_are_masked_not_tokenized(
        self, client: TestClient[Any, Any], agency: AgencyKeys, redis_server: RedisServer
    ) -> None:
        """A Luhn-valid number the vault would refuse as a card is masked, and no token is written for it."""
        answer = await redact(client, agency, f"ref {UNBRANDED}", "tokenize")
        [finding] = answer["findings"]
        assert (finding["brand"], finding["token"], finding["replacement"]) == (
            None,
            None,
            "**** **** **** " + UNBRANDED[-4:],
        )
        assert answer["tokens_created"] == 0
        assert token_ids(redis_server, agency) == set()

    async def test_token_lifetime_follows_the_settings(
        self, aiohttp_client: Any, redis_server: RedisServer, master_keys: MasterKeys, tmp_path: Path, clock: FakeClock
    ) -> None:
        """redaction.token_ttl_days sets the life, capped by tokens.default_ttl_days."""
        app = create_app(
            make_settings(redis_server.url, tmp_path / "var", redaction__token_ttl_days=90, tokens__default_ttl_days=7),
            master_keys,
            redis_url=redis_server.url,
            clock=clock,
            tls=False,
        )
        client: TestClient[Any, Any] = await aiohttp_client(app)
        agency = await create_agency(client)
        [finding] = (await redact(client, agency, VISA, "tokenize"))["findings"]
        token = await (await client.get(f"/v1/tokens/{finding['token']}", headers=agency.auth)).json()
        assert abs(token["expires_at"] - (clock() + 7 * 86400)) < 60

    async def test_tokens_written_before_redis_failed_are_left_to_expire(
        self,
        aiohttp_client: Any,
        fresh_redis: RedisServer,
        master_keys: MasterKeys,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """Redis dies after two tokens: 503, and those two (which cannot be deleted then) carry their TTL."""
        app = create_app(
            make_settings(fresh_redis.url, tmp_path / "var"), master_keys, redis_url=fresh_redis.url, tls=False
        )
        client: TestClient[Any, Any] = await aiohttp_client(app)
        agency = await create_agency(client)
        real_tokenize = Vault.tokenize
        calls = 0

        async def redis_dies_after_two(self: Vault, *args: Any, **kwargs: Any) -> Any:
            nonlocal calls
            calls += 1
            if calls == 3:
                fresh_redis.kill()
            return await real_tokenize(self, *args, **kwargs)

        monkeypatch.setattr(Vault, "tokenize", redis_dies_after_two)
        try:
            response = await client.post(
                REDACT, json={"text": f"{VISA} {AMEX} / {MASTERCARD}", "mode": "tokenize"}, headers=agency.auth
            )
            assert response.status == 503
            assert (await response.json())["code"] == "store_unavailable"
        finally:
            fresh_redis.restart_same_port()
        left = token_ids(fresh_redis, agency)
        assert len(left) == 2
        for token_id in left:
            ttl = fresh_redis.client().ttl(token_key(agency.id, token_id))
            assert 0 < ttl <= 30 * 86400


class TestHugeInputs:
    @pytest.fixture
    async def small(
        self, aiohttp_client: Any, redis_server: RedisServer, master_keys: MasterKeys, tmp_path: Path
    ) -> tuple[TestClient[Any, Any], AgencyKeys]:
        """An app whose redaction limit is 64 KiB, so the limit is cheap to reach."""
        app = create_app(
            make_settings(redis_server.url, tmp_path / "var", redaction__max_body_bytes=65536),
            master_keys,
            redis_url=redis_server.url,
            tls=False,
        )
        client: TestClient[Any, Any] = await aiohttp_client(app)
        return client, await create_agency(client)

    async def test_a_declared_length_over_the_limit_is_refused_at_once(
        self, small: tuple[TestClient[Any, Any], AgencyKeys]
    ) -> None:
        """Content-Length over redaction.max_body_bytes: 413 naming the limit."""
        client, agency = small
        response = await client.post(REDACT, json={"text": "x" * 70_000}, headers=agency.auth)
        assert response.status == 413
        problem = await response.json()
        assert problem["code"] == "payload_too_large"
        assert "65536" in problem["detail"]

    async def test_a_chunked_body_is_cut_off_at_the_limit(self, small: tuple[TestClient[Any, Any], AgencyKeys]) -> None:
        """Without a Content-Length the body is read only until it passes the limit, then refused."""
        client, agency = small

        async def endless() -> AsyncIterator[bytes]:
            yield b'{"text": "'
            for _ in range(10_000):  # 10 MB if it were all read
                yield b"1 " * 512

        response = await client.post(
            REDACT, data=endless(), headers={**agency.auth, "Content-Type": "application/json"}
        )
        assert response.status == 413
        assert "65536" in (await response.json())["detail"]

    async def test_the_limit_is_the_routes_own(self, small: tuple[TestClient[Any, Any], AgencyKeys]) -> None:
        """A redaction above server.max_body_bytes (32 KiB) but within its own limit is served."""
        client, agency = small
        answer = await redact(client, agency, ("word " * 10_000) + VISA)
        assert answer["counts"]["card"] == 1

    @pytest.mark.parametrize("unit", ["1 ", "12-", "9.", "4"], ids=["spaces", "dashes", "dots", "one-run"])
    async def test_a_body_at_the_limit_of_pathological_digits_is_answered_correctly(
        self, client: TestClient[Any, Any], agency: AgencyKeys, unit: str
    ) -> None:
        """About a megabyte of digits with single separators (the worst case for grouping): answered, and others too."""
        limit = client.app[SERVICES].settings.redaction.max_body_bytes
        text = unit * ((limit - 100) // len(unit))
        answer = await redact(client, agency, text)
        assert answer["findings"] == []
        assert answer["text"] == text
        async with aiohttp.ClientSession() as other, other.get(client.make_url("/healthz")) as health:
            assert health.status == 200  # another client, on a connection of its own
        again = await client.get("/healthz")  # and the same keep-alive connection is still usable
        assert again.status == 200

    async def test_a_megabyte_full_of_cards_masks_every_one(
        self, client: TestClient[Any, Any], agency: AgencyKeys
    ) -> None:
        """The largest text, every line holding a card, comes back with no card left and every finding listed."""
        limit = client.app[SERVICES].settings.redaction.max_body_bytes
        line = f"{VISA} ok\n"
        lines = (limit - 1000) // len(json.dumps(line))  # as sent: the newline is escaped
        answer = await redact(client, agency, line * lines)
        assert answer["counts"]["card"] == lines
        assert not contains_card_number(answer["text"])
