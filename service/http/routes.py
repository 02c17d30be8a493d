"""The route table: every URL the service answers, in one flat list."""

from __future__ import annotations

from aiohttp import web

from service.http import charges, forward, health, tokens


def add_routes(app: web.Application) -> None:
    app.router.add_routes(
        [
            web.get("/healthz", health.healthz, allow_head=True),
            web.get("/readyz", health.readyz, allow_head=True),
            web.post("/v1/tokens", tokens.create_token),
            web.get("/v1/tokens", tokens.list_tokens, allow_head=False),
            web.get("/v1/tokens/{token_id}", tokens.get_token, allow_head=False),
            web.delete("/v1/tokens/{token_id}", tokens.delete_token),
            web.post("/v1/charges", charges.create_charge),
            web.get("/v1/charges", charges.list_charges, allow_head=False),
            web.get("/v1/charges/{charge_id}", charges.get_charge, allow_head=False),
            web.post("/v1/charges/{charge_id}/capture", charges.capture_charge),
            web.post("/v1/charges/{charge_id}/void", charges.void_charge),
            web.post("/v1/charges/{charge_id}/refunds", charges.refund_charge),
            web.post("/v1/forward", forward.forward_request),
        ]
    )
