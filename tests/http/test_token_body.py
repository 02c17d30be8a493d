"""The token body's fast path and the direct token JSON agree with the marshmallow schemas they stand in for."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.domain.cards import parse_card_number
from service.domain.tokens import StoredCard, TokenView
from service.http.schemas import TokenCreateSchema, TokenSchema, token_json
from service.http.token_body import fast_token_create, load_token_create
from tests.support.cards import AMEX, VISA
from tests.support.schema_load import schema_load

SCHEMA = TokenCreateSchema()


CARD = {"number": VISA, "exp_month": 12, "exp_year": 2031}
BODIES: list[dict[str, Any]] = [
    {"card": CARD},
    {"card": {**CARD, "cvc": "737"}},
    {"card": {**CARD, "cvc": None}},
    {"card": {**CARD, "cvc": ""}},
    {"card": {**CARD, "cvc": "123456789"}},
    {"card": {**CARD, "number": ""}},
    {"card": {**CARD, "number": "1" * 41}},
    {"card": {**CARD, "number": 4242424242424242}},
    {"card": {**CARD, "exp_month": True}},
    {"card": {**CARD, "exp_month": "12"}},
    {"card": {**CARD, "exp_year": 2031.0}},
    {"card": {**CARD, "name": "Ada Lovelace"}},
    {"card": {**CARD, "postal_code": "SW1A 1AA"}},
    {"card": {**CARD, "extra": 1}},
    {"card": {"number": VISA, "exp_month": 12}},
    {"card": None},
    {"card": [CARD]},
    {},
    {"card": CARD, "unknown": True},
    {"card": CARD, "metadata": {"order": "1234", "customer": "c_9"}},
    {"card": CARD, "metadata": {}},
    {"card": CARD, "metadata": None},
    {"card": CARD, "metadata": {"": "x"}},
    {"card": CARD, "metadata": {"k" * 41: "x"}},
    {"card": CARD, "metadata": {"k": "x" * 501}},
    {"card": CARD, "metadata": {"k": 1}},
    {"card": CARD, "metadata": {"k": f"card {AMEX}"}},
    {"card": CARD, "metadata": {f"k{i}": "v" for i in range(20)}},
    {"card": CARD, "metadata": {f"k{i}": "v" for i in range(21)}},
    {"card": CARD, "format": "pan_shaped"},
    {"card": CARD, "format": "opaque"},
    {"card": CARD, "format": "PAN"},
    {"card": CARD, "format": None},
    {"card": CARD, "expires_at": 1_900_000_000},
    {"card": CARD, "expires_at": None},
    {"card": CARD, "expires_at": -1},
    {"card": CARD, "expires_at": False},
    {"card": CARD, "deduplicate": True},
    {"card": CARD, "deduplicate": 1},
    {"card": CARD, "deduplicate": None},
]


class TestFastPath:
    @pytest.mark.parametrize("body", BODIES)
    def test_agrees_with_the_schema_or_steps_aside(self, body: dict[str, Any]) -> None:
        """Whatever the fast path returns is exactly the schema's result; a body the schema refuses never passes."""
        fast = fast_token_create(body)
        if fast is not None:
            assert fast == schema_load(SCHEMA, body)

    def test_the_usual_bodies_take_the_fast_path(self) -> None:
        """A card with expiry and CVC, with metadata, format and deduplicate: no schema needed."""
        for body in (BODIES[0], BODIES[1], BODIES[19], BODIES[29], BODIES[33], BODIES[37]):
            assert fast_token_create(body) is not None

    @settings(max_examples=300, deadline=None)
    @given(
        st.dictionaries(
            st.sampled_from(["card", "metadata", "format", "expires_at", "deduplicate", "other"]),
            st.recursive(
                st.none() | st.booleans() | st.integers(-5, 2**40) | st.text(max_size=45),
                lambda inner: (
                    st.lists(inner, max_size=3)
                    | st.dictionaries(
                        st.sampled_from(["number", "exp_month", "exp_year", "cvc", "name", "k", "x" * 41]),
                        inner,
                        max_size=5,
                    )
                ),
                max_leaves=8,
            ),
        )
    )
    def test_random_bodies_agree_with_the_schema(self, body: dict[str, Any]) -> None:
        """Generated bodies: the fast path either steps aside or returns the schema's own result."""
        fast = fast_token_create(body)
        if fast is not None:
            assert fast == schema_load(SCHEMA, body)

    def test_refusals_come_from_the_schema(self) -> None:
        """A body the fast path does not take gets the schema's field errors."""
        from service.errors import ValidationFailed

        with pytest.raises(ValidationFailed) as caught:
            load_token_create({"card": {**CARD, "exp_month": "12"}})
        assert [e.field for e in caught.value.errors] == ["card.exp_month"]


class TestTokenJson:
    @pytest.mark.parametrize("metadata", [{}, {"order": "1234"}])
    @pytest.mark.parametrize("token_id", ["tok_" + "a" * 24, "4000000000000002"])
    def test_is_what_the_token_schema_dumps(self, token_id: str, metadata: dict[str, str]) -> None:
        """Same keys, same order, same values as TokenSchema().dump()."""
        stored = StoredCard(
            parse_card_number(VISA), 12, 2031, "f" * 32, 1_700_000_000, 1_900_000_000, None, None, metadata
        )
        view = TokenView.of(token_id, stored, cvc_retained=True)
        direct, dumped = token_json(view), TokenSchema().dump(view)
        assert direct == dumped
        assert list(direct) == list(dumped)
        assert list(direct["card"]) == list(dumped["card"])
