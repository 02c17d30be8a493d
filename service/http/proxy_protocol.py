"""A second listener for TLS passed through a stream proxy that names each client with the PROXY protocol.

Why this module exists: when the firewall proxy passes TLS through untouched (nginx's stream
module), it cannot add forwarding headers to a connection it cannot read, so every request would
seem to come from the proxy: the access log, the staff audit trail and the per-address velocity
limits would all see one address.  nginx (``proxy_protocol on;``), HAProxy and most load balancers
can instead prefix the connection with a PROXY protocol header (v1 text or v2 binary) naming the
client.  aiohttp cannot read one: its listener starts TLS on the first byte.  This listener,
on ``proxy.proxy_protocol_port``, does it in order:

1. accept only peers in ``proxy.proxy_protocol_trusted`` (anyone else is disconnected at once,
   logged): the header is a claim, believed only from the proxy;
2. read exactly the header and not one byte more (``BufferedProtocol`` buffers sized to what the
   parser asks for, so the TLS ClientHello behind it stays in the socket), parsed by the
   ``proxy-protocol`` library; a malformed, oversized or late header (``HEADER_TIMEOUT_SECONDS``)
   closes the connection;
3. start TLS on that same connection with the service's own context (Mozilla intermediate),
   and hand it to the application's aiohttp request handler, whose transport reports the
   client from the header as ``peername``.  So ``request.remote`` is the client everywhere,
   the access log included, and ``service.http.proxy`` refuses forwarding headers on such a
   connection: inside end-to-end TLS they are the client's own words.

A header that names no address (``PROXY UNKNOWN``, v2 ``LOCAL``: the proxy's own health checks)
leaves the proxy's address.  The PROXY protocol spec forbids guessing whether a header is there,
so this port always requires one, and the ordinary listener never accepts one.
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
from collections.abc import Iterable, Sequence
from typing import Any, cast

import structlog
from aiohttp import web
from proxyprotocol import ProxyProtocolIncompleteError
from proxyprotocol.detect import ProxyProtocolDetect
from proxyprotocol.result import ProxyResult

from service.errors import OperatorError
from service.http.proxy import PROXIED_CLIENT, IPAddress, IPNetwork, ThrottledWarning, unmapped
from service.settings import Settings

HEADER_TIMEOUT_SECONDS = 5.0
#: v1 is at most 107 bytes; v2 carries addresses and optional TLVs.  Longer is refused.
MAX_HEADER_BYTES = 1024

log = structlog.get_logger("cardvault.proxy")
_BACKGROUND: set[asyncio.Task[None]] = set()


class ProxiedTransport(asyncio.Transport):
    """The connection's own transport, except that ``peername`` is the client the PROXY header named."""

    def __init__(self, inner: asyncio.Transport, peername: tuple[Any, ...]) -> None:
        super().__init__()
        self._inner = inner
        self._overrides: dict[str, Any] = {"peername": peername, PROXIED_CLIENT: str(peername[0])}

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name in self._overrides:
            return self._overrides[name]
        return self._inner.get_extra_info(name, default)

    def is_closing(self) -> bool:
        return self._inner.is_closing()

    def close(self) -> None:
        self._inner.close()

    def abort(self) -> None:
        self._inner.abort()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._inner.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._inner.get_protocol()

    def is_reading(self) -> bool:
        return self._inner.is_reading()

    def pause_reading(self) -> None:
        self._inner.pause_reading()

    def resume_reading(self) -> None:
        self._inner.resume_reading()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._inner.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return self._inner.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._inner.get_write_buffer_limits()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._inner.write(data)

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        self._inner.writelines(list_of_data)

    def write_eof(self) -> None:
        self._inner.write_eof()

    def can_write_eof(self) -> bool:
        return self._inner.can_write_eof()


def _peer(transport: asyncio.BaseTransport) -> IPAddress | None:
    peername = transport.get_extra_info("peername")
    if not isinstance(peername, tuple) or not peername:
        return None
    try:
        return unmapped(ipaddress.ip_address(str(peername[0])))
    except ValueError:
        return None


