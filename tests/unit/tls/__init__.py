"""Loopback TLS helpers for the ``service.tls`` tests: a threaded server and restricted Python clients.

The TLS tests prove behaviour with real handshakes over 127.0.0.1 instead of inspecting settings, so
they share a tiny server that records how each handshake ended, clients pinned to one protocol
version, cipher or group, and a reader for the server's cleartext TLS 1.2 handshake messages.
"""

from __future__ import annotations

import importlib.resources
import queue
import socket
import ssl
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final

IO_TIMEOUT: Final = 5.0
GREETING: Final = b"ok"

HANDSHAKE_RECORD: Final = 22
SERVER_KEY_EXCHANGE: Final = 12
NAMED_CURVE: Final = 3


@dataclass(frozen=True)
class ServerOutcome:
    """How one handshake ended on the server side."""

    version: str | None = None
    cipher: str | None = None
    error: Exception | None = None

    @property
    def reason(self) -> str | None:
        """OpenSSL's reason code for a failed handshake, such as ``NO_SHARED_CIPHER``."""
        return getattr(self.error, "reason", None)


@dataclass(frozen=True)
class ClientOutcome:
    """What a client saw of a handshake that succeeded and was followed by the server's greeting."""

    version: str
    cipher: str
    session: ssl.SSLSession | None
    compression: str | None


class LoopbackTlsServer:
    """Accepts TLS connections on 127.0.0.1 in a thread, greets each client and records the outcome."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self._context = context
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self._outcomes: queue.Queue[ServerOutcome] = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="loopback-tls-server", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._listener.getsockname()[:2]
        return str(host), int(port)

    def next_outcome(self) -> ServerOutcome:
        """The outcome of the oldest handshake not yet asked about."""
        return self._outcomes.get(timeout=IO_TIMEOUT)

    def __enter__(self) -> LoopbackTlsServer:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(IO_TIMEOUT)
        self._listener.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            connection.settimeout(IO_TIMEOUT)
            self._outcomes.put(self._handshake(connection))

    def _handshake(self, connection: socket.socket) -> ServerOutcome:
        try:
            with self._context.wrap_socket(connection, server_side=True) as tls:
                cipher = tls.cipher()
                tls.sendall(GREETING)
                return ServerOutcome(version=tls.version(), cipher=cipher[0] if cipher else None)
        except (ssl.SSLError, OSError) as exc:
            connection.close()
            return ServerOutcome(error=exc)


def client_context(
    version: ssl.TLSVersion,
    *,
    ciphers: str | None = None,
    group: str | None = None,
    cafile: Path | None = None,
) -> ssl.SSLContext:
    """A client pinned to one TLS ``version``, and optionally to ``ciphers`` and one key-exchange ``group``.

    Python 3.11 linked against OpenSSL 3 implements ``set_ecdh_curve`` with ``SSL_CTX_set1_groups``, so
    ``group`` restricts both the TLS 1.2 curves and the TLS 1.3 key shares the client offers. Without
    ``cafile`` the client does not verify the server: these tests are about what gets negotiated.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.0 and 1.1 clients are deprecated
        context.minimum_version = version
        context.maximum_version = version
    if version < ssl.TLSVersion.TLSv1_2:
        context.set_ciphers("DEFAULT:@SECLEVEL=0")  # OpenSSL 3 refuses TLS < 1.2 signatures above level 0
    if ciphers is not None:
        context.set_ciphers(ciphers)
    if group is not None:
        context.set_ecdh_curve(group)
    if cafile is None:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context.load_verify_locations(cafile=cafile)
    return context


def permissive_server_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """A server accepting every TLS 1.2+ cipher and group: proves a refused client could connect at all."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.set_ciphers("ALL:@SECLEVEL=0")
    with importlib.resources.as_file(importlib.resources.files("service.tls") / "ffdhe2048.pem") as dh:
        context.load_dh_params(str(dh))  # without DH parameters OpenSSL offers no DHE suite at all
    context.load_cert_chain(cert_file, key_file)
    return context


def connect(address: tuple[str, int], context: ssl.SSLContext, server_hostname: str = "localhost") -> ClientOutcome:
    """Handshake with ``context`` and read the server's greeting (where TLS 1.3 reports late alerts)."""
    with (
        socket.create_connection(address, timeout=IO_TIMEOUT) as raw,
        context.wrap_socket(raw, server_hostname=server_hostname) as tls,
    ):
        greeting = tls.recv(len(GREETING))
        if greeting != GREETING:
            raise ConnectionError(f"server closed the connection after the handshake ({greeting!r})")
        cipher = tls.cipher()
        version = tls.version()
        assert cipher is not None
        assert version is not None
        return ClientOutcome(version, cipher[0], tls.session, tls.compression())


def server_handshake_messages(address: tuple[str, int], context: ssl.SSLContext) -> dict[int, bytes]:
    """Handshake through memory BIOs, keeping the server's bytes; return its TLS 1.2 handshake messages.

    Maps handshake message type to body. Only meaningful for TLS 1.2, where the whole server flight up
    to ``ServerHelloDone`` is cleartext.
    """
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    received = bytearray()
    with socket.create_connection(address, timeout=IO_TIMEOUT) as raw:
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                raw.sendall(outgoing.read())
                data = raw.recv(65536)
                if not data:
                    raise ConnectionError("server closed the connection during the handshake") from None
                received += data
                incoming.write(data)
        raw.sendall(outgoing.read())
    return _handshake_messages(bytes(received))


def _handshake_messages(stream: bytes) -> dict[int, bytes]:
    """Reassemble the cleartext handshake records in ``stream`` and split them into messages."""
    handshake = bytearray()
    position = 0
    while position + 5 <= len(stream):
        content_type, length = stream[position], int.from_bytes(stream[position + 3 : position + 5])
        if content_type == HANDSHAKE_RECORD:
            handshake += stream[position + 5 : position + 5 + length]
        position += 5 + length
    messages: dict[int, bytes] = {}
    position = 0
    while position + 4 <= len(handshake):
        kind, length = handshake[position], int.from_bytes(handshake[position + 1 : position + 4])
        messages.setdefault(kind, bytes(handshake[position + 4 : position + 4 + length]))
        position += 4 + length
    return messages


def dhe_prime(server_key_exchange: bytes) -> int:
    """The DH prime ``p`` from a TLS 1.2 DHE ``ServerKeyExchange`` body (``dh_p`` comes first)."""
    length = int.from_bytes(server_key_exchange[:2])
    return int.from_bytes(server_key_exchange[2 : 2 + length])


def ecdhe_named_curve(server_key_exchange: bytes) -> int:
    """The IANA group id from a TLS 1.2 ECDHE ``ServerKeyExchange`` body."""
    assert server_key_exchange[0] == NAMED_CURVE
    return int.from_bytes(server_key_exchange[1:3])


def rfc7919_ffdhe2048_prime() -> int:
    """RFC 7919 A.1: p = 2^2048 - 2^1984 + (floor(2^1918 * e) + 560316) * 2^64 - 1, e from its series."""
    guard_bits = 64
    term = 1 << (1918 + guard_bits)
    total, k = 0, 0
    while term:
        total += term
        k += 1
        term //= k
    e_scaled = total >> guard_bits
    return 2**2048 - 2**1984 + (e_scaled + 560316) * 2**64 - 1
