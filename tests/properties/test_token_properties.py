"""Properties of token ids and the stored token record (``service.domain.tokens``)."""

from __future__ import annotations

import random
import string

from hypothesis import given
from hypothesis import strategies as st

from service.domain.cards import luhn_valid, make_pan_shaped, parse_card_number
from service.domain.tokens import (
    OPAQUE_PREFIX,
    TOKEN_ID_PATTERN,
    StoredCard,
    TokenFormat,
    TokenView,
    format_of,
    is_token_id,
    new_opaque_token_id,
)
from tests.unit.domain import card_numbers

from . import PROPERTIES

URL_SAFE = string.ascii_letters + string.digits + "_-"
# Valid Unicode text (no lone surrogates: those cannot be UTF-8, see the report on POST /v1/tokens).
plain_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)


class TestOpaqueIds:
    @PROPERTIES
    @given(st.integers(0, 10))
    def test_new_ids_are_well_formed_opaque_ids(self, attempt: int) -> None:
        """Every fresh id is tok_ plus 24 URL-safe characters, recognised as an opaque token id."""
        token_id = [new_opaque_token_id() for _ in range(attempt + 1)][-1]
        assert token_id.startswith(OPAQUE_PREFIX)
        assert len(token_id) == 28
        assert set(token_id[4:]) <= set(URL_SAFE)
        assert is_token_id(token_id)
        assert format_of(token_id) is TokenFormat.OPAQUE

    @PROPERTIES
    @given(st.text(alphabet=URL_SAFE, min_size=24, max_size=24))
    def test_any_24_url_safe_characters_after_the_prefix_are_an_id(self, body: str) -> None:
        """The pattern accepts the whole alphabet, in any order."""
        assert is_token_id(OPAQUE_PREFIX + body)


class TestPanShapedIds:
    @PROPERTIES
    @given(card_numbers(), st.integers(0, 2**32))
    def test_pan_shaped_ids_look_like_the_card_but_never_are_one(self, number: str, seed: int) -> None:
        """Same length and last four, a non-zero first digit, never Luhn-valid, and read back as pan_shaped."""
        card = parse_card_number(number)
        token_id = make_pan_shaped(card, random.Random(seed).randrange)
        assert (len(token_id), token_id[-4:]) == (len(number), number[-4:])
        assert token_id[0] != "0"
        assert not luhn_valid(token_id)
        assert is_token_id(token_id)
        assert format_of(token_id) is TokenFormat.PAN_SHAPED


class TestRejects:
    @PROPERTIES
    @given(
        st.one_of(
            st.text(alphabet=URL_SAFE, min_size=0, max_size=40)
            .filter(lambda s: len(s) != 24)
            .map(lambda s: "tok_" + s),
            st.text(alphabet=string.digits, max_size=30).filter(lambda s: not 12 <= len(s) <= 19),
            st.text(alphabet=URL_SAFE, min_size=24, max_size=24).map(lambda s: "TOK_" + s),
            st.text(alphabet=URL_SAFE, min_size=24, max_size=24).map(lambda s: "tok-" + s),
        )
    )
    def test_wrong_lengths_and_prefixes_are_not_ids(self, candidate: str) -> None:
        """A wrong length, a wrong prefix, or digits outside 12-19 are refused before any lookup."""
        assert not is_token_id(candidate)

    @PROPERTIES
    @given(
        st.one_of(st.just(new_opaque_token_id()), st.text(alphabet=string.digits, min_size=12, max_size=19)),
        st.sampled_from(["\n", " ", "\t", "\x00", "é", "/", "."]),
        st.booleans(),
    )
    def test_a_stray_character_before_or_after_is_not_an_id(self, token_id: str, stray: str, before: bool) -> None:
        """Even a trailing newline (what ``$`` would let through) makes it no id."""
        assert not is_token_id(stray + token_id if before else token_id + stray)
        assert TOKEN_ID_PATTERN.match(token_id + "\n") is None


class TestStoredRecord:
    @PROPERTIES
    @given(
        card_numbers(),
        st.integers(1, 12),
        st.integers(2000, 2099),
        st.none() | plain_text,
        st.none() | plain_text,
        st.dictionaries(plain_text, plain_text, max_size=4),
    )
    def test_to_bytes_and_back_gives_the_same_record(
        self,
        number: str,
        month: int,
        year: int,
        name: str | None,
        postal_code: str | None,
        metadata: dict[str, str],
    ) -> None:
        """Whatever the optional fields hold, the record decrypted later is the record sealed."""
        stored = StoredCard(
            number=parse_card_number(number),
            exp_month=month,
            exp_year=year,
            fingerprint="f" * 32,
            created=1_795_238_035,
            expires_at=1_956_527_999,
            name=name,
            postal_code=postal_code,
            metadata=metadata,
        )
        packed = stored.to_bytes()
        assert b"f" * 16 not in packed  # the fingerprint is recomputed on reading, not stored
        again = StoredCard.from_bytes(packed, lambda digits: "f" * 32 if digits == number else "wrong")
        assert again == stored
        assert number not in repr(again)
        view = TokenView.of(new_opaque_token_id(), again, cvc_retained=False)
        assert (view.card.last4, view.card.bin) == (number[-4:], number[:6])
        assert number not in repr(view)
