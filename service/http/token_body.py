"""The ``POST /v1/tokens`` body without marshmallow in the common case, with marshmallow's answers.

``TokenCreateSchema`` stays the one definition of what the body may hold (its
error messages, the OpenAPI document).  Loading a nested marshmallow schema
costs about a tenth of a token request's CPU, though, so :func:`load_token_create`
first tries :func:`fast_token_create`: plain checks of the shapes a client
normally sends (a card with number, expiry and maybe a CVC; maybe metadata,
format, expires_at, deduplicate), returning exactly what the schema would.
Anything it does not fully recognize (a field it does not know, a wrong type,
an out-of-range length, a name or postal code, anything that would be an
error) makes it return None, and the schema loads the body instead, so every
refusal still comes from the schema, word for word.
"""

from __future__ import annotations

from typing import Any

from marshmallow import Schema

from service.domain.redaction import contains_card_number
from service.domain.tokens import TokenFormat
from service.http.body import load_with_fast_path
from service.http.schemas import METADATA_KEY_MAX, METADATA_MAX_KEYS, METADATA_VALUE_MAX, TokenCreateSchema

TOKEN_CREATE_SCHEMA = TokenCreateSchema()

_TOP_FIELDS = frozenset({"card", "metadata", "format", "expires_at", "deduplicate"})
_CARD_FIELDS = frozenset({"number", "exp_month", "exp_year", "cvc"})  # name, postal_code: the schema's validators
_FORMATS = frozenset(f.value for f in TokenFormat)
_NUMBER_MAX = 40
_CVC_MAX = 8


def _is_int(value: object) -> bool:
    return type(value) is int  # not bool, which is an int subclass; the schema refuses booleans


def _metadata(value: object) -> dict[str, str] | None:
    if type(value) is not dict or len(value) > METADATA_MAX_KEYS:
        return None
    for key, item in value.items():
        if type(key) is not str or type(item) is not str:
            return None
        if not 1 <= len(key) <= METADATA_KEY_MAX or len(item) > METADATA_VALUE_MAX:
            return None
        if contains_card_number(key) or contains_card_number(item):
            return None
    return dict(value)


def fast_token_create(data: dict[str, Any]) -> dict[str, Any] | None:
    """What ``TokenCreateSchema().load(data)`` returns, for bodies it accepts in their common shape; else None."""
    if not data.keys() <= _TOP_FIELDS:
        return None
    card = data.get("card")
    if type(card) is not dict or not card.keys() <= _CARD_FIELDS:
        return None
    number, month, year = card.get("number"), card.get("exp_month"), card.get("exp_year")
    if type(number) is not str or not 1 <= len(number) <= _NUMBER_MAX or not _is_int(month) or not _is_int(year):
        return None
    cvc = card.get("cvc")
    if cvc is not None and (type(cvc) is not str or not 1 <= len(cvc) <= _CVC_MAX):
        return None
    metadata: dict[str, str] | None = {}
    if "metadata" in data:
        metadata = _metadata(data["metadata"])
        if metadata is None:
            return None
    token_format = data.get("format", TokenFormat.OPAQUE.value)
    if type(token_format) is not str or token_format not in _FORMATS:
        return None
    expires_at = data.get("expires_at")
    if expires_at is not None and (not _is_int(expires_at) or expires_at < 0):
        return None
    deduplicate = data.get("deduplicate", False)
    if type(deduplicate) is not bool:
        return None
    return {
        "card": {
            "number": number,
            "exp_month": month,
            "exp_year": year,
            "cvc": cvc,
            "name": None,
            "postal_code": None,
        },
        "metadata": metadata,
        "format": token_format,
        "expires_at": expires_at,
        "deduplicate": deduplicate,
    }


def load_token_create(data: dict[str, Any], schema: Schema = TOKEN_CREATE_SCHEMA) -> Any:
    """The loaded body: the fast path's result, or the schema's (with its ValidationFailed)."""
    return load_with_fast_path(fast_token_create, schema, data)
