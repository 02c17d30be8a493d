"""Redis Cluster: ``redis+cluster://`` URLs and the cluster-mode client.

The URL names some of the cluster's nodes (any of them; the client learns
the rest and the slot map from them)::

    redis+cluster://[[username]:password@]host[:port][,host[:port]...]
    rediss+cluster://...      (TLS to every node)

(port 6379 when omitted; IPv6 in brackets.)  The client is redis-py's
``RedisCluster``: it routes each command to the master of its key's slot,
follows ``MOVED`` and ``ASK`` redirections while slots move, and reloads the
slot map after a failover.  Like the standalone client it never retries a
command after a connection error or timeout (a write retried blindly could be
applied twice): the request fails with 503 and the client retries with its
Idempotency-Key.  A redirection is not such a retry: the node that redirects
has not applied the command.

The key layout (``redis_base``) keeps every multi-key script within one hash
tag, so it runs on one slot; the few operations whose keys cannot share a tag
(a charge start, the velocity gate, a new staff account, a multi-token
forward) take per-slot steps on a cluster, described where they are written.

Connections: redis-py's cluster client fails a command at once when a
node's pool is exhausted, where the standalone client waits for a free
connection.  ``BoundedRedisCluster`` restores the waiting: at most
``redis.max_connections`` commands and pipelines are in flight at a time
(so no node's pool can run out), and one that waits longer than
``redis.socket_timeout`` for its turn fails as unavailable (503).

Durability: ``redis.durability`` means on a cluster what it means on one
server (``durability``), master by master.  Every write is confirmed by the
master that took it, on the connection that carried it: the client's
connections (``DurableConnection``) add the confirmation (``WAIT <replicas>
<ms>``, and for ``fsync`` on Redis 7.2+ ``WAITAOF 1 0 <ms>``, from the same
``durability.Durability``) to each packet that holds a write, in the same
packet, and read its replies before they hand back the write's own.  So a
command, a pipeline's commands for one node and a transaction each get one
confirmation per node, after their commands.  Below redis-py's routing, this
leaves the routing as it is: a ``MOVED`` or ``ASK`` reply means the node did
not take the write (the confirmation that followed it is read and dropped),
and the command sent again to the node named is confirmed there.  A write that
cannot be confirmed raises ``NodeNotDurable`` (a ``NotDurable``: 503) naming
the master.  ``fsync`` before Redis 7.2 adds no command: every master must run
``appendonly yes`` + ``appendfsync always``, and with ``replicas`` each must
have ``redis.replicas`` replicas online (both checked at start and by /readyz
on each master, which also probes one write on each).  Idempotency records
go out unconfirmed, as on one server (``durability.unconfirmed``), through
``UnconfirmedCluster``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AbstractAsyncContextManager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import redis.exceptions as redis_exc
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.asyncio.connection import Connection, SSLConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.cluster import AsyncRedisClusterCommands
from redis.commands.core import AsyncScript
from redis.exceptions import ResponseError
from redis.typing import ScriptTextT

from service.adapters.durability import NONE, Durability, NotDurable, needs_confirmation, note_script
from service.adapters.redis_urls import host_ports, userinfo
from service.errors import ConfigError
from service.settings import RedisSettings

SCHEMES = ("redis+cluster://", "rediss+cluster://")
DEFAULT_PORT = 6379


def is_cluster_url(url: str) -> bool:
    return url.startswith(SCHEMES)


@dataclass(frozen=True)
class ClusterTarget:
    """What a ``redis+cluster://`` URL says; ``repr`` never shows a password."""

    nodes: tuple[tuple[str, int], ...]
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)


def parse_cluster_url(url: str) -> ClusterTarget:
    """Read a ``redis+cluster://`` URL; a malformed one is a ConfigError naming what is wrong."""
    if not is_cluster_url(url):
        raise ConfigError(f"redis.url: a cluster URL starts with {' or '.join(SCHEMES)}")
    tls = url.startswith("rediss+")
    rest = url.split("://", 1)[1]
    netloc, _, path = rest.partition("/")
    if path.strip("/") or "?" in netloc:
        raise ConfigError("redis.url: a cluster URL has no database or options (a cluster has database 0 only)")
    username, password, netloc = userinfo(netloc)
    nodes = host_ports(netloc, DEFAULT_PORT)
    if not nodes:
        raise ConfigError("redis.url: a cluster URL names at least one node host[:port]")
    return ClusterTarget(nodes, tls, username, password)


