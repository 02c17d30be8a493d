"""Real Redis topologies for tests: a master with replicas, and the same watched by Sentinels.

Everything runs from the ``redis-server`` binary the suite already uses
(``redis_server.redis_binary``), on random loopback ports, in the test's
temporary directory; ``close()`` stops every process (SIGKILL for the ones a
test left frozen).  Sentinels get small ``down-after-milliseconds`` and
``failover-timeout`` so a failover takes a few seconds.  A Redis Cluster of
three masters, each with replicas if asked, is built the same way
(``RedisClusterTopology``).

    with SentinelTopology(tmp_path, replicas=2).start() as topo:
        url = topo.sentinel_url()         # redis+sentinel://127.0.0.1:p1,.../cardvault
        old = topo.kill_master()          # SIGKILL: the Sentinels promote a replica
        new_master = topo.wait_for_failover(old)
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any

import redis
from redis.cluster import key_slot

from tests.support.redis_server import RedisServer, free_port, redis_binary

SERVICE_NAME = "cardvault"
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 4000
START_TIMEOUT = 15.0


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(redis.RedisError, OSError):
            if predicate():
                return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


class ReplicatedRedis:
    """One master (AOF, fsync always, like RedisServer) and ``replicas`` replicas of it."""

    def __init__(self, directory: Path, replicas: int = 1, *master_extra: str, binary: str | None = None) -> None:
        self.directory = directory
        self.binary = binary
        # A replica's first sync must not wait the default 5 s for more replicas to join it.
        self.master = RedisServer(directory / "master", "--repl-diskless-sync-delay", "0", *master_extra, binary=binary)
        self.replicas: list[RedisServer] = []
        self.replica_count = replicas

    @property
    def url(self) -> str:
        return self.master.url

    def servers(self) -> list[RedisServer]:
        return [self.master, *self.replicas]

    def start(self) -> ReplicatedRedis:
        self.master.start()
        for index in range(self.replica_count):
            replica = RedisServer(
                self.directory / f"replica-{index}",
                "--replicaof",
                "127.0.0.1",
                str(self.master.port),
                "--replica-announce-ip",
                "127.0.0.1",
                "--repl-diskless-sync-delay",
                "0",
                binary=self.binary,
            )
            self.replicas.append(replica.start())
        self.wait_replicas_online(self.replica_count)
        return self

    def online_replicas(self, master: RedisServer | None = None) -> int:
        info = (master or self.master).client().info("replication")
        return sum(
            1 for k, v in info.items() if k.startswith("slave") and isinstance(v, dict) and v["state"] == "online"
        )

    def wait_replicas_online(self, count: int, master: RedisServer | None = None) -> None:
        """Online, done with the AOF rewrite that follows a sync, and acknowledging writes."""
        wait_for(lambda: self.online_replicas(master) >= count, START_TIMEOUT, f"{count} replica(s) online")
        wait_for(
            lambda: all(int(r.client().info("persistence")["aof_rewrite_in_progress"]) == 0 for r in self._running()),
            START_TIMEOUT,
            "the replicas' AOF rewrites",
        )
        client = (master or self.master).client()
        client.set("cv:test:replication-check", "1")
        acked = int(client.execute_command("WAIT", count, int(START_TIMEOUT * 1000)))
        assert acked >= count, f"{acked} of {count} replica(s) acknowledged a write"

    def _running(self) -> list[RedisServer]:
        return [r for r in self.replicas if r.process is not None and r.process.poll() is None]

    def close(self) -> None:
        for server in self.servers():
            resume(server)
            server.stop()

    def __enter__(self) -> ReplicatedRedis:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


class SentinelServer:
    """One ``redis-server sentinel.conf --sentinel`` process with its own directory and config file."""

    def __init__(self, directory: Path, master_port: int, quorum: int) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.master_port = master_port
        self.quorum = quorum
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    def _write_config(self) -> Path:
        path = self.directory / "sentinel.conf"
        path.write_text(
            "\n".join(
                [
                    f"port {self.port}",
                    "bind 127.0.0.1",
                    f"dir {self.directory}",
                    f"logfile {self.directory / 'sentinel.log'}",
                    "sentinel announce-ip 127.0.0.1",
                    f"sentinel monitor {SERVICE_NAME} 127.0.0.1 {self.master_port} {self.quorum}",
                    f"sentinel down-after-milliseconds {SERVICE_NAME} {DOWN_AFTER_MS}",
                    f"sentinel failover-timeout {SERVICE_NAME} {FAILOVER_TIMEOUT_MS}",
                    f"sentinel parallel-syncs {SERVICE_NAME} 1",
                    "",
                ]
            )
        )
        return path

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2)

    def start(self) -> SentinelServer:
        for _ in range(5):
            self.port = free_port()
            config = self._write_config()
            self.process = subprocess.Popen(
                [redis_binary(), str(config), "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            try:
                wait_for(lambda: self.client().ping(), 5, "a Sentinel to answer")
                return self
            except TimeoutError:
                self.stop()
        raise RuntimeError(f"redis sentinel did not start; see {self.directory / 'sentinel.log'}")

    def master_address(self) -> tuple[str, int] | None:
        reply = self.client().sentinel_get_master_addr_by_name(SERVICE_NAME)
        return (reply[0], int(reply[1])) if reply else None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


class SentinelTopology(ReplicatedRedis):
    """A master, its replicas, and ``sentinels`` Sentinels (quorum: a majority) watching them."""

    def __init__(self, directory: Path, replicas: int = 1, sentinels: int = 3, *master_extra: str) -> None:
        super().__init__(directory, replicas, *master_extra)
        self.sentinel_count = sentinels
        self.sentinels: list[SentinelServer] = []

    def start(self) -> SentinelTopology:
        super().start()
        quorum = self.sentinel_count // 2 + 1
        for index in range(self.sentinel_count):
            sentinel = SentinelServer(self.directory / f"sentinel-{index}", self.master.port, quorum)
            self.sentinels.append(sentinel.start())
        # Ready when every Sentinel knows the replicas and the other Sentinels (they meet over hello messages).
        wait_for(self._sentinels_agree, START_TIMEOUT, "the Sentinels to discover each other and the replicas")
        return self

    def _sentinels_agree(self) -> bool:
        for sentinel in self.sentinels:
            state = sentinel.client().sentinel_master(SERVICE_NAME)
            if int(state["num-other-sentinels"]) < self.sentinel_count - 1:
                return False
            if int(state["num-slaves"]) < self.replica_count:
                return False
        return True

    def sentinel_url(self, *, service_name: str = SERVICE_NAME, password: str | None = None) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        auth = f":{password}@" if password else ""
        return f"redis+sentinel://{auth}{hosts}/{service_name}"

    def current_master(self) -> RedisServer:
        address = self.sentinels[0].master_address()
        for server in self.servers():
            if address is not None and server.port == address[1] and server.process is not None:
                return server
        raise LookupError(f"no running server is the master Sentinel names ({address})")

    def kill_master(self) -> RedisServer:
        """SIGKILL the current master (no flush, no goodbye); returns it."""
        master = self.current_master()
        master.kill()
        return master

    def wait_for_failover(self, old: RedisServer, timeout: float = 20.0) -> RedisServer:
        """Wait until the Sentinels name a running replica as master and it accepts writes."""

        def promoted() -> bool:
            address = self.sentinels[0].master_address()
            if address is None or address[1] == old.port:
                return False
            return bool(self.current_master().client().info("replication")["role"] == "master")

        wait_for(promoted, timeout, "a Sentinel failover")
        return self.current_master()

    def close(self) -> None:
        for sentinel in self.sentinels:
            sentinel.stop()
        super().close()


def freeze(server: RedisServer) -> None:
    """SIGSTOP: the server keeps its sockets but answers nothing."""
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGSTOP)


def resume(server: RedisServer) -> None:
    if server.process is not None and server.process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(server.process.pid, signal.SIGCONT)


class RedisClusterTopology:
    """A Redis Cluster of ``masters`` masters (AOF, fsync always), slots split evenly, on loopback;
    with ``replicas``, that many replicas of each master (``CLUSTER REPLICATE``), in sync when ``start`` returns.

    Built with plain commands (CLUSTER ADDSLOTS, CLUSTER MEET) rather than
    ``redis-cli --cluster create``, so it needs nothing but redis-server.  It
    quacks like ``RedisServer`` where the suite's fixtures use one (``url``,
    ``client()``, ``process``, ``aof_files()``, ``stop()``), so a test written
    against one server runs against the cluster unchanged.

        with RedisClusterTopology(tmp_path).start() as cluster:
            url = cluster.url                     # redis+cluster://127.0.0.1:p1,127.0.0.1:p2,...
            cluster.move_slot(slot, cluster.nodes[1])   # live resharding of one slot, keys and all
            cluster.replicas_of(cluster.nodes[0])       # with replicas=1: the master's replica, a RedisServer
    """

    SLOTS = 16384
    CLUSTER_OPTIONS = (
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        "nodes.conf",
        "--cluster-node-timeout",
        "2000",
    )

    def __init__(self, directory: Path, masters: int = 3, replicas: int = 0, binary: str | None = None) -> None:
        self.directory = directory
        # A replica's first sync must not wait the default 5 s for more replicas to join it.
        sync_now = ("--repl-diskless-sync-delay", "0")
        self.nodes = [  # the masters
            RedisServer(directory / f"node-{index}", *self.CLUSTER_OPTIONS, *sync_now, binary=binary)
            for index in range(masters)
        ]
        #: The replicas of each master, by the master's index in ``nodes``.
        self.replicas: list[list[RedisServer]] = [
            [
                RedisServer(directory / f"node-{index}-replica-{r}", *self.CLUSTER_OPTIONS, *sync_now, binary=binary)
                for r in range(replicas)
            ]
            for index in range(masters)
        ]

    def servers(self) -> list[RedisServer]:
        """Every server of the cluster, masters first."""
        return [*self.nodes, *(replica for group in self.replicas for replica in group)]

    def replicas_of(self, master: RedisServer) -> list[RedisServer]:
        return self.replicas[self.nodes.index(master)]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        """The first node's process: None once stopped (the leak guard's test for "still running")."""
        return self.nodes[0].process

    def client(self) -> Any:
        from redis.cluster import ClusterNode, RedisCluster

        return RedisCluster(
            startup_nodes=[ClusterNode("127.0.0.1", node.port) for node in self.nodes], socket_timeout=5
        )

    def start(self) -> RedisClusterTopology:
        with ThreadPoolExecutor(len(self.servers())) as starting:  # at once: on a busy machine each takes seconds
            list(starting.map(RedisServer.start, self.servers()))
        share = self.SLOTS // len(self.nodes)
        for index, node in enumerate(self.nodes):
            first = index * share
            last = self.SLOTS - 1 if index == len(self.nodes) - 1 else first + share - 1
            node.client().execute_command("CLUSTER ADDSLOTS", *range(first, last + 1))
        for server in self.servers()[1:]:
            self.nodes[0].client().execute_command("CLUSTER MEET", "127.0.0.1", server.port)
        wait_for(self._healthy, START_TIMEOUT, "the cluster to agree on its slots")
        for master, group in zip(self.nodes, self.replicas, strict=True):
            for replica in group:
                replica.client().execute_command("CLUSTER REPLICATE", self.node_id(master))
        for master in self.nodes:
            self.wait_replicas_online(master)
        return self

    def _healthy(self) -> bool:
        for server in self.servers():
            info = server.client().execute_command("CLUSTER INFO")  # redis-py parses it into a dict
            if info.get("cluster_state") != "ok" or int(info.get("cluster_known_nodes", 0)) != len(self.servers()):
                return False
        return True

    def online_replicas(self, master: RedisServer) -> int:
        info = master.client().info("replication")
        return sum(
            1 for k, v in info.items() if k.startswith("slave") and isinstance(v, dict) and v["state"] == "online"
        )

    def wait_replicas_online(self, master: RedisServer) -> None:
        """Every replica of ``master`` online, done with the AOF rewrite that follows a sync, and acknowledging."""
        count = len(self.replicas_of(master))
        if not count:
            return
        wait_for(lambda: self.online_replicas(master) >= count, START_TIMEOUT, f"{count} replica(s) of {master.port}")
        wait_for(
            lambda: all(
                int(r.client().info("persistence")["aof_rewrite_in_progress"]) == 0 for r in self.replicas_of(master)
            ),
            START_TIMEOUT,
            "the replicas' AOF rewrites",
        )
        client = master.client()
        client.set(self.key_on(master, "cv:test:replication-check"), "1")  # WAIT before any write returns at once
        acked = int(client.execute_command("WAIT", count, int(START_TIMEOUT * 1000)))
        assert acked >= count, f"{acked} of {count} replica(s) of {master.port} acknowledged"

    def key_on(self, master: RedisServer, prefix: str) -> str:
        """``<prefix>:{<n>}`` with the first n whose slot ``master`` serves."""
        slots = [
            (s, e)
            for s, e, owner, *_ in master.client().execute_command("CLUSTER SLOTS")
            if int(owner[1]) == master.port
        ]
        for n in itertools.count():
            key = f"{prefix}:{{{n}}}"
            if any(start <= key_slot(key.encode()) <= end for start, end in slots):
                return key
        raise AssertionError("unreachable")

    def replica_client(self, replica: RedisServer) -> redis.Redis:
        """A connection to ``replica`` that may read its keys (READONLY, else a replica answers MOVED)."""
        client = redis.Redis(port=replica.port, socket_timeout=5, single_connection_client=True)
        client.execute_command("READONLY")
        return client

    def node_id(self, node: RedisServer) -> str:
        return str(node.client().execute_command("CLUSTER MYID").decode())

    def owner(self, slot: int) -> RedisServer:
        for start, end, master, *_ in self.nodes[0].client().execute_command("CLUSTER SLOTS"):
            if start <= slot <= end:
                return next(node for node in self.nodes if node.port == int(master[1]))
        raise LookupError(slot)

    def move_slot(self, slot: int, target: RedisServer) -> int:
        """Reshard one slot to ``target`` while clients run (MIGRATING/IMPORTING, MIGRATE, SETSLOT NODE).

        Returns how many keys moved.  Clients see ASK then MOVED redirections meanwhile.
        """
        if self.owner(slot) is target:
            return 0
        source = self.begin_moving_slot(slot, target)
        return self.finish_moving_slot(slot, source, target)

    def begin_moving_slot(self, slot: int, target: RedisServer) -> RedisServer:
        """Mark ``slot`` IMPORTING on ``target`` and MIGRATING on its owner, which is returned; no key moves yet."""
        source = self.owner(slot)
        assert source is not target, "the slot is already on the target"
        source_id, target_id = self.node_id(source), self.node_id(target)
        target.client().execute_command("CLUSTER SETSLOT", slot, "IMPORTING", source_id)
        source.client().execute_command("CLUSTER SETSLOT", slot, "MIGRATING", target_id)
        return source

    @staticmethod
    def migrate_keys(source: RedisServer, target: RedisServer, keys: list[bytes] | list[str]) -> None:
        source.client().execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys)

    def finish_moving_slot(self, slot: int, source: RedisServer, target: RedisServer) -> int:
        """Migrate the keys still on ``source`` and give the slot to ``target`` everywhere; how many keys moved."""
        moved = 0
        while True:
            keys = source.client().execute_command("CLUSTER GETKEYSINSLOT", slot, 100)
            if not keys:
                break
            self.migrate_keys(source, target, keys)
            moved += len(keys)
        target_id = self.node_id(target)
        for node in (target, source, *[n for n in self.nodes if n not in (source, target)]):
            node.client().execute_command("CLUSTER SETSLOT", slot, "NODE", target_id)
        return moved

    def keys_per_node(self, pattern: str) -> list[int]:
        return [len(list(node.client().scan_iter(match=pattern, count=1000))) for node in self.nodes]

    def aof_files(self) -> list[Path]:
        return [path for node in self.servers() for path in node.aof_files()]

    def stop(self) -> None:
        for server in self.servers():
            resume(server)
            server.stop()

    close = stop

    def __enter__(self) -> RedisClusterTopology:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
