"""Hosted fields over HTTP: the frame's headers and page, the scripts' integrity, the publishable key's Origin rule."""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
from pathlib import Path
from typing import Any

import pytest

from service.domain.elements import FRAME_PROOF_SECONDS, FrameClaims, issue_frame_proof
from service.http.elements import BRANDS_JS, FRAME_JS
from service.http.frame_proof import FRAME_PROOF_HEADER, frame_mac
from service.http.state import SERVICES
from tests.conftest import AgencyKeys, FakeClock, create_agency
from tests.http.checkout_fixtures import SHOP, Client
from tests.support.cards import CVC, VISA

REPO = Path(__file__).resolve().parents[2]
CARD = {"card": {"number": VISA, "exp_month": 12, "exp_year": 2031, "cvc": CVC}}


def sri(data: bytes) -> str:
    return "sha384-" + base64.b64encode(hashlib.sha384(data).digest()).decode()


async def frame(client: Client, agency: AgencyKeys, origin: str = SHOP, **params: str) -> Any:
    return await client.get("/elements/v1/frame", params={"key": agency.publishable, "origin": origin, **params})


def frame_config(page: str) -> dict[str, Any]:
    match = re.search(r'data-config="([^"]*)"', page)
    assert match is not None
    config: dict[str, Any] = json.loads(html.unescape(match.group(1)))
    return config


def csp_directives(header: str) -> dict[str, str]:
    return {part.strip().split(" ", 1)[0]: part.strip().partition(" ")[2] for part in header.split(";") if part.strip()}


class TestFrame:
    async def test_frame_may_be_framed_only_by_the_named_registered_origin(self, client: Client) -> None:
        """The frame's CSP allows exactly its parent origin as ancestor and sends no X-Frame-Options."""
        agency = await create_agency(client, SHOP, "https://parks.example.gov")
        resp = await frame(client, agency)
        assert resp.status == 200
        assert resp.content_type == "text/html"
        csp = csp_directives(resp.headers["Content-Security-Policy"])
        assert csp["frame-ancestors"] == SHOP
        assert csp["default-src"] == "'none'"
        assert csp["connect-src"] == "'self'"
        assert "X-Frame-Options" not in resp.headers
        assert resp.headers["Cache-Control"] == "no-store"

    async def test_every_script_and_style_carries_the_nonce_and_its_sri(
        self, client: Client, agency: AgencyKeys
    ) -> None:
        """Only frame.css, the brand table and frame.js load, each with the response's nonce and the SRI of the
        bytes served."""
        resp = await frame(client, agency)
        page = await resp.text()
        nonce = csp_directives(resp.headers["Content-Security-Policy"])["script-src"].removeprefix("'nonce-")[:-1]
        tags = re.findall(r"<(script|link)\b([^>]*)>", page)
        assert [t for t, _ in tags] == ["link", "script", "script"]
        paths = ("/elements/v1/frame.css", "/elements/v1/brands.js", "/elements/v1/frame.js")
        for path, (_, attributes) in zip(paths, tags, strict=True):
            assert f'nonce="{nonce}"' in attributes
            served = await (await client.get(path)).read()
            assert f'integrity="{sri(served)}"' in attributes
        assert "<script>" not in page
        assert " style=" not in page
        assert " on" not in page.replace(" only", "")

    async def test_each_frame_gets_a_fresh_nonce(self, client: Client, agency: AgencyKeys) -> None:
        """Two loads of the frame have different nonces."""
        first = (await frame(client, agency)).headers["Content-Security-Policy"]
        second = (await frame(client, agency)).headers["Content-Security-Policy"]
        assert first != second

    @pytest.mark.parametrize(
        ("params", "status", "code"),
        [
            ({"origin": "https://evil.example.com"}, 403, "origin_not_allowed"),
            ({"origin": ""}, 403, "origin_not_allowed"),
            ({"key": ""}, 401, "missing_api_key"),
            ({"key": "pk_" + "x" * 40}, 401, "invalid_api_key"),
        ],
    )
    async def test_refusals_cannot_be_framed(
        self, client: Client, agency: AgencyKeys, params: dict[str, str], status: int, code: str
    ) -> None:
        """An unregistered origin or a bad key gets a problem that no page may frame."""
        query = {"key": agency.publishable, "origin": SHOP, **params}
        resp = await client.get("/elements/v1/frame", params=query)
        assert resp.status == status
        assert (await resp.json())["code"] == code
        assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]
        assert resp.headers["X-Frame-Options"] == "DENY"

    async def test_a_secret_key_is_never_put_in_a_page(self, client: Client, agency: AgencyKeys) -> None:
        """Mounting with the secret key is 403 publishable_key_required."""
        resp = await client.get("/elements/v1/frame", params={"key": agency.secret, "origin": SHOP})
        assert resp.status == 403
        assert (await resp.json())["code"] == "publishable_key_required"
        assert agency.secret not in await resp.text()


