"""The durability contract over HTTP: ``redis.durability: replicas`` on a real master with a real replica.

A 2xx for a token, a charge or a refund comes back only once the replica holds
it; with the replica stopped the same requests answer 503 (problem+json,
Retry-After) after about ``redis.wait_timeout_ms``, /readyz turns 503 naming
durability, reads keep working, and everything recovers by itself.  A charge
that could not be confirmed never reached the processor and is undone, so its
retry with the same Idempotency-Key charges exactly once.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from aiohttp import ClientResponse

from service.adapters.charges_store import charge_key
from service.adapters.redis_base import token_key
from service.charges import charge_id_for
from tests.conftest import create_agency
from tests.faults.conftest import BOUND, AppFactory, Client
from tests.support.cards import CVC, VISA
from tests.support.redis_topologies import ReplicatedRedis, freeze, resume, wait_for

pytestmark = pytest.mark.slow

WAIT_MS = 300
CARD = {"card": {"number": VISA, "exp_month": 12, "exp_year": 2031, "cvc": CVC}}


async def replicated_app(app_for: AppFactory, topology: ReplicatedRedis) -> Client:
    return await app_for(topology.url, redis__durability="replicas", redis__replicas=1, redis__wait_timeout_ms=WAIT_MS)


async def store_unavailable(resp: ClientResponse) -> dict[str, Any]:
    text = await resp.text()
    assert resp.status == 503, text
    assert resp.content_type == "application/problem+json"
    assert int(resp.headers["Retry-After"]) >= 1
    body: dict[str, Any] = json.loads(text)
    assert body["code"] == "store_unavailable"
    return body


async def until_ready(client: Client) -> None:
    deadline = time.monotonic() + BOUND
    while time.monotonic() < deadline:
        if (await client.get("/readyz")).status == 200:
            return
        await client.app.loop.run_in_executor(None, time.sleep, 0.05)
    raise AssertionError("the app did not turn ready again")


class TestConfirmedOnTheReplica:
    async def test_token_charge_and_refund_are_on_the_replica_when_answered(
        self, app_for: AppFactory, replicated: ReplicatedRedis
    ) -> None:
        """Right after each 2xx, the replica already holds the token, the charge and the refund."""
        client = await replicated_app(app_for, replicated)
        agency = await create_agency(client)
        replica = replicated.replicas[0].client()
        token = await (await client.post("/v1/tokens", json=CARD, headers=agency.auth)).json()
        assert replica.exists(token_key(agency.id, token["id"])) == 1
        created = await client.post("/v1/charges", json={"token": token["id"], "amount": 1200}, headers=agency.auth)
        assert created.status == 201, await created.text()
        charge = await created.json()
        stored = json.loads(replica.get(charge_key(agency.id, charge["id"])) or b"{}")
        assert stored["status"] == "succeeded"
        refunded = await client.post(f"/v1/charges/{charge['id']}/refunds", json={"amount": 200}, headers=agency.auth)
        assert refunded.status == 201, await refunded.text()
        stored = json.loads(replica.get(charge_key(agency.id, charge["id"])) or b"{}")
        assert [r["amount"] for r in stored["refunds"] if r["status"] == "succeeded"] == [200]

    async def test_readyz_reports_the_contract_and_the_replication(
        self, app_for: AppFactory, replicated: ReplicatedRedis
    ) -> None:
        """/readyz 200 shows the contract, how writes are confirmed and the replicas online; never an address."""
        client = await replicated_app(app_for, replicated)
        body = await (await client.get("/readyz")).json()
        assert body["checks"] == {"keys": "ok", "redis": "ok", "durability": "ok"}
        report = body["durability"]
        assert report["contract"] == "replicas"
        assert report["replicas_required"] == 1
        assert report["replicas_online"] == 1
        assert report["confirmed_by"] == f"WAIT 1 {WAIT_MS}"
        assert report["role"] == "master"
        assert report["topology"] == "standalone"
        assert "127.0.0.1" not in json.dumps(body)
        assert str(replicated.master.port) not in json.dumps(body)


class TestReplicaLost:
    async def test_writes_answer_503_quickly_reads_go_on_and_it_recovers(
        self, app_for: AppFactory, replicated: ReplicatedRedis
    ) -> None:
        """Replica frozen: POST /v1/tokens is 503 within a second or so, GET works, /readyz names durability."""
        client = await replicated_app(app_for, replicated)
        agency = await create_agency(client)
        before = await (await client.post("/v1/tokens", json=CARD, headers=agency.auth)).json()
        freeze(replicated.replicas[0])
        try:
            started = time.monotonic()
            await store_unavailable(await client.post("/v1/tokens", json=CARD, headers=agency.auth))
            assert time.monotonic() - started < 3
            fetched = await client.get(f"/v1/tokens/{before['id']}", headers=agency.auth)
            assert fetched.status == 200
            ready = await client.get("/readyz")
            assert ready.status == 503
            detail = (await ready.json())["detail"]
            assert detail.startswith("durability: "), detail
            assert "replica" in detail
        finally:
            resume(replicated.replicas[0])
        await until_ready(client)
        assert (await client.post("/v1/tokens", json=CARD, headers=agency.auth)).status == 201

    async def test_readyz_names_too_few_replicas_when_one_is_gone(
        self, app_for: AppFactory, replicated: ReplicatedRedis
    ) -> None:
        """With the replica stopped for good, /readyz says how many are required and how many are online."""
        client = await replicated_app(app_for, replicated)
        replicated.replicas[0].stop()
        wait_for(lambda: replicated.online_replicas() == 0, BOUND, "the master to notice its replica left")
        ready = await client.get("/readyz")
        assert ready.status == 503
        assert (await ready.json())["detail"] == (
            "durability: redis.replicas: 1 replica(s) must confirm each write, 0 online"
        )
        replicated.replicas[0].restart_same_port()

    async def test_an_unconfirmed_charge_is_undone_and_its_retry_charges_once(
        self, app_for: AppFactory, replicated: ReplicatedRedis
    ) -> None:
        """503 leaves no charge behind (the processor was not called); the same Idempotency-Key then charges."""
        client = await replicated_app(app_for, replicated)
        agency = await create_agency(client)
        token = await (await client.post("/v1/tokens", json=CARD, headers=agency.auth)).json()
        headers = {**agency.auth, "Idempotency-Key": "order-77"}
        body = {"token": token["id"], "amount": 1500, "order_reference": "ORDER-77"}
        stored_key = charge_key(agency.id, charge_id_for(agency.id, "order-77"))
        freeze(replicated.replicas[0])
        try:
            await store_unavailable(await client.post("/v1/charges", json=body, headers=headers))
            assert replicated.master.client().get(stored_key) is None
        finally:
            resume(replicated.replicas[0])
        replicated.wait_replicas_online(1)
        retried = await client.post("/v1/charges", json=body, headers=headers)
        assert retried.status == 201, await retried.text()
        charge = await retried.json()
        assert charge["status"] == "succeeded"
        replayed = await client.post("/v1/charges", json=body, headers=headers)
        assert replayed.headers["Idempotent-Replayed"] == "true"
        assert (await replayed.json())["id"] == charge["id"]
        listed = await client.get("/v1/charges", params={"order_reference": "ORDER-77"}, headers=agency.auth)
        assert [c["id"] for c in (await listed.json())["data"]] == [charge["id"]]
