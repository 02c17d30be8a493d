"""Structured JSON logs that cannot carry a card number or CVC.

Everything logged, by our code through structlog or by libraries through the
standard ``logging`` module (aiohttp, asyncio, redis), is rendered by one
formatter whose last step before JSON runs the card redactor over the whole
event, exception text included.  Request bodies are never logged; the access
log records the path without its query string.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import IO, Any

import structlog
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from service.domain.redaction import redact_value
from service.http.proxy import client_address, client_scheme


def redact_event(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: no card number or CVC leaves this point."""
    redacted = redact_value(dict(event))
    assert isinstance(redacted, dict)
    return redacted


def configure_logging(level: str = "info", stream: IO[str] | None = None) -> None:
    """Send every log record, ours and the libraries', as redacted JSON lines to ``stream``."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            redact_event,
            structlog.processors.JSONRenderer(sort_keys=False),
        ],
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())


class AccessLogger(AbstractAccessLogger):
    """One structured line per request: method, path (no query), status, duration, request id, and the
    client's address and scheme (as the trusted proxy reported them, see ``service.http.proxy``)."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        structlog.get_logger("cardvault.access").info(
            "request",
            method=request.method,
            path=request.path,
            status=response.status,
            duration_ms=round(time * 1000, 2),
            request_id=response.headers.get("X-Request-Id"),
            remote=client_address(request),
            scheme=client_scheme(request),
        )

    @property
    def enabled(self) -> bool:
        return True
