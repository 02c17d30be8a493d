#!/usr/bin/env python3
"""Interleaved rounds of ``POST /v1/tokens`` and ``GET /v1/tokens/{id}``: ratios that survive a drifting machine.

    python bench/tokens_rounds.py --compare-reference --workers 1 2

``bench/tokens.py`` measures one target after the other, 10 s per phase, so a ratio compares phases a
minute apart; on a shared VM whose speed drifts by 15-20% over minutes, that ratio is mostly drift.
This script starts every target at once and keeps them running (cardvault ``serve --workers 1``,
optionally ``serve --workers N``, optionally the bare reference app, each with its own Redis), warms
each one up, then runs ``--rounds`` rounds: in each round, every target gets a short POST phase then a
GET phase, in an order that rotates from round to round.  Each ratio (cardvault / reference,
cardvault-wN / cardvault) is taken within one round, seconds apart, and the report gives the median of
those per-round ratios.  See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import (
    BUSY_MACHINE,
    BenchError,
    CpuMeter,
    Target,
    fmt,
    log,
    machine_info,
    machine_line,
    spawn_cardvault,
    tail,
    token_body,
    token_body_line,
    uvloop,
    workspace,
)
from tokens import Load, default_reference_path, server_cpu_ms, spawn_reference, target_name
from wrk_load import WrkLoad, children_cpu_seconds

OPS = ("POST", "GET")
SETTLE_S = 0.25  # pause between phases: the previous target's closing connections and fsyncs settle


# ------------------------------------------------------------------------------------------- processes


@contextlib.contextmanager
def deferred_signals() -> Iterator[None]:
    """Hold SIGINT and SIGTERM while a process is being started and recorded, so that it cannot be left
    running behind our back; the signal is raised (as KeyboardInterrupt) as soon as the block ends."""
    received: list[int] = []

    def hold(signum: int, frame: Any) -> None:
        if previous[signum] is not signal.SIG_IGN:
            received.append(signum)

    previous: dict[int, Any] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, hold)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if received:
        raise KeyboardInterrupt


def term_as_interrupt(signum: int, frame: Any) -> None:
    """SIGTERM handled as Ctrl-C, by whichever SIGINT handler is current (asyncio.Runner's during a phase,
    which cancels it cleanly), so that the spawned processes are stopped on the way out."""
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler):
        handler(signal.SIGINT, frame)
    else:  # SIGINT ignored (a background job): still stop
        raise KeyboardInterrupt


@dataclass
class Running:
    """One spawned target, kept running for the whole benchmark, with its generators and CPU meter."""

    target: Target
    load: Load
    wrk: WrkLoad | None
    info: dict[str, Any]
    meter: CpuMeter | None = None
    ids: list[str] = field(default_factory=list)  # the warm-up's tokens: what every GET phase reads

    @property
    def redis_pid(self) -> int | None:
        pid = self.info.get("redis", {}).get("pid")
        return int(pid) if pid else None


def start_targets(args: argparse.Namespace, workdir: Path, reference: Path | None, targets: list[Target]) -> None:
    """Start cardvault once per ``--workers`` count, then the reference; each is appended to `targets` as
    soon as it is up (with signals held meanwhile), so the caller can stop whatever was started."""
    for workers in args.workers:
        with deferred_signals():
            targets.append(spawn_cardvault(workdir, workers=workers, name=target_name(workers)))
    if reference is not None:
        tls_dir = workdir / target_name(1) / "tls"  # the same generated certificate as cardvault's
        with deferred_signals():
            targets.append(
                spawn_reference(
                    workdir, reference, tls_dir / "dev-cert.pem", tls_dir / "dev-key.pem", args.reference_redis_unix
                )
            )


def stop_targets(targets: list[Target], problems: dict[str, list[str]]) -> None:
    """Stop every target (and its Redis) in reverse order of start, each even if another's stop failed; a
    Ctrl-C meanwhile waits until all are stopped."""
    with deferred_signals():
        for target in reversed(targets):
            assert target.stop is not None
            try:
                stopped = target.stop()
            except Exception as exc:  # report it and go on stopping the others
                stopped = [f"stopping it failed: {type(exc).__name__}: {exc}"]
            for problem in stopped:
                log(f"{target.name}: {problem}")
            problems.setdefault(target.name, []).extend(stopped)


# ------------------------------------------------------------------------------------------------ phases


def prepare(runner: asyncio.Runner, target: Target, args: argparse.Namespace, body: bytes) -> Running:
    load = Load(target, args.connections, body)
    runner.run(load.open())
    wrk = WrkLoad(target, args.connections, body) if args.generator == "wrk" else None
    info: dict[str, Any] = {"name": target.name, "url": target.base_url, "pid": target.pid}
    if target.redis is not None:
        info["redis"] = target.redis.describe()
    return Running(target, load, wrk, info)


def attach_meters(running: list[Running]) -> None:
    """Each target's CPU meter: its server and Redis, and apart from "other" the targets waiting their turn."""
    for run in running:
        idle: dict[str, int | None] = {}
        for other in running:
            if other is not run:
                idle[f"idle {other.target.name}"] = other.target.pid
                idle[f"idle {other.target.name} redis"] = other.redis_pid
        run.meter = CpuMeter(run.target.pid, run.redis_pid, extra=idle, children_cpu=children_cpu_seconds)


