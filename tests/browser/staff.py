"""The staff terminal as the browser tests drive it: the vault over HTTPS, people, orders, and checks.

The ``__Host-`` session cookie is Secure, so the vault runs with TLS here: a
trustme CA issues a certificate for 127.0.0.1 and the browser context accepts
it (``ignore_https_errors``).  Accounts are enrolled through the enrollment
page as a person would; the TOTP codes are computed from the key that page
shows, on the app's injectable clock.  The clock starts at 10:00 UTC, twelve
hours before the sandbox's settlement cut-off, so an order is voidable until
a test moves the clock past it.  Test modules import the fixtures from here.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pyotp
import pytest
import trustme
from aiohttp import web
from axe_playwright_python.async_playwright import Axe
from playwright.async_api import Browser, BrowserContext, Page, expect

from service.adapters.keyring import MasterKeys
from service.app import create_app
from service.audit import Actor
from service.domain.staff import Role
from service.http.state import SERVICES
from service.settings import Settings
from tests.conftest import FakeClock, create_agency
from tests.support import leaks
from tests.support.cards import CVC
from tests.support.staff_pages import move_to_morning

DECLINED = "4000000000000002"
PASSWORD = "Tall7Ships9Harbor"
TIMEOUT_MS = 15_000
PAST_CUT_OFF = 13 * 3600  # from 10:00 UTC to 23:00 UTC, past the sandbox's 22:00 settlement cut-off
#: The automated accessibility audit: WCAG 2.0/2.1 level A and AA rules, plus axe's best practices.
WCAG_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
AXE_OPTIONS = {"runOnly": {"type": "tag", "values": [*WCAG_TAGS, "best-practice"]}, "resultTypes": ["violations"]}


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

    async def agency(self) -> Any:
        return await create_agency(_AppClient(self.app))  # type: ignore[arg-type]


class _AppClient:
    """Just enough of a test client for ``create_agency``: the app."""

    def __init__(self, app: web.Application) -> None:
        self.app = app


@pytest.fixture
def clock() -> FakeClock:
    return move_to_morning(FakeClock())


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


async def second_person(browser: Browser) -> BrowserContext:
    """Another person's browser (its own cookies)."""
    opened = await browser.new_context(ignore_https_errors=True, viewport={"width": 1000, "height": 900})
    opened.set_default_timeout(TIMEOUT_MS)
    return opened


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
    vault.clock.advance(30)  # the enrollment (or the last sign-in) used this 30-second step's code
    await page.goto(f"{vault.url}/staff/login")
    await page.get_by_label("Username").fill(username)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Continue").click()
    await page.get_by_label("6-digit code").fill(code(secret, vault.clock))
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("button", name="Sign out")).to_be_visible()


async def new_member(page: Page, vault: Vault, slug: str, username: str, role: Role) -> str:
    """Enrolled and signed in; returns the TOTP key (to sign in again later)."""
    secret = await enroll(page, vault, await vault.add(username, role, slug))
    await sign_in(page, vault, username, secret)
    return secret


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


async def focused_id(page: Page) -> str:
    found: str = await page.evaluate("() => document.activeElement ? document.activeElement.id : ''")
    return found


async def tab_to(page: Page, element_id: str, *, limit: int = 40) -> int:
    """Press Tab until the element with this id has focus; how many presses it took (fails after ``limit``)."""
    for presses in range(1, limit + 1):
        await page.keyboard.press("Tab")
        if await focused_id(page) == element_id:
            return presses
    raise AssertionError(f"#{element_id} never got focus in {limit} Tabs")


async def tab_to_text(page: Page, text: str, *, limit: int = 40) -> None:
    """Press Tab until the focused link or button reads ``text``."""
    for _ in range(limit):
        await page.keyboard.press("Tab")
        if (await page.evaluate("() => (document.activeElement.textContent || '').trim()")) == text:
            return
    raise AssertionError(f"nothing reading {text!r} got focus in {limit} Tabs")


async def assert_no_card_anywhere(page: Page, context: BrowserContext) -> None:
    """Not in the page, the cookies, localStorage, sessionStorage, or the form fields' values."""
    assert not leaks.cards_in_text(await page.content())
    cookies = await context.cookies()
    assert not leaks.cards_in_text(repr(cookies))
    storage = await page.evaluate(
        "() => JSON.stringify([Object.entries(localStorage), Object.entries(sessionStorage)])"
    )
    assert storage == "[[],[]]"


def failing(violations: list[dict[str, Any]]) -> list[str]:
    """The violations that fail the audit: every WCAG 2.1 A/AA one (any impact), and best practices that axe
    rates serious or critical."""
    failed = []
    for violation in violations:
        wcag = bool(set(violation["tags"]) & set(WCAG_TAGS))
        if wcag or violation["impact"] in ("serious", "critical"):
            targets = [", ".join(map(str, node["target"])) for node in violation["nodes"]]
            failed.append(f"{violation['id']} ({violation['impact']}): {violation['help']} at {targets}")
    return failed


async def audit(page: Page, name: str) -> list[str]:
    """Run axe-core (bundled with axe-playwright-python, injected by Playwright: nothing is downloaded) on the
    page as it is; the failing violations, each prefixed with ``name``."""
    results = await Axe().run(page, options=AXE_OPTIONS)
    assert results.response["testEngine"]["name"] == "axe-core"
    return [f"{name}: {line}" for line in failing(results.response["violations"])]
