"""Tests for ``service.domain.redaction``: finding card numbers in text and scrubbing log payloads."""

from __future__ import annotations

import dataclasses
import re
import string
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from types import MappingProxyType

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.domain.cards import parse_card_number, parse_cvc
from service.domain.redaction import (
    CIRCULAR,
    MAX_DEPTH,
    REDACTED,
    SENSITIVE_KEYS,
    TOO_DEEP,
    UNREPRESENTABLE,
    CardMatch,
    contains_card_number,
    find_card_numbers,
    redact_card_numbers,
    redact_value,
)

from . import TEST_CARDS, digit_strings, luhn_valid_numbers, reference_luhn_valid, with_check_digit

VISA = "4242424242424242"
SEPARATORS = " .-"


def spans(text: str) -> list[str]:
    return [text[match.start : match.end] for match in find_card_numbers(text)]


def groups_of(number: str, sizes: list[int], separators: list[str]) -> str:
    """``number`` cut into groups of the given sizes (the rest in a last group), joined by ``separators``."""
    parts: list[str] = []
    rest = number
    for size in sizes:
        if len(rest) <= size:
            break
        parts.append(rest[:size])
        rest = rest[size:]
    parts.append(rest)
    return "".join(part + separator for part, separator in zip(parts[:-1], separators, strict=False)) + parts[-1]


@st.composite
def formatted_numbers(draw: st.DrawFn) -> tuple[str, str]:
    """A generated Luhn-valid 12-19 digit number and a rendering of it in groups with single separators."""
    number = draw(luhn_valid_numbers())
    sizes = draw(st.lists(st.integers(1, 8), max_size=19))
    separators = draw(st.lists(st.sampled_from(SEPARATORS), min_size=19, max_size=19))
    return number, groups_of(number, sizes, separators) if sizes else number


@st.composite
def texts_with_numbers(draw: st.DrawFn) -> str:
    """Text mixing formatted card numbers, stray digits, separators and letters."""
    pieces = st.one_of(
        formatted_numbers().map(lambda pair: pair[1]),
        digit_strings(1, 6),
        st.sampled_from([" ", "-", ".", "  ", "x", "ab", "\n", "/"]),
    )
    return "".join(draw(st.lists(pieces, max_size=12)))


def reference_valid_windows(text: str) -> Iterator[tuple[int, int]]:
    """Every (start, end) of consecutive whole digit groups, joined by single separators, that is a card."""
    for run in re.finditer(r"[0-9]+(?:[ .-][0-9]+)*", text):
        groups = [(run.start() + g.start(), run.start() + g.end()) for g in re.finditer(r"[0-9]+", run.group())]
        for first in range(len(groups)):
            for last in range(first, len(groups)):
                start, end = groups[first][0], groups[last][1]
                digits = re.sub(r"[ .-]", "", text[start:end])
                if 12 <= len(digits) <= 19 and reference_luhn_valid(digits):
                    yield start, end


JSON_LIKE = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text() | texts_with_numbers(),
    lambda children: st.lists(children) | st.dictionaries(st.text() | texts_with_numbers(), children),
    max_leaves=10,
)


