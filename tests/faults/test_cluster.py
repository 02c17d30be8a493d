"""The service on a Redis Cluster of three masters: spread, resharding under load, readiness, refusals, operations.

The whole HTTP suite also runs against a cluster (``CARDVAULT_TEST_REDIS=cluster``,
a pass of its own in ``scripts/test``); this module covers what only a
cluster has: one agency's data spread over the masters, a slot moved while
tokens and charges are written (nothing acknowledged lost), /readyz asking
every master, and the operator commands (rotation, rewrap, shredding, audit
verify) that scan every master.  ``redis.durability: replicas`` on a cluster
with replicas is ``test_cluster_replicas``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.cluster

from service import rekey
from service.adapters.cluster import parse_cluster_url
from service.adapters.forward_store import ForwardStore
from service.adapters.redis_base import agency_data_pattern, cvc_key, data_tag, shard_of, token_key
from service.adapters.redis_client import make_client
from service.errors import ConfigError, StoreRefused
from service.settings import RedisSettings
from tests.cli import test_keys_cli as keys_cli
from tests.conftest import LeakSources, create_agency
from tests.faults.conftest import BOUND, AppFactory, Client
from tests.faults.load import LoadResult, finish_load, run_load
from tests.support.cards import CVC, VISA
from tests.support.generated_cards import distinct_cards
from tests.support.keys import agency_data_keys
from tests.support.redis_server import RedisServer
from tests.support.redis_topologies import RedisClusterTopology
from tests.support.serve import run_cli

pytestmark = pytest.mark.slow

CARD = {"card": {"number": VISA, "exp_month": 12, "exp_year": 2031, "cvc": CVC}}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, leak_sources: LeakSources) -> Iterator[RedisClusterTopology]:
    topology = RedisClusterTopology(tmp_path_factory.mktemp("cluster")).start()
    leak_sources.redis_servers.extend(topology.nodes)
    yield topology
    topology.stop()


async def until_ready(client: Client) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + BOUND
    while True:
        answer = await client.get("/readyz")
        if answer.status == 200 or asyncio.get_running_loop().time() > deadline:
            body: dict[str, Any] = await answer.json()
            assert answer.status == 200, body
            return body
        await asyncio.sleep(0.1)


class TestSpreadAndReadiness:
    async def test_one_agency_is_spread_over_the_masters_and_readyz_asks_each(
        self, app_for: AppFactory, cluster: RedisClusterTopology
    ) -> None:
        """300 cards of one agency land on more than one master; /readyz reports three fsyncing masters.

        (A card's tokens share its shard, so the spread is over cards: 300 different ones here.)
        """
        client = await app_for(cluster.url)
        ready = await until_ready(client)
        assert ready["durability"]["topology"] == "cluster"
        assert ready["durability"]["masters"] == 3
        assert ready["durability"]["appendfsync"] == "always"
        assert ready["durability"]["confirmed_by"] == "appendfsync always on every master"
        agency = await create_agency(client)
        for number in distinct_cards(300):
            card = {"card": {**CARD["card"], "number": number}}
            assert (await client.post("/v1/tokens", json=card, headers=agency.auth)).status == 201
        per_master = cluster.keys_per_node(agency_data_pattern(agency.id)[:-1] + "tok:*")
        print(f"\n300 tokens of one agency per master: {per_master}")
        assert sum(per_master) == 300
        assert sum(1 for count in per_master if count) >= 2, per_master
        assert max(per_master) <= 0.75 * 300, per_master

    async def test_a_master_without_fsync_always_fails_readyz(
        self, app_for: AppFactory, cluster: RedisClusterTopology
    ) -> None:
        """One master of three switched to appendfsync everysec: not ready, and the reason says why."""
        client = await app_for(cluster.url)
        await until_ready(client)
        node = cluster.nodes[1].client()
        node.config_set("appendfsync", "everysec")
        try:
            answer = await client.get("/readyz")
            body = await answer.json()
            assert answer.status == 503, body
            assert "appendfsync=everysec" in body["detail"], body
        finally:
            node.config_set("appendfsync", "always")
        await until_ready(client)

    async def test_a_cluster_url_to_a_lone_server_is_named(self, app_for: AppFactory, fresh_redis: RedisServer) -> None:
        """redis+cluster:// pointed at a server not in cluster mode: /readyz and the API say so, 503, no 500."""
        client = await app_for(f"redis+cluster://127.0.0.1:{fresh_redis.port}")
        ready = await client.get("/readyz")
        assert ready.status == 503
        assert "not in cluster mode" in (await ready.json())["detail"]
        answer = await client.post("/v1/tokens", json=CARD, headers={"Authorization": "Bearer sk_" + "x" * 43})
        assert answer.status == 503

    async def test_a_redis_url_to_one_cluster_node_is_named(
        self, app_for: AppFactory, cluster: RedisClusterTopology
    ) -> None:
        """redis:// pointed at one node of a cluster: not ready, and the reason asks for a redis+cluster:// URL."""
        client = await app_for(cluster.nodes[0].url)
        ready = await client.get("/readyz")
        assert ready.status == 503
        assert "redis+cluster:// URL" in (await ready.json())["detail"]

    def test_cluster_urls_are_read_strictly(self) -> None:
        target = parse_cluster_url("rediss+cluster://app:s%40cret@10.0.0.1:7000,[::1],redis-2")
        assert target.nodes == (("10.0.0.1", 7000), ("::1", 6379), ("redis-2", 6379))
        assert (target.tls, target.username, target.password) == (True, "app", "s@cret")
        assert "s@cret" not in repr(target)
        for bad in ("redis+cluster://", "redis+cluster://h:0", "redis+cluster://h:1/2", "redis+cluster://[::1"):
            with pytest.raises(ConfigError):
                parse_cluster_url(bad)


class TestReshardingUnderLoad:
    async def test_moving_a_slot_of_the_agency_loses_nothing_acknowledged(
        self, app_for: AppFactory, cluster: RedisClusterTopology
    ) -> None:
        """While tokens and charges are written, the slots of four of the agency's shards move to another master:
        every request answers 2xx or a quick 503 (none hangs), and everything acknowledged reads back."""
        client = await app_for(cluster.url, redis__socket_timeout=2)
        await until_ready(client)
        agency = await create_agency(client)
        stop = asyncio.Event()
        result = LoadResult()
        load = asyncio.create_task(run_load(client, agency.auth, stop, result, workers=4, run="reshard"))
        await asyncio.sleep(1.0)
        result.phase = "fault"
        moved = 0
        for shard in range(4):
            slot = redis.cluster.key_slot(data_tag(agency.id, shard).encode())
            owner = cluster.owner(slot)
            target = next(node for node in cluster.nodes if node is not owner)
            moved += await asyncio.to_thread(cluster.move_slot, slot, target)
            await asyncio.sleep(0.2)
        result.phase = "after"
        await asyncio.sleep(1.0)
        lost, retry_problems = await finish_load(client, agency.auth, stop, load, result)
        print(f"\n[reshard] {moved} keys moved; {result.summary()}; lost {len(lost)}: {lost[:5]}")
        assert moved > 0
        assert result.timeouts == 0, result.summary()
        assert result.wrong == [], result.wrong[:5]
        assert lost == []
        assert retry_problems == [], retry_problems[:5]
        assert result.acknowledged["fault"] > 0, result.summary()
        assert result.acknowledged["after"] > 0, result.summary()

    async def test_a_charge_caught_in_a_half_moved_slot_is_a_quick_503_and_its_retry_charges_once(
        self, app_for: AppFactory, cluster: RedisClusterTopology
    ) -> None:
        """The token's record has moved to the new master, its CVC not yet: every try of the charge's take is
        redirected or told TRYAGAIN until redis-py gives up ("TTL exhausted"). That is a quick 503 naming the
        moving slot, never a 500; once the slot has moved, the retry with the same key charges, and only once."""
        client = await app_for(cluster.url, redis__socket_timeout=2)
        await until_ready(client)
        agency = await create_agency(client)
        tokenized = await client.post("/v1/tokens", json=CARD, headers=agency.auth)
        token = (await tokenized.json())["id"]
        slot = redis.cluster.key_slot(token_key(agency.id, token).encode())
        assert redis.cluster.key_slot(cvc_key(agency.id, token).encode()) == slot
        target = next(node for node in cluster.nodes if node is not cluster.owner(slot))
        source = await asyncio.to_thread(cluster.begin_moving_slot, slot, target)
        try:
            await asyncio.to_thread(cluster.migrate_keys, source, target, [token_key(agency.id, token)])
            charge = {"token": token, "amount": 1250, "order_reference": "half-moved"}
            headers = {**agency.auth, "Idempotency-Key": "half-moved-1"}
            loop = asyncio.get_running_loop()
            started = loop.time()
            refused = await client.post("/v1/charges", json=charge, headers=headers)
            problem = await refused.json()
            elapsed = loop.time() - started
            print(f"\n[half-moved slot] charge answered {refused.status} in {elapsed:.2f} s")
            assert refused.status == 503, problem
            assert elapsed < BOUND
            assert problem["code"] == "store_unavailable", problem
            ready = await (await client.get("/readyz")).json()
            assert ready["status"] == "ready", ready  # a slot in motion is no outage
        finally:
            await asyncio.to_thread(cluster.finish_moving_slot, slot, source, target)
        retried = await client.post("/v1/charges", json=charge, headers=headers)
        assert retried.status == 201, await retried.text()
        charged = await retried.json()
        replayed = await client.post("/v1/charges", json=charge, headers=headers)
        assert (replayed.status, (await replayed.json())["id"]) == (201, charged["id"])
        listed = await client.get("/v1/charges", params={"order_reference": "half-moved"}, headers=agency.auth)
        succeeded = [c for c in (await listed.json())["data"] if c["status"] == "succeeded"]
        assert [c["id"] for c in succeeded] == [charged["id"]]


class TestForwardAcrossShards:
    async def test_taking_cvcs_over_several_shards_is_all_or_nothing(self, cluster: RedisClusterTopology) -> None:
        """Three tokens in three shards, one CVC gone: nothing is taken, the other CVCs keep their TTL."""
        client = make_client(cluster.url, RedisSettings())
        try:
            store = ForwardStore(client)
            ids: list[str] = []
            candidate = 0
            while len({shard_of(i) for i in ids}) < 3:
                token_id = f"tok_forward_{candidate}"
                candidate += 1
                if shard_of(token_id) not in {shard_of(i) for i in ids}:
                    ids.append(token_id)
            for token_id in ids:
                await client.set(cvc_key("agy_forward", token_id), b"sealed", px=60_000)
            await client.delete(cvc_key("agy_forward", ids[2]))
            taken = await store.take_cvcs("agy_forward", ids)
            assert taken.missing == ids[2]
            assert taken.blobs == {}
            for token_id in ids[:2]:
                assert await client.get(cvc_key("agy_forward", token_id)) == b"sealed"
                assert 0 < await client.pttl(cvc_key("agy_forward", token_id)) <= 60_000
            await client.set(cvc_key("agy_forward", ids[2]), b"sealed", px=60_000)
            taken = await store.take_cvcs("agy_forward", ids)
            assert taken.missing is None
            assert set(taken.blobs) == set(ids)
            assert [await client.exists(cvc_key("agy_forward", t)) for t in ids] == [0, 0, 0]
        finally:
            await client.aclose()

    async def test_a_shard_refused_while_its_slot_moves_puts_back_what_earlier_shards_gave(
        self, cluster: RedisClusterTopology
    ) -> None:
        """One CVC in shard A, two in shard B whose slot is half moved (one CVC on each master): A's CVC is
        taken, B's take is refused (503), and A's CVC is back with its time left; after the move all are taken."""
        client = make_client(cluster.url, RedisSettings())
        agency = "agy_forward_moving"
        try:
            store = ForwardStore(client)
            candidates = [f"tok_moving_{n}" for n in range(1000)]
            first = candidates[0]
            second = next(t for t in candidates if shard_of(t) != shard_of(first))
            third = next(t for t in candidates if t != second and shard_of(t) == shard_of(second))
            ids = [first, second, third]
            for token_id in ids:
                await client.set(cvc_key(agency, token_id), b"sealed", px=60_000)
            slot = redis.cluster.key_slot(cvc_key(agency, second).encode())
            target = next(node for node in cluster.nodes if node is not cluster.owner(slot))
            source = await asyncio.to_thread(cluster.begin_moving_slot, slot, target)
            try:
                await asyncio.to_thread(cluster.migrate_keys, source, target, [cvc_key(agency, second)])
                with pytest.raises(StoreRefused):
                    await store.take_cvcs(agency, ids)
            finally:
                await asyncio.to_thread(cluster.finish_moving_slot, slot, source, target)
            assert await client.get(cvc_key(agency, first)) == b"sealed"
            assert 0 < await client.pttl(cvc_key(agency, first)) <= 60_000
            taken = await store.take_cvcs(agency, ids)
            assert (taken.missing, set(taken.blobs)) == (None, set(ids))
        finally:
            await client.aclose()


class TestOperatorCommandsOnACluster:
    async def test_rotate_interrupted_rewrap_resume_audit_verify_and_shred(
        self, tmp_path: Path, leak_sources: LeakSources
    ) -> None:
        """The commands that scan an agency reach its data on every master, and a rewrap cut short resumes
        from its saved position (master and cursor) and finishes.  (A cluster of its own: its master key.)"""
        cluster = RedisClusterTopology(tmp_path / "cluster").start()
        leak_sources.redis_servers.extend(cluster.nodes)
        try:
            await self.operations(cluster, tmp_path)
        finally:
            cluster.stop()

    @staticmethod
    async def operations(cluster: RedisClusterTopology, tmp_path: Path) -> None:
        env = keys_cli.TestRewrapResume.env(tmp_path, cluster.url)
        slug = "cluster-operations"
        run_cli("agency", "create", slug, "--origin", "https://shop.example.gov", env=env, cwd=tmp_path).assert_ok()
        agency_id = await keys_cli.TestRewrapResume.write_tokens(env, slug, 600, distinct_cards(600))
        nodes = cluster.client()
        assert sum(1 for count in cluster.keys_per_node(agency_data_pattern(agency_id)) if count) >= 2

        run_cli("keys", "rotate", "--agency", slug, env=env, cwd=tmp_path).assert_ok()
        await keys_cli.TestRewrapResume.interrupted_rewrap(env, slug, batches=1)  # at most one master done
        saved = nodes.get(rekey.cursor_key(agency_id))
        assert saved is not None
        assert not saved.endswith(b":"), saved
        assert set(versions(nodes, agency_id).values()) == {1, 2}, "the cut should leave a mix of versions"
        run_cli("keys", "rewrap", "--agency", slug, env=env, cwd=tmp_path).assert_ok()
        assert set(versions(nodes, agency_id).values()) == {2}
        assert nodes.get(rekey.cursor_key(agency_id)) is None

        run_cli("audit", "verify", env=env, cwd=tmp_path).assert_ok()
        run_cli("agency", "shred", slug, "--yes", env=env, cwd=tmp_path).assert_ok()
        assert sum(cluster.keys_per_node(agency_data_pattern(agency_id))) == 0
        nodes.close()


def versions(client: Any, agency_id: str) -> dict[bytes, int]:
    """Every token and CVC ciphertext of the agency on the cluster, with the data-key version its header names."""
    found: dict[bytes, int] = {}
    for kind in ("tok", "cvc"):
        for name in agency_data_keys(client, agency_id, kind):
            blob = client.get(name)
            if blob is not None:
                found[name] = keys_cli.header_version(blob)
    return found
