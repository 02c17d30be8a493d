"""TLS session resumption through aiohttp, and the session cache that makes it: bounded by ``tls.session_cache_size``.

Without session tickets, a returning client resumes from the server's session cache (TLS 1.2 by session
id, TLS 1.3 by the stateful tickets the cache holds, two per handshake).  OpenSSL fills that cache up to
its size whether or not anyone comes back, so its size is memory a serving process holds under
connection churn; these tests hold it to the setting and check that resumption still works.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from service.tls import TlsConfigError
from service.tls.certs import generate_self_signed
from service.tls.mozilla import (
    DEFAULT_SESSION_CACHE_SIZE,
    _libssl,
    _ssl_ctx_pointer,
    server_context,
    set_session_cache_size,
)

from . import client_context

TLS12, TLS13 = ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3


@pytest.fixture(scope="module")
def cert_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("session-cache")
    generate_self_signed(directory / "cert.pem", directory / "key.pem")
    return directory / "cert.pem", directory / "key.pem"


def cache_size(context: ssl.SSLContext) -> int:
    """SSL_CTX_sess_get_cache_size, read back through the same ctypes route the setter takes."""
    library = _libssl()
    ctrl = library["SSL_CTX_ctrl"]
    ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
    ctrl.restype = ctypes.c_long
    return int(ctrl(_ssl_ctx_pointer(context, library), 43, 0, None))  # SSL_CTRL_GET_SESS_CACHE_SIZE


@contextlib.asynccontextmanager
async def serving(context: ssl.SSLContext) -> AsyncIterator[int]:
    """An aiohttp server (what `cardvault serve` runs) with ``context``; yields its port."""
    app = web.Application()

    async def greet(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app.router.add_get("/", greet)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


def fetch(port: int, client: ssl.SSLContext, session: ssl.SSLSession | None) -> tuple[bool, ssl.SSLSession | None]:
    """One request on a new connection (offering ``session``): whether it was resumed, and the session to offer next."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        client.wrap_socket(raw, session=session) as tls,
    ):
        tls.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        reply = b""
        while chunk := tls.recv(4096):
            reply += chunk
        assert reply.startswith(b"HTTP/1.1 200"), reply[:40]
        return tls.session_reused, tls.session


async def handshakes(port: int, version: ssl.TLSVersion, count: int, *, resume: bool) -> list[bool]:
    client = client_context(version)
    session: ssl.SSLSession | None = None
    reused = []
    for _ in range(count):
        was_reused, latest = await asyncio.to_thread(fetch, port, client, session if resume else None)
        reused.append(was_reused)
        session = latest
    return reused


@pytest.mark.parametrize("version", [TLS12, TLS13], ids=["tls1.2", "tls1.3"])
async def test_a_returning_client_resumes_its_session(cert_pair: tuple[Path, Path], version: ssl.TLSVersion) -> None:
    context = server_context(*cert_pair)
    async with serving(context) as port:
        assert await handshakes(port, version, 3, resume=True) == [False, True, True]
    assert context.session_stats()["hits"] == 2


@pytest.mark.parametrize("version", [TLS12, TLS13], ids=["tls1.2", "tls1.3"])
async def test_the_cache_never_holds_more_than_its_size(cert_pair: tuple[Path, Path], version: ssl.TLSVersion) -> None:
    """Thirty new clients against a cache of eight: it stays at eight, and a recent client still resumes."""
    context = server_context(*cert_pair, session_cache_size=8)
    async with serving(context) as port:
        assert await handshakes(port, version, 30, resume=False) == [False] * 30
        stats = context.session_stats()
        assert 0 < stats["number"] <= 8, stats
        assert stats["cache_full"] > 0, stats
        assert await handshakes(port, version, 2, resume=True) == [False, True]


async def test_size_zero_keeps_no_session_and_resumes_none(cert_pair: tuple[Path, Path]) -> None:
    context = server_context(*cert_pair, session_cache_size=0)
    async with serving(context) as port:
        assert await handshakes(port, TLS13, 3, resume=True) == [False, False, False]
        assert await handshakes(port, TLS12, 3, resume=True) == [False, False, False]
    assert context.session_stats()["number"] == 0


def test_the_default_is_openssls_own_and_a_negative_size_is_refused(cert_pair: tuple[Path, Path]) -> None:
    assert cache_size(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)) == DEFAULT_SESSION_CACHE_SIZE
    assert cache_size(server_context(*cert_pair)) == DEFAULT_SESSION_CACHE_SIZE
    assert cache_size(server_context(*cert_pair, session_cache_size=100)) == 100
    with pytest.raises(TlsConfigError, match="session_cache_size"):
        set_session_cache_size(server_context(*cert_pair), -1)
