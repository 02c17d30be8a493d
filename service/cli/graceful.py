"""Serving an aiohttp application until SIGTERM or SIGINT, then stopping without dropping requests.

aiohttp's ``web.run_app`` stops in one step: it closes the listener, at once
closes every connection that has no request in progress, waits for the
requests in progress, and cleans up.  "No request in progress" includes a
connection accepted a moment earlier whose request is still on the wire and
a keep-alive connection whose client is about to reuse it, so under load a
few clients lose a request at every restart.  This runner stops in the
order a restart without losses needs:

1. stop accepting: the listener closes (a single process then refuses new
   connections; under ``--workers`` the socket stays open in the supervisor
   and another worker accepts them);
2. settle, for up to ``SETTLE_SECONDS`` (at most half the grace): requests
   keep being served, and every answer carries ``Connection: close`` so each
   client moves to a new connection after its current request; a connection
   accepted just before the listener closed finishes its TLS handshake and
   gets its first request read and answered; a keep-alive connection at rest
   gets ``KEEPALIVE_SETTLE_SECONDS`` to send the request its client may have
   had on the way, then is closed.  This ends early once nothing is left to
   wait for, counting connections still in their TLS handshake (aiohttp does
   not see them yet);
3. aiohttp's own shutdown: idle connections close, requests still in flight
   get what is left of ``server.shutdown_timeout`` and are then cancelled
   (a charge cut there stays ``unknown``, as when a process dies);
4. the application's resources close: Redis, the processors' HTTP session,
   the metrics listener; then the log line ``stopped`` is written and flushed.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import ssl
from collections.abc import Callable

import structlog
from aiohttp import web

from service.cli.asyncrun import run
from service.http.connection_limits import DeadlineRequestHandler, connections_in_handshake
from service.http.proxy_protocol import proxy_protocol_sites
from service.logs import AccessLogger
from service.settings import Settings

log = structlog.get_logger("cardvault.serve")
SETTLE_SECONDS = 3.0
KEEPALIVE_SETTLE_SECONDS = 0.5
POLL_SECONDS = 0.05


class GracefulServer:
    def __init__(
        self,
        app: web.Application,
        settings: Settings,
        context: ssl.SSLContext | None,
        *,
        on_listening: Callable[[], None],
        sockets: list[socket.socket] | None = None,
    ) -> None:
        self.app = app
        self.settings = settings
        self.context = context
        self.on_listening = on_listening
        self.sockets = sockets
        self.grace = settings.server.shutdown_timeout
        self.settle = min(SETTLE_SECONDS, self.grace / 2)
        self.draining = False
        app.on_response_prepare.append(self._close_after_answer)

    async def _close_after_answer(self, _: web.Request, response: web.StreamResponse) -> None:
        if self.draining:
            response.force_close()
            response.headers["Connection"] = "close"

    def _sites(self, runner: web.AppRunner) -> list[web.BaseSite]:
        if self.sockets:
            return [web.SockSite(runner, sock, ssl_context=self.context) for sock in self.sockets]
        host, port = self.settings.server.host, self.settings.server.port
        main = web.TCPSite(runner, host, port, ssl_context=self.context)
        # and, with proxy.proxy_protocol_port, the listener for TLS passed through a stream proxy
        return [main, *proxy_protocol_sites(runner, self.settings, self.context)]

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        runner = web.AppRunner(
            self.app,
            access_log_class=AccessLogger,
            handle_signals=False,
            shutdown_timeout=max(self.grace - self.settle, 0.1),  # aiohttp reads 0 as "no limit"
        )
        await runner.setup()
        try:
            for site in self._sites(runner):
                await site.start()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            loop.add_signal_handler(signal.SIGHUP, self._hangup)  # its default action would kill at once
            self.on_listening()
            await stop.wait()
            await self._stop_accepting(runner)
        finally:
            await runner.cleanup()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)

    def _hangup(self) -> None:
        log.warning("SIGHUP ignored: rolling restarts are the supervisor's (cardvault serve --workers 2 or more)")

    async def _stop_accepting(self, runner: web.AppRunner) -> None:
        server = runner.server
        assert server is not None
        log.info("shutting down", connections=len(server.connections), grace_seconds=self.grace)
        for site in list(runner.sites):
            await site.stop()
        self.draining = True
        loop = asyncio.get_running_loop()
        started = loop.time()
        # aiohttp signals no "last connection closed", so look (the supervisor's shutdown waits the same way).
        while loop.time() - started < self.settle:
            resting_done = loop.time() - started >= min(KEEPALIVE_SETTLE_SECONDS, self.settle)
            if not self._still_settling(server, close_resting=resting_done):
                return
            await asyncio.sleep(POLL_SECONDS)

    @staticmethod
    def _still_settling(server: web.Server, *, close_resting: bool) -> int:
        """How many connections the settle step still waits for; closes those at rest once their time is up."""
        waiting = connections_in_handshake(server)
        for handler in list(server.connections):
            resting = isinstance(handler, DeadlineRequestHandler) and handler.idle_between_requests()
            if resting and close_resting:
                handler.force_close()
            else:
                waiting += 1
        return waiting


def run_server(
    app: web.Application,
    settings: Settings,
    context: ssl.SSLContext | None,
    *,
    on_listening: Callable[[], None],
    sockets: list[socket.socket] | None = None,
) -> None:
    """Serve ``app`` on server.host/port (or on ``sockets``) until SIGTERM or SIGINT; see the module doc."""
    run(GracefulServer(app, settings, context, on_listening=on_listening, sockets=sockets).serve())
