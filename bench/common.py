#!/usr/bin/env python3
"""What the load generators in bench/ share: spawning and stopping processes, probes, the phase runner.

Imported by ``bench/tokens.py`` and ``bench/charges.py`` (run as scripts, so ``bench/`` is on
``sys.path``); not a program of its own.  See bench/README.md.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import http.client
import ipaddress
import json
import os
import platform
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import psutil
import redis

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is a dependency on Linux, optional elsewhere
    uvloop = None

REPO_ROOT = Path(__file__).resolve().parent.parent
PUBLIC_TEST_CARD = "4242424242424242"  # Visa's public test number; never use a real card here
REQUEST_TIMEOUT = 30.0  # seconds for one request, connect included
START_TIMEOUT = 60.0  # seconds for a spawned process to become ready
STOP_TIMEOUT = 20.0
ERROR_SAMPLE_CHARS = 300
BUSY_MACHINE = 15.0  # percent of one core used by other processes during a phase before we warn


# --------------------------------------------------------------------------------------------- helpers


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


class BenchError(Exception):
    """A problem that stops the run with one clear line."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def require_loopback(host: str, what: str) -> None:
    """Refuse any target that is not on this machine's loopback interface."""
    try:
        infos = socket.getaddrinfo(host, None)
    except socket.gaierror as exc:
        raise BenchError(f"{what}: cannot resolve {host!r}: {exc}") from exc
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%")[0])
        if not address.is_loopback:
            raise BenchError(f"{what}: {host!r} is not a loopback address; this benchmark only targets 127.0.0.1")


def cardvault_command() -> list[str]:
    """`cardvault` from this interpreter's bin directory, else `python -m service` (the same CLI)."""
    script = Path(sys.executable).parent / "cardvault"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "service"]


def tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def rss_bytes(pid: int | None) -> int | None:
    """RSS of the server process and its Python children (workers), not of a child redis-server."""
    if pid is None:
        return None
    try:
        root = psutil.Process(pid)
        total = root.memory_info().rss
        for child in root.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if "redis" not in child.name():
                    total += child.memory_info().rss
    except psutil.Error:
        return None
    return total


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU time of a process and its non-Redis children."""
    if pid is None:
        return None
    try:
        root = psutil.Process(pid)
        times = root.cpu_times()
        total = times.user + times.system
        for child in root.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if "redis" not in child.name():
                    times = child.cpu_times()
                    total += times.user + times.system
    except psutil.Error:
        return None
    return total


class CpuMeter:
    """CPU use over one phase, in percent of one core: server, its Redis, any ``extra`` process (by name),
    this load generator, the rest."""

    def __init__(
        self,
        server_pid: int | None,
        redis_pid: int | None,
        extra: Mapping[str, int | None] | None = None,
        children_cpu: Callable[[], float] | None = None,
    ) -> None:
        self.pids = {"server": server_pid, "redis": redis_pid, **(extra or {})}
        self.children_cpu = children_cpu  # a generator run as child processes (wrk): their CPU once waited for
        self.start: dict[str, float | None] = {}

    def snapshot(self) -> dict[str, float | None]:
        values = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        values["generator"] = time.process_time() + (self.children_cpu() if self.children_cpu else 0.0)
        machine = psutil.cpu_times()
        values["machine"] = sum(machine) - machine.idle - getattr(machine, "iowait", 0.0)
        return values

    def begin(self) -> None:
        self.start = self.snapshot()

    def end(self, elapsed: float) -> dict[str, float | None]:
        now = self.snapshot()
        out: dict[str, float | None] = {}
        for name, value in now.items():
            before = self.start.get(name)
            if value is None or before is None or elapsed <= 0:
                out[name] = None
            else:
                out[name] = round(100 * (value - before) / elapsed, 1)
        machine = out.pop("machine")
        ours = [out[name] for name in (*self.pids, "generator")]
        # everything else on the machine (other processes, kernel work not charged to ours)
        out["other"] = round(machine - sum(v or 0.0 for v in ours), 1) if machine is not None else None
        return out


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "uvloop": getattr(uvloop, "__version__", None),
    }


# ------------------------------------------------------------------------------------------- redis probe


def machine_line(machine: Mapping[str, Any]) -> str:
    """The report line that says what machine a run was on (``machine_info``)."""
    return (
        f"machine: {machine['cpus']} CPU ({machine['cpu']}), {machine['memory_gib']} GiB, Linux {machine['kernel']}, "
        f"Python {machine['python']}, aiohttp {machine['aiohttp']}"
    )


def token_body_line(cfg: Mapping[str, Any]) -> str:
    """The report line that says what token body a run sent (``token_body``'s options, as the config records them)."""
    return (
        f"body: {cfg['body_bytes']} bytes, card {PUBLIC_TEST_CARD} (public test number)"
        + (", no CVC" if cfg["no_cvc"] else ", with CVC")
        + (f", {cfg['metadata_keys']} metadata keys" if cfg["metadata_keys"] else "")
    )


@dataclass
class RedisProbe:
    """A Redis client used only between phases (INFO), never during the measured load."""

    url: str

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=5, socket_connect_timeout=5)

    def info(self, section: str) -> dict[str, Any]:
        client = self.client()
        try:
            return dict(client.info(section))
        finally:
            client.close()

    def used_memory(self) -> int | None:
        try:
            return int(self.info("memory")["used_memory"])
        except (redis.RedisError, OSError, KeyError):
            return None

    def describe(self) -> dict[str, Any]:
        try:
            server = self.info("server")
            memory = self.info("memory")
            persistence = self.info("persistence")
            config = self.client().config_get("appendfsync")
        except (redis.RedisError, OSError):
            return {}
        return {
            "version": server.get("redis_version"),
            "pid": server.get("process_id"),
            "mem_allocator": memory.get("mem_allocator"),
            "aof_enabled": persistence.get("aof_enabled"),
            "appendfsync": config.get("appendfsync"),
        }


