"""The tokens API: POST, GET, DELETE /v1/tokens and listing by fingerprint."""

from __future__ import annotations

from typing import NoReturn

from aiohttp import web

from service.agencies import Principal
from service.domain.audit import Action, Outcome
from service.errors import Forbidden
from service.http.api_audit import record_api, record_refused_key, refusals_recorded
from service.http.auth import authenticate
from service.http.body import load, read_json
from service.http.schemas import TokenListQuerySchema, token_json, tokenize_request
from service.http.state import services
from service.http.token_body import load_token_create
from service.http.velocity import subject_of
from service.idempotency import run_once
from service.vault import Vault, utc_now

# Schemas are built once: constructing one deep-copies its fields, a fifth of a request's CPU.
# (The create body's schema lives in token_body, behind its fast path.)
TOKEN_LIST_QUERY_SCHEMA = TokenListQuerySchema()


def _vault(request: web.Request) -> Vault:
    vault = services(request).vault
    assert vault is not None  # authenticate() has already refused when not ready
    return vault


async def create_token(request: web.Request) -> web.StreamResponse:
    principal = await authenticate(request, publishable_ok=True)

    async def produce() -> web.StreamResponse:
        data = load_token_create(await read_json(request))
        if data["deduplicate"] and not principal.secret:
            await refuse_deduplicate(request, principal)
        today = utc_now(services(request).clock).date()
        result = await _vault(request).tokenize(
            principal, tokenize_request(data, today=today), subject_of(request, principal)
        )
        response = web.json_response(token_json(result.token), status=201 if result.created else 200)
        if result.created:
            response.headers["Location"] = f"/v1/tokens/{result.token.id}"
        return response

    store = services(request).idempotency
    assert store is not None
    return await run_once(request, store, principal.agency.id, produce)


async def refuse_deduplicate(request: web.Request, principal: Principal) -> NoReturn:
    """``deduplicate`` answers with the token already on file for a card: with a publishable key, which
    anyone can read off the storefront's page, it would say whether a card is on file, show that token's
    metadata and replace its CVC.  So only the secret key may ask for it."""
    await record_refused_key(request, "secret_key_required", principal)
    raise Forbidden(
        "deduplicate returns the token already on file for a card; only the secret key may ask for it",
        code="secret_key_required",
    )


async def get_token(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    view = await _vault(request).get(principal, request.match_info["token_id"])
    return web.json_response(token_json(view))


async def delete_token(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    token_id = request.match_info["token_id"]
    async with refusals_recorded(request, principal, Action.TOKEN_DELETE, token_id):
        await _vault(request).delete(principal, token_id)
    await record_api(request, principal, Action.TOKEN_DELETE, Outcome.SUCCESS, token_id)
    return web.Response(status=204)


async def list_tokens(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    query = load(TOKEN_LIST_QUERY_SCHEMA, dict(request.query))
    views, has_more = await _vault(request).by_fingerprint(principal, query["fingerprint"])
    return web.json_response({"object": "list", "data": [token_json(v) for v in views], "has_more": has_more})
