"""Shared test data for the domain tests: the public test cards and a Luhn helper independent of the code.

Only the published test card numbers below appear as literals; every other
Luhn-valid number is generated at run time with ``with_check_digit``, which is
deliberately a separate, naive implementation so the tests do not check the
production Luhn code against itself.
"""

from __future__ import annotations

from hypothesis import strategies as st

from service.domain.cards import Brand

DIGITS = "0123456789"

TEST_CARDS: dict[str, Brand] = {
    "4242424242424242": Brand.VISA,
    "4000056655665556": Brand.VISA,
    "5555555555554444": Brand.MASTERCARD,
    "2223003122003222": Brand.MASTERCARD,
    "5200828282828210": Brand.MASTERCARD,
    "5105105105105100": Brand.MASTERCARD,
    "378282246310005": Brand.AMEX,
    "371449635398431": Brand.AMEX,
    "6011111111111117": Brand.DISCOVER,
    "6011000990139424": Brand.DISCOVER,
    "3056930009020004": Brand.DINERS,
    "36227206271667": Brand.DINERS,
    "3566002020360505": Brand.JCB,
    "6200000000000005": Brand.UNIONPAY,
    "4000000000000002": Brand.VISA,
    "4111111111111111": Brand.VISA,
    "5454545454545454": Brand.MASTERCARD,
    "6759649826438453": Brand.MAESTRO,
    "4012888888881881": Brand.VISA,
}

# Prefixes that no longer prefix range overrides, with lengths the brand allows.
GENERATOR_PREFIXES: tuple[tuple[str, tuple[int, ...], Brand], ...] = (
    ("4", (13, 16, 19), Brand.VISA),
    ("51", (16,), Brand.MASTERCARD),
    ("2720", (16,), Brand.MASTERCARD),
    ("34", (15,), Brand.AMEX),
    ("6011", (16, 17, 18, 19), Brand.DISCOVER),
    ("622126", (16, 19), Brand.DISCOVER),
    ("3095", (14, 15, 16, 17, 18, 19), Brand.DINERS),
    ("3589", (16, 19), Brand.JCB),
    ("6200", (16, 19), Brand.UNIONPAY),
    ("81", (16, 17), Brand.UNIONPAY),
    ("6759", (12, 13, 14, 15, 16, 17, 18, 19), Brand.MAESTRO),
)


def reference_luhn_total(digits: str) -> int:
    """The Luhn sum done the textbook way: double every second digit from the right, minus 9 above 9."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2 == 1:
            value = value * 2 - 9 if value >= 5 else value * 2
        total += value
    return total


def reference_luhn_valid(digits: str) -> bool:
    return reference_luhn_total(digits) % 10 == 0


def with_check_digit(partial: str) -> str:
    """``partial`` plus the one digit that makes it Luhn-valid."""
    return next(partial + digit for digit in DIGITS if reference_luhn_valid(partial + digit))


def digit_strings(min_size: int, max_size: int) -> st.SearchStrategy[str]:
    return st.text(alphabet=DIGITS, min_size=min_size, max_size=max_size)


@st.composite
def branded_card_numbers(draw: st.DrawFn) -> tuple[str, Brand]:
    """A Luhn-valid number of an allowed length for its brand, made up at run time."""
    prefix, lengths, brand = draw(st.sampled_from(GENERATOR_PREFIXES))
    length = draw(st.sampled_from(lengths))
    body = draw(digit_strings(length - len(prefix) - 1, length - len(prefix) - 1))
    return with_check_digit(prefix + body), brand


@st.composite
def luhn_valid_numbers(draw: st.DrawFn, min_length: int = 12, max_length: int = 19) -> str:
    """Any Luhn-valid digit string of the given lengths, branded or not."""
    length = draw(st.integers(min_length, max_length))
    return with_check_digit(draw(digit_strings(length - 1, length - 1)))


def card_numbers() -> st.SearchStrategy[str]:
    """The public test cards and generated ones, as digit strings that ``parse_card_number`` accepts."""
    return st.one_of(st.sampled_from(list(TEST_CARDS)), branded_card_numbers().map(lambda pair: pair[0]))