class TestFindCardNumbers:
    @pytest.mark.parametrize("number", list(TEST_CARDS))
    def test_finds_every_public_test_card(self, number: str) -> None:
        """Each published test card is found as one match covering it, with its last four."""
        assert find_card_numbers(number) == [CardMatch(0, len(number), number[-4:])]

    @pytest.mark.parametrize(
        "formatted",
        [
            "4242 4242 4242 4242",
            "4242-4242-4242-4242",
            "4242.4242.4242.4242",
            "4242 4242-4242.4242",
            "3782 822463 10005",
            "4242424242424242",
            "42 42 42 42 42 42 42 42",
        ],
    )
    def test_finds_numbers_grouped_by_single_separators(self, formatted: str) -> None:
        """Groups joined by single spaces, dashes or dots are found as one number."""
        assert spans(f"card: {formatted}, thanks") == [formatted]

    @pytest.mark.parametrize(
        ("text", "start"),
        [
            ("x4242424242424242y", 1),
            ("card=4242424242424242;", 5),
            ("pan:4242-4242-4242-4242/exp", 4),
            ('{"number": "4242424242424242"}', 12),
            ("4242424242424242", 0),
        ],
    )
    def test_finds_numbers_inside_other_text(self, text: str, start: int) -> None:
        """A number touching letters or punctuation is found with exact offsets."""
        [match] = find_card_numbers(text)
        assert match.start == start
        assert re.sub(r"[ .-]", "", text[match.start : match.end]) == VISA
        assert match.last4 == "4242"

    def test_finds_several_in_order(self) -> None:
        """Several numbers in one text are all found, in order, without overlap."""
        text = "first 4242424242424242, then 3782 822463 10005 and\n6011-1111-1111-1117."
        assert [(m.last4, text[m.start : m.end]) for m in find_card_numbers(text)] == [
            ("4242", "4242424242424242"),
            ("0005", "3782 822463 10005"),
            ("1117", "6011-1111-1111-1117"),
        ]

    def test_finds_generated_numbers_of_every_length(self) -> None:
        """Luhn-valid runs of 12 through 19 digits are all found, brand or no brand."""
        for length in range(12, 20):
            number = with_check_digit("9" * (length - 1))
            assert find_card_numbers(f"id {number} end") == [CardMatch(3, 3 + length, number[-4:])]

    def test_match_holds_only_offsets_and_last_four(self) -> None:
        """CardMatch is a frozen dataclass of start, end and last4: no other digits are kept."""
        assert [field.name for field in dataclasses.fields(CardMatch)] == ["start", "end", "last4"]
        match = CardMatch(0, 16, "4242")
        with pytest.raises(dataclasses.FrozenInstanceError):
            match.last4 = "0000"  # type: ignore[misc]


class TestNotCardNumbers:
    @pytest.mark.parametrize("length", [11, 20, 21, 40])
    def test_ignores_luhn_valid_runs_of_the_wrong_length(self, length: int) -> None:
        """A plain Luhn-valid run of 11 or 20+ digits is not a card number."""
        number = with_check_digit("4" * (length - 1))
        assert find_card_numbers(f"ref {number} ok") == []

    def test_ignores_cards_inside_longer_digit_runs(self) -> None:
        """A card's digits directly followed or preceded by more digits are part of a longer number."""
        assert find_card_numbers(VISA + "0000") == []
        assert find_card_numbers("1" + VISA) == []

    @pytest.mark.parametrize(
        "text",
        [
            "4242424242424241",
            "5555-5555-5555-4443",
            "4000 0566 5566 5557",
            "6011.1111.1111.1118",
            "3782 822463 10006",
        ],
    )
    def test_ignores_luhn_invalid_runs(self, text: str) -> None:
        """A 12-19 digit run that fails the Luhn check, with no valid run of whole groups inside, is ignored."""
        assert find_card_numbers(text) == []

    @pytest.mark.parametrize(
        "text",
        [
            "+1 415-555-0132",
            "(415) 555-0132",
            "415.555.0132",
            "+1-800-555-0199",
            "call 0800 555 0199 now",
        ],
    )
    def test_ignores_phone_numbers(self, text: str) -> None:
        """Phone numbers (under twelve digits) are left alone."""
        assert find_card_numbers(text) == []

    @pytest.mark.parametrize(
        "text",
        ["2025-06-15", "15.06.2025", "2025-06-15T10:30:00Z", "2025-06-15 10:30:00.123", "06/2025", "12/25"],
    )
    def test_ignores_dates_and_times(self, text: str) -> None:
        """Dates and timestamps are left alone."""
        assert find_card_numbers(text) == []

    @pytest.mark.parametrize("text", ["", "no digits here", "4242", "-", " . "])
    def test_ignores_text_without_long_runs(self, text: str) -> None:
        """Empty text and short numbers give no matches."""
        assert find_card_numbers(text) == []


