"""``redis.durability: replicas`` on a Redis Cluster: each write is confirmed by its own master's replica.

Three masters, one replica each (``RedisClusterTopology(replicas=1)``), real
servers started here.  A 2xx for a token or a charge comes back only once the
replica of the master that took it holds it (read on the replica itself, with
READONLY).  With one master's replica gone or frozen, the writes that land on
that master answer 503 after about ``redis.wait_timeout_ms`` (never a hang)
while the other masters' writes go on, /readyz names that master, and nothing
answered 2xx is missing afterwards; under load too, and while a slot moves
to another master (a write redirected with ``MOVED`` or ``ASK`` is confirmed
on the master it lands on).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.cluster import key_slot

from service.adapters.charges_store import charge_key
from service.adapters.redis_base import token_key
from tests.conftest import AgencyKeys, LeakSources, create_agency
from tests.faults.conftest import AppFactory, Client
from tests.faults.load import LoadResult, finish_load, run_load, verify
from tests.faults.test_cluster import until_ready
from tests.support.cards import CVC, VISA
from tests.support.generated_cards import FIRST_SERIAL, distinct_cards
from tests.support.redis_server import RedisServer, valkey_binary
from tests.support.redis_topologies import RedisClusterTopology, freeze, resume, wait_for

pytestmark = pytest.mark.slow

WAIT_MS = 300
#: A write refused for want of a replica answers within the WAIT plus the request's own work.
REFUSED_WITHIN = 2.0


def card(number: str = VISA) -> dict[str, Any]:
    return {"card": {"number": number, "exp_month": 12, "exp_year": 2031, "cvc": CVC}}


@pytest.fixture
def cluster(tmp_path: Path, leak_sources: LeakSources) -> Iterator[RedisClusterTopology]:
    topology = RedisClusterTopology(tmp_path / "cluster", replicas=1).start()
    leak_sources.redis_servers.extend(topology.servers())
    yield topology
    topology.stop()


async def replicas_app(app_for: AppFactory, cluster: RedisClusterTopology, durability: str = "replicas") -> Client:
    return await app_for(
        cluster.url,
        redis__durability=durability,
        redis__replicas=1,
        redis__wait_timeout_ms=WAIT_MS,
        redis__socket_timeout=2,
    )


def master_of(cluster: RedisClusterTopology, key: str) -> RedisServer:
    return cluster.owner(key_slot(key.encode()))


def on_its_replica(cluster: RedisClusterTopology, key: str) -> bytes | None:
    replica = cluster.replicas_of(master_of(cluster, key))[0]
    value: bytes | None = cluster.replica_client(replica).get(key)
    return value


async def tokenize(client: Client, agency: AgencyKeys, number: str) -> tuple[int, dict[str, Any], float]:
    started = time.monotonic()
    answer = await client.post("/v1/tokens", json=card(number), headers=agency.auth)
    body: dict[str, Any] = await answer.json()
    return answer.status, body, time.monotonic() - started


async def ready_with_a_token(
    app_for: AppFactory, cluster: RedisClusterTopology
) -> tuple[Client, AgencyKeys, dict[str, Any]]:
    """The app on the cluster once /readyz passes, an agency, and its first token (of VISA), answered 201."""
    client = await replicas_app(app_for, cluster)
    await until_ready(client)
    agency = await create_agency(client)
    status, first, _ = await tokenize(client, agency, VISA)
    assert status == 201, first
    return client, agency, first


class TestConfirmedOnEachReplica:
    async def test_tokens_and_charges_are_on_their_masters_replica_when_answered(
        self, app_for: AppFactory, cluster: RedisClusterTopology
    ) -> None:
        """Twelve cards over the masters, a charge and a refund: each on its master's replica at the 2xx."""
        client = await replicas_app(app_for, cluster)
        ready = await until_ready(client)
        report = ready["durability"]
        assert report["topology"] == "cluster"
        assert report["confirmed_by"] == f"WAIT 1 {WAIT_MS} on every master"
        assert (report["masters"], report["replicas_required"], report["replicas_online"]) == (3, 1, 1)
        assert "127.0.0.1" not in json.dumps(ready)
        agency = await create_agency(client)
        masters = set()
        for number in distinct_cards(12):
            status, token, _ = await tokenize(client, agency, number)
            assert status == 201, token
            key = token_key(agency.id, token["id"])
            assert on_its_replica(cluster, key) is not None
            masters.add(master_of(cluster, key).port)
        assert len(masters) >= 2, "the cards should land on more than one master"
        charged = await client.post("/v1/charges", json={"token": token["id"], "amount": 1200}, headers=agency.auth)
        assert charged.status == 201, await charged.text()
        charge = await charged.json()
        stored = json.loads(on_its_replica(cluster, charge_key(agency.id, charge["id"])) or b"{}")
        assert stored["status"] == "succeeded"
        refunded = await client.post(f"/v1/charges/{charge['id']}/refunds", json={"amount": 200}, headers=agency.auth)
        assert refunded.status == 201, await refunded.text()
        stored = json.loads(on_its_replica(cluster, charge_key(agency.id, charge["id"])) or b"{}")
        assert [r["amount"] for r in stored["refunds"] if r["status"] == "succeeded"] == [200]


