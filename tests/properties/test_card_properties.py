"""Properties of card parsing, the Luhn check and brand detection (``service.domain.cards``, ``brands``)."""

from __future__ import annotations

import re
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.domain.brands import BRAND_PREFIXES, BRAND_RULES, Brand
from service.domain.cards import (
    CardNumberInvalid,
    detect_brand,
    luhn_check_digit,
    luhn_valid,
    parse_card_number,
)
from service.domain.text_scan import accepted_brand
from tests.unit.domain import (
    DIGITS,
    branded_card_numbers,
    card_numbers,
    digit_strings,
    reference_luhn_valid,
)

from . import PROPERTIES


@st.composite
def written_as_people_do(draw: st.DrawFn, number: str) -> str:
    """``number`` cut into groups of any sizes, joined by spaces or dashes, maybe padded with them."""
    cuts = sorted(draw(st.sets(st.integers(1, len(number) - 1), max_size=len(number) - 1)))
    pieces = [number[a:b] for a, b in zip([0, *cuts], [*cuts, len(number)], strict=True)]
    separators = draw(st.lists(st.sampled_from([" ", "-", "  ", " - "]), min_size=len(pieces), max_size=len(pieces)))
    padding = draw(st.sampled_from(["", " ", "-"]))
    return padding + "".join(p + s for p, s in zip(pieces, [*separators[:-1], ""], strict=True)) + padding


def reference_brand(digits: str) -> Brand | None:
    """The longest BRAND_PREFIXES range that the digits fall in, by integer comparison (independent of matches())."""
    best: tuple[int, Brand] | None = None
    for prefix in BRAND_PREFIXES:
        width = len(prefix.first)
        inside = len(digits) >= width and int(prefix.first) <= int(digits[:width]) <= int(prefix.last)
        if inside and (best is None or width > best[0]):
            best = (width, prefix.brand)
    return None if best is None else best[1]


class TestParsing:
    @PROPERTIES
    @given(branded_card_numbers().flatmap(lambda pair: st.tuples(st.just(pair), written_as_people_do(pair[0]))))
    def test_any_way_of_writing_a_card_parses_to_its_digits_and_brand(
        self, case: tuple[tuple[str, Brand], str]
    ) -> None:
        """Grouped any way with spaces and dashes, a valid card parses back to exactly its digits and brand."""
        (number, brand), written = case
        card = parse_card_number(written)
        assert card.reveal() == number
        assert (card.brand, card.length, card.bin, card.last4) == (brand, len(number), number[:6], number[-4:])
        assert card.masked() == "*" * (len(number) - 4) + number[-4:]

    @PROPERTIES
    @given(card_numbers())
    def test_no_text_form_of_a_card_shows_more_than_its_last_four(self, number: str) -> None:
        """repr, str and format of a parsed card hold no run of digits but the last four."""
        card = parse_card_number(number)
        for shown in (repr(card), str(card), f"{card}", f"{card:>40}"):
            assert re.findall(r"[0-9]+", shown) == [number[-4:]]

    @PROPERTIES
    @given(card_numbers(), st.data())
    def test_a_foreign_character_anywhere_is_a_format_error_that_does_not_echo(
        self, number: str, data: st.DataObject
    ) -> None:
        """Inserting any character other than a digit, space or dash fails with card_number_format, input unseen."""
        position = data.draw(st.integers(0, len(number)))
        foreign = data.draw(st.characters(exclude_characters=DIGITS + " -", exclude_categories=["Cs"]))
        with pytest.raises(CardNumberInvalid) as raised:
            parse_card_number(number[:position] + foreign + number[position:])
        assert raised.value.code == CardNumberInvalid.FORMAT
        assert number[:6] not in str(raised.value)

    @PROPERTIES
    @given(st.text(alphabet=DIGITS + " -", max_size=30))
    def test_parse_either_succeeds_consistently_or_names_the_first_broken_rule(self, raw: str) -> None:
        """Any string of digits, spaces and dashes parses exactly when length, Luhn, brand and brand length hold."""
        digits = raw.replace(" ", "").replace("-", "")
        brand = detect_brand(digits)
        valid = (
            bool(digits)
            and 12 <= len(digits) <= 19
            and reference_luhn_valid(digits)
            and brand is not None
            and len(digits) in BRAND_RULES[brand].lengths
        )
        if valid:
            assert parse_card_number(raw).reveal() == digits
        else:
            with pytest.raises(CardNumberInvalid):
                parse_card_number(raw)

    @PROPERTIES
    @given(st.one_of(card_numbers(), digit_strings(12, 19)))
    def test_the_scanner_accepts_exactly_what_parsing_accepts(self, digits: str) -> None:
        """text_scan.accepted_brand (free-text redaction) agrees with parse_card_number on Luhn-valid numbers."""
        if not reference_luhn_valid(digits):
            return
        try:
            parsed: Brand | None = parse_card_number(digits).brand
        except CardNumberInvalid:
            parsed = None
        assert accepted_brand(digits) == parsed


