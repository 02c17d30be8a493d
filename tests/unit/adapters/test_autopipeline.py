"""Auto-pipelining on a real redis-server: concurrent callers share a round trip, and nothing else changes.

Each caller still gets its own reply or its own error, writes are still
confirmed (NotDurable for the writes of a batch that could not be, never for
its reads), every command is still timed for the metrics, and a caller that
gives up does not disturb the others.
"""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import AsyncIterator

import pytest
import redis
from redis.exceptions import NoScriptError, ResponseError

from service.adapters.durability import DurableRedis, NotDurable
from service.adapters.redis_client import make_client
from service.metrics import REDIS_SECONDS
from service.settings import RedisSettings
from tests.support.redis_server import RedisServer

CALLERS = 40


def clients_connected(server: RedisServer) -> int:
    """Connections the server sees, less the one asking."""
    return len(server.client().client_list()) - 1


def timed(command: str) -> float:
    """How many round trips of ``command`` the metrics have counted."""
    for metric in REDIS_SECONDS.collect():
        for sample in metric.samples:
            if sample.name.endswith("_count") and sample.labels.get("command") == command:
                return sample.value
    return 0.0


@pytest.fixture
async def client(fresh_redis: RedisServer) -> AsyncIterator[DurableRedis]:
    made = make_client(fresh_redis.url, RedisSettings())
    assert isinstance(made, DurableRedis)
    yield made
    await made.aclose()


@pytest.fixture
async def unreplicated(fresh_redis: RedisServer) -> AsyncIterator[DurableRedis]:
    """Asks for one replica of a master that has none: every write fails to confirm."""
    made = make_client(fresh_redis.url, RedisSettings(durability="replicas", replicas=1, wait_timeout_ms=100))
    assert isinstance(made, DurableRedis)
    yield made
    await made.aclose()


class TestSharing:
    async def test_concurrent_callers_share_one_connection(
        self, client: DurableRedis, fresh_redis: RedisServer
    ) -> None:
        """Forty callers in one tick: forty right answers over a single pooled connection."""
        await client.set("cv:test:ap", "v")
        replies = await asyncio.gather(*(client.get("cv:test:ap") for _ in range(CALLERS)))
        assert replies == [b"v"] * CALLERS
        assert clients_connected(fresh_redis) == 1

    async def test_pipelines_join_the_batch_and_keep_their_shape(self, client: DurableRedis) -> None:
        """Plain pipelines of concurrent callers come back as their own lists, in order."""

        async def lookup(index: int) -> list[object]:
            async with client.pipeline(transaction=False) as pipe:
                pipe.set(f"cv:test:ap:{index}", str(index))
                pipe.get(f"cv:test:ap:{index}")
                pipe.exists("cv:test:ap:none")
                return list(await pipe.execute())

        replies = await asyncio.gather(*(lookup(i) for i in range(CALLERS)))
        assert replies == [[True, str(i).encode(), 0] for i in range(CALLERS)]

    async def test_the_disabled_switch_sends_each_command_alone(self, fresh_redis: RedisServer) -> None:
        """autopipelining = False: redis-py's own path, a connection per concurrent caller."""
        made = make_client(fresh_redis.url, RedisSettings())
        assert isinstance(made, DurableRedis)
        made.autopipelining = False
        try:
            replies = await asyncio.gather(*(made.incr("cv:test:ap:plain") for _ in range(8)))
            assert sorted(replies) == list(range(1, 9))
            assert clients_connected(fresh_redis) > 1
        finally:
            await made.aclose()

    async def test_every_command_is_still_timed(self, client: DurableRedis) -> None:
        """The metrics count each caller's command, batched or not."""
        before = timed("HGET")
        await asyncio.gather(*(client.hget("cv:test:ap:h", "f") for _ in range(CALLERS)))
        assert timed("HGET") - before == CALLERS

    @pytest.mark.parametrize("transaction", [False, True], ids=["pipeline", "transaction"])
    async def test_a_timed_pipeline_is_freed_without_the_cyclic_collector(
        self, client: DurableRedis, transaction: bool
    ) -> None:
        """Timing a pipeline must not make it a reference cycle: every token read uses one, and cycles wait
        for the collector (thousands at a time under load, and longer collections)."""
        kind = "MULTI" if transaction else "PIPELINE"
        before = timed(kind)
        gc.collect()
        gc.disable()
        try:
            async with client.pipeline(transaction=transaction) as pipe:
                pipe.get("cv:test:ap:g")
                pipe.exists("cv:test:ap:e")
                assert await pipe.execute() == [None, 0]
            gone = weakref.ref(pipe)
            del pipe
            assert gone() is None, "the pipeline outlived its last reference"
        finally:
            gc.enable()
        assert timed(kind) - before == 1


