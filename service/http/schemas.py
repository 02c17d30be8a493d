"""marshmallow schemas: the exact shape of what the API accepts and returns.

Schemas check shape and type (unknown fields are refused); card semantics
(Luhn, brand, expiry, CVC length) belong to the domain and are applied by
:func:`tokenize_request`, which reports every card problem at once.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates

from service.domain.cards import CardError, Cvc, parse_card_number, parse_cvc, validate_expiry
from service.domain.redaction import contains_card_number
from service.domain.tokens import TokenFormat, TokenView
from service.errors import FieldError, ValidationFailed
from service.vault import TokenizeRequest

METADATA_MAX_KEYS = 20
METADATA_KEY_MAX = 40
METADATA_VALUE_MAX = 500


class StrictInteger(fields.Integer):
    """An integer that refuses booleans and strings."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(strict=True, **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any) -> Any:
        if isinstance(value, bool):
            raise self.make_error("invalid")
        return super()._deserialize(value, attr, data, **kwargs)


class StrictBoolean(fields.Boolean):
    """JSON true or false only: not 1, 0, "true" or "yes" (1 == True in Python, so truthy sets accept it)."""

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any) -> Any:
        if not isinstance(value, bool):
            raise self.make_error("invalid")
        return value


def no_card_number(value: str) -> None:
    if contains_card_number(value):
        raise ValidationError("Card numbers go only in card.number, never in free-text fields")


class _Strict(Schema):
    class Meta:
        unknown = RAISE


class CardInputSchema(_Strict):
    number = fields.String(required=True, validate=validate.Length(min=1, max=40))
    exp_month = StrictInteger(required=True)
    exp_year = StrictInteger(required=True)
    cvc = fields.String(load_default=None, validate=validate.Length(min=1, max=8))
    name = fields.String(load_default=None, validate=[validate.Length(min=1, max=100), no_card_number])
    postal_code = fields.String(
        load_default=None,
        validate=[
            validate.Length(min=1, max=16),
            validate.Regexp(r"^[A-Za-z0-9][A-Za-z0-9 -]*\Z", error="Letters, digits, spaces and dashes only"),
            no_card_number,
        ],
    )


class MetadataField(fields.Dict):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            keys=fields.String(validate=[validate.Length(min=1, max=METADATA_KEY_MAX), no_card_number]),
            values=fields.String(validate=[validate.Length(max=METADATA_VALUE_MAX), no_card_number]),
            **kwargs,
        )


class TokenCreateSchema(_Strict):
    card = fields.Nested(CardInputSchema, required=True)
    metadata = MetadataField(load_default=dict)
    format = fields.String(load_default="opaque", validate=validate.OneOf([f.value for f in TokenFormat]))
    expires_at = StrictInteger(load_default=None, allow_none=True, validate=validate.Range(min=0))
    deduplicate = StrictBoolean(load_default=False)

    @validates("metadata")
    def metadata_size(self, value: Mapping[str, str], **_: Any) -> None:
        if len(value) > METADATA_MAX_KEYS:
            raise ValidationError(f"At most {METADATA_MAX_KEYS} keys")


class TokenListQuerySchema(_Strict):
    fingerprint = fields.String(required=True, validate=validate.Regexp(r"^[0-9a-f]{32}\Z", error="Not a fingerprint"))


def tokenize_request(data: Mapping[str, Any], *, today: dt.date) -> TokenizeRequest:
    """Apply the domain's card rules to schema-checked data; all card problems at once."""
    card = data["card"]
    problems: list[FieldError] = []

    def field_error(exc: CardError) -> None:
        problems.append(FieldError(exc.field, exc.code, str(exc)))

    number = None
    try:
        number = parse_card_number(card["number"])
    except CardError as exc:
        field_error(exc)
    month, year = card["exp_month"], card["exp_year"]
    try:
        month, year = validate_expiry(month, year, today=today)
    except CardError as exc:
        field_error(exc)
    cvc: Cvc | None = None
    if card["cvc"] is not None and number is not None:
        try:
            cvc = parse_cvc(card["cvc"], number.brand)
        except CardError as exc:
            field_error(exc)
    if problems or number is None:
        raise ValidationFailed(errors=problems)
    return TokenizeRequest(
        number=number,
        exp_month=month,
        exp_year=year,
        cvc=cvc,
        name=card["name"],
        postal_code=card["postal_code"],
        metadata=data["metadata"],
        format=TokenFormat(data["format"]),
        expires_at=data["expires_at"],
        deduplicate=data["deduplicate"],
    )


class CardSummarySchema(Schema):
    brand = fields.String()
    last4 = fields.String()
    bin = fields.String()
    exp_month = fields.Integer()
    exp_year = fields.Integer()
    fingerprint = fields.String()


class TokenSchema(Schema):
    id = fields.String()
    object = fields.Constant("token")
    format = fields.String()
    card = fields.Nested(CardSummarySchema)
    cvc_retained = fields.Boolean()
    created = fields.Integer()
    expires_at = fields.Integer()
    metadata = fields.Dict(keys=fields.String(), values=fields.String())


def token_json(view: TokenView) -> dict[str, Any]:
    """``TokenSchema().dump(view)``, built directly: it runs on every token answer, and the schema's dump
    costs more than the rest of shaping the answer (tests/http/test_token_body.py checks they agree)."""
    card = view.card
    return {
        "id": view.id,
        "object": "token",
        "format": str(view.format),
        "card": {
            "brand": str(card.brand),
            "last4": card.last4,
            "bin": card.bin,
            "exp_month": int(card.exp_month),
            "exp_year": int(card.exp_year),
            "fingerprint": card.fingerprint,
        },
        "cvc_retained": bool(view.cvc_retained),
        "created": int(view.created),
        "expires_at": int(view.expires_at),
        "metadata": {str(k): str(v) for k, v in view.metadata.items()},
    }
