"""`cardvault serve --workers N`: N processes on one port, restarted when they die, replaced one by one on SIGHUP."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.ops.support import (
    assert_nothing_identifying,
    healthz_worker,
    metrics_env,
    metrics_port,
    parent_of,
    scrape,
    unlimited_env,
    value,
    worker_pids,
)
from tests.support.serve import (
    CARD_BODY,
    ServeFactory,
    ServeProcess,
    error_lines,
    pid_alive,
    run_cli,
    wait_until,
)

pytestmark = pytest.mark.slow

RESTART_TIMEOUT = 40.0


def workers_seen(process: ServeProcess, requests: int) -> Counter[int]:
    return Counter(process.request("GET", "/healthz").json()["worker"] for _ in range(requests))


def logged(process: ServeProcess, event: str) -> list[dict[str, Any]]:
    return [r for r in process.log_records() if r.get("event") == event]


class TestWorkers:
    def test_two_workers_serve_one_port_and_a_killed_one_is_restarted_while_the_other_serves(
        self, serve: ServeFactory
    ) -> None:
        """Both workers answer, each its own process under serve with one embedded Redis; SIGKILL of worker 1:
        worker 2 answers meanwhile, worker 1 comes back with a new pid, and the supervisor stops both at the end."""
        process = serve("--workers", "2", env=unlimited_env()).start()
        assert process.process is not None
        assert process.printed_url == process.url
        assert "with 2 workers" in process.stdout
        before = worker_pids(process)
        assert set(before) == {1, 2}
        assert before[1] != before[2]
        for pid in before.values():
            assert pid_alive(pid)
            assert parent_of(pid) == process.process.pid
        assert set(workers_seen(process, 40)) == {1, 2}
        assert process.redis_pid is not None
        assert parent_of(process.redis_pid) == process.process.pid
        assert process.keys is not None
        tokens = [process.create_token(process.keys.secret)["id"] for _ in range(6)]
        assert all(process.token_status(process.keys.secret, t) == 200 for t in tokens)

        os.kill(before[1], signal.SIGKILL)
        # Eight new connections at once: the kernel spreads them over both slots.  Those on worker 2's slot are
        # answered at once; those on worker 1's wait in its accept queue (held open by the supervisor) and are
        # answered by the replacement.  None is refused or lost.
        with ThreadPoolExecutor(8) as pool:
            probes = list(pool.map(lambda _: healthz_worker(process, timeout=RESTART_TIMEOUT), range(8)))
        assert None not in probes, probes
        assert 2 in probes, f"worker 2 did not answer while worker 1 was down: {probes}"
        assert wait_until(lambda: worker_pids(process).get(1) != before[1], RESTART_TIMEOUT), process.stderr
        after = worker_pids(process)
        assert after[1] != before[1], process.stderr
        assert after[2] == before[2]
        assert pid_alive(after[1])
        assert pid_alive(after[2])
        assert set(workers_seen(process, 40)) == {1, 2}
        died = logged(process, "worker died; restarting it")
        assert [(r["worker"], r["pid"], r["exit"]) for r in died] == [(1, before[1], "killed by SIGKILL")]
        assert all(process.token_status(process.keys.secret, t) == 200 for t in tokens)

        assert process.stop() == 0
        assert not any(pid_alive(pid) for pid in after.values())


class TestWorkerRefusals:
    def test_a_refusal_in_a_worker_stops_serve_with_one_error_line(self, serve: ServeFactory, tmp_path: Path) -> None:
        """A master key that wraps nothing stored: the first worker refuses, serve exits 1 with its message."""
        serve(name="first").start().stop()
        other_key = tmp_path / "other" / "master.key"
        run_cli("keys", "generate-master", "--output", other_key, cwd=tmp_path).assert_ok()
        process = serve("--workers", "2", name="second", env={"CARDVAULT_KEYS__MASTER_KEY_FILE": other_key})
        process.spawn()
        assert process.wait_exit() == 1, process.describe()
        errors = error_lines(process.stderr)
        assert len(errors) == 1, process.describe()
        assert "master key" in errors[0]
        assert "Traceback" not in process.stderr
        assert "listening" not in process.stdout
        started = [r["pid"] for r in logged(process, "worker started")]
        assert started
        assert not any(pid_alive(pid) for pid in started)
        assert not process.embedded.socket_path.exists()

    def test_sigterm_while_the_workers_start_stops_everything_cleanly(self, serve: ServeFactory) -> None:
        """SIGTERM before the workers are ready: no banner, exit 0, no worker and no Redis left."""
        process = serve("--workers", "2")
        process.spawn()
        assert wait_until(lambda: logged(process, "worker started"), 30), process.describe()
        assert process.process is not None
        process.process.send_signal(signal.SIGTERM)
        assert process.wait_exit() == 0, process.describe()
        assert "listening" not in process.stdout
        assert error_lines(process.stderr) == []
        assert not any(pid_alive(r["pid"]) for r in logged(process, "worker started"))
        assert not process.embedded.socket_path.exists()

    def test_port_in_use_is_one_error_line(self, serve: ServeFactory) -> None:
        """With --workers the supervisor binds the port first: a taken port is one Error line, no worker started."""
        with socket.create_server(("127.0.0.1", 0)) as taken:
            port = taken.getsockname()[1]
            process = serve("--workers", "2", port=port)
            process.spawn()
            assert process.wait_exit() != 0
        errors = error_lines(process.stderr)
        assert len(errors) == 1, process.describe()
        assert f"port {port}: address already in use" in errors[0]
        assert not logged(process, "worker started")
        assert not process.embedded.socket_path.exists()


@dataclass
class Load:
    """Clients sending POST /v1/tokens in a loop until told to stop; every answer is counted."""

    process: ServeProcess
    secret: str
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    statuses: Counter[int] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    token_ids: list[str] = field(default_factory=list)

    def record(self, status: int, body: Any) -> None:
        with self.lock:
            self.statuses[status] += 1
            if status == 201:
                self.token_ids.append(body["id"])
            else:
                self.failures.append(f"{status}: {body}")

    def new_connection_each_time(self) -> None:
        while not self.stop.is_set():
            try:
                answer = self.process.request("POST", "/v1/tokens", key=self.secret, body=CARD_BODY)
                self.record(answer.status, answer.json())
            except Exception as exc:  # a lost request: reset, refused, cut off
                with self.lock:
                    self.failures.append(repr(exc))

    def keep_alive(self) -> None:
        """One persistent connection, reopened only when the server answers ``Connection: close``."""
        import json

        connection = http.client.HTTPSConnection(
            self.process.host, self.process.port, context=self.process.ssl_context(), timeout=10
        )
        headers = {"Authorization": f"Bearer {self.secret}", "Content-Type": "application/json"}
        try:
            while not self.stop.is_set():
                try:
                    connection.request("POST", "/v1/tokens", body=json.dumps(CARD_BODY), headers=headers)
                    answer = connection.getresponse()
                    self.record(answer.status, json.loads(answer.read()))
                except Exception as exc:
                    with self.lock:
                        self.failures.append(f"keep-alive: {exc!r}")
                    connection.close()
        finally:
            connection.close()

    @property
    def answered(self) -> int:
        with self.lock:
            return sum(self.statuses.values())


class TestRollingRestart:
    def test_sighup_replaces_both_workers_under_load_without_losing_a_request(
        self, serve: ServeFactory, tmp_path: Path
    ) -> None:
        """Under a steady token load, SIGHUP replaces each worker in turn; every request gets a 201 and is stored."""
        process = serve("--workers", "2", env={**unlimited_env(), **metrics_env()}).start()
        assert process.process is not None
        assert process.keys is not None
        before = worker_pids(process)
        load = Load(process, process.keys.secret)
        with ThreadPoolExecutor(3) as pool:
            clients = [pool.submit(load.new_connection_each_time) for _ in range(2)]
            clients.append(pool.submit(load.keep_alive))
            assert wait_until(lambda: load.answered >= 30, 20)
            at_hangup = load.answered
            process.process.send_signal(signal.SIGHUP)
            assert wait_until(lambda: logged(process, "rolling restart done"), RESTART_TIMEOUT), process.stderr
            after_restart = load.answered
            assert wait_until(lambda: load.answered >= after_restart + 30, 20)
            load.stop.set()
            for client in clients:
                client.result(timeout=30)

        assert load.failures == []
        assert set(load.statuses) == {201}
        assert after_restart - at_hangup >= 20, "too little load during the restart to prove anything"
        after = worker_pids(process)
        assert set(after) == {1, 2}
        assert not set(after.values()) & set(before.values())
        assert not any(pid_alive(pid) for pid in before.values())
        restarted = logged(process, "worker stopped")
        assert sorted(r["pid"] for r in restarted if "exit" in r) == sorted(before.values())

        redis = process.redis()
        try:
            stored = sum(1 for _ in redis.scan_iter(match="cv:{*}:tok:*", count=1000))
        finally:
            redis.close()
        assert stored == len(load.token_ids) == load.statuses[201]

        # the supervisor's one scrape adds up all four workers' files, the two replaced ones included
        samples = scrape(metrics_port(process))
        posted = {"route": "/v1/tokens", "method": "POST", "status": "201"}
        assert value(samples, "cardvault_http_request_duration_seconds_count", **posted) == load.statuses[201]
        assert value(samples, "cardvault_tokens_created_total") == load.statuses[201]
        assert value(samples, "cardvault_worker_restarts_total", reason="rolling") == 2
        assert value(samples, "cardvault_http_requests_in_flight") == 0
        assert_nothing_identifying(samples, {process.keys.secret, process.keys.publishable, *load.token_ids})
        assert process.request("GET", "/metrics").status == 404
        assert process.stop() == 0
