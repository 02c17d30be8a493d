"""Problem answers for requests aiohttp refuses before any middleware runs.

An over-long request line or header, or bytes that are not HTTP, are
answered by aiohttp's protocol handler itself: plain text, no request id, no
security headers, its version in ``Server``, and the start of the offending
line echoed back (which could be a card number).  aiohttp has no hook for
this, so :func:`install` wraps ``RequestHandler.handle_error`` once per
process: aiohttp still logs (through our redacting formatter) and still
closes the connection; only the answer is replaced by a problem document
with the same headers every other answer carries, echoing nothing.
"""

from __future__ import annotations

from http import HTTPStatus

from aiohttp import web, web_protocol

from service.http import problems
from service.http.middlewares import SECURITY_HEADERS, mint_request_id
from service.tls.mozilla import HSTS_HEADER_VALUE

_MARK = "_cardvault_problem_answers"


def install() -> None:
    original = web_protocol.RequestHandler.handle_error
    if getattr(original, _MARK, False):
        return

    def handle_error(
        self: web_protocol.RequestHandler,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        original(self, request, status, exc, None)  # logs; raises if a response was already under way
        code, title = problems.HTTP_STATUS_CODES.get(status, ("http_error", HTTPStatus(status).phrase))
        if status >= 500:
            code, title = "internal_error", "Internal error"
        rid = mint_request_id()
        response = problems.problem_response(status, code, title, request_id=rid)
        response.headers.update(SECURITY_HEADERS)
        response.headers["X-Request-Id"] = rid
        response.headers["Server"] = "cardvault"
        if self.transport is not None and self.transport.get_extra_info("sslcontext") is not None:
            response.headers["Strict-Transport-Security"] = HSTS_HEADER_VALUE  # as every answer over TLS
        response.force_close()
        return response

    setattr(handle_error, _MARK, True)
    web_protocol.RequestHandler.handle_error = handle_error  # type: ignore[method-assign]
