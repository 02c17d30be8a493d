"""Accessibility of the staff pages in real Chromium: an axe-core audit of every page, the keyboard alone,
announced errors, a narrow screen and print.

The audit runs axe-core (the copy bundled in the axe-playwright-python package, injected through
Playwright's DevTools channel, so nothing is downloaded and the pages' CSP stays as served) on every
staff page in the states a person meets them: sign-in (with an error), enrollment (with errors), the
code step, the order form (empty and after server-side errors), the receipt, the orders list, the
void and refund confirmations, a refusal, the audit trail and the team page.  Every WCAG 2.0/2.1
level A or AA violation fails, whatever axe's impact rating, and so does a best-practice one rated
serious or critical.  Screenshots go to ``artifacts/screenshots``.
"""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import Browser, BrowserContext, Page, expect

from service.domain.staff import Role
from tests.browser.staff import (
    PASSWORD,
    PAST_CUT_OFF,
    Vault,
    audit,
    clock,
    code,
    context,
    focused_id,
    new_member,
    page,
    second_person,
    sign_in,
    tab_to,
    tab_to_text,
    take_order_with_the_keyboard,
    vault,
)
from tests.support.cards import CVC, VISA

__all__ = ["clock", "context", "page", "vault"]  # fixtures


async def no_horizontal_scroll(page: Page) -> None:
    widths = await page.evaluate("() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    assert widths[0] <= widths[1], f"{page.url} scrolls sideways at {widths[1]}px: {widths[0]}px wide"


class TestAudit:
    async def test_every_staff_page_passes_the_axe_audit(
        self, browser: Browser, page: Page, vault: Vault, screenshots: Path
    ) -> None:
        """Each staff page, in each state a person meets it, has no WCAG 2.1 A/AA violation."""
        agency = await vault.agency()
        tag = agency.id[-8:]
        found: list[str] = []

        await page.goto(f"{vault.url}/staff/login")
        found += await audit(page, "sign-in")
        await page.get_by_label("Username").fill("nobody-" + tag)
        await page.get_by_label("Password").fill("Wrong-password-123")
        await page.get_by_role("button", name="Continue").click()
        await expect(page.get_by_role("alert")).to_be_visible()
        found += await audit(page, "sign-in refused")

        await page.goto(await vault.add(f"sup-{tag}", Role.SUPERVISOR, agency.slug))
        found += await audit(page, "enrollment")
        await page.get_by_label("New password").fill(PASSWORD)
        await page.get_by_label("Repeat password").fill(PASSWORD + "x")
        await page.get_by_role("button", name="Finish setup").click()
        await expect(page.locator("#error-summary")).to_be_focused()
        found += await audit(page, "enrollment with errors")
        secret = (await page.locator("#totp-secret").inner_text()).replace(" ", "")
        await page.get_by_label("New password").fill(PASSWORD)
        await page.get_by_label("Repeat password").fill(PASSWORD)
        await page.get_by_label("The 6-digit code your app now shows").fill(code(secret, vault.clock))
        await page.get_by_role("button", name="Finish setup").click()
        await expect(page.get_by_role("heading", name="Your account is ready")).to_be_visible()
        found += await audit(page, "enrolled")

        vault.clock.advance(30)
        await page.goto(f"{vault.url}/staff/login")
        await page.get_by_label("Username").fill(f"sup-{tag}")
        await page.get_by_label("Password").fill(PASSWORD)
        await page.get_by_role("button", name="Continue").click()
        found += await audit(page, "code step")
        await page.get_by_label("6-digit code").fill(code(secret, vault.clock))
        await page.get_by_role("button", name="Sign in").click()

        await page.goto(f"{vault.url}/staff/orders/new")
        found += await audit(page, "order form")
        await page.get_by_label("Amount (USD)").fill("25.001")
        await page.get_by_label("Expiry (MM/YY)").fill("13/20")
        await page.get_by_role("button", name="Charge the card").click()
        await expect(page.locator("#error-summary")).to_be_focused()
        found += await audit(page, "order form with errors")
        await page.screenshot(path=str(screenshots / "staff-order-form-errors.png"), full_page=True)

        await take_order_with_the_keyboard(page, vault, VISA, "FL-A11Y-1")
        receipt_url = page.url
        found += await audit(page, "receipt")
        await page.goto(f"{vault.url}/staff/orders")
        found += await audit(page, "orders list")
        await page.goto(receipt_url + "/void")
        found += await audit(page, "void confirmation")
        await page.goto(f"{vault.url}/staff/audit")
        found += await audit(page, "refusal page (403)")

        vault.clock.advance(PAST_CUT_OFF)
        await sign_in(page, vault, f"sup-{tag}", secret)
        await page.goto(receipt_url + "/void")
        await expect(page.get_by_role("alert")).to_be_visible()
        found += await audit(page, "receipt refusing a void (409)")
        await page.goto(receipt_url + "/refund")
        found += await audit(page, "refund confirmation")
        await page.get_by_label("Refund amount (USD)").fill("99.999")
        await page.get_by_role("button", name="Yes, refund").click()
        await expect(page.locator("#error-summary")).to_be_focused()
        found += await audit(page, "refund confirmation with an error")

        for role, path, name in ((Role.AUDITOR, "/staff/audit", "audit trail"), (Role.ADMIN, "/staff/team", "team")):
            other = await second_person(browser)
            try:
                other_page = await other.new_page()
                await new_member(other_page, vault, agency.slug, f"{role}-{tag}", role)
                await other_page.goto(vault.url + path)
                found += await audit(other_page, name)
                await other_page.set_viewport_size({"width": 360, "height": 800})
                await no_horizontal_scroll(other_page)
                await other_page.set_viewport_size({"width": 1000, "height": 900})
                if role is Role.AUDITOR:
                    await other_page.goto(f"{vault.url}/staff/orders?from=yesterday")
                    found += await audit(other_page, "orders list with a filter error")
            finally:
                await other.close()
        assert found == [], "\n".join(found)


class TestKeyboardAndErrors:
    async def test_an_order_and_its_void_with_the_keyboard_alone(self, page: Page, vault: Vault) -> None:
        """From the top of the page, Tab, Space and Enter (and typing) take an order, recover from a server error
        that is announced and focused, and void the order through its confirmation."""
        agency = await vault.agency()
        await new_member(page, vault, agency.slug, f"kb-{agency.id[-8:]}", Role.SUPERVISOR)
        await page.goto(f"{vault.url}/staff/orders/new")
        await page.keyboard.press("Tab")
        assert await page.evaluate("() => document.activeElement.textContent") == "Skip to main content"
        await page.keyboard.press("Enter")
        assert await focused_id(page) == "main"
        await page.keyboard.press("Tab")  # the checked channel radio; arrows would move within the group
        assert await page.evaluate("() => document.activeElement.value") == "phone"
        await page.keyboard.press("Space")
        for field, value in [
            ("f-amount", "25.001"),
            ("f-order_reference", "FL-KEYS-1"),
            ("f-description", "Annual fishing licence"),
            ("f-cardholder_name", "A. Caller"),
            ("f-card_number", VISA),
            ("f-expiry", "12/31"),
            ("f-cvc", CVC),
            ("f-postal_code", "40601"),
        ]:
            await tab_to(page, field, limit=3)
            await page.keyboard.type(value)
        await tab_to(page, "submit-order", limit=2)
        await page.keyboard.press("Enter")

        summary = page.locator("#error-summary")
        await expect(summary).to_be_focused()
        assert await summary.get_attribute("role") == "alert"
        await expect(summary).to_contain_text("Amount")
        amount = page.locator("#f-amount")
        assert await amount.get_attribute("aria-invalid") == "true"
        described = (await amount.get_attribute("aria-describedby") or "").split()
        assert "f-amount-error" in described
        await expect(page.locator("#f-amount-error")).to_contain_text("Error:")
        await expect(page.get_by_label("Card number")).to_have_value("")  # never written back
        await expect(page.get_by_label("Cardholder name")).to_have_value("A. Caller")  # kept

        await tab_to(page, "f-amount")
        await page.keyboard.press("Control+A")
        await page.keyboard.type("25.00")
        await tab_to(page, "f-card_number")
        await page.keyboard.type(VISA)
        await tab_to(page, "f-cvc", limit=3)
        await page.keyboard.type(CVC)
        await tab_to(page, "submit-order", limit=3)
        await page.keyboard.press("Space")
        await expect(page.locator("#order-status")).to_contain_text("Approved")

        await tab_to_text(page, "Void…")
        await page.keyboard.press("Enter")
        await expect(page.get_by_text("cannot be undone")).to_be_visible()
        await tab_to_text(page, "Yes, void")
        await page.keyboard.press("Space")
        await expect(page.get_by_role("status")).to_contain_text("The order was voided.")
        await expect(page.locator("#order-status")).to_contain_text("Voided")


class TestNarrowAndPrint:
    async def test_the_receipt_on_a_phone_and_on_paper(
        self, context: BrowserContext, page: Page, vault: Vault, screenshots: Path
    ) -> None:
        """At 360 px no staff page scrolls sideways (the audit test checks the audit and team pages too);
        printed, the receipt keeps its facts and drops the navigation, the skip link and every button."""
        agency = await vault.agency()
        await new_member(page, vault, agency.slug, f"narrow-{agency.id[-8:]}", Role.SUPERVISOR)
        await take_order_with_the_keyboard(page, vault, VISA, "FL-NARROW-1")
        receipt_url = page.url
        await page.set_viewport_size({"width": 360, "height": 800})
        pages = (receipt_url, f"{vault.url}/staff/orders/new", f"{vault.url}/staff/orders", receipt_url + "/void")
        for url in (*pages, f"{vault.url}/staff/orders?from=yesterday"):
            await page.goto(url)
            await no_horizontal_scroll(page)
        await page.goto(receipt_url)
        await page.screenshot(path=str(screenshots / "staff-receipt-narrow.png"), full_page=True)

        await page.emulate_media(media="print")
        for hidden in (".site-header", ".skip-link", "nav", "button", ".actions", "form.signout"):
            for element in await page.locator(hidden).all():
                await expect(element).to_be_hidden()
        for shown in ("#receipt-title", "#order-status", ".receipt dl"):
            await expect(page.locator(shown)).to_be_visible()
        await expect(page.locator(".receipt")).to_contain_text("Visa ending in 4242")
        await no_horizontal_scroll(page)
        await page.screenshot(path=str(screenshots / "staff-receipt-print-narrow.png"), full_page=True)
        await page.set_viewport_size({"width": 1000, "height": 900})
        await no_horizontal_scroll(page)
        await page.screenshot(path=str(screenshots / "staff-receipt-print.png"), full_page=True)
        await page.emulate_media(media="screen")


class TestTheAuditItself:
    async def test_the_audit_fails_a_page_with_known_violations(self, page: Page) -> None:
        """An image without alt text and an unlabelled field fail the audit, so a clean audit means something."""
        await page.set_content(
            '<!doctype html><html lang="en"><head><title>broken</title></head>'
            '<body><main><img src="data:,"><input id="unlabelled"></main></body></html>'
        )
        found = await audit(page, "broken")
        assert any(line.startswith("broken: image-alt (critical)") for line in found), found
        assert any(line.startswith("broken: label (critical)") for line in found), found
