"""Identifiers that can never be mistaken for a card number.

Hex and URL-safe ids are mostly digits now and then: a 24-hex-digit charge id
held a Luhn-valid run of 16 digits in a CI run, and the service's own card
redaction (logs, the audit trail) then masked part of the id, as an
agency's data-loss scanner would flag it.  Every id the service makes (but a
pan-shaped token, all digits on purpose and never Luhn-valid) is drawn, or
derived, again until it has no run of ``CARD_LIKE_DIGITS`` or more digits:
the shortest card number is 12 digits.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable

CARD_LIKE_DIGITS = 12
_CARD_LIKE_RUN = re.compile(rf"[0-9]{{{CARD_LIKE_DIGITS},}}")
_MAX_TRIES = 1000  # a hex id fails with probability about 1 in 15: never reached


def looks_card_free(identifier: str) -> bool:
    return _CARD_LIKE_RUN.search(identifier) is None


def card_free(draw: Callable[[], str]) -> str:
    """A fresh id from ``draw``, drawn again while it holds a card-length run of digits."""
    for _ in range(_MAX_TRIES):
        candidate = draw()
        if looks_card_free(candidate):
            return candidate
    raise RuntimeError("no card-free id drawn")


def derived_card_free(derive: Callable[[int], str]) -> str:
    """The first of ``derive(0)``, ``derive(1)``... without a card-length run of digits (same input, same id)."""
    for attempt in range(_MAX_TRIES):
        candidate = derive(attempt)
        if looks_card_free(candidate):
            return candidate
    raise RuntimeError("no card-free id derived")


def key_derived_id(prefix: str, person: bytes, *parts: str) -> str:
    """``prefix`` plus 24 URL-safe characters of a BLAKE2b of ``parts``: an id a retry derives again from its key.

    (Charge and refund ids from an Idempotency-Key.  URL-safe text, not hex,
    which is mostly digits; and derived again with a counter in the rare case
    the text holds a card-length run.)
    """

    def derive(attempt: int) -> str:
        data = "\0".join(parts) + (f"\0{attempt}" if attempt else "")
        digest = hashlib.blake2b(data.encode(), person=person, digest_size=18).digest()
        return prefix + base64.urlsafe_b64encode(digest).decode()

    return derived_card_free(derive)
