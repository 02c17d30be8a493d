"""Tests for ``service.domain.ssn`` through ``text_scan``: which nine-digit numbers are read as SSNs, and which not."""

from __future__ import annotations

import pytest

from service.domain.ssn import KEYWORD_GAP, is_valid_ssn
from service.domain.text_scan import FindingKind, find_sensitive


def ssns(text: str) -> list[str]:
    return [text[f.start : f.end] for f in find_sensitive(text) if f.kind is FindingKind.SSN]


class TestValidity:
    @pytest.mark.parametrize("digits", ["078051120", "219099999", "001010001", "899999999", "665123456"])
    def test_issuable_numbers_are_valid(self, digits: str) -> None:
        """Areas 001-899 but 666, groups 01-99, serials 0001-9999 can be issued."""
        assert is_valid_ssn(digits)

    @pytest.mark.parametrize(
        "digits",
        [
            "000123456",
            "666123456",
            "900123456",
            "987654320",
            "123004567",
            "123450000",
            "12345678",
            "1234567890",
            "12345678x",
        ],
    )
    def test_never_issued_numbers_are_invalid(self, digits: str) -> None:
        """Area 000, 666 or 9xx, group 00, serial 0000, or not nine ASCII digits: not an SSN."""
        assert not is_valid_ssn(digits)


class TestForms:
    @pytest.mark.parametrize("text", ["SSN 078-05-1120.", "078-05-1120", "my number: 078 05 1120, ok", "(078-05-1120)"])
    def test_dashed_and_spaced_forms_need_no_keyword(self, text: str) -> None:
        """AAA-GG-SSSS and AAA GG SSSS standing alone are SSNs by their shape."""
        assert len(ssns(text)) == 1

    @pytest.mark.parametrize(
        "text",
        [
            "SSN: 078051120",
            "ssn078051120",
            "SS# 078051120",
            "SS no. 078051120",
            "Soc. Sec. 078051120",
            "social security number is 078051120",
            "Social Security No.: 078051120",
            "my social is 078051120",
            "SS number 078051120",
        ],
    )
    def test_nine_digits_in_a_row_need_a_keyword_right_before(self, text: str) -> None:
        """A plain nine-digit number counts only right after an SSN keyword."""
        assert ssns(text) == ["078051120"]

    @pytest.mark.parametrize(
        "text",
        [
            "order 078051120 shipped",
            "routing 021000021",
            "ZIP 40601-1234",
            "SSN on file; your order number, placed earlier today, is 078051120",
            "SSN 4242 then 078051120",
            "SSN *** 078051120",
            "classnumber 078051120",
            "antisocial 078051120",
        ],
    )
    def test_nine_digits_without_a_keyword_right_before_are_left_alone(self, text: str) -> None:
        """No keyword, one too far away, a number or mask in between, or one inside a word: not an SSN."""
        assert ssns(text) == []

    def test_the_keyword_gap_is_counted_exactly(self) -> None:
        """Up to KEYWORD_GAP characters between keyword and number are allowed, one more is not."""
        assert ssns("SSN" + " " * KEYWORD_GAP + "078051120") == ["078051120"]
        assert ssns("SSN" + " " * (KEYWORD_GAP + 1) + "078051120") == []

    @pytest.mark.parametrize(
        "text",
        [
            "call 502-555-0134",
            "on 2024-01-15",
            "ISBN 0-306-40615-2",
            "078.05.1120",
            "078-05 1120",
            "000-12-3456",
            "666-12-3456",
            "912-34-5678",
            "123-00-4567",
            "123-45-0000",
        ],
    )
    def test_other_shapes_and_invalid_numbers_are_left_alone(self, text: str) -> None:
        """Phone numbers, dates, ISBNs, dots, mixed separators and never-issued numbers are not SSNs."""
        assert ssns(text) == []

    @pytest.mark.parametrize(
        "text",
        [
            "078-05-1120 1234 Main St",
            "1 078-05-1120",
            "078-05-1120-01",
            "12.078 05 1120",
            "*078-05-1120",
            "078-05-1120*",
            "** 078-05-1120",
            "078-05-1120 **",
        ],
    )
    def test_an_ssn_joined_to_other_digits_or_stars_is_part_of_a_longer_number(self, text: str) -> None:
        """A single separator to more digits (or to a masked ``*`` digit) makes it part of something longer."""
        assert ssns(text) == []

    def test_masking_a_neighbouring_card_does_not_turn_a_number_into_an_ssn(self) -> None:
        """ "078-05-1120 <card>" is one run; once the card is masked the stars still join it, so it stays as it was."""
        text = "078-05-1120 4242424242424242"
        assert ssns(text) == []
        assert ssns("078-05-1120 **** **** **** 4242") == []
