"""Auto-pipelining: the Redis commands of concurrent requests go out together, one write and one read.

Each request makes one Redis round trip, but with redis-py every round trip
also costs a pooled connection taken and given back, a socket write, a read
wakeup and the client's bookkeeping, around a tenth of a token request's CPU.
Requests that run in the same event-loop tick therefore hand their commands
to :class:`AutoPipeline`, which sends them on one connection in one packet at
the start of the next tick and reads the replies in order, as ioredis's
``enableAutoPipelining`` does.  What each caller sees is unchanged:

- its own reply, or its own error (an error reply for one command is that
  caller's exception only; a lost connection or a timeout fails every command
  of the batch, since none can tell whether it ran);
- the durability contract: the confirmation (``WAIT``/``WAITAOF``, see
  ``durability``) follows the batch's last command on the same connection, so
  it covers every write in the batch, and a write it could not confirm fails
  with ``NotDurable`` (503) while the batch's reads keep their replies;
- the metrics: the caller's ``execute_command`` is still the one timed
  (``redis_metrics``), from the call to its reply.

Commands that block the connection (``BLPOP``, ``XREAD BLOCK``, ``WAIT``...)
or change its state (``SELECT``, ``MULTI``, ``WATCH``...) never join a batch;
transactions and pipelines that use ``WATCH`` or scripts keep their own
connection (``durability.DurablePipeline``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from hiredis import pack_command as hiredis_pack  # redis[hiredis] is a dependency
from redis.asyncio.connection import Connection
from redis.exceptions import ResponseError

#: Commands that must have a connection to themselves: they block it, or they change its state.
UNBATCHED = frozenset(
    """
    AUTH BLMOVE BLMPOP BLPOP BRPOP BRPOPLPUSH BZMPOP BZPOPMAX BZPOPMIN CLIENT DISCARD EXEC HELLO MONITOR
    MULTI PSUBSCRIBE PUNSUBSCRIBE QUIT READONLY READWRITE RESET SELECT SHUTDOWN SSUBSCRIBE SUBSCRIBE
    SUNSUBSCRIBE SYNC PSYNC UNSUBSCRIBE UNWATCH WAIT WAITAOF WATCH XREAD XREADGROUP DEBUG
    """.split()  # noqa: SIM905 - a word list reads better than quoted strings
)

Command = tuple[tuple[Any, ...], Mapping[str, Any]]
#: Argument types hiredis packs byte for byte as redis-py's encoder does (bool is not int here: type() is exact).
_PLAIN_ARGS = frozenset((str, bytes, int))


def pack(conn: Connection, commands: Sequence[Sequence[Any]]) -> list[bytes]:
    """The commands in RESP, as ``conn.pack_commands`` makes them; with hiredis's C packer when every argument
    is a plain str, bytes or int under UTF-8 (redis-py's asyncio packer is pure Python, a few percent of a
    token request's CPU)."""
    encoder = conn.encoder
    if encoder.encoding.lower() not in ("utf-8", "utf8") or encoder.encoding_errors != "strict":
        return list(conn.pack_commands(commands))
    for args in commands:
        name = args[0]
        # (the types of the arguments as one set, in C: a generator over 20-odd script arguments cost twice as much)
        if not _PLAIN_ARGS.issuperset(map(type, args)) or (" " in name if type(name) is str else b" " in name):
            return list(conn.pack_commands(commands))
    return [b"".join([hiredis_pack(tuple(args)) for args in commands])]


def batchable(args: Sequence[Any]) -> bool:
    if not args:
        return False
    name = args[0]
    text = name.decode() if isinstance(name, bytes) else str(name)
    return text.split(" ", 1)[0].upper() not in UNBATCHED


class _Entry:
    """One caller's commands (one, or a pipeline's) and the future its replies go to."""

    __slots__ = ("commands", "future", "group")

    def __init__(self, commands: list[Command], future: asyncio.Future[Any], group: bool) -> None:
        self.commands = commands
        self.future = future
        self.group = group


class AutoPipeline:
    """Batches the commands submitted in one event-loop tick onto one connection of ``client``'s pool.

    ``confirmation(commands)`` names the commands to append after a batch (the
    durability confirmation, or none); ``check(replies)`` raises when their
    replies do not confirm the batch's writes; ``writes(args)`` says whether a
    command is a write that the confirmation covers.
    """

    def __init__(
        self,
        client: Any,
        confirmation: Callable[[Sequence[tuple[Any, ...]]], list[tuple[Any, ...]]],
        check: Callable[[Sequence[Any]], None],
        writes: Callable[[Sequence[Any]], bool],
    ) -> None:
        self.client = client
        self.confirmation = confirmation
        self.check = check
        self.writes = writes
        self._queue: list[_Entry] = []
        self._flushing: set[asyncio.Task[None]] = set()
        self._scheduled = False

    async def command(self, args: tuple[Any, ...], options: Mapping[str, Any]) -> Any:
        """The reply to one command, sent with whatever else is submitted in this tick."""
        return await self._submit([(args, options)], group=False)

    async def group(self, commands: list[Command]) -> list[Any]:
        """The replies to a pipeline's commands, in order, error replies in place (as redis-py's pipeline)."""
        replies: list[Any] = await self._submit(commands, group=True)
        return replies

    def _submit(self, commands: list[Command], *, group: bool) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append(_Entry(commands, future, group))
        if not self._scheduled:
            self._scheduled = True
            task = loop.create_task(self._flush())  # its first step runs after this tick's other callbacks
            self._flushing.add(task)
            task.add_done_callback(self._flushing.discard)
        return future

    async def _flush(self) -> None:
        batch, self._queue, self._scheduled = self._queue, [], False
        try:
            await self._send(batch)
        except BaseException as exc:
            for entry in batch:
                if not entry.future.done():
                    entry.future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise

    async def _send(self, batch: list[_Entry]) -> None:
        client = self.client
        pool = client.connection_pool
        conn: Connection = await pool.get_connection()
        try:
            commands = [args for entry in batch for args, _ in entry.commands]
            confirm = self.confirmation(commands)
            try:
                await conn.send_packed_command(pack(conn, [*commands, *confirm]))
                replies = [await self._replies(conn, entry) for entry in batch]
                confirmed = [await self._reply(conn, "_", {}) for _ in confirm]
            except BaseException:
                await conn.disconnect()  # replies may be left unread: the connection is out of step
                raise
        finally:
            await pool.release(conn)
        refusal: BaseException | None = None
        try:
            self.check(confirmed)
        except Exception as exc:  # NotDurable: for the writes only
            refusal = exc
        for entry, reply in zip(batch, replies, strict=True):
            if entry.future.done():  # its caller was cancelled; the command ran all the same
                continue
            written = refusal is not None and any(self.writes(args) for args, _ in entry.commands)
            failed = [r for r in reply if isinstance(r, BaseException)]
            if not entry.group and failed:
                entry.future.set_exception(failed[0])  # the write itself failed: nothing to confirm
            elif written:
                assert refusal is not None
                entry.future.set_exception(refusal)
            else:
                entry.future.set_result(reply if entry.group else reply[0])

    async def _replies(self, conn: Connection, entry: _Entry) -> list[Any]:
        return [await self._reply(conn, args[0], options) for args, options in entry.commands]

    async def _reply(self, conn: Connection, name: Any, options: Mapping[str, Any]) -> Any:
        """One parsed reply; an error reply is returned rather than raised, so the connection stays in step."""
        try:
            return await self.client.parse_response(conn, name, **options)
        except ResponseError as exc:
            return exc
