"""Properties of free-text redaction (``service.domain.text_scan``, ``stream_redaction``).

The checks on the output use a brute-force reference written here (every
window of whole digit groups, textbook Luhn), not the finder under test.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from itertools import pairwise

from hypothesis import given
from hypothesis import strategies as st

from service.domain.stream_redaction import StreamRedactor, mask_whole_text
from service.domain.text_scan import FindingKind, accepted_brand, find_sensitive, mask, mask_card
from tests.unit.domain import digit_strings, luhn_valid_numbers, reference_luhn_valid

from . import PROPERTIES

SEPARATORS = " .-"
RUN = re.compile(r"[0-9]+(?:[ .-][0-9]+)*")


@st.composite
def written_cards(draw: st.DrawFn) -> tuple[str, str]:
    """A Luhn-valid 12-19 digit number (branded or not) and a way of writing it: any groups, any separators."""
    number = draw(luhn_valid_numbers())
    cuts = sorted(draw(st.sets(st.integers(1, len(number) - 1), max_size=len(number) - 1)))
    groups = [number[a:b] for a, b in pairwise([0, *cuts, len(number)])]
    separators = draw(st.lists(st.sampled_from(SEPARATORS), min_size=len(groups), max_size=len(groups)))
    return number, "".join(g + s for g, s in zip(groups, [*separators[:-1], ""], strict=True))


@st.composite
def valid_ssns(draw: st.DrawFn) -> str:
    """Nine digits the SSA could issue: area 001-899 but 666, group 01-99, serial 0001-9999."""
    area = draw(st.integers(1, 899).filter(lambda a: a != 666))
    return f"{area:03d}{draw(st.integers(1, 99)):02d}{draw(st.integers(1, 9999)):04d}"


def ssn_forms(digits: str) -> st.SearchStrategy[str]:
    return st.sampled_from(
        [f"{digits[:3]}-{digits[3:5]}-{digits[5:]}", f"{digits[:3]} {digits[3:5]} {digits[5:]}", f" SSN: {digits}"]
    )


# Neighbours that end a digit run: anything but an ASCII digit, a separator, or a masked digit.
edges = st.characters(exclude_characters="0123456789 .-*", exclude_categories=["Cs"])
anything = st.text(st.characters(exclude_categories=["Cs"]), max_size=30)


@st.composite
def busy_texts(draw: st.DrawFn) -> str:
    """Text crowded with what redaction must get right: cards, SSNs, keywords, stray digits, stars, separators."""
    piece = st.one_of(
        written_cards().map(lambda pair: pair[1]),
        valid_ssns().flatmap(ssn_forms),
        digit_strings(1, 10),
        st.sampled_from(
            [" ", "-", ".", "  ", "*", "** ", "\n", "x", "SSN ", "ss# ", "social security no. ", "é", "🙂"]
        ),
        anything,
    )
    return "".join(draw(st.lists(piece, max_size=14)))


def reference_card_windows(text: str) -> Iterator[str]:
    """Every window of consecutive whole digit groups (single separators) with 12-19 digits that passes Luhn."""
    for run in RUN.finditer(text):
        groups = re.split(r"[ .-]", run.group())
        for first in range(len(groups)):
            for last in range(first, len(groups)):
                digits = "".join(groups[first : last + 1])
                if 12 <= len(digits) <= 19 and reference_luhn_valid(digits):
                    yield digits


def is_issuable_ssn(written: str) -> bool:
    digits = re.sub(r"[^0-9]", "", written)
    area, group, serial = int(digits[:3]), int(digits[3:5]), int(digits[5:])
    return len(digits) == 9 and 0 < area < 900 and area != 666 and group > 0 and serial > 0


def masked(text: str) -> str:
    return mask_whole_text(text).text


class TestEveryCardIsFound:
    @PROPERTIES
    @given(written_cards(), anything, edges, edges, anything)
    def test_a_card_anywhere_in_any_text_is_found_exactly_and_masked(
        self, card: tuple[str, str], before: str, left: str, right: str, after: str
    ) -> None:
        """Whatever surrounds it (up to a character that ends the run), the card is one finding over exactly it."""
        number, written = card
        prefix = before + left
        text = prefix + written + right + after
        findings = find_sensitive(text)
        [finding] = [f for f in findings if (f.start, f.end) == (len(prefix), len(prefix) + len(written))]
        assert finding.kind is FindingKind.CARD
        assert (finding.last4, finding.digit_count, finding.brand) == (number[-4:], len(number), accepted_brand(number))
        shift = sum(len(mask(text, f)) - (f.end - f.start) for f in findings if f.end <= finding.start)
        output = masked(text)
        replacement = mask_card(text, finding)
        assert output[finding.start + shift :].startswith(replacement)
        assert re.sub("[^0-9]", "", replacement) in ("", number[-4:])

    @PROPERTIES
    @given(written_cards(), st.sampled_from(["", "exp 12/30 ", "cvc 123 "]), edges)
    def test_a_card_at_the_very_start_or_end_of_the_text_is_found(
        self, card: tuple[str, str], middle: str, edge: str
    ) -> None:
        """No neighbour at all on one side is a boundary too."""
        number, written = card
        for text, start in ((written + edge + middle, 0), (middle + edge + written, len(middle) + 1)):
            assert [(f.start, f.end, f.last4) for f in find_sensitive(text)][-1 if start else 0] == (
                start,
                start + len(written),
                number[-4:],
            )


class TestOutput:
    @PROPERTIES
    @given(busy_texts())
    def test_no_card_number_survives(self, text: str) -> None:
        """The masked text holds no window of whole digit groups that is a card number (brute-force check)."""
        assert list(reference_card_windows(masked(text))) == []

    @PROPERTIES
    @given(busy_texts())
    def test_no_issuable_ssn_survives_in_its_forms(self, text: str) -> None:
        """No standalone AAA-GG-SSSS or AAA GG SSSS the SSA could issue is left in the output."""
        out = masked(text)
        for match in re.finditer(
            r"(?<![0-9*])(?<![0-9*][ .-])[0-9]{3}([- ])[0-9]{2}\1[0-9]{4}(?![0-9*])(?![ .-][0-9*])", out
        ):
            assert not is_issuable_ssn(match.group())

    @PROPERTIES
    @given(busy_texts())
    def test_redaction_is_idempotent(self, text: str) -> None:
        """Masking the masked text changes nothing and finds nothing."""
        once = masked(text)
        assert masked(once) == once
        assert find_sensitive(once) == []

    @PROPERTIES
    @given(busy_texts())
    def test_offsets_point_at_the_numbers_in_the_original(self, text: str) -> None:
        """Each finding's span is the number as written: a card's whole groups and digits, an SSN's shape."""
        previous_end = 0
        for finding in find_sensitive(text):
            assert previous_end <= finding.start < finding.end <= len(text)
            written = text[finding.start : finding.end]
            assert RUN.fullmatch(written)
            digits = re.sub("[ .-]", "", written)
            if finding.kind is FindingKind.CARD:
                assert 12 <= len(digits) <= 19
                assert reference_luhn_valid(digits)
                assert (finding.last4, finding.digit_count) == (digits[-4:], len(digits))
            else:
                assert re.fullmatch(r"[0-9]{3}([- ])[0-9]{2}\1[0-9]{4}|[0-9]{9}", written)
                assert is_issuable_ssn(written)
            assert finding.start == 0 or not text[finding.start - 1].isdigit() or not text[finding.start - 1].isascii()
            assert finding.end == len(text) or text[finding.end] not in "0123456789"
            previous_end = finding.end


