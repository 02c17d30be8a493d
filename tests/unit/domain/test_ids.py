"""Ids never hold a card-length run of digits (a CI run once made a charge id with a Luhn-valid 16-digit run)."""

from __future__ import annotations

import re
import secrets

from hypothesis import given
from hypothesis import strategies as st

from service.adapters.processors.sandbox import _transaction_id as new_transaction_id
from service.charges import charge_id_for, refund_id_for
from service.domain.agencies import new_agency_id
from service.domain.charges import new_charge_id, new_refund_id
from service.domain.checkout import new_session_id
from service.domain.ids import derived_card_free, looks_card_free
from service.domain.redaction import contains_card_number
from service.domain.staff import new_staff_id
from service.domain.tokens import new_opaque_token_id
from service.http.middlewares import mint_request_id

TWELVE_DIGITS = re.compile(r"[0-9]{12}")


def test_random_ids_never_hold_twelve_digits_in_a_row() -> None:
    makers = [new_agency_id, new_charge_id, new_refund_id, new_session_id, new_staff_id, new_opaque_token_id]
    makers.append(new_transaction_id)
    for make in makers:
        for _ in range(3000):  # a hex id of 32 digits would fail about once in 15 without the redraw
            identifier = make()
            assert not TWELVE_DIGITS.search(identifier), identifier


def test_request_ids_hold_no_card_number_by_the_card_finder_either() -> None:
    """``mint_request_id`` relies on the twelve-digit rule alone: the card finder, the redactor's own test,
    agrees on every id it makes (and on the hex ids the rule refuses, it would have found cards)."""
    refused = 0
    for _ in range(20_000):
        rid = mint_request_id()
        assert re.fullmatch(r"req_[0-9a-f]{24}", rid)
        assert not contains_card_number(rid), rid
        raw = "req_" + secrets.token_hex(12)
        if not looks_card_free(raw):
            refused += 1
    assert refused > 0  # hex ids do hold card-length runs now and then: the rule is doing work


def test_a_derived_id_skips_a_card_like_candidate_and_stays_deterministic() -> None:
    candidates = {0: "ch_000000000000000000000000", 1: "ch_0000000000000000000000ab", 2: "ch_ab12"}
    derived = derived_card_free(lambda attempt: candidates[attempt])
    assert derived == "ch_ab12"
    assert derived_card_free(lambda attempt: candidates[attempt]) == derived
    assert looks_card_free("ch_12345678901x")
    assert not looks_card_free("x123456789012")


@given(key=st.text(min_size=1, max_size=40))
def test_charge_and_refund_ids_from_a_key_are_stable_url_safe_and_card_free(key: str) -> None:
    charge = charge_id_for("agy_0123abcd", key)
    assert charge == charge_id_for("agy_0123abcd", key)
    assert re.fullmatch(r"ch_[A-Za-z0-9_-]{24}", charge)
    assert looks_card_free(charge)
    refund = refund_id_for("agy_0123abcd", charge, key)
    assert re.fullmatch(r"re_[A-Za-z0-9_-]{24}", refund)
    assert looks_card_free(refund)
