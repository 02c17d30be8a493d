"""Card data as types that cannot leak: parsing, brands, Luhn, expiry, pan-shaped ids.

Every other layer handles card data only through the types defined here.
``CardNumber`` and ``Cvc`` keep their digits in a private slot and show only a
masked form through ``repr()``, ``str()``, ``format()`` and f-strings; they
refuse pickling, ``vars()`` and hashing.  The single way to read the digits is
an explicit ``reveal()`` call, so ``grep -rn 'reveal()'`` lists every place the
plaintext is used.  Error messages describe the problem, never the value.

The brand table is plain data (prefix ranges, lengths, CVC length) so that the
brand-as-you-type code in the browser can mirror ``detect_brand`` one-to-one.
"""

from __future__ import annotations

import calendar
import datetime
import functools
import hmac
import secrets
from collections.abc import Callable
from typing import Final, NoReturn, Self, SupportsIndex, final

from service.domain.brands import BRAND_PREFIXES, BRAND_RULES, Brand, BrandRule, PrefixRange

__all__ = [
    "BRAND_PREFIXES",
    "BRAND_RULES",
    "Brand",
    "BrandRule",
    "CardError",
    "CardExpired",
    "CardNumber",
    "CardNumberInvalid",
    "Cvc",
    "CvcInvalid",
    "ExpiryInvalid",
    "PrefixRange",
    "detect_brand",
    "expiry_end",
    "luhn_check_digit",
    "luhn_valid",
    "make_pan_shaped",
    "parse_card_number",
    "parse_cvc",
    "validate_expiry",
]

MIN_CARD_LENGTH: Final = 12
MAX_CARD_LENGTH: Final = 19
BIN_LENGTH: Final = 6
LAST4_LENGTH: Final = 4
FIRST_EXPIRY_YEAR: Final = 2000  # anything earlier is a typo, not an old card
MAX_EXPIRY_YEARS_AHEAD: Final = 25

_SEPARATORS: Final = (" ", "-")
_DIGITS: Final = "0123456789"
_DIGIT_VALUES: Final = bytes.maketrans(b"0123456789", bytes(range(10)))
# Luhn doubles every second digit from the right and subtracts 9 above 9.
_DOUBLED_DIGIT_VALUES: Final = bytes.maketrans(b"0123456789", bytes([0, 2, 4, 6, 8, 1, 3, 5, 7, 9]))


# --- errors -----------------------------------------------------------------


class CardError(ValueError):
    """A card field is unusable; ``code`` is stable for machines, the message never holds the input."""

    def __init__(self, message: str, *, code: str, field: str) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.field = field

    def __reduce__(self) -> tuple[Callable[[type[CardError], str, str, str], CardError], tuple[object, ...]]:
        # Subclass constructors take different arguments; rebuild through the base so pickle and copy work.
        return _rebuild_card_error, (type(self), self.message, self.code, self.field)


def _rebuild_card_error(cls: type[CardError], message: str, code: str, field: str) -> CardError:
    error = cls.__new__(cls)
    CardError.__init__(error, message, code=code, field=field)
    return error


class CardNumberInvalid(CardError):
    FORMAT: Final = "card_number_format"
    LENGTH: Final = "card_number_length"
    LUHN: Final = "card_number_luhn"
    BRAND_UNSUPPORTED: Final = "card_brand_unsupported"
    FIELD: Final = "card.number"

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message, code=code, field=self.FIELD)


class CardExpired(CardError):
    CODE: Final = "card_expired"
    FIELD: Final = "card.exp_year"

    def __init__(self) -> None:
        super().__init__("The card has expired.", code=self.CODE, field=self.FIELD)


class ExpiryInvalid(CardError):
    CODE: Final = "card_expiry_invalid"
    MONTH_FIELD: Final = "card.exp_month"
    YEAR_FIELD: Final = "card.exp_year"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message, code=self.CODE, field=field)


class CvcInvalid(CardError):
    CODE: Final = "card_cvc_invalid"
    FIELD: Final = "card.cvc"

    def __init__(self, message: str) -> None:
        super().__init__(message, code=self.CODE, field=self.FIELD)


# --- digits and Luhn --------------------------------------------------------


def _is_ascii_digits(text: str) -> bool:
    """Non-empty and only 0-9 (``str.isdigit`` alone also accepts '²' and '٣')."""
    return text.isascii() and text.isdigit()


def _strip_separators(raw: str) -> str:
    for separator in _SEPARATORS:
        raw = raw.replace(separator, "")
    return raw


def _luhn_total(digits: str, *, rightmost_doubled: bool) -> int:
    from_right = digits.encode("ascii")[::-1]
    first_doubled = 0 if rightmost_doubled else 1
    doubled = from_right[first_doubled::2]
    plain = from_right[1 - first_doubled :: 2]
    return sum(doubled.translate(_DOUBLED_DIGIT_VALUES)) + sum(plain.translate(_DIGIT_VALUES))


