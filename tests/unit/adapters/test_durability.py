"""Write confirmation (WAIT / WAITAOF) on real redis-servers: a master alone, and a master with a replica.

A write must come back only once it is where ``redis.durability`` says; a read
must never wait; a pipeline or transaction with writes is confirmed once; a
failed write reports its own error and leaves the connection in step.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import pytest
import redis
from redis.exceptions import ResponseError

from service.adapters.durability import WRITE_COMMANDS, Durability, DurableRedis, NotDurable, is_write, script_may_write
from service.adapters.redis_client import make_client
from service.settings import RedisSettings
from tests.conftest import LeakSources
from tests.support.redis_server import RedisServer
from tests.support.redis_topologies import ReplicatedRedis, freeze, resume

WAIT_MS = 300


def settings(durability: str, replicas: int = 1) -> RedisSettings:
    return RedisSettings(durability=durability, replicas=replicas, wait_timeout_ms=WAIT_MS)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def replicated(tmp_path_factory: pytest.TempPathFactory, leak_sources: LeakSources) -> Iterator[ReplicatedRedis]:
    topology = ReplicatedRedis(tmp_path_factory.mktemp("replicated"), replicas=1).start()
    leak_sources.redis_servers.extend(topology.servers())
    yield topology
    topology.close()


@pytest.fixture
async def confirmed(replicated: ReplicatedRedis) -> AsyncIterator[DurableRedis]:
    client = make_client(replicated.url, settings("replicas"))
    yield client
    await client.aclose()


@pytest.fixture
async def unreplicated(redis_server: RedisServer) -> AsyncIterator[DurableRedis]:
    """Asks for one replica of a master that has none: every write must fail to confirm."""
    client = make_client(redis_server.url, settings("replicas"))
    yield client
    await client.aclose()


class TestContract:
    def test_fsync_on_a_server_without_waitaof_sends_nothing(self) -> None:
        """appendfsync always does the confirming; no command is added to writes."""
        durability = Durability.from_settings(settings("fsync"))
        assert durability.commands() == []
        assert durability.confirmed_by == "appendfsync always"

    def test_fsync_with_waitaof_confirms_the_local_fsync(self) -> None:
        """Redis 7.2+: WAITAOF 1 0 after every write."""
        durability = Durability(local=True, timeout_ms=250, waitaof=True)
        assert durability.commands() == [("WAITAOF", 1, 0, 250)]

    def test_fsync_and_replicas_confirm_both(self) -> None:
        """fsync+replicas: the local fsync (WAITAOF where available) and WAIT for the replicas."""
        plain = Durability.from_settings(settings("fsync+replicas", 2))
        assert plain.commands() == [("WAIT", 2, WAIT_MS)]
        assert plain.confirmed_by == f"appendfsync always + WAIT 2 {WAIT_MS}"
        newer = Durability(local=True, replicas=2, timeout_ms=WAIT_MS, waitaof=True)
        assert newer.commands() == [("WAITAOF", 1, 0, WAIT_MS), ("WAIT", 2, WAIT_MS)]

    def test_default_timeout_is_half_the_socket_timeout_at_most_a_second(self) -> None:
        """wait_timeout_ms unset: min(1000, socket_timeout / 2)."""
        assert Durability.from_settings(RedisSettings(socket_timeout=0.5)).timeout_ms == 250
        assert Durability.from_settings(RedisSettings(socket_timeout=5)).timeout_ms == 1000

    def test_replies_below_the_requirement_are_not_durable(self) -> None:
        """WAIT answering fewer replicas, WAITAOF answering no local fsync, or an error reply: NotDurable."""
        durability = Durability(local=True, replicas=2, timeout_ms=10, waitaof=True)
        durability.check([[1, 0], 2])
        for replies in ([[1, 0], 1], [[0, 0], 2], [ResponseError("ERR WAITAOF cannot be used"), 2]):
            with pytest.raises(NotDurable):
                durability.check(replies)

    def test_every_write_command_of_the_server_is_known(self, redis_server: RedisServer) -> None:
        """Each command the running server flags "write" is in WRITE_COMMANDS; no read command is."""
        commands = redis_server.client().command()
        flagged = {
            name.upper()
            for name, detail in commands.items()
            if "write" in {f.decode() if isinstance(f, bytes) else f for f in detail["flags"]}
        }
        assert flagged - WRITE_COMMANDS == set()
        for read in ("GET", "MGET", "EXISTS", "HGETALL", "SMEMBERS", "SCAN", "INFO", "PING", "EVALSHA_RO", "WAIT"):
            assert not is_write(read), read
        assert is_write("evalsha")
        assert is_write(b"SET")


class TestWithAReplica:
    async def test_a_confirmed_write_is_on_the_replica_when_it_returns(
        self, confirmed: DurableRedis, replicated: ReplicatedRedis
    ) -> None:
        """Right after SET returns, the replica already holds the value (WAIT 1 on the same connection)."""
        replica = replicated.replicas[0].client()
        for index in range(20):
            await confirmed.set(f"cv:test:durable:{index}", str(index))
            assert replica.get(f"cv:test:durable:{index}") == str(index).encode()

    async def test_scripts_pipelines_and_transactions_are_confirmed(
        self, confirmed: DurableRedis, replicated: ReplicatedRedis
    ) -> None:
        """EVALSHA (also after SCRIPT FLUSH), a pipeline and a MULTI/EXEC each return with the replica holding it."""
        replica = replicated.replicas[0].client()
        script = confirmed.register_script("redis.call('SET', KEYS[1], ARGV[1]) return 1")
        await script(keys=["cv:test:script"], args=["a"])
        assert replica.get("cv:test:script") == b"a"
        await confirmed.script_flush()  # NOSCRIPT, then a reload: the connection must stay in step
        await script(keys=["cv:test:script"], args=["b"])
        assert replica.get("cv:test:script") == b"b"
        for transaction in (False, True):
            async with confirmed.pipeline(transaction=transaction) as pipe:
                pipe.set("cv:test:pipe", str(transaction))
                pipe.get("cv:test:pipe")
                assert await pipe.execute() == [True, str(transaction).encode()]
            assert replica.get("cv:test:pipe") == str(transaction).encode()

    async def test_a_frozen_replica_makes_writes_not_durable_and_reads_fine(
        self, confirmed: DurableRedis, replicated: ReplicatedRedis
    ) -> None:
        """With the replica stopped, a write raises NotDurable after about wait_timeout_ms; reads answer at once."""
        await confirmed.set("cv:test:before", "1")
        freeze(replicated.replicas[0])
        try:
            started = time.monotonic()
            with pytest.raises(NotDurable, match="0 of 1 required replica"):
                await confirmed.set("cv:test:during", "1")
            assert WAIT_MS / 1000 * 0.8 <= time.monotonic() - started < 3
            started = time.monotonic()
            assert await confirmed.get("cv:test:before") == b"1"
            assert time.monotonic() - started < 0.2
        finally:
            resume(replicated.replicas[0])
        replicated.wait_replicas_online(1)
        await confirmed.set("cv:test:after", "1")


class TestWithoutReplicas:
    async def test_reads_never_wait(self, unreplicated: DurableRedis) -> None:
        """GET, a read-only pipeline and INFO answer normally although no write could be confirmed."""
        assert await unreplicated.get("cv:test:nothing") is None
        async with unreplicated.pipeline(transaction=False) as pipe:
            pipe.get("cv:test:nothing")
            pipe.exists("cv:test:nothing")
            assert await pipe.execute() == [None, 0]
        assert (await unreplicated.info("server"))["redis_version"]

    async def test_writes_of_every_shape_are_refused(self, unreplicated: DurableRedis) -> None:
        """A command, a script, a pipeline and a transaction that write all raise NotDurable."""
        script = unreplicated.register_script("return redis.call('SET', KEYS[1], ARGV[1])")
        with pytest.raises(NotDurable):
            await unreplicated.set("cv:test:w", "1")
        with pytest.raises(NotDurable):
            await script(keys=["cv:test:w"], args=["2"])
        for transaction in (False, True):
            async with unreplicated.pipeline(transaction=transaction) as pipe:
                pipe.get("cv:test:w")
                pipe.set("cv:test:w", "3")
                with pytest.raises(NotDurable):
                    await pipe.execute()

    async def test_a_failing_write_reports_its_own_error_and_the_connection_stays_in_step(
        self, unreplicated: DurableRedis
    ) -> None:
        """WRONGTYPE from the write wins over the confirmation; the next commands get their own replies."""
        with pytest.raises(NotDurable):
            await unreplicated.sadd("cv:test:set", "member")
        with pytest.raises(ResponseError, match="WRONGTYPE"):
            await unreplicated.incr("cv:test:set")
        results = await asyncio.gather(*(unreplicated.scard("cv:test:set") for _ in range(10)))
        assert results == [1] * 10


def test_fsync_standalone_needs_no_replica(redis_server: RedisServer) -> None:
    """The default contract on a durable standalone server: writes go through with nothing appended."""

    async def scenario() -> None:
        client = make_client(redis_server.url, RedisSettings())
        try:
            assert client.durability.commands() == []
            assert await client.set("cv:test:fsync", "1")
        finally:
            await client.aclose()

    asyncio.run(scenario())
    assert redis.Redis(port=redis_server.port).get("cv:test:fsync") == b"1"


class TestReadOnlyScripts:
    def test_scripts_are_read_for_their_commands(self) -> None:
        """Only literal non-write calls make a read-only script; a write or a computed command name may write."""
        assert not script_may_write("local e = redis.call('GET', KEYS[1]) return redis.call(\"HGETALL\", e)")
        assert script_may_write("redis.call('GET', KEYS[1]) redis.call('SET', KEYS[1], ARGV[1])")
        assert script_may_write("return redis.pcall('srem', KEYS[1], ARGV[1])")
        assert script_may_write("return redis.call(ARGV[1], KEYS[1])")

    async def test_a_read_only_script_does_not_wait(self, unreplicated: DurableRedis) -> None:
        """The API-key lookup kind of script answers although no write could be confirmed; a writing one fails."""
        reader = unreplicated.register_script("return redis.call('GET', KEYS[1])")
        writer = unreplicated.register_script("return redis.call('SET', KEYS[1], 'x')")
        assert await reader(keys=["cv:test:ro"]) is None
        with pytest.raises(NotDurable):
            await writer(keys=["cv:test:ro"])
