"""`kill -9` of Redis under a load of token and charge requests against a real `cardvault serve` process.

Redis runs standalone with ``appendonly yes`` + ``appendfsync always`` in the
test's own directory.  Six workers create tokens and charge them (sandbox
processor) over HTTPS; Redis is SIGKILLed mid-load and, a moment later,
restarted on the same port and directory.  Every request got a 2xx or a 503
``store_unavailable`` problem within its bound (none hangs), the service
recovers by itself, every acknowledged token and charge is read back from the
restarted Redis, and the refused charges retried with their Idempotency-Keys
never charge an order twice.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import LeakSources
from tests.faults.conftest import BOUND
from tests.faults.load import LoadResult, finish_load, run_load
from tests.support.redis_server import RedisServer
from tests.support.serve import ServeFactory

pytestmark = pytest.mark.slow


async def until_ready(session: aiohttp.ClientSession) -> None:
    deadline = time.monotonic() + BOUND
    while time.monotonic() < deadline:
        async with session.get("/readyz") as resp:
            if resp.status == 200:
                return
        await asyncio.sleep(0.1)
    raise AssertionError("cardvault serve did not turn ready again after Redis came back")


async def test_every_acknowledged_write_survives_a_redis_crash(
    fresh_redis: RedisServer, tmp_path: Path, leak_sources: LeakSources
) -> None:
    """SIGKILL Redis under load, restart it: no 2xx lost, only 503 problems meanwhile, recovery without help."""
    env = {
        "CARDVAULT_REDIS_URL": fresh_redis.url,
        "CARDVAULT_REDIS__SOCKET_TIMEOUT": "2",
        "CARDVAULT_VELOCITY__ENABLED": "false",  # one test card charged many times is not card testing here
    }
    with ServeFactory(tmp_path, leak_sources) as serve:
        process = serve(env=env).start()
        assert process.keys is not None
        auth = {"Authorization": f"Bearer {process.keys.secret}"}
        connector = aiohttp.TCPConnector(ssl=process.ssl_context(), limit=16)
        async with aiohttp.ClientSession(base_url=process.url, connector=connector) as session:
            await until_ready(session)
            stop = asyncio.Event()
            result = LoadResult()
            load = asyncio.create_task(run_load(session, auth, stop, result, workers=6, run="crash"))
            await asyncio.sleep(1.5)
            fresh_redis.kill()
            result.phase = "fault"
            await asyncio.sleep(1.5)
            await asyncio.to_thread(fresh_redis.restart_same_port)
            await until_ready(session)
            result.phase = "after"
            await asyncio.sleep(2.0)
            lost, retry_problems = await finish_load(session, auth, stop, load, result)
        print(f"\n[kill -9] {result.summary()}; lost {len(lost)}")
        process.stop()
    assert result.timeouts == 0, result.summary()
    assert result.wrong == [], result.wrong[:5]
    assert result.acknowledged["before"] > 0, result.summary()
    assert result.statuses["token 503"] > 0, result.summary()  # the crash did hit requests
    assert result.acknowledged["after"] > 0, result.summary()
    assert lost == []
    assert retry_problems == [], retry_problems[:5]