# ---------------------------------------------------------------------------------------------- targets


@dataclass
class Target:
    name: str
    base_url: str
    key: str | None
    ssl_context: ssl.SSLContext | bool
    pid: int | None = None
    redis: RedisProbe | None = None
    stop: Callable[[], list[str]] | None = None  # returns problems seen while stopping
    log_path: Path | None = None
    process: subprocess.Popen[bytes] | None = None


def client_ssl_context(cafile: str | None, insecure: bool) -> ssl.SSLContext:
    if insecure:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return ssl.create_default_context(cafile=cafile)


def client_session(
    connections: int, ssl_context: ssl.SSLContext | bool, headers: Mapping[str, str]
) -> aiohttp.ClientSession:
    """The generator's lean client: one pool of `connections` keep-alive connections, no cookie jar, no
    User-Agent, the request timeout on everything."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=connections, ssl=ssl_context, keepalive_timeout=60),
        headers=dict(headers),
        timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT),
        cookie_jar=aiohttp.DummyCookieJar(),
        skip_auto_headers=("User-Agent",),
    )


def https_status(base_url: str, path: str, context: ssl.SSLContext | None) -> int | None:
    parts = urlsplit(base_url)
    assert parts.hostname is not None
    assert parts.port is not None
    if parts.scheme == "https":
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            parts.hostname, parts.port, timeout=2, context=context
        )
    else:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=2)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def wait_ready(
    process: subprocess.Popen[bytes], name: str, log_path: Path, ready: Callable[[], bool], timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code = process.poll()
        if code is not None:
            raise BenchError(f"{name} exited with code {code} at start; last lines of {log_path}:\n{tail(log_path)}")
        if ready():
            return
        time.sleep(0.1)
    raise BenchError(f"{name} was not ready within {timeout:.0f}s; last lines of {log_path}:\n{tail(log_path)}")


def terminate(process: subprocess.Popen[bytes], name: str) -> list[str]:
    """SIGTERM, wait, SIGKILL as a last resort. Report a process that had already died."""
    problems: list[str] = []
    code = process.poll()
    if code is not None:
        problems.append(f"{name} had already exited (code {code}) before the benchmark stopped it")
        return problems
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        problems.append(f"{name} did not stop within {STOP_TIMEOUT:.0f}s of SIGTERM; killed")
        process.kill()
        process.wait()
    return problems


def popen(argv: list[str], log_path: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as out:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # Ctrl-C reaches only the benchmark, which then stops them in order
        )


def embedded_redis_socket(data_dir: Path) -> Path:
    """Where `cardvault serve` put its private Redis socket (DIR/redis/redis.sock unless the path was too long)."""
    config = data_dir / "redis" / "redis.conf"
    match = re.search(r'^unixsocket\s+"?([^"\n]+)"?', config.read_text(encoding="utf-8"), re.MULTILINE)
    if match:
        return Path(match.group(1))
    return data_dir / "redis" / "redis.sock"


#: The benchmarks send one public test card from one backend thousands of times a second, far past the
#: card-testing defence's per-card and per-agency limits. They are raised, not turned off, so every
#: request still goes through the velocity gate (in the same Redis script as its write).
BENCH_VELOCITY = {
    f"CARDVAULT_VELOCITY__{name}": "1000000000/1s"
    for name in ("TOKENS_PER_CARD", "TOKENS_PER_AGENCY", "CHARGES_PER_CARD", "CHARGES_PER_AGENCY")
}


def cardvault_env(settings: Mapping[str, str] | None = None) -> dict[str, str]:
    """This environment without any ``CARDVAULT_*`` variable (embedded defaults, velocity limits raised for a
    load generator: ``BENCH_VELOCITY``), plus ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARDVAULT_")}
    env.update(BENCH_VELOCITY)
    env.update(settings or {})
    return env


