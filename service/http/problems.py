"""RFC 9457 problem+json: the one place that turns errors into HTTP answers.

Every answer that is not a success is built here, so every error has the same
shape: ``type``, ``title``, ``status``, ``detail``, a stable machine-readable
``code``, the ``request_id``, and for validation problems the list of
``errors`` with the dotted ``field`` each one is about.  Everything that goes
out passes through the card-number redactor first, so a client's own card
number is never echoed back, even inside a field name.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from service.adapters.processors.base import ProcessorError
from service.domain.redaction import redact_value
from service.errors import ApiError, FieldError, TooManyRequests

PROBLEM_CONTENT_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:cardvault:problem:"

#: aiohttp's own refusals (no route, wrong method, body too big...) as our codes.
HTTP_STATUS_CODES = {
    400: ("malformed_request", "The request is malformed"),
    401: ("unauthenticated", "A valid API key is required"),
    403: ("forbidden", "Forbidden"),
    404: ("not_found", "No such resource"),
    405: ("method_not_allowed", "Method not allowed"),
    413: ("payload_too_large", "The request body is too large"),
    415: ("unsupported_media_type", "Send the request body as application/json"),
    431: ("headers_too_large", "The request headers are too large"),
    429: ("rate_limited", "Too many requests"),
}


def problem_response(
    status: int,
    code: str,
    title: str,
    *,
    detail: str | None = None,
    errors: Sequence[FieldError] = (),
    request_id: str | None = None,
    headers: dict[str, str] | None = None,
    extensions: dict[str, Any] | None = None,
) -> web.Response:
    """``extensions`` are RFC 9457 extension members, e.g. the charge a processor failure left behind."""
    body: dict[str, Any] = {"type": TYPE_PREFIX + code, "title": title, "status": status, "code": code}
    if detail and detail != title:
        body["detail"] = detail
    if errors:
        body["errors"] = [{"field": e.field, "code": e.code, "message": e.message} for e in errors]
    if request_id:
        body["request_id"] = request_id
    if extensions:
        body.update(extensions)
    safe = redact_value(body)
    return web.Response(
        status=status,
        text=json.dumps(safe, separators=(",", ":")),
        content_type=PROBLEM_CONTENT_TYPE,
        headers=headers,
    )


def from_api_error(error: ApiError, request_id: str | None) -> web.Response:
    headers = {"WWW-Authenticate": 'Bearer realm="cardvault"'} if error.status == 401 else None
    if isinstance(error, TooManyRequests):
        headers = {"Retry-After": str(error.retry_after)}
    return problem_response(
        error.status,
        error.code,
        error.title,
        detail=error.detail,
        errors=error.errors,
        request_id=request_id,
        headers=headers,
    )


PROCESSOR_PROBLEMS = {
    "processor_circuit_open": (503, "The processor is failing; charges to it are paused. Retry shortly"),
    "processor_timeout": (504, "The processor did not answer in time; the outcome is unknown"),
    "processor_rejected": (502, "The processor refused the request (check the agency's processor settings)"),
    "processor_unavailable": (502, "The processor could not be reached"),
    "processor_error": (502, "The processor gave no usable answer"),
}


def from_processor_error(
    error: ProcessorError, request_id: str | None, extensions: dict[str, Any] | None = None
) -> web.Response:
    """502/503/504 for a processor that gave no answer; ``extensions`` carries the charge left behind."""
    status, title = PROCESSOR_PROBLEMS.get(error.code, PROCESSOR_PROBLEMS["processor_error"])
    retry_after = getattr(error, "retry_after", None)
    headers = {"Retry-After": str(max(1, round(retry_after)))} if status == 503 and retry_after else None
    return problem_response(status, error.code, title, request_id=request_id, headers=headers, extensions=extensions)


def from_http_exception(error: web.HTTPException, request_id: str | None) -> web.Response:
    code, title = HTTP_STATUS_CODES.get(error.status, ("http_error", error.reason))
    headers = {}
    if error.status == 405 and "Allow" in error.headers:
        headers["Allow"] = error.headers["Allow"]
    return problem_response(error.status, code, title, request_id=request_id, headers=headers or None)
