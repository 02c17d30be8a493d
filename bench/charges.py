#!/usr/bin/env python3
"""What a charge through cardvault costs over calling the processor directly (issue 3, item 9).

    python bench/charges.py                  # 16 connections, 2 s warm-up + 10 s per phase
    python bench/charges.py -c 1 -d 10       # one request at a time: the latency cardvault adds, unloaded
    python bench/charges.py --json > charges.json

Everything runs on 127.0.0.1 and is started, and stopped, by this script:

* the tests' fake Authorize.Net gateway (tests/support/fake_authorize_net.py, real HTTPS with its own
  CA) in a process of its own (bench/fake_processor.py), so its CPU is neither the server's nor the
  generator's; its duplicate-transaction window is off, so the same authorization can be sent again
  and again;
* `cardvault serve` in a temporary data directory (embedded Redis, development mode) with
  ``CARDVAULT_PROCESSORS__CA_FILE`` set to the fake's CA; then, with the CLI on the same data
  directory, the demo agency is pointed at the fake (``agency set-processor demo authorize_net
  --login-id --transaction-key --endpoint``) and a second agency, left on the ``sandbox`` processor,
  is created; each gets a pool of tokens without a CVC (so every token can be charged any number of
  times).

Then, with the same connections and duration, one after the other:

1. ``direct``: the fake called directly with the ``authCaptureTransaction`` body the adapter builds
   (made by the adapter's own code, and checked against what the fake received from cardvault), the
   same TLS settings, keep-alive connections;
2. ``authorize_net``: ``POST /v1/charges`` for the demo agency, which cardvault sends to the fake;
3. ``sandbox``: ``POST /v1/charges`` for the sandbox agency (no network hop);
4. ``token GET``: ``GET /v1/tokens/{id}`` for the sandbox agency's tokens.

and prints requests/s, p50/p90/p99/max, the CPU of server, Redis, fake processor and generator, and
the differences: authorize_net charge minus direct call (what cardvault adds), sandbox charge minus
token lookup.  Only the public test card 4242 4242 4242 4242 is ever sent.  See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import datetime
import json
import os
import secrets
import select
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from common import (
    BUSY_MACHINE,
    PUBLIC_TEST_CARD,
    START_TIMEOUT,
    STOP_TIMEOUT,
    BenchError,
    CpuMeter,
    PhaseResult,
    Target,
    cardvault_command,
    cardvault_env,
    client_session,
    log,
    machine_info,
    machine_line,
    mib,
    ms,
    pct,
    rss_bytes,
    run_phase,
    spawn_cardvault,
    tail,
    terminate,
    token_body,
    uvloop,
    workspace,
)
from yarl import URL

BENCH_DIR = Path(__file__).resolve().parent
CLI_TIMEOUT = 60.0  # seconds for one `cardvault agency ...` command
CONTROL_TIMEOUT = 10.0  # seconds for the fake processor to answer a control command
SETUP_MAX_SECONDS = 120.0  # hard stop for creating the token pools
SANDBOX_AGENCY = "bench-sandbox"
CURRENCY = "usd"
PHASES = ("direct", "authorize_net", "sandbox", "token_get")
LABELS = {
    "direct": "POST fake Authorize.Net, direct",
    "authorize_net": "POST /v1/charges -> authorize_net",
    "sandbox": "POST /v1/charges -> sandbox",
    "token_get": "GET /v1/tokens/{id}",
}
ISSUE7_SANDBOX_OVER_LOOKUP_MS = 2.0  # issue 7's target for a sandbox charge over the token lookup, at p50
# keys whose values differ per charge or are secret: left out when comparing the direct body with cardvault's
VARYING_KEYS = frozenset({"refId", "invoiceNumber", "cardNumber", "cardCode", "transactionKey"})


# ------------------------------------------------------------------------------------------ fake processor


class FakeProcessor:
    """bench/fake_processor.py in its own process: JSON lines on its stdout, commands on its stdin."""

    def __init__(self, workdir: Path, delay: float, max_seconds: float) -> None:
        self.ca_file = workdir / "fake-processor-ca.pem"
        self.log_path = workdir / "fake-processor.log"
        argv = [
            sys.executable,
            str(BENCH_DIR / "fake_processor.py"),
            "--ca-file",
            str(self.ca_file),
            "--duplicate-window",
            "0",
            "--delay",
            repr(delay),
            "--max-seconds",
            repr(max_seconds),
        ]
        log(f"starting the fake Authorize.Net: {' '.join(argv[1:])}")
        with self.log_path.open("wb") as errors:
            self.process: subprocess.Popen[bytes] = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=errors,
                start_new_session=True,  # Ctrl-C reaches only the benchmark, which then stops it
            )
        self._buffer = b""
        try:
            self.info = self._read_line(START_TIMEOUT, "start")
        except BenchError:
            terminate(self.process, "fake processor")
            raise
        if self.info.get("duplicate_window") != 0:
            self.stop()
            raise BenchError("the fake processor's duplicate window is not off; repeated charges would be refused")

    @property
    def pid(self) -> int:
        return self.process.pid

    def _read_line(self, timeout: float, what: str) -> dict[str, Any]:
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BenchError(f"the fake processor did not answer {what!r} within {timeout:.0f}s")
            ready, _, _ = select.select([fd], [], [], remaining)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    code = self.process.wait(STOP_TIMEOUT)
                    raise BenchError(
                        f"the fake processor exited (code {code}) during {what!r}; last lines of {self.log_path}:\n"
                        f"{tail(self.log_path)}"
                    )
                self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return dict(json.loads(line))

    def stats(self) -> dict[str, Any]:
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(b"stats\n")
            self.process.stdin.flush()
        except OSError as exc:
            raise BenchError(f"the fake processor is gone ({exc})") from exc
        return self._read_line(CONTROL_TIMEOUT, "stats")

    def stop(self) -> list[str]:
        """End of stdin asks it to stop; SIGTERM (then SIGKILL) if it does not."""
        if self.process.poll() is not None:
            return [f"the fake processor had already exited (code {self.process.returncode}); see {self.log_path}"]
        with contextlib.suppress(OSError):
            assert self.process.stdin is not None
            self.process.stdin.close()
        try:
            code = self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            return terminate(self.process, "fake processor")
        finally:
            if self.process.stdout is not None:
                self.process.stdout.close()
        return [] if code == 0 else [f"the fake processor exited with code {code}; see {self.log_path}"]


# ------------------------------------------------------------------------------------------------ set-up


def cardvault_cli(args: list[str], data_dir: Path, env: dict[str, str], secret: str | None = None) -> str:
    """One `cardvault` command against the running server's data directory; its stdout.  `secret` is
    masked in what is logged."""
    argv = [*cardvault_command(), *args, "--data-dir", str(data_dir)]
    shown = " ".join("***" if secret and arg == secret else arg for arg in args)
    log(f"cardvault {shown} --data-dir {data_dir}")
    try:
        done = subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, env=env, timeout=CLI_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"`cardvault {shown}` did not finish within {CLI_TIMEOUT:.0f}s") from exc
    if done.returncode != 0:
        errors = done.stderr.decode("utf-8", "replace").strip().splitlines()[-5:]
        raise BenchError(f"`cardvault {shown}` failed (exit {done.returncode}): " + " / ".join(errors))
    return done.stdout.decode("utf-8", "replace")


def configure_agencies(target: Target, fake: FakeProcessor, data_dir: Path, env: dict[str, str]) -> dict[str, str]:
    """Point the demo agency at the fake, create a sandbox agency; the secret key of each."""
    demo = json.loads((data_dir / "demo-agency.json").read_text(encoding="utf-8"))
    slug, info = demo["agency"], fake.info
    set_processor = ["agency", "set-processor", slug, "authorize_net", "--login-id", info["login_id"]]
    set_processor += ["--transaction-key", info["transaction_key"], "--endpoint", info["endpoint"]]
    cardvault_cli(set_processor, data_dir, env, secret=info["transaction_key"])
    created = json.loads(cardvault_cli(["agency", "create", SANDBOX_AGENCY], data_dir, env))
    assert target.key == demo["secret_key"]
    return {"authorize_net": demo["secret_key"], "sandbox": created["secret_key"]}


class _Captured(Exception):
    def __init__(self, data: bytes, headers: dict[str, str]) -> None:
        super().__init__("captured")
        self.data = data
        self.headers = headers


class _CapturingSession:
    """Stands in for the adapter's aiohttp session: takes the request it would send, sends nothing."""

    def post(self, url: str, *, data: bytes, headers: Any = None, **_: Any) -> Any:
        raise _Captured(data, dict(headers or {}))