def luhn_valid(digits: str) -> bool:
    """Whether ``digits`` (ASCII digits, no separators) passes the Luhn check; False for anything else."""
    return _is_ascii_digits(digits) and _luhn_total(digits, rightmost_doubled=False) % 10 == 0


def luhn_check_digit(partial: str) -> str:
    """The digit to append to ``partial`` so that the result passes the Luhn check."""
    if partial and not _is_ascii_digits(partial):
        raise ValueError("luhn_check_digit() needs ASCII digits only")
    return str(-_luhn_total(partial, rightmost_doubled=True) % 10)


#: The most leading digits any brand range looks at.
_LONGEST_PREFIX: Final = max(prefix_range.width for prefix_range in BRAND_PREFIXES)


def detect_brand(digits_prefix: str) -> Brand | None:
    """The brand of a (possibly partial) card number, or None while no prefix range matches.

    Spaces and dashes are ignored; any other non-digit gives None.  Works as the
    user types: "4" is already Visa, "5" is still None, "62" is UnionPay until the
    sixth digit shows whether it falls in Discover's 622126-622925.
    """
    digits = _strip_separators(digits_prefix)
    if not _is_ascii_digits(digits):
        return None
    return _brand_of_prefix(digits[:_LONGEST_PREFIX])


@functools.lru_cache(maxsize=4096)
def _brand_of_prefix(digits: str) -> Brand | None:
    """The longest range matching at most ``_LONGEST_PREFIX`` leading digits (all a brand depends on), cached:
    every token request and every token read parses a number, and most share a few issuer prefixes."""
    best: PrefixRange | None = None
    for prefix_range in BRAND_PREFIXES:
        if prefix_range.matches(digits) and (best is None or prefix_range.width > best.width):
            best = prefix_range
    return None if best is None else best.brand


# --- secret values ----------------------------------------------------------

_CONSTRUCTION_KEY: Final = object()


class _SecretDigits:
    """Digits that never show themselves: masked repr/str/format, no pickling, no hashing, immutable."""

    __slots__ = ("__digits",)
    __digits: str

    def __init__(self, construction_key: object, digits: str) -> None:
        if construction_key is not _CONSTRUCTION_KEY:
            raise TypeError(f"{type(self).__name__} is built by its parse function, not directly")
        object.__setattr__(self, "_SecretDigits__digits", digits)

    def reveal(self) -> str:
        """The plaintext digits: the only way to get them, so every use is greppable."""
        return self.__digits

    def _masked(self) -> str:
        raise NotImplementedError

    def __repr__(self) -> str:
        return self._masked()

    def __str__(self) -> str:
        return self._masked()

    def __format__(self, format_spec: str) -> str:
        return format(self._masked(), format_spec)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _SecretDigits) or type(other) is not type(self):
            return NotImplemented
        return hmac.compare_digest(self.__digits, other.__digits)

    __hash__ = None  # type: ignore[assignment]  # unhashable: card data must not become dict keys

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __reduce__(self) -> NoReturn:
        raise TypeError(f"{type(self).__name__} cannot be pickled")

    def __reduce_ex__(self, protocol: SupportsIndex) -> NoReturn:
        raise TypeError(f"{type(self).__name__} cannot be pickled")

    def __getstate__(self) -> NoReturn:
        raise TypeError(f"{type(self).__name__} cannot be pickled")

    def __copy__(self) -> Self:
        return self  # immutable, so a copy may be the object itself

    def __deepcopy__(self, memo: dict[int, object]) -> Self:
        return self


@final
class CardNumber(_SecretDigits):
    """A validated card number; build it with ``parse_card_number``."""

    __slots__ = ("_bin", "_brand", "_last4", "_length")
    _brand: Brand
    _bin: str
    _last4: str
    _length: int

    def __init__(self, construction_key: object, digits: str, brand: Brand) -> None:
        super().__init__(construction_key, digits)
        object.__setattr__(self, "_brand", brand)
        object.__setattr__(self, "_bin", digits[:BIN_LENGTH])
        object.__setattr__(self, "_last4", digits[-LAST4_LENGTH:])
        object.__setattr__(self, "_length", len(digits))

    @property
    def brand(self) -> Brand:
        return self._brand

    @property
    def bin(self) -> str:
        """The first six digits (the issuer identification number)."""
        return self._bin

    @property
    def last4(self) -> str:
        return self._last4

    @property
    def length(self) -> int:
        return self._length

    def masked(self) -> str:
        """Stars for every digit but the last four: ``************4242``."""
        return "*" * (self._length - LAST4_LENGTH) + self._last4

    def _masked(self) -> str:
        return f"CardNumber({self._brand} ****{self._last4})"


@final
class Cvc(_SecretDigits):
    """A validated card security code; build it with ``parse_cvc``."""

    __slots__ = ()

    def _masked(self) -> str:
        return "Cvc(***)"