class TestAReplicaLost:
    async def test_its_masters_writes_answer_503_the_others_go_on_and_readyz_names_it(
        self, app_for: AppFactory, cluster: RedisClusterTopology
    ) -> None:
        """Replica of one master killed: writes landing there 503 within ~WAIT (a charge too), elsewhere 201;
        /readyz names the master (host:port); the tokens acknowledged read back; once the replica is back it
        recovers, and the 503'd charge retried with its Idempotency-Key charges once."""
        client, agency, first = await ready_with_a_token(app_for, cluster)
        victim = master_of(cluster, token_key(agency.id, first["id"]))
        replica = cluster.replicas_of(victim)[0]
        replica.kill()
        wait_for(lambda: cluster.online_replicas(victim) == 0, 10, "the master to notice its replica died")

        order = {"token": first["id"], "amount": 1500, "order_reference": "ORDER-CLUSTER-1"}
        keyed = {**agency.auth, "Idempotency-Key": "order-cluster-1"}
        started = time.monotonic()
        charged = await client.post("/v1/charges", json=order, headers=keyed)
        assert charged.status == 503, await charged.text()  # the charge lives in its token's shard: that master
        assert time.monotonic() - started < REFUSED_WITHIN

        acknowledged: list[dict[str, Any]] = [first]
        refused = 0
        for number in distinct_cards(30, start=FIRST_SERIAL + 1_000):
            status, token, took = await tokenize(client, agency, number)
            assert took < REFUSED_WITHIN, (status, took)
            if status == 201:
                acknowledged.append(token)
                assert master_of(cluster, token_key(agency.id, token["id"])) is not victim, "answered unconfirmed"
            else:
                assert (status, token["code"]) == (503, "store_unavailable"), token
                refused += 1
        assert refused > 0
        assert len(acknowledged) > 1
        print(
            f"\nreplica of 127.0.0.1:{victim.port} gone: {refused} of 30 tokens refused, {len(acknowledged) - 1} kept"
        )

        ready = await client.get("/readyz")
        detail = (await ready.json())["detail"]
        assert ready.status == 503, detail
        assert detail.startswith("durability: redis.replicas: "), detail
        assert f"master 127.0.0.1:{victim.port} has 0 online" in detail, detail
        assert (await client.get(f"/v1/tokens/{first['id']}", headers=agency.auth)).status == 200  # reads go on

        replica.restart_same_port()
        cluster.wait_replicas_online(victim)
        await until_ready(client)
        status, again, _ = await tokenize(client, agency, VISA)
        assert status == 201, again
        retried = await client.post("/v1/charges", json=order, headers=keyed)
        assert retried.status == 201, await retried.text()
        charge = await retried.json()
        replayed = await client.post("/v1/charges", json=order, headers=keyed)
        assert replayed.headers["Idempotent-Replayed"] == "true"
        assert (await replayed.json())["id"] == charge["id"]
        listed = await client.get("/v1/charges", params={"order_reference": "ORDER-CLUSTER-1"}, headers=agency.auth)
        assert [c["id"] for c in (await listed.json())["data"]] == [charge["id"]]
        for token in acknowledged:
            fetched = await client.get(f"/v1/tokens/{token['id']}", headers=agency.auth)
            assert fetched.status == 200, token["id"]
            assert (await fetched.json())["card"] == token["card"]

    async def test_a_frozen_replica_is_found_by_the_probe_on_each_master(
        self, app_for: AppFactory, cluster: RedisClusterTopology
    ) -> None:
        """SIGSTOP: the master still counts the replica online, but its writes 503 and /readyz's probe write on
        that master names it."""
        client, agency, first = await ready_with_a_token(app_for, cluster)
        victim = master_of(cluster, token_key(agency.id, first["id"]))
        frozen = cluster.replicas_of(victim)[0]
        freeze(frozen)
        try:
            status, body, took = await tokenize(client, agency, VISA)  # the same card: the same shard and master
            assert (status, body["code"]) == (503, "store_unavailable"), body
            assert took < REFUSED_WITHIN, took
            ready = await client.get("/readyz")
            detail = (await ready.json())["detail"]
            assert ready.status == 503, detail
            assert detail.startswith("durability: "), detail
            assert f"(master 127.0.0.1:{victim.port})" in detail, detail
        finally:
            resume(frozen)
        await until_ready(client)
        assert (await tokenize(client, agency, VISA))[0] == 201

    async def test_under_load_nothing_acknowledged_is_lost(
        self, app_for: AppFactory, cluster: RedisClusterTopology
    ) -> None:
        """Four clients write tokens and charges; the replica of the master holding the card's shard dies and comes
        back: every request answers 2xx or a quick 503, everything acknowledged reads back, and each 503'd charge
        retried with its key charges once."""
        client, agency, first = await ready_with_a_token(app_for, cluster)  # VISA: the load's card, on that master
        victim = master_of(cluster, token_key(agency.id, first["id"]))
        replica = cluster.replicas_of(victim)[0]
        stop = asyncio.Event()
        result = LoadResult()
        load = asyncio.create_task(run_load(client, agency.auth, stop, result, workers=4, run="replica-lost"))
        await asyncio.sleep(1.0)
        result.phase = "fault"
        replica.kill()
        await asyncio.sleep(1.5)
        await asyncio.to_thread(replica.restart_same_port)
        await asyncio.to_thread(cluster.wait_replicas_online, victim)
        result.phase = "after"
        await asyncio.sleep(1.0)
        lost, retry_problems = await finish_load(client, agency.auth, stop, load, result)
        print(f"\n[replica lost] {result.summary()}; lost {len(lost)}: {lost[:5]}")
        assert result.timeouts == 0, result.summary()
        assert result.wrong == [], result.wrong[:5]
        assert result.statuses["token 503"] > 0, result.summary()
        assert lost == []
        assert retry_problems == [], retry_problems[:5]
        assert result.acknowledged["before"] > 0, result.summary()
        assert result.acknowledged["after"] > 0, result.summary()


