"""Real 429 answers of the velocity limits conform to openapi.yaml (RateLimited, with its Retry-After).

Each operation a velocity limit guards is driven past a small limit; set-up
requests go through the plain client, the refused ones through the contract.
``TestCoverageDeclarations`` in ``test_openapi.py`` counts these ``@covers``
declarations with the other modules'.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import create_agency
from tests.http.velocity_fixtures import StartApp, complete, new_session, public, sk_token, start_app, token_body
from tests.support.cards import MASTERCARD, VISA
from tests.support.openapi_check import Contract, covers


@pytest.fixture
def expected(request: pytest.FixtureRequest) -> Any:
    return getattr(request.function, "contract_covers", None)


class TestRateLimitedConformance:
    @covers(
        ("createToken", 429),
        ("createCharge", 429),
        ("completeCheckoutSession", 429),
        codes=["rate_limited"],
    )
    async def test_refusals_of_every_guarded_operation_conform(self, start_app: StartApp, expected: Any) -> None:
        client = await start_app(tokens_per_address="1/1h", charges_per_card="1/1h", charges_per_address="1/1h")
        contract = Contract(client, expected=expected)
        agency = await create_agency(client)
        shopper = public(agency, "203.0.113.80")

        assert (await client.post("/v1/tokens", json=token_body(VISA), headers=shopper)).status == 201
        refused = await contract.call("POST", "/v1/tokens", status=429, json=token_body(MASTERCARD), headers=shopper)
        assert refused.headers["Retry-After"] == "60"

        first, second = await sk_token(client, agency, VISA), await sk_token(client, agency, VISA)
        charged = await client.post("/v1/charges", json={"token": first, "amount": 500}, headers=agency.auth)
        assert charged.status == 201
        refused = await contract.call(
            "POST",
            "/v1/charges",
            status=429,
            json={"token": second, "amount": 500},
            headers={**agency.auth, "Idempotency-Key": "velocity-conformance"},
        )
        assert refused.headers["Retry-After"] == "60"

        buyer = public(agency, "203.0.113.81")
        paid = await new_session(client, agency, "FL-A")
        token = await (await client.post("/v1/tokens", json=token_body(MASTERCARD), headers=buyer)).json()
        assert (await complete(client, paid, token["id"], buyer)).status == 200
        session = await new_session(client, agency, "FL-B")
        other_address = public(agency, "203.0.113.82")
        token = await (await client.post("/v1/tokens", json=token_body(VISA), headers=other_address)).json()
        refused = await contract.call(
            "POST",
            f"/v1/checkout/sessions/{session['id']}/complete",
            status=429,
            json={"client_secret": session["client_secret"], "token": token["id"]},
            headers=buyer,
        )
        assert refused.json()["code"] == "rate_limited"
        contract.assert_covered()


__all__ = ["start_app"]  # the fixture, imported for pytest
