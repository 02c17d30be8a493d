"""One brand table for both card forms: generated from the domain at start, served once, used by both pages.

The hosted card form and the staff order form used to carry hand-copied
prefix tables.  Now ``/elements/v1/brands.js`` is built from
``BRAND_PREFIXES`` and ``BRAND_RULES`` and both pages load it by nonce and
SRI; these tests prove the served table is the domain's, that each page
loads exactly those bytes, and that no copy is left in the page scripts.
(The browser tests prove the brand shows as it is typed.)
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from service.domain.brands import BRAND_PREFIXES, BRAND_RULES
from service.domain.staff import Role
from service.http.elements import BRANDS_JS
from tests.conftest import FakeClock, create_agency
from tests.http.test_elements import csp_directives, frame, sri
from tests.support.staff_pages import staff_member

REPO = Path(__file__).resolve().parents[2]
PAGE_SCRIPTS = ("service/http/static/elements/frame.js", "service/http/static/staff/order-form.js")
BRANDS_URL = "/elements/v1/brands.js"


def served_table(script: bytes) -> dict[str, Any]:
    match = re.fullmatch(rb"/\*[^*]*\*/\nvar CARDVAULT_BRANDS = Object\.freeze\((\{.*\})\);\n", script, re.S)
    assert match is not None, script[:200]
    table: dict[str, Any] = json.loads(match.group(1))
    return table


def script_tags(page: str) -> list[str]:
    return re.findall(r"<script\b([^>]*)>", page)


class TestServedBrandTable:
    async def test_the_served_table_is_the_domains(self, client: Any) -> None:
        """brands.js holds BRAND_PREFIXES in order and every brand's lengths, CVC length and name."""
        response = await client.get(BRANDS_URL)
        assert response.status == 200
        assert response.content_type == "text/javascript"
        body = await response.read()
        assert sri(body) == BRANDS_JS.sri
        table = served_table(body)
        assert table["prefixes"] == [[p.first, p.last, str(p.brand)] for p in BRAND_PREFIXES]
        assert table["rules"] == {
            str(brand): {"lengths": sorted(rule.lengths), "cvc": rule.cvc_length, "name": rule.display_name}
            for brand, rule in BRAND_RULES.items()
        }

    def test_no_page_script_keeps_a_copy(self) -> None:
        """frame.js and order-form.js read CARDVAULT_BRANDS and hold no prefix ranges or brand names of their own."""
        for path in PAGE_SCRIPTS:
            source = (REPO / path).read_text(encoding="utf-8")
            assert "window.CARDVAULT_BRANDS" in source, path
            for prefix in BRAND_PREFIXES:
                assert f'"{prefix.first}"' not in source, (path, prefix.first)
            assert "American Express" not in source, path


class TestBothPagesUseIt:
    async def test_the_hosted_card_form_loads_it_before_frame_js(self, client: Any) -> None:
        """The frame page loads brands.js, then frame.js, each with the page's nonce and the served bytes' SRI."""
        agency = await create_agency(client, "https://shop.example.gov")
        response = await frame(client, agency, origin="https://shop.example.gov")
        page = await response.text()
        nonce = csp_directives(response.headers["Content-Security-Policy"])["script-src"][len("'nonce-") : -1]
        tags = script_tags(page)
        assert [re.search(r'src="([^"]+)"', t).group(1) for t in tags] == [BRANDS_URL, "/elements/v1/frame.js"]  # type: ignore[union-attr]
        assert f'integrity="{BRANDS_JS.sri}"' in tags[0]
        assert f'nonce="{nonce}"' in tags[0]

    async def test_the_staff_order_form_loads_it_before_order_form_js(self, client: Any, clock: FakeClock) -> None:
        """The order form loads the same brands.js (by nonce and SRI) just before its own script."""
        agency = await create_agency(client)
        agent = await staff_member(client, clock, agency.slug, f"agent-{agency.id[-8:]}", Role.AGENT)
        page = await agent.browser.get("/staff/orders/new")
        assert page.status == 200
        nonce = csp_directives(page.headers["Content-Security-Policy"])["script-src"][len("'nonce-") : -1]
        sources = [re.search(r'src="([^"]+)"', t).group(1) for t in script_tags(page.text)]  # type: ignore[union-attr]
        assert sources[-2:] == [BRANDS_URL, "/staff/static/order-form.js"]
        brands_tag = script_tags(page.text)[-2]
        assert f'integrity="{BRANDS_JS.sri}"' in brands_tag
        assert f'nonce="{nonce}"' in brands_tag
