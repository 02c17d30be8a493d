"""US Social Security numbers in free text: which digit runs we read as one, and the SSA's validity rules.

Agencies receive SSNs where they should not, next to card numbers, in the same
chat transcripts and e-mails, so free-text redaction masks them too.  Nine
digits are common in ordinary text (order numbers, ZIP+4 codes, routing
numbers), so the rules are deliberately narrow to keep false positives rare:

* An SSN is a whole digit run (``card_finder.DIGIT_RUN``: no digit, and no
  single space, dash or dot followed by a digit, directly before or after it),
  and a ``*`` counts as a digit there: a masked number is still a number, so
  masking a card never turns its neighbour into an SSN (redaction stays
  idempotent).  "123-45-6789 1234 Main St" is one longer run and is not read as
  an SSN; a comma, a word or two spaces in between are enough.
* Written ``AAA-GG-SSSS`` or ``AAA GG SSSS`` (the same separator twice), it is
  an SSN by its shape alone.  Phone numbers (3-3-4), dates (4-2-2) and ZIP+4
  codes (5-4) never have that shape.
* Nine digits in a row (``AAAGGSSSS``) count only right after a keyword (SSN,
  SS#, SS No, SS Number, Soc Sec, Social Security, or just Social, as in "my
  social is ..."): at most ``KEYWORD_GAP`` characters in
  between, none of them a digit or ``*`` ("SSN: 123456789", "social security
  number is 123456789").  A bare nine-digit number is far more often an order,
  account or routing number than an SSN.
* Dots (``123.45.6789``) are not read as an SSN separator.
* Every form must pass the SSA's rules: area (first three) not 000, 666 or
  900-999; group (middle two) not 00; serial (last four) not 0000.
"""

from __future__ import annotations

import re
from typing import Final

KEYWORD_GAP: Final = 24
#: How far before a number a keyword may start: the gap plus the longest keyword ("social security").
KEYWORD_WINDOW: Final = KEYWORD_GAP + 24
SSN_DIGITS: Final = 9

_FORMATTED: Final = re.compile(r"[0-9]{3}([- ])[0-9]{2}\1[0-9]{4}")
_DIGIT_LIKE: Final = "0123456789*"
_SEPARATORS: Final = " .-"
_NOT_IN_GAP: Final = re.compile(r"[0-9*]")
_KEYWORD: Final = re.compile(
    r"(?<![A-Za-z])(?:ssns?|ss ?(?:#|no|num(?:ber)?)|social(?: ?sec(?:urity|\.)?)?|soc\.? ?sec\.?)(?![A-Za-z])",
    re.IGNORECASE,
)


def is_valid_ssn(digits: str) -> bool:
    """Whether nine ASCII digits pass the SSA's rules (area, group and serial never issued as zero, 666, 9xx)."""
    if len(digits) != SSN_DIGITS or not (digits.isascii() and digits.isdigit()):
        return False
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    return area != "000" and area != "666" and area[0] != "9" and group != "00" and serial != "0000"


def is_ssn_run(text: str, start: int, end: int) -> bool:
    """Whether the whole digit run ``text[start:end]`` is an SSN (see the module docstring for the forms).

    The caller guarantees that ``text[start:end]`` is a complete digit run;
    this checks its shape, the SSA rules, the ``*`` neighbours and, for nine
    digits in a row, the keyword.
    """
    length = end - start
    if length == SSN_DIGITS + 2:
        run = text[start:end]
        if _FORMATTED.fullmatch(run) is None or not is_valid_ssn(run[0:3] + run[4:6] + run[7:11]):
            return False
    elif length == SSN_DIGITS:
        if not is_valid_ssn(text[start:end]) or not keyword_before(text, start):
            return False
    else:
        return False
    return not _masked_neighbour(text, start, end)


def _masked_neighbour(text: str, start: int, end: int) -> bool:
    """A ``*`` right next to the run, or one separator away: part of a longer (masked) number."""
    before = text[max(0, start - 2) : start]
    after = text[end : end + 2]
    return (
        before[-1:] == "*"
        or (len(before) == 2 and before[1] in _SEPARATORS and before[0] in _DIGIT_LIKE)
        or after[:1] == "*"
        or (len(after) == 2 and after[0] in _SEPARATORS and after[1] in _DIGIT_LIKE)
    )


def keyword_before(text: str, position: int) -> bool:
    """Whether an SSN keyword ends at most ``KEYWORD_GAP`` characters before ``position``, no digit or ``*`` between."""
    last = None
    for last in _KEYWORD.finditer(text, max(0, position - KEYWORD_WINDOW), position):  # noqa: B007 - want the last
        pass
    if last is None:
        return False
    gap = text[last.end() : position]
    return len(gap) <= KEYWORD_GAP and _NOT_IN_GAP.search(gap) is None
