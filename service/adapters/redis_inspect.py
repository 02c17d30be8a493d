"""What the Redis server says about its persistence and replication, in one round trip.

The durability contract is only as good as the server behind it, so the
service reads the server's own account at start and at every /readyz:
``INFO server|persistence|replication|memory`` (always permitted) and
``CONFIG GET`` for ``appendfsync`` and the ``min-replicas-*`` settings, which
a managed Redis may forbid or rename (then those facts are unknown, and
``redis.assume_durable`` is the operator's word for them).  Judging the facts
against the settings is ``service.preflight``'s job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis.asyncio as redis

from service.adapters.redis_base import redis_errors, text_of


@dataclass(frozen=True)
class ServerFacts:
    version: tuple[int, ...]
    role: str  # "master" or "replica"
    aof_enabled: bool
    aof_write_failing: bool  # the last AOF write or fsync failed
    replicas_online: int
    appendfsync: str | None  # None: CONFIG is not permitted
    min_replicas_to_write: int | None
    maxmemory_policy: str | None

    @property
    def has_waitaof(self) -> bool:
        return self.version >= (7, 2)

    @property
    def config_readable(self) -> bool:
        return self.appendfsync is not None

    def report(self) -> dict[str, Any]:
        """The facts /readyz shows: persistence and replication, no address or version."""
        return {
            "role": self.role,
            "appendonly": "yes" if self.aof_enabled else "no",
            "appendfsync": self.appendfsync,
            "replicas_online": self.replicas_online,
            "min_replicas_to_write": self.min_replicas_to_write,
        }


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".") if part.isdigit())


def _config(reply: Any) -> dict[str, str]:
    if isinstance(reply, BaseException) or not isinstance(reply, dict):
        return {}
    return {text_of(k): text_of(v) for k, v in reply.items()}


def _online_replicas(replication: dict[str, Any]) -> int:
    return sum(
        1
        for key, value in replication.items()
        if key.startswith("slave") and key[5:].isdigit() and isinstance(value, dict) and value.get("state") == "online"
    )


async def inspect_server(client: redis.Redis) -> ServerFacts:
    """Read the facts; StoreUnavailable when the server cannot be asked at all."""
    with redis_errors():
        async with client.pipeline(transaction=False) as pipe:
            pipe.info("server")
            pipe.info("persistence")
            pipe.info("replication")
            pipe.config_get("appendfsync")
            pipe.config_get("min-replicas-to-write")
            pipe.config_get("maxmemory-policy")
            server, persistence, replication, fsync, min_replicas, policy = await pipe.execute(raise_on_error=False)
        for reply in (server, persistence, replication):
            if isinstance(reply, BaseException):
                raise reply
    config = {**_config(fsync), **_config(min_replicas), **_config(policy)}
    min_to_write = config.get("min-replicas-to-write")
    return ServerFacts(
        version=_version(str(server.get("redis_version", "0"))),
        role="master" if replication.get("role") == "master" else "replica",
        aof_enabled=int(persistence.get("aof_enabled", 0)) == 1,
        aof_write_failing=str(persistence.get("aof_last_write_status", "ok")) != "ok",
        replicas_online=_online_replicas(replication),
        appendfsync=config.get("appendfsync"),
        min_replicas_to_write=int(min_to_write) if min_to_write is not None else None,
        maxmemory_policy=config.get("maxmemory-policy"),
    )


PROBE_KEY = "cv:readyz-probe"


async def probe_write(client: redis.Redis) -> None:
    """One small write, confirmed like every other: refused (OOM, READONLY, ...) or unconfirmed is StoreUnavailable."""
    with redis_errors():
        await client.set(PROBE_KEY, "1", px=60_000)
