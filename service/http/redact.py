"""POST /v1/redact: free-text redaction's HTTP face (secret key only).

Transcripts and mail exports are bigger than anything else the API takes, so
this route has its own body limit (``redaction.max_body_bytes``, default 1 MiB,
instead of ``server.max_body_bytes``), enforced before the body is read past it
and answered with a 413 that names the limit.  Only the secret key may call
it: the text holds whatever customers typed, and tokenize mode writes tokens.
The work itself is ``service.redact``; with an Idempotency-Key the answer (the
redacted text, never a card number or SSN) is kept 24 hours for replays like
any other POST, and without one nothing of the text is stored.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from marshmallow import RAISE, Schema, fields, validate

from service.errors import PayloadTooLarge
from service.http.auth import authenticate
from service.http.body import load, read_json
from service.http.state import services
from service.idempotency import idempotency_key, run_once
from service.redact import Redaction, RedactionMode, TextRedactor


class RedactRequestSchema(Schema):
    class Meta:
        unknown = RAISE

    text = fields.String(required=True)
    mode = fields.String(load_default=RedactionMode.MASK.value, validate=validate.OneOf(list(RedactionMode)))


REDACT_REQUEST_SCHEMA = RedactRequestSchema()


async def redact_text(request: web.Request) -> web.StreamResponse:
    principal = await authenticate(request)
    svc = services(request)
    limits = svc.settings.redaction
    sized = request.clone(client_max_size=limits.max_body_bytes)
    idempotency_key(sized)  # a malformed key is refused before the body is read
    await _read_within(sized, limits.max_body_bytes)
    redactor = TextRedactor(svc.vault, limits, svc.settings.tokens, svc.clock)

    async def produce() -> web.StreamResponse:
        data = load(REDACT_REQUEST_SCHEMA, await read_json(sized))
        if data["mode"] == RedactionMode.TOKENIZE:
            result = await redactor.tokenize(principal, data["text"])
        else:
            result = await redactor.mask(data["text"])
        return web.json_response(redaction_json(result))

    store = svc.idempotency
    assert store is not None  # authenticate() has refused while the service is not ready
    return await run_once(sized, store, principal.agency.id, produce)


async def _read_within(request: web.Request, limit: int) -> None:
    """Read the body, refusing it (413, naming the limit) as soon as it is known to be larger."""
    too_large = PayloadTooLarge(
        f"The body may be at most {limit} bytes (redaction.max_body_bytes); "
        "split the text into several requests, or redact files with `cardvault redact`"
    )
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    try:
        await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise too_large from None


def redaction_json(result: Redaction) -> dict[str, Any]:
    counts = {"card": 0, "ssn": 0}
    findings = []
    for redacted in result.findings:
        finding = redacted.finding
        counts[finding.kind] += 1
        findings.append(
            {
                "kind": str(finding.kind),
                "start": finding.start,
                "end": finding.end,
                "replacement": redacted.replacement,
                "brand": None if finding.brand is None else str(finding.brand),
                "last4": finding.last4,
                "token": redacted.token,
            }
        )
    return {
        "object": "redaction",
        "mode": str(result.mode),
        "text": result.text,
        "findings": findings,
        "counts": counts,
        "tokens_created": result.tokens_created,
    }