def warm_up(runner: asyncio.Runner, run: Running, seconds: float) -> None:
    """POST then GET on the aiohttp client (it checks the answers' bodies and keeps the token ids)."""
    log(f"{run.target.name}: warm-up {seconds:g}s POST + {seconds:g}s GET")
    post = runner.run(run.load.phase("POST", seconds, None, seconds))
    run.ids = list(post.ids)
    get = runner.run(run.load.phase("GET", seconds, None, seconds, run.ids))
    errors = {
        f"{op} {status}": count
        for op, outcome in (("POST", post), ("GET", get))
        for status, count in outcome.statuses.items()
    }
    run.info["warmup"] = {"tokens": len(run.ids), "POST_per_s": post.summary()["requests_per_s"]}
    if errors:
        run.info["warmup_errors"] = errors


def measure(runner: asyncio.Runner, run: Running, op: str, duration: float) -> dict[str, Any]:
    """One measured phase with the chosen generator: its summary, CPU% and server CPU ms per request."""
    ids = run.ids if op == "GET" else None
    assert run.meter is not None
    run.meter.begin()
    if run.wrk is not None:
        outcome: Any = runner.run(run.wrk.phase(op, duration, ids))
    else:
        outcome = runner.run(run.load.phase(op, duration, None, duration, ids))
    cpu = run.meter.end(outcome.elapsed)
    summary: dict[str, Any] = outcome.summary()
    summary["cpu_percent"] = cpu
    idle = [v for k, v in cpu.items() if k.startswith("idle ") and v is not None]
    summary["idle_targets_cpu_percent"] = round(sum(idle), 1) if idle else None
    summary["server_cpu_ms_per_request"] = server_cpu_ms(cpu.get("server"), summary["requests_per_s"])
    return summary


def rotated(items: list[Running], by: int) -> list[Running]:
    by %= len(items)
    return items[by:] + items[:by]


def run_rounds(
    runner: asyncio.Runner, running: list[Running], args: argparse.Namespace, problems: dict[str, list[str]]
) -> list[dict[str, Any]]:
    """``--rounds`` rounds; in round r the targets go in the order rotated by r, each POST then GET.  Stops
    early if a target's process exits, keeping the rounds done and the phases of the round cut short
    (``complete: false``)."""
    rounds: list[dict[str, Any]] = []
    started = time.monotonic()
    for index in range(args.rounds):
        order = rotated(running, index)
        record: dict[str, Any] = {
            "round": index + 1,
            "order": [r.target.name for r in order],
            "complete": False,
            "phases": [],
        }
        rounds.append(record)
        log(f"round {index + 1}/{args.rounds}: {', '.join(record['order'])}")
        for run in order:
            for op in OPS:
                exits = {r.target.name: r.target.process.poll() for r in running if r.target.process is not None}
                dead = {name: code for name, code in exits.items() if code is not None}
                for r in running:
                    if r.target.name in dead:
                        last = tail(r.target.log_path, 5) if r.target.log_path else ""
                        problems.setdefault(r.target.name, []).append(
                            f"exited (code {dead[r.target.name]}) during round {index + 1}; the rounds stopped "
                            f"there; last lines of its log:\n{last}"
                        )
                if dead:
                    return rounds
                offset = round(time.monotonic() - started, 1)
                summary = measure(runner, run, op, args.duration)
                record["phases"].append({"target": run.target.name, "op": op, "t_s": offset, **summary})
                time.sleep(SETTLE_S)
        record["complete"] = True
    return rounds