def spawn_cardvault(
    workdir: Path, settings: Mapping[str, str] | None = None, *, workers: int = 1, name: str = "cardvault"
) -> Target:
    """`cardvault serve` in ``workdir/<name>`` on a free port, with embedded defaults plus ``settings``
    (``CARDVAULT_*`` variables); with ``workers`` > 1, `serve --workers N` (a supervisor and N workers)."""
    data_dir = workdir / name
    port = free_port()
    base_url = f"https://127.0.0.1:{port}"
    log_path = workdir / f"{name}.log"
    env = cardvault_env(settings)
    argv = [*cardvault_command(), "serve", "--data-dir", str(data_dir), "--host", "127.0.0.1", "--port", str(port)]
    if workers > 1:
        argv += ["--workers", str(workers)]
    log(f"starting {' '.join(argv)}")
    process = popen(argv, log_path, env)
    cert = data_dir / "tls" / "dev-cert.pem"
    keys_file = data_dir / "demo-agency.json"

    def ready() -> bool:
        if not (cert.exists() and keys_file.exists()):
            return False
        return https_status(base_url, "/readyz", ssl.create_default_context(cafile=str(cert))) == 200

    try:
        wait_ready(process, "cardvault serve", log_path, ready, START_TIMEOUT)
    except BaseException:  # a failed start, or Ctrl-C while waiting: nothing left running
        terminate(process, "cardvault serve")
        raise
    key = json.loads(keys_file.read_text(encoding="utf-8"))["secret_key"]
    probe = RedisProbe(f"unix://{embedded_redis_socket(data_dir)}")
    redis_pid = probe.describe().get("pid")

    def stop() -> list[str]:
        problems = terminate(process, "cardvault serve")
        if redis_pid and psutil.pid_exists(int(redis_pid)):
            with contextlib.suppress(psutil.Error):
                leftover = psutil.Process(int(redis_pid))
                if "redis" in leftover.name():
                    problems.append(f"the embedded redis-server (pid {redis_pid}) outlived cardvault serve; stopped it")
                    leftover.terminate()
                    leftover.wait(STOP_TIMEOUT)
        return problems

    return Target(
        name=name,
        base_url=base_url,
        key=key,
        ssl_context=ssl.create_default_context(cafile=str(cert)),
        pid=process.pid,
        redis=probe,
        stop=stop,
        log_path=log_path,
        process=process,
    )


# ------------------------------------------------------------------------------------------------- load


@dataclass
class PhaseResult:
    op: str
    elapsed: float
    latencies: list[float]
    statuses: collections.Counter[str]
    error_samples: dict[str, str]
    ids: list[str]

    @property
    def ok(self) -> int:
        return len(self.latencies)

    @property
    def errors(self) -> int:
        return sum(self.statuses.values())

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies)

        def pct(q: float) -> float | None:
            if not lat:
                return None
            return round(lat[min(len(lat) - 1, max(0, int(q * len(lat) + 0.999999) - 1))] * 1000, 2)

        return {
            "requests": self.ok + self.errors,
            "ok": self.ok,
            "errors": self.errors,
            "errors_by_status": dict(self.statuses),
            "error_samples": self.error_samples,
            "elapsed_s": round(self.elapsed, 3),
            "requests_per_s": round(self.ok / self.elapsed, 1) if self.elapsed > 0 else 0.0,
            "p50_ms": pct(0.50),
            "p90_ms": pct(0.90),
            "p99_ms": pct(0.99),
            "max_ms": round(lat[-1] * 1000, 2) if lat else None,
        }


