"""First end-to-end checks of the tokens API against a real Redis."""

from typing import Any

from tests.conftest import AgencyKeys


class TestCreate:
    async def test_create_returns_token_without_number(
        self, client: Any, agency: AgencyKeys, card_body: dict[str, Any]
    ) -> None:
        """Creating a token answers 201 with brand, last four and first six only."""
        resp = await client.post("/v1/tokens", json=card_body, headers=agency.auth)
        assert resp.status == 201, await resp.text()
        body = await resp.json()
        assert body["card"]["last4"] == "4242"
        assert "4242424242424242" not in await resp.text()
