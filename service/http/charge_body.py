"""The ``POST /v1/charges`` body without marshmallow in the common case, with marshmallow's answers.

``ChargeCreateSchema`` stays the one definition of what a charge body may hold
(its error messages, the OpenAPI document).  Loading it costs a few percent of
a charge's CPU, though, so :func:`load_charge_create` first tries
:func:`fast_charge_create`: plain checks of the shape a client normally sends
(token, amount, maybe currency, capture, channel, a description and an order
reference), returning exactly what the schema would.  Anything it does not
fully recognize, and anything that would be an error, makes it return None and
the schema loads the body instead, so every refusal still comes from the
schema, word for word (the same arrangement as ``token_body``).
"""

from __future__ import annotations

from typing import Any

from marshmallow import Schema

from service.domain.charges import CURRENCIES, MAX_AMOUNT, REFERENCE_PATTERN, Channel
from service.domain.redaction import contains_card_number
from service.domain.tokens import TOKEN_ID_PATTERN
from service.http.body import load_with_fast_path
from service.http.charge_schemas import ChargeCreateSchema

CHARGE_CREATE_SCHEMA = ChargeCreateSchema()

_FIELDS = frozenset({"token", "amount", "currency", "capture", "description", "order_reference", "channel"})
_CHANNELS = frozenset(c.value for c in Channel)
_DESCRIPTION_MAX = 255


def _free_text(value: object, *, pattern: Any = None) -> bool:
    """A description or order reference the schema accepts (None included: both default to None)."""
    if value is None:
        return True
    if type(value) is not str:
        return False
    if pattern is not None:
        if pattern.match(value) is None:
            return False
    elif not 1 <= len(value) <= _DESCRIPTION_MAX:
        return False
    return not contains_card_number(value)


def fast_charge_create(data: dict[str, Any]) -> dict[str, Any] | None:
    """What ``ChargeCreateSchema().load(data)`` returns, for bodies it accepts in their common shape; else None."""
    if not data.keys() <= _FIELDS:
        return None
    token, amount = data.get("token"), data.get("amount")
    if type(token) is not str or TOKEN_ID_PATTERN.match(token) is None:
        return None
    if type(amount) is not int or not 1 <= amount <= MAX_AMOUNT:  # type(): a bool is not an amount
        return None
    currency = data.get("currency", "usd")
    capture = data.get("capture", True)
    channel = data.get("channel", Channel.WEB.value)
    if type(currency) is not str or currency not in CURRENCIES:
        return None
    if type(capture) is not bool or type(channel) is not str or channel not in _CHANNELS:
        return None
    description, reference = data.get("description"), data.get("order_reference")
    if not _free_text(description) or not _free_text(reference, pattern=REFERENCE_PATTERN):
        return None
    return {
        "token": token,
        "amount": amount,
        "currency": currency,
        "capture": capture,
        "description": description,
        "order_reference": reference,
        "channel": channel,
    }


def load_charge_create(data: dict[str, Any], schema: Schema = CHARGE_CREATE_SCHEMA) -> Any:
    """The loaded body: the fast path's result, or the schema's (with its ValidationFailed)."""
    return load_with_fast_path(fast_charge_create, schema, data)
