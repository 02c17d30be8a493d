"""The card brands: which prefixes, lengths and CVC length make a Visa, a Mastercard, ...

Plain data on purpose: the hosted card fields mirror ``BRAND_PREFIXES`` in
JavaScript for brand-as-you-type, and a test keeps the two equal.  The longest
matching prefix wins (622126... is Discover, 6759... is Maestro).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final


class Brand(enum.StrEnum):
    VISA = "visa"
    MASTERCARD = "mastercard"
    AMEX = "amex"
    DISCOVER = "discover"
    DINERS = "diners"
    JCB = "jcb"
    UNIONPAY = "unionpay"
    MAESTRO = "maestro"


@dataclass(frozen=True, slots=True)
class BrandRule:
    """What a brand allows: card lengths and CVC length."""

    lengths: frozenset[int]
    cvc_length: int
    display_name: str


def _lengths(first: int, last: int) -> frozenset[int]:
    return frozenset(range(first, last + 1))


BRAND_RULES: Final[Mapping[Brand, BrandRule]] = MappingProxyType(
    {
        Brand.VISA: BrandRule(frozenset({13, 16, 19}), 3, "Visa"),
        Brand.MASTERCARD: BrandRule(frozenset({16}), 3, "Mastercard"),
        Brand.AMEX: BrandRule(frozenset({15}), 4, "American Express"),
        Brand.DISCOVER: BrandRule(_lengths(16, 19), 3, "Discover"),
        Brand.DINERS: BrandRule(_lengths(14, 19), 3, "Diners Club"),
        Brand.JCB: BrandRule(_lengths(16, 19), 3, "JCB"),
        Brand.UNIONPAY: BrandRule(_lengths(16, 19), 3, "UnionPay"),
        Brand.MAESTRO: BrandRule(_lengths(12, 19), 3, "Maestro"),
    }
)


@dataclass(frozen=True, slots=True)
class PrefixRange:
    """Card numbers whose first ``width`` digits lie between ``first`` and ``last`` (inclusive)."""

    first: str
    last: str
    brand: Brand

    @property
    def width(self) -> int:
        return len(self.first)

    def matches(self, digits: str) -> bool:
        # Same-width digit strings compare numerically when compared as text.
        return len(digits) >= self.width and self.first <= digits[: self.width] <= self.last


def _prefix(first: str, brand: Brand, last: str | None = None) -> PrefixRange:
    return PrefixRange(first, first if last is None else last, brand)


# The longest matching range wins, so 622126… is Discover (not UnionPay's 62)
# and 6759… is Maestro.  Equal-width ranges never overlap (a unit test checks).
BRAND_PREFIXES: Final[tuple[PrefixRange, ...]] = (
    _prefix("4", Brand.VISA),
    _prefix("51", Brand.MASTERCARD, "55"),
    _prefix("2221", Brand.MASTERCARD, "2720"),
    _prefix("34", Brand.AMEX),
    _prefix("37", Brand.AMEX),
    _prefix("6011", Brand.DISCOVER),
    _prefix("644", Brand.DISCOVER, "649"),
    _prefix("65", Brand.DISCOVER),
    _prefix("622126", Brand.DISCOVER, "622925"),
    _prefix("300", Brand.DINERS, "305"),
    _prefix("3095", Brand.DINERS),
    _prefix("36", Brand.DINERS),
    _prefix("38", Brand.DINERS, "39"),
    _prefix("3528", Brand.JCB, "3589"),
    _prefix("62", Brand.UNIONPAY),
    _prefix("81", Brand.UNIONPAY),
    _prefix("5018", Brand.MAESTRO),
    _prefix("5020", Brand.MAESTRO),
    _prefix("5038", Brand.MAESTRO),
    _prefix("5893", Brand.MAESTRO),
    _prefix("6304", Brand.MAESTRO),
    _prefix("6759", Brand.MAESTRO),
    _prefix("6761", Brand.MAESTRO, "6763"),
)
