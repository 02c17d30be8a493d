"""Card numbers and Social Security numbers in free text: what is where, and what replaces it.

Agencies receive card numbers where they should not: chat transcripts,
e-mails, web-form comments.  ``POST /v1/redact`` and ``cardvault redact`` take
such text and give it back with each number masked or tokenized; this module
is their common, I/O-free core.

* ``scan_text`` walks the digit runs once (``card_finder.DIGIT_RUN``): the card
  rules of ``card_finder`` inside each run, and a run that holds no card may be
  a whole SSN (``ssn``).  Findings never overlap and come in text order.
* Offsets are Python ``str`` indices, that is Unicode code points of the text
  that was scanned: ``text[finding.start:finding.end]`` is the number as
  written, separators included.
* ``mask_card`` and ``mask_ssn`` say what a mask looks like (one ``*`` per
  hidden digit, so the shape survives); ``replace_findings`` applies any
  replacement.
* A text that arrives in pieces is scanned with ``final=False``: the result
  says where to resume, and the caller keeps ``CONTEXT_CHARS`` characters
  before that point so the next scan sees the same neighbourhood (SSN keywords,
  the digits before a run) as a scan of the whole text would.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

from service.domain.brands import BRAND_PREFIXES, BRAND_RULES, Brand
from service.domain.card_finder import (
    DIGIT_RUN,
    LAST4_LENGTH,
    CardMatch,
    cards_in_run,
    joins_following,
    run_is_open,
)
from service.domain.ssn import KEYWORD_WINDOW, SSN_DIGITS, is_ssn_run

#: Characters a resumed scan needs before its resume point: the SSN keyword window, the character
#: before a keyword, and the digit and separator that tell a run's continuation (never an SSN) from
#: its start.
CONTEXT_CHARS: Final = KEYWORD_WINDOW + 8
MASK_GROUP: Final = 4

_DIGIT: Final = re.compile("[0-9]")


class FindingKind(enum.StrEnum):
    CARD = "card"
    SSN = "ssn"


@dataclass(frozen=True, slots=True)
class Finding:
    """One number found in a text: ``text[start:end]``, separators included; for cards, only what may be shown.

    ``brand`` is set only when the number is a card the vault accepts (a known
    brand, at a length that brand issues); ``digit_count`` and ``last4`` are set
    for every card.
    """

    kind: FindingKind
    start: int
    end: int
    last4: str | None = None
    brand: Brand | None = None
    digit_count: int = 0

    def moved(self, offset: int) -> Finding:
        """The same finding with its offsets shifted (a piece's finding placed in the whole stream)."""
        return Finding(self.kind, self.start + offset, self.end + offset, self.last4, self.brand, self.digit_count)


@dataclass(frozen=True, slots=True)
class ScanResult:
    """Findings in text order; every one ends at or before ``resume``, where the next scan must start."""

    findings: list[Finding]
    resume: int


def find_sensitive(text: str) -> list[Finding]:
    """Every card number and SSN in a whole text."""
    return scan_text(text).findings


def scan_text(text: str, start: int = 0, *, final: bool = True) -> ScanResult:
    """The findings in ``text[start:]`` (``text[:start]`` is context only).

    With ``final=False`` more text may follow: a run touching the end is decided
    only as far as it can be, and ``resume`` says where to scan again once the
    next piece has been appended (findings after it are not returned).
    """
    findings: list[Finding] = []
    for run in DIGIT_RUN.finditer(text, start):
        run_start, run_end = run.span()
        open_ended = not final and run_is_open(text, run_end)
        if run_end - run_start < SSN_DIGITS and not open_ended:
            continue  # shorter than any SSN or card: most runs (times, dates, quantities) end here
        cards, resume = cards_in_run(run.group(), run_start, open_ended=open_ended)
        findings += [_card_finding(text, match) for match in cards]
        if resume is not None:
            return ScanResult(findings, resume)
        if not cards and not open_ended and is_ssn_run(text, run_start, run_end):
            findings.append(Finding(FindingKind.SSN, run_start, run_end))
    return ScanResult(findings, len(text))


def _card_finding(text: str, match: CardMatch) -> Finding:
    digits = "".join(_DIGIT.findall(text, match.start, match.end))
    return Finding(FindingKind.CARD, match.start, match.end, match.last4, accepted_brand(digits), len(digits))


def accepted_brand(digits: str) -> Brand | None:
    """The brand of a Luhn-valid number when the vault would accept it (known brand, a length it issues)."""
    brand = _brand_of(digits)
    return brand if brand is not None and len(digits) in BRAND_RULES[brand].lengths else None


def _prefix_tables() -> tuple[tuple[int, dict[str, Brand]], ...]:
    """(width, every prefix of that width that names a brand), widest first.

    A text full of cards would otherwise walk the whole range table
    (``cards.detect_brand``) once per card; the property tests check that both agree.
    """
    widths = sorted({len(prefix.first) for prefix in BRAND_PREFIXES}, reverse=True)
    return tuple(
        (
            width,
            {
                str(value).zfill(width): prefix.brand
                for prefix in BRAND_PREFIXES
                if len(prefix.first) == width
                for value in range(int(prefix.first), int(prefix.last) + 1)
            },
        )
        for width in widths
    )


_PREFIX_TABLES: Final = _prefix_tables()


def _brand_of(digits: str) -> Brand | None:
    """``cards.detect_brand`` for plain digits: the widest matching prefix wins."""
    for width, table in _PREFIX_TABLES:
        brand = table.get(digits[:width])
        if brand is not None:
            return brand
    return None


def card_digits(text: str, finding: Finding) -> str:
    """The digits of a card finding, without separators: the plaintext, for the caller that tokenizes it."""
    if finding.kind is not FindingKind.CARD:
        raise ValueError("only a card finding has card digits")
    return "".join(_DIGIT.findall(text, finding.start, finding.end))


# --- replacements -------------------------------------------------------------------


def mask_card(text: str, finding: Finding) -> str:
    """``**** **** **** 4242``: one star per hidden digit in groups of four from the left, then the last four.

    A 15-digit card is ``**** **** *** 0005``, a 19-digit one
    ``**** **** **** *** 1234``.  When keeping the last four would join the
    digits that follow in ``text`` into a new card-shaped number, they are
    starred too (``**** **** **** ****``).
    """
    hidden = finding.digit_count - LAST4_LENGTH
    stars = " ".join("*" * min(MASK_GROUP, hidden - i) for i in range(0, hidden, MASK_GROUP))
    shown = finding.last4 or ""
    masked = f"{stars} {shown}"
    if joins_following(text, finding.end, masked):
        return f"{stars} {'*' * LAST4_LENGTH}"
    return masked


def mask_ssn(text: str, finding: Finding) -> str:
    """Every digit starred, separators kept: ``***-**-****``, ``*** ** ****`` or ``*********``."""
    return _DIGIT.sub("*", text[finding.start : finding.end])


def mask(text: str, finding: Finding) -> str:
    return mask_card(text, finding) if finding.kind is FindingKind.CARD else mask_ssn(text, finding)


def replace_findings(text: str, findings: Iterable[Finding], replacement: Callable[[Finding], str]) -> str:
    """``text`` with each finding (in order, non-overlapping) replaced by ``replacement(finding)``."""
    pieces: list[str] = []
    position = 0
    for finding in findings:
        pieces += (text[position : finding.start], replacement(finding))
        position = finding.end
    pieces.append(text[position:])
    return "".join(pieces)
