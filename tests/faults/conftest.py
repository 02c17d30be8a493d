"""Fixtures for the fault tests: in-process apps pointed at Redis topologies the tests start and break.

Every redis-server a fault test starts is registered with the session's leak
guard, so its keys, values and AOF files are scanned for card data like the
others.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from service.adapters.keyring import MasterKeys
from service.app import create_app
from service.settings import Settings
from tests.conftest import FakeClock, LeakSources, make_settings
from tests.support.redis_server import RedisServer
from tests.support.redis_topologies import ReplicatedRedis, SentinelTopology

Client = TestClient[Any, Any]
AppFactory = Callable[..., Awaitable[Client]]
BOUND = 10.0  # no request may take longer: a healthy one takes milliseconds, a refused one the timeouts


def without_velocity_limits() -> dict[str, Any]:
    """Load tests charge one test card many times: the card-testing limits would refuse that."""
    return {"velocity__enabled": False} if "velocity" in Settings.__dataclass_fields__ else {}


@pytest.fixture
def app_for(aiohttp_client: Any, master_keys: MasterKeys, clock: FakeClock, tmp_path: Path) -> AppFactory:
    """An in-process app on any Redis URL, started whether or not that Redis answers."""

    async def build(url: str, **overrides: Any) -> Client:
        settings = make_settings(url, tmp_path / "var", **{**without_velocity_limits(), **overrides})
        app = create_app(settings, master_keys, redis_url=url, clock=clock, tls=False)
        client: Client = await asyncio.wait_for(aiohttp_client(app), BOUND)
        return client

    return build


@pytest.fixture
def replicated(tmp_path: Path, leak_sources: LeakSources) -> Iterator[ReplicatedRedis]:
    """A master with one replica, both AOF with fsync on every write."""
    topology = ReplicatedRedis(tmp_path / "replicated", replicas=1).start()
    leak_sources.redis_servers.extend(topology.servers())
    yield topology
    topology.close()


@pytest.fixture
def sentinels(tmp_path: Path, leak_sources: LeakSources) -> Iterator[SentinelTopology]:
    """A master, two replicas and three Sentinels that fail over about two seconds after the master dies."""
    topology = SentinelTopology(tmp_path / "sentinel", replicas=2).start()
    leak_sources.redis_servers.extend(topology.servers())
    yield topology
    topology.close()


def registered(server: RedisServer, leak_sources: LeakSources) -> RedisServer:
    leak_sources.redis_servers.append(server)
    return server
