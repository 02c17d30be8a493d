"""Tokens: ids that say nothing about the card, and the record a token's ciphertext holds.

An opaque id is ``tok_`` plus 144 random bits; a pan-shaped id is all digits,
as long as the card, keeps its last four and always fails the Luhn check, so
legacy systems with a card-number column can hold it and nothing mistakes it
for a card.  The stored record exists in plaintext only in memory between
decryption and use.  It is packed (``RECORD_FORMAT``: the digits two to a
byte, the times as 32-bit seconds, then JSON only for the optional fields) and
holds no fingerprint, which the agency's fingerprint key recomputes from the
number when the record is read: Redis keeps one record per token, and every
byte of it counts a hundred thousand times.  Records written as JSON (a
leading ``{``, fingerprint included) are still read.
"""

from __future__ import annotations

import enum
import json
import re
import secrets
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from service.domain.cards import Brand, CardNumber, parse_card_number
from service.domain.ids import card_free

OPAQUE_PREFIX = "tok_"
OPAQUE_RANDOM_BYTES = 18  # 144 bits, more than the 128 the design asks for
TOKEN_ID_PATTERN = re.compile(r"^(?:tok_[A-Za-z0-9_-]{24}|[0-9]{12,19})\Z")


class TokenFormat(enum.StrEnum):
    OPAQUE = "opaque"
    PAN_SHAPED = "pan_shaped"


def new_opaque_token_id() -> str:
    return card_free(lambda: OPAQUE_PREFIX + secrets.token_urlsafe(OPAQUE_RANDOM_BYTES))


def is_token_id(value: str) -> bool:
    """Whether ``value`` could be a token id at all (cheap check before touching Redis)."""
    return bool(TOKEN_ID_PATTERN.match(value))


def format_of(token_id: str) -> TokenFormat:
    return TokenFormat.OPAQUE if token_id.startswith(OPAQUE_PREFIX) else TokenFormat.PAN_SHAPED


#: version, digit count, digits (BCD, 0xf-padded), exp month, exp year, created, expires at.
RECORD_FORMAT = struct.Struct(">BB10sBHII")
RECORD_VERSION = 1


@dataclass(frozen=True, repr=False)
class StoredCard:
    """Everything a token's ciphertext holds; prints without the number."""

    number: CardNumber
    exp_month: int
    exp_year: int
    fingerprint: str
    created: int
    expires_at: int
    name: str | None = None
    postal_code: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"StoredCard({self.number!r}, exp={self.exp_month:02d}/{self.exp_year})"

    def to_bytes(self) -> bytes:
        digits = self.number.reveal()
        head = RECORD_FORMAT.pack(
            RECORD_VERSION,
            len(digits),
            bytes.fromhex(digits if len(digits) % 2 == 0 else digits + "f"),
            self.exp_month,
            self.exp_year,
            self.created,
            self.expires_at,
        )
        optional: dict[str, Any] = {}
        if self.name is not None:
            optional["nm"] = self.name
        if self.postal_code is not None:
            optional["pc"] = self.postal_code
        if self.metadata:
            optional["md"] = dict(self.metadata)
        if not optional:
            return head
        return head + json.dumps(optional, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes, fingerprint_of: Callable[[str], str]) -> StoredCard:
        """The record; ``fingerprint_of`` (the agency's keyed hash of the digits) supplies the fingerprint."""
        if data[:1] == b"{":
            return cls._from_json(data)
        version, length, packed, month, year, created, expires_at = RECORD_FORMAT.unpack_from(data)
        if version != RECORD_VERSION:
            raise ValueError(f"unknown token record version {version}")
        optional = json.loads(data[RECORD_FORMAT.size :]) if len(data) > RECORD_FORMAT.size else {}
        digits = packed.hex()[:length]
        return cls(
            number=parse_card_number(digits),
            exp_month=month,
            exp_year=year,
            fingerprint=fingerprint_of(digits),
            created=created,
            expires_at=expires_at,
            name=optional.get("nm"),
            postal_code=optional.get("pc"),
            metadata=optional.get("md", {}),
        )

    @classmethod
    def _from_json(cls, data: bytes) -> StoredCard:
        """The record as the first builds wrote it."""
        record = json.loads(data)
        return cls(
            number=parse_card_number(record["n"]),
            exp_month=record["m"],
            exp_year=record["y"],
            fingerprint=record["f"],
            created=record["c"],
            expires_at=record["e"],
            name=record.get("nm"),
            postal_code=record.get("pc"),
            metadata=record.get("md", {}),
        )


@dataclass(frozen=True)
class CardSummary:
    """What may be shown about a card: brand, first six, last four, expiry, fingerprint."""

    brand: Brand
    last4: str
    bin: str
    exp_month: int
    exp_year: int
    fingerprint: str


@dataclass(frozen=True)
class TokenView:
    """A token as the API shows it: never the number, never the CVC."""

    id: str
    format: TokenFormat
    card: CardSummary
    cvc_retained: bool
    created: int
    expires_at: int
    metadata: Mapping[str, str]

    @classmethod
    def of(cls, token_id: str, stored: StoredCard, *, cvc_retained: bool) -> TokenView:
        return cls(
            id=token_id,
            format=format_of(token_id),
            card=CardSummary(
                brand=stored.number.brand,
                last4=stored.number.last4,
                bin=stored.number.bin,
                exp_month=stored.exp_month,
                exp_year=stored.exp_year,
                fingerprint=stored.fingerprint,
            ),
            cvc_retained=cvc_retained,
            created=stored.created,
            expires_at=stored.expires_at,
            metadata=stored.metadata,
        )
