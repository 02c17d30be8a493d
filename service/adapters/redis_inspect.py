"""What the Redis server says about its persistence and replication, in one round trip.

The durability contract is only as good as the server behind it, so the
service reads the server's own account at start and at every /readyz:
``INFO server|persistence|replication|memory`` (always permitted) and
``CONFIG GET`` for ``appendfsync`` and the ``min-replicas-*`` settings, which
a managed Redis may forbid or rename (then those facts are unknown, and
``redis.assume_durable`` is the operator's word for them).  Judging the facts
against the settings is ``service.preflight``'s job.  On a Redis Cluster
every master is asked, and /readyz's probe write goes to each.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from typing import Any, cast

import redis.asyncio as redis

from service.adapters.redis_base import is_cluster, redis_errors, text_of


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
    masters: int = 1  # more than one: a Redis Cluster, these facts the weakest of its masters
    #: A node of a Redis Cluster reached by a client that is not cluster-aware (a redis:// URL).
    lone_cluster_node: bool = False
    #: On a Redis Cluster: each master (host:port) and its replicas online, so a short one can be named.
    replicas_by_master: tuple[tuple[str, int], ...] = ()

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
    """Read the facts; StoreUnavailable when the server cannot be asked at all.

    On a Redis Cluster every master is asked and the facts are the weakest of
    them (``_weakest``): the contract holds only if it holds on each.
    """
    if is_cluster(client):
        return await _inspect_masters(client)
    with redis_errors():
        async with client.pipeline(transaction=False) as pipe:
            pipe.info("server")
            pipe.info("persistence")
            pipe.info("replication")
            pipe.info("cluster")
            pipe.config_get("appendfsync")
            pipe.config_get("min-replicas-to-write")
            pipe.config_get("maxmemory-policy")
            replies = await pipe.execute(raise_on_error=False)
        server, persistence, replication, cluster, fsync, min_replicas, policy = replies
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
        lone_cluster_node=isinstance(cluster, dict) and int(cluster.get("cluster_enabled", 0)) == 1,
    )


async def _inspect_masters(client: redis.Redis) -> ServerFacts:
    masters = cast(Any, client).get_primaries()
    if not masters:
        with redis_errors():
            await cast(Any, client).initialize()
        masters = cast(Any, client).get_primaries()
    masters = sorted(masters, key=lambda n: n.name)
    facts = []
    for node in masters:
        one = redis.Redis(
            connection_pool=redis.ConnectionPool(connection_class=node.connection_class, **node.connection_kwargs)
        )
        try:
            facts.append(await inspect_server(one))
        finally:
            await one.aclose()
    return replace(
        _weakest(facts),
        replicas_by_master=tuple((n.name, f.replicas_online) for n, f in zip(masters, facts, strict=True)),
    )


def _weakest(facts: list[ServerFacts]) -> ServerFacts:
    fsyncs = {f.appendfsync for f in facts}
    weaker = sorted(str(f) for f in fsyncs if f not in (None, "always"))
    min_replicas = [f.min_replicas_to_write for f in facts]
    return ServerFacts(
        version=min(f.version for f in facts),
        role="master" if all(f.role == "master" for f in facts) else "replica",
        aof_enabled=all(f.aof_enabled for f in facts),
        aof_write_failing=any(f.aof_write_failing for f in facts),
        replicas_online=min(f.replicas_online for f in facts),
        appendfsync=None if None in fsyncs else (weaker[0] if weaker else "always"),
        min_replicas_to_write=None if None in min_replicas else min(cast(list[int], min_replicas)),
        maxmemory_policy=facts[0].maxmemory_policy if len({f.maxmemory_policy for f in facts}) == 1 else "mixed",
        masters=len(facts),  # asked through the cluster client: not "lone" nodes
    )


PROBE_KEY = "cv:readyz-probe"
#: Candidate probe keys tried on a cluster: each lands on a given one of m masters with probability 1/m.
_PROBE_CANDIDATES = 100_000


async def probe_write(client: redis.Redis) -> None:
    """One small write, confirmed like every other: refused (OOM, READONLY, ...) or unconfirmed is StoreUnavailable.

    On a Redis Cluster one on each master, at once: each confirms on its own master.
    """
    with redis_errors():
        if not is_cluster(client):
            await client.set(PROBE_KEY, "1", px=60_000)
            return
        outcomes = await asyncio.gather(
            *(client.set(key, "1", px=60_000) for key in _probe_keys(client)), return_exceptions=True
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome


def _probe_keys(client: redis.Redis) -> list[str]:
    """A probe key on each master of the cluster: ``cv:{readyz.<n>}:probe``, the first n whose slot it serves."""
    cluster = cast(Any, client)
    masters = {node.name for node in cluster.get_primaries()}
    keys: dict[str, str] = {}
    for n in range(_PROBE_CANDIDATES):
        key = f"cv:{{readyz.{n}}}:probe"
        owner = cluster.nodes_manager.get_node_from_slot(cluster.keyslot(key)).name
        if owner in masters:
            keys.setdefault(owner, key)
            if len(keys) == len(masters):
                break
    return list(keys.values())
