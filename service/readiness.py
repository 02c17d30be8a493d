"""Can this process acknowledge writes right now, under the configured durability contract?

/readyz asks this of Redis on every probe, so a load balancer stops sending
traffic to a replica of the service whose writes would all answer 503: the
server's own account of its persistence and replication (judged by
``service.preflight.durability_problems``, the same judgment as at start),
then one real write confirmed like any other (``redis_inspect.probe_write``),
which catches what settings do not show: a server out of memory, a replica
that became read-only, a replica that does not acknowledge in time.  On a
Redis Cluster both are done on every master, and a failing one is named.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as redis

from service.adapters.cluster import BoundedRedisCluster
from service.adapters.durability import DurableRedis
from service.adapters.redis_base import is_cluster
from service.adapters.redis_inspect import ServerFacts, inspect_server, probe_write
from service.adapters.sentinel import is_sentinel_url
from service.errors import StoreUnavailable
from service.preflight import adopt_server, durability_problems
from service.settings import RedisSettings


def reason_of(exc: StoreUnavailable) -> str:
    return str(exc).removeprefix("Redis: ")


@dataclass
class RedisReadiness:
    redis: str = "ok"  # "ok" or why Redis cannot be used at all
    durability: str = "ok"  # "ok" or the first reason the contract cannot be kept
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.redis == "ok" and self.durability == "ok"


def _report(settings: RedisSettings, client: redis.Redis, facts: ServerFacts) -> dict[str, Any]:
    confirmed_by = (
        client.durability.confirmed_by if isinstance(client, DurableRedis | BoundedRedisCluster) else "nothing"
    )
    topology = "standalone"
    if settings.url and is_sentinel_url(settings.url):
        topology = "sentinel"
    elif is_cluster(client):
        topology, confirmed_by = "cluster", f"{confirmed_by} on every master"
    report = {
        "contract": settings.durability,
        "replicas_required": settings.replicas if "replicas" in settings.durability else 0,
        "confirmed_by": confirmed_by,
        "topology": topology,
        **facts.report(),
    }
    if topology == "cluster":
        report["masters"] = facts.masters
    return report


async def redis_readiness(settings: RedisSettings, client: redis.Redis) -> RedisReadiness:
    try:
        facts = await inspect_server(client)
    except StoreUnavailable as exc:
        return RedisReadiness(redis=reason_of(exc))
    adopt_server(client, facts)
    readiness = RedisReadiness(report=_report(settings, client, facts))
    problems = durability_problems(settings, facts).all
    if not problems:
        try:
            await probe_write(client)
        except StoreUnavailable as exc:
            problems.append(reason_of(exc))
    if problems:
        readiness.durability = problems[0]
    return readiness