class TestNumbersNextToOtherNumbers:
    def test_finds_a_card_followed_by_its_cvc(self) -> None:
        """In "4242 4242 4242 4242 123" the card is found although the whole run is 19 digits."""
        assert spans("card 4242 4242 4242 4242 123 exp 12/30") == ["4242 4242 4242 4242"]

    def test_finds_a_card_after_a_date(self) -> None:
        """A date joined to the card by a single space does not hide it."""
        assert spans("2024-01-15 4242424242424242") == [VISA]

    def test_finds_grouped_cards_inside_longer_grouped_runs(self) -> None:
        """Whole groups inside a longer grouped run are still checked, so the card is redacted."""
        text = "4242 4242 4242 4242 4242"
        assert contains_card_number(text)
        assert "4242 4242 4242 4242" not in redact_card_numbers(text)

    def test_valid_leading_groups_of_a_mistyped_card_are_redacted(self) -> None:
        """The price of checking group windows: 4242 4242 4242 is Luhn-valid, so a mistyped card loses it."""
        assert spans("4242 4242 4242 4241") == ["4242 4242 4242"]

    def test_leaves_no_card_after_a_short_number(self) -> None:
        """With a quantity in front, redaction still leaves no complete card behind."""
        redacted = redact_card_numbers("qty 1 4242 4242 4242 4242")
        assert not contains_card_number(redacted)
        assert "4242 4242 4242 4242" not in redacted


class TestMatchingProperties:
    @given(
        formatted_numbers(),
        st.text(alphabet=string.ascii_letters, max_size=20),
        st.text(alphabet=string.ascii_letters, max_size=20),
    )
    def test_finds_any_valid_number_between_letters(self, card: tuple[str, str], before: str, after: str) -> None:
        """Any Luhn-valid 12-19 digit number, however grouped, embedded in letters is found exactly once."""
        number, formatted = card
        start = len(before)
        matches = find_card_numbers(before + formatted + after)
        assert matches == [CardMatch(start, start + len(formatted), number[-4:])]

    @given(texts_with_numbers())
    def test_every_match_is_a_whole_valid_window(self, text: str) -> None:
        """Each match is whole digit groups joined by single separators, 12-19 digits, Luhn-valid."""
        previous_end = 0
        for match in find_card_numbers(text):
            assert previous_end <= match.start < match.end
            segment = text[match.start : match.end]
            digits = re.sub(r"[ .-]", "", segment)
            assert re.fullmatch(r"[0-9]+(?:[ .-][0-9]+)*", segment)
            assert 12 <= len(digits) <= 19
            assert reference_luhn_valid(digits)
            assert match.last4 == digits[-4:]
            assert match.start == 0 or not text[match.start - 1].isdigit()
            assert match.end == len(text) or not text[match.end].isdigit()
            previous_end = match.end

    @given(texts_with_numbers())
    def test_every_valid_window_overlaps_a_match(self, text: str) -> None:
        """No card-shaped window (checked by brute force) escapes: each overlaps some match."""
        matches = find_card_numbers(text)
        for start, end in reference_valid_windows(text):
            assert any(match.start < end and start < match.end for match in matches)

    @given(texts_with_numbers())
    def test_redacted_text_contains_no_card(self, text: str) -> None:
        """After redaction no card number is left, and redacting again changes nothing."""
        redacted = redact_card_numbers(text)
        assert not contains_card_number(redacted)
        assert redact_card_numbers(redacted) == redacted

    @given(st.text())
    def test_never_raises_on_any_text(self, text: str) -> None:
        """Arbitrary Unicode text is searched without error, and contains_card_number agrees with find."""
        assert contains_card_number(text) is bool(find_card_numbers(text))


