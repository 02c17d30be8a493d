"""wrk as the load generator of tokens.py's measured phases (``--generator wrk``).

Why: on a small machine the load generator shares the cores with the server and its Redis.  The
aiohttp client that tokens.py drives by default spends about 0.14 ms of CPU on a request, almost
half of what a cardvault worker spends, so with ``--workers 2`` on two cores the scaling figure
says as much about the generator as about the server.  wrk (Debian's ``wrk`` package, a C client
on epoll with LuaJIT scripting) spends a few hundredths of a millisecond, which is what a load
balancer in front of the service costs the machine the service runs on: nothing.

What differs from the aiohttp generator, and is said in the report:

- wrk counts every answer and times every answer; its percentiles (to the microsecond, from its
  HdrHistogram) cover error answers too, so a phase with errors is flagged as failed anyway;
- it cannot stop after N requests, so ``--requests`` is refused with it;
- the POST phase does not collect token ids: the GET phase reads the warm-up's tokens (the
  warm-up always runs on the aiohttp client, which also checks the answers' bodies).

Certificates are not verified (wrk cannot be told a CA): targets are loopback only anyway.
"""

from __future__ import annotations

import asyncio
import json
import resource
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import BenchError, Target

WRK = "wrk"
INSTALL_HINT = "apt-get install wrk (Debian's package; scripts/bench-setup installs it)"
REQUEST_TIMEOUT_S = 30


def wrk_path() -> str:
    found = shutil.which(WRK)
    if found is None:
        raise BenchError(f"--generator wrk needs the wrk binary on PATH: {INSTALL_HINT}")
    return found


def children_cpu_seconds() -> float:
    """CPU of every child this process has waited for: how the wrk runs' CPU is charged to the generator."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _lua_string(text: str) -> str:
    return json.dumps(text)  # a JSON string literal is a valid Lua string literal for ASCII text


_DONE = """
done = function(summary, latency, requests)
  local out = io.open(%(out)s, "w")
  out:write(string.format(
    '{"requests":%%d,"duration_us":%%d,"connect":%%d,"read":%%d,"write":%%d,"status":%%d,"timeout":%%d,' ..
    '"p50_us":%%d,"p90_us":%%d,"p99_us":%%d,"max_us":%%d}',
    summary.requests, summary.duration, summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.status, summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
  out:close()
end
"""


@dataclass
class WrkPhase:
    """One measured phase as wrk saw it, with the summary keys of ``common.PhaseResult``."""

    op: str
    elapsed: float
    answered: int
    statuses: dict[str, int]
    percentiles_ms: dict[str, float | None]
    ids: list[str] = field(default_factory=list)  # wrk does not read bodies

    @property
    def errors(self) -> int:
        return sum(self.statuses.values())

    @property
    def ok(self) -> int:
        return self.answered - self.statuses.get("non-2xx/3xx", 0)

    def summary(self) -> dict[str, Any]:
        return {
            "requests": self.answered + self.errors - self.statuses.get("non-2xx/3xx", 0),
            "ok": self.ok,
            "errors": self.errors,
            "errors_by_status": dict(self.statuses),
            "error_samples": {},
            "elapsed_s": round(self.elapsed, 3),
            "requests_per_s": round(self.ok / self.elapsed, 1) if self.elapsed > 0 else 0.0,
            **self.percentiles_ms,
            "generator": "wrk",
        }


class WrkLoad:
    """Runs wrk once per measured phase: one thread, ``connections`` keep-alive HTTPS connections."""

    def __init__(self, target: Target, connections: int, body: bytes) -> None:
        self.target = target
        self.connections = connections
        self.body = body
        self.binary = wrk_path()
        self.workdir = Path(tempfile.mkdtemp(prefix="cvbench-wrk-"))

    def _script(self, op: str, get_ids: list[str] | None, out: Path) -> Path:
        lines = ['wrk.headers["Accept"] = "application/json"']
        if self.target.key:
            lines.append(f'wrk.headers["Authorization"] = {_lua_string("Bearer " + self.target.key)}')
        if op == "POST":
            lines += [
                'wrk.method = "POST"',
                'wrk.headers["Content-Type"] = "application/json"',
                f"wrk.body = {_lua_string(self.body.decode())}",
            ]
        else:
            paths = ", ".join(_lua_string(f"/v1/tokens/{token_id}") for token_id in get_ids or ())
            lines += [
                f"local paths = {{{paths}}}",
                "local n = 0",
                "request = function()",
                "  n = n + 1",
                '  return wrk.format("GET", paths[(n % #paths) + 1])',
                "end",
            ]
        script = self.workdir / f"{op.lower()}.lua"
        script.write_text("\n".join(lines) + _DONE % {"out": _lua_string(str(out))}, encoding="utf-8")
        return script

    async def phase(self, op: str, duration: float, get_ids: list[str] | None = None) -> WrkPhase:
        """One phase of ``duration`` seconds; POST sends the body, GET cycles over ``get_ids``."""
        if op == "GET" and not get_ids:
            return WrkPhase(op, 0.0, 0, {"skipped: no token to read": 1}, {})
        out = self.workdir / f"{op.lower()}.json"
        out.unlink(missing_ok=True)
        path = "/v1/tokens" if op == "POST" else "/"
        command = [
            self.binary,
            "-t1",
            f"-c{self.connections}",
            f"-d{max(1, round(duration))}s",
            f"--timeout={REQUEST_TIMEOUT_S}s",
            "-s",
            str(self._script(op, get_ids, out)),
            self.target.base_url + path,
        ]
        limit = duration + REQUEST_TIMEOUT_S + 10
        completed = await asyncio.to_thread(_run, command, limit)
        if completed.returncode != 0 or not out.exists():
            raise BenchError(f"wrk failed (exit {completed.returncode}): {completed.stderr.strip()[:300]}")
        raw = json.loads(out.read_text(encoding="utf-8"))
        statuses = {
            name: raw[key]
            for name, key in (
                ("non-2xx/3xx", "status"),
                ("connect error", "connect"),
                ("read error", "read"),
                ("write error", "write"),
                ("timeout", "timeout"),
            )
            if raw[key]
        }
        percentiles = {
            f"{name}_ms": round(raw[f"{name}_us"] / 1000, 2) if raw["requests"] else None
            for name in ("p50", "p90", "p99", "max")
        }
        return WrkPhase(op, raw["duration_us"] / 1e6, raw["requests"], statuses, percentiles)

    def close(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)


def _run(command: list[str], limit: float) -> subprocess.CompletedProcess[str]:
    """Run wrk and wait for it (so its CPU lands in RUSAGE_CHILDREN); a wrk that hangs is killed."""
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        try:
            stdout, stderr = process.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate()
            raise BenchError(f"wrk did not finish within {limit:g} s") from None
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
