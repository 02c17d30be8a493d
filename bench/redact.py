#!/usr/bin/env python3
"""Throughput of free-text redaction: the finder, the masker, the stream, and `cardvault redact` on a big file.

The test suite only checks that redaction is correct on big and pathological
inputs; how fast it is, and that `cardvault redact` keeps its memory flat on a
file far larger than its chunk, is measured here.  It prints MB/s (10^6 bytes
per second of UTF-8 input) for:

* ``find``      ``text_scan.find_sensitive`` over a realistic generated text;
* ``mask``      ``stream_redaction.mask_whole_text`` (what ``POST /v1/redact`` does in mask mode);
* ``stream``    ``StreamRedactor`` fed 1 MiB pieces (what the command does, without the disk);
* pathological inputs for ``mask``: a run of digits joined by single spaces, dashes or dots,
  one long plain digit run, 19-digit groups (one megabyte each by default);
* ``cli``       `cardvault redact --quiet --force FILE` as a process on a generated file of
  ``--file-mb`` MB (default 200), with the child's peak RSS.

Each phase shows wall-clock MB/s and MB per CPU second (this process's, or the child's for
``cli``): on a machine shared with other work the second is the fairer figure.

Card numbers in the generated text are made here at run time (the public test card and
numbers with a computed Luhn digit); the file lives in a temporary directory that is deleted.

    python bench/redact.py                    # defaults: 20 MB in memory, 200 MB file
    python bench/redact.py --text-mb 5 --file-mb 50 --json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import psutil
from common import REPO_ROOT, cardvault_command, log, machine_info, workspace

sys.path.insert(0, str(REPO_ROOT))

from service.domain.cards import luhn_check_digit
from service.domain.stream_redaction import StreamRedactor, mask_whole_text
from service.domain.text_scan import find_sensitive

PUBLIC_TEST_CARD = "4242424242424242"
PIECE_CHARS = 1024 * 1024
LINES = (
    "[{t}] customer: hi, my order {order} has not arrived, tracking {tracking}\n",
    "[{t}] agent: thanks! I see it shipped on 2025-03-{day:02d}, call 502-555-{phone:04d} if needed\n",
    "[{t}] customer: I paid with {card} exp 12/{year}, amount ${amount}.99\n",
    "[{t}] agent: please don't send card numbers here. Your case is {case}.\n",
    "[{t}] customer: also my SSN is {ssn} for the benefits form, ISBN 978-0-306-40615-7\n",
)


def generated_text(megabytes: float, seed: int) -> str:
    """Chat-like lines, a card number in every fifth line and an SSN in every fifth, about ``megabytes`` MB."""
    rng = random.Random(seed)
    target = int(megabytes * 1_000_000)
    pieces: list[str] = []
    size = 0
    while size < target:
        for template in LINES:
            line = template.format(
                t=f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}",
                order=rng.randint(10**7, 10**12),
                tracking="9400 " + " ".join(f"{rng.randint(0, 9999):04d}" for _ in range(4)),
                day=rng.randint(1, 28),
                phone=rng.randint(0, 9999),
                card=_card(rng),
                year=rng.randint(26, 35),
                amount=rng.randint(1, 999),
                case=rng.randint(10**5, 10**6),
                ssn=f"{rng.randint(1, 665):03d}-{rng.randint(1, 99):02d}-{rng.randint(1, 9999):04d}",
            )
            pieces.append(line)
            size += len(line)
    return "".join(pieces)


def _card(rng: random.Random) -> str:
    if rng.random() < 0.3:
        number = PUBLIC_TEST_CARD
    else:
        partial = "4" + "".join(rng.choice("0123456789") for _ in range(14))
        number = partial + luhn_check_digit(partial)
    style = rng.choice(["plain", "spaces", "dashes"])
    if style == "plain":
        return number
    return (" " if style == "spaces" else "-").join(number[i : i + 4] for i in range(0, 16, 4))


def timed(function: Callable[[], object], repeat: int) -> tuple[float, float]:
    """The best of ``repeat`` runs: (wall-clock seconds, CPU seconds of this process).

    On a shared machine the CPU time says more about the code than the wall clock does.
    """
    best_wall = best_cpu = float("inf")
    for _ in range(repeat):
        started, started_cpu = time.perf_counter(), time.process_time()
        function()
        best_wall = min(best_wall, time.perf_counter() - started)
        best_cpu = min(best_cpu, time.process_time() - started_cpu)
    return best_wall, best_cpu


def stream_all(text: str) -> int:
    redactor = StreamRedactor()
    written = 0
    for start in range(0, len(text), PIECE_CHARS):
        written += len(redactor.feed(text[start : start + PIECE_CHARS]).text)
    return written + len(redactor.finish().text)


def in_memory(text_mb: float, pathological_mb: float, repeat: int) -> list[dict[str, Any]]:
    text = generated_text(text_mb, seed=1)
    size = len(text.encode())
    findings = find_sensitive(text)
    log(f"generated {size / 1e6:.1f} MB, {len(findings)} findings")
    rows = [
        _row("find", size, timed(lambda: find_sensitive(text), repeat), findings=len(findings)),
        _row("mask", size, timed(lambda: mask_whole_text(text), repeat), findings=len(findings)),
        _row("stream", size, timed(lambda: stream_all(text), repeat), findings=len(findings)),
    ]
    chars = int(pathological_mb * 1_000_000)
    for name, unit in (("1 1 1 ...", "1 "), ("12-12-...", "12-"), ("9.9.9 ...", "9."), ("one run", "4")):
        hostile = unit * (chars // len(unit))
        rows.append(_row(f"mask {name}", len(hostile), timed(lambda h=hostile: mask_whole_text(h), repeat)))
    rows.append(
        _row("mask 19-digit groups", chars, timed(lambda: mask_whole_text(("9" * 19 + " ") * (chars // 20)), repeat))
    )
    return rows


def cli(file_mb: float, keep: bool) -> dict[str, Any]:
    with workspace(keep) as directory:
        path = directory / "export.mbox"
        with path.open("w", encoding="utf-8") as handle:
            remaining, part = file_mb, 0
            while remaining > 0:  # 10 MB at a time, so the generator's memory stays small
                handle.write(generated_text(min(10.0, remaining), seed=100 + part))
                remaining, part = remaining - 10.0, part + 1
        size = path.stat().st_size
        log(f"wrote {size / 1e6:.0f} MB to {path}; running cardvault redact")
        started = time.perf_counter()
        process = subprocess.Popen(
            [*cardvault_command(), "redact", "--quiet", "--force", "--json", str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        peak_rss = 0
        cpu = 0.0
        with contextlib.suppress(psutil.Error):
            watched = psutil.Process(process.pid)
            while process.poll() is None:  # the child's own peak, sampled (not the parent's pages at fork)
                peak_rss = max(peak_rss, watched.memory_info().rss)
                times = watched.cpu_times()
                cpu = times.user + times.system
                time.sleep(0.05)
        stdout, stderr = process.communicate()
        elapsed = time.perf_counter() - started
        if process.returncode != 0:
            raise SystemExit(f"cardvault redact failed: {stderr.strip()}")
        summary = json.loads(stdout)
        return _row(
            "cli", size, (elapsed, cpu), findings=summary["cards"] + summary["ssns"], peak_rss_mib=peak_rss / 2**20
        )


def _row(name: str, size: int, seconds: tuple[float, float], **extra: Any) -> dict[str, Any]:
    wall, cpu = seconds
    return {
        "phase": name,
        "mb": round(size / 1e6, 1),
        "seconds": round(wall, 3),
        "mb_per_s": round(size / 1e6 / wall, 2),
        "cpu_seconds": round(cpu, 3),
        "mb_per_cpu_s": round(size / 1e6 / cpu, 2) if cpu else None,
        **extra,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--text-mb", type=float, default=20.0, help="size of the in-memory text (MB)")
    parser.add_argument("--pathological-mb", type=float, default=1.0, help="size of each hostile input (MB)")
    parser.add_argument("--file-mb", type=float, default=200.0, help="size of the file for the CLI (MB); 0 skips it")
    parser.add_argument("--repeat", type=int, default=3, help="in-memory phases: best of this many runs")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()

    rows = in_memory(args.text_mb, args.pathological_mb, args.repeat)
    if args.file_mb > 0:
        rows.append(cli(args.file_mb, args.keep))
    if args.json:
        print(json.dumps({"machine": machine_info(), "results": rows}, indent=2))
        return
    print(f"{'phase':<24} {'MB':>7} {'wall s':>8} {'MB/s':>7} {'CPU s':>8} {'MB/CPU s':>9}  notes")
    for row in rows:
        notes = ", ".join(
            f"{k}={v:.0f}" if isinstance(v, float) else f"{k}={v}"
            for k, v in row.items()
            if k not in ("phase", "mb", "seconds", "mb_per_s", "cpu_seconds", "mb_per_cpu_s")
        )
        print(
            f"{row['phase']:<24} {row['mb']:>7.1f} {row['seconds']:>8.3f} {row['mb_per_s']:>7.2f} "
            f"{row['cpu_seconds']:>8.3f} {row['mb_per_cpu_s'] or 0:>9.2f}  {notes}"
        )


if __name__ == "__main__":
    main()
