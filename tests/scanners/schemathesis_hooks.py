"""Hooks the schemathesis scan loads (``hooks`` in schemathesis.toml): the card-data check, fresh idempotency keys.

``no_card_data_in_responses`` runs on every response of every phase: no card
number or CVC the request carried may come back in the response (body or
headers), and no card-shaped number at all may appear (any standalone Luhn-valid
run of 12 to 19 digits, whichever card it would be).  It is written against
``tests.support.leaks``, not the service's own redactor.

``before_call`` gives every request that carries a well-formed
``Idempotency-Key`` a fresh one, as a real client does for each new request:
schemathesis would otherwise send the schema's example key (or the same short
generated key) with many different bodies, which the service rightly answers
422 ``idempotency_key_reused``.  Malformed keys are left alone so the negative
phases still send them.

One workaround for the tool itself: on Python 3.11.7, ``ast.parse`` called deep in
the stack can fail with ``SystemError: AST constructor recursion depth mismatch``
(CPython gh-106905, fixed in 3.11.8), and hypothesis calls it only to describe a
lambda in a strategy's repr while validating recursive JSON-schema strategies.  A
CI run lost its fuzzing phase to that once; the description falls back to
``lambda`` here, which changes no generated request.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import hypothesis.internal.lambda_sources as hypothesis_lambda_sources
import schemathesis

from tests.support.leaks import card_shaped_numbers

_describe = hypothesis_lambda_sources.lambda_description


def _describe_or_lambda(f: Any) -> str:
    try:
        return str(_describe(f))
    except SystemError:  # CPython gh-106905 (module docstring)
        return "lambda"


hypothesis_lambda_sources.lambda_description = _describe_or_lambda

CARD_NUMBER_KEYS = frozenset({"number", "pan", "card_number", "cardnumber", "account_number"})
CVC_KEYS = frozenset({"cvc", "cvv", "cvv2", "csc", "security_code"})
WELL_FORMED_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")


def _items(value: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield str(key), item
            yield from _items(item)
    elif isinstance(value, list):
        for item in value:
            yield from _items(item)


def sent_card_data(case: Any) -> tuple[set[str], set[str]]:
    """Card numbers (digits only) and CVCs the request carried, in any part of it."""
    numbers: set[str] = set()
    cvcs: set[str] = set()
    for key, value in _items(case.body):
        if not isinstance(value, str | int):
            continue
        text = str(value)
        digits = re.sub(r"[\s.\-]", "", text)
        if key.lower() in CARD_NUMBER_KEYS and digits.isdigit() and len(digits) >= 12:
            numbers.add(digits)
        if key.lower() in CVC_KEYS and digits.isdigit() and 3 <= len(digits) <= 4:
            cvcs.add(digits)
    parts = [case.body, case.query, case.path_parameters, case.headers]
    numbers.update(card_shaped_numbers(json.dumps(parts, default=str)))
    return numbers, cvcs


@schemathesis.check
def no_card_data_in_responses(ctx: Any, response: Any, case: Any) -> bool | None:
    """No card number or CVC from the request, and no card-shaped number at all, in the response."""
    text = response.content.decode("utf-8", "replace") + "\n" + json.dumps(dict(response.headers), default=str)
    squashed = re.sub(r"(?<=\d)[ .\-]+(?=\d)", "", text)
    numbers, cvcs = sent_card_data(case)
    echoed = sorted(number[-4:] for number in numbers if number in squashed)
    if echoed:
        raise AssertionError(f"a card number sent in the request came back (ending {', '.join(echoed)})")
    for cvc in cvcs:
        if re.search(rf'"{cvc}"|"(?:{"|".join(CVC_KEYS)})"\s*:\s*"?{cvc}', text, re.IGNORECASE):
            raise AssertionError("a CVC sent in the request came back")
    shaped = card_shaped_numbers(text)
    if shaped:
        raise AssertionError(f"the response holds {len(shaped)} card-shaped number(s) (ending {shaped[0][-4:]})")
    return None


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    headers = case.headers or {}
    for name in list(headers):
        value = headers[name]
        if name.lower() == "idempotency-key" and isinstance(value, str) and WELL_FORMED_IDEMPOTENCY_KEY.match(value):
            headers[name] = f"scan-{uuid.uuid4().hex}"
