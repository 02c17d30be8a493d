"""Invariants that hold for every answer and every stored byte, whatever the request was."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from service.adapters import redis_base
from service.adapters.keyring import MasterKeys
from service.app import create_app
from tests.conftest import AgencyKeys, FakeClock, make_settings
from tests.support import keys as redis_keys
from tests.support import leaks
from tests.support.cards import ALL_TEST_CARDS, AMEX_CVC, CVC, MASTERCARD, VISA
from tests.support.redis_server import RedisServer

Client = TestClient[Any, Any]
MINTED_REQUEST_ID = re.compile(r"^req_[0-9a-f]{24}$")
HEADER = 1 + 4 + 24  # tag, key version, nonce
POLY1305_TAG = 16


def card_body(number: str = VISA, **extra: Any) -> dict[str, Any]:
    cvc = AMEX_CVC if number[:2] in ("34", "37") else CVC
    return {"card": {"number": number, "exp_month": 12, "exp_year": 2031, "cvc": cvc}, **extra}


def token_key(agency: AgencyKeys, token_id: str) -> str:
    return redis_base.token_key(agency.id, token_id)


def cvc_key(agency: AgencyKeys, token_id: str) -> str:
    return redis_base.cvc_key(agency.id, token_id)


async def create(client: Client, agency: AgencyKeys, body: dict[str, Any] | None = None) -> dict[str, Any]:
    resp = await client.post("/v1/tokens", json=body or card_body(), headers=agency.auth)
    assert resp.status in (200, 201), await resp.text()
    result: dict[str, Any] = await resp.json()
    return result


async def integrity_error(resp: ClientResponse) -> None:
    """A 500 integrity_error problem that says nothing about the card."""
    text = await resp.text()
    assert resp.status == 500, text
    assert resp.content_type == "application/problem+json"
    body = json.loads(text)
    assert body["code"] == "integrity_error"
    assert set(body) <= {"type", "title", "status", "code", "detail", "request_id"}
    assert leaks.cards_in_text(text) == []
    for revealing in ("4242", "4444", "424242", "555555", "fingerprint", "last4", "tok_", "agy_"):
        assert revealing not in text


@pytest.fixture
def r(redis_server: RedisServer) -> redis.Redis:
    return redis_server.client()


Scenario = Callable[[Client, AgencyKeys], Awaitable[ClientResponse]]


async def _created(client: Client, agency: AgencyKeys) -> ClientResponse:
    return await client.post("/v1/tokens", json=card_body(), headers=agency.auth)


async def _fetched(client: Client, agency: AgencyKeys) -> ClientResponse:
    token = await create(client, agency)
    return await client.get(f"/v1/tokens/{token['id']}", headers=agency.auth)


async def _deleted(client: Client, agency: AgencyKeys) -> ClientResponse:
    token = await create(client, agency)
    return await client.delete(f"/v1/tokens/{token['id']}", headers=agency.auth)


async def _listed(client: Client, agency: AgencyKeys) -> ClientResponse:
    return await client.get("/v1/tokens", params={"fingerprint": "0" * 32}, headers=agency.auth)


SCENARIOS: dict[str, Scenario] = {
    "201 create": _created,
    "200 get": _fetched,
    "204 delete": _deleted,
    "200 list": _listed,
    "200 healthz": lambda c, a: c.get("/healthz"),
    "200 readyz": lambda c, a: c.get("/readyz"),
    "400 malformed": lambda c, a: c.post(
        "/v1/tokens", data=b"{", headers={**a.auth, "Content-Type": "application/json"}
    ),
    "401 no key": lambda c, a: c.post("/v1/tokens", json=card_body()),
    "403 publishable": lambda c, a: c.get("/v1/tokens/tok_" + "A" * 24, headers=a.public_auth),
    "404 token": lambda c, a: c.get("/v1/tokens/tok_" + "A" * 24, headers=a.auth),
    "404 route": lambda c, a: c.get("/nowhere"),
    "405 method": lambda c, a: c.put("/v1/tokens", headers=a.auth),
    "413 too large": lambda c, a: c.post(
        "/v1/tokens", data=b" " * (33 * 1024), headers={**a.auth, "Content-Type": "application/json"}
    ),
    "415 media type": lambda c, a: c.post("/v1/tokens", data=b"{}", headers={**a.auth, "Content-Type": "text/plain"}),
    "422 invalid": lambda c, a: c.post("/v1/tokens", json=card_body("4242424242424241"), headers=a.auth),
}


class TestResponseHeaders:
    @pytest.mark.parametrize("scenario", list(SCENARIOS))
    async def test_every_answer_carries_the_security_headers(
        self, client: Client, agency: AgencyKeys, scenario: str
    ) -> None:
        """Success and error answers alike carry a request id, no-store, nosniff, a frame-denying CSP, a bare Server."""
        resp = await SCENARIOS[scenario](client, agency)
        assert str(resp.status) == scenario.split()[0], await resp.text()
        assert MINTED_REQUEST_ID.match(resp.headers["X-Request-Id"])
        assert resp.headers["Cache-Control"] == "no-store"
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]
        server = resp.headers.get("Server", "")
        assert not re.search(r"[0-9/]|python|aiohttp", server, re.IGNORECASE), server
        assert "Strict-Transport-Security" not in resp.headers  # this app is plain HTTP behind a proxy

    async def test_integrity_error_carries_them_too(self, client: Client, agency: AgencyKeys, r: redis.Redis) -> None:
        """A 500 from a ciphertext that fails authentication has the same headers."""
        token = await create(client, agency)
        r.set(token_key(agency, token["id"]), b"C" + b"\x00" * 60)
        resp = await client.get(f"/v1/tokens/{token['id']}", headers=agency.auth)
        await integrity_error(resp)
        assert resp.headers["Cache-Control"] == "no-store"
        assert MINTED_REQUEST_ID.match(resp.headers["X-Request-Id"])

    async def test_tls_app_adds_hsts_to_every_answer(
        self,
        aiohttp_client: Any,
        redis_server: RedisServer,
        master_keys: MasterKeys,
        clock: FakeClock,
        tmp_path: Path,
    ) -> None:
        """An app serving TLS adds Strict-Transport-Security to successes and errors."""
        settings = make_settings(redis_server.url, tmp_path / "var")
        tls_client: Client = await aiohttp_client(
            create_app(settings, master_keys, redis_url=redis_server.url, clock=clock, tls=True)
        )
        for resp in (await tls_client.get("/healthz"), await tls_client.get("/nowhere")):
            assert resp.headers["Strict-Transport-Security"].startswith("max-age=")

    @pytest.mark.parametrize("where", ["path", "header"])
    async def test_parser_errors_are_problems_too(self, client: Client, where: str) -> None:
        """An over-long request line or header still gets a problem answer with the usual headers, nothing echoed."""
        marker = "overlong" * 1200
        if where == "path":
            resp = await client.get(f"/v1/tokens/{marker}")
        else:
            resp = await client.get("/healthz", headers={"X-Filler": marker})
        text = await resp.text()
        assert 400 <= resp.status < 500
        assert "overlongoverlong" not in text
        assert not re.search(r"[0-9/]|python|aiohttp", resp.headers.get("Server", ""), re.IGNORECASE)
        assert resp.content_type == "application/problem+json"
        assert MINTED_REQUEST_ID.match(resp.headers.get("X-Request-Id", ""))
        assert resp.headers.get("Cache-Control") == "no-store"


class TestRequestId:
    @pytest.mark.parametrize("inbound", ["abcdef12", "proxy-7f3a.9:1_x", "A" * 64])
    async def test_well_formed_inbound_id_is_echoed(self, client: Client, agency: AgencyKeys, inbound: str) -> None:
        """A well-formed X-Request-Id from the proxy is used: echoed in the header and in the problem body."""
        ok = await client.get("/healthz", headers={"X-Request-Id": inbound})
        assert ok.headers["X-Request-Id"] == inbound
        refused = await client.post("/v1/tokens", json=card_body(), headers={"X-Request-Id": inbound})
        assert refused.headers["X-Request-Id"] == inbound
        assert (await refused.json())["request_id"] == inbound

    @pytest.mark.parametrize(
        "inbound",
        ["short", "A" * 65, "has space inside", "<script>alert(1)</script>", "id/with/slash", "ünïcödé-id", VISA],
    )
    async def test_malformed_inbound_id_is_replaced(self, client: Client, agency: AgencyKeys, inbound: str) -> None:
        """A malformed (or card-number) X-Request-Id is not echoed; a fresh one is minted and used in the body."""
        resp = await client.post("/v1/tokens", json=card_body(), headers={"X-Request-Id": inbound})
        minted = resp.headers["X-Request-Id"]
        assert minted != inbound
        assert MINTED_REQUEST_ID.match(minted)
        text = await resp.text()
        assert inbound not in text
        assert json.loads(text)["request_id"] == minted
        assert leaks.cards_in_text(json.dumps(dict(resp.headers))) == []

    async def test_minted_id_never_holds_a_card_number(
        self, client: Client, agency: AgencyKeys, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A minted id whose random hex happens to contain a card number is re-drawn, so body and header agree."""
        real = secrets.token_hex
        unlucky = iter([VISA + "abcdefgh"])

        def token_hex(nbytes: int | None = None) -> str:
            return next(unlucky, None) or real(nbytes) if nbytes == 12 else real(nbytes)

        monkeypatch.setattr(secrets, "token_hex", token_hex)
        resp = await client.post("/v1/tokens", json=card_body())
        minted = resp.headers["X-Request-Id"]
        assert MINTED_REQUEST_ID.match(minted)
        assert leaks.cards_in_text(minted) == []
        assert (await resp.json())["request_id"] == minted
        assert next(unlucky, None) is None  # the unlucky draw was made, and refused

    async def test_every_request_gets_its_own_id(self, client: Client) -> None:
        """Without an inbound id each request gets a distinct minted id."""
        ids = {(await client.get("/healthz")).headers["X-Request-Id"] for _ in range(20)}
        assert len(ids) == 20


