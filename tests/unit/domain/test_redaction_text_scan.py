"""Tests for ``service.domain.text_scan``: card numbers and SSNs found in free text, with offsets, brands and masks.

Only the public test card numbers appear as literals; other Luhn-valid numbers
are made at run time with ``with_check_digit``.
"""

from __future__ import annotations

import pytest

from service.domain.brands import Brand
from service.domain.card_finder import DECISION_DIGITS, contains_card_number
from service.domain.text_scan import (
    Finding,
    FindingKind,
    card_digits,
    find_sensitive,
    mask,
    mask_card,
    replace_findings,
    scan_text,
)
from tests.support.cards import AMEX, DINERS_14, MAESTRO, VISA

from . import reference_luhn_valid, with_check_digit


def masked(text: str) -> str:
    return replace_findings(text, find_sensitive(text), lambda finding: mask(text, finding))


def shown(text: str) -> list[tuple[str, str]]:
    """(kind, the text each finding covers), in order."""
    return [(str(f.kind), text[f.start : f.end]) for f in find_sensitive(text)]


class TestCardFindings:
    def test_a_card_inside_a_sentence_has_offsets_brand_last_four_and_length(self) -> None:
        """The finding covers the number as written, separators included, with what may be shown of it."""
        text = f"Card: {VISA[:4]}-{VISA[4:8]}-{VISA[8:12]}-{VISA[12:]}, thanks!"
        [finding] = find_sensitive(text)
        assert finding == Finding(FindingKind.CARD, 6, 25, "4242", Brand.VISA, 16)
        assert text[finding.start : finding.end] == "4242-4242-4242-4242"

    @pytest.mark.parametrize(
        ("number", "brand"),
        [(VISA, Brand.VISA), (AMEX, Brand.AMEX), (DINERS_14, Brand.DINERS), (MAESTRO, Brand.MAESTRO)],
    )
    def test_the_brand_is_the_one_the_vault_accepts(self, number: str, brand: Brand) -> None:
        """Public test cards of several brands and lengths are reported with their brand."""
        [finding] = find_sensitive(f"x {number} y")
        assert (finding.brand, finding.digit_count, finding.last4) == (brand, len(number), number[-4:])

    def test_a_card_of_no_accepted_brand_is_still_found_without_a_brand(self) -> None:
        """Luhn-valid 12-19 digits are a card number to redact even when no brand issues them."""
        unbranded = with_check_digit("9" * 15)
        wrong_length = with_check_digit("4" * 13)  # Visa issues 13, 16 and 19 digits, not 14
        for number in (unbranded, wrong_length):
            [finding] = find_sensitive(f"ref {number}.")
            assert finding.kind is FindingKind.CARD
            assert finding.brand is None
            assert finding.last4 == number[-4:]

    def test_dots_count_as_separators(self) -> None:
        """Groups joined by dots are a card number too."""
        assert shown(f"pan {VISA[:4]}.{VISA[4:8]}.{VISA[8:12]}.{VISA[12:]}.") == [("card", "4242.4242.4242.4242")]

    def test_card_digits_gives_the_plaintext_for_tokenizing_and_only_for_cards(self) -> None:
        """card_digits strips the separators of a card finding; an SSN finding has none to give."""
        text = f"{AMEX[:4]} {AMEX[4:10]} {AMEX[10:]} and SSN 078-05-1120"
        card, ssn = find_sensitive(text)
        assert card_digits(text, card) == AMEX
        with pytest.raises(ValueError, match="card finding"):
            card_digits(text, ssn)

    def test_offsets_count_code_points(self) -> None:
        """Offsets are str indices: characters outside the BMP before a card count as one each."""
        text = f"🙂é漢 {VISA}"
        [finding] = find_sensitive(text)
        assert (finding.start, finding.end) == (4, 20)

    def test_findings_come_in_order_and_never_overlap(self) -> None:
        """Cards and SSNs interleaved are reported in text order."""
        text = f"SSN 078-05-1120; {VISA}; ss# 219099999; {AMEX}"
        assert [f.kind for f in find_sensitive(text)] == ["ssn", "card", "ssn", "card"]


