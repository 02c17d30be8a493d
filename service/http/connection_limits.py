"""What one client connection may cost before a handler answers: header sizes, idle time, and a deadline.

aiohttp already bounds a request line and each header (``max_line_size``,
``max_field_size``) and the number of headers (``max_headers``), and closes a
connection that sits idle (``keepalive_timeout``, armed when the connection
opens and after each answer).  Those are set here from the settings, through
``web.Application(handler_args=...)``.

What aiohttp does not have is a deadline for *receiving* a request: its
keep-alive timer is not reset by incoming bytes, so a client that trickles a
header byte every few seconds (slow-loris) or its body (slow POST) holds a
connection, a socket and a parser buffer until the keep-alive timer fires
(3630 s by default).  aiohttp 1.x had ``slow_request_timeout``; it went away,
and the protocol class is fixed inside ``web.Server``.  So :func:`install`
points ``aiohttp.web_server.RequestHandler`` at :class:`DeadlineRequestHandler`
once per process (as ``parser_errors`` wraps the parser's error answers), and
``server.request_read_timeout`` reaches it as one more handler argument:

- a new connection must deliver a complete request head within the deadline;
- once a request's first byte has arrived, its head and its body must both be
  in within the deadline of that byte;
- a connection that misses it is closed (logged, no answer: a client stuck
  mid-request would not read one), and nothing else waits for it;
- a request head larger than ``MAX_HEAD_BYTES`` in all is answered 431
  ``headers_too_large`` and the connection closed, whether it arrived at once
  or is still arriving: the refusal is queued as aiohttp queues its own parser
  errors, so ``parser_errors`` answers it (problem+json, nothing echoed).

It also keeps count of the connections accepted but not yet handed to aiohttp:
over TLS a handler exists from the accept on but joins ``Server.connections``
only when the handshake is done, so a graceful stop that looked at
``connections`` alone would close a client mid-handshake
(:func:`connections_in_handshake`).

A request that is complete is never cut off, however long its handler takes
(a charge waits for the processor); idle time between requests is the
keep-alive timeout's business.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

import structlog
from aiohttp import web_protocol, web_server
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader
from aiohttp.web_protocol import _ErrInfo

from service.settings import ServerSettings

log = structlog.get_logger("cardvault.http.limits")

#: aiohttp's own line limits (8190 bytes, as nginx's 8 KiB buffers); fewer headers than its 128.
MAX_LINE_SIZE = 8190
MAX_FIELD_SIZE = 8190
MAX_HEADERS = 64
#: The whole request head (request line and every header), as nginx's 4 x 8 KiB buffers: without it
#: a head of 64 headers of 8 KiB each (512 KiB) would be held for every slow connection.
MAX_HEAD_BYTES = 32 * 1024


def head_size(message: object) -> int:
    """Bytes of a parsed request head, near enough: its request line and each header line (0: not a request).

    Duck-typed: aiohttp's C parser makes its own ``RawRequestMessage`` class, not the Python one.
    """
    raw_headers = getattr(message, "raw_headers", None)
    if raw_headers is None:
        return 0
    line = len(getattr(message, "method", "")) + len(getattr(message, "path", "")) + 12
    return line + sum(len(name) + len(value) + 4 for name, value in raw_headers)


def handler_args(server: ServerSettings) -> dict[str, Any]:
    """Keyword arguments for every connection's protocol handler (``web.Application(handler_args=...)``)."""
    return {
        "keepalive_timeout": server.keepalive_timeout,
        "max_line_size": MAX_LINE_SIZE,
        "max_field_size": MAX_FIELD_SIZE,
        "max_headers": MAX_HEADERS,
        "request_read_timeout": server.request_read_timeout,
    }


#: Per server, the handlers built at accept whose connection is not made yet (the TLS handshake is running).
#: Weak: a handshake that fails never calls connection_made or connection_lost, the handler just goes away.
_HANDSHAKING: weakref.WeakKeyDictionary[web_server.Server, weakref.WeakSet[web_protocol.RequestHandler]] = (
    weakref.WeakKeyDictionary()
)


