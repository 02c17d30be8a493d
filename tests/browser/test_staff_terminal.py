"""The staff virtual terminal in real headless Chromium, served over HTTPS on 127.0.0.1.

The ``__Host-`` session cookie is Secure, so the vault runs with TLS here: a
trustme CA issues a certificate for 127.0.0.1 and the browser context accepts
it (``ignore_https_errors``).  Accounts are enrolled through the enrollment
page as a person would; the TOTP codes are computed from the key that page
shows, on the app's injectable clock.  Screenshots of the order form and the
receipt go to ``artifacts/screenshots``.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyotp
import pytest
import trustme
from aiohttp import web
from playwright.async_api import Browser, BrowserContext, Page, expect

from service.adapters.keyring import MasterKeys
from service.app import create_app
from service.audit import Actor
from service.domain.staff import Role
from service.http.state import SERVICES
from service.settings import Settings
from tests.conftest import FakeClock, create_agency
from tests.support import leaks
from tests.support.cards import CVC, VISA
from tests.support.redis_server import RedisServer

DECLINED = "4000000000000002"
PASSWORD = "Tall7Ships9Harbor"
TIMEOUT_MS = 15_000


@dataclass
class Vault:
    url: str
    app: web.Application
    clock: FakeClock

    async def add(self, username: str, role: Role, slug: str) -> str:
        staff = self.app[SERVICES].staff
        assert staff is not None
        _, token = await staff.accounts.add(slug, username, role, Actor.operator(""))
        return f"{self.url}/staff/enroll?token={token}"


@pytest.fixture
async def vault(settings: Settings, master_keys: MasterKeys, clock: FakeClock) -> AsyncIterator[Vault]:
    ca = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_tls)
    app = create_app(settings, master_keys, redis_url=settings.redis.url or "", clock=clock, tls=True)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_tls)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield Vault(f"https://127.0.0.1:{port}", app, clock)
    await runner.cleanup()


@pytest.fixture
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    opened = await browser.new_context(ignore_https_errors=True, viewport={"width": 1000, "height": 900})
    opened.set_default_timeout(TIMEOUT_MS)
    yield opened
    await opened.close()


@pytest.fixture
async def page(context: BrowserContext) -> Page:
    return await context.new_page()


def code(secret: str, clock: FakeClock) -> str:
    return pyotp.TOTP(secret).at(clock())


async def enroll(page: Page, vault: Vault, link: str) -> str:
    """Fill the enrollment page; returns the TOTP key it showed."""
    await page.goto(link)
    secret = (await page.locator("#totp-secret").inner_text()).replace(" ", "")
    await page.get_by_label("New password").fill(PASSWORD)
    await page.get_by_label("Repeat password").fill(PASSWORD)
    await page.get_by_label("The 6-digit code your app now shows").fill(code(secret, vault.clock))
    await page.get_by_role("button", name="Finish setup").click()
    await expect(page.get_by_role("heading", name="Your account is ready")).to_be_visible()
    return secret


async def sign_in(page: Page, vault: Vault, username: str, secret: str) -> None:
    vault.clock.advance(30)  # the enrollment used this 30-second step's code
    await page.goto(f"{vault.url}/staff/login")
    await page.get_by_label("Username").fill(username)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Continue").click()
    await page.get_by_label("6-digit code").fill(code(secret, vault.clock))
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("button", name="Sign out")).to_be_visible()


async def new_member(page: Page, vault: Vault, slug: str, username: str, role: Role) -> None:
    secret = await enroll(page, vault, await vault.add(username, role, slug))
    await sign_in(page, vault, username, secret)


async def take_order_with_the_keyboard(page: Page, vault: Vault, number: str, reference: str) -> None:
    """Fill the order form by typing and Tab alone, and submit with Enter."""
    await page.goto(f"{vault.url}/staff/orders/new")
    await page.locator("#f-amount").focus()
    for value in ["25.00", reference, "Annual fishing licence", "A. Caller", number, "12/31", CVC, "40601"]:
        await page.keyboard.type(value)
        await page.keyboard.press("Tab")
    await expect(page.locator("#submit-order")).to_be_focused()
    await page.keyboard.press("Enter")
    await page.wait_for_url(re.compile(r"/staff/orders/ch_[A-Za-z0-9_-]+$"))


async def assert_no_card_anywhere(page: Page, context: BrowserContext) -> None:
    """Not in the page, the cookies, localStorage, sessionStorage, or the form fields' values."""
    assert not leaks.cards_in_text(await page.content())
    cookies = await context.cookies()
    assert not leaks.cards_in_text(repr(cookies))
    storage = await page.evaluate(
        "() => JSON.stringify([Object.entries(localStorage), Object.entries(sessionStorage)])"
    )
    assert storage == "[[],[]]"


