"""The charges API: charge a token, capture, void, refund, look up.

Every POST here changes money, so every POST runs under ``run_once``: with an
Idempotency-Key a retry gets the first answer byte for byte and never reaches
the processor again.  Once the processor has been called the handler answers
(even when the answer is a timeout) instead of raising, so that answer is
what retries get.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from service.agencies import Principal
from service.charges import ChargeOutcome, ChargeRequest, ChargeService
from service.domain.audit import Action
from service.domain.charges import Channel, Charge, ChargeStatus, Refund
from service.http.api_audit import charge_detail, charge_outcome, record_api, refund_outcome, refusals_recorded
from service.http.auth import authenticate
from service.http.body import load, read_json
from service.http.charge_body import load_charge_create
from service.http.charge_schemas import (
    AmountSchema,
    ChargeListQuerySchema,
    EmptySchema,
    charge_json,
    refund_object,
)
from service.http.middlewares import request_id_of
from service.http.problems import from_processor_error
from service.http.state import services
from service.http.velocity import subject_of
from service.idempotency import idempotency_key, run_once

# Schemas are built once: constructing one deep-copies its fields, a fifth of a request's CPU.
CHARGE_LIST_QUERY_SCHEMA = ChargeListQuerySchema()
AMOUNT_SCHEMA = AmountSchema()
EMPTY_SCHEMA = EmptySchema()


def _charges(request: web.Request) -> ChargeService:
    svc = services(request).charges
    assert svc is not None  # authenticate() has refused already when the service is not ready
    return svc


async def _idempotent(
    request: web.Request, agency_id: str, produce: Callable[[], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    store = services(request).idempotency
    assert store is not None
    return await run_once(request, store, agency_id, produce)


def _charge_answer(request: web.Request, outcome: ChargeOutcome, *, new: bool) -> web.Response:
    """201 for a new charge, 200 for an existing one, 402 for a decline, 502/504 when the processor failed."""
    charge = outcome.charge
    body = charge_json(charge)
    if outcome.error is not None:
        return from_processor_error(outcome.error, request_id_of(request), extensions={"charge": body})
    if charge.status in (ChargeStatus.DECLINED, ChargeStatus.FAILED):
        return web.json_response(body, status=402)
    status = 201 if new and outcome.created else 200
    response = web.json_response(body, status=status)
    if status == 201:
        response.headers["Location"] = f"/v1/charges/{charge.id}"
    return response


async def _audit_charge(request: web.Request, principal: Principal, action: str, outcome: ChargeOutcome) -> None:
    code = outcome.error.code if outcome.error is not None else None
    charge = outcome.charge
    await record_api(request, principal, action, charge_outcome(charge, code), charge.id, charge_detail(charge, code))


async def create_charge(request: web.Request) -> web.StreamResponse:
    principal = await authenticate(request)

    async def produce() -> web.StreamResponse:
        data = load_charge_create(await read_json(request))
        charge_request = ChargeRequest(
            token=data["token"],
            amount=data["amount"],
            currency=data["currency"],
            capture=data["capture"],
            description=data["description"],
            order_reference=data["order_reference"],
            channel=Channel(data["channel"]),
        )

        async def witness(outcome: ChargeOutcome) -> None:  # written beside the charge's final record
            await _audit_charge(request, principal, Action.CHARGE, outcome)

        outcome = await _charges(request).create(
            principal, charge_request, idempotency_key(request), subject_of(request, principal), witness
        )
        return _charge_answer(request, outcome, new=True)

    async with refusals_recorded(request, principal, Action.CHARGE):
        return await _idempotent(request, principal.agency.id, produce)


async def get_charge(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    charge = await _charges(request).get(principal, request.match_info["charge_id"])
    return web.json_response(charge_json(charge))


async def list_charges(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    query = load(CHARGE_LIST_QUERY_SCHEMA, dict(request.query))
    found, has_more = await _charges(request).by_order_reference(principal, query["order_reference"])
    return web.json_response({"object": "list", "data": [charge_json(c) for c in found], "has_more": has_more})


async def capture_charge(request: web.Request) -> web.StreamResponse:
    principal = await authenticate(request)

    async def produce() -> web.StreamResponse:
        data = load(AMOUNT_SCHEMA, await _optional_json(request))
        outcome = await _charges(request).capture(principal, request.match_info["charge_id"], data["amount"])
        await _audit_charge(request, principal, Action.CAPTURE, outcome)
        return _charge_answer(request, outcome, new=False)

    async with refusals_recorded(request, principal, Action.CAPTURE, request.match_info["charge_id"]):
        return await _idempotent(request, principal.agency.id, produce)


async def void_charge(request: web.Request) -> web.StreamResponse:
    principal = await authenticate(request)

    async def produce() -> web.StreamResponse:
        load(EMPTY_SCHEMA, await _optional_json(request))
        outcome = await _charges(request).void(principal, request.match_info["charge_id"])
        await _audit_charge(request, principal, Action.CHARGE_VOID, outcome)
        return _charge_answer(request, outcome, new=False)

    async with refusals_recorded(request, principal, Action.CHARGE_VOID, request.match_info["charge_id"]):
        return await _idempotent(request, principal.agency.id, produce)


async def refund_charge(request: web.Request) -> web.StreamResponse:
    principal = await authenticate(request)

    async def produce() -> web.StreamResponse:
        data = load(AMOUNT_SCHEMA, await _optional_json(request))
        outcome, refund = await _charges(request).refund(
            principal, request.match_info["charge_id"], data["amount"], idempotency_key(request)
        )
        if outcome.error is not None or refund is None:
            await _audit_charge(request, principal, Action.CHARGE_REFUND, outcome)
            return _charge_answer(request, outcome, new=False)
        detail = f"refund {refund.id} {refund.status}; {refund.amount} {outcome.charge.currency}"
        await record_api(request, principal, Action.CHARGE_REFUND, refund_outcome(refund), outcome.charge.id, detail)
        return _refund_answer(outcome.charge, refund)

    async with refusals_recorded(request, principal, Action.CHARGE_REFUND, request.match_info["charge_id"]):
        return await _idempotent(request, principal.agency.id, produce)


def _refund_answer(charge: Charge, refund: Refund) -> web.Response:
    # 201 refunded; 402 the processor refused it; 202 its outcome is not known yet (pending or unknown)
    status = {"succeeded": 201, "failed": 402}.get(refund.status, 202)
    return web.json_response(refund_object(refund, charge.id), status=status)


async def _optional_json(request: web.Request) -> dict[str, Any]:
    """These POSTs may come with no body at all; an empty body means {}."""
    if not request.body_exists or request.content_length == 0:
        return {}
    return await read_json(request)