def parse_card_number(raw: str) -> CardNumber:
    """Validate ``raw`` (spaces and dashes allowed) in order: format, length, Luhn, brand, brand length."""
    digits = _strip_separators(raw)
    if not _is_ascii_digits(digits):
        raise CardNumberInvalid(
            CardNumberInvalid.FORMAT, "The card number must contain only digits, spaces and dashes."
        )
    if not MIN_CARD_LENGTH <= len(digits) <= MAX_CARD_LENGTH:
        raise CardNumberInvalid(
            CardNumberInvalid.LENGTH,
            f"The card number must have {MIN_CARD_LENGTH} to {MAX_CARD_LENGTH} digits.",
        )
    if not luhn_valid(digits):
        raise CardNumberInvalid(CardNumberInvalid.LUHN, "The card number is not valid; check for typos.")
    brand = detect_brand(digits)
    if brand is None:
        raise CardNumberInvalid(CardNumberInvalid.BRAND_UNSUPPORTED, "This card brand is not accepted.")
    rule = BRAND_RULES[brand]
    if len(digits) not in rule.lengths:
        raise CardNumberInvalid(
            CardNumberInvalid.LENGTH,
            f"The card number has the wrong number of digits for a {rule.display_name} card.",
        )
    return CardNumber(_CONSTRUCTION_KEY, digits, brand)


def parse_cvc(raw: str, brand: Brand) -> Cvc:
    """Validate a security code for ``brand`` (surrounding whitespace is ignored)."""
    digits = raw.strip()
    if not _is_ascii_digits(digits):
        raise CvcInvalid("The security code must contain only digits.")
    rule = BRAND_RULES[brand]
    if len(digits) != rule.cvc_length:
        raise CvcInvalid(f"The security code of a {rule.display_name} card has {rule.cvc_length} digits.")
    return Cvc(_CONSTRUCTION_KEY, digits)


# --- expiry -----------------------------------------------------------------


def _four_digit_year(year: int) -> int:
    return 2000 + year if 0 <= year <= 99 else year


def _check_month(month: int) -> None:
    if not 1 <= month <= 12:
        raise ExpiryInvalid(ExpiryInvalid.MONTH_FIELD, "The expiry month must be between 1 and 12.")


def validate_expiry(month: int, year: int, *, today: datetime.date) -> tuple[int, int]:
    """Return ``(month, four_digit_year)`` for a card usable on ``today``.

    A two-digit year (0-99) means 2000 + year.  A card is valid through the last
    day of its expiry month, so only a month before today's is ``CardExpired``
    (that includes earlier years).  Years before 2000 or more than 25 years ahead
    are ``ExpiryInvalid``.
    """
    _check_month(month)
    full_year = _four_digit_year(year)
    if not FIRST_EXPIRY_YEAR <= full_year <= today.year + MAX_EXPIRY_YEARS_AHEAD:
        raise ExpiryInvalid(
            ExpiryInvalid.YEAR_FIELD,
            f"The expiry year must be between {today.year} and {today.year + MAX_EXPIRY_YEARS_AHEAD}.",
        )
    if (full_year, month) < (today.year, today.month):
        raise CardExpired()
    return month, full_year


def expiry_end(month: int, year: int) -> datetime.datetime:
    """The last instant a card is valid: 23:59:59 UTC on the last day of its expiry month."""
    _check_month(month)
    full_year = _four_digit_year(year)
    if not datetime.MINYEAR <= full_year <= datetime.MAXYEAR:
        raise ExpiryInvalid(ExpiryInvalid.YEAR_FIELD, "The expiry year is out of range.")
    last_day = calendar.monthrange(full_year, month)[1]
    return datetime.datetime(full_year, month, last_day, 23, 59, 59, tzinfo=datetime.UTC)


# --- pan-shaped ids ---------------------------------------------------------


def make_pan_shaped(card: CardNumber, rand: Callable[[int], int] = secrets.randbelow) -> str:
    """Digits as long as ``card``, ending in its last four, random elsewhere, never Luhn-valid.

    ``rand(n)`` must return an int in ``range(n)``.  The first digit is never 0.
    """
    random_count = card.length - LAST4_LENGTH
    head = str(1 + rand(9)) + "".join(_DIGITS[rand(10)] for _ in range(random_count - 1))
    candidate = head + card.last4
    if luhn_valid(candidate):
        candidate = _change_one_random_digit(candidate, random_count, rand)
    return candidate


def _change_one_random_digit(digits: str, random_count: int, rand: Callable[[int], int]) -> str:
    """Replace one of the first ``random_count`` digits; any single-digit change breaks Luhn."""
    position = rand(random_count)
    forbidden = {digits[position], "0"} if position == 0 else {digits[position]}
    choices = [digit for digit in _DIGITS if digit not in forbidden]
    return digits[:position] + choices[rand(len(choices))] + digits[position + 1 :]