class TestStaffTerminal:
    async def test_enroll_sign_in_and_take_approved_and_declined_orders(
        self,
        page: Page,
        context: BrowserContext,
        vault: Vault,
        screenshots: Path,
        session_logs: Path,
        redis_server: RedisServer,
    ) -> None:
        """An agent enrolls, signs in with TOTP, takes an approved and a declined phone order; no card is kept."""
        agency = await create_agency(_client_of(vault))
        username = f"agent-{agency.id[-8:]}"
        await new_member(page, vault, agency.slug, username, Role.AGENT)

        cookie = next(c for c in await context.cookies() if c["name"] == "__Host-cv_staff")
        assert (cookie["secure"], cookie["httpOnly"], cookie["sameSite"], cookie["path"]) == (True, True, "Strict", "/")

        await page.goto(f"{vault.url}/staff/orders/new")
        card = page.get_by_label("Card number")
        await card.press_sequentially(VISA[:6])
        await expect(page.locator("#card-brand")).to_have_text("Visa")
        await card.press_sequentially(VISA[6:])
        await expect(card).to_have_value("4242 4242 4242 4242")
        assert await card.get_attribute("autocomplete") == "off"
        assert await page.locator("#order-form").get_attribute("autocomplete") == "off"
        await page.screenshot(path=str(screenshots / "staff-order-form.png"), full_page=True)

        await take_order_with_the_keyboard(page, vault, VISA, "FL-BROWSER-1")
        await expect(page.locator("#order-status")).to_contain_text("Approved")
        await expect(page.get_by_text("Visa ending in 4242")).to_be_visible()
        await page.screenshot(path=str(screenshots / "staff-receipt.png"), full_page=True)
        await page.emulate_media(media="print")
        await expect(page.locator(".site-header")).to_be_hidden()
        await page.screenshot(path=str(screenshots / "staff-receipt-print.png"), full_page=True)
        await page.emulate_media(media="screen")
        await assert_no_card_anywhere(page, context)

        await take_order_with_the_keyboard(page, vault, DECLINED, "FL-BROWSER-2")
        await expect(page.locator("#order-status")).to_contain_text("Declined")
        await assert_no_card_anywhere(page, context)

        await page.go_back()  # the order form again: the browser must not have kept the card number
        await expect(page.get_by_label("Card number")).to_have_value("")
        await page.set_viewport_size({"width": 360, "height": 800})
        await page.goto(f"{vault.url}/staff/orders")
        await expect(page.get_by_role("link", name="FL-BROWSER-1")).to_be_visible()
        await page.screenshot(path=str(screenshots / "staff-orders-narrow.png"), full_page=True)

        assert not leaks.cards_in_text(await asyncio.to_thread(session_logs.read_text, encoding="utf-8"))
        assert not leaks.redis_findings(redis_server.client())

    async def test_supervisor_refunds_and_agent_is_refused(
        self, browser: Browser, page: Page, vault: Vault, screenshots: Path
    ) -> None:
        """The supervisor refunds the agent's order after confirming; the agent's direct refund URL answers 403."""
        agency = await create_agency(_client_of(vault))
        tag = agency.id[-8:]
        await new_member(page, vault, agency.slug, f"agent-{tag}", Role.AGENT)
        await take_order_with_the_keyboard(page, vault, VISA, "FL-REFUND-1")
        receipt_url = page.url
        await expect(page.get_by_role("link", name="Refund…")).to_have_count(0)
        refused = await page.goto(receipt_url + "/refund")
        assert refused is not None
        assert refused.status == 403
        await expect(page.get_by_role("heading", name="Not allowed")).to_be_visible()

        supervisor = await browser.new_context(ignore_https_errors=True)
        try:
            sup_page = await supervisor.new_page()
            await new_member(sup_page, vault, agency.slug, f"sup-{tag}", Role.SUPERVISOR)
            await sup_page.goto(receipt_url)
            await sup_page.get_by_role("link", name="Refund…").click()
            await expect(sup_page.get_by_text("cannot be undone")).to_be_visible()
            await sup_page.get_by_role("button", name="Yes, refund").click()
            await expect(sup_page.get_by_role("status")).to_contain_text("Refunded 25.00")
            await expect(sup_page.locator("#order-status")).to_contain_text("refunded $25.00")
            await sup_page.screenshot(path=str(screenshots / "staff-refunded.png"), full_page=True)
        finally:
            await supervisor.close()

    async def test_failed_sign_ins_lock_the_account(self, page: Page, vault: Vault) -> None:
        """Ten wrong passwords lock the account: the right password then gets the locked message."""
        agency = await create_agency(_client_of(vault))
        username = f"lock-{agency.id[-8:]}"
        await enroll(page, vault, await vault.add(username, Role.AGENT, agency.slug))
        for _ in range(10):
            await page.goto(f"{vault.url}/staff/login")
            await page.get_by_label("Username").fill(username)
            await page.get_by_label("Password").fill("Wrong-password-123")
            await page.get_by_role("button", name="Continue").click()
            await expect(page.get_by_role("alert")).to_be_visible()
        await page.get_by_label("Username").fill(username)
        await page.get_by_label("Password").fill(PASSWORD)
        await page.get_by_role("button", name="Continue").click()
        await expect(page.get_by_role("alert")).to_contain_text("locked")

    async def test_idle_session_times_out(self, page: Page, vault: Vault) -> None:
        """Fifteen idle minutes on the injectable clock later, the next page is the sign-in page with a notice."""
        agency = await create_agency(_client_of(vault))
        await new_member(page, vault, agency.slug, f"idle-{agency.id[-8:]}", Role.AGENT)
        await page.goto(f"{vault.url}/staff/orders/new")
        vault.clock.advance(15 * 60 + 1)
        await page.reload()
        await expect(page.get_by_role("status")).to_contain_text("without activity")
        await expect(page.get_by_label("Username")).to_be_visible()


class _AppClient:
    """Just enough of a test client for ``create_agency``: the app."""

    def __init__(self, app: web.Application) -> None:
        self.app = app


def _client_of(vault: Vault) -> Any:
    return _AppClient(vault.app)
