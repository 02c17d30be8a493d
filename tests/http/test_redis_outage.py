"""Redis going away and coming back: 503 problems quickly, liveness stays up, recovery without a restart.

Each test runs its own redis-server (``fresh_redis``: AOF with fsync on every
write) and an app pointed at it, then crashes it with SIGKILL, freezes it, or
starts the app before it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from service.adapters.keyring import MasterKeys
from service.app import create_app
from tests.conftest import FakeClock, create_agency, make_settings
from tests.support import leaks
from tests.support.cards import CVC, MASTERCARD, VISA
from tests.support.redis_server import RedisServer

Client = TestClient[Any, Any]
BOUND = 10.0  # generous: a healthy answer takes milliseconds; this only catches hangs


def card_body(number: str = VISA) -> dict[str, Any]:
    return {"card": {"number": number, "exp_month": 12, "exp_year": 2031, "cvc": CVC}}


async def bounded(request: Awaitable[ClientResponse]) -> ClientResponse:
    return await asyncio.wait_for(request, BOUND)


async def unavailable(resp: ClientResponse, code: str = "store_unavailable") -> dict[str, Any]:
    text = await resp.text()
    assert resp.status == 503, text
    assert resp.content_type == "application/problem+json"
    assert leaks.cards_in_text(text) == []
    body: dict[str, Any] = json.loads(text)
    assert body["code"] == code
    assert resp.headers["Cache-Control"] == "no-store"
    assert resp.headers["X-Request-Id"] == body["request_id"]
    return body


async def until_ready(client: Client) -> None:
    """Poll /readyz until 200, failing after BOUND seconds."""

    async def poll() -> None:
        for _ in range(int(BOUND / 0.05)):
            if (await client.get("/readyz")).status == 200:
                return
            await asyncio.sleep(0.05)

    await asyncio.wait_for(poll(), BOUND)
    assert (await client.get("/readyz")).status == 200


AppFactory = Callable[..., Awaitable[Client]]


@pytest.fixture
def app_on(
    aiohttp_client: Any, fresh_redis: RedisServer, master_keys: MasterKeys, clock: FakeClock, tmp_path: Path
) -> AppFactory:
    """Start an app against this test's own Redis (whether or not that Redis is running)."""

    async def build(**overrides: Any) -> Client:
        settings = make_settings(fresh_redis.url, tmp_path / "var", **overrides)
        app = create_app(settings, master_keys, redis_url=fresh_redis.url, clock=clock, tls=False)
        client: Client = await asyncio.wait_for(aiohttp_client(app), BOUND)
        return client

    return build


@pytest.fixture
def redis_back_at_the_end(fresh_redis: RedisServer) -> Iterator[RedisServer]:
    """Whatever the test did to Redis, it is running again for the fixture's own leak scan."""
    yield fresh_redis
    if fresh_redis.process is None:
        fresh_redis.restart_same_port()


@contextlib.contextmanager
def frozen(server: RedisServer) -> Iterator[None]:
    """SIGSTOP the redis-server this test started: it keeps its sockets but answers nothing."""
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server.process.pid, signal.SIGCONT)


