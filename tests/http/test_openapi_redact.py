"""Real answers of ``POST /v1/redact`` conform to openapi.yaml, for every status it documents.

Each test declares with ``@covers`` exactly which (operation, status) pairs,
problem codes and field codes it provokes; ``TestCoverageDeclarations`` in
``test_openapi.py`` proves that the declarations of every ``test_openapi_*``
module together cover the whole document.  Only the public test cards appear
as literals; every other card number is made at run time.
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
from service.app import create_app
from service.http.state import SERVICES
from service.vault import Vault
from tests.conftest import AgencyKeys, create_agency, make_settings
from tests.support.cards import AMEX, DISCOVER, MASTERCARD, VISA
from tests.support.keys import agency_data_keys
from tests.support.openapi_check import Contract, covers
from tests.support.redis_server import RedisServer

REDACT = "/v1/redact"
MESSAGE = f"Hi, card {VISA[:4]} {VISA[4:8]} {VISA[8:12]} {VISA[12:]} exp 12/31; SSN 078-05-1120, call 502-555-0134."


@pytest.fixture
def contract(client: TestClient[Any, Any], request: pytest.FixtureRequest) -> Contract:
    """A contract checker bound to the session app, expecting what the test declares with @covers."""
    return Contract(client, expected=getattr(request.function, "contract_covers", None))


async def app_with(
    aiohttp_client: Any, redis_url: str, tmp_path: Path, keys: MasterKeys, **settings: Any
) -> TestClient[Any, Any]:
    app = create_app(make_settings(redis_url, tmp_path / "var", **settings), keys, redis_url=redis_url, tls=False)
    started: TestClient[Any, Any] = await aiohttp_client(app)
    return started


def in_flight(agency_id: str, body: dict[str, Any], key: str) -> tuple[str, str]:
    """The Redis record of an Idempotency-Key claimed by a redaction still in flight."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    digest = hashlib.sha256()
    for part in (b"POST", REDACT.encode(), canonical):
        digest.update(len(part).to_bytes(8, "big") + part)
    return record_key(agency_id, hashlib.sha256(key.encode()).hexdigest()), json.dumps(
        {"state": "in_flight", "fingerprint": digest.hexdigest()}
    )


def stored_token_ids(agency: AgencyKeys, redis_server: RedisServer) -> set[str]:
    return {key.decode().rsplit(":", 1)[1] for key in agency_data_keys(redis_server.client(), agency.id, "tok")}


