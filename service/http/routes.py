"""The route table: every URL the service answers, in one flat list."""

from __future__ import annotations

from aiohttp import web

from service.http import health, tokens


def add_routes(app: web.Application) -> None:
    app.router.add_routes(
        [
            web.get("/healthz", health.healthz, allow_head=True),
            web.get("/readyz", health.readyz, allow_head=True),
            web.post("/v1/tokens", tokens.create_token),
            web.get("/v1/tokens", tokens.list_tokens, allow_head=False),
            web.get("/v1/tokens/{token_id}", tokens.get_token, allow_head=False),
            web.delete("/v1/tokens/{token_id}", tokens.delete_token),
        ]
    )
