"""``cardvault serve --workers N``: a supervising process that runs N workers on one port.

Python serves on one core per process, so throughput beyond one core takes
processes.  The supervisor does no HTTP itself.  It binds one SO_REUSEPORT
socket per worker slot (``service.cli.reuseport``), owns the embedded
redis-server (started by ``serve`` before it) and the metrics directory, and
starts each worker as a fresh interpreter (``python -m
service.cli.serve_worker``) that inherits its slot's socket, reads the same
configuration and serves with its own event loop and Redis pool.  A fresh
interpreter rather than a fork: no state is shared by accident, and a
rolling restart picks up new code, configuration and certificates.

What it does on signals:

- SIGTERM or SIGINT: close its copies of the sockets, forward SIGTERM to every
  worker (each finishes its requests within ``server.shutdown_timeout``),
  wait, and exit; a worker still alive well past that is killed.
- SIGHUP: rolling restart.  Slot by slot, a new worker starts on the slot's
  socket and reports ready before the old one gets SIGTERM, so the slot
  always has a worker accepting and nothing queued on it is lost.  If a new
  worker fails to start, the restart stops there and the old ones keep
  serving (logged).

A worker that dies unexpectedly is restarted on its slot after a backoff
(0.5 s, doubling up to 30 s while it keeps dying within a minute of its
start).  A worker that stops because of a refusal (say a Redis that could
lose writes, found once Redis answered) reports it; the supervisor then
stops everything and ``serve`` exits non-zero with that message, as a
single process does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
from prometheus_client import Counter
from prometheus_client.multiprocess import mark_process_dead

from service.http.metrics_listener import MetricsListener, multiprocess_registry
from service.settings import Settings
from service.worker_process import EXIT_REFUSED, Worker, WorkerFailed, WorkerSpec, describe_exit

log = structlog.get_logger("cardvault.supervisor")

#: How long a new worker may take to listen (imports, TLS, the Redis bootstrap).
START_TIMEOUT = 60.0
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0
#: A worker that ran at least this long before dying starts its slot's backoff afresh.
STABLE_SECONDS = 60.0
WORKER_MODULE = "service.cli.serve_worker"

WORKER_RESTARTS = Counter(
    "cardvault_worker_restarts",
    "Workers replaced by the supervisor: after a crash, or one by one in a rolling restart.",
    ["reason"],
)


class Supervisor:
    def __init__(
        self,
        settings: Settings,
        spec: WorkerSpec,
        sockets: list[list[socket.socket]],
        *,
        on_ready: Callable[[], None],
    ) -> None:
        self.settings = settings
        self.spec = spec
        self.sockets = sockets
        self.on_ready = on_ready
        self.slots = len(sockets)
        self.current: list[Worker | None] = [None] * self.slots
        self.live: set[Worker] = set()
        self.refusal: str | None = None
        self._crashes = [0] * self.slots
        self._locks = [asyncio.Lock() for _ in range(self.slots)]
        self._stopping = asyncio.Event()
        self._hangup = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- running --------------------------------------------------------------------------------------
    def run(self) -> str | None:
        """Run until stopped; the refusal that stopped it, if any."""
        asyncio.run(self._main())
        return self.refusal

    async def _main(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stop, "SIGTERM")
        loop.add_signal_handler(signal.SIGINT, self.stop, "SIGINT")
        loop.add_signal_handler(signal.SIGHUP, self._hangup.set)
        metrics = None
        if self.spec.metrics_dir is not None:
            registry = multiprocess_registry(Path(self.spec.metrics_dir))
            registry.register(WORKER_RESTARTS)
            metrics = MetricsListener(self.settings.metrics, registry)
        try:
            if metrics is not None:
                await metrics.start()
            if await self._start_all():
                self.on_ready()
                roller = self._spawn_task(self._roll_on_hangup())
                await self._stopping.wait()
                roller.cancel()
        finally:
            await self._shutdown()
            if metrics is not None:
                await metrics.stop()

    def stop(self, reason: str = "stop") -> None:
        if not self._stopping.is_set():
            log.info("stopping workers", signal=reason, workers=len(self.live))
            self._stopping.set()

    def _spawn_task(self, coroutine: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _start_all(self) -> bool:
        """Start worker 1, then the others together (worker 1 creates what they then find: the demo agency)."""
        if not await self._start_slots([0]) or not await self._start_slots(list(range(1, self.slots))):
            return False
        log.info("workers ready", workers=self.slots, pids=[w.pid for w in self.current if w is not None])
        return True

    async def _start_slots(self, slots: list[int]) -> bool:
        if self._stopping.is_set():
            return False
        started = []
        for slot in slots:
            worker = await self._spawn(slot)
            self.current[slot] = worker
            started.append(worker)
        for worker in started:
            try:
                await self._until_ready(worker)
            except WorkerFailed as exc:
                if not self._stopping.is_set():
                    self.refusal = self.refusal or str(exc)
                    self.stop("worker failed to start")
                return False
        return True

    # -- one worker -----------------------------------------------------------------------------------
    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        if self.spec.metrics_dir is not None:
            env["PROMETHEUS_MULTIPROC_DIR"] = self.spec.metrics_dir
        return env

    async def _spawn(self, slot: int, *, replaces_crashed: bool = False) -> Worker:
        fds = [s.fileno() for s in self.sockets[slot]]
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            WORKER_MODULE,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            pass_fds=fds,
            start_new_session=True,  # a terminal's Ctrl-C reaches the supervisor, which stops them in order
            env=self._environment(),
        )
        assert process.stdin is not None
        order = {
            "worker": slot + 1,
            "supervisor_pid": os.getpid(),
            "fds": fds,
            "config_file": self.spec.config_file,
            "data_dir": self.spec.data_dir,
            "overrides": dict(self.spec.overrides),
            "redis_url": self.spec.redis_url,
        }
        process.stdin.write(json.dumps(order).encode())
        with contextlib.suppress(ConnectionError):
            await process.stdin.drain()
        process.stdin.close()
        worker = Worker(slot, process, time.monotonic(), asyncio.get_running_loop().create_future())
        worker.replaces_crashed = replaces_crashed
        worker.ready.add_done_callback(lambda f: f.cancelled() or f.exception())  # read: no "never retrieved"
        self.live.add(worker)
        log.info("worker started", worker=worker.number, pid=worker.pid)
        self._spawn_task(self._watch(worker))
        return worker

    async def _read_reports(self, worker: Worker) -> None:
        """The worker's stdout is its report channel: one JSON object per line."""
        stream = worker.process.stdout
        assert stream is not None
        async for line in stream:
            with contextlib.suppress(ValueError):
                report = json.loads(line)
                if report.get("event") == "ready" and not worker.ready.done():
                    log.info("worker ready", worker=worker.number, pid=worker.pid)
                    worker.ready.set_result(None)
                elif report.get("event") == "refused":
                    worker.refusal = str(report.get("message", "refused"))

    async def _watch(self, worker: Worker) -> None:
        await self._read_reports(worker)
        returncode = await worker.process.wait()
        self.live.discard(worker)
        worker.exited.set()
        if self.spec.metrics_dir is not None:
            mark_process_dead(worker.pid, self.spec.metrics_dir)  # type: ignore[no-untyped-call]
        if not worker.ready.done():
            reason = worker.refusal or f"worker {worker.number} exited during start ({describe_exit(returncode)})"
            worker.ready.set_exception(WorkerFailed(reason))
            if not worker.replaces_crashed:
                return
        if worker.retiring or self._stopping.is_set():
            log.info("worker stopped", worker=worker.number, pid=worker.pid, exit=describe_exit(returncode))
            return
        if worker.refusal is not None or returncode == EXIT_REFUSED:
            log.critical("worker refused to go on; stopping", worker=worker.number, problem=worker.refusal)
            self.refusal = worker.refusal or f"worker {worker.number} refused to go on"
            self.stop("worker refused")
            return
        await self._restart_after_crash(worker, returncode)

    async def _until_ready(self, worker: Worker) -> None:
        """Until the worker reports ready; WorkerFailed if it fails, is too slow, or the supervisor is stopping."""
        stopping: asyncio.Future[Any] = asyncio.ensure_future(self._stopping.wait())
        waiters: set[asyncio.Future[Any]] = {worker.ready, stopping}
        try:
            done, _ = await asyncio.wait(waiters, timeout=START_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if worker.ready.done():
            worker.ready.result()  # raises WorkerFailed when it exited first
            return
        if not done:
            await self._terminate(worker)
            raise WorkerFailed(f"worker {worker.number} did not start within {START_TIMEOUT:.0f} s")
        raise WorkerFailed("stopping")

    async def _terminate(self, worker: Worker) -> None:
        """SIGTERM, then as long as a graceful stop may take, then SIGKILL."""
        worker.retiring = True
        with contextlib.suppress(ProcessLookupError):
            worker.process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(self._stop_bound()):
                await worker.exited.wait()
        except TimeoutError:
            log.error("worker did not stop in time; killing it", worker=worker.number, pid=worker.pid)
            with contextlib.suppress(ProcessLookupError):
                worker.process.kill()
            await worker.exited.wait()

    def _stop_bound(self) -> float:
        # aiohttp waits up to the timeout for handlers, then as long again for cancelled ones to end.
        return 2 * self.settings.server.shutdown_timeout + 10

    # -- restarts -------------------------------------------------------------------------------------
    async def _restart_after_crash(self, dead: Worker, returncode: int) -> None:
        slot = dead.slot
        async with self._locks[slot]:
            if self._stopping.is_set() or self.current[slot] is not dead:
                return
            lived = time.monotonic() - dead.started_at
            self._crashes[slot] = 1 if lived >= STABLE_SECONDS else self._crashes[slot] + 1
            delay = min(BACKOFF_FIRST * 2 ** (self._crashes[slot] - 1), BACKOFF_MAX)
            log.error(
                "worker died; restarting it",
                worker=dead.number,
                pid=dead.pid,
                exit=describe_exit(returncode),
                restart_in_seconds=delay,
            )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stopping.wait()
            if self._stopping.is_set():
                return
            worker = await self._spawn(slot, replaces_crashed=True)
            self.current[slot] = worker
            WORKER_RESTARTS.labels("crash").inc()
            with contextlib.suppress(WorkerFailed):
                await self._until_ready(worker)  # a failure here is its own crash: _watch restarts it again

    async def _roll_on_hangup(self) -> None:
        while True:
            await self._hangup.wait()
            self._hangup.clear()
            await self.rolling_restart()

    async def rolling_restart(self) -> bool:
        """Replace every worker, one slot at a time, each new one ready before the old one stops."""
        log.info("rolling restart", workers=self.slots)
        for slot in range(self.slots):
            async with self._locks[slot]:
                if self._stopping.is_set():
                    return False
                old = self.current[slot]
                worker = await self._spawn(slot)
                try:
                    await self._until_ready(worker)
                except WorkerFailed as exc:
                    log.error(
                        "rolling restart stopped; the old workers keep serving", worker=slot + 1, problem=str(exc)
                    )
                    if not worker.exited.is_set():
                        await self._terminate(worker)
                    return False
                self.current[slot] = worker
                WORKER_RESTARTS.labels("rolling").inc()
                if old is not None and not old.exited.is_set():
                    await self._terminate(old)
        log.info("rolling restart done", pids=[w.pid for w in self.current if w is not None])
        return True

    # -- stopping -------------------------------------------------------------------------------------
    async def _shutdown(self) -> None:
        """Close the sockets, SIGTERM every worker (also one that a restart starts meanwhile), wait, kill late ones."""
        for group in self.sockets:  # once the workers close their copies too, new connections are refused
            for sock in group:
                sock.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._stop_bound()
        signalled: set[Worker] = set()
        killed = False
        while self.live:
            for worker in self.live - signalled:
                worker.retiring = True
                with contextlib.suppress(ProcessLookupError):
                    worker.process.send_signal(signal.SIGTERM)
                signalled.add(worker)
            if not killed and loop.time() > deadline:
                killed = True
                for worker in self.live:
                    log.error("worker did not stop in time; killing it", worker=worker.number, pid=worker.pid)
                    with contextlib.suppress(ProcessLookupError):
                        worker.process.kill()
            await asyncio.sleep(0.05)
        for task in list(self._tasks):
            task.cancel()
        log.info("all workers stopped")
