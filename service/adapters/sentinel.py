"""Redis Sentinel: ``redis+sentinel://`` URLs, and a client that follows the master through failovers.

The URL names the Sentinels, not the master, so the service never needs
reconfiguring when Sentinel promotes a replica::

    redis+sentinel://[[username]:password@]host[:port][,host[:port]...]/service_name[/db][?sentinel_password=...]

- ``host[:port]``: one or more Sentinels (port 26379 when omitted; IPv6 in
  brackets, ``[::1]:26379``), asked in turn for the master of ``service_name``
  (the name in their ``sentinel monitor`` line);
- ``username``/``password``: what the master and replicas require (``AUTH``);
- ``db``: the database number, 0 when omitted;
- ``sentinel_password``: the Sentinels' own ``requirepass``, if they have one.

redis-py's ``Sentinel.master_for`` does the following: every new connection
asks a Sentinel where the master is, a connection to a demoted master is
dropped, idle connections are closed when the master moves.  During a
failover the old master's connections fail at once (503 ``store_unavailable``)
and new ones succeed as soon as a Sentinel names the promoted replica.  The
pool here is redis-py's Sentinel pool made blocking like the standalone one
(requests wait ``redis.socket_timeout`` for a free connection rather than
fail), and it closes its Sentinel connections with itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote

from redis.asyncio.connection import BlockingConnectionPool
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool

from service.adapters.durability import DurableRedis
from service.adapters.redis_urls import host_ports, userinfo
from service.errors import ConfigError

SCHEME = "redis+sentinel://"
DEFAULT_SENTINEL_PORT = 26379


def is_sentinel_url(url: str) -> bool:
    return url.startswith(SCHEME)


@dataclass(frozen=True)
class SentinelTarget:
    """What a ``redis+sentinel://`` URL says; ``repr`` never shows a password."""

    sentinels: tuple[tuple[str, int], ...]
    service_name: str
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sentinel_password: str | None = field(default=None, repr=False)


def parse_sentinel_url(url: str) -> SentinelTarget:
    """Read a ``redis+sentinel://`` URL; a malformed one is a ConfigError naming what is wrong."""
    if not is_sentinel_url(url):
        raise ConfigError(f"redis.url: a Sentinel URL starts with {SCHEME}")
    rest, _, query = url[len(SCHEME) :].partition("?")
    netloc, _, path = rest.partition("/")
    username, password, netloc = userinfo(netloc)
    sentinels = host_ports(netloc, DEFAULT_SENTINEL_PORT)
    if not sentinels:
        raise ConfigError("redis.url: a Sentinel URL names at least one Sentinel host[:port]")
    parts = [unquote(p) for p in path.split("/") if p]
    if not parts or len(parts) > 2:
        raise ConfigError("redis.url: a Sentinel URL ends with /service_name or /service_name/db")
    db = 0
    if len(parts) == 2:
        if not parts[1].isdigit():
            raise ConfigError(f"redis.url: the database {parts[1]!r} is not a number")
        db = int(parts[1])
    options = parse_qs(query, keep_blank_values=True)
    unknown = set(options) - {"sentinel_password"}
    if unknown:
        raise ConfigError(f"redis.url: unknown Sentinel URL option(s): {', '.join(sorted(unknown))}")
    sentinel_password = options.get("sentinel_password", [None])[-1]
    return SentinelTarget(sentinels, parts[0], db, username, password, sentinel_password)


class BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """redis-py's Sentinel pool with the blocking pool's wait for a free connection."""

    async def disconnect(self, inuse_connections: bool = True) -> None:
        await super().disconnect(inuse_connections)
        if inuse_connections:  # the client is closing (a failover only drops idle connections)
            for sentinel in self.sentinel_manager.sentinels:
                await sentinel.aclose()


def sentinel_client(target: SentinelTarget, pool_options: dict[str, Any]) -> DurableRedis:
    """A client of the master Sentinel names, with the same pool options as a standalone client."""
    socket_options = {k: v for k, v in pool_options.items() if k.startswith("socket_")}
    sentinel_options: dict[str, Any] = {
        **socket_options,
        "retry": pool_options.get("retry"),
        "password": target.sentinel_password,
    }
    manager = Sentinel(list(target.sentinels), sentinel_kwargs=sentinel_options)  # type: ignore[no-untyped-call]
    client = manager.master_for(
        target.service_name,
        redis_class=DurableRedis,
        connection_pool_class=BlockingSentinelPool,
        db=target.db,
        username=target.username,
        password=target.password,
        **pool_options,
    )
    assert isinstance(client, DurableRedis)
    return client
