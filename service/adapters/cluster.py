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

Durability: every master must run ``appendonly yes`` + ``appendfsync
always`` (checked at start and by /readyz on each master).  Confirming writes
on replicas (``redis.durability: replicas``) needs ``WAIT`` on the connection
of each write, node by node; this client does not do that, so that setting
is refused with a cluster URL rather than silently weakened.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import redis.exceptions as redis_exc
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

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


def check_durability(settings: RedisSettings) -> None:
    """Refuse what a cluster client cannot confirm (module docstring)."""
    if "replicas" in settings.durability:
        raise ConfigError(
            f"redis.durability {settings.durability!r} is not available with a Redis Cluster URL: "
            "use 'fsync' (every master with appendonly yes and appendfsync always)"
        )


class BoundedRedisCluster(RedisCluster):
    """RedisCluster that waits for its turn instead of failing when connections run out (module docstring)."""

    def __init__(self, *args: Any, in_flight: int, wait_seconds: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._turns = asyncio.Semaphore(in_flight)
        self._wait_seconds = wait_seconds

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
        pipe = super().pipeline(transaction, shard_hint)
        execute = pipe.execute

        async def execute_in_turn(raise_on_error: bool = True) -> Any:
            async with self.turn():
                return await execute(raise_on_error)

        setattr(pipe, "execute", execute_in_turn)  # noqa: B010 - instance attribute on purpose
        return pipe


def cluster_client(target: ClusterTarget, settings: RedisSettings) -> RedisCluster:
    """A cluster-mode client with the standalone client's timeouts and no retries (module docstring)."""
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
        startup_nodes=[ClusterNode(host, port) for host, port in target.nodes],
        username=target.username,
        password=target.password,
        max_connections=settings.max_connections,  # per node
        retry=Retry(NoBackoff(), 0),
        require_full_coverage=True,
        **options,
    )
