"""Middlewares every request passes: request id, errors to problem+json, security headers.

Order (outermost first): ``request_id`` names the request, ``security_headers``
stamps every answer (including error answers), ``errors`` turns every
exception into a problem document.  Nothing here reads the request body.
An answer a handler streams itself goes out before the middleware sees it,
so ``security_headers_on_prepare`` (on ``on_response_prepare``) stamps the
same headers on every answer as its headers are sent.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web
from multidict import CIMultiDict

from service.adapters.processors.base import ProcessorError
from service.domain.ids import card_free
from service.domain.redaction import contains_card_number
from service.errors import ApiError, DecryptionFailed, KeyringError, StoreUnavailable
from service.http import problems
from service.http.proxy import client_scheme
from service.http.state import SERVICES
from service.tls.mozilla import HSTS_HEADER_VALUE

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
REQUEST_ID = web.RequestKey("request_id", str)
INBOUND_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{8,64}$")

log = structlog.get_logger("cardvault.http")

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "interest-cohort=(), payment=(), camera=(), microphone=(), geolocation=()",
}


def mint_request_id() -> str:
    """``req_`` and 96 random bits in hex, never one whose digits happen to form a card number.

    About one hex id in two hundred holds a Luhn-valid run of 12+ decimal digits;
    the redactor would then mangle it in problem bodies and logs.  ``card_free``
    draws again while the id holds any run of twelve digits, and hex has no
    spaces or dashes for a card number to be written with, so no card number
    can be in what it returns (the card finder, run over it as well before, cost
    two thirds of a request id).
    """
    return card_free(lambda: "req_" + secrets.token_hex(12))


def request_id_of(request: web.Request) -> str | None:
    return request.get(REQUEST_ID)


@web.middleware
async def request_id(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Use the proxy's X-Request-Id when it is well-formed (and no card number), else mint one; echo it back."""
    inbound = request.headers.get("X-Request-Id", "")
    usable = INBOUND_REQUEST_ID.match(inbound) and not contains_card_number(inbound)
    rid = inbound if usable else mint_request_id()
    request[REQUEST_ID] = rid
    structlog.contextvars.bind_contextvars(request_id=rid)
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        exc.headers["X-Request-Id"] = rid
        raise
    finally:
        structlog.contextvars.unbind_contextvars("request_id")
    response.headers["X-Request-Id"] = rid
    return response


#: Marks an answer the middleware has stamped: nothing it could change has changed by the time it is
#: prepared (only X-Request-Id is set in between, to the value stamped), so the prepare hook skips it.
STAMPED = web.ResponseKey("security_headers_stamped", bool)

#: SECURITY_HEADERS as one multidict, for the usual answer that has none of them yet: added in one call.
_SECURITY_DEFAULTS = CIMultiDict(SECURITY_HEADERS)


def apply_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Defaults for one answer; what a handler (or the staff pages) set first wins.  Idempotent."""
    headers = response.headers
    if not any(name in headers for name in SECURITY_HEADERS):
        headers.extend(_SECURITY_DEFAULTS)  # the same as the loop below makes of an answer without any of them
    else:
        policy = headers.get("Content-Security-Policy", "")
        framable = "frame-ancestors" in policy and "frame-ancestors 'none'" not in policy
        for name, value in SECURITY_HEADERS.items():
            if name == "X-Frame-Options" and framable:
                continue  # the handler's own frame-ancestors decides (the hosted card form); CSP supersedes XFO
            headers.setdefault(name, value)
    headers["Server"] = "cardvault"
    rid = request.get(REQUEST_ID)
    if rid:
        headers.setdefault("X-Request-Id", rid)
    # over our own TLS, or behind a trusted proxy that terminated the client's TLS (server.plain_http)
    svc = request.app.get(SERVICES)  # the answering app's own, as config_dict would find it first ...
    if svc is None:
        svc = request.config_dict.get(SERVICES)  # ... else the enclosing apps' (config_dict is built per call)
    own_tls = svc is not None and svc.tls
    if own_tls or client_scheme(request) == "https":
        headers.setdefault("Strict-Transport-Security", HSTS_HEADER_VALUE)


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Defaults for every answer; a handler that needs another policy sets its own first."""
    response = await handler(request)
    if not response.prepared:  # a streamed answer got them on prepare, below
        apply_security_headers(request, response)
        response[STAMPED] = True
    return response


async def security_headers_on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    """The same defaults for answers a handler streams itself (CSV exports, static files).

    A streamed answer sends its headers inside the handler, before the middleware above sees it,
    so they are stamped here, on ``on_response_prepare``, which runs just before any answer's
    headers go out.  An answer the middleware has stamped already is left as it is (applying them
    again would change nothing).
    """
    if not response.get(STAMPED, False):
        apply_security_headers(request, response)


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure leaves as problem+json; unexpected ones are logged, never echoed."""
    rid = request_id_of(request)
    try:
        return await handler(request)
    except ApiError as exc:
        log.info("request refused", code=exc.code, status=exc.status, path=request.path)
        return problems.from_api_error(exc, rid)
    except StoreUnavailable as exc:
        log.warning("store unavailable", reason=str(exc), path=request.path)
        return problems.problem_response(
            503,
            "store_unavailable",
            "The vault's store is unavailable; retry shortly",
            request_id=rid,
            headers={"Retry-After": "1"},
        )
    except DecryptionFailed:
        log.error("stored ciphertext failed authentication", path=request.path)
        return problems.problem_response(
            500, "integrity_error", "Stored data failed its integrity check", request_id=rid
        )
    except ProcessorError as exc:
        log.warning("processor gave no answer", code=exc.code, path=request.path)
        return problems.from_processor_error(exc, rid)
    except KeyringError as exc:
        log.error("keyring error", reason=str(exc), path=request.path)
        return problems.problem_response(503, "keys_unavailable", "The vault's keys are not available", request_id=rid)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return problems.from_http_exception(exc, rid)
    except Exception:
        log.exception("unhandled error", path=request.path)
        return problems.problem_response(500, "internal_error", "Internal error", request_id=rid)