async def adapter_request(fake: FakeProcessor, amount: int, exp_year: int) -> tuple[bytes, dict[str, str]]:
    """The body and headers the Authorize.Net adapter sends for a charge of a token like ours (no CVC, no
    name or postal code), built by the adapter itself; the reference is made like a charge's."""
    from service.adapters.processors.authorize_net import AuthorizeNetProcessor
    from service.adapters.processors.base import AuthorizationRequest, CardDetails
    from service.domain.cards import parse_card_number
    from service.domain.charges import new_charge_id

    processor = AuthorizeNetProcessor(
        fake.info["login_id"],
        fake.info["transaction_key"],
        session=_CapturingSession(),  # type: ignore[arg-type]
        endpoint=fake.info["endpoint"],
    )
    card = CardDetails(number=parse_card_number(PUBLIC_TEST_CARD), exp_month=12, exp_year=exp_year)
    reference = new_charge_id().removeprefix("ch_")[:20]  # as ChargeService.create does
    request = AuthorizationRequest(card=card, amount=amount, currency=CURRENCY, capture=True, reference=reference)
    try:
        await processor.authorize(request)
    except _Captured as captured:
        return captured.data, captured.headers
    raise BenchError("the Authorize.Net adapter did not send its request through the session")


def processor_tls(ca_file: Path) -> ssl.SSLContext:
    """The same outbound TLS context cardvault builds for processors (system CAs plus processors.ca_file)."""
    from service.app import outbound_tls

    return outbound_tls(ca_file)


