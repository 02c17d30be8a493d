"""POST /v1/forward: the detokenize-and-forward proxy's HTTP face (secret key only).

The request is read strictly (unknown fields refused, header names and values
held to what HTTP allows) and the whole exchange runs under ``run_once``, so
an Idempotency-Key retry gets the first answer byte for byte and the
destination hears from the vault once.  A failure that happens after the
point of no return (a CVC taken, the request sent) is answered, not raised,
for the same reason; see ``service.forward``.
"""

from __future__ import annotations

from typing import Any

import structlog
from aiohttp import web
from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates

from service.adapters.forward_store import ForwardStore
from service.adapters.forwarder import Forwarder
from service.adapters.idempotency_store import IdempotencyStore
from service.domain.audit import Action, Outcome
from service.domain.forwarding import HEADER_NAME, HEADER_VALUE, MAX_URL_LENGTH
from service.forward import ForwardRequest, ForwardService
from service.http.api_audit import destination_host, record_api, refusals_recorded
from service.http.auth import authenticate
from service.http.body import read_and_load
from service.http.middlewares import request_id_of
from service.http.problems import from_api_error
from service.http.state import services
from service.idempotency import run_once

log = structlog.get_logger("cardvault.http")

METHODS = ("POST", "PUT", "PATCH")
MAX_HEADERS = 50
MAX_BODY_CHARS = 64 * 1024


class ForwardRequestSchema(Schema):
    class Meta:
        unknown = RAISE

    destination = fields.String(required=True, validate=validate.Length(min=1, max=MAX_URL_LENGTH))
    method = fields.String(required=True, validate=validate.OneOf(METHODS))
    headers = fields.Dict(
        keys=fields.String(validate=validate.Regexp(HEADER_NAME, error="Not a valid HTTP header name.")),
        values=fields.String(validate=validate.Regexp(HEADER_VALUE, error="Not a valid HTTP header value.")),
        load_default=dict,
    )
    body = fields.String(required=True, validate=validate.Length(max=MAX_BODY_CHARS))

    @validates("headers")
    def _headers(self, value: dict[str, str], **_: Any) -> None:
        if len(value) > MAX_HEADERS:
            raise ValidationError(f"At most {MAX_HEADERS} headers.")
        names = [name.lower() for name in value]
        if len(set(names)) != len(names):
            raise ValidationError("A header appears twice (names are case-insensitive).")


FORWARD_REQUEST_SCHEMA = ForwardRequestSchema()  # built once: construction deep-copies the fields


def forward_json(data: dict[str, Any]) -> ForwardRequest:
    return ForwardRequest(
        destination=data["destination"], method=data["method"], headers=data["headers"], body=data["body"]
    )


async def forward_request(request: web.Request) -> web.StreamResponse:
    principal = await authenticate(request)
    svc = services(request)
    store = svc.store
    assert store is not None  # authenticate() has refused already when the service is not ready
    service = ForwardService(ForwardStore(store.redis), Forwarder(svc.settings.forward))

    async def produce() -> web.StreamResponse:
        data = await read_and_load(request, FORWARD_REQUEST_SCHEMA)
        outcome = await service.forward(principal, forward_json(data))
        where = f"{data['method']} {destination_host(data['destination'])}"
        if outcome.error is not None:
            log.info("request refused", code=outcome.error.code, status=outcome.error.status, path=request.path)
            await record_api(request, principal, Action.FORWARD, Outcome.FAILURE, "-", f"{where}; {outcome.error.code}")
            return from_api_error(outcome.error, request_id_of(request))
        assert outcome.answer is not None
        await record_api(request, principal, Action.FORWARD, Outcome.SUCCESS, "-", f"{where}; {outcome.answer.status}")
        return web.json_response(outcome.answer.to_json())

    async with refusals_recorded(request, principal, Action.FORWARD):
        return await run_once(request, IdempotencyStore(store.redis), principal.agency.id, produce)
