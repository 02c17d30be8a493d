"""Start-up checks: what production refuses and development only warns about.

Production refuses the generated development master key (see the keyring),
a self-signed or over-long-lived TLS certificate, and a Redis whose
persistence could lose an acknowledged write.  Development logs the same
findings as warnings and carries on.

The Redis judgment (``durability_problems``) is also what /readyz reports, so
the two never disagree: a configuration that cannot keep the contract of
``redis.durability`` (``appendfsync`` other than ``always`` for ``fsync``) is
refused at start in production, while what changes at run time (the server
turned replica, fewer replicas online than ``redis.replicas``, on a cluster
the masters short of them by name) only warns at start and turns /readyz 503
until it is fixed.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace
from pathlib import Path

import redis.asyncio as redis

from service.adapters.cluster import BoundedRedisCluster
from service.adapters.durability import DurableRedis
from service.adapters.redis_failures import NOT_A_CLUSTER_URL
from service.adapters.redis_inspect import ServerFacts, inspect_server
from service.errors import ConfigError
from service.settings import RedisSettings, Settings
from service.tls.certs import check_certificate, inspect_certificate


@dataclass
class Findings:
    """Problems found; fatal ones stop production, everything is a warning in development."""

    fatal: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def add(self, message: str, *, production: bool) -> None:
        (self.fatal if production else self.warnings).append(message)

    def raise_if_fatal(self) -> None:
        if self.fatal:
            raise ConfigError(self.fatal[0])


def check_certificate_file(settings: Settings, cert_file: Path, findings: Findings, *, now: dt.datetime) -> None:
    info = inspect_certificate(cert_file)
    if info.self_signed:
        findings.add(f"tls.cert_file {cert_file}: self-signed certificate", production=settings.production)
    for problem in check_certificate(info, now=now):
        findings.add(f"tls.cert_file {cert_file}: {problem}", production=settings.production)


@dataclass(frozen=True)
class DurabilityProblems:
    """Why the server cannot keep ``redis.durability``: set up so (``static``) or for now (``dynamic``)."""

    static: list[str] = field(default_factory=list)
    dynamic: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # risks worth a warning that do not break the contract

    @property
    def all(self) -> list[str]:
        return self.static + self.dynamic


def durability_problems(settings: RedisSettings, facts: ServerFacts) -> DurabilityProblems:
    """Judge the server's persistence and replication against the configured contract."""
    problems = DurabilityProblems()
    if facts.lone_cluster_node:
        problems.static.append(f"redis.url: {NOT_A_CLUSTER_URL}")
    if facts.role != "master":
        problems.dynamic.append(
            "redis.url: the server is a read-only replica; point redis.url at the master or use redis+sentinel://"
        )
    if "fsync" in settings.durability and not settings.assume_durable:
        if not facts.config_readable and facts.aof_enabled:
            problems.static.append(
                "redis.url: cannot read the server's persistence settings (CONFIG is disabled); "
                "set redis.assume_durable: true if you have checked them yourself"
            )
        elif not facts.aof_enabled or facts.appendfsync != "always":
            problems.static.append(
                f"redis.url: the server runs appendonly={'yes' if facts.aof_enabled else 'no'} "
                f"appendfsync={facts.appendfsync}; an acknowledged write could be lost "
                "(needs appendonly yes and appendfsync always)"
            )
    if "fsync" in settings.durability and facts.aof_write_failing:
        problems.dynamic.append("redis.url: the server's last append-only file write failed (disk full?)")
    if "replicas" in settings.durability:
        short = [(master, online) for master, online in facts.replicas_by_master if online < settings.replicas]
        if short:  # a cluster: name the masters that cannot confirm their writes
            problems.dynamic.append(
                f"redis.replicas: {settings.replicas} replica(s) must confirm each write, "
                + ", ".join(f"master {master} has {online} online" for master, online in short)
            )
        elif facts.replicas_online < settings.replicas:
            problems.dynamic.append(
                f"redis.replicas: {settings.replicas} replica(s) must confirm each write, "
                f"{facts.replicas_online} online"
            )
        if not facts.aof_enabled and settings.durability == "replicas":
            problems.notes.append(
                "redis.url: the master runs without an append-only file: if it restarts before a failover it "
                "comes back empty and its replicas copy that; do not restart it automatically"
            )
    return problems


def adopt_server(client: redis.Redis, facts: ServerFacts) -> None:
    """Confirm local fsyncs with WAITAOF where the server has it (Redis 7.2+; on a cluster, every master)."""
    if isinstance(client, DurableRedis | BoundedRedisCluster) and facts.has_waitaof != client.durability.waitaof:
        client.durability = replace(client.durability, waitaof=facts.has_waitaof)


async def check_redis(settings: Settings, client: redis.Redis, findings: Findings) -> ServerFacts:
    """At start: learn how writes can be confirmed, refuse (production) or warn about the server."""
    facts = await inspect_server(client)
    adopt_server(client, facts)
    problems = durability_problems(settings.redis, facts)
    for problem in problems.static:
        findings.add(problem, production=settings.production)
    findings.warnings.extend(problems.dynamic + problems.notes)
    return facts
