"""The PROXY-protocol listener in-process: the header's client becomes request.remote, over the vault's own TLS.

The app runs under a real aiohttp runner with ``ProxyProtocolSite`` on a free
port and the service's Mozilla-intermediate server context (a trustme
certificate); clients are blocking sockets in a thread that write the header
themselves, then speak TLS on the same connection, exactly as nginx's stream
module does with ``proxy_protocol on``.  nginx itself is in ``tests/proxy/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiohttp import web
from proxyprotocol.result import ProxyResultIPv6
from proxyprotocol.v2 import ProxyProtocolV2

from service.app import create_app
from service.http.proxy_protocol import ProxyProtocolSite
from service.logs import AccessLogger
from service.tls.mozilla import server_context
from tests.conftest import FakeClock, make_settings
from tests.support.redis_server import RedisServer, free_port

CLIENT = "203.0.113.7"
V1 = f"PROXY TCP4 {CLIENT} 10.0.0.1 51234 443\r\n".encode()
REFUSED = "PROXY-protocol connection refused"
IGNORED = "forwarding headers ignored: peer is not a trusted proxy"


async def probe(request: web.Request) -> web.Response:
    return web.json_response({"remote": request.remote, "scheme": request.scheme})


@dataclass
class Listener:
    port: int
    client_context: ssl.SSLContext


@dataclass
class Reply:
    status: int
    body: dict[str, Any]


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path, Path]:
    ca = trustme.CA()
    leaf = ca.issue_cert("localhost", "127.0.0.1")
    cert, key, ca_file = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(ca_file))
    return cert, key, ca_file


@pytest.fixture
async def start_listener(
    redis_server: RedisServer,
    tmp_path: Path,
    master_keys: Any,
    clock: FakeClock,
    certificate: tuple[Path, Path, Path],
) -> AsyncIterator[Callable[..., Awaitable[Listener]]]:
    """Starts the app behind a ProxyProtocolSite; every runner it made is cleaned up after the test."""
    runners: list[web.AppRunner] = []

    async def start(trusted: str = "127.0.0.0/8", *, tls: bool = True, header_timeout: float = 5.0) -> Listener:
        settings = make_settings(redis_server.url, tmp_path / "var")
        app = create_app(settings, master_keys, redis_url=redis_server.url, clock=clock, tls=tls)
        app.router.add_get("/_probe", probe)
        runner = web.AppRunner(app, access_log_class=AccessLogger)
        await runner.setup()
        runners.append(runner)
        cert, key, ca_file = certificate
        port = free_port()
        site = ProxyProtocolSite(
            runner,
            "127.0.0.1",
            port,
            ssl_context=server_context(cert, key) if tls else None,
            trusted=[ipaddress.ip_network(trusted)],
            header_timeout=header_timeout,
        )
        await site.start()
        return Listener(port, ssl.create_default_context(cafile=str(ca_file)))

    yield start
    for runner in runners:
        await runner.cleanup()


def _request_bytes(path: str, headers: Mapping[str, str]) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: localhost", "Connection: close", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _reply(raw: bytes) -> Reply:
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if b"chunked" in head.lower():
        size, _, rest = body.partition(b"\r\n")
        body = rest[: int(size, 16)]
    return Reply(status, json.loads(body) if body.startswith(b"{") else {})


def through_proxy(
    listener: Listener, header: bytes, path: str = "/_probe", headers: Mapping[str, str] | None = None
) -> Reply:
    """Header, then TLS and one request on the same connection (separate writes, as nginx does)."""
    with socket.create_connection(("127.0.0.1", listener.port), timeout=5) as raw:
        raw.sendall(header)
        with listener.client_context.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(_request_bytes(path, headers or {}))
            chunks = []
            while chunk := tls.recv(65536):
                chunks.append(chunk)
    return _reply(b"".join(chunks))


def plain_through_proxy(port: int, header: bytes) -> Reply:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        raw.sendall(header + _request_bytes("/_probe", {}))
        chunks = []
        while chunk := raw.recv(65536):
            chunks.append(chunk)
    return _reply(b"".join(chunks))


def header_and_hello_in_one_write(listener: Listener) -> Reply:
    """The header and the TLS ClientHello in one segment: the listener must read the header and not a byte more."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = listener.client_context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with socket.create_connection(("127.0.0.1", listener.port), timeout=5) as raw:
        with contextlib.suppress(ssl.SSLWantReadError):  # the ClientHello is written, the answer awaited
            tls.do_handshake()
        raw.sendall(V1 + outgoing.read())
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                raw.sendall(outgoing.read())
                data = raw.recv(65536)
                if not data:
                    raise ConnectionError("closed during the handshake") from None
                incoming.write(data)
        tls.write(_request_bytes("/_probe", {}))
        raw.sendall(outgoing.read())
        answer = b""
        while True:
            try:
                chunk = tls.read(65536)
                if not chunk:  # the server's close_notify
                    break
                answer += chunk
            except ssl.SSLWantReadError:
                data = raw.recv(65536)
                if not data:
                    break
                incoming.write(data)
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                break
    return _reply(answer)