def comparable(document: Any) -> Any:
    """A request with the per-charge and secret values replaced, so two charges' bodies can be compared."""
    if isinstance(document, dict):
        return [(key, "<varies>" if key in VARYING_KEYS else comparable(value)) for key, value in document.items()]
    if isinstance(document, list):
        return [comparable(item) for item in document]
    return document


# ------------------------------------------------------------------------------------------------- load


def check_direct(payload: bytes) -> str | None:
    """An approval from the gateway (HTTP 200 carries errors and declines too)."""
    try:
        answer = json.loads(payload.decode("utf-8-sig"))
        transaction = answer.get("transactionResponse") or {}
        if transaction.get("responseCode") == "1" and answer["messages"]["resultCode"] == "Ok":
            return None
        if transaction:
            reason = (transaction.get("errors") or transaction.get("messages") or [{}])[0]
            code = reason.get("errorCode") or reason.get("code")
            return f"200 responseCode {transaction.get('responseCode')} reason {code}"
        return f"200 {answer['messages']['message'][0]['code']}"
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return "200 unreadable answer"


def charge_check(processor: str) -> Callable[[bytes], str | None]:
    def check(payload: bytes) -> str | None:
        try:
            charge = json.loads(payload)
            status, name = charge["status"], charge["processor"]["name"]
        except (ValueError, KeyError, TypeError):
            return "2xx unreadable charge"
        if status != "succeeded":
            return f"2xx charge {status}"
        if name != processor:
            return f"2xx charge by {name}"
        return None

    return check


@dataclass
class Phase:
    name: str
    send: Callable[[int], Any]
    check: Callable[[bytes], str | None] | None