# ---------------------------------------------------------------------------------------------- analysis


def per_round(rounds: list[dict[str, Any]], name: str, op: str, key: str) -> list[float | None]:
    """The value of `key` for `name`'s `op` phase in each round (None where missing)."""
    out: list[float | None] = []
    for record in rounds:
        found = [p for p in record["phases"] if p["target"] == name and p["op"] == op]
        out.append(found[0].get(key) if found else None)
    return out


def spread(values: list[float | None]) -> dict[str, Any]:
    """Median, min and max of the values that exist, and how many there were."""
    present = [v for v in values if v is not None]
    if not present:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {
        "median": round(statistics.median(present), 3),
        "min": round(min(present), 3),
        "max": round(max(present), 3),
        "n": len(present),
    }


def round_ratios(rounds: list[dict[str, Any]], num: str, den: str, op: str, key: str) -> dict[str, Any]:
    """`num`'s `key` over `den`'s within each round (phases seconds apart), and their median, min and max."""
    values: list[float | None] = []
    for a, b in zip(per_round(rounds, num, op, key), per_round(rounds, den, op, key), strict=True):
        values.append(round(a / b, 4) if a is not None and b else None)
    return {"per_round": values, **spread(values)}


METRICS = {"throughput": "requests_per_s", "p99": "p99_ms", "server_cpu_per_request": "server_cpu_ms_per_request"}


def analyse(report: dict[str, Any]) -> None:
    rounds, names = report["rounds"], [t["name"] for t in report["targets"]]
    stats: dict[str, Any] = {}
    for name in names:
        stats[name] = {
            op: {
                key: spread(per_round(rounds, name, op, key))
                for key in ("requests_per_s", "p50_ms", "p99_ms", "server_cpu_ms_per_request")
            }
            | {
                "errors": sum(v or 0 for v in per_round(rounds, name, op, "errors")),
                "other_cpu_percent": spread(
                    [(p.get("cpu_percent") or {}).get("other") for p in phases_of(rounds, name, op)]
                ),
                "idle_targets_cpu_percent": spread(per_round(rounds, name, op, "idle_targets_cpu_percent")),
            }
            for op in OPS
        }
    report["stats"] = stats
    ratios: dict[str, Any] = {}
    if "reference" in names:
        ratios["cardvault/reference"] = {
            op: {metric: round_ratios(rounds, "cardvault", "reference", op, key) for metric, key in METRICS.items()}
            for op in OPS
        }
    for name in names:
        if name.startswith("cardvault-w"):
            ratios[f"{name}/cardvault"] = {
                op: {"throughput": round_ratios(rounds, name, "cardvault", op, "requests_per_s")} for op in OPS
            }
    report["ratios"] = ratios


def phases_of(rounds: list[dict[str, Any]], name: str, op: str) -> list[dict[str, Any]]:
    return [p for r in rounds for p in r["phases"] if p["target"] == name and p["op"] == op]


# ------------------------------------------------------------------------------------------------ output


def span(s: dict[str, Any], show: Callable[[float | None], str]) -> str:
    if s["median"] is None:
        return "-"
    return f"{show(s['median'])} ({show(s['min'])}-{show(s['max'])})"


