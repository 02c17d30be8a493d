"""Keys and tenancy: what a publishable key may do, where from, and that agencies never see each other."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis
from aiohttp.test_utils import TestClient

from service.adapters.redis_base import api_key_key
from service.agencies import AgencyService
from service.domain.agencies import AgencyStatus
from service.http.state import SERVICES
from tests.conftest import AgencyKeys
from tests.support import keys as redis_keys
from tests.support import leaks
from tests.support.cards import CVC, MASTERCARD, VISA
from tests.support.redis_server import RedisServer

Client = TestClient[Any, Any]
ORIGIN = "https://shop.example.gov"


def card_body(number: str = VISA, **extra: Any) -> dict[str, Any]:
    return {"card": {"number": number, "exp_month": 12, "exp_year": 2031, "cvc": CVC}, **extra}


def agency_keys(r: redis.Redis, agency: AgencyKeys) -> set[bytes]:
    return redis_keys.agency_keys(r, agency.id)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def create(client: Client, headers: dict[str, str], body: dict[str, Any] | None = None) -> dict[str, Any]:
    resp = await client.post("/v1/tokens", json=body or card_body(), headers=headers)
    text = await resp.text()
    assert resp.status == 201, text
    assert leaks.cards_in_text(text) == []
    result: dict[str, Any] = json.loads(text)
    return result


async def problem(resp: Any, status: int, code: str) -> dict[str, Any]:
    text = await resp.text()
    assert resp.status == status, text
    assert resp.content_type == "application/problem+json"
    assert leaks.cards_in_text(text) == []
    body: dict[str, Any] = json.loads(text)
    assert body["code"] == code
    return body


def agencies_of(client: Client) -> AgencyService:
    service = client.app[SERVICES].agencies
    assert service is not None
    return service


@pytest.fixture
def r(redis_server: RedisServer) -> redis.Redis:
    return redis_server.client()


class TestPublishableKey:
    async def test_can_create_tokens(self, client: Client, agency: AgencyKeys) -> None:
        """A publishable key creates a token (201) that the agency's secret key can read."""
        created = await create(client, agency.public_auth)
        resp = await client.get(f"/v1/tokens/{created['id']}", headers=agency.auth)
        assert resp.status == 200
        assert await resp.json() == created

    @pytest.mark.parametrize(
        ("method", "path"),
        [("GET", "/v1/tokens/{id}"), ("DELETE", "/v1/tokens/{id}"), ("GET", "/v1/tokens?fingerprint={fp}")],
    )
    async def test_cannot_read_delete_or_list(
        self, client: Client, agency: AgencyKeys, r: redis.Redis, method: str, path: str
    ) -> None:
        """GET, DELETE and list with a publishable key are 403 secret_key_required, and the token is untouched."""
        created = await create(client, agency.auth)
        url = path.format(id=created["id"], fp=created["card"]["fingerprint"])
        before = agency_keys(r, agency)
        resp = await client.request(method, url, headers=agency.public_auth)
        body = await problem(resp, 403, "secret_key_required")
        assert created["id"] not in json.dumps(body)
        assert agency_keys(r, agency) == before
        still = await client.get(f"/v1/tokens/{created['id']}", headers=agency.auth)
        assert still.status == 200

    async def test_registered_origin_may_create(self, client: Client, agency: AgencyKeys) -> None:
        """With the agency's registered Origin the publishable key creates (201)."""
        await create(client, {**agency.public_auth, "Origin": ORIGIN})

    async def test_no_origin_may_create(self, client: Client, agency: AgencyKeys) -> None:
        """Without an Origin header (a server, not a browser) the publishable key creates (201)."""
        await create(client, agency.public_auth)

    @pytest.mark.parametrize(
        "origin",
        [
            "https://evil.example.com",
            "http://shop.example.gov",
            "https://shop.example.gov:8443",
            "https://evil.shop.example.gov",
            "https://shop.example.gov.evil.com",
            "https://parks.example.gov",
            "null",
            "",
        ],
    )
    async def test_other_origin_is_refused(
        self, client: Client, agency: AgencyKeys, other_agency: AgencyKeys, r: redis.Redis, origin: str
    ) -> None:
        """A publishable key sent from an unregistered Origin (even another agency's) is 403 origin_not_allowed."""
        before = agency_keys(r, agency)
        resp = await client.post("/v1/tokens", json=card_body(), headers={**agency.public_auth, "Origin": origin})
        await problem(resp, 403, "origin_not_allowed")
        assert agency_keys(r, agency) == before

    async def test_origin_list_is_per_agency(self, client: Client, other_agency: AgencyKeys) -> None:
        """Another agency's publishable key works from its own origin and not from this agency's."""
        ok = await client.post(
            "/v1/tokens", json=card_body(), headers={**other_agency.public_auth, "Origin": "https://parks.example.gov"}
        )
        assert ok.status == 201
        refused = await client.post(
            "/v1/tokens", json=card_body(), headers={**other_agency.public_auth, "Origin": ORIGIN}
        )
        await problem(refused, 403, "origin_not_allowed")