class TestRedactCardNumbers:
    def test_default_replacement_keeps_the_last_four(self) -> None:
        """By default each number becomes [REDACTED CARD ****1234] with its real last four."""
        assert redact_card_numbers("pay with 3782 822463 10005 now") == "pay with [REDACTED CARD ****0005] now"

    def test_custom_replacement(self) -> None:
        """A replacement callable decides the text that replaces each match."""
        text = "a 4242-4242-4242-4242 b 6011111111111117 c"
        assert redact_card_numbers(text, lambda m: "#" * (m.end - m.start)) == f"a {'#' * 19} b {'#' * 16} c"

    def test_text_without_cards_is_unchanged(self) -> None:
        """Text with no card number comes back as it was."""
        text = "order 12345, phone 415-555-0132, on 2025-06-15"
        assert redact_card_numbers(text) == text

    @pytest.mark.parametrize("number", list(TEST_CARDS))
    def test_removes_every_public_test_card(self, number: str) -> None:
        """No published test number survives redaction, neither whole nor without its last four."""
        redacted = redact_card_numbers(f"number={number}&x=1")
        assert number not in redacted
        assert number[:-4] not in redacted
        assert redacted == f"number=[REDACTED CARD ****{number[-4:]}]&x=1"


class TestContainsCardNumber:
    def test_true_when_a_card_is_present(self) -> None:
        """A text with a card number anywhere is reported."""
        assert contains_card_number(f"note: customer read out {VISA[:8]} {VISA[8:]}")

    def test_false_otherwise(self) -> None:
        """A text with only short or invalid numbers is not."""
        assert not contains_card_number("ticket 4242424242424241 on 2025-06-15")


