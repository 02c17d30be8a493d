"""The checkout-sessions API: the storefront backend creates and reads sessions, the shopper's card form pays them.

``POST /v1/checkout/sessions`` (secret key) prices the purchase;
``POST /v1/checkout/sessions/{id}/complete`` (publishable or secret key, and
the session's client secret) pays it with a token, for the session's own
amount: the body has no amount, and an unknown field is refused.
``GET /v1/checkout/sessions/{id}`` shows the real outcome: to the backend
with its secret key, to the shopper's page with the client secret in the
``Cardvault-Client-Secret`` header (kept out of URLs and so out of logs).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from marshmallow import RAISE, Schema, fields, validate

from service.checkout import CheckoutService, NewSession
from service.domain.audit import Action, Outcome
from service.domain.charges import CURRENCIES, REFERENCE_PATTERN
from service.domain.checkout import CheckoutSession, PaymentStatus, SessionStatus
from service.domain.tokens import TOKEN_ID_PATTERN
from service.http.api_audit import record_api, refusals_recorded
from service.http.auth import authenticate
from service.http.body import load, read_json
from service.http.charge_schemas import amount_field
from service.http.schemas import no_card_number
from service.http.state import services
from service.http.velocity import subject_of
from service.idempotency import run_once

CLIENT_SECRET_HEADER = "Cardvault-Client-Secret"  # noqa: S105 - a header name


class _Strict(Schema):
    class Meta:
        unknown = RAISE


def _url_field() -> fields.String:
    return fields.String(required=True, validate=[validate.Length(min=1, max=2048), no_card_number])


class CheckoutCreateSchema(_Strict):
    amount = amount_field(required=True)
    currency = fields.String(load_default="usd", validate=validate.OneOf(sorted(CURRENCIES)))
    order_reference = fields.String(
        required=True,
        validate=[validate.Regexp(REFERENCE_PATTERN, error="1 to 64 letters, digits and . _ : / # -"), no_card_number],
    )
    description = fields.String(load_default=None, validate=[validate.Length(min=1, max=255), no_card_number])
    success_url = _url_field()
    cancel_url = _url_field()


class CheckoutCompleteSchema(_Strict):
    client_secret = fields.String(required=True, validate=validate.Length(min=1, max=200))
    token = fields.String(required=True, validate=validate.Regexp(TOKEN_ID_PATTERN, error="Not a token id"))


CREATE_SCHEMA = CheckoutCreateSchema()
COMPLETE_SCHEMA = CheckoutCompleteSchema()


def session_json(session: CheckoutSession, now: int) -> dict[str, Any]:
    charge = session.charge
    error = session.last_payment_error
    return {
        "id": session.id,
        "object": "checkout.session",
        "status": str(session.status_at(now)),
        "payment_status": str(session.payment_status),
        "amount": session.amount,
        "currency": session.currency,
        "order_reference": session.order_reference,
        "description": session.description,
        "success_url": session.success_url,
        "cancel_url": session.cancel_url,
        "created": session.created,
        "expires_at": session.expires_at,
        "completed_at": session.completed_at,
        "attempts": session.attempts,
        "charge": None
        if charge is None
        else {
            "id": charge.id,
            "status": charge.status,
            "card": {"brand": charge.brand, "last4": charge.last4},
            "decline_code": charge.decline_code,
            "failure_message": charge.failure_message,
        },
        "last_payment_error": None if error is None else {"code": error.code, "message": error.message},
    }


def _checkout(request: web.Request) -> CheckoutService:
    svc = services(request).checkout
    assert svc is not None  # authenticate() has refused already when the service is not ready
    return svc


def _now(request: web.Request) -> int:
    return int(services(request).clock())


async def _idempotent(
    request: web.Request, agency_id: str, produce: Callable[[], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    store = services(request).idempotency
    assert store is not None
    return await run_once(request, store, agency_id, produce)


async def create_session(request: web.Request) -> web.StreamResponse:
    principal = await authenticate(request)

    async def produce() -> web.StreamResponse:
        data = load(CREATE_SCHEMA, await read_json(request))
        created = await _checkout(request).create(principal, NewSession(**data))
        body = {**session_json(created.session, _now(request)), "client_secret": created.client_secret}
        response = web.json_response(body, status=201)
        response.headers["Location"] = f"/v1/checkout/sessions/{created.session.id}"
        return response

    return await _idempotent(request, principal.agency.id, produce)


async def get_session(request: web.Request) -> web.Response:
    principal = await authenticate(request, publishable_ok=True)
    secret = request.headers.get(CLIENT_SECRET_HEADER)
    session = await _checkout(request).get(principal, request.match_info["session_id"], secret)
    return web.json_response(session_json(session, _now(request)))


def complete_status(session: CheckoutSession) -> int:
    """200 paid; 202 the outcome is unknown (never pay again); 402 refused (pay again with another card)."""
    if session.status is SessionStatus.COMPLETE:
        return 200
    if session.payment_status is PaymentStatus.UNKNOWN:
        return 202
    return 402


async def complete_session(request: web.Request) -> web.StreamResponse:
    principal = await authenticate(request, publishable_ok=True)

    async def produce() -> web.StreamResponse:
        data = load(COMPLETE_SCHEMA, await read_json(request))
        session = await _checkout(request).complete(
            principal,
            request.match_info["session_id"],
            data["client_secret"],
            data["token"],
            subject_of(request, principal),
        )
        status = complete_status(session)
        charge = session.charge
        outcome = Outcome.SUCCESS if status == 200 else Outcome.FAILURE
        detail = f"{session.payment_status}; {session.amount} {session.currency}" + (
            f"; charge {charge.id} {charge.status}" if charge is not None else ""
        )
        await record_api(request, principal, Action.CHECKOUT_COMPLETE, outcome, session.id, detail)
        return web.json_response(session_json(session, _now(request)), status=status)

    # Refusals are sampled: the publishable key is public, so anyone can provoke them.
    async with refusals_recorded(request, principal, Action.CHECKOUT_COMPLETE, sampled=True):
        return await _idempotent(request, principal.agency.id, produce)