class TestCrossAgency:
    async def test_other_agency_token_is_exactly_not_found(
        self, client: Client, agency: AgencyKeys, other_agency: AgencyKeys
    ) -> None:
        """Another agency's token id answers 404 with the same headers and body as a token that never existed."""
        theirs = await create(client, other_agency.auth)
        missing_id = "tok_" + "Q" * 24
        foreign = await client.get(f"/v1/tokens/{theirs['id']}", headers=agency.auth)
        missing = await client.get(f"/v1/tokens/{missing_id}", headers=agency.auth)
        foreign_body = await problem(foreign, 404, "token_not_found")
        missing_body = await problem(missing, 404, "token_not_found")
        assert foreign_body.pop("request_id") != missing_body.pop("request_id")
        assert foreign_body == missing_body
        ignore = {"x-request-id", "date"}
        assert {k.lower(): v for k, v in foreign.headers.items() if k.lower() not in ignore} == {
            k.lower(): v for k, v in missing.headers.items() if k.lower() not in ignore
        }

    async def test_other_agency_pan_shaped_token_is_not_found(
        self, client: Client, agency: AgencyKeys, other_agency: AgencyKeys
    ) -> None:
        """A pan_shaped id of another agency is 404 token_not_found too."""
        theirs = await create(client, other_agency.auth, card_body(format="pan_shaped"))
        await problem(await client.get(f"/v1/tokens/{theirs['id']}", headers=agency.auth), 404, "token_not_found")

    async def test_cannot_delete_another_agency_token(
        self, client: Client, agency: AgencyKeys, other_agency: AgencyKeys, r: redis.Redis
    ) -> None:
        """DELETE of another agency's token is 404 and the token and its CVC are still there."""
        theirs = await create(client, other_agency.auth)
        before = agency_keys(r, other_agency)
        resp = await client.delete(f"/v1/tokens/{theirs['id']}", headers=agency.auth)
        await problem(resp, 404, "token_not_found")
        assert agency_keys(r, other_agency) == before
        still = await client.get(f"/v1/tokens/{theirs['id']}", headers=other_agency.auth)
        assert (await still.json())["cvc_retained"] is True

    async def test_other_agency_fingerprint_lists_nothing(
        self, client: Client, agency: AgencyKeys, other_agency: AgencyKeys
    ) -> None:
        """Listing by another agency's fingerprint of a card returns an empty list."""
        theirs = await create(client, other_agency.auth)
        resp = await client.get(
            "/v1/tokens", params={"fingerprint": theirs["card"]["fingerprint"]}, headers=agency.auth
        )
        assert resp.status == 200
        assert await resp.json() == {"object": "list", "data": [], "has_more": False}

    async def test_fingerprints_differ_between_agencies(
        self, client: Client, agency: AgencyKeys, other_agency: AgencyKeys
    ) -> None:
        """The same card has a different fingerprint in each agency, and each list shows only its own token."""
        mine = await create(client, agency.auth)
        theirs = await create(client, other_agency.auth)
        assert mine["card"]["fingerprint"] != theirs["card"]["fingerprint"]
        for owner, token in ((agency, mine), (other_agency, theirs)):
            resp = await client.get(
                "/v1/tokens", params={"fingerprint": token["card"]["fingerprint"]}, headers=owner.auth
            )
            assert [t["id"] for t in (await resp.json())["data"]] == [token["id"]]

    async def test_dedupe_never_crosses_agencies(
        self, client: Client, agency: AgencyKeys, other_agency: AgencyKeys
    ) -> None:
        """deduplicate in one agency never returns another agency's token of the same card."""
        theirs = await create(client, other_agency.auth)
        resp = await client.post("/v1/tokens", json=card_body(deduplicate=True), headers=agency.auth)
        assert resp.status == 201
        assert (await resp.json())["id"] != theirs["id"]

    async def test_tokens_of_one_agency_are_invisible_to_the_other(
        self, client: Client, agency: AgencyKeys, other_agency: AgencyKeys
    ) -> None:
        """Every token id of one agency is 404 to the other, for GET and DELETE alike."""
        ids = [(await create(client, agency.auth, card_body(n)))["id"] for n in (VISA, MASTERCARD)]
        for token_id in ids:
            await problem(await client.get(f"/v1/tokens/{token_id}", headers=other_agency.auth), 404, "token_not_found")
            await problem(
                await client.delete(f"/v1/tokens/{token_id}", headers=other_agency.auth), 404, "token_not_found"
            )
            assert (await client.get(f"/v1/tokens/{token_id}", headers=agency.auth)).status == 200


