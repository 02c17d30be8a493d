"""One worker of ``cardvault serve --workers N``, started by the supervisor as ``python -m service.cli.serve_worker``.

Not a command for people.  The supervisor (``service.supervisor``) writes one
JSON order on the worker's stdin: its number, the descriptors of the
listening sockets it inherited, the Redis URL (the embedded one belongs to
the supervisor), and what ``serve`` was given (config file, data directory,
flags), from which the worker builds its settings as ``serve`` did, reading
the same files and environment.  It loads the master key and the TLS
certificate itself; no key material crosses the pipe.

Its stdout is the report channel back (one JSON line per event: ``ready``
once it listens, ``refused`` with the message when a refusal stops it);
anything else written to stdout goes to stderr with the logs.  It asks Linux
to send it SIGTERM if the supervisor dies (``PR_SET_PDEATHSIG``), so a
killed supervisor does not leave workers serving on their own.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import structlog

from service.app import create_app
from service.cli.graceful import run_server
from service.cli.options import settings_from
from service.cli.runtime import master_keys_for
from service.cli.serve import Banner, listen_url, settle_garbage_collector, tls_context
from service.domain.redaction import redact_card_numbers
from service.errors import CardvaultError
from service.http.health import WORKER_NUMBER
from service.http.state import SERVICES
from service.logs import configure_logging
from service.preflight import Findings
from service.tls import TlsConfigError
from service.worker_process import EXIT_REFUSED

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
log = structlog.get_logger("cardvault.worker")


class Reports:
    """JSON lines to the supervisor on a private copy of the original stdout."""

    def __init__(self) -> None:
        self.fd = os.dup(1)
        os.dup2(2, 1)  # stray prints land with the logs, not in the report channel

    def send(self, event: str, **fields: Any) -> None:
        with contextlib.suppress(OSError):  # the supervisor is gone: nobody to tell
            os.write(self.fd, (json.dumps({"event": event, **fields}) + "\n").encode())


def die_with_supervisor(supervisor_pid: int) -> None:
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != supervisor_pid:  # it died before prctl took effect
        sys.exit(1)


def serve_worker(order: dict[str, Any], reports: Reports) -> int:
    number = int(order["worker"])
    config_file, data_dir = order.get("config_file"), order.get("data_dir")
    settings = settings_from(
        Path(config_file) if config_file else None, Path(data_dir) if data_dir else None, **order["overrides"]
    )
    configure_logging(settings.log.level)
    structlog.contextvars.bind_contextvars(worker=number)
    keyring, _ = master_keys_for(settings)  # the supervisor has logged the warnings once
    context = tls_context(settings, Findings())
    sockets = [socket.socket(fileno=fd) for fd in order["fds"]]
    app = create_app(settings, keyring.master, redis_url=order["redis_url"], tls=context is not None)
    app[WORKER_NUMBER] = number
    app.on_startup.append(Banner(settings, listen_url(settings, tls=context is not None)).create_demo_agency)
    settle_garbage_collector(app)
    run_server(app, settings, context, sockets=sockets, on_listening=lambda: reports.send("ready"))
    fatal = app[SERVICES].fatal
    if fatal:
        reports.send("refused", message=redact_card_numbers(fatal))
        return EXIT_REFUSED
    log.info("worker stopped")
    return 0


def main() -> None:
    order = json.loads(sys.stdin.buffer.read())
    die_with_supervisor(int(order["supervisor_pid"]))
    reports = Reports()
    try:
        code = serve_worker(order, reports)
    except (CardvaultError, TlsConfigError) as exc:
        reports.send("refused", message=redact_card_numbers(str(exc)))
        code = EXIT_REFUSED
    sys.exit(code)


if __name__ == "__main__":
    main()