class TestNoPlaintextAtRest:
    async def test_burst_of_every_test_card_leaves_only_ciphertexts(
        self, client: Client, agency: AgencyKeys, r: redis.Redis
    ) -> None:
        """After tokenizing every test card, Redis holds no card number anywhere and every value is a ciphertext."""
        name, postal, note = "Pat Q. Cardholder", "97301-1234", "phone order from the front desk"
        created = []
        for i, number in enumerate(ALL_TEST_CARDS):
            body = card_body(number, metadata={"note": note}, format="pan_shaped" if i % 3 == 0 else "opaque")
            body["card"].update(name=name, postal_code=postal)
            created.append(await create(client, agency, body))
            created.append(await create(client, agency, card_body(number, deduplicate=True)))
        assert leaks.redis_findings(r) == []
        token_ids = {t["id"] for t in created}
        stored = 0
        for key in redis_keys.agency_keys(r, agency.id) | {redis_keys.agency_key(agency.id).encode()}:
            kind = r.type(key)
            if b":tok:" in key or b":cvc:" in key:
                assert kind == b"string"
                value = r.get(key)
                assert value is not None
                assert value[:1] == b"C", key
                assert len(value) > HEADER + POLY1305_TAG, key
                for plaintext in (name, postal, note):
                    assert plaintext.encode() not in value, (key, plaintext)
                assert key.rsplit(b":", 1)[1].decode() in token_ids
                stored += 1
            elif b":fpi:" in key:  # the fingerprint index: "<fingerprint>:<token id>", no card data
                assert kind == b"zset"
                assert {m.decode().split(":")[1] for m in r.zrange(key, 0, -1)} <= token_ids
            else:
                assert key == redis_keys.agency_key(agency.id).encode()
                record = r.hgetall(key)
                assert record[b"fk"][:1] == b"W"
                assert all(v[:1] == b"W" for k, v in record.items() if k.startswith(b"dk:"))
        assert stored >= len(token_ids) * 2  # each token's card, each CVC

    async def test_token_ids_and_key_names_carry_no_card_digits(
        self, client: Client, agency: AgencyKeys, r: redis.Redis
    ) -> None:
        """No Redis key name of the agency holds a test card number or its first six + last four together."""
        for number in ALL_TEST_CARDS:
            await create(client, agency, card_body(number))
        for key in redis_keys.agency_keys(r, agency.id):
            text = key.decode()
            assert leaks.cards_in_text(text) == []
            assert not any(n[:6] in text and n[-4:] in text for n in ALL_TEST_CARDS), text