class TestStyleOptions:
    async def test_valid_options_become_custom_properties(self, client: Client, agency: AgencyKeys) -> None:
        """Allowed values reach the frame as --cv-* custom properties, nothing else."""
        options = {"color": "#112233", "font_family": "Georgia", "font_size": "18px", "border_radius": "0px"}
        config = frame_config(await (await frame(client, agency, **options)).text())
        assert config["style"] == {
            "--cv-color": "#112233",
            "--cv-font-family": "Georgia",
            "--cv-font-size": "18px",
            "--cv-border-radius": "0px",
        }
        assert config["warnings"] == []

    @pytest.mark.parametrize(
        ("name", "value"),
        [
            ("color", "red; background: url(https://evil.example.com/x)"),
            ("color", "expression(alert(1))"),
            ("font_family", "Comic Sans MS"),
            ("font_family", "x</style><script>alert(1)</script>"),
            ("font_size", "200px"),
            ("background", "#fff"),
        ],
    )
    async def test_anything_else_is_dropped_with_a_warning(
        self, client: Client, agency: AgencyKeys, name: str, value: str
    ) -> None:
        """A value outside the allowlist never reaches the page; the frame warns in the console instead."""
        page = await (await frame(client, agency, **{name: value})).text()
        config = frame_config(page)
        assert config["style"] == {}
        assert len(config["warnings"]) == 1
        assert name in config["warnings"][0]
        assert value not in page
        assert "<script>alert" not in page


class TestAutocomplete:
    async def test_shoppers_get_card_autocomplete_tokens(self, client: Client, agency: AgencyKeys) -> None:
        """By default the fields carry cc-number, cc-exp and cc-csc, so a shopper's own browser can fill them."""
        page = await (await frame(client, agency)).text()
        assert re.findall(r'autocomplete="([^"]+)"', page) == ["on", "cc-number", "cc-exp", "cc-csc"]

    async def test_staff_mounts_turn_autocomplete_off(self, client: Client, agency: AgencyKeys) -> None:
        """autocomplete=off turns autocomplete off on the form and every field, with neutral field names."""
        page = await (await frame(client, agency, autocomplete="off")).text()
        assert re.findall(r'autocomplete="([^"]+)"', page) == ["off"] * 4
        assert "cardnumber" not in page


