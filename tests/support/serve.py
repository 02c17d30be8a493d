"""Real `cardvault` processes for the CLI tests: `cardvault serve` and one-shot commands.

``ServeProcess`` starts ``cardvault serve`` (or ``python -m service serve``) as a
subprocess with a clean environment (no inherited ``CARDVAULT_*`` variable), on
a free port, with stdout and stderr in files that the session's leak guard
scans.  It waits for ``/healthz`` over HTTPS, parses what serve printed (URL,
demo keys), and on ``stop()`` sends SIGTERM, waits, and checks that the
embedded redis-server went with it.  ``ServeFactory`` owns every process a
test starts and kills whatever a failing test left running.

``run_cli`` runs one ``cardvault ...`` command the same way; ``https`` speaks
HTTP/1.1 over a verified TLS connection with ``http.client``.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import pty
import re
import signal
import ssl
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import redis

from service.adapters.embedded_redis import EmbeddedRedis
from tests.support import leaks
from tests.support.cards import CVC, VISA
from tests.support.redis_server import free_port

START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
CLI_TIMEOUT = 60.0
IO_TIMEOUT = 10.0
CARD_BODY: dict[str, Any] = {"card": {"number": VISA, "exp_month": 12, "exp_year": 2031, "cvc": CVC}}


class LeakSink(Protocol):
    """The part of conftest's ``LeakSources`` these helpers use."""

    log_files: list[Path]


# --- processes --------------------------------------------------------------------------------------


def cardvault_argv(*, module: bool = False) -> list[str]:
    """The command that runs the CLI: the installed console script, or ``python -m service``."""
    if module:
        return [sys.executable, "-m", "service"]
    script = Path(sys.executable).with_name("cardvault")
    if not script.exists():  # pragma: no cover - depends on how the package was installed
        raise RuntimeError(f"the cardvault console script is not installed next to {sys.executable}")
    return [str(script)]


def clean_env(extra: Mapping[str, str | Path] | None = None) -> dict[str, str]:
    """This process's environment without any CARDVAULT_* variable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARDVAULT_")}
    env.update({k: str(v) for k, v in (extra or {}).items()})
    return env


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a running (not zombie) process."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - someone else's process
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_until(predicate: Any, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def redis_config(client: redis.Redis, name: str) -> str:
    """One CONFIG GET value as text, whatever the client's reply decoding."""
    reply: dict[Any, Any] = dict(client.config_get(name))
    value = reply.get(name, reply.get(name.encode()))
    return value.decode() if isinstance(value, bytes) else str(value)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("Error:")]


def non_json_lines(stderr: str) -> list[str]:
    return leaks.non_json_lines(stderr)


def json_lines(text: str) -> list[dict[str, Any]]:
    lines = []
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            parsed = json.loads(line)
            if isinstance(parsed, dict):
                lines.append(parsed)
    return lines


@dataclass
class CliResult:
    args: Sequence[str]
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)

    @property
    def errors(self) -> list[str]:
        return error_lines(self.stderr)

    def describe(self) -> str:
        return f"cardvault {' '.join(self.args)} -> {self.returncode}\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}"

    def assert_ok(self) -> CliResult:
        assert self.returncode == 0, self.describe()
        return self

    def assert_one_error(self, *must_contain: str) -> str:
        """Exit code not 0, exactly one ``Error: ...`` line naming each of ``must_contain``, no traceback."""
        assert self.returncode != 0, self.describe()
        assert "Traceback" not in self.stderr, self.describe()
        assert len(self.errors) == 1, self.describe()
        line = self.errors[0]
        for needle in must_contain:
            assert needle in line, f"{needle!r} not in {line!r}"
        return line


