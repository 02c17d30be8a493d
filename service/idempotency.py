"""Idempotency-Key: a state-changing POST runs once, and a retry gets the first answer.

The first request with a key claims it in Redis (``SET NX``) before doing
anything, as *in flight*; when it has an answer, the answer (status,
content type, Location, body bytes) replaces the claim for 24 hours.  Later
requests with the same key and agency:

- same method, path and body (compared as canonical JSON): the stored answer,
  byte for byte, with ``Idempotent-Replayed: true``;
- a different body: 422 ``idempotency_key_reused``;
- while the first is still in flight: 409 ``idempotency_request_in_progress``.

A request that fails before it changed anything (validation, authentication,
Redis unavailable: it raised) releases its claim so the client can retry with
the same key.  A handler that has changed something (a charge was sent to the
processor, even if the answer was a timeout) returns its answer instead of
raising, and that answer is what every retry gets: a retry never charges
twice.  A claim left by a crashed process expires after ``IN_FLIGHT_SECONDS``.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from service.adapters.idempotency_store import IdempotencyStore
from service.errors import Conflict, MalformedRequest, ValidationFailed

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255
KEEP_SECONDS = 24 * 3600
IN_FLIGHT_SECONDS = 120
REPLAYED_HEADERS = ("Location", "Retry-After")


@dataclass(frozen=True)
class StoredAnswer:
    status: int
    content_type: str
    body: bytes
    headers: dict[str, str]

    def to_json(self, fingerprint: str) -> str:
        return json.dumps(
            {
                "state": "done",
                "fingerprint": fingerprint,
                "status": self.status,
                "content_type": self.content_type,
                "headers": self.headers,
                "body": base64.b64encode(self.body).decode(),
            }
        )

    def response(self) -> web.Response:
        response = web.Response(status=self.status, body=self.body, headers=self.headers)
        response.content_type = self.content_type
        response.headers["Idempotent-Replayed"] = "true"
        return response


def idempotency_key(request: web.Request) -> str | None:
    key = request.headers.get(HEADER)
    if key is None:
        return None
    if not 1 <= len(key) <= MAX_KEY_LENGTH or not key.isascii() or not key.isprintable():
        raise MalformedRequest(
            f"{HEADER} must be 1 to {MAX_KEY_LENGTH} printable ASCII characters", code="idempotency_key_invalid"
        )
    return key


def request_fingerprint(request: web.Request, body: bytes) -> str:
    """What must match for a retry: method, path and the body as canonical JSON (raw bytes if not JSON)."""
    try:
        canonical = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode()
    except ValueError:
        canonical = body
    digest = hashlib.sha256()
    for part in (request.method.encode(), request.path.encode(), canonical):
        digest.update(len(part).to_bytes(8, "big") + part)
    return digest.hexdigest()


def _key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


async def run_once(
    request: web.Request,
    store: IdempotencyStore,
    agency_id: str,
    produce: Callable[[], Awaitable[web.StreamResponse]],
) -> web.StreamResponse:
    """Run ``produce`` at most once per (agency, Idempotency-Key)."""
    key = idempotency_key(request)
    if key is None:
        return await produce()
    body = await request.read()
    fingerprint = request_fingerprint(request, body)
    key_hash = _key_hash(key)
    claimed, existing = await store.claim(
        agency_id, key_hash, json.dumps({"state": "in_flight", "fingerprint": fingerprint}), IN_FLIGHT_SECONDS
    )
    if not claimed:
        return _answer_existing(existing, fingerprint)
    try:
        response = await produce()
    except BaseException:
        await store.release(agency_id, key_hash)
        raise
    if not isinstance(response, web.Response) or response.body is None:
        await store.release(agency_id, key_hash)
        return response
    answer = StoredAnswer(
        status=response.status,
        content_type=response.content_type,
        body=_body_bytes(response),
        headers={h: response.headers[h] for h in REPLAYED_HEADERS if h in response.headers},
    )
    await store.complete(agency_id, key_hash, answer.to_json(fingerprint), KEEP_SECONDS)
    return response


def _body_bytes(response: web.Response) -> bytes:
    body = response.body
    if isinstance(body, bytes | bytearray):
        return bytes(body)
    raise TypeError("idempotent handlers must answer with an in-memory body")


def _answer_existing(existing: str | None, fingerprint: str) -> web.StreamResponse:
    if existing is None:  # expired between our SET NX and GET: treat as in flight, the client retries
        raise Conflict("A request with this Idempotency-Key is in progress", code="idempotency_request_in_progress")
    record = json.loads(existing)
    if record["fingerprint"] != fingerprint:
        raise ValidationFailed("This Idempotency-Key was used with a different request", code="idempotency_key_reused")
    if record["state"] != "done":
        raise Conflict("A request with this Idempotency-Key is in progress", code="idempotency_request_in_progress")
    return StoredAnswer(
        status=record["status"],
        content_type=record["content_type"],
        body=base64.b64decode(record["body"]),
        headers=record["headers"],
    ).response()