class TestRedactConformance:
    @covers(("redactText", 200), ("redactText", 422), codes={"idempotency_key_reused"})
    async def test_masked_and_tokenized_answers_conform(self, contract: Contract, agency: AgencyKeys) -> None:
        """Mask and tokenize answers, a replay under the same Idempotency-Key, and that key reused, as documented."""
        masked = await contract.call("POST", REDACT, status=200, json={"text": MESSAGE}, headers=agency.auth)
        answer = masked.json()
        assert answer["text"] == "Hi, card **** **** **** 4242 exp 12/31; SSN ***-**-****, call 502-555-0134."
        assert [(f["kind"], MESSAGE[f["start"] : f["end"]][-4:]) for f in answer["findings"]] == [
            ("card", "4242"),
            ("ssn", "1120"),
        ]
        keyed = {**agency.auth, "Idempotency-Key": "redact-1"}
        body = {"text": MESSAGE, "mode": "tokenize"}
        tokenized = await contract.call("POST", REDACT, status=200, json=body, headers=keyed)
        token = tokenized.json()["findings"][0]["token"]
        assert tokenized.json()["text"].startswith(f"Hi, card {token} exp")
        replayed = await contract.call("POST", REDACT, status=200, json=body, headers=keyed)
        assert replayed.replayed
        assert replayed.data == tokenized.data
        await contract.call("POST", REDACT, status=422, json={"text": "other"}, headers=keyed)
        contract.assert_covered()

    @covers(
        ("redactText", 400),
        ("redactText", 401),
        ("redactText", 403),
        ("redactText", 409),
        ("redactText", 413),
        ("redactText", 415),
        ("redactText", 422),
        codes={
            "malformed_request",
            "idempotency_key_invalid",
            "missing_api_key",
            "secret_key_required",
            "idempotency_request_in_progress",
            "payload_too_large",
            "unsupported_media_type",
            "validation_failed",
        },
        field_codes={"required", "unknown_field", "invalid"},
    )
    async def test_refusals_conform(self, contract: Contract, client: TestClient[Any, Any], agency: AgencyKeys) -> None:
        """Keys, bodies, sizes, fields and a key in flight are refused with the documented problems."""
        body = {"text": MESSAGE}
        await contract.call("POST", REDACT, status=401, json=body, conforms=False)
        refused = await contract.call("POST", REDACT, status=403, json=body, headers=agency.public_auth)
        assert refused.problem_code == "secret_key_required"
        json_headers = {**agency.auth, "Content-Type": "application/json"}
        await contract.call("POST", REDACT, status=400, body=b'{"text": ', headers=json_headers, conforms=False)
        bad_key = {**agency.auth, "Idempotency-Key": "k" * 256}
        await contract.call("POST", REDACT, status=400, json=body, headers=bad_key, conforms=False)
        plain = {**agency.auth, "Content-Type": "text/plain"}
        await contract.call("POST", REDACT, status=415, body=MESSAGE.encode(), headers=plain, conforms=False)

        limit = client.app[SERVICES].settings.redaction.max_body_bytes
        too_large = await contract.call("POST", REDACT, status=413, json={"text": "x" * limit}, headers=agency.auth)
        assert str(limit) in too_large.json()["detail"]

        for fields, expected, conforms in [
            ({}, ("text", "required"), False),
            ({"text": MESSAGE, "colour": "blue"}, ("colour", "unknown_field"), False),
            ({"text": 42}, ("text", "invalid"), False),
            ({"text": MESSAGE, "mode": "shred"}, ("mode", "invalid"), False),
        ]:
            exchange = await contract.call(
                "POST", REDACT, status=422, json=fields, headers=agency.auth, conforms=conforms
            )
            assert exchange.field_errors == [expected]

        svc = client.app[SERVICES]
        assert svc.store is not None
        key, record = in_flight(agency.id, body, "dup-1")
        await svc.store.redis.set(key, record, ex=60)
        busy = {**agency.auth, "Idempotency-Key": "dup-1"}
        await contract.call("POST", REDACT, status=409, json=body, headers=busy)
        contract.assert_covered()

    @covers(("redactText", 200), ("redactText", 422), codes={"too_many_cards"}, field_codes={"too_many_cards"})
    async def test_too_many_cards_conforms(
        self,
        contract: Contract,
        aiohttp_client: Any,
        redis_server: RedisServer,
        master_keys: MasterKeys,
        tmp_path: Path,
    ) -> None:
        """More distinct cards than redaction.max_tokens is 422 too_many_cards, and no token is written."""
        app = await app_with(aiohttp_client, redis_server.url, tmp_path, master_keys, redaction__max_tokens=2)
        agency = await create_agency(app)
        text = f"{VISA}, {MASTERCARD}, {AMEX}, again {VISA}"
        two = await contract.using(app).call(
            "POST",
            REDACT,
            status=200,
            json={"text": text[: text.index(", " + AMEX)], "mode": "tokenize"},
            headers=agency.auth,
        )
        assert two.json()["tokens_created"] == 2
        refused = await contract.using(app).call(
            "POST", REDACT, status=422, json={"text": text, "mode": "tokenize"}, headers=agency.auth
        )
        assert refused.field_errors == [("text", "too_many_cards")]
        assert "3 different card numbers" in refused.json()["detail"]
        assert len(stored_token_ids(agency, redis_server)) == 2  # only the first request's
        contract.assert_covered()

    @covers(("redactText", 500), codes={"internal_error"})
    async def test_a_failure_midway_answers_500_and_keeps_no_token(
        self,
        contract: Contract,
        client: TestClient[Any, Any],
        agency: AgencyKeys,
        redis_server: RedisServer,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """The third token fails to be written: 500, and the two written before it are deleted again."""
        vault = client.app[SERVICES].vault
        assert vault is not None
        real_tokenize = Vault.tokenize
        calls = 0

        async def third_fails(self: Vault, *args: Any, **kwargs: Any) -> Any:
            nonlocal calls
            calls += 1
            if calls == 3:
                raise RuntimeError("simulated defect qz7x")
            return await real_tokenize(self, *args, **kwargs)

        monkeypatch.setattr(Vault, "tokenize", third_fails)
        text = f"{VISA} / {MASTERCARD} / {DISCOVER}"
        failed = await contract.call(
            "POST", REDACT, status=500, json={"text": text, "mode": "tokenize"}, headers=agency.auth
        )
        assert b"qz7x" not in failed.data
        assert calls == 3
        assert stored_token_ids(agency, redis_server) == set()
        contract.assert_covered()

    @covers(("redactText", 503), codes={"store_unavailable"})
    async def test_stopped_redis_answers_store_unavailable(
        self, contract: Contract, aiohttp_client: Any, fresh_redis: RedisServer, master_keys: MasterKeys, tmp_path: Path
    ) -> None:
        """With Redis gone the redaction is refused with 503 store_unavailable and Retry-After."""
        app = await app_with(aiohttp_client, fresh_redis.url, tmp_path, master_keys)
        agency = await create_agency(app)
        fresh_redis.kill()
        try:
            down = await contract.using(app).call(
                "POST", REDACT, status=503, json={"text": MESSAGE}, headers=agency.auth
            )
            assert down.headers["Retry-After"] == "1"
        finally:
            fresh_redis.restart_same_port()
        contract.assert_covered()