class TestSsns:
    @PROPERTIES
    @given(valid_ssns().flatmap(ssn_forms), anything, edges, edges, anything)
    def test_an_issuable_ssn_standing_alone_is_found(
        self, written: str, before: str, left: str, right: str, after: str
    ) -> None:
        """Dashed, spaced, or after its keyword, an SSN between run-ending characters is one finding over it."""
        number = written.removeprefix(" SSN: ")
        keyword = len(written) - len(number)
        prefix = before + left
        text = prefix + written + right + after
        start = len(prefix) + keyword
        assert (start, start + len(number)) in [
            (f.start, f.end) for f in find_sensitive(text) if f.kind is FindingKind.SSN
        ]

    @PROPERTIES
    @given(
        st.one_of(
            st.tuples(st.sampled_from([0, 666, *range(900, 1000)]), st.integers(0, 99), st.integers(0, 9999)),
            st.tuples(st.integers(0, 999), st.just(0), st.integers(0, 9999)),
            st.tuples(st.integers(0, 999), st.integers(0, 99), st.just(0)),
        ),
        st.sampled_from(["{}-{}-{}", "{} {} {}", "SSN {}{}{}"]),
    )
    def test_numbers_never_issued_are_not_ssns(self, parts: tuple[int, int, int], form: str) -> None:
        """Area 000, 666 or 9xx, group 00 or serial 0000 is never reported, whatever the form."""
        area, group, serial = parts
        text = "id " + form.format(f"{area:03d}", f"{group:02d}", f"{serial:04d}") + " ok"
        assert [f for f in find_sensitive(text) if f.kind is FindingKind.SSN] == []


class TestStreaming:
    @PROPERTIES
    @given(busy_texts(), st.lists(st.integers(0, 400), max_size=12))
    def test_any_chunking_gives_the_whole_text_result(self, text: str, cuts: list[int]) -> None:
        """Fed in pieces cut anywhere, the stream's output and findings equal those of the whole text."""
        bounds = sorted({min(c, len(text)) for c in cuts})
        pieces = [text[a:b] for a, b in pairwise([0, *bounds, len(text)])]
        redactor = StreamRedactor()
        outputs = [redactor.feed(piece) for piece in pieces] + [redactor.finish()]
        whole = mask_whole_text(text)
        assert "".join(o.text for o in outputs) == whole.text
        assert tuple(f for o in outputs for f in o.findings) == whole.findings
