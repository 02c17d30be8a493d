"""The detokenize-and-forward use case: fill an agency's request with card data and send it to its processor.

For processors the vault has no adapter for, an agency sends the request it
would have sent with the card in it, holding tokens instead, and the vault
sends it on with the card filled in.  The order is chosen so that nothing
irreversible happens until everything that can be checked has been:

1. the destination must fall under the agency's allowlist (403 otherwise);
2. the body must parse as a template (422);
3. every referenced token is loaded in one round trip; each must exist and be
   the calling agency's (keys are per agency, so another agency's token is
   simply not there), and each CVC the body uses must still be held (422
   naming the token; no call);
4. the body is rendered once with a stand-in CVC, so an unrenderable value is
   refused (422) before any CVC is spent;
5. the destination's host is resolved and its addresses checked (403/502/504);
6. **point of no return**: the CVCs are taken (read and deleted, all or none:
   a CVC dies at its first authorization use, whatever the outcome) and the
   request is sent.

Failures before step 6 raise: nothing changed, and an Idempotency-Key may be
retried.  Failures from step 6 on are *returned* as ``ForwardOutcome.error``
so the HTTP layer answers with them instead of raising, and that answer is
what a retry with the same key gets: a forward is never sent twice.

What comes back to the agency is the destination's status, a safe subset of
its headers and its body as text, with every card number redacted and every
CVC this forward inserted masked.  Logs name the allowlist entry, method,
status and sizes, never a body or a header value.
"""

from __future__ import annotations

import codecs
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from service.adapters.forward_store import ForwardStore
from service.adapters.forwarder import (
    Answer,
    DestinationNotAllowed,
    DestinationTimeout,
    Forwarder,
    ForwardFailure,
    Target,
)
from service.agencies import Principal
from service.domain.forwarding import allowed_destination, header_value, mask_response, passed_back_headers
from service.domain.processing import Destination
from service.domain.templates import (
    CardField,
    Escaping,
    Reference,
    Template,
    TemplateError,
    escaping_for,
    parse_template,
    render,
)
from service.domain.tokens import StoredCard
from service.errors import ApiError, BadGateway, FieldError, Forbidden, GatewayTimeout, ValidationFailed

log = structlog.get_logger("cardvault.forward")

STAND_IN_CVC = "0000"


@dataclass(frozen=True, repr=False)
class ForwardRequest:
    """What the agency asked for; the body is a template (it holds tokens, not cards)."""

    destination: str
    method: str
    headers: Mapping[str, str]
    body: str

    def __repr__(self) -> str:
        return f"<ForwardRequest {self.method} {len(self.body)} chars>"


@dataclass(frozen=True)
class ForwardAnswer:
    """The destination's answer as the agency sees it: redacted and masked."""

    status: int
    headers: dict[str, str]
    body: str

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "headers": self.headers, "body": self.body}


@dataclass(frozen=True)
class ForwardOutcome:
    """Either the answer, or the failure that happened after the point of no return."""

    answer: ForwardAnswer | None = None
    error: ApiError | None = None


class ForwardService:
    def __init__(self, store: ForwardStore, forwarder: Forwarder) -> None:
        self.store = store
        self.forwarder = forwarder

    async def forward(self, principal: Principal, request: ForwardRequest) -> ForwardOutcome:
        agency = principal.agency
        destination = allowed_destination(request.destination, agency.destinations)
        if destination is None:
            raise Forbidden(
                "The destination is not on this agency's forward allowlist (https, exact host and port, path prefix)",
                code="destination_not_allowed",
            )
        template = _parse(request.body)
        content_type = header_value(request.headers, "Content-Type")
        escaping = escaping_for(content_type)
        charset = _charset(content_type)

        loaded = await self.store.load(agency.id, template.token_ids, template.cvc_token_ids)
        cards: dict[str, StoredCard] = {}
        for token_id in template.token_ids:
            blob = loaded.cards[token_id]
            if blob is None:
                raise _token_not_found(token_id)
            cards[token_id] = principal.keys.open_stored_card(token_id, blob)
        for token_id in template.cvc_token_ids:
            if not loaded.has_cvc[token_id]:
                raise _cvc_unavailable(token_id)
        stand_ins = dict.fromkeys(template.cvc_token_ids, STAND_IN_CVC)
        _encode(_render(template, _values(template, cards, stand_ins), escaping), charset)

        deadline = self.forwarder.deadline()
        target = await self._resolve(request.destination, destination, deadline)

        # -- the point of no return: CVCs are taken, the request goes out ------------
        taken = await self.store.take_cvcs(agency.id, template.cvc_token_ids)
        if taken.missing is not None:
            raise _cvc_unavailable(taken.missing)  # none was taken: still nothing changed
        cvcs = {t: principal.keys.open_cvc(t, blob).decode("ascii") for t, blob in taken.blobs.items()}
        try:
            body = _encode(_render(template, _values(template, cards, cvcs), escaping), charset)
        except ApiError as exc:  # pragma: no cover - the stand-in render above already passed
            return ForwardOutcome(error=exc)
        started = time.monotonic()
        try:
            answer = await self.forwarder.send(target, request.method, request.headers, body, deadline=deadline)
        except ForwardFailure as exc:
            log.warning(
                "forward failed",
                destination=destination.url_prefix,
                method=request.method,
                code=exc.code,
                reason=str(exc),
                cvcs_taken=len(cvcs),
            )
            return ForwardOutcome(error=_api_error(exc))
        log.info(
            "forwarded",
            destination=destination.url_prefix,
            method=request.method,
            status=answer.status,
            request_bytes=len(body),
            response_bytes=len(answer.body),
            tokens=len(template.token_ids),
            cvcs_taken=len(cvcs),
            elapsed_ms=round((time.monotonic() - started) * 1000, 1),
        )
        return ForwardOutcome(answer=_shape(answer, tuple(cvcs.values())))

    async def _resolve(self, url: str, destination: Destination, deadline: float) -> Target:
        try:
            return await self.forwarder.resolve(url, allow_private=destination.allow_private, deadline=deadline)
        except ForwardFailure as exc:
            log.info("forward refused", destination=destination.url_prefix, code=exc.code, reason=str(exc))
            raise _api_error(exc) from None