def connections_in_handshake(server: web_server.Server) -> int:
    """Connections ``server`` accepted that are still in their TLS handshake (not yet in ``server.connections``)."""
    pending = _HANDSHAKING.get(server)
    return len(pending) if pending is not None else 0


class DeadlineRequestHandler(web_protocol.RequestHandler):
    """aiohttp's protocol handler plus the request-receipt deadline described in the module docstring."""

    def __init__(
        self,
        manager: web_server.Server,
        *,
        request_read_timeout: float = ServerSettings.request_read_timeout,
        **kwargs: Any,
    ) -> None:
        super().__init__(manager, **kwargs)
        self._read_timeout = request_read_timeout
        self._deadline: asyncio.TimerHandle | None = None
        self._head_bytes = 0  # bytes of a request head still incomplete
        self._body: StreamReader | None = None  # the newest request's body, while it is still arriving
        self._refused = False
        _HANDSHAKING.setdefault(manager, weakref.WeakSet()).add(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._handshake_over()
        super().connection_made(transport)
        self._arm()  # the first request must arrive in time too, even if no byte of it ever does

    def idle_between_requests(self) -> bool:
        """Answered at least one request and nothing of the next has arrived: a keep-alive connection at rest."""
        return (
            self._request_count > 0
            and not self._request_in_progress
            and not self._messages
            and self._head_bytes == 0
            and not self._body_pending()
        )

    def _handshake_over(self) -> None:
        pending = _HANDSHAKING.get(self._manager) if self._manager is not None else None
        if pending is not None:
            pending.discard(self)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._handshake_over()
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        parsed_before = self._request_count
        reading_body = self._body_pending()  # before parsing: these bytes may be the body's last
        super().data_received(data)
        if self._request_count != parsed_before:  # one or more request heads are complete
            new = self._request_count - parsed_before
            for position in range(len(self._messages) - new, len(self._messages)):
                if head_size(self._messages[position][0]) > MAX_HEAD_BYTES:
                    self._refuse_head(position)
            self._head_bytes = 0
            newest = self._messages[-1][1] if self._messages else None
            self._body = newest if isinstance(newest, StreamReader) else None
            self._disarm()
        elif not reading_body:
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._refuse_head()
                return
        if self._head_bytes or self._body_pending():
            self._arm()
        else:
            self._disarm()

    def _body_pending(self) -> bool:
        return self._body is not None and not self._body.is_eof()

    def _arm(self) -> None:
        if self._deadline is None and self._read_timeout > 0:
            self._deadline = self._loop.call_later(self._read_timeout, self._missed_deadline)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _missed_deadline(self) -> None:
        self._deadline = None
        if self.transport is None:
            return
        peer = self.transport.get_extra_info("peername")
        log.warning(
            "request not received in time; connection closed",
            seconds=self._read_timeout,
            stage="body" if self._body_pending() else "headers",
            peer=str(peer[0]) if peer else "-",
        )
        self.force_close()

    def _refuse_head(self, position: int | None = None) -> None:
        """Answer 431 through aiohttp's own error path (``handle_error``: problem+json, nothing echoed, close).

        ``position``: the queued request whose head was too large; ``None``: a head still arriving.
        """
        error = HttpProcessingError(code=431, message="Request header fields too large")
        refusal = (_ErrInfo(status=431, exc=error, message=error.message), EMPTY_PAYLOAD)
        log.warning("request head too large; refused", limit=MAX_HEAD_BYTES)
        self._disarm()
        if position is not None:
            self._messages[position] = refusal
            return
        self._refused = True
        self._messages.append(refusal)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


def install() -> None:
    """Make every aiohttp server in this process build :class:`DeadlineRequestHandler` connections."""
    web_server.RequestHandler = DeadlineRequestHandler  # type: ignore[attr-defined]
