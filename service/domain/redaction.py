"""Removing card numbers from log payloads and other text the service echoes.

The vault must be able to promise that logs, error reports and anything else
that echoes client input never contain a card number or security code, even
when a client pastes one into the wrong field.  ``redact_value`` is the last
step of the logging pipeline for that reason: it deep-copies a payload with
every Luhn-valid 12-19 digit number replaced and the values of card-ish keys
(``cvc``, ``pan``, ``number``…) blanked.

What counts as a card number, and how it is found in one linear pass, lives in
``service.domain.card_finder`` (its docstring has the rules: groups, separators,
the over-redaction trade-off); the names below are re-exported for the many
callers that only need "is there a card in this text" and "redact it".  Free
text with US Social Security numbers, masks and tokens is
``service.domain.text_scan``'s business.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final, TypeAlias

from service.domain.card_finder import CardMatch, contains_card_number, find_card_numbers, iter_card_numbers
from service.domain.cards import MAX_CARD_LENGTH, MIN_CARD_LENGTH

__all__ = [
    "CIRCULAR",
    "MAX_DEPTH",
    "REDACTED",
    "SENSITIVE_KEYS",
    "TOO_DEEP",
    "UNREPRESENTABLE",
    "CardMatch",
    "contains_card_number",
    "default_replacement",
    "find_card_numbers",
    "is_sensitive_key",
    "redact_card_numbers",
    "redact_value",
]

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

_SHORTEST_CARD: Final = 10 ** (MIN_CARD_LENGTH - 1)
_LONGER_THAN_ANY_CARD: Final = 10**MAX_CARD_LENGTH


def default_replacement(match: CardMatch) -> str:
    return f"[REDACTED CARD ****{match.last4}]"


def redact_card_numbers(text: str, replacement: Callable[[CardMatch], str] | None = None) -> str:
    """``text`` with each card number replaced (by default with ``[REDACTED CARD ****4242]``)."""
    replace = default_replacement if replacement is None else replacement
    pieces: list[str] = []
    position = 0
    for match in iter_card_numbers(text):
        pieces += (text[position : match.start], replace(match))
        position = match.end
    if not pieces:
        return text
    pieces.append(text[position:])
    return "".join(pieces)


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
