"""Helpers for the velocity tests: apps with velocity limits on, requests from a chosen client address.

The suite's default settings turn velocity limits off (the other tests tokenize
the same test cards far more often than any shopper).  ``start_app`` builds
the app with them on, plus the given ``velocity.*`` settings, and an innermost
middleware that takes the client address from the ``X-Test-Client-Address``
header, as the proxy middleware does from a trusted proxy's forwarding headers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from service.adapters.keyring import MasterKeys
from service.app import create_app
from tests.conftest import AgencyKeys, FakeClock, make_settings
from tests.support import leaks
from tests.support.cards import CVC
from tests.support.redis_server import RedisServer

Client = TestClient[Any, Any]
StartApp = Callable[..., Awaitable[Client]]
ADDRESS_HEADER = "X-Test-Client-Address"
SHOP = "https://shop.example.gov"
DECLINED = "4000000000000002"  # the sandbox declines it (generic_decline)


@web.middleware
async def client_address_from_header(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    address = request.headers.get(ADDRESS_HEADER)
    return await handler(request.clone(remote=address) if address else request)


@pytest.fixture
def start_app(
    aiohttp_client: Any, redis_server: RedisServer, master_keys: MasterKeys, clock: FakeClock, tmp_path: Path
) -> StartApp:
    """``await start_app(tokens_per_address="2/10m", ...)``: the app with velocity limits on.

    ``redis=`` another RedisServer than the session's (the bot run's, without fsync).
    """

    async def start(*, redis: RedisServer | None = None, **velocity: Any) -> Client:
        url = (redis or redis_server).url
        settings = make_settings(url, tmp_path / "var", velocity={"enabled": True, **velocity})
        app = create_app(settings, master_keys, redis_url=url, clock=clock, tls=False)
        app.middlewares.append(client_address_from_header)
        client: Client = await aiohttp_client(app)
        return client

    return start


def public(agency: AgencyKeys, address: str) -> dict[str, str]:
    """A shopper's browser at ``address`` on the agency's storefront: publishable key and Origin."""
    return {**agency.public_auth, "Origin": SHOP, ADDRESS_HEADER: address}


def token_body(number: str) -> dict[str, Any]:
    return {"card": {"number": number, "exp_month": 12, "exp_year": 2031, "cvc": CVC}}


async def sk_token(client: Client, agency: AgencyKeys, number: str) -> str:
    response = await client.post("/v1/tokens", json=token_body(number), headers=agency.auth)
    assert response.status == 201, await response.text()
    token_id: str = (await response.json())["id"]
    return token_id


async def new_session(client: Client, agency: AgencyKeys, order: str, amount: int = 2500) -> dict[str, Any]:
    body = {
        "amount": amount,
        "order_reference": order,
        "success_url": f"{SHOP}/orders/{order}/done",
        "cancel_url": f"{SHOP}/",
    }
    response = await client.post("/v1/checkout/sessions", json=body, headers=agency.auth)
    assert response.status == 201, await response.text()
    session: dict[str, Any] = await response.json()
    return session


async def complete(client: Client, session: dict[str, Any], token: str, headers: dict[str, str]) -> Any:
    body = {"client_secret": session["client_secret"], "token": token}
    return await client.post(f"/v1/checkout/sessions/{session['id']}/complete", json=body, headers=headers)


@pytest.fixture
def unsynced_redis(tmp_path: Path, leak_sources: Any) -> Iterator[RedisServer]:
    """A Redis of the test's own that does not fsync each write (this disk takes ~5 ms per fsync).

    For the bot run's thousands of writes; durability is not what it tests.  Scanned for card data
    at the end of the test and of the session, like every Redis the suite starts.
    """
    server = RedisServer(tmp_path / "unsynced-redis", "--appendfsync", "no").start()
    leak_sources.redis_servers.append(server)
    yield server
    findings = leaks.redis_findings(server.client()) + leaks.file_findings(server.aof_files())
    server.stop()
    assert not findings, findings
