"""The charge body's fast path agrees with the marshmallow schema it stands in for.

For every body either the fast path gives up (None) and the schema decides, or it returns exactly
what the schema returns; it never accepts what the schema refuses.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.errors import ValidationFailed
from service.http.charge_body import fast_charge_create, load_charge_create
from service.http.charge_schemas import ChargeCreateSchema
from tests.support.cards import AMEX, VISA
from tests.support.schema_load import schema_load

SCHEMA = ChargeCreateSchema()
TOKEN = "tok_" + "A1b2C3d4E5f6G7h8I9j0K1l2"


BASE = {"token": TOKEN, "amount": 2500}
BODIES: list[dict[str, Any]] = [
    BASE,
    {**BASE, "currency": "usd"},
    {**BASE, "currency": "eur"},
    {**BASE, "currency": None},
    {**BASE, "capture": False},
    {**BASE, "capture": 0},
    {**BASE, "capture": None},
    {**BASE, "channel": "phone"},
    {**BASE, "channel": "carrier pigeon"},
    {**BASE, "description": "Annual fishing licence"},
    {**BASE, "description": ""},
    {**BASE, "description": "x" * 255},
    {**BASE, "description": "x" * 256},
    {**BASE, "description": None},
    {**BASE, "description": f"card {VISA}"},
    {**BASE, "description": 7},
    {**BASE, "order_reference": "ORD-2026-0001"},
    {**BASE, "order_reference": "has space"},
    {**BASE, "order_reference": AMEX},
    {**BASE, "order_reference": None},
    {**BASE, "amount": 0},
    {**BASE, "amount": 99_999_999},
    {**BASE, "amount": 100_000_000},
    {**BASE, "amount": True},
    {**BASE, "amount": 25.0},
    {**BASE, "amount": "2500"},
    {**BASE, "token": "tok_short"},
    {**BASE, "token": "4242424242424242"},  # a PAN-shaped token id is a token id
    {**BASE, "token": 42},
    {**BASE, "extra": 1},
    {"token": TOKEN},
    {"amount": 2500},
    {},
]


@pytest.mark.parametrize("body", BODIES)
def test_the_fast_path_returns_what_the_schema_returns_or_gives_up(body: dict[str, Any]) -> None:
    fast = fast_charge_create(body)
    assert fast is None or fast == schema_load(SCHEMA, body)


def test_the_common_shapes_take_the_fast_path() -> None:
    for body in (BASE, {**BASE, "currency": "usd", "capture": False, "channel": "mail", "order_reference": "A-1"}):
        assert fast_charge_create(body) == schema_load(SCHEMA, body) is not None


def test_a_refused_body_gets_the_schemas_errors() -> None:
    with pytest.raises(ValidationFailed) as refused:
        load_charge_create({**BASE, "amount": 0})
    assert [e.field for e in refused.value.errors] == ["amount"]


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 100_000_001),
    st.floats(allow_nan=False),
    st.text(max_size=300),
    st.sampled_from(["usd", "eur", "web", "phone", TOKEN, "A-1", VISA, f"x {VISA} y"]),
)


@settings(max_examples=400, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["token", "amount", "currency", "capture", "description", "order_reference", "channel", "x"]),
        scalars,
    )
)
def test_any_body_the_fast_path_accepts_is_loaded_as_the_schema_loads_it(body: dict[str, Any]) -> None:
    fast = fast_charge_create(body)
    assert fast is None or fast == schema_load(SCHEMA, body)
