"""Helpers for the checkout-session and hosted-fields tests: sessions, tokens, charges of an order."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from tests.conftest import AgencyKeys
from tests.support.cards import CVC, VISA

Client = TestClient[Any, Any]
SHOP = "https://shop.example.gov"
DECLINED_CARD = "4000000000000002"
SLOW_CARD = "4012888888881881"


def session_body(order: str = "FL-2026-0042", amount: int = 2500, **changes: Any) -> dict[str, Any]:
    return {
        "amount": amount,
        "currency": "usd",
        "order_reference": order,
        "description": "Annual fishing licence",
        "success_url": f"{SHOP}/orders/{order}/done",
        "cancel_url": f"{SHOP}/",
        **changes,
    }


async def create_session(client: Client, agency: AgencyKeys, **changes: Any) -> dict[str, Any]:
    resp = await client.post("/v1/checkout/sessions", json=session_body(**changes), headers=agency.auth)
    assert resp.status == 201, await resp.text()
    created: dict[str, Any] = await resp.json()
    return created


async def token_for(client: Client, agency: AgencyKeys, number: str = VISA) -> str:
    body = {"card": {"number": number, "exp_month": 12, "exp_year": 2031, "cvc": CVC}}
    resp = await client.post("/v1/tokens", json=body, headers=agency.public_auth)
    assert resp.status == 201, await resp.text()
    token_id: str = (await resp.json())["id"]
    return token_id


async def complete(
    client: Client,
    agency: AgencyKeys,
    session: dict[str, Any],
    token: str,
    *,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Any:
    body = {"client_secret": session["client_secret"], "token": token, **extra}
    return await client.post(
        f"/v1/checkout/sessions/{session['id']}/complete", json=body, headers={**agency.public_auth, **(headers or {})}
    )


async def charges_of(client: Client, agency: AgencyKeys, order: str) -> list[dict[str, Any]]:
    resp = await client.get("/v1/charges", params={"order_reference": order}, headers=agency.auth)
    assert resp.status == 200, await resp.text()
    found: list[dict[str, Any]] = (await resp.json())["data"]
    return found
