"""Tests for ``service.domain.stream_redaction``: a text masked in pieces comes out exactly as masked whole."""

from __future__ import annotations

from itertools import pairwise

import pytest

from service.domain.card_finder import DECISION_DIGITS
from service.domain.stream_redaction import MaskedPiece, StreamRedactor, mask_whole_text
from service.domain.text_scan import FindingKind
from tests.support.cards import AMEX, VISA


def streamed(pieces: list[str]) -> MaskedPiece:
    redactor = StreamRedactor()
    outputs = [redactor.feed(piece) for piece in pieces] + [redactor.finish()]
    return MaskedPiece("".join(o.text for o in outputs), tuple(f for o in outputs for f in o.findings))


def split_at(text: str, *cuts: int) -> list[str]:
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in pairwise(bounds)]


class TestStraddling:
    TEXT = f"Hello, my card is {VISA[:4]} {VISA[4:8]} {VISA[8:12]} {VISA[12:]} exp 12/30, SSN: 078051120. Bye"

    def test_every_single_cut_gives_the_whole_text_result(self) -> None:
        """A card, an SSN and its keyword split at every possible position: output and findings as if whole."""
        whole = mask_whole_text(self.TEXT)
        assert [f.kind for f in whole.findings] == [FindingKind.CARD, FindingKind.SSN]
        for cut in range(len(self.TEXT) + 1):
            assert streamed(split_at(self.TEXT, cut)) == whole, cut

    def test_one_character_at_a_time(self) -> None:
        """The smallest pieces still give the same answer."""
        assert streamed(list(self.TEXT)) == mask_whole_text(self.TEXT)

    def test_findings_carry_offsets_in_the_whole_stream(self) -> None:
        """A finding in a late piece has its offset in the whole input, not in the piece."""
        filler = "x" * 10_000
        text = filler + AMEX + filler
        [finding] = streamed(split_at(text, 5000, 10_003, 15_000)).findings
        assert (finding.start, finding.end, finding.last4) == (10_000, 10_015, "0005")

    def test_what_is_held_back_stays_small(self) -> None:
        """However long a digit run, the redactor keeps only a bounded tail between pieces."""
        redactor = StreamRedactor()
        piece = "1 " * 500
        fed = emitted = 0
        for _ in range(200):
            fed += len(piece)
            emitted += len(redactor.feed(piece).text)
            assert 0 <= fed - emitted <= 2 * DECISION_DIGITS + 1  # undecided digits and their separators
        assert emitted + len(redactor.finish().text) == fed


class TestLifecycle:
    def test_counts_what_it_masked(self) -> None:
        """counts tallies findings by kind over the whole stream."""
        redactor = StreamRedactor()
        redactor.feed(f"{VISA} and {AMEX[:7]}")
        redactor.feed(f"{AMEX[7:]} and 078-05-1120")
        redactor.finish()
        assert redactor.counts == {FindingKind.CARD: 2, FindingKind.SSN: 1}

    def test_an_empty_stream(self) -> None:
        """No input, no output."""
        assert streamed([]) == MaskedPiece("", ())
        assert streamed(["", ""]) == MaskedPiece("", ())

    def test_no_input_after_finish(self) -> None:
        """finish() ends the stream: feeding or finishing again is a programming error."""
        redactor = StreamRedactor()
        redactor.finish()
        with pytest.raises(ValueError, match="after finish"):
            redactor.feed("x")
        with pytest.raises(ValueError, match="twice"):
            redactor.finish()
