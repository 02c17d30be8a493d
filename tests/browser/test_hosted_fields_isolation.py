"""What the storefront page (and anyone else) can and cannot get out of the hosted card fields, in Chromium.

A harness page at the registered storefront origin mounts the fields with the
drop-in script and records every message it receives; an "evil" page on a
third origin, framed beside the card form, forges messages both ways.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from playwright.async_api import Browser, Page

from service.adapters.keyring import MasterKeys
from service.app import create_app
from service.domain.cards import BRAND_RULES, detect_brand
from service.http.state import SERVICES
from service.settings import Settings
from tests.browser.stack import Stack, Traffic, origin_of, start_stack
from tests.conftest import FakeClock
from tests.support.cards import (
    AMEX,
    CVC,
    DINERS,
    DINERS_14,
    DISCOVER,
    JCB,
    MAESTRO,
    MASTERCARD,
    MASTERCARD_2_SERIES,
    UNIONPAY,
    VISA,
)

ALLOWED_MESSAGE_FIELDS = {
    "ready": {"source", "v", "type"},
    "resize": {"source", "v", "type", "height"},
    "change": {"source", "v", "type", "brand", "complete"},
    "submit": {"source", "v", "type"},
    "result": {"source", "v", "type", "id", "ok", "token", "session", "error"},
}
TOKEN_FIELDS = {"id", "brand", "last4", "exp_month", "exp_year"}

EVIL_PAGE = """<!doctype html><html><body><script>
var card = window.parent.frames[0];
var forged = {source: "cardvault", v: 1, type: "tokenize", id: 7};
var fake = {source: "cardvault", v: 1, type: "result", id: 1, ok: true, token: {id: "tok_forged"}};
var sent = 0;
var timer = setInterval(function () {
  card.postMessage(forged, "*");
  window.parent.postMessage(fake, "*");
  if (++sent >= 20) clearInterval(timer);
}, 25);
</script></body></html>"""


def harness(vault: str, publishable_key: str) -> str:
    return f"""<!doctype html><html><body><div id="card"></div><div id="evil"></div>
<script src="{vault}/elements/v1/cardvault.js"></script>
<script>
window.messages = [];
window.addEventListener("message", function (e) {{
  window.messages.push({{origin: e.origin, data: JSON.parse(JSON.stringify(e.data))}});
}});
window.fields = CardVault.mount("#card", {{publishableKey: "{publishable_key}"}});
window.fieldsReady = new Promise(function (resolve) {{ window.fields.on("ready", resolve); }});
</script></body></html>"""


@pytest.fixture
async def stack(aiohttp_server: Any, settings: Settings, master_keys: MasterKeys, clock: FakeClock) -> Stack:
    app = create_app(settings, master_keys, redis_url=settings.redis.url or "", clock=clock, tls=False)
    return await start_stack(aiohttp_server, app)


@pytest.fixture
async def harness_url(stack: Stack, aiohttp_server: Any) -> str:
    """A real server (Chromium refuses loopback scripts to pages it did not fetch) on another registered origin."""
    app = web.Application()
    html = harness(stack.vault_url, stack.agency.publishable)

    async def serve(_: web.Request) -> web.Response:
        return web.Response(text=html, content_type="text/html")

    app.router.add_get("/", serve)
    server = await aiohttp_server(app)
    agencies = stack.vault.app[SERVICES].agencies
    assert agencies is not None
    await agencies.set_origins(stack.agency.slug, [stack.shop_url, origin_of(server)])
    return origin_of(server)


@pytest.fixture
async def page(browser: Browser, harness_url: str) -> AsyncIterator[Page]:
    """A page at a registered origin with the fields mounted and ready."""
    context = await browser.new_context()
    context.set_default_timeout(15_000)
    opened = await context.new_page()
    await opened.goto(harness_url + "/")
    await opened.wait_for_function("window.fieldsReady !== undefined")
    await opened.evaluate("window.fieldsReady")
    yield opened
    await context.close()


async def type_card(page: Page, number: str = VISA) -> None:
    frame = page.frame_locator("#card iframe")
    await frame.locator("#cv-number").press_sequentially(number)
    await frame.locator("#cv-expiry").press_sequentially("1231")
    await frame.locator("#cv-cvc").press_sequentially(CVC)


async def create_session(stack: Stack, order: str, amount: int) -> dict[str, Any]:
    body = {
        "amount": amount,
        "order_reference": order,
        "success_url": f"{stack.shop_url}/done",
        "cancel_url": f"{stack.shop_url}/",
    }
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{stack.vault_url}/v1/checkout/sessions", json=body, headers=stack.agency.auth) as resp,
    ):
        assert resp.status == 201
        created: dict[str, Any] = await resp.json()
        return created


class TestNothingLeaksToThePage:
    async def test_the_page_cannot_reach_into_the_frame(self, page: Page) -> None:
        """The storefront's own script gets no document of the frame: cross-origin access throws."""
        await type_card(page)
        probe = await page.evaluate(
            """() => {
              const frame = document.querySelector('#card iframe');
              const out = {contentDocument: frame.contentDocument};
              try { out.document = String(frame.contentWindow.document); } catch (e) { out.document = e.name; }
              try { out.input = frame.contentWindow.document.getElementById('cv-number').value; }
              catch (e) { out.input = e.name; }
              return out;
            }"""
        )
        assert probe == {"contentDocument": None, "document": "SecurityError", "input": "SecurityError"}

    async def test_only_the_allowed_fields_arrive(self, page: Page, stack: Stack) -> None:
        """tokenize() gives id, brand, last four and expiry; every message holds only its allowed fields."""
        await type_card(page)
        token = await page.evaluate("window.fields.tokenize()")
        assert set(token) == TOKEN_FIELDS
        assert (token["brand"], token["last4"], token["exp_month"], token["exp_year"]) == ("visa", "4242", 12, 2031)
        messages = await page.evaluate("window.messages")
        assert messages
        for message in messages:
            assert message["origin"] == stack.vault_url
            data = message["data"]
            assert set(data) <= ALLOWED_MESSAGE_FIELDS[data["type"]], data
            if data.get("token"):
                assert set(data["token"]) == TOKEN_FIELDS
        text = json.dumps(messages)
        assert VISA not in text
        assert "4242 4242" not in text
        assert f'"{CVC}"' not in text

    async def test_the_brand_shown_matches_the_vaults_rules(self, page: Page) -> None:
        """For one card of each brand the frame shows the brand Python's detect_brand finds."""
        number = page.frame_locator("#card iframe").locator("#cv-number")
        brand = page.frame_locator("#card iframe").locator("#cv-brand")
        for card in (VISA, MASTERCARD, MASTERCARD_2_SERIES, AMEX, DISCOVER, DINERS, DINERS_14, JCB, UNIONPAY, MAESTRO):
            detected = detect_brand(card)
            assert detected is not None
            await number.fill(card)
            assert await brand.text_content() == BRAND_RULES[detected].display_name, card