class Bench:
    """The sessions, token pools and request builders of one run."""

    def __init__(self, args: argparse.Namespace, target: Target, fake: FakeProcessor, keys: dict[str, str]) -> None:
        self.args = args
        self.target = target
        self.fake = fake
        self.keys = keys
        self.sessions: dict[str, aiohttp.ClientSession] = {}
        self.tokens: dict[str, list[str]] = {}
        self.direct_body = b""
        self.direct_headers: dict[str, str] = {}
        self.windows: dict[str, tuple[float, float]] = {}  # measured phases, wall clock

    async def open(self) -> None:
        connections = self.args.connections
        json_headers = {"Content-Type": "application/json", "Accept": "application/json"}
        for name, key in self.keys.items():
            headers = {**json_headers, "Authorization": f"Bearer {key}"}
            self.sessions[name] = client_session(connections, self.target.ssl_context, headers)
        exp_year = json.loads(token_body(True, 0))["card"]["exp_year"]
        self.direct_body, self.direct_headers = await adapter_request(self.fake, self.args.amount, exp_year)
        tls = processor_tls(self.fake.ca_file)
        self.sessions["direct"] = client_session(connections, tls, self.direct_headers)

    async def close(self) -> None:
        for session in self.sessions.values():
            await session.close()

    async def create_tokens(self) -> None:
        """`--tokens` tokens without a CVC per agency, over the agency's own connections."""
        body, url = token_body(True, 0), URL(self.target.base_url + "/v1/tokens")
        for name in self.keys:
            session, ids = self.sessions[name], []

            def send(index: int, session: aiohttp.ClientSession = session) -> Any:
                return session.post(url, data=body)

            def keep_id(payload: bytes, ids: list[str] = ids) -> None:
                ids.append(json.loads(payload)["id"])

            result = await run_phase(
                "tokens", self.args.connections, None, self.args.tokens, SETUP_MAX_SECONDS, send, keep_id, ids
            )
            if result.errors or len(ids) != self.args.tokens:
                raise BenchError(f"creating {name} tokens failed: {dict(result.statuses)} {result.error_samples}")
            self.tokens[name] = ids
        log(f"created {self.args.tokens} tokens without CVC for each of {', '.join(self.keys)}")

    async def first_charges(self) -> None:
        """One charge per agency before any load: the right processor answers, and approves."""
        for name in self.keys:
            charge = {"token": self.tokens[name][0], "amount": self.args.amount, "currency": CURRENCY}
            body = json.dumps(charge).encode()
            async with self.sessions[name].post(self.target.base_url + "/v1/charges", data=body) as response:
                payload = await response.read()
                if response.status != 201:
                    raise BenchError(f"a first {name} charge answered {response.status}: {payload[:300]!r}")
            problem = charge_check(name)(payload)
            if problem is not None:
                raise BenchError(f"a first {name} charge: {problem}: {payload[:300]!r}")

    def phase(self, name: str) -> Phase:
        if name == "direct":
            session, endpoint, body = self.sessions["direct"], URL(self.fake.info["endpoint"]), self.direct_body

            def send_direct(index: int) -> Any:
                return session.post(endpoint, data=body, allow_redirects=False)

            return Phase(name, send_direct, check_direct)
        if name == "token_get":
            session = self.sessions["sandbox"]
            urls = [URL(f"{self.target.base_url}/v1/tokens/{token}") for token in self.tokens["sandbox"]]

            def send_get(index: int) -> Any:
                return session.get(urls[index % len(urls)])

            return Phase(name, send_get, None)
        session, url = self.sessions[name], URL(self.target.base_url + "/v1/charges")
        bodies = [
            json.dumps({"token": token, "amount": self.args.amount, "currency": CURRENCY}).encode()
            for token in self.tokens[name]
        ]
        if self.args.idempotency_keys:
            prefix = f"bench-{secrets.token_hex(6)}-"  # a fresh key for every request: none is a replay

            def send_keyed(index: int) -> Any:
                return session.post(
                    url, data=bodies[index % len(bodies)], headers={"Idempotency-Key": f"{prefix}{index}"}
                )

            return Phase(name, send_keyed, charge_check(name))

        def send_charge(index: int) -> Any:
            return session.post(url, data=bodies[index % len(bodies)])

        return Phase(name, send_charge, charge_check(name))


def run_phases(runner: asyncio.Runner, bench: Bench, meter: CpuMeter, report: dict[str, Any]) -> None:
    args = bench.args
    for name in PHASES:
        phase = bench.phase(name)
        prefix = f"{name} ({LABELS[name]})"
        if args.warmup > 0:
            log(f"{prefix}: warm-up {args.warmup:g}s")
            warm = runner.run(
                run_phase(name, args.connections, args.warmup, None, args.warmup, phase.send, phase.check)
            )
            report["warmup"][name] = {"requests": warm.ok + warm.errors, "errors_by_status": dict(warm.statuses)}
            phase = bench.phase(name)  # with --idempotency-keys, a new key prefix: no key of the warm-up again
        log(f"{prefix}: {args.duration:g}s with {args.connections} connections")
        rss_before = rss_bytes(bench.target.pid)
        meter.begin()
        wall_start = time.time()
        outcome: PhaseResult = runner.run(
            run_phase(name, args.connections, args.duration, None, args.duration, phase.send, phase.check)
        )
        bench.windows[name] = (wall_start, time.time())
        summary = outcome.summary()
        summary["cpu_percent"] = meter.end(outcome.elapsed)
        summary["rss_before_bytes"] = rss_before
        summary["rss_after_bytes"] = rss_bytes(bench.target.pid)
        report["phases"][name] = summary
        if name == "authorize_net":
            report["checks"]["request_shape"] = compare_shapes(bench, bench.fake.stats())


