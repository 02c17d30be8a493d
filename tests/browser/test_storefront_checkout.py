"""The demo storefront paying through the hosted card fields, in real headless Chromium.

The vault and the storefront run as real HTTP servers on two origins; the
shopper types into the vault's iframe exactly as a person would.  Screenshots
of the form and of each outcome go to the ``screenshots`` directory.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, FrameLocator, Page, Route, expect

from service.adapters.keyring import MasterKeys
from service.app import create_app
from service.settings import Settings
from tests.browser.stack import Stack, Traffic, start_stack
from tests.conftest import FakeClock
from tests.support.cards import AMEX, CVC, VISA

DECLINED_CARD = "4000000000000002"
LUHN_FAILING = VISA[:-1] + str((int(VISA[-1]) + 1) % 10)
TIMEOUT_MS = 15_000


@pytest.fixture
async def stack(aiohttp_server: Any, settings: Settings, master_keys: MasterKeys, clock: FakeClock) -> Stack:
    app = create_app(settings, master_keys, redis_url=settings.redis.url or "", clock=clock, tls=False)
    return await start_stack(aiohttp_server, app)


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport={"width": 900, "height": 760})
    context.set_default_timeout(TIMEOUT_MS)
    opened = await context.new_page()
    yield opened
    await context.close()


def card_frame(page: Page) -> FrameLocator:
    return page.frame_locator("#card-fields iframe")


async def open_checkout(page: Page, stack: Stack, item: str = "annual-resident", shop_url: str | None = None) -> str:
    """Buy ``item`` from the catalog; the storefront redirects to its checkout page. Returns the order id."""
    await page.goto((shop_url or stack.shop_url) + "/")
    await page.locator(f"form:has(input[value='{item}']) button").click()
    await page.wait_for_url(re.compile(r"/orders/FL-[0-9A-F]+$"))
    return page.url.rsplit("/", 1)[1]


async def type_card(page: Page, number: str = VISA, expiry: str = "1231", cvc: str = CVC) -> None:
    frame = card_frame(page)
    await frame.locator("#cv-number").press_sequentially(number)
    await frame.locator("#cv-expiry").press_sequentially(expiry)
    await frame.locator("#cv-cvc").press_sequentially(cvc)


class TestPaying:
    async def test_an_approved_card_pays_the_order_once(self, page: Page, stack: Stack, screenshots: Path) -> None:
        """Typing a card shows its brand and groups its digits; paying lands on the receipt with one charge."""
        traffic = Traffic(page)
        order = await open_checkout(page, stack)
        frame = card_frame(page)
        await frame.locator("#cv-number").press_sequentially(VISA[:1])
        await expect(frame.locator("#cv-brand")).to_have_text("Visa")
        await frame.locator("#cv-number").press_sequentially(VISA[1:])
        await expect(frame.locator("#cv-number")).to_have_value("4242 4242 4242 4242")
        await frame.locator("#cv-expiry").press_sequentially("1231")
        await expect(frame.locator("#cv-expiry")).to_have_value("12 / 31")
        await frame.locator("#cv-cvc").press_sequentially(CVC)
        await expect(page.locator("#card-brand")).to_have_text("Card: visa")
        await page.screenshot(path=screenshots / "checkout-form.png", full_page=True)
        await page.locator("#pay-button").click()
        await page.wait_for_url(re.compile(rf"/orders/{order}/done$"))
        await expect(page.locator("#result")).to_have_text("Payment received")
        await expect(page.locator("main")).to_contain_text("Visa ending 4242")
        await page.screenshot(path=screenshots / "checkout-paid.png", full_page=True)
        [charge] = await stack.charges(order)
        assert (charge["status"], charge["amount"]) == ("succeeded", 2500)
        assert stack.orders()[order]["charge_id"] == charge["id"]
        assert VISA not in json.dumps(stack.orders())  # the storefront keeps ids and a receipt, never the card
        assert len(traffic.sent("POST " + stack.vault_url + "/v1/tokens")) == 1
        assert not [line for line in traffic.console if "cardvault" in line]

    async def test_a_declined_card_shows_why_and_charges_nothing(
        self, page: Page, stack: Stack, screenshots: Path
    ) -> None:
        """A declined card leaves the shopper on the checkout with the reason, and the order unpaid."""
        order = await open_checkout(page, stack)
        await type_card(page, DECLINED_CARD)
        await page.locator("#pay-button").click()
        await expect(page.locator("#pay-status")).to_have_class(re.compile("error"))
        await expect(page.locator("#pay-status")).to_contain_text("declined")
        await expect(page.locator("#pay-button")).to_be_enabled()
        await page.screenshot(path=screenshots / "checkout-declined.png", full_page=True)
        assert [c["status"] for c in await stack.charges(order)] == ["declined"]
        assert stack.orders()[order]["charge_id"] is None

    async def test_a_bad_number_is_caught_in_the_frame_without_a_request(
        self, page: Page, stack: Stack, screenshots: Path
    ) -> None:
        """A number failing Luhn, a past expiry and a short CVC show inline errors, and nothing is sent."""
        traffic = Traffic(page)
        await open_checkout(page, stack)
        await type_card(page, LUHN_FAILING, expiry="0120", cvc="12")
        await page.locator("#pay-button").click()
        frame = card_frame(page)
        await expect(frame.locator("#cv-number-error")).to_have_text("The card number is not valid; check for typos.")
        await expect(frame.locator("#cv-number")).to_have_attribute("aria-invalid", "true")
        await expect(frame.locator("#cv-expiry-error")).to_have_text("The card has expired.")
        await expect(frame.locator("#cv-cvc-error")).to_have_text("The security code has 3 digits.")
        await expect(frame.locator("#cv-number")).to_be_focused()
        await expect(page.locator("#pay-status")).to_have_text("Check the card details.")
        await page.screenshot(path=screenshots / "checkout-invalid.png", full_page=True)
        assert traffic.sent("/v1/tokens") == []
        assert traffic.sent("/complete") == []

    async def test_american_express_is_grouped_and_asks_four_digits(self, page: Page, stack: Stack) -> None:
        """An Amex number groups 4-6-5 and its CVC must have four digits."""
        await open_checkout(page, stack)
        frame = card_frame(page)
        await type_card(page, AMEX, cvc="737")
        await expect(frame.locator("#cv-number")).to_have_value("3782 822463 10005")
        await expect(frame.locator("#cv-brand")).to_have_text("American Express")
        await page.locator("#pay-button").click()
        await expect(frame.locator("#cv-cvc-error")).to_have_text("The security code has 4 digits.")


class TestOrigins:
    async def test_an_unregistered_origin_gets_no_card_form(
        self, page: Page, stack: Stack, aiohttp_server: Any, screenshots: Path
    ) -> None:
        """The storefront served from an origin the agency has not registered: refused, explained, no token."""
        traffic = Traffic(page)
        elsewhere = await stack.storefront(aiohttp_server)
        await open_checkout(page, stack, shop_url=f"http://127.0.0.1:{elsewhere.port}")
        await expect(page.locator("#pay-status")).to_have_text(
            "The card form could not be loaded here. No payment can be taken."
        )
        await expect(page.locator("#pay-button")).to_be_disabled()
        assert any("cardvault: the card form refused to load on this page" in line for line in traffic.console)
        assert await card_frame(page).locator("#cv-number").count() == 0
        await page.screenshot(path=screenshots / "checkout-unregistered-origin.png", full_page=True)
        assert traffic.sent("/v1/tokens") == []


class TestConnectionLoss:
    async def test_a_payment_cut_off_mid_way_resumes_without_a_second_charge(
        self, page: Page, stack: Stack, screenshots: Path
    ) -> None:
        """The answer to the payment is lost after the vault charged; reloading shows it paid, charged once."""
        order = await open_checkout(page, stack)
        processed: list[int] = []

        async def cut(route: Route) -> None:
            response = await route.fetch()  # the vault takes the payment ...
            processed.append(response.status)
            await route.abort("connectionreset")  # ... and the answer never reaches the browser

        await page.route("**/v1/checkout/sessions/*/complete", cut)
        await type_card(page)
        await page.locator("#pay-button").click()
        await expect(page.locator("#pay-status")).to_contain_text("connection was lost")
        await page.screenshot(path=screenshots / "checkout-connection-lost.png", full_page=True)
        assert processed == [200]
        await page.unroute("**/v1/checkout/sessions/*/complete")
        await page.reload()
        await page.wait_for_url(re.compile(rf"/orders/{order}/done$"))
        await expect(page.locator("#result")).to_have_text("Payment received")
        await page.screenshot(path=screenshots / "checkout-resumed.png", full_page=True)
        assert [c["status"] for c in await stack.charges(order)] == ["succeeded"]

    async def test_paying_again_after_a_lost_answer_does_not_charge_twice(self, page: Page, stack: Stack) -> None:
        """Clicking Pay again after the answer was lost shows the real outcome instead of charging again."""
        order = await open_checkout(page, stack)

        async def cut(route: Route) -> None:
            await route.fetch()
            await route.abort("connectionreset")

        await page.route("**/v1/checkout/sessions/*/complete", cut, times=1)
        await type_card(page)
        await page.locator("#pay-button").click()
        await expect(page.locator("#pay-status")).to_contain_text("connection was lost")
        await page.locator("#pay-button").click()
        await page.wait_for_url(re.compile(rf"/orders/{order}/done$"))
        assert [c["status"] for c in await stack.charges(order)] == ["succeeded"]
