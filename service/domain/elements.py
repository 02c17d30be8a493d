"""Hosted fields, as values: the style options a storefront may set, and the frame's proof of its parent.

Style options arrive in the frame's URL, from a page the vault does not
control, so each one is checked against a strict allowlist or pattern and
turned into a CSS custom property the frame's own stylesheet reads; nothing a
storefront sends ever becomes CSS text, so it cannot inject rules, fetch fonts
or images, or hide the fields.  A value that does not pass is dropped with a
warning the frame prints to the browser console.

The frame proof is how the vault's own card form shows, on each request it
makes from the vault's origin, which agency and which parent origin it was
served for: ``v1.<agency id>.<expiry>.<parent origin, base64url>.<MAC>``,
the MAC keyed by a secret only the vault holds (see ``Keyring.mac``).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

FRAME_PROOF_SECONDS: Final = 2 * 3600
FRAME_PROOF_PERSON: Final = b"cv-frame-proof"

FONT_FAMILIES: Final = (
    "system-ui",
    "sans-serif",
    "serif",
    "monospace",
    "Arial",
    "Helvetica",
    "Verdana",
    "Tahoma",
    "Trebuchet MS",
    "Georgia",
    "Times New Roman",
    "Courier New",
)
_COLOR = re.compile(r"#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})")
_PIXELS = re.compile(r"([0-9]{1,2})px")


def _color(value: str) -> str | None:
    return value.lower() if _COLOR.fullmatch(value) else None


def _pixels(low: int, high: int) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        match = _PIXELS.fullmatch(value)
        return value if match and low <= int(match.group(1)) <= high else None

    return check


def _font_family(value: str) -> str | None:
    if value not in FONT_FAMILIES:
        return None
    return f'"{value}"' if " " in value else value


@dataclass(frozen=True)
class StyleOption:
    css_property: str
    check: Callable[[str], str | None]
    allowed: str


#: Every option a storefront may pass (``style`` in ``CardVault.mount``), with what it accepts.
STYLE_OPTIONS: Final[Mapping[str, StyleOption]] = MappingProxyType(
    {
        "font_family": StyleOption("--cv-font-family", _font_family, "one of " + ", ".join(FONT_FAMILIES)),
        "font_size": StyleOption("--cv-font-size", _pixels(12, 24), "12px to 24px"),
        "color": StyleOption("--cv-color", _color, "#rgb or #rrggbb"),
        "background_color": StyleOption("--cv-background-color", _color, "#rgb or #rrggbb"),
        "border_color": StyleOption("--cv-border-color", _color, "#rgb or #rrggbb"),
        "focus_color": StyleOption("--cv-focus-color", _color, "#rgb or #rrggbb"),
        "error_color": StyleOption("--cv-error-color", _color, "#rgb or #rrggbb"),
        "border_radius": StyleOption("--cv-border-radius", _pixels(0, 16), "0px to 16px"),
    }
)


def style_properties(options: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """CSS custom properties for the options that pass, and a warning for each one that does not."""
    properties: dict[str, str] = {}
    warnings: list[str] = []
    for name, value in options.items():
        option = STYLE_OPTIONS.get(name)
        if option is None:
            warnings.append(f"unknown style option {name[:40]!r} ignored; known: {', '.join(STYLE_OPTIONS)}")
            continue
        checked = option.check(value) if len(value) <= 40 else None
        if checked is None:
            warnings.append(f"style option {name} ignored: it must be {option.allowed}")
            continue
        properties[option.css_property] = checked
    return properties, warnings


# --- the frame proof --------------------------------------------------------------------

Mac = Callable[[bytes], str]


@dataclass(frozen=True)
class FrameClaims:
    agency_id: str
    parent_origin: str
    expires: int


def _message(claims: FrameClaims) -> bytes:
    return f"v1\0{claims.agency_id}\0{claims.expires}\0{claims.parent_origin}".encode()


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _unb64(text: str) -> str:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()


def issue_frame_proof(claims: FrameClaims, mac: Mac) -> str:
    return f"v1.{claims.agency_id}.{claims.expires}.{_b64(claims.parent_origin)}.{mac(_message(claims))}"


def read_frame_proof(proof: str, mac: Mac, *, now: int) -> FrameClaims | None:
    """The claims of a proof the vault issued and that has not expired; None for anything else."""
    parts = proof.split(".")
    if len(parts) != 5 or parts[0] != "v1" or not parts[2].isdigit() or len(proof) > 512:
        return None
    try:
        claims = FrameClaims(agency_id=parts[1], parent_origin=_unb64(parts[3]), expires=int(parts[2]))
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    if not hmac.compare_digest(mac(_message(claims)), parts[4]) or claims.expires < now:
        return None
    return claims
