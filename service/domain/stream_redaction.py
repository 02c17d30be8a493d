"""Masking a text that arrives in pieces, with exactly the result of masking it whole.

``cardvault redact`` reads transcripts and mail exports of any size a chunk at
a time, so a card number can straddle two chunks, and a digit run (a megabyte
of "1 1 1 ...") can span many.  ``StreamRedactor`` keeps only what it cannot
decide yet: ``text_scan.scan_text`` with ``final=False`` says where the first
undecided run starts (a card decision needs at most a few dozen digits of
look-ahead, see ``card_finder.DECISION_DIGITS``), and ``CONTEXT_CHARS`` more
characters before it are kept as read-only context (SSN keywords, the digit
before a run).  Memory is therefore one chunk plus well under a hundred
characters, and the output equals ``mask_whole_text`` of the concatenation, a
property the tests check on random chunkings.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from service.domain.text_scan import (
    CONTEXT_CHARS,
    Finding,
    FindingKind,
    find_sensitive,
    mask,
    replace_findings,
    scan_text,
)


@dataclass(frozen=True, slots=True)
class MaskedPiece:
    """Output ready to be written, and the findings it masked (offsets in the whole input stream)."""

    text: str
    findings: tuple[Finding, ...]


def mask_whole_text(text: str) -> MaskedPiece:
    """Every card number and SSN of ``text`` masked (``text_scan.mask``)."""
    findings = find_sensitive(text)
    return MaskedPiece(replace_findings(text, findings, lambda finding: mask(text, finding)), tuple(findings))


class StreamRedactor:
    """Feed pieces of one text in order, then ``finish()``; the outputs concatenated are the masked text."""

    def __init__(self) -> None:
        self._buffer = ""
        self._scan_from = 0  # buffer index where undecided text starts; what is before it is context
        self._offset = 0  # stream index of the buffer's first character
        self.counts: Counter[FindingKind] = Counter()
        self._finished = False

    def feed(self, piece: str) -> MaskedPiece:
        if self._finished:
            raise ValueError("feed() after finish()")
        self._buffer += piece
        return self._advance(final=False)

    def finish(self) -> MaskedPiece:
        """Whatever was held back, masked; the redactor takes no more input."""
        if self._finished:
            raise ValueError("finish() called twice")
        self._finished = True
        return self._advance(final=True)

    def _advance(self, *, final: bool) -> MaskedPiece:
        text = self._buffer
        result = scan_text(text, self._scan_from, final=final)
        pieces: list[str] = []
        position = self._scan_from
        for finding in result.findings:
            pieces += (text[position : finding.start], mask(text, finding))
            position = finding.end
        pieces.append(text[position : result.resume])
        found = tuple(finding.moved(self._offset) for finding in result.findings)
        self.counts.update(finding.kind for finding in found)
        keep = max(result.resume - CONTEXT_CHARS, 0)
        self._buffer = text[keep:]
        self._scan_from = result.resume - keep
        self._offset += keep
        return MaskedPiece("".join(pieces), found)