class TestForgery:
    async def test_forged_messages_from_another_origin_are_refused(
        self, page: Page, stack: Stack, aiohttp_server: Any
    ) -> None:
        """A third-origin frame cannot make the card form tokenize, nor feed the page a fake token."""
        evil_app = web.Application()

        async def evil(_: web.Request) -> web.Response:
            return web.Response(text=EVIL_PAGE, content_type="text/html")

        evil_app.router.add_get("/", evil)
        evil_server = await aiohttp_server(evil_app)
        evil_origin = origin_of(evil_server)
        traffic = Traffic(page)
        await type_card(page)
        pending = page.evaluate("window.fields.tokenize().then(t => t.id)")
        await page.evaluate(
            f"""() => {{ const f = document.createElement('iframe'); f.src = '{evil_origin}/';
                 document.getElementById('evil').appendChild(f); }}"""
        )
        await asyncio.sleep(1.0)
        token_id = await pending
        assert token_id.startswith("tok_")
        assert token_id != "tok_forged"
        assert len(traffic.sent("POST " + stack.vault_url + "/v1/tokens")) == 1  # only the page's own tokenize
        assert any(f"cardvault: refused a message from {evil_origin}" in line for line in traffic.console)
        assert any(f"cardvault: ignored a message from {evil_origin}" in line for line in traffic.console)

    async def test_an_amount_slipped_into_the_pay_message_is_ignored(self, page: Page, stack: Stack) -> None:
        """The page can add an amount to the frame's pay message; the session's backend amount is charged."""
        session = await create_session(stack, "FL-TAMPER", 2500)
        await type_card(page)
        await page.evaluate(
            """([vault, secret]) => new Promise((resolve) => {
                 window.addEventListener('message', (e) => {
                   if (e.data && e.data.type === 'result' && e.data.id === 99) resolve(e.data);
                 });
                 document.querySelector('#card iframe').contentWindow.postMessage(
                   {source: 'cardvault', v: 1, type: 'pay', id: 99, clientSecret: secret, amount: 1}, vault);
               })""",
            [stack.vault_url, session["client_secret"]],
        )
        [charge] = await stack.charges("FL-TAMPER")
        assert (charge["amount"], charge["status"]) == (2500, "succeeded")