#: index of the request in the phase -> the request to send, e.g. ``lambda i: session.get(urls[i % len(urls)])``
SendFn = Callable[[int], Any]
#: a 2xx answer's body -> None when it is what was expected, else a label to count it under as an error
CheckFn = Callable[[bytes], "str | None"]


async def run_phase(
    op: str,
    connections: int,
    duration: float | None,
    max_requests: int | None,
    max_duration: float,
    send: SendFn,
    check: CheckFn | None = None,
    ids: list[str] | None = None,
) -> PhaseResult:
    """Run one bounded phase of `connections` closed-loop workers over `send`: stop at `duration` seconds, or
    after `max_requests` within `max_duration`; cut at that end plus REQUEST_TIMEOUT whatever happens.

    Latency is measured around each request and its full body read, for 2xx answers that `check` accepts;
    everything else is counted by status (or `check`'s label, or exception type) with one sample each.
    `ids` is handed back in the result (a `check` may fill it)."""
    perf = time.perf_counter
    latencies: list[float] = []
    statuses: collections.Counter[str] = collections.Counter()
    samples: dict[str, str] = {}
    limit = max_requests if max_requests is not None else -1
    issued = 0
    start = perf()
    deadline = start + (duration if duration is not None else max_duration)

    async def worker() -> None:
        nonlocal issued
        while perf() < deadline and issued != limit:
            index = issued
            issued += 1
            t0 = perf()
            try:
                async with send(index) as response:
                    payload = await response.read()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                name = type(exc).__name__
                statuses[name] += 1
                samples.setdefault(name, str(exc)[:ERROR_SAMPLE_CHARS])
                await asyncio.sleep(0.01)  # a dead server must not turn the generator into a busy loop
                continue
            if 200 <= status < 300:
                latencies.append(perf() - t0)
                problem = check(payload) if check is not None else None
                if problem is not None:
                    latencies.pop()  # nothing awaited since the append: it is this request's
                    statuses[problem] += 1
                    samples.setdefault(problem, payload[:ERROR_SAMPLE_CHARS].decode("utf-8", "replace"))
            else:
                statuses[str(status)] += 1
                samples.setdefault(str(status), payload[:ERROR_SAMPLE_CHARS].decode("utf-8", "replace"))

    tasks = [asyncio.ensure_future(worker()) for _ in range(connections)]
    hard_stop = (duration if duration is not None else max_duration) + REQUEST_TIMEOUT + 5
    _, pending = await asyncio.wait(tasks, timeout=hard_stop)
    for task in pending:  # cannot happen unless a request outlives its own timeout; stop regardless
        task.cancel()
    if pending:
        await asyncio.wait(pending)
        statuses["cancelled_at_hard_stop"] += len(pending)
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            statuses[f"worker:{type(exc).__name__}"] += 1
            samples.setdefault(f"worker:{type(exc).__name__}", str(exc)[:ERROR_SAMPLE_CHARS])
    return PhaseResult(op, perf() - start, latencies, statuses, samples, ids if ids is not None else [])


def token_body(no_cvc: bool, metadata: int) -> bytes:
    card: dict[str, Any] = {"number": PUBLIC_TEST_CARD, "exp_month": 12, "exp_year": time.gmtime().tm_year + 5}
    if not no_cvc:
        card["cvc"] = "737"
    body: dict[str, Any] = {"card": card}
    if metadata:
        body["metadata"] = {f"key_{i:02d}": f"order-{i:06d}" for i in range(metadata)}
    return json.dumps(body, separators=(",", ":")).encode()


# ---------------------------------------------------------------------------------------------- output


def mib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:.1f}"


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


@contextlib.contextmanager
def workspace(keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="cvbench-"))  # short path: the embedded Redis socket lives under it
    try:
        yield path
    finally:
        if not keep:
            shutil.rmtree(path, ignore_errors=True)