#: Set while a command runs through ``UnconfirmedCluster``: its writes go out without a confirmation.
_UNCONFIRMED: ContextVar[bool] = ContextVar("cardvault_cluster_unconfirmed", default=False)


@dataclass
class Confirmer:
    """What confirms a write, shared by a cluster client and every connection of it (start-up may change it)."""

    durability: Durability = NONE


class NodeNotDurable(NotDurable):
    """A master took a write but could not confirm it in time; the message names the master (host:port)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def __str__(self) -> str:
        # redis-py's cluster pipelines put the failed command (keys, values) in front of an error's args.
        return self.reason


@dataclass
class _Plan:
    """A packet sent with a confirmation: which of its replies are still to come, and what follows them."""

    writes: deque[bool]  # one per command still unanswered: may it change data?
    confirm: list[tuple[Any, ...]]
    durability: Durability
    wrote: bool = False  # a command that may change data was answered without an error


class DurableConnection(Connection):
    """A cluster node's connection that confirms the writes it carries (module docstring).

    Packing a command (or several) that may write appends the confirmation
    commands and leaves a ``_Plan``; sending the packet queues that plan; reading
    the reply to the packet's last command reads the confirmations' replies too
    and raises ``NodeNotDurable`` when a write went through unconfirmed.  A
    reply of an error (``MOVED``, ``ASK``, ``READONLY``...) is not a write, and a
    connection that fails or is closed forgets its plans (redis-py drops it).
    """

    def __init__(self, *, confirmer: Confirmer, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._confirmer = confirmer
        self._packing = False
        self._next: _Plan | None = None
        self._plans: deque[_Plan] = deque()

    def pack_command(self, *args: Any) -> list[bytes]:
        if self._packing:
            return super().pack_command(*args)
        return self.pack_commands([args])

    def pack_commands(self, commands: Iterable[Iterable[Any]]) -> list[bytes]:
        listed = [tuple(command) for command in commands]
        durability = self._confirmer.durability
        confirm = [] if _UNCONFIRMED.get() else durability.commands()
        writes = [needs_confirmation(args) for args in listed] if confirm else []
        if not any(writes):
            confirm = []
        self._next = _Plan(deque(writes), confirm, durability) if confirm else None
        self._packing = True
        try:
            return list(super().pack_commands([*listed, *confirm]))
        finally:
            self._packing = False

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        plan, self._next = self._next, None  # taken first: a health check packs its PING in between
        await super().send_packed_command(command, check_health)
        if plan is not None:
            self._plans.append(plan)

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        if not self._plans:
            return await super().read_response(*args, **kwargs)
        plan = self._plans[0]
        reply = await self._reply(*args, **kwargs)
        if plan.writes.popleft() and not isinstance(reply, BaseException):
            plan.wrote = True
        if not plan.writes:
            if self._plans and self._plans[0] is plan:  # not forgotten by a disconnect meanwhile
                self._plans.popleft()
            confirmations = [await self._reply() for _ in plan.confirm]
            if plan.wrote:
                try:
                    plan.durability.check(confirmations)
                except NotDurable as exc:
                    raise NodeNotDurable(f"{exc} (master {self.host}:{self.port})") from None
        if isinstance(reply, BaseException):
            raise reply
        return reply

    async def _reply(self, *args: Any, **kwargs: Any) -> Any:
        """One reply; an error reply returned rather than raised, so the plan stays in step with the socket."""
        try:
            return await super().read_response(*args, **kwargs)
        except ResponseError as exc:
            return exc
        except BaseException:
            self._plans.clear()  # out of step: redis-py disconnects it
            raise

    async def disconnect(self, *args: Any, **kwargs: Any) -> None:
        self._plans.clear()
        self._next = None
        await super().disconnect(*args, **kwargs)


class DurableSSLConnection(DurableConnection, SSLConnection):
    """``DurableConnection`` over TLS (``rediss+cluster://``)."""


class BoundedRedisCluster(RedisCluster):
    """RedisCluster that waits for its turn instead of failing when connections run out, and confirms every
    write under ``durability`` on the master that took it (module docstring)."""

    def __init__(
        self, *args: Any, in_flight: int, wait_seconds: float, durability: Durability = NONE, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self._turns = asyncio.Semaphore(in_flight)
        self._wait_seconds = wait_seconds
        self._confirmer = Confirmer(durability)
        self._confirm_on_every_connection()

    def _confirm_on_every_connection(self) -> None:
        """Nodes found later are made with ``connection_kwargs`` (the dict redis-py's NodesManager holds too)."""
        options = self.connection_kwargs
        assert self.nodes_manager.connection_kwargs is options, "redis-py no longer shares its connection options"
        durable = DurableSSLConnection if issubclass(options["connection_class"], SSLConnection) else DurableConnection
        options["connection_class"] = durable
        options["confirmer"] = self._confirmer
        for node in self.startup_nodes:
            node.connection_class = durable
            node.connection_kwargs["confirmer"] = self._confirmer

    @property
    def durability(self) -> Durability:
        return self._confirmer.durability

    @durability.setter
    def durability(self, durability: Durability) -> None:
        self._confirmer.durability = durability

    def unconfirmed(self) -> UnconfirmedCluster:
        """This client with its writes left unconfirmed (``durability.unconfirmed``)."""
        return UnconfirmedCluster(self)

    def register_script(self, script: ScriptTextT) -> AsyncScript:  # type: ignore[override]  # the async mixin's type
        return note_script(script, super().register_script(script))

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        try:
            async with asyncio.timeout(self._wait_seconds):
                await self._turns.acquire()
        except TimeoutError:
            raise redis_exc.ConnectionError("no free Redis connection in time") from None
        try:
            yield
        finally:
            self._turns.release()

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        async with self.turn():
            return await super().execute_command(*args, **kwargs)

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> ClusterPipeline:
        return _executed_within(super().pipeline(transaction, shard_hint), self.turn)


def _executed_within(pipe: ClusterPipeline, within: Callable[[], AbstractAsyncContextManager[None]]) -> ClusterPipeline:
    """``pipe``, its ``execute`` run inside ``within()``."""
    execute = pipe.execute

    async def execute_within(raise_on_error: bool = True) -> Any:
        async with within():
            return await execute(raise_on_error)

    setattr(pipe, "execute", execute_within)  # noqa: B010 - instance attribute on purpose
    return pipe


@contextlib.asynccontextmanager
async def _without_confirmation() -> AsyncIterator[None]:
    """Writes packed meanwhile, in this task and the tasks it starts, go out without a confirmation."""
    unconfirmed = _UNCONFIRMED.set(True)
    try:
        yield
    finally:
        _UNCONFIRMED.reset(unconfirmed)


class UnconfirmedCluster(AsyncRedisClusterCommands):
    """A cluster client's commands and pipelines without confirmation, on its own nodes and connections."""

    def __init__(self, client: BoundedRedisCluster) -> None:
        self._client = client
        self._event_dispatcher = client._event_dispatcher  # what redis-py's command mixins expect of a client

    def __getattr__(self, name: str) -> Any:
        if name == "_client":
            raise AttributeError(name)
        return getattr(self._client, name)

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        async with _without_confirmation():
            return await self._client.execute_command(*args, **kwargs)

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> ClusterPipeline:
        """Also what multi-key commands (DEL, MSET over several slots) use."""
        return _executed_within(self._client.pipeline(transaction, shard_hint), _without_confirmation)


def cluster_client(target: ClusterTarget, settings: RedisSettings) -> RedisCluster:
    """A cluster-mode client with the standalone client's timeouts, no retries, and confirmed writes
    (module docstring)."""
    options: dict[str, Any] = {
        "socket_timeout": settings.socket_timeout,
        "socket_connect_timeout": settings.connect_timeout,
        "health_check_interval": 30,
    }
    if target.tls:
        options["ssl"] = True
    return BoundedRedisCluster(
        in_flight=settings.max_connections,
        wait_seconds=settings.socket_timeout,
        durability=Durability.from_settings(settings),
        startup_nodes=[ClusterNode(host, port) for host, port in target.nodes],
        username=target.username,
        password=target.password,
        max_connections=settings.max_connections,  # per node
        retry=Retry(NoBackoff(), 0),
        require_full_coverage=True,
        **options,
    )