class TestLuhn:
    @PROPERTIES
    @given(digit_strings(0, 25))
    def test_exactly_one_check_digit_completes_any_prefix(self, partial: str) -> None:
        """Of the ten digits, only luhn_check_digit's makes the number valid."""
        completing = [d for d in DIGITS if luhn_valid(partial + d)]
        assert completing == [luhn_check_digit(partial)]

    @PROPERTIES
    @given(card_numbers(), st.data())
    def test_swapping_two_neighbouring_digits_is_caught_except_09(self, number: str, data: st.DataObject) -> None:
        """Luhn catches every adjacent transposition of different digits except 0 and 9."""
        index = data.draw(st.integers(0, len(number) - 2))
        a, b = number[index], number[index + 1]
        swapped = number[:index] + b + a + number[index + 2 :]
        if a == b or {a, b} == {"0", "9"}:
            assert luhn_valid(swapped)
        else:
            assert not luhn_valid(swapped)

    @PROPERTIES
    @given(st.text(max_size=25).filter(lambda s: not (s.isascii() and s.isdigit())))
    def test_anything_but_ascii_digits_is_not_valid(self, text: str) -> None:
        """Empty strings, separators, letters and non-ASCII digits never pass."""
        assert luhn_valid(text) is False

    @PROPERTIES
    @given(digit_strings(1, 40))
    def test_agrees_with_the_textbook_algorithm(self, digits: str) -> None:
        """luhn_valid equals the naive right-to-left doubling, for every length."""
        assert luhn_valid(digits) == reference_luhn_valid(digits)


class TestBrandDetection:
    @PROPERTIES
    @given(digit_strings(0, 19))
    def test_the_longest_matching_prefix_range_wins(self, digits: str) -> None:
        """detect_brand equals an independent longest-range search over BRAND_PREFIXES."""
        assert detect_brand(digits) == reference_brand(digits)

    @PROPERTIES
    @given(digit_strings(6, 19), st.integers(6, 19))
    def test_six_digits_settle_the_brand(self, digits: str, typed: int) -> None:
        """No prefix range is wider than six digits, so more digits never change the brand."""
        assert detect_brand(digits[:typed]) == detect_brand(digits[:6])

    @PROPERTIES
    @given(digit_strings(1, 19), st.data())
    def test_spaces_and_dashes_are_ignored_other_characters_refused(self, digits: str, data: st.DataObject) -> None:
        """Separators anywhere change nothing; a letter anywhere gives None."""
        position = data.draw(st.integers(0, len(digits)))
        separator = data.draw(st.sampled_from([" ", "-", " -"]))
        assert detect_brand(digits[:position] + separator + digits[position:]) == detect_brand(digits)
        letter = data.draw(st.sampled_from(string.ascii_letters + "./٣"))
        assert detect_brand(digits[:position] + letter + digits[position:]) is None
