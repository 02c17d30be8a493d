"""Audit records of the REST API (PCI DSS 10.2): refused keys, token deletions, money, forwards, checkouts.

The handlers call these after the use case has decided, inside the
idempotent part of the request, so an Idempotency-Key replay is not recorded
twice.  What is recorded:

* a missing or unknown API key (``api.auth``, system chain) and a key used
  where it may not be (``api.authorization``, the agency's chain): sampled,
  because anyone can send them (``Auditor.record_refusal``);
* ``token.delete``; ``charge.create``, ``charge.capture``, ``charge.void``,
  ``charge.refund``: success, failure (declined, failed, unknown) or refusal
  with its problem code; ``forward.request`` with method, destination host
  and the destination's status; ``checkout.complete`` with the outcome
  (its refusals are sampled: a publishable key is public).

Never the card, the CVC, a fingerprint, an API key or a client secret: the
actor is the agency's key *kind*, the object an id, the detail written here
from statuses, amounts and codes.  Token creation and reads are not
recorded: no card data leaves the vault through them (the full number only
does through a charge or a forward, and both are).

If Redis refuses the audit write after the money moved, the answer still
goes out (it is what the client must see) and the lost record is logged.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import structlog
from aiohttp import web

from service.adapters.processors.base import ProcessorError
from service.agencies import Principal
from service.audit import Actor
from service.domain.audit import Action, Outcome
from service.domain.charges import Charge, ChargeStatus, Refund
from service.errors import ApiError, StoreUnavailable
from service.http.state import services

log = structlog.get_logger("cardvault.audit")

SUCCESSFUL = frozenset({ChargeStatus.SUCCEEDED, ChargeStatus.REQUIRES_CAPTURE, ChargeStatus.VOIDED})


def client_address(request: web.Request) -> str:
    return request.remote or "-"


def api_actor(request: web.Request, principal: Principal) -> Actor:
    return Actor(principal.agency.id, "-", "api", f"{principal.kind}_key", client_address(request))


async def record_api(
    request: web.Request, principal: Principal, action: str, outcome: Outcome, obj: str = "-", detail: str = ""
) -> None:
    auditor = services(request).auditor
    if auditor is None:
        return
    try:
        await auditor.record(api_actor(request, principal), action, outcome, obj, detail)
    except StoreUnavailable:
        log.error("audit record lost", action=action, outcome=str(outcome), object=obj)


async def record_refused_key(request: web.Request, code: str, principal: Principal | None = None) -> None:
    """A bad or missing key (no principal), or a key used where it may not be: sampled."""
    auditor = services(request).auditor
    if auditor is None:
        return
    if principal is None:
        actor, action = Actor.anonymous(client_address(request)), Action.API_AUTH
    else:
        actor, action = api_actor(request, principal), Action.API_FORBIDDEN
    try:
        await auditor.record_refusal(actor, action, code)
    except StoreUnavailable:
        log.error("audit record lost", action=action, outcome="refused")


@contextlib.asynccontextmanager
async def refusals_recorded(
    request: web.Request, principal: Principal, action: str, obj: str = "-", *, sampled: bool = False
) -> AsyncIterator[None]:
    """Record an ApiError raised inside (a 4xx of the use case or its input, an idempotency conflict) or a
    processor that could not be asked (circuit open) as a refusal, then re-raise."""
    try:
        yield
    except (ApiError, ProcessorError) as exc:
        if sampled:
            auditor = services(request).auditor
            if auditor is not None:
                with contextlib.suppress(StoreUnavailable):
                    await auditor.record_refusal(api_actor(request, principal), action, exc.code)
        else:
            await record_api(request, principal, action, Outcome.REFUSED, obj, exc.code)
        raise


def charge_detail(charge: Charge, error_code: str | None = None) -> str:
    parts = [str(charge.status), f"{charge.amount} {charge.currency}"]
    if charge.amount_refunded:
        parts.append(f"refunded {charge.amount_refunded}")
    if charge.decline_code:
        parts.append(f"decline {charge.decline_code}")
    if error_code:
        parts.append(error_code)
    return "; ".join(parts)


def charge_outcome(charge: Charge, error_code: str | None = None) -> Outcome:
    return Outcome.SUCCESS if charge.status in SUCCESSFUL and error_code is None else Outcome.FAILURE


def refund_outcome(refund: Refund) -> Outcome:
    return Outcome.SUCCESS if refund.status == "succeeded" else Outcome.FAILURE


def destination_host(url: str) -> str:
    """Where a forward went, without path or query (they may carry an agency's own identifiers)."""
    parts = urlsplit(url)
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{parts.hostname or '-'}{port}"