class TestRedactValue:
    def test_walks_nested_structures(self) -> None:
        """Strings at any depth in dicts, lists and tuples are redacted and container types kept."""
        value = {"a": [f"x {VISA}", ("4000056655665556", 3)], "b": {"c": "fine"}}
        assert redact_value(value) == {
            "a": ["x [REDACTED CARD ****4242]", ("[REDACTED CARD ****5556]", 3)],
            "b": {"c": "fine"},
        }

    def test_returns_a_copy(self) -> None:
        """The input is not modified and no mutable container is shared with the result."""
        inner = [VISA]
        value = {"list": inner}
        result = redact_value(value)
        assert value == {"list": [VISA]}
        assert isinstance(result, dict)
        assert result["list"] is not inner

    def test_redacts_dict_keys(self) -> None:
        """A card number used as a key is redacted too."""
        assert redact_value({VISA: 1, f"k {VISA}": 2}) == {
            "[REDACTED CARD ****4242]": 1,
            "k [REDACTED CARD ****4242]": 2,
        }

    def test_sensitive_keys_constant(self) -> None:
        """SENSITIVE_KEYS names the CVC and card-number fields the logging pipeline must blank."""
        assert {
            "cvc",
            "cvv",
            "cvv2",
            "cvc2",
            "csc",
            "card_code",
            "cardcode",
            "security_code",
            "number",
            "card_number",
            "cardnumber",
            "pan",
        } == SENSITIVE_KEYS

    @pytest.mark.parametrize("key", sorted(SENSITIVE_KEYS))
    @pytest.mark.parametrize("value", ["123", "4242", 123, 0, b"123"])
    def test_blanks_values_of_sensitive_keys(self, key: str, value: object) -> None:
        """Non-empty str, int or bytes under a sensitive key become [REDACTED]."""
        assert redact_value({key: value, "other": "123"}) == {key: REDACTED, "other": "123"}

    @pytest.mark.parametrize("key", ["CVC", "Cvv2", "cardNumber", "Card-Number", "SECURITY-CODE", "PAN"])
    def test_sensitive_keys_ignore_case_and_dashes(self, key: str) -> None:
        """Key matching is case-insensitive and reads "-" as "_"."""
        assert redact_value({key: "737"}) == {key: REDACTED}

    @pytest.mark.parametrize("value", ["", None, True, False, []])
    def test_keeps_empty_or_non_scalar_sensitive_values(self, value: object) -> None:
        """Empty strings, None, bools and empty lists under a sensitive key are kept: nothing secret there."""
        assert redact_value({"cvc": value}) == {"cvc": value}

    def test_walks_containers_under_sensitive_keys(self) -> None:
        """A dict under a sensitive key is walked like any other value."""
        assert redact_value({"number": {"raw": VISA, "cvc": "123"}}) == {
            "number": {"raw": "[REDACTED CARD ****4242]", "cvc": REDACTED}
        }

    def test_keeps_plain_scalars(self) -> None:
        """None, bools, ordinary ints and floats pass through unchanged."""
        assert redact_value([None, True, 3, 2.5, -7, 10**30]) == [None, True, 3, 2.5, -7, 10**30]

    def test_redacts_numbers_that_are_card_numbers(self) -> None:
        """An int or float whose digits form a card number becomes a redacted string."""
        assert redact_value([int(VISA), float(VISA), -int(VISA)]) == [
            "[REDACTED CARD ****4242]",
            "[REDACTED CARD ****4242].0",
            "-[REDACTED CARD ****4242]",
        ]

    def test_handles_huge_ints(self) -> None:
        """An int too long for str() is returned as is instead of raising."""
        huge = 10**5000
        assert redact_value({"n": [huge]}) == {"n": [huge]}

    def test_redacts_the_repr_of_other_objects(self) -> None:
        """Objects of other types are replaced by their repr(), redacted."""

        class Payment:
            def __repr__(self) -> str:
                return f"Payment(card={VISA})"

        assert redact_value({"p": Payment(), "b": VISA.encode()}) == {
            "p": "Payment(card=[REDACTED CARD ****4242])",
            "b": "b'[REDACTED CARD ****4242]'",
        }

    def test_card_objects_stay_masked(self) -> None:
        """CardNumber and Cvc objects become their masked repr."""
        value = {"card": parse_card_number(VISA), "code": parse_cvc("123", parse_card_number(VISA).brand)}
        assert redact_value(value) == {"card": "CardNumber(visa ****4242)", "code": "Cvc(***)"}

    def test_sets_and_mappings(self) -> None:
        """Sets keep their type; any Mapping comes back as a plain dict."""
        assert redact_value({VISA, "a"}) == {"[REDACTED CARD ****4242]", "a"}
        assert redact_value(frozenset({VISA})) == frozenset({"[REDACTED CARD ****4242]"})
        assert redact_value(MappingProxyType({"k": VISA})) == {"k": "[REDACTED CARD ****4242]"}
        assert type(redact_value(OrderedDict(k=1))) is dict

    def test_survives_a_failing_repr(self) -> None:
        """An object whose repr() raises becomes a placeholder instead of an exception."""

        class Broken:
            def __repr__(self) -> str:
                raise RuntimeError(VISA)

        assert redact_value({"x": Broken(), "y": 1}) == {"x": UNREPRESENTABLE, "y": 1}

    def test_survives_a_failing_mapping(self) -> None:
        """A mapping that raises while being walked falls back to its redacted repr."""

        class Exploding(Mapping[str, str]):
            def __getitem__(self, key: str) -> str:
                raise KeyError(key)

            def __iter__(self) -> Iterator[str]:
                raise RuntimeError("cannot iterate")

            def __len__(self) -> int:
                return 1

            def __repr__(self) -> str:
                return f"Exploding({VISA})"

        assert redact_value([Exploding()]) == ["Exploding([REDACTED CARD ****4242])"]

    def test_survives_values_that_raise_while_inspected(self) -> None:
        """An int that raises when examined is replaced by its repr, and the dict is still a dict."""

        class Moody(int):
            def __abs__(self) -> int:
                raise RuntimeError("no")

        assert redact_value({"n": Moody(5), "s": VISA}) == {"n": "5", "s": "[REDACTED CARD ****4242]"}

    def test_undecidable_keys_are_treated_as_sensitive(self) -> None:
        """If a key cannot be examined, its value is blanked rather than risked."""

        class OpaqueKey(str):
            __slots__ = ()

            def lower(self) -> str:
                raise RuntimeError("no")

        assert redact_value({OpaqueKey("whatever"): "123"}) == {"whatever": REDACTED}

    def test_survives_cycles(self) -> None:
        """Self-referencing lists and dicts are cut at the cycle instead of recursing forever."""
        looping: list[object] = [VISA]
        looping.append(looping)
        mapping: dict[str, object] = {}
        mapping["self"] = mapping
        assert redact_value(looping) == ["[REDACTED CARD ****4242]", CIRCULAR]
        assert redact_value(mapping) == {"self": CIRCULAR}

    def test_shared_but_acyclic_values_are_not_cycles(self) -> None:
        """The same list appearing twice side by side is walked both times."""
        shared = [VISA]
        assert redact_value([shared, shared]) == [["[REDACTED CARD ****4242]"]] * 2

    def test_survives_deep_nesting(self) -> None:
        """Nesting deeper than MAX_DEPTH is cut off with a placeholder instead of a RecursionError."""
        deep: list[object] = [VISA]
        for _ in range(10_000):
            deep = [deep]
        result = redact_value(deep)
        for _ in range(MAX_DEPTH):
            assert isinstance(result, list)
            result = result[0]
        assert result == TOO_DEEP

    @given(JSON_LIKE)
    def test_json_like_values_come_back_without_cards(self, value: object) -> None:
        """For any JSON-like value, no string, key or number in the result contains a card number."""
        assert not any(contains_card_number(text) for text in _texts_in(redact_value(value)))

    @given(st.dictionaries(st.text() | texts_with_numbers(), JSON_LIKE, max_size=5))
    def test_a_dict_comes_back_as_a_dict(self, value: dict[str, object]) -> None:
        """The logging pipeline relies on a dict event staying a dict (keys only merge if they redact alike)."""
        result = redact_value(value)
        assert isinstance(result, dict)
        assert len(result) <= len(value)

    @given(
        st.one_of(
            st.binary(),
            st.complex_numbers(),
            st.dates(),
            st.datetimes(),
            st.decimals(),
            st.fractions(),
            st.uuids(),
            st.builds(object),
            st.sets(st.integers()),
            st.tuples(st.text(), st.integers()),
        )
    )
    def test_never_raises_on_other_objects(self, value: object) -> None:
        """Values of assorted non-JSON types are redacted without raising."""
        result = redact_value(value)
        assert not any(contains_card_number(text) for text in _texts_in(result))


