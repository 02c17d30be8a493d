"""The route table: every URL the service answers, in one flat list."""

from __future__ import annotations

from aiohttp import web

from service.http import charges, checkout, elements, forward, health, redact, tokens
from service.http.staff import add_staff_app


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
            web.post("/v1/redact", redact.redact_text),
            web.post("/v1/checkout/sessions", checkout.create_session),
            web.get("/v1/checkout/sessions/{session_id}", checkout.get_session, allow_head=False),
            web.post("/v1/checkout/sessions/{session_id}/complete", checkout.complete_session),
            web.get("/elements/v1/frame", elements.frame, allow_head=False),
            web.get("/elements/v1/cardvault.js", elements.cardvault_js, allow_head=False),
            web.get("/elements/v1/cardvault.js.sri", elements.cardvault_js_sri, allow_head=False),
            web.get("/elements/v1/frame.js", elements.frame_js, allow_head=False),
            web.get("/elements/v1/brands.js", elements.brands_js, allow_head=False),
            web.get("/elements/v1/frame.css", elements.frame_css, allow_head=False),
        ]
    )
    add_staff_app(app)  # /staff/...: the virtual terminal's HTML pages (not API operations)
