"""The service on Redis Sentinel: redis+sentinel:// URLs, failover followed under load, nothing acknowledged lost.

Real topologies from redis-server binaries (tests/support/redis_topologies.py):
a master, replicas, three Sentinels that fail over about two seconds after
the master dies.  Under a load of token and charge requests the master is
SIGKILLed; every request answers 2xx or a quick 503 problem (none hangs), the
service follows the promoted replica by itself, and everything acknowledged
is read back.  With ``redis.durability: replicas`` (one replica confirms each
write) nothing may be lost; with ``fsync`` alone (the master's disk, which a
failover leaves behind) the test reports how much was.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.adapters.redis_base import token_key
from tests.conftest import LeakSources, create_agency
from tests.faults.conftest import BOUND, AppFactory, Client
from tests.faults.load import LoadResult, finish_load, run_load
from tests.support.cards import CVC, VISA
from tests.support.redis_topologies import SentinelTopology
from tests.support.serve import run_cli

pytestmark = pytest.mark.slow

CARD = {"card": {"number": VISA, "exp_month": 12, "exp_year": 2031, "cvc": CVC}}
LOAD_WORKERS = 6


@pytest.fixture(scope="module")
def calm_sentinels(tmp_path_factory: pytest.TempPathFactory, leak_sources: LeakSources) -> Iterator[SentinelTopology]:
    """A Sentinel topology no test breaks (one master, one replica, three Sentinels)."""
    topology = SentinelTopology(tmp_path_factory.mktemp("calm-sentinel"), replicas=1).start()
    leak_sources.redis_servers.extend(topology.servers())
    yield topology
    topology.close()


async def until_ready(client: Client) -> None:
    deadline = time.monotonic() + BOUND
    while time.monotonic() < deadline:
        if (await client.get("/readyz")).status == 200:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"not ready after {BOUND:.0f}s: {await (await client.get('/readyz')).text()}")


class TestThroughSentinel:
    async def test_tokens_and_charges_work_and_readyz_says_sentinel(
        self, app_for: AppFactory, calm_sentinels: SentinelTopology
    ) -> None:
        """A redis+sentinel:// URL serves the API; the writes land on the master Sentinel names."""
        client = await app_for(calm_sentinels.sentinel_url(), redis__durability="fsync+replicas")
        agency = await create_agency(client)
        token = await (await client.post("/v1/tokens", json=CARD, headers=agency.auth)).json()
        charged = await client.post("/v1/charges", json={"token": token["id"], "amount": 700}, headers=agency.auth)
        assert charged.status == 201, await charged.text()
        master = calm_sentinels.current_master().client()
        assert master.exists(token_key(agency.id, token["id"])) == 1
        ready = await (await client.get("/readyz")).json()
        assert ready["durability"]["topology"] == "sentinel"
        assert ready["durability"]["confirmed_by"].startswith("appendfsync always + WAIT 1 ")

    async def test_a_wrong_service_name_is_named_at_readyz_and_by_the_cli(
        self, app_for: AppFactory, calm_sentinels: SentinelTopology, tmp_path: Path
    ) -> None:
        """No Sentinel knows the name: /readyz and `cardvault agency list` say so; the API answers 503."""
        url = calm_sentinels.sentinel_url(service_name="no-such-service")
        client = await app_for(url)
        ready = await client.get("/readyz")
        assert ready.status == 503
        assert "no Sentinel in redis.url knows a master" in (await ready.json())["detail"]
        resp = await client.post("/v1/tokens", json=CARD, headers={"Authorization": "Bearer sk_" + "x" * 43})
        assert resp.status == 503
        env = {"CARDVAULT_REDIS_URL": url}
        listed = await asyncio.to_thread(
            run_cli, "agency", "list", "--data-dir", tmp_path / "var", env=env, cwd=tmp_path
        )
        listed.assert_one_error("no Sentinel in redis.url knows a master")

    async def test_sentinels_that_do_not_answer_are_unreachable(self, app_for: AppFactory, tmp_path: Path) -> None:
        """Sentinel addresses where nothing listens: not ready, 503, no hang."""
        client = await app_for("redis+sentinel://127.0.0.1:1,127.0.0.1:2/cardvault")
        ready = await asyncio.wait_for(client.get("/readyz"), BOUND)
        assert ready.status == 503
        assert (await ready.json())["detail"].startswith("keys: not loaded, redis: not connected")


async def failover_under_load(client: Client, topology: SentinelTopology, run: str) -> tuple[LoadResult, list[str]]:
    """Load, SIGKILL the master, keep loading through the failover and two seconds after; read everything back."""
    agency = await create_agency(client)
    stop = asyncio.Event()
    result = LoadResult()
    load = asyncio.create_task(run_load(client, agency.auth, stop, result, workers=LOAD_WORKERS, run=run))
    await asyncio.sleep(1.0)
    old = topology.kill_master()
    result.phase = "fault"
    started = time.monotonic()
    await asyncio.to_thread(topology.wait_for_failover, old)
    failover_seconds = time.monotonic() - started
    await until_ready(client)
    result.phase = "after"
    await asyncio.sleep(2.0)
    lost, retry_problems = await finish_load(client, agency.auth, stop, load, result)
    print(f"\n[{run}] failover in {failover_seconds:.1f}s; {result.summary()}; lost {len(lost)}: {lost[:5]}")
    assert result.timeouts == 0, result.summary()
    assert result.wrong == [], result.wrong[:5]
    assert retry_problems == [], retry_problems[:5]
    assert result.acknowledged["before"] > 0, result.summary()
    assert result.acknowledged["after"] > 0, result.summary()  # recovered by itself, under load
    return result, lost


class TestFailoverUnderLoad:
    async def test_with_one_replica_confirming_nothing_acknowledged_is_lost(
        self, app_for: AppFactory, sentinels: SentinelTopology
    ) -> None:
        """durability: replicas, replicas: 1: after the failover every 2xx token and charge is still there."""
        client = await app_for(
            sentinels.sentinel_url(), redis__durability="replicas", redis__replicas=1, redis__socket_timeout=2
        )
        await until_ready(client)
        result, lost = await failover_under_load(client, sentinels, "replicas")
        assert lost == []
        assert len(result.tokens) + len(result.charges) > 0

    async def test_with_fsync_alone_the_loss_is_reported(
        self, app_for: AppFactory, sentinels: SentinelTopology
    ) -> None:
        """durability: fsync on a Sentinel master: the acknowledged writes the failover lost are counted and printed."""
        client = await app_for(sentinels.sentinel_url(), redis__durability="fsync", redis__socket_timeout=2)
        await until_ready(client)
        result, lost = await failover_under_load(client, sentinels, "fsync")
        assert len(lost) <= len(result.tokens) + len(result.charges)