class TestScriptIntegrity:
    async def test_published_sri_matches_the_served_script(self, client: Client) -> None:
        """cardvault.js.sri is the sha384 of the bytes served at the stable URL."""
        script = await client.get("/elements/v1/cardvault.js")
        published = (await (await client.get("/elements/v1/cardvault.js.sri")).text()).strip()
        assert published == sri(await script.read())
        assert script.headers["Content-Type"].startswith("text/javascript")
        assert script.headers["Access-Control-Allow-Origin"] == "*"
        assert script.headers["Cross-Origin-Resource-Policy"] == "cross-origin"

    async def test_the_readme_publishes_the_same_hash(self, client: Client) -> None:
        """README.md lists the current SRI of cardvault.js (so a change to the script must update it)."""
        served = await (await client.get("/elements/v1/cardvault.js")).read()
        assert f"`{sri(served)}`" in (REPO / "README.md").read_text(encoding="utf-8")

    async def test_the_readme_inventory_lists_every_script_the_frame_loads(
        self, client: Client, agency: AgencyKeys
    ) -> None:
        """The script inventory in README.md names exactly the scripts the frame page loads, with their SRI."""
        page = await (await frame(client, agency)).text()
        loaded = set(re.findall(r'<script src="([^"]+)"', page))
        readme = (REPO / "README.md").read_text(encoding="utf-8")
        inventory = readme.split("### Script inventory", 1)[1].split("\n## ", 1)[0]
        listed = set(re.findall(r"^\| `(/elements/v1/[^`]+\.js)` \| frame", inventory, re.MULTILINE))
        assert listed == loaded == {"/elements/v1/brands.js", "/elements/v1/frame.js"}
        assert f"`{FRAME_JS.sri}`" in inventory
        assert f"`{BRANDS_JS.sri}`" in inventory


def own_origin(client: Client) -> str:
    return f"http://{client.server.host}:{client.server.port}"


def proof_for(client: Client, agency_id: str, parent: str = SHOP, expires_in: int = FRAME_PROOF_SECONDS) -> str:
    svc = client.app[SERVICES]
    return issue_frame_proof(FrameClaims(agency_id, parent, int(svc.clock()) + expires_in), frame_mac(svc))


class TestFrameOrigin:
    async def tokenize(self, client: Client, agency: AgencyKeys, origin: str, proof: str | None) -> Any:
        headers = {**agency.public_auth, "Origin": origin}
        if proof is not None:
            headers[FRAME_PROOF_HEADER] = proof
        return await client.post("/v1/tokens", json=CARD, headers=headers)

    async def test_the_frames_own_proof_lets_its_requests_through(self, client: Client, agency: AgencyKeys) -> None:
        """From the vault's own origin, the proof the frame page carries makes the publishable key work."""
        proof = frame_config(await (await frame(client, agency)).text())["proof"]
        resp = await self.tokenize(client, agency, own_origin(client), proof)
        assert resp.status == 201, await resp.text()

    async def test_without_a_valid_proof_the_vaults_origin_is_refused(
        self, client: Client, agency: AgencyKeys, other_agency: AgencyKeys, clock: FakeClock
    ) -> None:
        """No proof, a tampered one, another agency's, an expired one: 403 origin_not_allowed."""
        good = proof_for(client, agency.id)
        for proof in (
            None,
            good[:-2] + ("00" if not good.endswith("00") else "11"),
            proof_for(client, other_agency.id, "https://parks.example.gov"),
            proof_for(client, agency.id, expires_in=-1),
            proof_for(client, agency.id, parent="https://evil.example.com"),
        ):
            resp = await self.tokenize(client, agency, own_origin(client), proof)
            assert resp.status == 403, proof
            assert (await resp.json())["code"] == "origin_not_allowed"

    async def test_a_proof_does_not_help_from_another_origin(self, client: Client, agency: AgencyKeys) -> None:
        """A copied proof sent from a foreign origin is still refused."""
        resp = await self.tokenize(client, agency, "https://evil.example.com", proof_for(client, agency.id))
        assert resp.status == 403

    async def test_an_origin_removed_from_the_agency_stops_open_frames(self, client: Client) -> None:
        """After set-origins drops the parent origin, a proof issued for it no longer works."""
        agency = await create_agency(client, SHOP, "https://parks.example.gov")
        proof = proof_for(client, agency.id)
        agencies = client.app[SERVICES].agencies
        assert agencies is not None
        await agencies.set_origins(agency.slug, ["https://parks.example.gov"])
        resp = await self.tokenize(client, agency, own_origin(client), proof)
        assert resp.status == 403
