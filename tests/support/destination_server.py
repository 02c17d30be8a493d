"""A real HTTPS forward destination on 127.0.0.1 that records what the vault sent it.

``DestinationServer`` listens on a random port with a ``trustme`` certificate
for ``names`` (``localhost`` and ``127.0.0.1`` unless told otherwise); ``ca_pem`` is its CA, for the app's
``forward.ca_file``.  Every request under any path is recorded as a
``Received``: method, path, headers and a copy of the body with card-like
digit runs masked to their last four.  The raw body is kept in memory only,
on ``Received.raw``, for the test to assert on; ``Received`` prints without it
and nothing here logs.

What it answers is ``mode``:

* ``echo`` (default): 200 JSON ``{"ok": true, "echo": <the raw body as text>}``
  with ``X-Request-Id`` and a header that must not be passed back;
* ``redirect``: 302 to ``redirect_to``;
* ``slow``: waits ``slow_seconds`` (or until the server stops), then answers;
* ``huge``: 200 with ``huge_bytes`` of text (its Content-Length says so up front);
* ``huge_chunked``: as many bytes, chunked, so only counting while reading can catch it;
* ``card``: 200 text holding a test card number, grouped and plain;
* ``status``: ``status`` with a small JSON body;
* ``gzip``: a gzip-compressed JSON body, although the vault asked for ``identity``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import re
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

import trustme
from aiohttp import web

from tests.support.cards import MASTERCARD, VISA

_CARD_LIKE = re.compile(r"(?<![0-9])[0-9]{12,19}(?![0-9])")


def mask_card_like(text: str) -> str:
    """Every 12-19 digit run cut to its last four (``XXXX4242``)."""
    return _CARD_LIKE.sub(lambda m: "XXXX" + m.group()[-4:], text)


@dataclass(frozen=True, repr=False)
class Received:
    """One request as the destination got it; ``raw`` is the unmasked body (memory only)."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    masked_body: str
    raw: bytes = field(repr=False)

    def __repr__(self) -> str:
        return f"<Received {self.method} {self.path} {len(self.raw)} bytes: {self.masked_body[:200]!r}>"

    @property
    def text(self) -> str:
        return self.raw.decode("utf-8")


class DestinationServer:
    """``async with DestinationServer(tmp_path) as server:`` starts it and stops it."""

    def __init__(self, directory: Path, names: tuple[str, ...] = ("localhost", "127.0.0.1")) -> None:
        self.directory = directory
        self.names = names
        self.mode = "echo"
        self.redirect_to = "https://elsewhere.example/collect"
        self.slow_seconds = 30.0
        self.huge_bytes = 2 * 1024 * 1024
        self.status = 200
        self.received: list[Received] = []
        self._ca = trustme.CA()
        self._runner: web.AppRunner | None = None
        self._stopping = asyncio.Event()
        self.port = 0

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.stop()

    @property
    def ca_pem(self) -> Path:
        path = self.directory / "destination-ca.pem"
        if not path.exists():
            self._ca.cert_pem.write_to_path(str(path))
        return path

    def url(self, path: str = "/pay", host: str = "localhost") -> str:
        return f"https://{host}:{self.port}{path}"

    async def start(self) -> Self:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._ca.issue_cert(*self.names).configure_cert(context)
        app = web.Application(client_max_size=1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def calls(self) -> int:
        return len(self.received)

    @property
    def last(self) -> Received:
        return self.received[-1]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        self.received.append(
            Received(
                method=request.method,
                path=request.path,
                query=request.query_string,
                headers={k: mask_card_like(v) for k, v in request.headers.items()},
                masked_body=mask_card_like(raw.decode("utf-8", errors="replace")),
                raw=raw,
            )
        )
        if self.mode == "redirect":
            return web.Response(status=302, headers={"Location": self.redirect_to})
        if self.mode == "slow":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.slow_seconds)
            return web.json_response({"ok": True, "slow": True})
        if self.mode == "huge":
            return web.Response(text="x" * self.huge_bytes, content_type="text/plain")
        if self.mode == "huge_chunked":
            response = web.StreamResponse(headers={"Content-Type": "text/plain"})
            response.enable_chunked_encoding()
            await response.prepare(request)
            for _ in range(self.huge_bytes // 65536 + 1):
                await response.write(b"y" * 65536)
            await response.write_eof()
            return response
        if self.mode == "card":
            grouped = " ".join(VISA[i : i + 4] for i in range(0, 16, 4))
            text = f"approved card {grouped}; on file {MASTERCARD}; reference 12345"
            return web.Response(text=text, content_type="text/plain", headers={"X-Request-Id": f"dst-{VISA}"})
        if self.mode == "gzip":
            compressed = gzip.compress(b'{"ok": true}')
            return web.Response(
                body=compressed, headers={"Content-Type": "application/json", "Content-Encoding": "gzip"}
            )
        if self.mode == "status":
            return web.json_response({"error": "declined"}, status=self.status)
        return web.json_response(
            {"ok": True, "echo": raw.decode("utf-8", errors="replace")},
            headers={"X-Request-Id": "dst-req-0001", "Set-Cookie": "session=abc", "X-Internal-Secret": "s3"},
        )