def compare_shapes(bench: Bench, stats: dict[str, Any]) -> dict[str, Any]:
    """The direct body against the last authCaptureTransaction cardvault sent to the fake (masked by it)."""
    last = stats.get("last_auth_capture")
    if last is None:
        return {"same": False, "problem": "the fake saw no authCaptureTransaction from cardvault"}
    direct = json.loads(bench.direct_body)
    same = comparable(direct) == comparable(last["body"])
    result: dict[str, Any] = {"same": same, "direct_body_bytes": len(bench.direct_body)}
    if not same:
        result["direct"] = comparable(direct)
        result["cardvault"] = comparable(last["body"])
    return result


def processor_call_times(log_path: Path, window: tuple[float, float]) -> dict[str, Any]:
    """The authorize_net calls as cardvault itself timed them (its `processor_call` log lines, elapsed_ms,
    0.1 ms resolution) during the measured phase: how much of a charge is the processor, seen from inside."""
    elapsed: list[float] = []
    with log_path.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            if '"processor_call"' not in line:
                continue
            try:
                event = json.loads(line)
                at = datetime.datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()
            except (ValueError, KeyError, AttributeError):
                continue
            if window[0] <= at <= window[1] and event.get("status") == 200:
                elapsed.append(float(event["elapsed_ms"]) / 1000)
    summary = PhaseResult("processor_call", 0.0, elapsed, collections.Counter(), {}, []).summary()
    return {"calls": summary["ok"], **{k: summary[k] for k in ("p50_ms", "p90_ms", "p99_ms", "max_ms")}}


def added(report: dict[str, Any]) -> dict[str, Any]:
    phases = report["phases"]

    def diff(over: str, base: str) -> dict[str, Any]:
        a, b = phases.get(over), phases.get(base)
        if not a or not b:
            return {}

        def minus(key: str) -> float | None:
            return round(a[key] - b[key], 2) if a[key] is not None and b[key] is not None else None

        ratio = round(a["requests_per_s"] / b["requests_per_s"], 3) if b["requests_per_s"] else None
        clean = not a["errors"] and not b["errors"]
        return {"p50_ms": minus("p50_ms"), "p99_ms": minus("p99_ms"), "throughput_ratio": ratio, "clean": clean}

    return {
        "authorize_net_over_direct": diff("authorize_net", "direct"),
        "sandbox_over_token_get": diff("sandbox", "token_get"),
        "authorize_net_over_sandbox": diff("authorize_net", "sandbox"),
    }


def processor_calls(report: dict[str, Any], stats: dict[str, Any]) -> dict[str, Any]:
    """Every direct call and every authorize_net charge reached the fake exactly once (when nothing failed)."""
    sent = 1  # the first charge
    for name in ("direct", "authorize_net"):
        sent += report["phases"][name]["requests"] + report["warmup"].get(name, {}).get("requests", 0)
    seen = stats.get("counts", {}).get("authCaptureTransaction", 0)
    return {"auth_capture_seen": seen, "auth_capture_sent": sent, "total_requests": stats.get("total_requests")}


# ---------------------------------------------------------------------------------------------- output


