"""Finding and removing card numbers in free text and in log payloads.

The vault must be able to promise that logs, error reports and anything else
that echoes client input never contain a card number or security code, even
when a client pastes one into the wrong field.  ``redact_value`` is the last
step of the logging pipeline for that reason: it deep-copies a payload with
every Luhn-valid 12-19 digit number replaced and the values of card-ish keys
(``cvc``, ``pan``, ``number``…) blanked.

A card number is a Luhn-valid run of 12-19 digits, written plain or in groups
joined by single spaces, dashes or dots, with no digit directly before or after
it.  Within a run of groups, any consecutive whole groups may form the number,
so "2024-01-15 4242 4242 4242 4242" and "4242 4242 4242 4242 123" (card then
CVC) are caught; a plain run of 20+ digits is never a card and is left alone.
The price is some over-redaction: in the mistyped "4242 4242 4242 4241" the
Luhn-valid "4242 4242 4242" is reported.  Matching is one linear regex pass
plus O(1) Luhn checks per candidate window (at most eight per group).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from itertools import accumulate
from typing import Final, TypeAlias

from service.domain.cards import MAX_CARD_LENGTH, MIN_CARD_LENGTH, luhn_valid

SENSITIVE_KEYS: Final[frozenset[str]] = frozenset(
    {
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
    }
)
REDACTED: Final = "[REDACTED]"
CIRCULAR: Final = "[REDACTED: circular reference]"
TOO_DEEP: Final = "[REDACTED: nested too deep]"
UNREPRESENTABLE: Final = "[REDACTED: unrepresentable value]"
MAX_DEPTH: Final = 64

# Groups of ASCII digits joined by single separators.  Every repetition must
# start with a separator, so the regex cannot backtrack catastrophically, and a
# greedy match always ends at a non-digit.
_DIGIT_RUN: Final = re.compile(r"[0-9]+(?:[ .-][0-9]+)*")
_SEPARATOR: Final = re.compile(r"[ .-]")
_DIGIT_VALUES: Final = bytes.maketrans(b"0123456789", bytes(range(10)))
_DOUBLED_DIGIT_VALUES: Final = bytes.maketrans(b"0123456789", bytes([0, 2, 4, 6, 8, 1, 3, 5, 7, 9]))
_SHORTEST_CARD: Final = 10 ** (MIN_CARD_LENGTH - 1)
_LONGER_THAN_ANY_CARD: Final = 10**MAX_CARD_LENGTH
_PrefixSums: TypeAlias = tuple[list[int], list[int]]  # indexed by the parity of a slice's end


@dataclass(frozen=True, slots=True)
class CardMatch:
    """Where a card number sits in a text (``text[start:end]``, separators included); only its last four."""

    start: int
    end: int
    last4: str


def find_card_numbers(text: str) -> list[CardMatch]:
    """Every card number in ``text``, in order, non-overlapping."""
    return list(_iter_card_numbers(text))


def contains_card_number(text: str) -> bool:
    return next(_iter_card_numbers(text), None) is not None


def default_replacement(match: CardMatch) -> str:
    return f"[REDACTED CARD ****{match.last4}]"


def redact_card_numbers(text: str, replacement: Callable[[CardMatch], str] | None = None) -> str:
    """``text`` with each card number replaced (by default with ``[REDACTED CARD ****4242]``)."""
    replace = default_replacement if replacement is None else replacement
    pieces: list[str] = []
    position = 0
    for match in _iter_card_numbers(text):
        pieces += (text[position : match.start], replace(match))
        position = match.end
    if not pieces:
        return text
    pieces.append(text[position:])
    return "".join(pieces)


# --- matching ---------------------------------------------------------------


def _iter_card_numbers(text: str) -> Iterator[CardMatch]:
    for run in _DIGIT_RUN.finditer(text):
        yield from _card_numbers_in_run(run.group(), run.start())


def _card_numbers_in_run(run: str, offset: int) -> Iterator[CardMatch]:
    if run.isdigit():  # ASCII only: the regex matched [0-9]
        if MIN_CARD_LENGTH <= len(run) <= MAX_CARD_LENGTH and luhn_valid(run):
            yield CardMatch(offset, offset + len(run), run[-4:])
        return
    groups = _SEPARATOR.split(run)
    if len(run) - (len(groups) - 1) < MIN_CARD_LENGTH:
        return
    digits = "".join(groups)
    # Group k holds digits[bounds[k]:bounds[k + 1]] and starts k separators later in the run.
    bounds = list(accumulate(map(len, groups), initial=0))
    for first, last in _valid_group_windows(bounds, _luhn_prefix_sums(digits)):
        start_digit, end_digit = bounds[first], bounds[last + 1]
        start = offset + start_digit + first  # plus the separators before group `first`
        end = offset + end_digit + last
        yield CardMatch(start, end, digits[end_digit - 4 : end_digit])


def _valid_group_windows(bounds: list[int], sums: _PrefixSums) -> Iterator[tuple[int, int]]:
    """Greedy left to right: at each group, the longest Luhn-valid window of whole groups starting there.

    Every valid window therefore overlaps a reported one, so redacting the
    reported windows leaves no complete card number behind.
    """
    group_count = len(bounds) - 1
    first = 0
    stop = 0  # windows [first, j] with j < stop have at most MAX_CARD_LENGTH digits
    while first < group_count:
        stop = max(stop, first)
        while stop < group_count and bounds[stop + 1] - bounds[first] <= MAX_CARD_LENGTH:
            stop += 1
        last = _longest_valid_window(bounds, sums, first, stop)
        if last is None:
            first += 1
        else:
            yield first, last
            first = last + 1


def _longest_valid_window(bounds: list[int], sums: _PrefixSums, first: int, stop: int) -> int | None:
    start = bounds[first]
    for last in range(stop - 1, first - 1, -1):
        end = bounds[last + 1]
        if end - start < MIN_CARD_LENGTH:
            return None
        totals = sums[end & 1]
        if (totals[end] - totals[start]) % 10 == 0:  # Luhn of digits[start:end]
            return last
    return None


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


# --- structured values ------------------------------------------------------


def redact_value(value: object) -> object:
    """A copy of ``value`` that is safe to log; never raises, and a dict always comes back as a dict.

    Strings (dict keys included) are searched with ``redact_card_numbers``;
    mappings, lists, tuples and sets are walked (mappings come back as dicts);
    ints and floats whose digits form a card number become redacted strings,
    other numbers, bools and None are kept; the value of a key named in
    ``SENSITIVE_KEYS`` (case-insensitive, "-" read as "_") becomes
    ``[REDACTED]`` when it is a non-empty str or bytes or an int; anything else
    is replaced by its ``repr()``, redacted.  Cycles and nesting deeper than
    ``MAX_DEPTH`` are cut off with a placeholder.
    """
    return _redact(value, set())


def is_sensitive_key(key: object) -> bool:
    return isinstance(key, str) and key.lower().replace("-", "_") in SENSITIVE_KEYS


def _redact(value: object, path: set[int]) -> object:
    """Never raises: whatever cannot be walked is replaced by its redacted ``repr()``."""
    try:
        return _redact_by_type(value, path)
    except Exception:
        return _redact_repr(value)


def _redact_by_type(value: object, path: set[int]) -> object:
    if isinstance(value, str):
        return redact_card_numbers(value)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return _redact_number(value)
    if isinstance(value, Mapping | list | tuple | set | frozenset):
        return _redact_container(value, path)
    return _redact_repr(value)


def _redact_number(value: float) -> object:
    text = repr(value) if isinstance(value, float) else _int_text(value)
    return redact_card_numbers(text) if text is not None and contains_card_number(text) else value


def _int_text(value: int) -> str | None:
    """The digits of an int that has 12-19 of them; None otherwise (also avoids str()'s limit on huge ints)."""
    return int.__repr__(value) if _SHORTEST_CARD <= abs(value) < _LONGER_THAN_ANY_CARD else None


def _redact_repr(value: object) -> str:
    try:
        text = repr(value)
    except Exception:
        return UNREPRESENTABLE
    return redact_card_numbers(text)


_Container: TypeAlias = Mapping[object, object] | list[object] | tuple[object, ...] | set[object] | frozenset[object]


def _redact_container(container: _Container, path: set[int]) -> object:
    if id(container) in path:
        return CIRCULAR
    if len(path) >= MAX_DEPTH:
        return TOO_DEEP
    path.add(id(container))
    try:
        return _redact_items(container, path)
    finally:
        path.discard(id(container))


def _redact_items(container: _Container, path: set[int]) -> object:
    if isinstance(container, Mapping):
        return {_redact_key(key, path): _redact_entry(key, item, path) for key, item in container.items()}
    items = [_redact(item, path) for item in container]
    if isinstance(container, list):
        return items
    if isinstance(container, tuple):
        return tuple(items)
    return frozenset(items) if isinstance(container, frozenset) else set(items)


def _redact_key(key: object, path: set[int]) -> object:
    redacted = _redact(key, path)
    try:
        hash(redacted)
    except Exception:
        return _redact_repr(key)
    return redacted


def _redact_entry(key: object, item: object, path: set[int]) -> object:
    if _is_sensitive_entry(key, item):
        return REDACTED
    return _redact(item, path)


def _is_sensitive_entry(key: object, item: object) -> bool:
    try:
        return is_sensitive_key(key) and _is_filled_scalar(item)
    except Exception:
        return True  # cannot tell: err on the side of not logging it


def _is_filled_scalar(item: object) -> bool:
    if isinstance(item, bool):
        return False
    if isinstance(item, int):
        return True
    return isinstance(item, str | bytes | bytearray) and len(item) > 0
