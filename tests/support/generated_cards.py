"""Many distinct card numbers, made at run time for tests that need more than the public test cards.

The repository holds no card-like number but the public test cards: these are
built when a test runs, from the public Visa test prefix 400000 plus a serial
number plus the computed Luhn digit, and handed to the leak scans so the
session guard looks for them in logs, Redis and AOF files like any test card.
The serials start far from the sandbox's special cards (4000 0000 0000 0002
and friends), so the sandbox approves every one of them.
"""

from __future__ import annotations

from service.domain.cards import luhn_check_digit
from tests.support import leaks

PUBLIC_TEST_PREFIX = "400000"
FIRST_SERIAL = 700_000_000


def distinct_cards(count: int, *, start: int = FIRST_SERIAL) -> list[str]:
    """``count`` distinct Luhn-valid 16-digit Visa test numbers, watched by the leak scans."""
    numbers = []
    for serial in range(start, start + count):
        partial = f"{PUBLIC_TEST_PREFIX}{serial:09d}"
        numbers.append(partial + luhn_check_digit(partial))
    leaks.watch_generated_cards(numbers)
    return numbers
