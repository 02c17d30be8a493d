"""The staff virtual terminal in real headless Chromium, served over HTTPS on 127.0.0.1.

Enroll, sign in with TOTP, take approved and declined phone orders, see the
receipt, void before settlement and refund after it as a supervisor, be
refused both as an agent, lock out, time out.  The vault and the people are
set up by ``tests/browser/staff.py``; the Authorize.Net cases use the local
fake gateway.  Screenshots of the form and the receipts go to
``artifacts/screenshots``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, BrowserContext, Page, expect

from service.domain.staff import Role
from service.settings import Settings
from tests.browser.staff import (
    DECLINED,
    PASSWORD,
    PAST_CUT_OFF,
    Vault,
    _AppClient,
    assert_no_card_anywhere,
    clock,
    context,
    enroll,
    new_member,
    page,
    second_person,
    sign_in,
    take_order_with_the_keyboard,
    vault,
)
from tests.conftest import make_settings
from tests.http.charge_fixtures import with_authorize_net
from tests.support import leaks
from tests.support.cards import VISA
from tests.support.fake_authorize_net import FakeAuthorizeNet
from tests.support.redis_server import RedisServer

__all__ = ["clock", "context", "page", "vault"]  # fixtures


@pytest.fixture
async def authnet() -> AsyncIterator[FakeAuthorizeNet]:
    async with FakeAuthorizeNet() as fake:
        yield fake


@pytest.fixture
def settings(redis_server: RedisServer, tmp_path: Path, authnet: FakeAuthorizeNet) -> Settings:
    """The suite's settings, trusting the fake Authorize.Net gateway's CA."""
    ca_file = str(authnet.write_ca_pem(tmp_path / "authnet-ca.pem"))
    return make_settings(redis_server.url, tmp_path / "var", processors={"ca_file": ca_file})


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
        agency = await vault.agency()
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

    async def test_supervisor_voids_before_settlement_and_agent_is_refused(
        self, browser: Browser, page: Page, vault: Vault, screenshots: Path
    ) -> None:
        """Before the cut-off the supervisor voids the agent's order after confirming; the agent sees no Void and
        the direct void URL answers 403."""
        agency = await vault.agency()
        tag = agency.id[-8:]
        await new_member(page, vault, agency.slug, f"agent-{tag}", Role.AGENT)
        await take_order_with_the_keyboard(page, vault, VISA, "FL-VOID-1")
        receipt_url = page.url
        await expect(page.get_by_role("link", name="Void…")).to_have_count(0)
        refused = await page.goto(receipt_url + "/void")
        assert refused is not None
        assert refused.status == 403
        await expect(page.get_by_role("heading", name="Not allowed")).to_be_visible()

        supervisor = await second_person(browser)
        try:
            sup_page = await supervisor.new_page()
            await new_member(sup_page, vault, agency.slug, f"sup-{tag}", Role.SUPERVISOR)
            await sup_page.goto(receipt_url)
            await expect(sup_page.locator("#settlement")).to_contain_text("can be voided until then")
            await expect(sup_page.get_by_role("link", name="Refund…")).to_have_count(0)
            await sup_page.get_by_role("link", name="Void…").click()
            await expect(sup_page.get_by_text("cannot be undone")).to_be_visible()
            await sup_page.screenshot(path=str(screenshots / "staff-void-confirm.png"), full_page=True)
            await sup_page.get_by_role("button", name="Yes, void").click()
            await expect(sup_page.get_by_role("status")).to_contain_text("The order was voided.")
            await expect(sup_page.locator("#order-status")).to_contain_text("Voided")
            await expect(sup_page.get_by_role("link", name="Void…")).to_have_count(0)
            await expect(sup_page.get_by_role("link", name="Refund…")).to_have_count(0)
            await sup_page.screenshot(path=str(screenshots / "staff-voided.png"), full_page=True)
        finally:
            await supervisor.close()

    async def test_after_the_cut_off_the_supervisor_refunds_and_agent_is_refused(
        self, browser: Browser, page: Page, vault: Vault, screenshots: Path
    ) -> None:
        """Past the sandbox's settlement cut-off the receipt offers Refund, not Void; a void URL says why and
        points to the refund, which goes through; the agent's refund URL answers 403."""
        agency = await vault.agency()
        tag = agency.id[-8:]
        agent_secret = await new_member(page, vault, agency.slug, f"agent-{tag}", Role.AGENT)
        await take_order_with_the_keyboard(page, vault, VISA, "FL-REFUND-1")
        receipt_url = page.url
        supervisor = await second_person(browser)
        try:
            sup_page = await supervisor.new_page()
            secret = await new_member(sup_page, vault, agency.slug, f"sup-{tag}", Role.SUPERVISOR)
            vault.clock.advance(PAST_CUT_OFF)
            await sign_in(sup_page, vault, f"sup-{tag}", secret)
            await sup_page.goto(receipt_url)
            await expect(sup_page.locator("#settlement")).to_contain_text("Settled by the processor")
            await expect(sup_page.get_by_role("link", name="Void…")).to_have_count(0)
            late = await sup_page.goto(receipt_url + "/void")
            assert late is not None
            assert late.status == 409
            await expect(sup_page.get_by_role("alert")).to_contain_text("can no longer be voided")
            await sup_page.get_by_role("link", name="Refund…").click()
            await expect(sup_page.get_by_text("cannot be undone")).to_be_visible()
            await sup_page.get_by_role("button", name="Yes, refund").click()
            await expect(sup_page.get_by_role("status")).to_contain_text("Refunded 25.00")
            await expect(sup_page.locator("#order-status")).to_contain_text("refunded $25.00")
            await sup_page.screenshot(path=str(screenshots / "staff-refunded.png"), full_page=True)
        finally:
            await supervisor.close()
        await sign_in(page, vault, f"agent-{tag}", agent_secret)
        await page.goto(receipt_url)
        await expect(page.get_by_role("link", name="Refund…")).to_have_count(0)
        refused = await page.goto(receipt_url + "/refund")
        assert refused is not None
        assert refused.status == 403

    async def test_authorize_net_says_settled_and_the_page_offers_the_refund(
        self, page: Page, vault: Vault, authnet: FakeAuthorizeNet, screenshots: Path
    ) -> None:
        """The vault cannot know an Authorize.Net merchant's cut-off: the supervisor tries Void, the gateway
        answers that the sale has settled, the page says so with a Refund button, and the refund is approved."""
        agency = await vault.agency()
        await with_authorize_net(_AppClient(vault.app), agency, authnet)  # type: ignore[arg-type]
        await new_member(page, vault, agency.slug, f"sup-{agency.id[-8:]}", Role.SUPERVISOR)
        await take_order_with_the_keyboard(page, vault, VISA, "FL-ANET-1")
        await page.get_by_role("link", name="Void…").click()
        await page.get_by_role("button", name="Yes, void").click()
        await expect(page.get_by_role("alert")).to_contain_text("already settled this order")
        await expect(page.get_by_role("alert")).to_be_focused()
        await expect(page.locator("#order-status")).to_contain_text("Approved")
        await page.screenshot(path=str(screenshots / "staff-void-refused-settled.png"), full_page=True)
        await page.get_by_role("link", name="Refund…").click()
        await page.get_by_role("button", name="Yes, refund").click()
        await expect(page.get_by_role("status")).to_contain_text("Refunded 25.00")
        assert (authnet.counts["voidTransaction"], authnet.counts["refundTransaction"]) == (1, 1)

    async def test_failed_sign_ins_lock_the_account(self, page: Page, vault: Vault) -> None:
        """Ten wrong passwords lock the account: the right password then gets the locked message."""
        agency = await vault.agency()
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
        agency = await vault.agency()
        await new_member(page, vault, agency.slug, f"idle-{agency.id[-8:]}", Role.AGENT)
        await page.goto(f"{vault.url}/staff/orders/new")
        vault.clock.advance(15 * 60 + 1)
        await page.reload()
        await expect(page.get_by_role("status")).to_contain_text("without activity")
        await expect(page.get_by_label("Username")).to_be_visible()
