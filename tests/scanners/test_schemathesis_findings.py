"""What the schemathesis scan found, pinned as ordinary tests so each stays fixed even if the scan's seed changes.

- A checkout URL, an ``Origin`` header or the card form's ``origin`` that
  ``urllib.parse`` cannot split (``https://[``) or whose port is out of range or
  not a number raised ``ValueError`` deep in origin parsing: a 500
  ``internal_error``.  Each is now the refusal the same bad value gets anywhere
  else: 422 on the checkout URL, 403 ``origin_not_allowed`` for the origin.
- ``description: null`` on a new checkout session was accepted while the spec
  said string; the spec now says string or null (null is "no description").
- The connection-level request deadline counted the last bytes of a body that
  arrived apart from its head as the start of a new head, and so closed idle
  keep-alive connections (``tests/http/test_abuse_limits.py`` pins that one).
"""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import AgencyKeys, create_agency

Client = TestClient[Any, Any]
SHOP = "https://shop.example.gov"
UNPARSABLE = ["https://[", "https://shop.example.gov:99999/done", "https://shop.example.gov:port/done", "https://[::1"]


@pytest.fixture
async def shop(client: Client) -> AgencyKeys:
    return await create_agency(client, SHOP)


def session_body(**changes: Any) -> dict[str, Any]:
    return {
        "amount": 2500,
        "order_reference": "SCAN-1",
        "success_url": f"{SHOP}/ok",
        "cancel_url": f"{SHOP}/",
        **changes,
    }


@pytest.mark.parametrize("url", UNPARSABLE)
async def test_an_unparsable_checkout_url_is_a_422_not_a_500(client: Client, shop: AgencyKeys, url: str) -> None:
    response = await client.post("/v1/checkout/sessions", json=session_body(success_url=url), headers=shop.auth)
    assert response.status == 422, await response.text()
    problem = await response.json()
    assert [e["field"] for e in problem["errors"]] == ["success_url"]


@pytest.mark.parametrize("origin", UNPARSABLE)
async def test_an_unparsable_origin_is_refused_not_a_500(
    client: Client, shop: AgencyKeys, card_body: dict[str, Any], origin: str
) -> None:
    tokens = await client.post("/v1/tokens", json=card_body, headers={**shop.public_auth, "Origin": origin})
    assert tokens.status == 403, await tokens.text()
    assert (await tokens.json())["code"] == "origin_not_allowed"
    frame = await client.get("/elements/v1/frame", params={"key": shop.publishable, "origin": origin})
    assert frame.status == 403, await frame.text()
    assert (await frame.json())["code"] == "origin_not_allowed"


async def test_a_null_description_means_none(client: Client, shop: AgencyKeys) -> None:
    response = await client.post("/v1/checkout/sessions", json=session_body(description=None), headers=shop.auth)
    assert response.status == 201, await response.text()
    assert (await response.json())["description"] is None