def run_cli(
    *args: str | Path,
    env: Mapping[str, str | Path] | None = None,
    cwd: Path | None = None,
    input: str | None = None,
    timeout: float = CLI_TIMEOUT,
    module: bool = False,
) -> CliResult:
    """Run ``cardvault ARGS`` to completion with a clean environment."""
    argv = [str(a) for a in args]
    done = subprocess.run(
        [*cardvault_argv(module=module), *argv],
        env=clean_env(env),
        cwd=cwd,
        input=input if input is not None else "",
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return CliResult(argv, done.returncode, done.stdout, done.stderr)


def run_cli_with_tty_stderr(
    *args: str | Path, env: Mapping[str, str | Path] | None = None, cwd: Path, timeout: float = CLI_TIMEOUT
) -> CliResult:
    """Like ``run_cli`` but stderr is a pseudo-terminal, as for an operator at a shell (progress bars)."""
    argv = [str(a) for a in args]
    primary, secondary = pty.openpty()
    stdout_path = cwd / f"tty-stdout-{time.monotonic_ns()}.txt"
    with stdout_path.open("wb") as stdout:
        process = subprocess.Popen(
            [*cardvault_argv(), *argv],
            env=clean_env(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=secondary,
        )
    os.close(secondary)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                data = os.read(primary, 65536)
            except OSError:  # EIO: the child closed its end
                break
            if not data:
                break
            chunks.append(data)
        process.wait(max(0.1, deadline - time.monotonic()))
    finally:
        os.close(primary)
        if process.poll() is None:
            process.kill()
            process.wait()
    stderr = b"".join(chunks).decode("utf-8", "replace")
    return CliResult(argv, process.returncode, stdout_path.read_text(), stderr)


# --- HTTPS -----------------------------------------------------------------------------------------


@dataclass
class Response:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def https(
    host: str,
    port: int,
    context: ssl.SSLContext,
    method: str,
    path: str,
    *,
    key: str | None = None,
    body: Any = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """One HTTPS request with its own connection; the context decides what is verified."""
    connection = http.client.HTTPSConnection(host, port, context=context, timeout=IO_TIMEOUT)
    sent = dict(headers or {})
    data = None
    if key is not None:
        sent["Authorization"] = f"Bearer {key}"
    if body is not None:
        data = json.dumps(body).encode()
        sent["Content-Type"] = "application/json"
    try:
        connection.request(method, path, body=data, headers=sent)
        answer = connection.getresponse()
        return Response(answer.status, answer.headers, answer.read())
    finally:
        connection.close()


def unverified_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def tls_client(
    version: ssl.TLSVersion, *, ciphers: str | None = None, group: str | None = None, cafile: Path | None = None
) -> ssl.SSLContext:
    """A client pinned to one TLS version, optionally to some ciphers and one key-exchange group."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.0/1.1 clients are deprecated
        context.minimum_version = version
        context.maximum_version = version
    if version < ssl.TLSVersion.TLSv1_2:
        context.set_ciphers("DEFAULT:@SECLEVEL=0")  # let OpenSSL 3 offer TLS 1.1 at all
    if ciphers is not None:
        context.set_ciphers(ciphers)
    if group is not None:
        context.set_ecdh_curve(group)  # OpenSSL 3: restricts TLS 1.2 curves and TLS 1.3 key shares
    if cafile is None:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context.load_verify_locations(cafile=cafile)
    return context


@dataclass(frozen=True)
class Handshake:
    version: str
    cipher: str
    peer_der: bytes


def handshake(host: str, port: int, context: ssl.SSLContext, server_hostname: str = "localhost") -> Handshake:
    """Complete a TLS handshake and one HTTP request (where TLS 1.3 reports late alerts)."""
    import socket

    with (
        socket.create_connection((host, port), timeout=IO_TIMEOUT) as raw,
        context.wrap_socket(raw, server_hostname=server_hostname) as tls,
    ):
        tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        first = tls.recv(12)
        if not first.startswith(b"HTTP/1.1"):
            raise ConnectionError(f"no HTTP answer after the handshake: {first!r}")
        version, cipher, der = tls.version(), tls.cipher(), tls.getpeercert(binary_form=True)
        assert version is not None
        assert cipher is not None
        assert der is not None
        return Handshake(version, cipher[0], der)


# --- cardvault serve --------------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoKeys:
    publishable: str
    secret: str


class ServeFailed(AssertionError):
    """`cardvault serve` exited or never answered /healthz; the message carries its output."""


_URL = re.compile(r"listening on (https?://\S+)")
_PUBLISHABLE = re.compile(r"publishable key:\s+(pk_\S+)")
_SECRET = re.compile(r"secret key:\s+(sk_\S+)")


class ServeProcess:
    """One `cardvault serve` subprocess.

    ``data_dir`` is where the vault keeps its files (passed as ``--data-dir``
    unless ``data_dir_flag`` is false, when the test sets it another way);
    ``port`` likewise (a free port when not given).  ``ca_file`` is what
    clients trust: by default the generated development certificate.
    """

    def __init__(
        self,
        workdir: Path,
        *args: str | Path,
        data_dir: Path | None = None,
        data_dir_flag: bool = True,
        port: int | None = None,
        port_flag: bool = True,
        host: str = "127.0.0.1",
        env: Mapping[str, str | Path] | None = None,
        module: bool = False,
        ca_file: Path | None = None,
        leak_sources: LeakSink | None = None,
        health_context: ssl.SSLContext | None = None,
    ) -> None:
        self.workdir = workdir
        self.args = [str(a) for a in args]
        self.data_dir = (data_dir if data_dir is not None else workdir / "var").resolve()
        self.data_dir_flag = data_dir_flag
        self.fixed_port = port
        self.port_flag = port_flag
        self.port = port or 0
        self.host = host
        self.env = dict(env or {})
        self.module = module
        self.ca_file = ca_file
        self.leak_sources = leak_sources
        self.health_context = health_context  # e.g. with a client certificate, when the listener demands one
        self.process: subprocess.Popen[bytes] | None = None
        self.stdout_path = workdir / "serve.stdout"
        self.stderr_path = workdir / "serve.stderr.jsonl"
        self.returncode: int | None = None
        self.redis_pid: int | None = None
        self.keys: DemoKeys | None = None
        self.printed_url: str | None = None
        self._runs = 0

    # -- paths ------------------------------------------------------------------------------------------
    @property
    def embedded(self) -> EmbeddedRedis:
        return EmbeddedRedis(self.data_dir)

    @property
    def cert_file(self) -> Path:
        return self.data_dir / "tls" / "dev-cert.pem"

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}"

    # -- output -----------------------------------------------------------------------------------------
    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(encoding="utf-8") if self.stdout_path.exists() else ""

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8") if self.stderr_path.exists() else ""

    def log_records(self) -> list[dict[str, Any]]:
        return json_lines(self.stderr)

    def describe(self) -> str:
        code = self.process.poll() if self.process else None
        return f"cardvault serve (exit {code}) on port {self.port}\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}"

    # -- lifecycle --------------------------------------------------------------------------------------
    def argv(self) -> list[str]:
        argv = [*cardvault_argv(module=self.module), "serve"]
        if self.data_dir_flag:
            argv += ["--data-dir", str(self.data_dir)]
        if self.port_flag:
            argv += ["--port", str(self.port)]
        return argv + self.args

    def spawn(self) -> subprocess.Popen[bytes]:
        """Start the process without waiting for anything (tests of refusals use ``wait_exit``)."""
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError("this ServeProcess is already running")
        self._runs += 1
        if self._runs > 1:
            self.stdout_path = self.workdir / f"serve-{self._runs}.stdout"
            self.stderr_path = self.workdir / f"serve-{self._runs}.stderr.jsonl"
        if self.fixed_port is None:
            self.port = free_port()
        if self.leak_sources is not None:
            self.leak_sources.log_files += [self.stdout_path, self.stderr_path]
        self.keys = None
        self.printed_url = None
        self.redis_pid = None
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.process = subprocess.Popen(
                self.argv(), env=clean_env(self.env), cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=out, stderr=err
            )
        return self.process

    def wait_exit(self, timeout: float = START_TIMEOUT) -> int:
        """For a start that must fail: wait for the process to exit and return its code."""
        assert self.process is not None
        try:
            self.returncode = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise ServeFailed(f"expected serve to exit, it kept running\n{self.describe()}") from None
        return self.returncode

    def start(self, timeout: float = START_TIMEOUT) -> ServeProcess:
        """Spawn and wait for /healthz; a port taken meanwhile is retried once with another free port."""
        for attempt in range(3):
            self.spawn()
            try:
                self._wait_healthy(timeout)
                break
            except ServeFailed:
                if self.fixed_port is None and attempt < 2 and "address already in use" in self.stderr.lower():
                    continue
                raise
        # under --workers the first worker answers /healthz before the supervisor prints the banner
        wait_until(lambda: _URL.search(self.stdout) or self.process.poll() is not None, timeout)  # type: ignore[union-attr]
        self._parse_banner()
        self._find_embedded_redis()
        return self

    def _wait_healthy(self, timeout: float) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        context = self.health_context or unverified_context()
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServeFailed(f"cardvault serve exited during start\n{self.describe()}")
            try:
                if https(self.host, self.port, context, "GET", "/healthz").status == 200:
                    return
            except (OSError, http.client.HTTPException):
                time.sleep(0.05)
        self.kill()
        raise ServeFailed(f"cardvault serve did not answer /healthz within {timeout:.0f}s\n{self.describe()}")

    def _parse_banner(self) -> None:
        text = self.stdout
        url = _URL.search(text)
        self.printed_url = url.group(1) if url else None
        publishable, secret = _PUBLISHABLE.search(text), _SECRET.search(text)
        if publishable and secret:
            self.keys = DemoKeys(publishable.group(1), secret.group(1))

    def _find_embedded_redis(self) -> None:
        """Remember the embedded redis-server's pid when this serve runs one."""
        embedded = self.embedded
        if not embedded.socket_path.exists():
            return
        client = self.redis()
        try:
            self.redis_pid = int(client.info("server")["process_id"])
        except redis.RedisError:
            self.redis_pid = None
        finally:
            client.close()

    def redis(self) -> redis.Redis:
        """A client on the embedded Redis's unix socket."""
        return redis.Redis(unix_socket_path=str(self.embedded.socket_path), socket_timeout=IO_TIMEOUT)

    def stop(self, *, check_redis: bool = True) -> int:
        """SIGTERM, wait, and check the embedded redis-server (if any) is gone with its socket."""
        assert self.process is not None, "not started"
        if self.redis_pid is not None:
            self._scan_embedded_redis()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.returncode = self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            raise ServeFailed(f"cardvault serve ignored SIGTERM for {STOP_TIMEOUT:.0f}s\n{self.describe()}") from None
        self._register_redis_files()
        if check_redis and self.redis_pid is not None:
            pid = self.redis_pid
            assert not pid_alive(pid), f"embedded redis-server {pid} outlived cardvault serve"
            assert not self.embedded.socket_path.exists(), "the embedded Redis socket is still there"
        return self.returncode

    def kill(self) -> None:
        """SIGKILL serve and its embedded Redis: cleanup after a failed test, never a test step."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if self.redis_pid is not None and pid_alive(self.redis_pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.redis_pid, signal.SIGKILL)
        self._register_redis_files()

    def _scan_embedded_redis(self) -> None:
        client = self.redis()
        try:
            findings = leaks.redis_findings(client)
        except redis.RedisError:
            findings = []
        finally:
            client.close()
        assert not findings, findings

    def _register_redis_files(self) -> None:
        if self.leak_sources is None:
            return
        directory = self.embedded.directory
        if directory.is_dir():
            for path in directory.iterdir():
                if (".aof" in path.name or path.name == "redis.log") and path not in self.leak_sources.log_files:
                    self.leak_sources.log_files.append(path)

    # -- clients ----------------------------------------------------------------------------------------
    def ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts only the certificate authority this serve should present."""
        return ssl.create_default_context(cafile=str(self.ca_file or self.cert_file))

    def request(
        self,
        method: str,
        path: str,
        *,
        key: str | None = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        context: ssl.SSLContext | None = None,
    ) -> Response:
        return https(
            self.host, self.port, context or self.ssl_context(), method, path, key=key, body=body, headers=headers
        )

    def create_token(self, key: str, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        answer = self.request("POST", "/v1/tokens", key=key, body=dict(body or CARD_BODY))
        assert answer.status == 201, (answer.status, answer.body)
        token: dict[str, Any] = answer.json()
        return token

    def token_status(self, key: str, token_id: str) -> int:
        return self.request("GET", f"/v1/tokens/{token_id}", key=key).status


class ServeFactory:
    """Makes ServeProcess objects for one test and kills whatever is still running at the end."""

    def __init__(self, workdir: Path, leak_sources: LeakSink | None) -> None:
        self.workdir = workdir
        self.leak_sources = leak_sources
        self.started: list[ServeProcess] = []

    def __call__(self, *args: str | Path, name: str = "serve", **kwargs: Any) -> ServeProcess:
        """A ServeProcess whose files live under workdir/name (not started yet)."""
        workdir = self.workdir / name
        workdir.mkdir(parents=True, exist_ok=True)
        kwargs.setdefault("data_dir", self.workdir / "var")
        process = ServeProcess(workdir, *args, leak_sources=self.leak_sources, **kwargs)
        self.started.append(process)
        return process

    def __enter__(self) -> ServeFactory:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        for process in self.started:
            process.kill()


@contextlib.contextmanager
def running(process: ServeProcess) -> Iterator[ServeProcess]:
    """Start, yield, and stop with the checks of ``stop()``."""
    process.start()
    try:
        yield process
    except BaseException:
        process.kill()
        raise
    process.stop()