class TestAgencyLifecycle:
    async def test_disabled_agency_keys_are_refused(self, client: Client, agency: AgencyKeys, r: redis.Redis) -> None:
        """Once an agency is disabled both its keys answer 401 invalid_api_key and nothing is stored."""
        created = await create(client, agency.auth)
        await agencies_of(client).set_status(agency.slug, AgencyStatus.DISABLED)
        before = agency_keys(r, agency)
        for headers in (agency.auth, agency.public_auth):
            resp = await client.post("/v1/tokens", json=card_body(), headers=headers)
            await problem(resp, 401, "invalid_api_key")
        await problem(await client.get(f"/v1/tokens/{created['id']}", headers=agency.auth), 401, "invalid_api_key")
        assert agency_keys(r, agency) == before

    async def test_re_enabled_agency_works_again(self, client: Client, agency: AgencyKeys) -> None:
        """Re-activating a disabled agency restores its keys and its tokens."""
        created = await create(client, agency.auth)
        service = agencies_of(client)
        await service.set_status(agency.slug, AgencyStatus.DISABLED)
        await service.set_status(agency.slug, AgencyStatus.ACTIVE)
        resp = await client.get(f"/v1/tokens/{created['id']}", headers=agency.auth)
        assert resp.status == 200

    async def test_disabling_one_agency_leaves_the_other(
        self, client: Client, agency: AgencyKeys, other_agency: AgencyKeys
    ) -> None:
        """Disabling an agency does not affect another agency's keys."""
        await agencies_of(client).set_status(agency.slug, AgencyStatus.DISABLED)
        await create(client, other_agency.auth)

    async def test_rotated_keys_stop_working_and_new_ones_work(self, client: Client, agency: AgencyKeys) -> None:
        """After a rotation with no grace, the old keys are 401 and the new keys work, with old tokens intact."""
        created = await create(client, agency.auth)
        issued = await agencies_of(client).rotate_api_keys(agency.slug, grace_seconds=0)
        for old in (agency.auth, agency.public_auth):
            await problem(await client.post("/v1/tokens", json=card_body(), headers=old), 401, "invalid_api_key")
        await problem(await client.get(f"/v1/tokens/{created['id']}", headers=agency.auth), 401, "invalid_api_key")
        resp = await client.get(f"/v1/tokens/{created['id']}", headers=bearer(issued.secret_key))
        assert resp.status == 200
        assert await resp.json() == created
        await create(client, {**bearer(issued.publishable_key), "Origin": ORIGIN})
        forbidden = await client.get(f"/v1/tokens/{created['id']}", headers=bearer(issued.publishable_key))
        await problem(forbidden, 403, "secret_key_required")

    async def test_rotation_with_grace_keeps_old_keys_for_a_while(
        self, client: Client, agency: AgencyKeys, r: redis.Redis
    ) -> None:
        """With a grace period the old secret key still works, and its entry expires within that grace."""
        issued = await agencies_of(client).rotate_api_keys(agency.slug, grace_seconds=300)
        await create(client, agency.auth)
        await create(client, bearer(issued.secret_key))
        keyring = client.app[SERVICES].keyring
        for old in (agency.secret, agency.publishable):
            assert 0 < r.ttl(api_key_key(keyring.api_key_hash(old))) <= 300
        for new in (issued.secret_key, issued.publishable_key):
            assert r.ttl(api_key_key(keyring.api_key_hash(new))) == -1