def _parse(body: str) -> Template:
    try:
        return parse_template(body)
    except TemplateError as exc:
        raise _template_problem(exc) from None


def _render(template: Template, values: Mapping[Reference, str | None], escaping: Escaping) -> str:
    try:
        return render(template, values, escaping)
    except TemplateError as exc:
        raise _template_problem(exc) from None


def _values(
    template: Template, cards: Mapping[str, StoredCard], cvcs: Mapping[str, str]
) -> dict[Reference, str | None]:
    values: dict[Reference, str | None] = {}
    for reference in template.references:
        card = cards[reference.token_id]
        if reference.field is CardField.NUMBER:
            values[reference] = card.number.reveal()
        elif reference.field is CardField.EXP_MONTH:
            values[reference] = str(card.exp_month)
        elif reference.field is CardField.EXP_YEAR:
            values[reference] = str(card.exp_year)
        elif reference.field is CardField.NAME:
            values[reference] = card.name
        else:
            values[reference] = cvcs[reference.token_id]
    return values


def _charset(content_type: str | None) -> str:
    """The charset the body is sent in: the Content-Type's, else UTF-8."""
    for parameter in (content_type or "").split(";")[1:]:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset":
            charset = value.strip().strip('"')
            try:
                codecs.lookup(charset)
            except LookupError:
                raise ValidationFailed(
                    errors=[FieldError("headers.Content-Type", "charset_unknown", "Unknown charset")]
                ) from None
            return charset
    return "utf-8"


def _encode(text: str, charset: str) -> bytes:
    try:
        return text.encode(charset)
    except UnicodeEncodeError:
        raise _body_problem("template_value_unsafe", f"The rendered body cannot be encoded as {charset}") from None


def _body_problem(code: str, message: str) -> ValidationFailed:
    return ValidationFailed(message, code=code, errors=[FieldError("body", code, message)])


def _template_problem(exc: TemplateError) -> ValidationFailed:
    return _body_problem(exc.code, str(exc))


def _token_not_found(token_id: str) -> ValidationFailed:
    return _body_problem(
        "template_token_not_found",
        f"The body refers to {token_id}, which is not a token of this agency (unknown, expired or deleted)",
    )


def _cvc_unavailable(token_id: str) -> ValidationFailed:
    return _body_problem(
        "cvc_unavailable",
        f"The body uses the CVC of {token_id}, which the vault no longer holds (used once, or expired)",
    )


def _api_error(exc: ForwardFailure) -> ApiError:
    detail = str(exc)[:1].upper() + str(exc)[1:]
    if isinstance(exc, DestinationNotAllowed):
        return Forbidden(detail, code=exc.code)
    if exc.code == "destination_address_forbidden":
        return Forbidden(detail, code=exc.code)
    if isinstance(exc, DestinationTimeout):
        return GatewayTimeout(detail, code=exc.code)
    return BadGateway(detail, code=exc.code)


def _shape(answer: Answer, cvcs: tuple[str, ...]) -> ForwardAnswer:
    try:
        text = answer.body.decode(answer.charset or "utf-8", errors="replace")
    except LookupError:
        text = answer.body.decode("utf-8", errors="replace")
    return ForwardAnswer(
        status=answer.status,
        headers=passed_back_headers(answer.headers, cvcs),
        body=mask_response(text, cvcs),
    )