def render(report: dict[str, Any]) -> str:
    cfg, machine, processor = report["config"], report["machine"], report["processor"]
    lines = [
        f"cardvault charges bench: {cfg['connections']} connections, {cfg['duration_s']:g} s per phase after "
        f"{cfg['warmup_s']:g} s warm-up, loop {cfg['loop']}",
        machine_line(machine),
        f"charge: {cfg['amount']} cents {CURRENCY}, card {PUBLIC_TEST_CARD} (public test number), tokens without CVC, "
        f"{cfg['tokens_per_agency']} per agency, "
        + ("a fresh Idempotency-Key each" if cfg["idempotency_keys"] else "no Idempotency-Key"),
        f"processor: fake Authorize.Net in its own process (pid {processor['pid']}), answers after "
        f"{processor['delay_s']:g} s, duplicate window off; direct body {processor['direct_body_bytes']} bytes",
        "",
    ]
    header = (
        f"{'phase':<14} {'request':<34} {'requests':>8} {'errors':>6} {'req/s':>8} {'p50 ms':>7} {'p90 ms':>7} "
        f"{'p99 ms':>7} {'max ms':>7}  {'srv RSS MiB':>13}  {'CPU% srv/redis/proc/gen/other':>29}"
    )
    lines += [header, "-" * len(header)]
    notes: list[str] = []
    for name, s in report["phases"].items():
        rss = f"{mib(s['rss_before_bytes'])}->{mib(s['rss_after_bytes'])}"
        cpu = "/".join(pct(s["cpu_percent"].get(k)) for k in ("server", "redis", "processor", "generator", "other"))
        lines.append(
            f"{name:<14} {LABELS[name]:<34} {s['requests']:>8} {s['errors']:>6} {s['requests_per_s']:>8.1f} "
            f"{ms(s['p50_ms']):>7} {ms(s['p90_ms']):>7} {ms(s['p99_ms']):>7} {ms(s['max_ms']):>7}  {rss:>13}"
            f"  {cpu:>29}"
        )
        other = s["cpu_percent"].get("other")
        if other is not None and other > BUSY_MACHINE:
            notes.append(
                f"{name}: other processes used {other:.0f}% of a core during the phase; the machine was not quiet, "
                "so these figures are disturbed (run again)"
            )
        for status, count in s["errors_by_status"].items():
            sample = s["error_samples"].get(status, "").replace("\n", " ")
            notes.append(f"{name}: {count} x {status}" + (f": {sample}" if sample else ""))
    for name, warm in report["warmup"].items():
        if warm["errors_by_status"]:
            notes.append(f"{name} warm-up errors: {warm['errors_by_status']}")
    lines += ["", f"{'added latency':<44} {'p50 ms':>8} {'p99 ms':>8}  throughput"]
    titles = {
        "authorize_net_over_direct": "authorize_net charge over the direct call",
        "sandbox_over_token_get": "sandbox charge over the token lookup",
        "authorize_net_over_sandbox": "authorize_net charge over a sandbox charge",
    }
    for key, title in titles.items():
        d = report["added"].get(key) or {}
        if not d:
            continue
        p50, p99 = d["p50_ms"], d["p99_ms"]
        line = f"{title:<44} {'-' if p50 is None else f'{p50:+.2f}':>8} {'-' if p99 is None else f'{p99:+.2f}':>8}"
        line += f"  x{d['throughput_ratio']:.2f}" if d["throughput_ratio"] is not None else "  -"
        if not d["clean"]:
            line += "  (a phase had errors: not comparable)"
        elif key == "sandbox_over_token_get" and p50 is not None:
            verdict = "within" if p50 <= ISSUE7_SANDBOX_OVER_LOOKUP_MS else "over"
            line += f"  ({verdict} issue 7's {ISSUE7_SANDBOX_OVER_LOOKUP_MS:g} ms at p50)"
        lines.append(line)
    checks = report["checks"]
    inside = checks.get("processor_call_in_cardvault")
    if inside and inside["calls"]:
        lines += [
            "",
            f"inside cardvault (its processor_call log lines, 0.1 ms resolution): the call to the fake took p50 "
            f"{ms(inside['p50_ms'])} / p99 {ms(inside['p99_ms'])} ms over the {inside['calls']} authorize_net charges",
        ]
    shape = checks.get("request_shape", {})
    calls = checks.get("processor_calls", {})
    lines += [
        "",
        "checks: direct body "
        + (
            "is the one cardvault sends (but for refId, invoiceNumber, card number, key)"
            if shape.get("same")
            else "DIFFERS from what cardvault sends"
        )
        + f"; the fake saw {calls.get('auth_capture_seen')} authCaptureTransaction for "
        f"{calls.get('auth_capture_sent')} sent",
    ]
    notes += report.get("problems", [])
    if notes:
        lines += ["", "errors, problems and notes:"] + [f"  {n}" for n in notes]
    if report.get("kept"):
        lines += ["", f"logs and data kept in {report['kept']}"]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Charges through cardvault against the same fake Authorize.Net called directly (loopback only).",
    )
    parser.add_argument("--connections", "-c", type=int, default=16, help="concurrent connections [16]")
    parser.add_argument("--duration", "-d", type=float, default=10.0, help="seconds per measured phase [10]")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds before each phase, not counted [2]")
    parser.add_argument("--tokens", type=int, default=64, help="tokens (without CVC) per agency, charged in turn [64]")
    parser.add_argument("--amount", type=int, default=2500, help="charge amount in cents [2500]")
    parser.add_argument(
        "--idempotency-keys", action="store_true", help="send a fresh Idempotency-Key with every charge"
    )
    parser.add_argument(
        "--processor-delay", type=float, default=0.0, help="seconds the fake waits before each answer [0]"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, data) after the run")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    args = parser.parse_args(argv)
    if not 1 <= args.connections <= 1024:
        parser.error("--connections must be 1..1024")
    if args.duration <= 0 or args.duration > 3600:
        parser.error("--duration must be in (0, 3600] seconds")
    if not 0 <= args.warmup <= 600:
        parser.error("--warmup must be 0..600 seconds")
    if not 1 <= args.tokens <= 100_000:
        parser.error("--tokens must be 1..100000")
    if not 1 <= args.amount <= 99_999_999:
        parser.error("--amount must be 1..99999999 cents")
    if not 0 <= args.processor_delay <= 20:
        parser.error("--processor-delay must be 0..20 seconds (below the 25 s processor timeout)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report: dict[str, Any] = {
        "config": {
            "connections": args.connections,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "loop": "uvloop" if uvloop else "asyncio",
            "tokens_per_agency": args.tokens,
            "amount": args.amount,
            "currency": CURRENCY,
            "idempotency_keys": args.idempotency_keys,
        },
        "machine": machine_info(),
        "processor": {},
        "server": {},
        "warmup": {},
        "phases": {},
        "checks": {},
        "problems": [],
    }
    loop_factory = uvloop.new_event_loop if uvloop else None
    # the fake stops by itself after this long whatever happens (every phase is bounded well within it)
    lifetime = START_TIMEOUT * 2 + SETUP_MAX_SECONDS + len(PHASES) * (args.warmup + args.duration + 60) + 120
    try:
        with workspace(args.keep) as workdir, asyncio.Runner(loop_factory=loop_factory) as runner:
            if args.keep:
                report["kept"] = str(workdir)
            fake = FakeProcessor(workdir, args.processor_delay, lifetime)
            target: Target | None = None
            bench: Bench | None = None
            try:
                report["processor"] = {
                    "endpoint": fake.info["endpoint"],
                    "pid": fake.pid,
                    "delay_s": fake.info["delay"],
                }
                settings = {"CARDVAULT_PROCESSORS__CA_FILE": str(fake.ca_file)}
                target = spawn_cardvault(workdir, settings)
                data_dir = workdir / "cardvault"
                keys = configure_agencies(target, fake, data_dir, cardvault_env(settings))
                assert target.redis is not None
                redis_info = target.redis.describe()
                report["server"] = {"url": target.base_url, "pid": target.pid, "redis": redis_info}
                bench = Bench(args, target, fake, keys)
                runner.run(bench.open())
                report["processor"]["direct_body_bytes"] = len(bench.direct_body)
                runner.run(bench.create_tokens())
                runner.run(bench.first_charges())
                redis_pid = redis_info.get("pid")
                meter = CpuMeter(target.pid, int(redis_pid) if redis_pid else None, {"processor": fake.pid})
                run_phases(runner, bench, meter, report)
                report["checks"]["processor_calls"] = processor_calls(report, fake.stats())
                report["added"] = added(report)
            finally:
                if bench is not None:
                    runner.run(bench.close())
                if target is not None:
                    assert target.stop is not None
                    report["problems"] += [f"cardvault: {p}" for p in target.stop()]
                    if bench is not None and "authorize_net" in bench.windows and target.log_path is not None:
                        window = bench.windows["authorize_net"]
                        report["checks"]["processor_call_in_cardvault"] = processor_call_times(target.log_path, window)
                report["problems"] += [f"fake processor: {p}" for p in fake.stop()]
                for problem in report["problems"]:
                    log(problem)
    except BenchError as exc:
        log(f"error: {exc}")
        return 2
    except KeyboardInterrupt:
        log("interrupted; spawned processes were stopped")
        return 130
    checks = report["checks"]
    if not checks["request_shape"].get("same"):
        report["problems"].append("the direct body differs from what cardvault sends the fake (see --json)")
    failed = any(p["errors"] for p in report["phases"].values()) or any(
        w["errors_by_status"] for w in report["warmup"].values()
    )
    calls = checks["processor_calls"]
    if not failed and calls["auth_capture_seen"] != calls["auth_capture_sent"]:
        report["problems"].append(
            f"the fake saw {calls['auth_capture_seen']} authCaptureTransaction, but {calls['auth_capture_sent']} "
            "were sent (direct calls + authorize_net charges)"
        )
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 1 if failed or report["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
