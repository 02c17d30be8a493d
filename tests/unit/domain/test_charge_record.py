"""The stored charge record: the hand-built JSON is exactly what ``dataclasses.asdict`` would give.

Updates compare the stored bytes with ``to_json()`` of the charge they started from, so a record
written by one build must be the same bytes another build computes; and every field must be in it.
"""

from __future__ import annotations

import dataclasses
import json

from hypothesis import given
from hypothesis import strategies as st

from service.domain.charges import (
    REFUND_PENDING,
    REFUND_SUCCEEDED,
    Channel,
    Charge,
    ChargeStatus,
    ProcessorInfo,
    Refund,
)

text = st.one_of(st.none(), st.text(max_size=20))


def _reference_json(charge: Charge) -> bytes:
    return json.dumps(dataclasses.asdict(charge), separators=(",", ":")).encode()


def _charge(**changes: object) -> Charge:
    base = Charge(
        id="ch_abc",
        token="tok_abc",
        amount=2500,
        currency="usd",
        status=ChargeStatus.UNKNOWN,
        channel=Channel.PHONE,
        card_brand="visa",
        card_last4="4242",
        processor=ProcessorInfo(name="sandbox"),
        created=1_700_000_000,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def test_every_field_is_in_the_record() -> None:
    record = json.loads(_charge().to_json())
    assert list(record) == [f.name for f in dataclasses.fields(Charge)]
    assert list(record["processor"]) == [f.name for f in dataclasses.fields(ProcessorInfo)]


def test_a_charge_with_refunds_and_history_is_recorded_as_asdict_would() -> None:
    charge = (
        _charge(description="Fishing licence — “annual”", order_reference="ord-1", settles_at=1_700_050_000)
        .with_status(ChargeStatus.SUCCEEDED, 1_700_000_001, "approved", amount_captured=2500)
        .with_refund(Refund("re_1", 500, REFUND_SUCCEEDED, "sbx_1", 1_700_000_100))
        .with_refund(Refund("re_2", 100, REFUND_PENDING, None, 1_700_000_200))
    )
    assert charge.to_json() == _reference_json(charge)
    assert Charge.from_json(charge.to_json()) == charge


def test_the_record_is_computed_once_and_a_changed_charge_gets_its_own() -> None:
    charge = _charge()
    first = charge.to_json()
    assert charge.to_json() is first
    changed = charge.with_status(ChargeStatus.DECLINED, 1_700_000_002, "declined", decline_code="generic_decline")
    assert changed.to_json() == _reference_json(changed) != first
    assert charge == Charge.from_json(first)  # the cached record takes no part in equality


@given(
    description=text,
    failure=text,
    amount=st.integers(0, 99_999_999),
    status=st.sampled_from(list(ChargeStatus)),
    auth_code=text,
)
def test_any_charge_is_recorded_as_asdict_would(
    description: str | None, failure: str | None, amount: int, status: ChargeStatus, auth_code: str | None
) -> None:
    charge = _charge(
        description=description,
        failure_message=failure,
        amount=amount,
        status=status,
        processor=ProcessorInfo(name="authorize_net", transaction_id="60012345678", auth_code=auth_code),
    )
    assert charge.to_json() == _reference_json(charge)
