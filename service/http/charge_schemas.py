"""marshmallow schemas of the charges API: what it accepts, and the charge and refund objects it returns."""

from __future__ import annotations

from typing import Any

from marshmallow import RAISE, Schema, fields, validate

from service.domain.charges import CURRENCIES, MAX_AMOUNT, REFERENCE_PATTERN, Channel, Charge, Refund
from service.domain.tokens import TOKEN_ID_PATTERN
from service.http.schemas import StrictBoolean, StrictInteger, no_card_number


class _Strict(Schema):
    class Meta:
        unknown = RAISE


def amount_field(**kwargs: Any) -> StrictInteger:
    return StrictInteger(
        validate=validate.Range(1, MAX_AMOUNT, error=f"Must be a whole number of cents from 1 to {MAX_AMOUNT}"),
        **kwargs,
    )


class ChargeCreateSchema(_Strict):
    token = fields.String(required=True, validate=validate.Regexp(TOKEN_ID_PATTERN, error="Not a token id"))
    amount = amount_field(required=True)
    currency = fields.String(load_default="usd", validate=validate.OneOf(sorted(CURRENCIES)))
    capture = StrictBoolean(load_default=True)
    description = fields.String(load_default=None, validate=[validate.Length(min=1, max=255), no_card_number])
    order_reference = fields.String(
        load_default=None,
        validate=[
            validate.Regexp(REFERENCE_PATTERN, error="1 to 64 letters, digits and . _ : / # -"),
            no_card_number,
        ],
    )
    channel = fields.String(load_default=Channel.WEB.value, validate=validate.OneOf([c.value for c in Channel]))


class AmountSchema(_Strict):
    amount = amount_field(load_default=None)


class EmptySchema(_Strict):
    pass


class ChargeListQuerySchema(_Strict):
    order_reference = fields.String(required=True, validate=validate.Regexp(REFERENCE_PATTERN, error="Not a reference"))


def refund_object(refund: Refund, charge_id: str) -> dict[str, Any]:
    return {
        "id": refund.id,
        "object": "refund",
        "charge": charge_id,
        "amount": refund.amount,
        "status": refund.status,
        "processor_transaction_id": refund.processor_transaction_id,
        "created": refund.created,
    }


def charge_json(charge: Charge) -> dict[str, Any]:
    return {
        "id": charge.id,
        "object": "charge",
        "status": str(charge.status),
        "amount": charge.amount,
        "amount_captured": charge.amount_captured,
        "amount_refunded": charge.amount_refunded,
        "currency": charge.currency,
        "token": charge.token,
        "channel": str(charge.channel),
        "description": charge.description,
        "order_reference": charge.order_reference,
        "decline_code": charge.decline_code,
        "failure_message": charge.failure_message,
        "processor": {
            "name": charge.processor.name,
            "transaction_id": charge.processor.transaction_id,
            "auth_code": charge.processor.auth_code,
            "avs_result": charge.processor.avs_result,
            "cvc_check": charge.processor.cvc_check,
        },
        "card": {"brand": charge.card_brand, "last4": charge.card_last4},
        "refunds": [refund_object(r, charge.id) for r in charge.refunds],
        "history": [{"status": h.status, "at": h.at, "note": h.note} for h in charge.history],
        "created": charge.created,
    }
