"""A write is acknowledged only once it is durable: WAIT / WAITAOF on the connection that wrote it.

The durability contract (``redis.durability``): a 2xx for a token, charge,
refund or any other write means the write is on the master's disk
(``fsync``), on ``redis.replicas`` replicas (``replicas``), or both
(``fsync+replicas``), before the answer is sent; otherwise the request fails
with 503 and the client retries with its Idempotency-Key.

Redis confirms this per connection: ``WAIT n t`` blocks until every write this
connection made has reached ``n`` replicas, ``WAITAOF local n t`` (Redis 7.2+)
until it is fsynced locally and on ``n`` replicas.  Both must run on the same
connection as the write, so ``DurableRedis`` appends the confirmation to every
write command in the same packet (one round trip, as before) and reads both
replies before the connection goes back to the pool; a pipeline gets one
confirmation after its last command.  Doing it here, below the stores, means
every write of every adapter (tokens, charges, refunds, checkout sessions,
agencies and keys, staff records, idempotency records, and writes added
later) is covered without each remembering to ask.

``fsync`` alone on a server without WAITAOF needs no command: with
``appendonly yes`` + ``appendfsync always`` Redis fsyncs before it replies,
which the start-up check and /readyz verify (``service.preflight``).

A write that went through but could not be confirmed raises ``NotDurable``
(a ``StoreUnavailable``: 503).  The write itself stays on the master; stores
whose retry would otherwise find it half-done undo it (see ``charges_store``).

Commands and pipelines of concurrent requests share round trips
(``autopipeline``): a batch gets one confirmation after its last command, on
its connection, which confirms every write in it.

On a Redis Cluster the cluster client does the same node by node, with these
helpers, on the connection of the master that took each write (``cluster``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis.asyncio as redis
from redis.asyncio.client import Pipeline
from redis.asyncio.connection import Connection
from redis.commands.core import AsyncScript
from redis.exceptions import ResponseError
from redis.typing import ScriptTextT

from service.adapters.autopipeline import AutoPipeline, batchable
from service.errors import StoreUnavailable
from service.settings import RedisSettings

#: Commands that change data (Redis's "write" flag, 6.2 to 8.x), plus scripts and functions, which
#: may write.  tests/unit/adapters/test_durability.py checks this against the running server.
WRITE_COMMANDS = frozenset(
    """
    APPEND BITFIELD BITOP BLMOVE BLMPOP BLPOP BRPOP BRPOPLPUSH BZMPOP BZPOPMAX BZPOPMIN COPY DECR
    DECRBY DEL EXPIRE EXPIREAT FLUSHALL FLUSHDB GEOADD GEORADIUS GEORADIUSBYMEMBER GEOSEARCHSTORE
    GETDEL GETEX GETSET HDEL HEXPIRE HEXPIREAT HGETDEL HGETEX HINCRBY HINCRBYFLOAT HMSET HPERSIST
    HPEXPIRE HPEXPIREAT HSET HSETEX HSETNX INCR INCRBY INCRBYFLOAT LINSERT LMOVE LMPOP LPOP LPUSH
    LPUSHX LREM LSET LTRIM MIGRATE MOVE MSET MSETEX MSETNX PERSIST PEXPIRE PEXPIREAT PFADD PFDEBUG
    PFMERGE PSETEX RENAME RENAMENX RESTORE RESTORE-ASKING RPOP RPOPLPUSH RPUSH RPUSHX SADD SDIFFSTORE
    SET SETBIT SETEX SETNX SETRANGE SINTERSTORE SMOVE SORT SPOP SREM SUNIONSTORE SWAPDB UNLINK XACK
    XACKDEL XADD XAUTOCLAIM XCLAIM XDEL XDELEX XGROUP XREADGROUP XSETID XTRIM ZADD ZDIFFSTORE ZINCRBY
    ZINTERSTORE ZMPOP ZPOPMAX ZPOPMIN ZRANGESTORE ZREM ZREMRANGEBYLEX ZREMRANGEBYRANK ZREMRANGEBYSCORE
    ZUNIONSTORE EVAL EVALSHA FCALL
    """.split()  # noqa: SIM905 - a word list reads better than 110 quoted strings
)


def is_write(command_name: object) -> bool:
    name = command_name.decode() if isinstance(command_name, bytes) else str(command_name)
    return name.split(" ", 1)[0].upper() in WRITE_COMMANDS


#: SHA1s of registered scripts that cannot write (see ``script_may_write``): their EVALSHA is a read.
_READ_ONLY_SCRIPTS: set[str] = set()
_SCRIPT_CALL = re.compile(r"redis\.p?call\(")
_LITERAL_CALL = re.compile(r"""redis\.p?call\(\s*(['"])([A-Za-z-]+)\1""")


def script_may_write(body: str) -> bool:
    """False only when every ``redis.call``/``pcall`` names a literal command that is not a write.

    Lua cannot be run on Redis 6.2 as read-only (``EVALSHA_RO`` is 7.0+), so
    the script is read: a script that only reads (the API-key lookup) must not
    wait for replicas, or every request would fail while a replica is away.
    """
    calls = len(_SCRIPT_CALL.findall(body))
    literal = [match[1] for match in _LITERAL_CALL.findall(body)]
    return len(literal) != calls or any(is_write(name) for name in literal)


def note_script(script: ScriptTextT, registered: AsyncScript) -> AsyncScript:
    """Remember a registered script that cannot write (``script_may_write``): its EVALSHA needs no confirmation."""
    if not script_may_write(script.decode() if isinstance(script, bytes) else str(script)):
        _READ_ONLY_SCRIPTS.add(registered.sha)
    return registered


def needs_confirmation(args: Sequence[Any]) -> bool:
    """Whether a command (its full argument list) may change data."""
    if not args or not is_write(args[0]):
        return False
    if str(args[0]).upper() == "EVALSHA" and len(args) > 1:
        sha = args[1].decode() if isinstance(args[1], bytes) else str(args[1])
        return sha not in _READ_ONLY_SCRIPTS
    return True


class NotDurable(StoreUnavailable):
    """The write reached the master but could not be confirmed durable in time: answer 503."""


@dataclass(frozen=True)
class Durability:
    """What confirms a write: on the master's disk (``local``) and/or on ``replicas`` replicas.

    ``waitaof`` is learnt from the server (``redis_inspect``): with it, the
    local fsync is confirmed per write; without it, by the server's
    ``appendfsync always``.  Nothing confirms anything until told (``NONE``).
    """

    local: bool = False
    replicas: int = 0
    timeout_ms: int = 1000
    waitaof: bool = False

    @classmethod
    def from_settings(cls, settings: RedisSettings) -> Durability:
        return cls(
            local="fsync" in settings.durability,
            replicas=settings.replicas if "replicas" in settings.durability else 0,
            timeout_ms=settings.wait_timeout_ms or min(1000, max(1, int(settings.socket_timeout * 500))),
        )

    @property
    def confirmed_by(self) -> str:
        """How a write is confirmed, for /readyz and the logs."""
        parts = []
        if self.local:
            parts.append(f"WAITAOF 1 0 {self.timeout_ms}" if self.waitaof else "appendfsync always")
        if self.replicas:
            parts.append(f"WAIT {self.replicas} {self.timeout_ms}")
        return " + ".join(parts) or "nothing"

    def commands(self) -> list[tuple[Any, ...]]:
        """The confirmation commands to send right after a write, on its connection."""
        commands: list[tuple[Any, ...]] = []
        if self.local and self.waitaof:
            commands.append(("WAITAOF", 1, 0, self.timeout_ms))
        if self.replicas:
            commands.append(("WAIT", self.replicas, self.timeout_ms))
        return commands

    def check(self, replies: Sequence[Any]) -> None:
        """Raise NotDurable unless every confirmation reply says the write is where it must be."""
        for reply in replies:
            if isinstance(reply, BaseException):
                raise NotDurable(f"the write could not be confirmed durable: {reply}")
            if isinstance(reply, list):  # WAITAOF: [fsynced locally, replicas that fsynced]
                if int(reply[0]) < 1:
                    raise NotDurable(f"the write was not fsynced to the master's disk within {self.timeout_ms} ms")
            elif int(reply) < self.replicas:
                raise NotDurable(
                    f"the write reached {int(reply)} of {self.replicas} required replica(s) within {self.timeout_ms} ms"
                )


NONE = Durability()

#: A pipeline's queued commands, as redis-py keeps them: (arguments, options).
CommandStack = list[tuple[tuple[Any, ...], Mapping[str, Any]]]


async def _read_reply(client: redis.Redis, conn: Connection) -> Any:
    """One reply, an error reply returned rather than raised so the connection stays in step."""
    try:
        return await client.parse_response(conn, "_")
    except ResponseError as exc:
        return exc


class _Confirming:
    """Overrides the single-command path of redis-py's client (and a pipeline's WATCH mode)."""

    durability: Durability = NONE

    async def _send_command_parse_response(
        self, conn: Connection, command_name: str, *args: Any, **options: Any
    ) -> Any:
        confirm = self.durability.commands() if needs_confirmation(args) else []
        if not confirm:
            return await super()._send_command_parse_response(  # type: ignore[misc]
                conn, command_name, *args, **options
            )
        await conn.send_packed_command(conn.pack_commands([args, *confirm]))
        written: Any
        try:
            written = await self.parse_response(conn, command_name, **options)  # type: ignore[attr-defined]
        except ResponseError as exc:
            written = exc
        replies = [await _read_reply(self, conn) for _ in confirm]  # type: ignore[arg-type]
        if isinstance(written, BaseException):
            raise written  # the write itself failed: nothing to confirm
        self.durability.check(replies)
        return written


class DurablePipeline(_Confirming, Pipeline):  # type: ignore[misc]  # redis-py's own base conflict
    """A pipeline whose writes are confirmed once, after its last command.

    A plain one (no transaction, WATCH or script) joins its client's auto-pipeline batch.
    """

    autopipeline: AutoPipeline | None = None

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        batcher, stack = self.autopipeline, self.command_stack
        if (
            batcher is None
            or not stack
            or self.is_transaction
            or self.explicit_transaction
            or self.watching
            or self.scripts
            or self.connection is not None
            or not all(batchable(args) for args, _ in stack)
        ):
            return list(await super().execute(raise_on_error))
        try:
            response = await batcher.group([(args, options) for args, options in stack])
        finally:
            await self.reset()  # type: ignore[no-untyped-call]
        if raise_on_error:
            self.raise_first_error(stack, response)
        return response

    def _confirmation(self, commands: Iterable[tuple[tuple[Any, ...], Mapping[str, Any]]]) -> list[tuple[Any, ...]]:
        if any(needs_confirmation(args) for args, _ in commands):
            return self.durability.commands()
        return []

    async def _execute_pipeline(
        self, connection: Connection, commands: CommandStack, raise_on_error: bool
    ) -> list[Any]:
        confirm = self._confirmation(commands)
        if not confirm:
            return list(await super()._execute_pipeline(connection, commands, raise_on_error))
        extended: CommandStack = [*commands, *((args, {}) for args in confirm)]
        response = list(await super()._execute_pipeline(connection, extended, False))
        replies = response[len(commands) :]
        del response[len(commands) :]
        if raise_on_error:
            self.raise_first_error(commands, response)
        self.durability.check(replies)
        return response

    async def _execute_transaction(
        self, connection: Connection, commands: CommandStack, raise_on_error: bool
    ) -> list[Any]:
        # WAIT inside MULTI returns at once without waiting, so it follows the EXEC: a second round
        # trip, on the same connection, for transactions only (none is on the hot path).
        response = list(await super()._execute_transaction(connection, commands, raise_on_error))
        confirm = self._confirmation(commands)
        if confirm:
            await connection.send_packed_command(connection.pack_commands(confirm))
            self.durability.check([await _read_reply(self, connection) for _ in confirm])
        return response


class DurableRedis(_Confirming, redis.Redis):  # type: ignore[misc]  # redis-py's own base conflict
    """redis.asyncio.Redis that confirms every write under ``durability`` (set by ``make_client``).

    Commands and plain pipelines of concurrent callers are auto-pipelined (``autopipeline``) unless
    ``autopipelining`` is False; a client bound to one connection never is.
    """

    autopipelining: bool = True
    _batcher: AutoPipeline | None = None

    def _autopipeline(self) -> AutoPipeline | None:
        if not self.autopipelining or self.connection is not None or self.single_connection_client:
            return None
        if self._batcher is None:
            self._batcher = AutoPipeline(self, self._batch_confirmation, self._check, needs_confirmation)
        return self._batcher

    def _batch_confirmation(self, commands: Iterable[Sequence[Any]]) -> list[tuple[Any, ...]]:
        return self.durability.commands() if any(needs_confirmation(args) for args in commands) else []

    def _check(self, replies: Sequence[Any]) -> None:
        self.durability.check(replies)

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        batcher = self._autopipeline()
        if batcher is None or not batchable(args):
            return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]
        return await batcher.command(args, options)

    def register_script(self, script: ScriptTextT) -> AsyncScript:  # type: ignore[override]  # the async mixin's type
        return note_script(script, super().register_script(script))

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> DurablePipeline:
        pipe = DurablePipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)
        pipe.durability = self.durability
        pipe.autopipeline = self._autopipeline()
        return pipe


def unconfirmed(client: redis.Redis) -> redis.Redis:
    """The same pool without confirmation, for records whose loss in a failover costs nothing.

    Idempotency records are the case: a write confirmed later on any
    connection confirms every earlier one too (replication is one ordered
    stream), and a record lost with a failed-over master only means a retry
    runs again, which finds the durable charge it made (its id comes from the
    Idempotency-Key).  Left confirmed, a claim that could not be confirmed would
    hold its key "in flight" and block the very retry the 503 asks for.  On a
    Redis Cluster the record may sit on another master than the charge, and the
    second reason alone holds: a cluster client gives its own ``unconfirmed()``
    view (``cluster.BoundedRedisCluster``).
    """
    if isinstance(client, DurableRedis):
        return redis.Redis(connection_pool=client.connection_pool)
    view = getattr(client, "unconfirmed", None)
    return cast(redis.Redis, view()) if callable(view) else client