class _HeaderGate(asyncio.BufferedProtocol):
    """One connection until its PROXY header is read; then TLS and aiohttp take it over."""

    def __init__(self, site: ProxyProtocolSite) -> None:
        self.site = site
        self.buffer = bytearray(MAX_HEADER_BYTES)
        self.filled = 0
        self.wanted = 0
        self.transport: asyncio.Transport | None = None
        self.peer: IPAddress | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.parser = ProxyProtocolDetect()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's
        self.peer = _peer(transport)
        if not self.site.trusts(self.peer):
            self.site.refused(peer=str(self.peer) if self.peer else None, reason="peer not in proxy_protocol_trusted")
            self.transport.abort()
            return
        self.timer = asyncio.get_running_loop().call_later(self.site.header_timeout, self._fail, "header too slow")
        self._advance()

    def get_buffer(self, sizehint: int) -> memoryview:
        return memoryview(self.buffer)[self.filled : self.wanted]

    def buffer_updated(self, nbytes: int) -> None:
        self.filled += nbytes
        self._advance()

    def eof_received(self) -> bool:
        self._fail("closed before its header")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()

    def _advance(self) -> None:
        """Parse what arrived; ask for exactly the bytes the parser still needs, or hand over."""
        try:
            result = self.parser.unpack(bytes(self.buffer[: self.filled]))
        except ProxyProtocolIncompleteError as incomplete:
            want = incomplete.want_read
            self.wanted = self.filled + (want.want_bytes or 1)  # a v1 line: one byte at a time up to \n
            if self.wanted > len(self.buffer):
                self._fail("header too long")
            return
        except ValueError:  # ProxyProtocolSyntaxError, ChecksumError, a bad address or port
            self._fail("malformed header")
            return
        assert self.transport is not None
        if self.timer is not None:
            self.timer.cancel()
        self.transport.pause_reading()
        task = asyncio.get_running_loop().create_task(self._hand_over(self.transport, result))
        _BACKGROUND.add(task)
        task.add_done_callback(_BACKGROUND.discard)

    def _fail(self, reason: str) -> None:
        self.site.refused(peer=str(self.peer) if self.peer else None, reason=reason)
        if self.transport is not None:
            self.transport.abort()

    def _client(self, result: ProxyResult) -> tuple[Any, ...] | None:
        source = result.source if result.proxied else None
        if isinstance(source, tuple) and len(source) == 2:
            address = unmapped(ipaddress.ip_address(source[0]))
            return (str(address), int(source[1]))
        return None  # UNKNOWN / LOCAL / a unix socket: the proxy speaks for itself

    async def _hand_over(self, raw: asyncio.Transport, result: ProxyResult) -> None:
        client = self._client(result)
        handler = self.site.request_handler()
        transport: asyncio.Transport = raw
        context = self.site.tls_context
        try:
            if context is not None:
                started = await asyncio.get_running_loop().start_tls(raw, handler, context, server_side=True)
                if started is None:
                    raise ConnectionError("TLS did not start")
                transport = started
            else:
                raw.set_protocol(handler)
        except (TimeoutError, OSError, ssl.SSLError, ConnectionError) as exc:
            log.info("PROXY-protocol connection: TLS handshake failed", reason=type(exc).__name__)
            raw.abort()
            return
        handler.connection_made(ProxiedTransport(transport, client) if client else transport)
        if context is None:
            raw.resume_reading()


class ProxyProtocolSite(web.BaseSite):
    """An aiohttp site on ``host:port`` whose every connection starts with a PROXY header from a trusted peer."""

    __slots__ = ("_host", "_port", "_refused", "_trusted", "header_timeout")

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None,
        trusted: Sequence[IPNetwork],
        header_timeout: float = HEADER_TIMEOUT_SECONDS,
        backlog: int = 128,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context, backlog=backlog)
        self._host = host
        self._port = port
        self._trusted = tuple(trusted)
        self._refused = ThrottledWarning("PROXY-protocol connection refused")
        self.header_timeout = header_timeout

    @property
    def name(self) -> str:
        scheme = "https" if self._ssl_context is not None else "http"
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{scheme}://{host}:{self._port} (PROXY protocol)"

    @property
    def tls_context(self) -> ssl.SSLContext | None:
        return self._ssl_context

    def trusts(self, peer: IPAddress | None) -> bool:
        return peer is not None and any(peer in network for network in self._trusted)

    def refused(self, **fields: Any) -> None:
        self._refused(**fields)

    def request_handler(self) -> asyncio.Protocol:
        server = self._runner.server
        assert server is not None
        return server()

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(
                lambda: _HeaderGate(self), self._host, self._port, backlog=self._backlog, reuse_address=True
            )
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise OperatorError(
                f"cannot listen on {self._host} port {self._port}: {reason} (proxy.proxy_protocol_port)"
            ) from None


def proxy_protocol_sites(
    runner: web.BaseRunner, settings: Settings, context: ssl.SSLContext | None
) -> list[web.BaseSite]:
    """The PROXY-protocol listener ``proxy.proxy_protocol_port`` asks for (none by default)."""
    proxy = settings.proxy
    if proxy.proxy_protocol_port is None:
        return []
    trusted = [ipaddress.ip_network(cidr) for cidr in proxy.proxy_protocol_trusted]
    return [
        ProxyProtocolSite(runner, settings.server.host, proxy.proxy_protocol_port, ssl_context=context, trusted=trusted)
    ]