class TestCiphertextBinding:
    async def test_ciphertext_moved_to_another_token_fails(
        self, client: Client, agency: AgencyKeys, r: redis.Redis
    ) -> None:
        """A card ciphertext copied onto another token's key makes GET of that token a bare 500 integrity_error."""
        source = await create(client, agency, card_body(VISA))
        target = await create(client, agency, card_body(MASTERCARD))
        r.set(token_key(agency, target["id"]), r.get(token_key(agency, source["id"])), keepttl=True)
        await integrity_error(await client.get(f"/v1/tokens/{target['id']}", headers=agency.auth))
        untouched = await client.get(f"/v1/tokens/{source['id']}", headers=agency.auth)
        assert await untouched.json() == source

    async def test_ciphertext_copied_to_a_new_id_fails(
        self, client: Client, agency: AgencyKeys, r: redis.Redis
    ) -> None:
        """A ciphertext planted under a token id it was not sealed for does not open."""
        source = await create(client, agency)
        planted = "tok_" + "P" * 24
        r.set(token_key(agency, planted), r.get(token_key(agency, source["id"])), ex=600)
        await integrity_error(await client.get(f"/v1/tokens/{planted}", headers=agency.auth))

    async def test_ciphertext_moved_across_agencies_fails(
        self, client: Client, agency: AgencyKeys, other_agency: AgencyKeys, r: redis.Redis
    ) -> None:
        """Another agency's ciphertext, copied onto this agency's token key, fails with 500 integrity_error."""
        theirs = await create(client, other_agency)
        mine = await create(client, agency)
        r.set(token_key(agency, mine["id"]), r.get(token_key(other_agency, theirs["id"])), keepttl=True)
        await integrity_error(await client.get(f"/v1/tokens/{mine['id']}", headers=agency.auth))
        same_id = token_key(agency, theirs["id"])
        r.set(same_id, r.get(token_key(other_agency, theirs["id"])), ex=600)
        await integrity_error(await client.get(f"/v1/tokens/{theirs['id']}", headers=agency.auth))

    async def test_cvc_ciphertext_does_not_open_as_a_card(
        self, client: Client, agency: AgencyKeys, r: redis.Redis
    ) -> None:
        """A token's own CVC ciphertext put in place of its card ciphertext fails (separate key and purpose)."""
        token = await create(client, agency)
        r.set(token_key(agency, token["id"]), r.get(cvc_key(agency, token["id"])), keepttl=True)
        await integrity_error(await client.get(f"/v1/tokens/{token['id']}", headers=agency.auth))

    @pytest.mark.parametrize(
        "damage",
        [
            "flip-last-byte",
            "flip-version",
            "truncate",
            "plaintext",
            "truncate-into-tag",
        ],
    )
    async def test_damaged_ciphertext_fails(
        self, client: Client, agency: AgencyKeys, r: redis.Redis, damage: str
    ) -> None:
        """A flipped bit, a relabelled key version, a truncated blob or a non-ciphertext is 500 integrity_error."""
        token = await create(client, agency)
        key = token_key(agency, token["id"])
        blob = bytearray(r.get(key) or b"")
        if damage == "flip-last-byte":
            blob[-1] ^= 0x01
        elif damage == "flip-version":
            blob[4] ^= 0x01
        elif damage == "truncate":
            blob = blob[:20]
        elif damage == "truncate-into-tag":
            blob = blob[: HEADER + POLY1305_TAG - 1]
        else:
            blob = bytearray(b'{"n":"xxxx"}')
        r.set(key, bytes(blob), keepttl=True)
        await integrity_error(await client.get(f"/v1/tokens/{token['id']}", headers=agency.auth))

    async def test_listing_with_a_moved_ciphertext_fails_closed(
        self, client: Client, agency: AgencyKeys, r: redis.Redis
    ) -> None:
        """Listing a card whose tokens include a moved ciphertext fails with 500 rather than show the wrong card."""
        first = await create(client, agency)
        second = await create(client, agency)
        other = await create(client, agency, card_body(MASTERCARD))
        r.set(token_key(agency, second["id"]), r.get(token_key(agency, other["id"])), keepttl=True)
        resp = await client.get("/v1/tokens", params={"fingerprint": first["card"]["fingerprint"]}, headers=agency.auth)
        await integrity_error(resp)

    async def test_delete_still_shreds_a_token_whose_ciphertext_fails(
        self, client: Client, agency: AgencyKeys, r: redis.Redis
    ) -> None:
        """DELETE of a token whose ciphertext no longer authenticates removes it (204), then it is 404."""
        source = await create(client, agency, card_body(VISA))
        target = await create(client, agency, card_body(MASTERCARD))
        r.set(token_key(agency, target["id"]), r.get(token_key(agency, source["id"])), keepttl=True)
        resp = await client.delete(f"/v1/tokens/{target['id']}", headers=agency.auth)
        assert resp.status == 204, await resp.text()
        assert r.exists(token_key(agency, target["id"]), cvc_key(agency, target["id"])) == 0
        gone = await client.get(f"/v1/tokens/{target['id']}", headers=agency.auth)
        assert gone.status == 404
