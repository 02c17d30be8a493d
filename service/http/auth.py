"""API-key authentication for the REST API: who is calling, and may they do this."""

from __future__ import annotations

from aiohttp import web

from service.agencies import Principal
from service.errors import Forbidden, StoreUnavailable, Unauthenticated
from service.http.api_audit import record_refused_key
from service.http.frame_proof import vouched_by_frame
from service.http.state import services


def bearer_key(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        raise Unauthenticated("Send your API key as 'Authorization: Bearer <key>'", code="missing_api_key")
    return credentials.strip()


async def authenticate(request: web.Request, *, publishable_ok: bool = False) -> Principal:
    """The calling agency; publishable keys only where allowed and only from its origins."""
    svc = services(request)
    if svc.agencies is None or not svc.ready:
        raise StoreUnavailable("the service is not ready yet")
    try:
        key = bearer_key(request)
    except Unauthenticated as exc:
        await record_refused_key(request, exc.code)  # sampled: anyone can send these (api_audit)
        raise
    principal = await svc.agencies.authenticate(key)
    if principal is None:
        await record_refused_key(request, "invalid_api_key")
        raise Unauthenticated("The API key is not valid", code="invalid_api_key")
    if not principal.secret:
        if not publishable_ok:
            await record_refused_key(request, "secret_key_required", principal)
            raise Forbidden(
                "A publishable key may only create tokens and pay checkout sessions; use the secret key",
                code="secret_key_required",
            )
        origin = request.headers.get("Origin")
        if (
            origin is not None
            and not principal.agency.allows_origin(origin)
            and not vouched_by_frame(request, principal, origin)  # the vault's own card form (frame_proof.py)
        ):
            await record_refused_key(request, "origin_not_allowed", principal)
            raise Forbidden("This origin is not registered for the publishable key", code="origin_not_allowed")
    return principal
