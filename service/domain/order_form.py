"""The staff order form: what a person typed, checked field by field into an order the vault can charge.

Every message is about the field, never its value, and ``keep`` holds what
may be shown again in the re-rendered form: everything except the card
number and the security code, which the person types again.  A card number
pasted into any field other than the card number field is refused: card
numbers go only where they are encrypted.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Final

from service.domain.cards import CardError, CardNumber, Cvc, parse_card_number, parse_cvc, validate_expiry
from service.domain.charges import MAX_AMOUNT, REFERENCE_PATTERN, Channel
from service.domain.redaction import contains_card_number

STAFF_CHANNELS: Final = (Channel.PHONE, Channel.FAX, Channel.MAIL)
TEXT_FIELDS: Final = ("channel", "amount", "order_reference", "description", "cardholder_name", "expiry", "postal_code")
SECRET_FIELDS: Final = ("card_number", "cvc")
POSTAL_CODE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 -]{1,9}$")
EXPIRY: Final = re.compile(r"^\s*(\d{1,2})\s*/\s*(\d{2}|\d{4})\s*$")
AMOUNT: Final = re.compile(r"^\$?\s*(\d{1,3}(,\d{3})+|\d+)(\.\d{1,2})?$")
CARD_IN_WRONG_FIELD: Final = "Card numbers go only in the card number field; remove it from here."


@dataclass(frozen=True, repr=False)
class StaffOrder:
    channel: Channel
    amount: int
    order_reference: str | None
    description: str | None
    cardholder_name: str
    number: CardNumber
    exp_month: int
    exp_year: int
    cvc: Cvc | None
    postal_code: str | None

    def __repr__(self) -> str:
        return f"StaffOrder({self.channel} {self.amount} {self.number!r})"


@dataclass
class FormCheck:
    """The outcome of checking a form: an order, or field errors; ``keep`` is safe to show again."""

    order: StaffOrder | None
    errors: dict[str, str] = field(default_factory=dict)
    keep: dict[str, str] = field(default_factory=dict)
    card_in_wrong_field: list[str] = field(default_factory=list)


def parse_amount(raw: str) -> int:
    """``25``, ``25.5``, ``$1,234.50`` -> cents; ValueError with a message otherwise."""
    text = raw.strip()
    if not AMOUNT.match(text):
        raise ValueError("Enter an amount in dollars and cents, like 25.00.")
    try:
        cents = int((Decimal(text.lstrip("$").strip().replace(",", "")) * 100).to_integral_exact())
    except InvalidOperation:
        raise ValueError("Enter an amount in dollars and cents, like 25.00.") from None
    if not 1 <= cents <= MAX_AMOUNT:
        raise ValueError(f"The amount must be between 0.01 and {MAX_AMOUNT / 100:,.2f}.")
    return cents


def format_amount(cents: int) -> str:
    return f"{cents / 100:,.2f}"


def parse_expiry(raw: str, today: dt.date) -> tuple[int, int]:
    match = EXPIRY.match(raw)
    if not match:
        raise ValueError("Enter the expiry as MM/YY.")
    try:
        return validate_expiry(int(match.group(1)), int(match.group(2)), today=today)
    except CardError as exc:
        raise ValueError(exc.message) from None


def check_order_form(form: Mapping[str, str], today: dt.date) -> FormCheck:
    values = {name: (form.get(name) or "").strip() for name in (*TEXT_FIELDS, *SECRET_FIELDS)}
    check = FormCheck(order=None, keep={name: values[name] for name in TEXT_FIELDS})
    errors = check.errors

    for name in ("order_reference", "description", "cardholder_name", "postal_code", "amount", "expiry"):
        if contains_card_number(values[name]):
            errors[name] = CARD_IN_WRONG_FIELD
            check.card_in_wrong_field.append(name)
            check.keep[name] = ""  # never echo a card number back, even from the wrong field

    channel = None
    try:
        channel = Channel(values["channel"])
        if channel not in STAFF_CHANNELS:
            raise ValueError
    except ValueError:
        errors["channel"] = "Choose phone, fax or mail."

    amount = 0
    if "amount" not in errors:
        try:
            amount = parse_amount(values["amount"])
        except ValueError as exc:
            errors["amount"] = str(exc)

    reference = values["order_reference"] or None
    if "order_reference" not in errors and reference is not None and not REFERENCE_PATTERN.match(reference):
        errors["order_reference"] = "Use 1 to 64 letters, digits and . _ : / # - (starting with a letter or digit)."

    description = values["description"] or None
    if "description" not in errors and description is not None and len(description) > 255:
        errors["description"] = "Use at most 255 characters."

    name = values["cardholder_name"]
    if "cardholder_name" not in errors:
        if not name:
            errors["cardholder_name"] = "Enter the cardholder's name as it appears on the card."
        elif len(name) > 100:
            errors["cardholder_name"] = "Use at most 100 characters."

    postal_code = values["postal_code"] or None
    if "postal_code" not in errors and postal_code is not None and not POSTAL_CODE.match(postal_code):
        errors["postal_code"] = "Enter a postal code of 2 to 10 letters, digits, spaces or dashes."

    number: CardNumber | None = None
    if not values["card_number"]:
        errors["card_number"] = "Enter the card number."
    else:
        try:
            number = parse_card_number(values["card_number"])
        except CardError as exc:
            errors["card_number"] = exc.message

    exp_month = exp_year = 0
    if "expiry" not in errors:
        try:
            exp_month, exp_year = parse_expiry(values["expiry"], today)
        except ValueError as exc:
            errors["expiry"] = str(exc)

    cvc: Cvc | None = None
    if values["cvc"]:
        if number is not None:
            try:
                cvc = parse_cvc(values["cvc"], number.brand)
            except CardError as exc:
                errors["cvc"] = exc.message
        elif not values["cvc"].isdigit():
            errors["cvc"] = "The security code must contain only digits."
    elif channel is Channel.PHONE:
        errors["cvc"] = "Enter the security code the caller reads from the card."

    if errors or number is None or channel is None:
        return check
    check.order = StaffOrder(
        channel=channel,
        amount=amount,
        order_reference=reference,
        description=description,
        cardholder_name=name,
        number=number,
        exp_month=exp_month,
        exp_year=exp_year,
        cvc=cvc,
        postal_code=postal_code,
    )
    return check
