#!/usr/bin/env python3
"""The tests' fake Authorize.Net gateway in a process of its own, for bench/charges.py.

    python bench/fake_processor.py --ca-file /tmp/dir/fake-ca.pem [--duplicate-window 0] [--delay 0]

Runs ``tests.support.fake_authorize_net.FakeAuthorizeNet`` (real HTTPS on 127.0.0.1, a random port,
a ``trustme`` CA written to ``--ca-file``) on its own event loop (uvloop when installed), so the
processor's CPU is neither the server's nor the load generator's.  When it listens it prints one
JSON line on stdout: ``{"endpoint", "login_id", "transaction_key", "pid", "duplicate_window",
"delay"}`` (the fake's own test credentials, nothing real).  It then reads commands from stdin, one
per line, and answers each with one JSON line:

* ``stats``: ``{"total_requests", "counts" (by transaction type), "transactions",
  "last_auth_capture"}``, the last ``authCaptureTransaction`` as received, card number, card code
  and transaction key masked by the fake;
* ``quit``: stop.

It also stops on SIGTERM or SIGINT, at the end of stdin (the benchmark went away), and after
``--max-seconds`` whatever happens.  It needs the test extra (``trustme``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from tests.support.fake_authorize_net import FakeAuthorizeNet  # noqa: E402  (needs the repo root on sys.path)

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is a dependency on Linux, optional elsewhere
    uvloop = None


def reply(document: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(document) + "\n")
    sys.stdout.flush()


def stats(fake: FakeAuthorizeNet) -> dict[str, Any]:
    last = next((r for r in reversed(fake.requests) if r.transaction_type == "authCaptureTransaction"), None)
    return {
        "total_requests": fake.total_requests,
        "counts": dict(fake.counts),
        "transactions": len(fake.transactions),
        "last_auth_capture": None if last is None else {"content_type": last.content_type, "body": last.body},
    }


async def serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    async def commands(fake: FakeAuthorizeNet) -> None:
        while True:
            line = await reader.readline()
            command = line.decode("utf-8", "replace").strip()
            if not line or command == "quit":
                break
            if command == "stats":
                reply(stats(fake))
            elif command:
                reply({"error": f"unknown command {command!r}"})
        stop.set()

    async with FakeAuthorizeNet() as fake:
        fake.duplicate_window = args.duplicate_window
        fake.delay = args.delay
        fake.write_ca_pem(args.ca_file)
        reply(
            {
                "endpoint": fake.endpoint,
                "login_id": fake.login_id,
                "transaction_key": fake.transaction_key,
                "pid": os.getpid(),
                "duplicate_window": fake.duplicate_window,
                "delay": fake.delay,
            }
        )
        listener = asyncio.create_task(commands(fake))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), args.max_seconds)
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listener


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the fake Authorize.Net gateway for bench/charges.py.")
    parser.add_argument("--ca-file", type=Path, required=True, help="where to write the fake's CA certificate (PEM)")
    parser.add_argument(
        "--duplicate-window",
        type=float,
        default=0.0,
        help="seconds in which an identical authorization is refused as a duplicate (reason 11) [0: off]",
    )
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each answer [0]")
    parser.add_argument("--max-seconds", type=float, default=3600.0, help="stop after this long regardless [3600]")
    args = parser.parse_args(argv)
    if args.duplicate_window < 0 or not 0 <= args.delay <= 60 or args.max_seconds <= 0:
        parser.error("--duplicate-window >= 0, --delay 0..60, --max-seconds > 0")
    if uvloop is not None:
        uvloop.run(serve(args))
    else:
        asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
