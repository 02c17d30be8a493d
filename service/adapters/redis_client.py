"""Building the redis.asyncio client from settings, the same way for serve and the CLI.

A blocking pool (requests wait briefly for a free connection rather than fail)
and no automatic retries: a write retried after a timeout could be applied
twice, so a failed command becomes a 503 and the client retries with its
idempotency key instead.

``redis://``, ``rediss://`` and ``unix://`` URLs name one server;
``redis+sentinel://`` URLs name Sentinels that say which server is the master
(``service.adapters.sentinel``).  Either way the client confirms every write
under ``redis.durability`` (``service.adapters.durability``).
``redis+cluster://`` URLs name nodes of a Redis Cluster
(``service.adapters.cluster``), which confirms each write the same way on
the master that took it.  Every client times its round trips for the metrics
(``service.adapters.redis_metrics``).
"""

from __future__ import annotations

from typing import Any, cast

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.maint_notifications import MaintNotificationsConfig

from service.adapters.cluster import cluster_client, is_cluster_url, parse_cluster_url
from service.adapters.durability import Durability, DurableRedis
from service.adapters.redis_metrics import time_round_trips
from service.adapters.sentinel import is_sentinel_url, parse_sentinel_url, sentinel_client
from service.settings import RedisSettings


def pool_options(settings: RedisSettings) -> dict[str, Any]:
    return {
        "max_connections": settings.max_connections,
        "timeout": settings.socket_timeout,
        "socket_timeout": settings.socket_timeout,
        "socket_connect_timeout": settings.connect_timeout,
        "retry": Retry(NoBackoff(), 0),
        "health_check_interval": 30,
        # With maintenance notifications on "auto", redis-py 8 skips its check for dead pooled
        # connections, so every connection failed once after a Redis restart.
        "maint_notifications_config": MaintNotificationsConfig(enabled=False),
    }


def make_client(url: str, settings: RedisSettings) -> redis.Redis:
    """The client for ``url``; ConfigError when the URL or its combination with the settings is wrong."""
    if is_cluster_url(url):
        # RedisCluster offers the commands the stores use (not the redis.Redis class): typed as one for them.
        return time_round_trips(cast(redis.Redis, cluster_client(parse_cluster_url(url), settings)))
    client: DurableRedis
    if is_sentinel_url(url):
        client = sentinel_client(parse_sentinel_url(url), pool_options(settings))
    else:
        standalone = DurableRedis.from_pool(redis.BlockingConnectionPool.from_url(url, **pool_options(settings)))
        assert isinstance(standalone, DurableRedis)
        client = standalone
    client.durability = Durability.from_settings(settings)
    return time_round_trips(client)