class TestReshardingWithReplicas:
    async def test_a_slot_moved_under_load_is_confirmed_on_its_new_master(
        self, app_for: AppFactory, cluster: RedisClusterTopology
    ) -> None:
        """The slot of the load's card moves to another master while tokens and charges are written (ASK, then
        MOVED): no request hangs, nothing acknowledged is lost, and every acknowledged token is on the replica of
        the master that holds it now."""
        client, agency, first = await ready_with_a_token(app_for, cluster)
        slot = key_slot(token_key(agency.id, first["id"]).encode())
        target = next(node for node in cluster.nodes if node is not cluster.owner(slot))
        stop = asyncio.Event()
        result = LoadResult()
        load = asyncio.create_task(run_load(client, agency.auth, stop, result, workers=4, run="replica-reshard"))
        await asyncio.sleep(1.0)
        result.phase = "fault"
        moved = await asyncio.to_thread(cluster.move_slot, slot, target)
        result.phase = "after"
        await asyncio.sleep(1.0)
        stop.set()
        await load
        lost = await verify(client, agency.auth, result)
        print(f"\n[reshard with replicas] {moved} keys moved; {result.summary()}; lost {len(lost)}: {lost[:5]}")
        assert moved > 0
        assert result.timeouts == 0, result.summary()
        assert result.wrong == [], result.wrong[:5]
        assert lost == []
        assert result.acknowledged["after"] > 0, result.summary()
        assert cluster.owner(slot) is target
        replica = cluster.replica_client(cluster.replicas_of(target)[0])
        keys = [token_key(agency.id, token_id) for token_id in [first["id"], *result.tokens]]
        assert {key_slot(key.encode()) for key in keys} == {slot}
        missing = [key for key in keys if not replica.exists(key)]
        assert missing == [], missing[:5]


class TestWaitaofOnACluster:
    async def test_fsync_and_replicas_are_confirmed_with_waitaof_on_valkey(
        self, app_for: AppFactory, tmp_path: Path, leak_sources: LeakSources
    ) -> None:
        """A cluster of valkey-server 9.1 (WAITAOF): ``fsync+replicas`` confirms with WAITAOF and WAIT, and the
        token is on its master's replica at the 201."""
        cluster = RedisClusterTopology(tmp_path / "valkey-cluster", replicas=1, binary=valkey_binary())
        leak_sources.redis_servers.extend(cluster.servers())
        cluster.start()
        try:
            client = await replicas_app(app_for, cluster, durability="fsync+replicas")
            report = (await until_ready(client))["durability"]
            assert report["confirmed_by"] == f"WAITAOF 1 0 {WAIT_MS} + WAIT 1 {WAIT_MS} on every master"
            agency = await create_agency(client)
            status, token, _ = await tokenize(client, agency, VISA)
            assert status == 201, token
            assert on_its_replica(cluster, token_key(agency.id, token["id"])) is not None
        finally:
            cluster.stop()