def render(report: dict[str, Any]) -> str:
    cfg, machine = report["config"], report["machine"]
    done = sum(1 for r in report["rounds"] if r["complete"])
    lines = [
        f"cardvault tokens, interleaved: {done} of {cfg['rounds']} rounds x {cfg['duration_s']:g} s per phase "
        f"(each target POST then GET, the order rotating each round), {cfg['connections']} connections, "
        f"generator {cfg['generator']}, {cfg['warmup_s']:g} s warm-up",
        machine_line(machine),
        token_body_line(cfg),
        "",
        "median (min-max) over rounds",
    ]
    header = (
        f"{'target':<13} {'op':<4} {'req/s':>24} {'p50 ms':>7} {'p99 ms':>20} {'srv CPU ms/req':>22} "
        f"{'idle CPU%':>9} {'other CPU%':>10} {'errors':>7}"
    )
    lines += [header, "-" * len(header)]
    notes: list[str] = []
    for target in report["targets"]:
        name = target["name"]
        for op, s in report["stats"].get(name, {}).items():
            p50 = s["p50_ms"]["median"]
            other = s["other_cpu_percent"]["median"]
            idle = s["idle_targets_cpu_percent"]["median"]
            lines.append(
                f"{name:<13} {op:<4} {span(s['requests_per_s'], lambda v: f'{v:.0f}'):>24} "
                f"{'-' if p50 is None else f'{p50:.1f}':>7} {span(s['p99_ms'], lambda v: f'{v:.1f}'):>20} "
                f"{span(s['server_cpu_ms_per_request'], lambda v: f'{v:.3f}'):>22} "
                f"{'-' if idle is None else f'{idle:.1f}':>9} {'-' if other is None else f'{other:.0f}':>10} "
                f"{s['errors']:>7}"
            )
            errors: dict[str, int] = {}
            samples: dict[str, str] = {}
            for phase in phases_of(report["rounds"], name, op):
                for status, count in phase["errors_by_status"].items():
                    errors[status] = errors.get(status, 0) + count
                    samples.setdefault(status, phase["error_samples"].get(status, ""))
            for status, count in errors.items():
                sample = samples.get(status, "").replace("\n", " ")
                notes.append(f"{name} {op}: {count} x {status}" + (f": {sample}" if sample else ""))
        if target.get("warmup_errors"):
            notes.append(f"{name} warm-up errors: {target['warmup_errors']}")
        notes += [f"{name}: {p}" for p in target.get("problems", [])]
    phases = [p for r in report["rounds"] for p in r["phases"]]
    busy = [p for p in phases if ((p.get("cpu_percent") or {}).get("other") or 0) > BUSY_MACHINE]
    if busy:
        notes.insert(
            0,
            f"in {len(busy)} of {len(phases)} phases other processes used more than {BUSY_MACHINE:.0f}% of a core "
            "(the other CPU% column): the absolute figures are disturbed; the ratios, paired within each round, "
            "much less",
        )
    ratios = report.get("ratios") or {}
    if ratios:
        lines += ["", "ratios within each round: median (min-max) over the rounds"]
    ref = ratios.get("cardvault/reference")
    if ref:
        lines.append("  cardvault / reference (req/s: higher is better; p99, CPU: lower is better)")
        for op in OPS:
            r = ref[op]
            lines.append(
                f"    {op:<4} req/s x{ratio_span(r['throughput'])}   p99 x{ratio_span(r['p99'])}   "
                f"server CPU per request x{ratio_span(r['server_cpu_per_request'])}"
            )
    for key, value in ratios.items():
        if key == "cardvault/reference":
            continue
        name = key.split("/")[0]
        lines.append(f"  {name} / cardvault (one process), throughput")
        lines.append(
            f"    POST x{ratio_span(value['POST']['throughput'])}   GET x{ratio_span(value['GET']['throughput'])}"
        )
    if notes:
        lines += ["", "errors, problems and notes:"] + [f"  {n}" for n in notes]
    if report.get("kept"):
        lines += ["", f"logs and data kept in {report['kept']}"]
    return "\n".join(lines)


def ratio_span(s: dict[str, Any]) -> str:
    if s["median"] is None:
        return "-"
    return f"{fmt(s['median'])} ({fmt(s['min'])}-{fmt(s['max'])})"