class TestMasks:
    @pytest.mark.parametrize(
        ("length", "expected"),
        [
            (12, "**** **** 4242"),
            (13, "**** **** * 4242"),
            (14, "**** **** ** 4242"),
            (15, "**** **** *** 4242"),
            (16, "**** **** **** 4242"),
            (19, "**** **** **** *** 4242"),
        ],
    )
    def test_one_star_per_hidden_digit_in_fours_then_the_last_four(self, length: int, expected: str) -> None:
        """The mask keeps the digit count: stars in groups of four from the left, a space, the last four."""
        number = _ending_in("4242", length)
        text = f"n {number} ."
        [finding] = find_sensitive(text)
        assert mask_card(text, finding) == expected

    def test_the_brief_example(self) -> None:
        """A 16-digit card written any way becomes **** **** **** 4242."""
        assert masked(f"card {VISA} ok") == "card **** **** **** 4242 ok"
        assert masked("card 4242 4242 4242 4242 ok") == "card **** **** **** 4242 ok"

    def test_the_last_four_are_starred_when_they_would_form_a_new_card_with_what_follows(self) -> None:
        """If "4242" plus the digits after the card pass Luhn at a card's length, the mask hides them too."""
        follower = next(
            tail for tail in (f"{n:08d}" for n in range(10**7, 10**7 + 100)) if reference_luhn_valid("4242" + tail)
        )
        text = f"{VISA} {follower}"
        assert masked(text) == f"**** **** **** **** {follower}"
        assert masked(masked(text)) == masked(text)

    def test_the_last_four_stay_when_a_cvc_follows(self) -> None:
        """A short number after the card (its CVC, an expiry) cannot form a card with the last four."""
        assert masked("4242 4242 4242 4242 123 exp 12/30") == "**** **** **** 4242 123 exp 12/30"

    @pytest.mark.parametrize(
        ("ssn", "expected"),
        [("078-05-1120", "***-**-****"), ("078 05 1120", "*** ** ****"), ("SSN 078051120", "SSN *********")],
    )
    def test_ssns_are_masked_completely_keeping_their_separators(self, ssn: str, expected: str) -> None:
        """No digit of an SSN survives, whatever form it was written in."""
        assert masked(f"{ssn}.") == f"{expected}."

    def test_masked_text_holds_no_card_and_masking_again_changes_nothing(self) -> None:
        """Redaction is idempotent on a text with cards, SSNs and decoys."""
        text = f"{VISA} / 078-05-1120 / 502-555-0134 / ISBN 978-0-306-40615-7 / {AMEX[:4]} {AMEX[4:10]} {AMEX[10:]}"
        once = masked(text)
        assert not contains_card_number(once)
        assert masked(once) == once
        assert "502-555-0134 / ISBN 978-0-306-40615-7" in once  # the decoys are untouched

    def test_replace_findings_uses_the_given_replacement(self) -> None:
        """Any replacement can stand in for the findings; the rest of the text is kept as it was."""
        text = f"a {VISA} b 078-05-1120 c"
        assert replace_findings(text, find_sensitive(text), lambda f: f"<{f.kind}>") == "a <card> b <ssn> c"


class TestResumableScan:
    def test_an_open_run_at_the_end_is_left_for_later(self) -> None:
        """With final=False a run touching the end is not decided: resume points at its start."""
        text = f"card {VISA[:10]}"
        result = scan_text(text, final=False)
        assert (result.findings, result.resume) == ([], 5)

    def test_a_trailing_separator_keeps_the_run_open(self) -> None:
        """ "4242 " at the end may go on with more groups, so it is not decided yet."""
        result = scan_text(f"x {VISA[:4]} ", final=False)
        assert result.resume == 2

    def test_a_long_run_is_decided_as_far_as_enough_digits_follow(self) -> None:
        """In a run of many groups, decisions stop where fewer than DECISION_DIGITS digits follow."""
        text = f"{VISA} " + "1 " * 100
        result = scan_text(text, final=False)
        assert [text[f.start : f.end] for f in result.findings] == [VISA]
        assert len(text) - result.resume <= 2 * DECISION_DIGITS  # each undecided digit and its separator

    def test_a_scan_started_later_uses_what_comes_before_as_context_only(self) -> None:
        """Scanning from a position reports nothing before it but still sees an SSN keyword there."""
        text = f"{VISA} SSN: 078051120"
        result = scan_text(text, text.index("S"))
        assert [(f.kind, text[f.start : f.end]) for f in result.findings] == [("ssn", "078051120")]
        assert scan_text(text, text.index("078")).findings == result.findings

    def test_a_closed_text_is_decided_entirely(self) -> None:
        """With final=True (the default) resume is the end of the text."""
        text = f"{VISA[:10]}"
        assert scan_text(text).resume == len(text)


class TestBigInputs:
    @pytest.mark.parametrize(
        "text",
        ["4" * 1_000_000, "1 " * 500_000, "12-" * 333_333, "9." * 500_000, ("9" * 19 + " ") * 50_000],
        ids=["one-long-run", "single-digit-groups", "two-digit-groups", "dotted-digits", "nineteen-digit-groups"],
    )
    def test_pathological_megabytes_are_scanned_correctly(self, text: str) -> None:
        """Million-character digit runs finish (linear: no timing asserted) and leave no card behind."""
        out = masked(text)
        assert len(out) >= len(text) - 100
        assert not contains_card_number(out)

    def test_a_megabyte_of_cards_is_all_masked(self) -> None:
        """Every one of tens of thousands of cards in one text is found, with exact offsets."""
        line = f"order 12345, card {VISA[:4]} {VISA[4:8]} {VISA[8:12]} {VISA[12:]}, SSN 078-05-1120\n"
        text = line * (1_000_000 // len(line))
        findings = find_sensitive(text)
        lines = text.count("\n")
        assert len(findings) == 2 * lines
        assert findings[-1].end == len(text) - 1
        assert (
            masked(text)
            == line.replace("4242 4242 4242 4242", "**** **** **** 4242").replace("078-05-1120", "***-**-****") * lines
        )


def _ending_in(last4: str, length: int) -> str:
    """A Luhn-valid number of ``length`` digits ending in ``last4``, made at run time (one digit adjusted)."""
    return next(number for digit in "0123456789" if reference_luhn_valid(number := "5" * (length - 5) + digit + last4))
