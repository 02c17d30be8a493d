"""Structured JSON logs that cannot carry a card number or CVC.

Everything logged, by our code through structlog or by libraries through the
standard ``logging`` module (aiohttp, asyncio, redis), is rendered by one
formatter whose last step before JSON runs the card redactor over the whole
event, exception text included.  Request bodies are never logged; the access
log records the path without its query string.

The access line is written once per request, so :class:`AccessLogger` builds
its event itself (what the structlog chain would add, in the same order) and,
when the one handler ``configure_logging`` installed is all that would see it,
writes it through that handler without a LogRecord; otherwise (a test's log
capture, an operator's extra handler or filter) it hands a record to the
standard logger.  The same formatter, the same redaction, the same line either
way, without the per-call logger construction, the caller lookup and the
record of ``logging`` (together a tenth of a request's CPU).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import MutableMapping
from typing import IO, Any

import structlog
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from service.domain.card_finder import may_contain_card_number
from service.domain.redaction import is_sensitive_key, redact_value
from service.http.proxy import client_address, client_scheme

ACCESS_LOGGER = "cardvault.access"
_TIMESTAMPER = structlog.processors.TimeStamper(fmt="iso", utc=True)


#: Event keys already found not sensitive: keys come from our code and the libraries' (a few dozen names),
#: so the set stays small; it stops growing at ``_CLEAN_KEYS_MAX`` whatever reaches it.
_CLEAN_KEYS: set[str] = set()
_CLEAN_KEYS_MAX = 1024


def _plainly_clean(event: MutableMapping[str, Any]) -> bool:
    """Whether a flat event of plain scalars surely has nothing to redact: no card-ish key, and its keys
    and values, joined by a character no card number can span, hold no twelve close digits."""
    parts: list[str] = []
    for key, value in event.items():
        if type(key) is not str:
            return False
        if key not in _CLEAN_KEYS:
            if is_sensitive_key(key):
                return False
            if len(_CLEAN_KEYS) < _CLEAN_KEYS_MAX:
                _CLEAN_KEYS.add(key)
        kind = type(value)
        if kind is str:
            parts.append(value)
        elif kind is int or kind is float:
            parts.append(repr(value))
        elif value is not None and kind is not bool:
            return False
        parts.append(key)
    return not may_contain_card_number("\x00".join(parts))


def redact_event(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: no card number or CVC leaves this point.

    Most events (every access line) are flat and hold no digit run long enough to be a card: one
    search over all of it says so, and the event goes on as it is; anything else is walked by
    ``redact_value``.
    """
    if _plainly_clean(event):
        return event
    redacted = redact_value(dict(event))
    assert isinstance(redacted, dict)
    return redacted


class JsonLinesFormatter(structlog.stdlib.ProcessorFormatter):
    """The ProcessorFormatter that ``configure_logging`` sets up, with a shortcut for structlog's events.

    Its processors are the last steps of every line: processor metadata off, exceptions formatted, the
    card redactor, JSON.  An event that comes from structlog (every access line, every ``log.info(...)``
    of ours) is complete when it gets here; when it carries no ``exc_info`` only the redactor and the
    renderer have work to do.  So such an event is redacted and rendered directly, without the
    copy of the record and of the event that ProcessorFormatter makes first (a tenth of an access
    line's cost): the same line, key for key.  Everything else (exceptions, the libraries' records)
    takes ProcessorFormatter's own way.
    """

    _SHORTCUT_EXCLUDES = ("exc_info", "_record", "_from_structlog")

    def __init__(self, foreign_pre_chain: list[Any]) -> None:
        self._render = structlog.processors.JSONRenderer(sort_keys=False)
        super().__init__(
            foreign_pre_chain=foreign_pre_chain,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                redact_event,
                self._render,
            ],
        )

    def format(self, record: logging.LogRecord) -> str:
        event = record.msg
        from_structlog = hasattr(record, "_logger") and hasattr(record, "_name")  # as wrap_for_formatter makes it
        if type(event) is dict and from_structlog and not any(k in event for k in self._SHORTCUT_EXCLUDES):
            return self.render_event(event)
        return super().format(record)

    def render_event(self, event: MutableMapping[str, Any]) -> str:
        """A complete structlog event (no ``exc_info``) as its redacted JSON line; ``event`` is left as it was."""
        if _plainly_clean(event):
            return _encode_plain(event)  # flat scalars: what the renderer makes, without its per-call encoder
        rendered = self._render(None, "", redact_event(None, "", event))
        assert isinstance(rendered, str)
        return rendered


