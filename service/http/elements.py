"""Hosted fields: the card form page that lives in an iframe, and the scripts that make it work.

``/elements/v1/cardvault.js`` is the drop-in script storefront pages include
(cross-origin, with its published Subresource Integrity hash); the card form
itself, ``/elements/v1/frame``, is served only to be framed by the one
registered origin it is asked for (``frame-ancestors``), under a strict
Content Security Policy: ``default-src 'none'``, its two scripts (the
generated brand table and ``frame.js``) and one stylesheet by nonce and SRI,
requests only to the vault itself, Trusted Types with no policies.  Nothing
is loaded from anyone else.  The files are read (the brand table built) once,
at import, so the bytes served are the bytes hashed.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import secrets
import string
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from service.domain.agencies import normalize_origin
from service.domain.elements import FRAME_PROOF_SECONDS, FrameClaims, issue_frame_proof, style_properties
from service.errors import Forbidden, StoreUnavailable, Unauthenticated
from service.http.brand_table import brand_script
from service.http.frame_proof import frame_mac
from service.http.state import services

HERE = Path(__file__).parent
CONTROL_PARAMETERS = frozenset({"key", "origin", "autocomplete"})
#: Cached by browsers for five minutes; a changed file changes its SRI hash (published, and tested).
ASSET_CACHE = "public, max-age=300"


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str

    @property
    def sri(self) -> str:
        return "sha384-" + base64.b64encode(hashlib.sha384(self.body).digest()).decode()


def _asset(name: str, content_type: str) -> Asset:
    return Asset((HERE / "static" / "elements" / name).read_bytes(), content_type)


CARDVAULT_JS = _asset("cardvault.js", "text/javascript")
#: The brand table both card forms use (the hosted frame and the staff order form), built from the domain's.
BRANDS_JS = Asset(brand_script(), "text/javascript")
FRAME_JS = _asset("frame.js", "text/javascript")
FRAME_CSS = _asset("frame.css", "text/css")
FRAME_TEMPLATE = string.Template((HERE / "templates" / "frame.html").read_text(encoding="utf-8"))

#: autocomplete tokens: shoppers' browsers may fill their own saved card (WCAG 1.3.5); "off" for staff and kiosks.
AUTOCOMPLETE = {
    "cc": {"form": "on", "number": "cc-number", "expiry": "cc-exp", "cvc": "cc-csc"},
    "off": {"form": "off", "number": "off", "expiry": "off", "cvc": "off"},
}


def frame_csp(nonce: str, parent_origin: str) -> str:
    return (
        f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; connect-src 'self'; "
        f"base-uri 'none'; form-action 'none'; frame-ancestors {parent_origin}; "
        "require-trusted-types-for 'script'; trusted-types 'none'"
    )


def _serve(asset: Asset, *, cross_origin: bool = False) -> web.Response:
    response = web.Response(body=asset.body, content_type=asset.content_type, charset="utf-8")
    response.headers["Cache-Control"] = ASSET_CACHE
    if cross_origin:  # storefront pages load it with crossorigin="anonymous" so the browser can check its SRI
        response.headers["Access-Control-Allow-Origin"] = "*"
        response.headers["Cross-Origin-Resource-Policy"] = "cross-origin"
    return response


async def cardvault_js(_: web.Request) -> web.Response:
    return _serve(CARDVAULT_JS, cross_origin=True)


async def cardvault_js_sri(_: web.Request) -> web.Response:
    response = web.Response(text=CARDVAULT_JS.sri + "\n", content_type="text/plain")
    response.headers["Access-Control-Allow-Origin"] = "*"
    response.headers["Cross-Origin-Resource-Policy"] = "cross-origin"
    return response


async def frame_js(_: web.Request) -> web.Response:
    return _serve(FRAME_JS)


async def brands_js(_: web.Request) -> web.Response:
    return _serve(BRANDS_JS)


async def frame_css(_: web.Request) -> web.Response:
    return _serve(FRAME_CSS)


async def frame(request: web.Request) -> web.Response:
    """The card form, for the publishable key's agency, framed only by the registered origin it names."""
    svc = services(request)
    if svc.agencies is None or not svc.ready:
        raise StoreUnavailable("the service is not ready yet")
    key = request.query.get("key", "")
    if not key:
        raise Unauthenticated("Mount the card form with the agency's publishable key", code="missing_api_key")
    principal = await svc.agencies.authenticate(key)
    if principal is None:
        raise Unauthenticated("The API key is not valid", code="invalid_api_key")
    if principal.secret:
        raise Forbidden(
            "A secret key must never be put in a web page; mount the card form with the publishable key",
            code="publishable_key_required",
        )
    origin = request.query.get("origin", "")
    if not principal.agency.allows_origin(origin):
        raise Forbidden("This origin is not registered for the publishable key", code="origin_not_allowed")
    parent = normalize_origin(origin)
    style, warnings = style_properties({k: v for k, v in request.query.items() if k not in CONTROL_PARAMETERS})
    mode = request.query.get("autocomplete", "cc")
    if mode not in AUTOCOMPLETE:
        warnings.append("autocomplete must be 'off' or absent; using the shopper default")
        mode = "cc"
    tokens = AUTOCOMPLETE[mode]
    claims = FrameClaims(principal.agency.id, parent, int(svc.clock()) + FRAME_PROOF_SECONDS)
    config = {
        "parentOrigin": parent,
        "key": key,
        "proof": issue_frame_proof(claims, frame_mac(svc)),
        "style": style,
        "warnings": warnings,
    }
    nonce = secrets.token_urlsafe(18)
    page = FRAME_TEMPLATE.substitute(
        nonce=nonce,
        config=html.escape(json.dumps(config, separators=(",", ":")), quote=True),
        js_sri=FRAME_JS.sri,
        brands_sri=BRANDS_JS.sri,
        css_sri=FRAME_CSS.sri,
        form_autocomplete=tokens["form"],
        number_autocomplete=tokens["number"],
        expiry_autocomplete=tokens["expiry"],
        cvc_autocomplete=tokens["cvc"],
        # Field names browsers recognise for cards only when the shopper's own autofill is wanted.
        number_name="cardnumber" if mode == "cc" else "cv-n",
        expiry_name="exp-date" if mode == "cc" else "cv-e",
        cvc_name="cvc" if mode == "cc" else "cv-c",
    )
    response = web.Response(text=page, content_type="text/html", charset="utf-8")
    response.headers["Content-Security-Policy"] = frame_csp(nonce, parent)
    return response
