"""A real nginx (Debian's package) for the tests, run in the foreground from a temporary directory.

Why: the firewall-proxy tests must prove what the service sees behind the proxy agencies
actually run, not behind a stand-in of ours.  ``Nginx`` writes its own ``nginx.conf`` into a
directory of its own (pid file, error and access logs, temp paths all inside it; ``daemon off``
and ``master_process off`` so one process is all there is to stop), starts ``nginx -p DIR -c
DIR/nginx.conf -e DIR/error.log`` as a subprocess, waits until every port it listens on accepts
connections, and kills it at ``stop()``.  The stream module (``libnginx-mod-stream``, for TLS
passthrough) is loaded from Debian's module directory when the configuration has a
``stream`` block.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
STREAM_MODULE_DIRS = (Path("/usr/lib/nginx/modules"), Path("/usr/share/nginx/modules"))


class NginxFailed(AssertionError):
    """nginx exited or did not listen in time; the message carries its error log."""


def nginx_binary() -> str | None:
    """Debian's nginx (in /usr/sbin, which a non-login PATH may lack), or None."""
    return shutil.which("nginx") or next(
        (str(p) for p in (Path("/usr/sbin/nginx"),) if p.is_file() and os.access(p, os.X_OK)), None
    )


def stream_module() -> Path | None:
    """``ngx_stream_module.so`` from libnginx-mod-stream, or None."""
    return next(
        (d / "ngx_stream_module.so" for d in STREAM_MODULE_DIRS if (d / "ngx_stream_module.so").is_file()), None
    )


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class Nginx:
    """One nginx process serving ``http_block`` and/or ``stream_block`` (their bodies, without the braces)."""

    def __init__(
        self, directory: Path, *, http_block: str = "", stream_block: str = "", listens: Sequence[tuple[str, int]]
    ) -> None:
        binary = nginx_binary()
        if binary is None:
            raise NginxFailed("nginx is not installed (Debian package nginx; scripts/test installs it)")
        self.binary = binary
        self.directory = directory
        self.listens = list(listens)
        self.http_block = http_block
        self.stream_block = stream_block
        self.process: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def error_log(self) -> Path:
        return self.directory / "error.log"

    @property
    def access_log(self) -> Path:
        return self.directory / "access.log"

    def config_text(self) -> str:
        d = self.directory
        lines = []
        if self.stream_block:
            module = stream_module()
            if module is None:
                raise NginxFailed("the nginx stream module is not installed (Debian package libnginx-mod-stream)")
            lines.append(f"load_module {module};")
        lines += [
            "daemon off;",
            "master_process off;",
            "worker_processes 1;",
            f"pid {d}/nginx.pid;",
            f"error_log {self.error_log} info;",
            "events { worker_connections 64; }",
        ]
        if self.http_block:
            temp = " ".join(
                f"{name}_temp_path {d}/tmp-{name};" for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
            )
            lines.append(f"http {{ access_log {self.access_log}; {temp}\n{self.http_block}\n}}")
        if self.stream_block:
            lines.append(f"stream {{\n{self.stream_block}\n}}")
        return "\n".join(lines) + "\n"

    def start(self) -> Nginx:
        config = self.directory / "nginx.conf"
        config.write_text(self.config_text(), encoding="utf-8")
        argv = [self.binary, "-p", f"{self.directory}/", "-c", str(config), "-e", str(self.error_log)]
        checked = subprocess.run([*argv, "-t"], capture_output=True, text=True, timeout=START_TIMEOUT, check=False)
        if checked.returncode != 0:
            raise NginxFailed(f"nginx -t refused the configuration:\n{checked.stderr}\n{config.read_text()}")
        with (self.directory / "stderr.txt").open("wb") as stderr:
            self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr)
        deadline = time.monotonic() + START_TIMEOUT
        while not all(port_open(host, port) for host, port in self.listens):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise NginxFailed(f"nginx did not start listening on {self.listens}:\n{self.errors()}")
            time.sleep(0.05)
        return self

    def errors(self) -> str:
        return self.error_log.read_text(encoding="utf-8", errors="replace") if self.error_log.exists() else ""

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> Nginx:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()
