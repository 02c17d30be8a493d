"""The servers a browser test drives: the vault, the demo storefront on another origin, and helpers.

Each runs as a real HTTP server on 127.0.0.1 in the test's event loop (aiohttp's
TestServer), on its own port, so Chromium sees three distinct origins: the
vault, the registered storefront, and whatever unregistered origin a test adds.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer
from playwright.async_api import Page, Request

from examples.storefront.app import ORDERS, Config, make_app
from service.http.state import SERVICES
from tests.conftest import AgencyKeys


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def origin_of(server: TestServer) -> str:
    return f"http://{server.host}:{server.port}"


@dataclass
class Stack:
    vault: TestServer
    shop: TestServer
    agency: AgencyKeys

    @property
    def vault_url(self) -> str:
        return origin_of(self.vault)

    @property
    def shop_url(self) -> str:
        return origin_of(self.shop)

    def orders(self, shop: TestServer | None = None) -> dict[str, dict[str, Any]]:
        return (shop or self.shop).app[ORDERS].orders

    async def charges(self, order_reference: str) -> list[dict[str, Any]]:
        async with (
            aiohttp.ClientSession() as session,
            session.get(
                f"{self.vault_url}/v1/charges",
                params={"order_reference": order_reference},
                headers=self.agency.auth,
            ) as resp,
        ):
            assert resp.status == 200
            found: list[dict[str, Any]] = (await resp.json())["data"]
            return found

    async def storefront(self, aiohttp_server: Any, *, port: int | None = None) -> TestServer:
        """Another copy of the demo storefront, on another port: an origin the agency has not registered."""
        config = Config(
            vault_url=self.vault_url,
            publishable_key=self.agency.publishable,
            secret_key=self.agency.secret,
            public_url=self.shop_url,  # return URLs stay on the registered origin; the page itself does not
        )
        server: TestServer = await aiohttp_server(make_app(config), port=port or free_port())
        return server


async def start_stack(aiohttp_server: Any, vault_app: web.Application) -> Stack:
    vault: TestServer = await aiohttp_server(vault_app)
    agencies = vault_app[SERVICES].agencies
    assert agencies is not None
    port = free_port()
    shop_origin = f"http://127.0.0.1:{port}"
    agency, issued = await agencies.create(f"fishing-{port}", (shop_origin,))
    keys = AgencyKeys(agency.slug, agency.id, issued.publishable_key, issued.secret_key)
    config = Config(
        vault_url=origin_of(vault),
        publishable_key=keys.publishable,
        secret_key=keys.secret,
        public_url=shop_origin,
    )
    shop: TestServer = await aiohttp_server(make_app(config), port=port)
    return Stack(vault, shop, keys)


class Traffic:
    """Every request the page (and its frames) sends, and every console line, for assertions."""

    def __init__(self, page: Page) -> None:
        self.requests: list[str] = []
        self.console: list[str] = []
        page.on("request", self._request)
        page.on("console", lambda message: self.console.append(message.text))

    def _request(self, request: Request) -> None:
        self.requests.append(f"{request.method} {request.url}")

    def sent(self, fragment: str) -> list[str]:
        return [r for r in self.requests if fragment in r]
