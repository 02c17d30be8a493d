"""Building the redis.asyncio client from settings, the same way for serve and the CLI.

A blocking pool (requests wait briefly for a free connection rather than fail)
and no automatic retries: a write retried after a timeout could be applied
twice, so a failed command becomes a 503 and the client retries with its
idempotency key instead.

``redis://``, ``rediss://`` and ``unix://`` URLs name one server;
``redis+sentinel://`` URLs name Sentinels that say which server is the master
(``service.adapters.sentinel``).  Either way the client confirms every write
under ``redis.durability`` (``service.adapters.durability``) and times every round trip for
the metrics (``service.adapters.redis_metrics``).
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.maint_notifications import MaintNotificationsConfig

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


def make_client(url: str, settings: RedisSettings) -> DurableRedis:
    client: DurableRedis
    if is_sentinel_url(url):
        client = sentinel_client(parse_sentinel_url(url), pool_options(settings))
    else:
        standalone = DurableRedis.from_pool(redis.BlockingConnectionPool.from_url(url, **pool_options(settings)))
        assert isinstance(standalone, DurableRedis)
        client = standalone
    client.durability = Durability.from_settings(settings)
    return time_round_trips(client)