class TestRedisCrash:
    async def test_writes_answer_503_quickly(self, app_on: AppFactory, redis_back_at_the_end: RedisServer) -> None:
        """With Redis killed, POST /v1/tokens answers 503 store_unavailable with Retry-After, without hanging."""
        client = await app_on()
        agency = await create_agency(client)
        redis_back_at_the_end.kill()
        resp = await bounded(client.post("/v1/tokens", json=card_body(), headers=agency.auth))
        await unavailable(resp)
        assert int(resp.headers["Retry-After"]) >= 1

    async def test_reads_and_deletes_answer_503(self, app_on: AppFactory, redis_back_at_the_end: RedisServer) -> None:
        """With Redis killed, GET, DELETE and list answer 503 store_unavailable too."""
        client = await app_on()
        agency = await create_agency(client)
        created = await (await client.post("/v1/tokens", json=card_body(), headers=agency.auth)).json()
        redis_back_at_the_end.kill()
        for method, path in (
            ("GET", f"/v1/tokens/{created['id']}"),
            ("DELETE", f"/v1/tokens/{created['id']}"),
            ("GET", f"/v1/tokens?fingerprint={created['card']['fingerprint']}"),
        ):
            await unavailable(await bounded(client.request(method, path, headers=agency.auth)))

    async def test_liveness_up_readiness_down(self, app_on: AppFactory, redis_back_at_the_end: RedisServer) -> None:
        """While Redis is down /healthz stays 200 and /readyz is 503 naming redis."""
        client = await app_on()
        assert (await client.get("/readyz")).status == 200
        redis_back_at_the_end.kill()
        health = await bounded(client.get("/healthz"))
        assert health.status == 200
        assert await health.json() == {"status": "ok"}
        ready = await bounded(client.get("/readyz"))
        body = await unavailable(ready, "not_ready")
        assert "redis" in body["detail"]

    async def test_recovers_without_restarting_the_app(
        self, app_on: AppFactory, redis_back_at_the_end: RedisServer
    ) -> None:
        """After Redis restarts on the same port the same app turns ready and serves writes and reads again."""
        client = await app_on()
        agency = await create_agency(client)
        assert (await client.post("/v1/tokens", json=card_body(), headers=agency.auth)).status == 201
        redis_back_at_the_end.kill()
        await unavailable(await bounded(client.post("/v1/tokens", json=card_body(), headers=agency.auth)))
        redis_back_at_the_end.restart_same_port()
        await until_ready(client)
        for _ in range(5):
            resp = await bounded(client.post("/v1/tokens", json=card_body(MASTERCARD), headers=agency.auth))
            assert resp.status == 201, await resp.text()
            token = await resp.json()
            fetched = await bounded(client.get(f"/v1/tokens/{token['id']}", headers=agency.auth))
            assert fetched.status == 200

    async def test_the_first_requests_after_a_restart_succeed(
        self, app_on: AppFactory, redis_back_at_the_end: RedisServer
    ) -> None:
        """Once Redis is back, no request fails on a pooled connection that died with the old server."""
        client = await app_on()
        agency = await create_agency(client)

        async def burst() -> list[int]:
            posts = [client.post("/v1/tokens", json=card_body(), headers=agency.auth) for _ in range(8)]
            return [resp.status for resp in await bounded(asyncio.gather(*posts))]

        assert await burst() == [201] * 8  # leaves several connections in the app's pool
        redis_back_at_the_end.kill()
        redis_back_at_the_end.restart_same_port()
        assert await burst() == [201] * 8

    async def test_acknowledged_tokens_survive_the_crash(
        self, app_on: AppFactory, redis_back_at_the_end: RedisServer
    ) -> None:
        """Every token answered 201 before a SIGKILL is readable after the restart, CVC and listing included."""
        client = await app_on()
        agency = await create_agency(client)
        created = []
        for number in (VISA, MASTERCARD, VISA):
            resp = await client.post("/v1/tokens", json=card_body(number), headers=agency.auth)
            assert resp.status == 201
            created.append(await resp.json())
        redis_back_at_the_end.kill()
        redis_back_at_the_end.restart_same_port()
        await until_ready(client)
        for token in created:
            resp = await bounded(client.get(f"/v1/tokens/{token['id']}", headers=agency.auth))
            assert resp.status == 200, await resp.text()
            assert await resp.json() == token
            assert token["cvc_retained"] is True
        listed = await client.get(
            "/v1/tokens", params={"fingerprint": created[0]["card"]["fingerprint"]}, headers=agency.auth
        )
        assert {t["id"] for t in (await listed.json())["data"]} == {created[0]["id"], created[2]["id"]}
        newcomer = await create_agency(client)
        assert (await client.post("/v1/tokens", json=card_body(), headers=newcomer.auth)).status == 201

    async def test_a_frozen_redis_times_out_into_503(
        self, app_on: AppFactory, redis_back_at_the_end: RedisServer
    ) -> None:
        """A Redis that accepts no answers (SIGSTOP) gives 503 after the socket timeout, then recovers on SIGCONT."""
        client = await app_on(redis__socket_timeout=0.5)
        agency = await create_agency(client)
        with frozen(redis_back_at_the_end):
            resp = await bounded(client.post("/v1/tokens", json=card_body(), headers=agency.auth))
            await unavailable(resp)
            assert (await bounded(client.get("/healthz"))).status == 200
        resp = await bounded(client.post("/v1/tokens", json=card_body(), headers=agency.auth))
        assert resp.status == 201, await resp.text()

    async def test_a_frozen_redis_under_load_answers_every_request_503_in_bounded_time(
        self, app_on: AppFactory, redis_back_at_the_end: RedisServer
    ) -> None:
        """80 concurrent writes and reads on 16 connections while Redis is SIGSTOPped: each is a 503 within two
        socket timeouts (one waiting for a pooled connection, one for the answer), /readyz too; then all recover."""
        timeout = 0.5
        client = await app_on(redis__socket_timeout=timeout, redis__max_connections=16)
        agency = await create_agency(client)
        kept = await (await client.post("/v1/tokens", json=card_body(), headers=agency.auth)).json()

        async def timed(request: Awaitable[ClientResponse]) -> tuple[float, ClientResponse]:
            started = asyncio.get_running_loop().time()
            resp = await bounded(request)
            await resp.read()
            return asyncio.get_running_loop().time() - started, resp

        with frozen(redis_back_at_the_end):
            requests = [
                client.post("/v1/tokens", json=card_body(), headers=agency.auth)
                if i % 2
                else client.get(f"/v1/tokens/{kept['id']}", headers=agency.auth)
                for i in range(80)
            ]
            answers = await asyncio.gather(*(timed(r) for r in requests), timed(client.get("/readyz")))
        slowest = max(elapsed for elapsed, _ in answers)
        assert slowest < 2 * timeout + 1.0, slowest
        for _, resp in answers[:-1]:
            await unavailable(resp)
        await unavailable(answers[-1][1], "not_ready")
        await until_ready(client)
        statuses = [
            (await bounded(client.post("/v1/tokens", json=card_body(), headers=agency.auth))).status for _ in range(5)
        ]
        assert statuses == [201] * 5


class TestStartWithoutRedis:
    async def test_app_comes_up_and_becomes_ready_by_itself(
        self, app_on: AppFactory, redis_back_at_the_end: RedisServer
    ) -> None:
        """An app started while Redis is down serves /healthz, answers 503, and turns ready once Redis starts."""
        redis_back_at_the_end.kill()
        client = await app_on()
        assert (await bounded(client.get("/healthz"))).status == 200
        await unavailable(await bounded(client.get("/readyz")), "not_ready")
        headers = {"Authorization": "Bearer sk_" + "x" * 43}
        resp = await bounded(client.post("/v1/tokens", json=card_body(), headers=headers))
        await unavailable(resp)
        assert "Retry-After" in resp.headers
        redis_back_at_the_end.restart_same_port()
        await until_ready(client)
        agency = await create_agency(client)
        created = await bounded(client.post("/v1/tokens", json=card_body(), headers=agency.auth))
        assert created.status == 201, await created.text()