class TestErrorsStayWithTheirCaller:
    async def test_an_error_reply_is_only_that_callers(self, client: DurableRedis) -> None:
        """WRONGTYPE for the one caller that asked for it; the rest of the batch gets its replies."""
        await client.set("cv:test:ap:s", "text")
        results = await asyncio.gather(
            client.get("cv:test:ap:s"),
            client.incr("cv:test:ap:s"),
            client.script_load("return 1"),
            client.evalsha("0" * 40, 0),
            client.get("cv:test:ap:s"),
            return_exceptions=True,
        )
        assert results[0] == results[4] == b"text"
        assert isinstance(results[1], ResponseError)
        assert "not an integer" in str(results[1])
        assert isinstance(results[3], NoScriptError)
        assert isinstance(results[2], str)

    async def test_scripts_reload_after_a_flush(self, client: DurableRedis) -> None:
        """NOSCRIPT inside a batch makes redis-py load the script and run it again, for each caller."""
        script = client.register_script("return ARGV[1]")
        await client.script_flush()
        replies = await asyncio.gather(*(script(args=[str(i)]) for i in range(10)))
        assert replies == [str(i).encode() for i in range(10)]

    async def test_unconfirmed_writes_fail_and_reads_in_the_same_batch_answer(self, unreplicated: DurableRedis) -> None:
        """No replica to confirm: every write of the batch is NotDurable, every read of it answers."""

        async def read_pipeline() -> list[object]:
            async with unreplicated.pipeline(transaction=False) as pipe:
                pipe.get("cv:test:ap:r")
                pipe.exists("cv:test:ap:r")
                return list(await pipe.execute())

        async def write_pipeline() -> list[object]:
            async with unreplicated.pipeline(transaction=False) as pipe:
                pipe.get("cv:test:ap:r")
                pipe.set("cv:test:ap:w2", "1")
                return list(await pipe.execute())

        results = await asyncio.gather(
            unreplicated.get("cv:test:ap:r"),
            unreplicated.set("cv:test:ap:w", "1"),
            read_pipeline(),
            write_pipeline(),
            unreplicated.incr("cv:test:ap:w"),
            return_exceptions=True,
        )
        assert results[0] is None
        assert isinstance(results[1], NotDurable)
        assert results[2] == [None, 0]
        assert isinstance(results[3], NotDurable)
        assert isinstance(results[4], NotDurable)

    async def test_a_cancelled_caller_leaves_the_others_alone(self, client: DurableRedis) -> None:
        """One caller gives up while its command is in flight; the rest get their replies, the connection stays
        in step."""
        await client.set("cv:test:ap:c", "1")
        calls = [asyncio.ensure_future(client.get("cv:test:ap:c")) for _ in range(10)]
        await asyncio.sleep(0)
        calls[3].cancel()
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert isinstance(results[3], asyncio.CancelledError)
        assert [r for i, r in enumerate(results) if i != 3] == [b"1"] * 9
        assert await client.incr("cv:test:ap:n") == 1

    async def test_a_lost_server_fails_the_batch_and_the_client_recovers(
        self, client: DurableRedis, fresh_redis: RedisServer
    ) -> None:
        """The connection is killed under a batch: each caller gets a connection error, then service resumes."""
        await client.set("cv:test:ap:k", "1")
        fresh_redis.client().client_kill_filter(_type="normal", skipme=True)
        results = await asyncio.gather(*(client.get("cv:test:ap:k") for _ in range(5)), return_exceptions=True)
        assert all(r == b"1" or isinstance(r, redis.exceptions.ConnectionError) for r in results)
        assert await client.get("cv:test:ap:k") == b"1"


class TestPacking:
    @pytest.mark.parametrize(
        "commands",
        [
            [("SET", "k", "välue", b"\x00\xff\r\n", 12, -5, 2**70), ("GET", "k")],
            [("EVALSHA", "a" * 40, 3, "x", b"y", 0)],
            [("CONFIG GET", "maxmemory")],
            [("SET", "k", 1.5), ("SET", "k", True)],
            [("SET", "k", memoryview(b"v"))],
        ],
    )
    def test_is_byte_for_byte_what_redis_py_packs(self, commands: list[tuple[object, ...]]) -> None:
        """hiredis's packer where it is exactly redis-py's; redis-py's own for anything else (or its error)."""
        from redis.asyncio.connection import Connection
        from redis.exceptions import DataError

        from service.adapters.autopipeline import pack

        conn = Connection()
        try:
            expected = b"".join(conn.pack_commands(commands))
        except DataError:
            with pytest.raises(DataError):
                pack(conn, commands)
            return
        assert b"".join(pack(conn, commands)) == expected
