"""The card-brand table for the browser, generated from ``service/domain/brands.py`` when the service starts.

Both pages where a person types a card number, the hosted card form
(``frame.js``) and the staff order form (``order-form.js``), show the brand
as it is typed and check lengths.  Instead of a hand-kept copy of the table
in each script, they both load this one script, ``/elements/v1/brands.js``,
built here from ``BRAND_PREFIXES`` and ``BRAND_RULES``, so the browser and
the server can never disagree about brands.  It is built once, at import, so
the bytes served are the bytes whose SRI hash the pages carry.
"""

from __future__ import annotations

import json
from typing import Any, Final

from service.domain.brands import BRAND_PREFIXES, BRAND_RULES

GLOBAL_NAME: Final = "CARDVAULT_BRANDS"


def brand_table() -> dict[str, Any]:
    """``prefixes``: [first, last, brand] in BRAND_PREFIXES order (longest match wins); ``rules``: per brand."""
    return {
        "prefixes": [[p.first, p.last, str(p.brand)] for p in BRAND_PREFIXES],
        "rules": {
            str(brand): {"lengths": sorted(rule.lengths), "cvc": rule.cvc_length, "name": rule.display_name}
            for brand, rule in BRAND_RULES.items()
        },
    }


def brand_script() -> bytes:
    """A classic script that defines one frozen global, ``CARDVAULT_BRANDS``; it does nothing else."""
    table = json.dumps(brand_table(), separators=(",", ":"), ensure_ascii=True)  # JSON is a JavaScript literal
    return (
        "/* cardvault card brands: generated when the service starts from service/domain/brands.py"
        " (BRAND_PREFIXES, BRAND_RULES). Do not edit. */\n"
        f"var {GLOBAL_NAME} = Object.freeze({table});\n"
    ).encode()