#: ``json.dumps``'s output with its defaults, from one encoder (``dumps`` with keyword arguments, as
#: structlog's renderer calls it, builds an encoder per line).
_encode_plain = json.JSONEncoder().encode


class JsonLinesHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler ``configure_logging`` installs: a StreamHandler that can also write a structlog event
    directly, without a LogRecord (``AccessLogger``)."""

    def write_event(self, event: MutableMapping[str, Any]) -> None:
        formatter = self.formatter
        assert isinstance(formatter, JsonLinesFormatter)
        try:
            line = formatter.render_event(event) + self.terminator
            with self.lock:  # type: ignore[union-attr]  # created by Handler.__init__
                self.stream.write(line)
                self.flush()
        except Exception:
            self.handleError(logging.makeLogRecord({"name": ACCESS_LOGGER, "msg": "access line not written"}))


def sole_json_handler(logger: logging.Logger, level: int) -> JsonLinesHandler | None:
    """The handler a record of ``level`` from ``logger`` would reach, when it is the only one and the
    ``configure_logging`` one, with no filter on the way; None otherwise (a test's log capture, a
    handler of an operator's, a filter: the record then goes the standard way)."""
    if logger.disabled or logger.filters:
        return None
    current: logging.Logger | None = logger
    while current is not None:  # as Logger.callHandlers walks
        if current.handlers:
            handlers = current.handlers
            if current is not logging.root or len(handlers) != 1:
                return None
            handler = handlers[0]
            if type(handler) is not JsonLinesHandler or handler.filters or handler.level > level:
                return None
            return handler if type(handler.formatter) is JsonLinesFormatter else None
        if not current.propagate:
            return None
        current = current.parent
    return None


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
    formatter = JsonLinesFormatter(foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()])
    handler = JsonLinesHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())


class AccessLogger(AbstractAccessLogger):
    """One structured line per request: method, path (no query), status, duration, request id, and the
    client's address and scheme (as the trusted proxy reported them, see ``service.http.proxy``)."""

    def __init__(self, logger: logging.Logger, log_format: str) -> None:
        super().__init__(logger, log_format)
        self._stdlib = logging.getLogger(ACCESS_LOGGER)

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        stdlib = self._stdlib
        if not stdlib.isEnabledFor(logging.INFO):
            return
        # What structlog's chain would make (merge_contextvars, add_log_level, add_logger_name, TimeStamper),
        # in its key order.
        event: dict[str, Any] = {
            "method": request.method,
            "path": request.path,
            "status": response.status,
            "duration_ms": round(time * 1000, 2),
            "request_id": response.headers.get("X-Request-Id"),
            "remote": client_address(request),
            "scheme": client_scheme(request),
            "event": "request",
        }
        for key, value in structlog.contextvars.get_contextvars().items():
            event.setdefault(key, value)
        event["level"] = "info"
        event["logger"] = ACCESS_LOGGER
        stamped = _TIMESTAMPER(None, "info", event)
        handler = sole_json_handler(stdlib, logging.INFO)
        if handler is not None:  # the usual configuration: straight to its one handler, same line, no LogRecord
            handler.write_event(stamped)
            return
        # As structlog's ProcessorFormatter.wrap_for_formatter hands it over: the formatter redacts and renders it.
        record = stdlib.makeRecord(
            ACCESS_LOGGER, logging.INFO, __file__, 0, stamped, (), None, extra={"_logger": stdlib, "_name": "info"}
        )
        stdlib.handle(record)

    @property
    def enabled(self) -> bool:
        return True
