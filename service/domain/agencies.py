"""Agencies (tenants) and their API keys, as values: slugs, origins, key formats.

A publishable key (``pk_``) may only create tokens and pay checkout sessions, and only
from the agency's registered origins (or the vault's own card form); a secret key
(``sk_``) may do everything for its own agency.
Keys are 256 random bits; the vault keeps only keyed hashes of them.
"""

from __future__ import annotations

import enum
import re
import secrets
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from service.domain.ids import card_free
from service.domain.processing import Destination, ProcessorConfig
from service.domain.velocity import VelocityOverrides

SLUG_PATTERN = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]"})


class KeyKind(enum.StrEnum):
    PUBLISHABLE = "publishable"
    SECRET = "secret"  # noqa: S105 - a key kind, not a password


KEY_PREFIXES = {KeyKind.PUBLISHABLE: "pk_", KeyKind.SECRET: "sk_"}


class AgencyStatus(enum.StrEnum):
    ACTIVE = "active"
    DISABLED = "disabled"
    SHREDDED = "shredded"


class InvalidAgencyInput(ValueError):
    """A slug or origin an operator typed that cannot be used."""


def validate_slug(slug: str) -> str:
    if not SLUG_PATTERN.match(slug):
        raise InvalidAgencyInput(f"agency slug {slug!r}: use 1 to 63 lowercase letters, digits and inner dashes")
    return slug


def normalize_origin(origin: str) -> str:
    """``scheme://host[:port]`` exactly as browsers send it in the Origin header.

    HTTPS only, except plain HTTP on loopback hosts for local development.
    """
    try:
        parts = urlsplit(origin.strip())
        port = parts.port  # raises for a port out of range or not a number
    except ValueError:  # also an unclosed IPv6 literal ("https://[")
        raise InvalidAgencyInput(f"origin {origin!r}: must look like https://shop.example.gov") from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise InvalidAgencyInput(f"origin {origin!r}: must look like https://shop.example.gov")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username or parts.password:
        raise InvalidAgencyInput(f"origin {origin!r}: an origin has no path, query, fragment or user")
    host = parts.hostname.lower()
    netloc = f"[{host}]" if ":" in host else host
    if parts.scheme == "http" and netloc not in LOOPBACK_HOSTS:
        raise InvalidAgencyInput(f"origin {origin!r}: must be https (plain http only for localhost)")
    default_port = 443 if parts.scheme == "https" else 80
    if port and port != default_port:
        netloc = f"{netloc}:{port}"
    return f"{parts.scheme}://{netloc}"


def new_agency_id() -> str:
    return card_free(lambda: "agy_" + secrets.token_hex(8))


def new_api_key(kind: KeyKind) -> str:
    return KEY_PREFIXES[kind] + secrets.token_urlsafe(32)


def key_kind_of(api_key: str) -> KeyKind | None:
    """The kind a key claims by its prefix (verified later against its stored hash)."""
    for kind, prefix in KEY_PREFIXES.items():
        if api_key.startswith(prefix) and 16 <= len(api_key) <= 128:
            return kind
    return None


@dataclass(frozen=True)
class Agency:
    """An agency as every layer sees it; its keys live apart, in the keyring."""

    id: str
    slug: str
    status: AgencyStatus
    origins: tuple[str, ...]
    created: int
    processor: ProcessorConfig = field(default_factory=ProcessorConfig)
    max_amount: int | None = None
    destinations: tuple[Destination, ...] = ()
    velocity: VelocityOverrides = field(default_factory=VelocityOverrides)  # its own velocity limits

    @property
    def active(self) -> bool:
        return self.status is AgencyStatus.ACTIVE

    def allows_origin(self, origin: str) -> bool:
        try:
            return normalize_origin(origin) in self.origins
        except InvalidAgencyInput:
            return False

    def public(self) -> dict[str, object]:
        return {
            "id": self.id,
            "slug": self.slug,
            "status": str(self.status),
            "origins": list(self.origins),
            "created": self.created,
            "processor": self.processor.public(),
            "max_amount": self.max_amount,
            "destinations": [d.public() for d in self.destinations],
            "velocity": self.velocity.public(),
        }
