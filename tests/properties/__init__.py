"""Property tests (hypothesis) for the pure domain: cards, Luhn, brands, token ids, forward templates, redaction.

Every test here is decorated with ``PROPERTIES``: a fixed example budget
(``CARDVAULT_PROPERTY_EXAMPLES``, default 60), ``derandomize=True`` and no
example database, so CI runs exactly the same examples every time and the
whole directory stays within seconds.  To explore further on a workstation:
``CARDVAULT_PROPERTY_EXAMPLES=5000 CARDVAULT_PROPERTY_RANDOM=1 pytest tests/properties``
(random generation, still no database).

Strategies come from ``tests.unit.domain``: only the public test cards are
literals, every other card number is generated, with reference (textbook)
Luhn code written independently of ``service.domain.cards``.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

EXAMPLES = int(os.environ.get("CARDVAULT_PROPERTY_EXAMPLES", "60"))

PROPERTIES = settings(
    max_examples=EXAMPLES,
    derandomize=not os.environ.get("CARDVAULT_PROPERTY_RANDOM"),
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