class TestPerformance:
    def test_a_megabyte_of_log_text(self) -> None:
        """One megabyte of mixed text with many cards is searched and redacted completely."""
        line = f"2025-06-15 10:30:00 INFO order=12345 card {VISA[:4]} {VISA[4:8]} {VISA[8:12]} {VISA[12:]} ok\n"
        text = line * (1_000_000 // len(line))
        redacted = redact_card_numbers(text)
        assert len(find_card_numbers(text)) == text.count("\n")
        assert not contains_card_number(redacted)

    @pytest.mark.parametrize(
        "text",
        [
            "4" * 1_000_000,
            "1 " * 500_000,
            "12-" * 333_333,
            ("9" * 19 + " ") * 50_000,
        ],
        ids=["one-long-run", "single-digit-groups", "two-digit-groups", "nineteen-digit-groups"],
    )
    def test_adversarial_megabytes(self, text: str) -> None:
        """Pathological megabyte inputs finish (no timing asserted) and redaction leaves no card."""
        assert not contains_card_number(redact_card_numbers(text))


def _texts_in(value: object) -> Iterator[str]:
    """Every string, and the digits of every number, inside a redacted value."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, bool) or value is None:
        return
    elif isinstance(value, int | float):
        if abs(value) < 10**20:
            yield repr(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _texts_in(key)
            yield from _texts_in(item)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            yield from _texts_in(item)
    else:
        raise AssertionError(f"unexpected type in redacted output: {type(value)}")