def closed_without_answer(port: int, data: bytes, wait: float = 5.0) -> bool:
    """Send ``data``; True when the server closes the connection without a byte of answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as raw:
        try:
            raw.sendall(data)
            return raw.recv(1) == b""
        except ConnectionResetError:
            return True


def events(caplog: pytest.LogCaptureFixture, event: str) -> list[dict[str, Any]]:
    return [r.msg for r in caplog.records if isinstance(r.msg, dict) and r.msg.get("event") == event]


class TestProxiedConnections:
    async def test_v1_header_names_the_client_over_the_vaults_tls(self, start_listener: Any) -> None:
        """``PROXY TCP4 <client> ...`` then TLS: request.remote is that client, the scheme https."""
        listener = await start_listener()
        reply = await asyncio.to_thread(through_proxy, listener, V1)
        assert reply == Reply(200, {"remote": CLIENT, "scheme": "https"})

    async def test_v2_header_with_ipv6(self, start_listener: Any) -> None:
        """The binary v2 header (HAProxy, load balancers) works the same, IPv6 included."""
        listener = await start_listener()
        header = ProxyProtocolV2().pack(
            ProxyResultIPv6((ipaddress.IPv6Address("2001:db8::7"), 443), (ipaddress.IPv6Address("2001:db8::1"), 8443))
        )
        reply = await asyncio.to_thread(through_proxy, listener, header)
        assert reply.body["remote"] == "2001:db8::7"

    async def test_header_and_client_hello_in_one_segment(self, start_listener: Any) -> None:
        """Bytes after the header belong to TLS: reading exactly the header keeps the ClientHello intact."""
        listener = await start_listener()
        for _ in range(5):
            reply = await asyncio.to_thread(header_and_hello_in_one_write, listener)
            assert reply == Reply(200, {"remote": CLIENT, "scheme": "https"})

    async def test_unknown_leaves_the_proxys_own_address(self, start_listener: Any) -> None:
        """``PROXY UNKNOWN`` (the proxy's own health check) names nobody: the peer stands."""
        listener = await start_listener()
        reply = await asyncio.to_thread(through_proxy, listener, b"PROXY UNKNOWN\r\n")
        assert reply.body["remote"] == "127.0.0.1"

    async def test_the_access_log_shows_the_client(self, start_listener: Any, caplog: pytest.LogCaptureFixture) -> None:
        """The access logger sees the header's client too."""
        caplog.set_level(logging.INFO)
        listener = await start_listener()
        await asyncio.to_thread(through_proxy, listener, V1)
        lines = [line for line in events(caplog, "request") if line.get("path") == "/_probe"]
        assert [(line["remote"], line["scheme"]) for line in lines] == [(CLIENT, "https")]

    async def test_forwarding_headers_inside_are_the_clients_own_and_ignored(
        self, start_listener: Any, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Inside passed-through TLS, X-Forwarded-For comes from the client: ignored and logged."""
        caplog.set_level(logging.INFO)
        listener = await start_listener()
        headers = {"X-Forwarded-For": "198.51.100.66", "X-Forwarded-Proto": "http"}
        reply = await asyncio.to_thread(through_proxy, listener, V1, "/_probe", headers)
        assert reply.body == {"remote": CLIENT, "scheme": "https"}
        [warning] = events(caplog, IGNORED)
        assert warning["peer"] == CLIENT

    async def test_plain_http_after_the_header(self, start_listener: Any) -> None:
        """With server.plain_http the listener speaks HTTP after the header."""
        listener = await start_listener(tls=False)
        reply = await asyncio.to_thread(plain_through_proxy, listener.port, V1)
        assert reply == Reply(200, {"remote": CLIENT, "scheme": "http"})


class TestRefusals:
    async def test_a_peer_outside_proxy_protocol_trusted_is_disconnected(
        self, start_listener: Any, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Only the stream proxy may announce clients: anyone else gets no byte and a logged refusal."""
        caplog.set_level(logging.INFO)
        listener = await start_listener(trusted="10.0.0.0/8")
        assert await asyncio.to_thread(closed_without_answer, listener.port, V1)
        [warning] = events(caplog, REFUSED)
        assert (warning["peer"], warning["reason"]) == ("127.0.0.1", "peer not in proxy_protocol_trusted")

    @pytest.mark.parametrize(
        "header",
        [
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            b"PROXY TCP4 not-an-address 10.0.0.1 1 2\r\n",
            b"PROXY TCP4 203.0.113.7 10.0.0.1 99999 443\r\n",
            b"PROXY " + b"A" * 2000,
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a bare TLS ClientHello: no header at all
        ],
    )
    async def test_a_malformed_or_missing_header_closes_the_connection(
        self, start_listener: Any, caplog: pytest.LogCaptureFixture, header: bytes
    ) -> None:
        """No guessing (the spec forbids it): without a valid header the connection is closed, and logged."""
        caplog.set_level(logging.INFO)
        listener = await start_listener()
        assert await asyncio.to_thread(closed_without_answer, listener.port, header)
        assert events(caplog, REFUSED)
        reply = await asyncio.to_thread(through_proxy, listener, V1)
        assert reply.status == 200  # and the listener keeps serving

    async def test_a_header_that_never_comes_times_out(self, start_listener: Any) -> None:
        """A peer that sends half a header and waits is cut off after the header timeout."""
        listener = await start_listener(header_timeout=0.3)
        assert await asyncio.to_thread(closed_without_answer, listener.port, b"PROXY TCP4 ", 3.0)

    async def test_a_failed_handshake_after_the_header_closes_only_that_connection(self, start_listener: Any) -> None:
        """Garbage where TLS should start: that connection ends, the next one is served."""
        listener = await start_listener()
        assert await asyncio.to_thread(closed_without_answer, listener.port, V1 + b"\x16\x03\x01\x00\x05hello")
        reply = await asyncio.to_thread(through_proxy, listener, V1)
        assert reply.status == 200