# -------------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Interleaved rounds of POST /v1/tokens and GET /v1/tokens/{id} against cardvault (one worker, "
        "optionally more) and the bare reference app, all started at once; the medians of per-round ratios.",
    )
    where = parser.add_argument_group("targets (all started by this script, on 127.0.0.1, kept running together)")
    where.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=[1],
        metavar="N",
        help="cardvault `serve --workers N` targets; must include 1, the one the others are compared with [1]",
    )
    where.add_argument("--compare-reference", action="store_true", help="also start the bare reference app")
    where.add_argument("--reference", type=Path, default=None, help="path of reference_app.py")
    where.add_argument(
        "--reference-redis-unix",
        action="store_true",
        help="give the reference's Redis a unix socket like cardvault's embedded one (default: TCP on a free port)",
    )
    where.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, data) after the run")
    load = parser.add_argument_group("load")
    load.add_argument("--rounds", "-r", type=int, default=6, help="rounds; each runs every target's POST and GET [6]")
    load.add_argument("--duration", "-d", type=float, default=4.0, help="seconds per measured phase [4]")
    load.add_argument("--connections", "-c", type=int, default=64, help="concurrent connections [64]")
    load.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per target, POST then GET [2]")
    load.add_argument(
        "--generator",
        choices=("aiohttp", "wrk"),
        default="wrk",
        help="load generator of the measured phases: wrk (a C client that leaves the cores to the servers; "
        "Debian's wrk) or tokens.py's aiohttp client [wrk]",
    )
    load.add_argument("--no-cvc", action="store_true", help="tokenize without a CVC")
    load.add_argument("--metadata", type=int, default=0, help="add this many short metadata values per token [0]")
    parser.add_argument("--json", action="store_true", help="print one JSON document (every round's phases)")
    args = parser.parse_args(argv)

    if not 1 <= args.rounds <= 1000:
        parser.error("--rounds must be 1..1000")
    if args.duration <= 0 or args.duration > 3600:
        parser.error("--duration must be in (0, 3600] seconds")
    if args.generator == "wrk" and (args.duration < 1 or args.duration != int(args.duration)):
        parser.error("--generator wrk runs whole seconds: give --duration as an integer >= 1")
    if not 1 <= args.connections <= 1024:
        parser.error("--connections must be 1..1024")
    if not all(1 <= n <= 64 for n in args.workers) or len(set(args.workers)) != len(args.workers):
        parser.error("--workers takes distinct counts from 1 to 64")
    if 1 not in args.workers:
        parser.error("--workers must include 1: the one-process target every ratio is taken against")
    args.workers = sorted(args.workers)
    if not 0 < args.warmup <= 600:
        parser.error("--warmup must be in (0, 600] seconds: the GET phases read the warm-up's tokens")
    if not 0 <= args.metadata <= 20:
        parser.error("--metadata must be 0..20 (the API's limit)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    body = token_body(args.no_cvc, args.metadata)
    report: dict[str, Any] = {
        "config": {
            "rounds": args.rounds,
            "duration_s": args.duration,
            "connections": args.connections,
            "warmup_s": args.warmup,
            "generator": args.generator,
            "loop": "uvloop" if uvloop else "asyncio",
            "body_bytes": len(body),
            "no_cvc": args.no_cvc,
            "metadata_keys": args.metadata,
            "workers": args.workers,
            "compare_reference": args.compare_reference,
        },
        "machine": machine_info(),
        "targets": [],
        "rounds": [],
    }
    reference = None
    if args.compare_reference:  # fail early, before anything is started, if the yardstick is missing
        reference = (args.reference or default_reference_path()).resolve()
        if not reference.is_file():
            log(f"error: reference app not found at {reference} (give --reference PATH)")
            return 2
    previous_term = signal.signal(signal.SIGTERM, term_as_interrupt)
    targets: list[Target] = []
    running: list[Running] = []
    problems: dict[str, list[str]] = {}
    interrupted = False
    loop_factory = uvloop.new_event_loop if uvloop else None
    try:
        with workspace(args.keep) as workdir, asyncio.Runner(loop_factory=loop_factory) as runner:
            if args.keep:
                report["kept"] = str(workdir)
            try:
                start_targets(args, workdir, reference, targets)
                for target in targets:
                    running.append(prepare(runner, target, args, body))
                attach_meters(running)
                for run in running:
                    warm_up(runner, run, args.warmup)
                report["rounds"] = run_rounds(runner, running, args, problems)
            finally:
                for run in running:
                    with contextlib.suppress(Exception):
                        runner.run(run.load.close())
                    if run.wrk is not None:
                        run.wrk.close()
                stop_targets(targets, problems)
    except BenchError as exc:
        log(f"error: {exc}")
        return 2
    except KeyboardInterrupt:
        interrupted = True
    finally:
        signal.signal(signal.SIGTERM, previous_term)
    if interrupted:
        log("interrupted; every spawned process was stopped")
        return 130
    for run in running:
        run.info["problems"] = problems.get(run.target.name, [])
        report["targets"].append(run.info)
    analyse(report)
    print(json.dumps(report, indent=2) if args.json else render(report))
    errors = any(p["errors"] for r in report["rounds"] for p in r["phases"])
    warmup_errors = any(t.get("warmup_errors") for t in report["targets"])
    complete = sum(1 for r in report["rounds"] if r["complete"])
    failed = errors or warmup_errors or any(problems.values()) or complete < args.rounds
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
