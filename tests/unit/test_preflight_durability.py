"""The judgment of a Redis server against ``redis.durability``: what is refused, what only waits."""

from __future__ import annotations

from dataclasses import replace

import pytest

from service.adapters.redis_inspect import ServerFacts
from service.errors import ConfigError
from service.preflight import durability_problems
from service.settings import RedisSettings
from service.settings_loader import load_settings

DURABLE = ServerFacts(
    version=(7, 0, 15),
    role="master",
    aof_enabled=True,
    aof_write_failing=False,
    replicas_online=0,
    appendfsync="always",
    min_replicas_to_write=0,
    maxmemory_policy="noeviction",
)


def settings(durability: str = "fsync", replicas: int = 1, **extra: object) -> RedisSettings:
    return RedisSettings(durability=durability, replicas=replicas, **extra)  # type: ignore[arg-type]


class TestFsync:
    def test_a_durable_standalone_server_passes(self) -> None:
        """appendonly yes + appendfsync always, a master: nothing to say."""
        assert durability_problems(settings(), DURABLE).all == []

    def test_everysec_is_a_static_problem_naming_the_settings(self) -> None:
        """appendfsync everysec could lose an acknowledged write: refused at start in production."""
        problems = durability_problems(settings(), replace(DURABLE, appendfsync="everysec"))
        assert len(problems.static) == 1
        assert "appendfsync=everysec" in problems.static[0]
        assert problems.dynamic == []

    def test_config_disabled_asks_for_assume_durable(self) -> None:
        """CONFIG forbidden: the setting cannot be read, unless the operator vouches for it."""
        hidden = replace(DURABLE, appendfsync=None, min_replicas_to_write=None)
        assert "redis.assume_durable" in durability_problems(settings(), hidden).static[0]
        assert durability_problems(settings(assume_durable=True), hidden).all == []

    def test_a_failing_aof_write_is_a_dynamic_problem(self) -> None:
        """aof_last_write_status err (disk full): not ready until it recovers."""
        problems = durability_problems(settings(), replace(DURABLE, aof_write_failing=True))
        assert problems.static == []
        assert "append-only file write failed" in problems.dynamic[0]


class TestReplicas:
    def test_too_few_replicas_online_is_dynamic(self) -> None:
        """replicas: 2 with one online: not ready, but not a start-up refusal."""
        problems = durability_problems(settings("replicas", 2), replace(DURABLE, replicas_online=1))
        assert problems.static == []
        assert problems.dynamic == ["redis.replicas: 2 replica(s) must confirm each write, 1 online"]

    def test_persistence_is_not_required_but_a_master_without_aof_is_noted(self) -> None:
        """replicas alone does not need appendfsync always; an AOF-less master earns a warning."""
        lossy = replace(DURABLE, aof_enabled=False, appendfsync="everysec", replicas_online=1)
        problems = durability_problems(settings("replicas"), lossy)
        assert problems.all == []
        assert "do not restart it automatically" in problems.notes[0]

    def test_fsync_and_replicas_needs_both(self) -> None:
        """fsync+replicas: the persistence and the replica count are both judged."""
        problems = durability_problems(settings("fsync+replicas"), replace(DURABLE, appendfsync="no"))
        assert len(problems.static) == 1
        assert len(problems.dynamic) == 1

    def test_a_replica_is_never_ready(self) -> None:
        """The server is a read-only replica: say so, whatever the contract."""
        problems = durability_problems(settings("replicas"), replace(DURABLE, role="replica", replicas_online=1))
        assert "read-only replica" in problems.dynamic[0]


class TestSettings:
    def test_a_wait_timeout_at_or_above_the_socket_timeout_is_refused(self) -> None:
        """A confirmation outlasting the socket timeout would be cut off as an unreachable Redis."""
        with pytest.raises(ConfigError, match=r"redis.wait_timeout_ms: must be below redis.socket_timeout \(2000 ms\)"):
            load_settings(None, environ={}, overrides={"redis": {"socket_timeout": 2, "wait_timeout_ms": 2000}})

    def test_an_unknown_contract_is_refused(self) -> None:
        """durability is fsync, replicas or fsync+replicas."""
        with pytest.raises(ConfigError, match=r"redis\.durability"):
            load_settings(None, environ={"CARDVAULT_REDIS__DURABILITY": "maybe"}, overrides={})
