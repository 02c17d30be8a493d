"""Building the redis.asyncio client from settings, the same way for serve and the CLI.

A blocking pool (requests wait briefly for a free connection rather than fail)
and no automatic retries: a write retried after a timeout could be applied
twice, so a failed command becomes a 503 and the client retries with its
idempotency key instead.
"""

from __future__ import annotations

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.maint_notifications import MaintNotificationsConfig

from service.settings import RedisSettings


def make_client(url: str, settings: RedisSettings) -> redis.Redis:
    pool = redis.BlockingConnectionPool.from_url(
        url,
        max_connections=settings.max_connections,
        timeout=settings.socket_timeout,
        socket_timeout=settings.socket_timeout,
        socket_connect_timeout=settings.connect_timeout,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=30,
        # With maintenance notifications on "auto", redis-py 8 skips its check for dead pooled
        # connections, so every connection failed once after a Redis restart.
        maint_notifications_config=MaintNotificationsConfig(enabled=False),
    )
    return redis.Redis(connection_pool=pool)
