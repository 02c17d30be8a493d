"""A Redis that refuses writes, or one the service cannot use: clear 503s, a failing /readyz with the reason,
a clear message from `cardvault serve` and `cardvault health --ready`, nothing accepted silently.

Out of memory (maxmemory reached with noeviction), a read-only replica (the
service pointed at one, or its master demoted under it), a wrong password.
The mis-configured Sentinel URL is in test_sentinel.py, beside its topology.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.conftest import LeakSources, create_agency
from tests.faults.conftest import AppFactory, Client
from tests.support.cards import CVC, VISA
from tests.support.keys import agency_data_keys
from tests.support.redis_server import RedisServer
from tests.support.redis_topologies import ReplicatedRedis
from tests.support.serve import ServeFactory, run_cli

pytestmark = pytest.mark.slow

CARD = {"card": {"number": VISA, "exp_month": 12, "exp_year": 2031, "cvc": CVC}}
PASSWORD = "correct-horse"


async def refused(client: Client, agency: Any) -> None:
    """POST /v1/tokens is 503 store_unavailable problem+json with Retry-After."""
    resp = await client.post("/v1/tokens", json=CARD, headers=agency.auth)
    text = await resp.text()
    assert resp.status == 503, text
    assert resp.content_type == "application/problem+json"
    assert json.loads(text)["code"] == "store_unavailable"
    assert resp.headers["Retry-After"]


async def not_ready(client: Client) -> str:
    resp = await client.get("/readyz")
    body = await resp.json()
    assert resp.status == 503, body
    assert body["code"] == "not_ready"
    detail: str = body["detail"]
    return detail


def tokens_in(server: RedisServer, agency_id: str) -> int:
    return len(agency_data_keys(server.client(), agency_id, "tok"))


@pytest.fixture
def protected_redis(fresh_redis: RedisServer) -> Iterator[RedisServer]:
    """fresh_redis with requirepass; the password comes off again for the leak scan."""
    fresh_redis.client().config_set("requirepass", PASSWORD)
    yield fresh_redis
    redis.Redis(port=fresh_redis.port, password=PASSWORD).config_set("requirepass", "")


class TestOutOfMemory:
    async def test_writes_are_refused_with_503_reads_go_on_and_it_recovers(
        self, app_for: AppFactory, fresh_redis: RedisServer
    ) -> None:
        """maxmemory reached with noeviction: 503 (not a 500), nothing stored, /readyz says out of memory."""
        client = await app_for(fresh_redis.url)
        agency = await create_agency(client)
        kept = await (await client.post("/v1/tokens", json=CARD, headers=agency.auth)).json()
        admin = fresh_redis.client()
        admin.config_set("maxmemory-policy", "noeviction")
        admin.config_set("maxmemory", "1")
        try:
            await refused(client, agency)
            assert tokens_in(fresh_redis, agency.id) == 1
            assert (await client.get(f"/v1/tokens/{kept['id']}", headers=agency.auth)).status == 200
            detail = await not_ready(client)
            assert detail.startswith("durability: "), detail
            assert "out of memory" in detail
        finally:
            admin.config_set("maxmemory", "0")
        assert (await client.get("/readyz")).status == 200
        assert (await client.post("/v1/tokens", json=CARD, headers=agency.auth)).status == 201


class TestReadOnlyReplica:
    async def test_pointed_at_a_replica_the_service_never_becomes_ready(
        self, app_for: AppFactory, replicated: ReplicatedRedis
    ) -> None:
        """redis.url names a replica: /readyz names the read-only replica, the API answers 503."""
        client = await app_for(replicated.replicas[0].url)
        detail = await not_ready(client)
        assert "read-only replica" in detail, detail
        resp = await client.post("/v1/tokens", json=CARD, headers={"Authorization": "Bearer sk_" + "x" * 43})
        assert resp.status == 503

    async def test_a_master_demoted_under_the_service_refuses_writes_with_503(
        self, app_for: AppFactory, replicated: ReplicatedRedis, fresh_redis: RedisServer
    ) -> None:
        """The master turned replica (REPLICAOF) while serving: 503 instead of a 500, /readyz names it."""
        client = await app_for(replicated.url)
        agency = await create_agency(client)
        master = replicated.master.client()
        master.replicaof("127.0.0.1", fresh_redis.port)
        try:
            await refused(client, agency)
            detail = await not_ready(client)
            assert "read-only replica" in detail, detail
        finally:
            master.replicaof("NO", "ONE")


class TestWrongPassword:
    async def test_the_reason_reaches_readyz_and_requests_answer_503(
        self, app_for: AppFactory, protected_redis: RedisServer
    ) -> None:
        """A wrong password: /readyz says the server refused the password; no request is accepted."""
        url = f"redis://:not-{PASSWORD}@127.0.0.1:{protected_redis.port}/0"
        client = await app_for(url)
        detail = await not_ready(client)
        assert "password" in detail, detail
        assert PASSWORD not in detail
        resp = await client.post("/v1/tokens", json=CARD, headers={"Authorization": "Bearer sk_" + "x" * 43})
        assert resp.status == 503

    def test_serve_says_why_and_health_ready_repeats_it(
        self, protected_redis: RedisServer, tmp_path: Path, leak_sources: LeakSources
    ) -> None:
        """`cardvault serve` logs the refused password at start; `cardvault health --ready` prints the reason."""
        url = f"redis://:not-{PASSWORD}@127.0.0.1:{protected_redis.port}/0"
        with ServeFactory(tmp_path, leak_sources) as serve:
            process = serve(env={"CARDVAULT_REDIS_URL": url}).start()
            start_event = "redis unavailable at start; will keep trying"
            records = [r for r in process.log_records() if r.get("event") == start_event]
            assert records, process.describe()
            assert "password" in records[0]["reason"]
            env = {"CARDVAULT_REDIS_URL": url, "CARDVAULT_SERVER__PORT": str(process.port)}
            ready = run_cli("health", "--ready", "--data-dir", process.data_dir, env=env, cwd=tmp_path)
            line = ready.assert_one_error("readyz answered 503", "password")
            assert PASSWORD not in line
            run_cli("health", "--data-dir", process.data_dir, env=env, cwd=tmp_path).assert_ok()
            process.stop()
        assert PASSWORD not in process.stderr
