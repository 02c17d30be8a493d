"""Where card numbers sit in a text: one linear pass, shared by the log redactor and free-text redaction.

A card number is a Luhn-valid run of 12-19 digits, written plain or in groups
joined by single spaces, dashes or dots, with no digit directly before or after
it.  Within a run of groups, any consecutive whole groups may form the number,
so "2024-01-15 4242 4242 4242 4242" and "4242 4242 4242 4242 123" (card then
CVC) are caught; a plain run of 20+ digits is never a card and is left alone.
The price is some over-redaction: in the mistyped "4242 4242 4242 4241" the
Luhn-valid "4242 4242 4242" is reported.  Matching is one linear regex pass
plus O(1) Luhn checks per candidate window (at most eight per group).

The same code serves texts that arrive in pieces (``cardvault redact`` reads
files in chunks): a run that touches the end of the piece read so far is
*open-ended*, and the greedy choice of windows stops at the first group whose
decision could still change once more digits arrive, returning where scanning
must resume.  Because every decision needs at most ``DECISION_DIGITS`` digits
of look-ahead, what is carried from one piece to the next stays small even for
a megabyte of digits joined by spaces.

Whatever replaces a card must not form a new card number with the digits that
follow it in the same run (``joins_following``): a mask that keeps the last
four of "4242424242424242 1234 5678" would otherwise leave "4242 1234 5678",
which may pass the Luhn check, and redacting the output again would change it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import accumulate
from typing import Final, TypeAlias

from service.domain.cards import MAX_CARD_LENGTH, MIN_CARD_LENGTH, luhn_valid

SEPARATORS: Final = " .-"
#: Groups of ASCII digits joined by single separators, starting where no digit precedes (so a scan
#: resumed in the middle of a long group skips the rest of it).  Every repetition starts with a
#: separator, so the regex cannot backtrack catastrophically, and a greedy match ends at a non-digit.
DIGIT_RUN: Final = re.compile(r"(?<![0-9])[0-9]+(?:[ .-][0-9]+)*")
#: Digits of a run, from a group's start, that settle every decision at that group: which window
#: (at most MAX_CARD_LENGTH digits) and whether a replacement's digits could join what follows it.
DECISION_DIGITS: Final = 2 * MAX_CARD_LENGTH
LAST4_LENGTH: Final = 4

#: Twelve digits, each at most one separator from the next: every card number holds such a stretch,
#: so a text without one holds none.  One C-speed search settles most texts (log fields, request ids)
#: before any per-run work.
_MAYBE_CARD: Final = re.compile(r"[0-9](?:[ .-]?[0-9]){11}")
_SEPARATOR: Final = re.compile(r"[ .-]")
_TRAILING_RUN: Final = re.compile(r"[0-9]+(?:[ .-][0-9]+)*\Z")
# At most enough groups (and digits per group) to settle any window that starts before them.
_FOLLOWING_GROUPS: Final = re.compile(
    rf"[0-9]{{1,{MAX_CARD_LENGTH + 1}}}(?:[ .-][0-9]{{1,{MAX_CARD_LENGTH + 1}}}){{0,{MAX_CARD_LENGTH - 1}}}"
)
_DIGIT_VALUES: Final = bytes.maketrans(b"0123456789", bytes(range(10)))
_DOUBLED_DIGIT_VALUES: Final = bytes.maketrans(b"0123456789", bytes([0, 2, 4, 6, 8, 1, 3, 5, 7, 9]))
_PrefixSums: TypeAlias = tuple[list[int], list[int]]  # indexed by the parity of a slice's end


@dataclass(frozen=True, slots=True)
class CardMatch:
    """Where a card number sits in a text (``text[start:end]``, separators included); only its last four."""

    start: int
    end: int
    last4: str


def find_card_numbers(text: str) -> list[CardMatch]:
    """Every card number in ``text``, in order, non-overlapping."""
    return list(iter_card_numbers(text))


def contains_card_number(text: str) -> bool:
    return next(iter_card_numbers(text), None) is not None


def may_contain_card_number(text: str) -> bool:
    """False only when ``text`` surely holds no card number (no twelve digits close enough to form one)."""
    return _MAYBE_CARD.search(text) is not None


def iter_card_numbers(text: str) -> Iterator[CardMatch]:
    if _MAYBE_CARD.search(text) is None:
        return
    for run in DIGIT_RUN.finditer(text):
        matches, _ = cards_in_run(run.group(), run.start())
        yield from matches


def run_is_open(text: str, end: int) -> bool:
    """Whether a run ending at ``end`` may go on in text not read yet (it touches the end, maybe via a separator)."""
    return end == len(text) or (end == len(text) - 1 and text[end] in SEPARATORS)


def cards_in_run(run: str, offset: int, *, open_ended: bool = False) -> tuple[list[CardMatch], int | None]:
    """The card numbers in one digit run (``run`` starts at ``offset`` in the text), and where to resume.

    The resume position is None when every group of the run is settled.  For an
    ``open_ended`` run (more of it may follow) it is the text index of the first
    group still undecided: the caller keeps the text from there and scans again
    once more has arrived; every match returned ends before it.
    """
    if run.isdigit():  # one group (ASCII only: the regex matched [0-9])
        if open_ended:
            return ([], offset) if len(run) <= DECISION_DIGITS else ([], None)
        if MIN_CARD_LENGTH <= len(run) <= MAX_CARD_LENGTH and luhn_valid(run):
            return [CardMatch(offset, offset + len(run), run[-LAST4_LENGTH:])], None
        return [], None
    groups = _SEPARATOR.split(run)
    if not open_ended and len(run) - (len(groups) - 1) < MIN_CARD_LENGTH:
        return [], None
    digits = "".join(groups)
    # Group k holds digits[bounds[k]:bounds[k + 1]] and starts k separators later in the run.
    bounds = list(accumulate(map(len, groups), initial=0))
    matches: list[CardMatch] = []
    windows = _GroupWindows(bounds, _luhn_prefix_sums(digits), open_ended=open_ended)
    for first, last in windows:
        start_digit, end_digit = bounds[first], bounds[last + 1]
        start = offset + start_digit + first  # plus the separators before group `first`
        end = offset + end_digit + last
        matches.append(CardMatch(start, end, digits[end_digit - LAST4_LENGTH : end_digit]))
    if windows.stopped_at is None:
        return matches, None
    return matches, offset + bounds[windows.stopped_at] + windows.stopped_at


class _GroupWindows:
    """Greedy left to right: at each group, the longest Luhn-valid window of whole groups starting there.

    Every valid window therefore overlaps a reported one, so redacting the
    reported windows leaves no complete card number behind.  Open-ended, it
    stops (``stopped_at``) at the first group with fewer than DECISION_DIGITS
    digits after its start: more digits could still change what is chosen there.
    """

    def __init__(self, bounds: list[int], sums: _PrefixSums, *, open_ended: bool) -> None:
        self.bounds = bounds
        self.sums = sums
        self.open_ended = open_ended
        self.stopped_at: int | None = None

    def __iter__(self) -> Iterator[tuple[int, int]]:
        # One pass over the groups; locals instead of attributes, as this loop is the hot path
        # for a run of a million tiny groups ("1 1 1 ...").
        bounds = self.bounds
        sums_even, sums_odd = self.sums
        group_count = len(bounds) - 1
        total = bounds[group_count]
        open_ended = self.open_ended
        first = 0
        stop = 0  # windows [first, j] with j < stop have at most MAX_CARD_LENGTH digits
        while first < group_count:
            start = bounds[first]
            if open_ended and total - start <= DECISION_DIGITS:
                self.stopped_at = first
                return
            if stop < first:
                stop = first
            while stop < group_count and bounds[stop + 1] - start <= MAX_CARD_LENGTH:
                stop += 1
            found = -1
            for last in range(stop - 1, first - 1, -1):  # the longest valid window first
                end = bounds[last + 1]
                if end - start < MIN_CARD_LENGTH:
                    break
                totals = sums_odd if end & 1 else sums_even
                if (totals[end] - totals[start]) % 10 == 0:  # Luhn of digits[start:end]
                    found = last
                    break
            if found < 0:
                first += 1
            else:
                yield first, found
                first = found + 1


def _luhn_prefix_sums(digits: str) -> _PrefixSums:
    """Luhn totals of every slice of ``digits`` in O(1): ``sums[end & 1][end] - sums[end & 1][start]``.

    In ``digits[start:end]`` the rightmost digit is plain and every second one
    to its left is doubled, so which indexes are doubled depends on the parity
    of ``end`` only.
    """
    raw = digits.encode("ascii")
    plain = raw.translate(_DIGIT_VALUES)
    doubled = raw.translate(_DOUBLED_DIGIT_VALUES)
    even_doubled = bytearray(plain)
    even_doubled[0::2] = doubled[0::2]
    odd_doubled = bytearray(plain)
    odd_doubled[1::2] = doubled[1::2]
    # end even -> rightmost index (end - 1) odd -> even indexes doubled, and vice versa.
    return list(accumulate(even_doubled, initial=0)), list(accumulate(odd_doubled, initial=0))


def joins_following(text: str, end: int, replacement: str) -> bool:
    """Whether ``replacement``, put in place of the text ending at ``end``, forms a card number with what follows.

    That happens only when the replacement ends in digits and the text goes on
    with a single separator and more digit groups: a window of whole groups
    taking digits from both sides may then pass the Luhn check.  Looks at most
    a few dozen characters ahead.
    """
    tail = _TRAILING_RUN.search(replacement)
    if tail is None or end + 1 >= len(text) or text[end] not in SEPARATORS or text[end + 1] not in "0123456789":
        return False
    following = _FOLLOWING_GROUPS.match(text, end + 1)
    assert following is not None  # text[end + 1] is a digit
    left = _SEPARATOR.split(tail.group())[-MAX_CARD_LENGTH:]
    right = _SEPARATOR.split(following.group())[:MAX_CARD_LENGTH]
    for first in range(len(left)):
        head = "".join(left[first:])
        if len(head) >= MAX_CARD_LENGTH:
            continue
        window = head
        for group in right:
            window += group
            if len(window) > MAX_CARD_LENGTH:
                break
            if len(window) >= MIN_CARD_LENGTH and luhn_valid(window):
                return True
    return False
