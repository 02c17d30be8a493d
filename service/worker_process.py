"""A worker process of ``cardvault serve --workers N``, as its supervisor sees it and as it reports back.

What the supervisor (``service.supervisor``) and a worker (``service.cli.serve_worker``) share: the
spec a worker builds its settings from, the supervisor's record of a running worker, the exit status
that means "stopped on purpose over a refusal", and how an exit is described in the logs.  Kept apart
from the supervisor so that a worker does not import the supervision machinery to learn one number.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: A worker's exit status when it stopped on purpose over a refusal: do not restart it.
EXIT_REFUSED = 3


class WorkerFailed(Exception):
    """A worker exited, or reported a refusal, before it was ready."""


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker needs to build the same settings as ``serve`` did (it reads the same sources)."""

    config_file: str | None
    data_dir: str | None
    overrides: Mapping[str, Any]
    redis_url: str
    metrics_dir: str | None


@dataclass(eq=False)
class Worker:
    slot: int
    process: asyncio.subprocess.Process
    started_at: float
    ready: asyncio.Future[None]
    refusal: str | None = None
    retiring: bool = False
    #: Started to replace a crashed one: if it fails to start, the supervisor tries again (with backoff).
    #: Otherwise whoever started it (start-up, rolling restart) deals with the failure.
    replaces_crashed: bool = False
    exited: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def number(self) -> int:
        return self.slot + 1

    @property
    def pid(self) -> int:
        return self.process.pid


def describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "running"
    if returncode < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-returncode).name}"
        return f"killed by signal {-returncode}"
    return f"exit status {returncode}"
