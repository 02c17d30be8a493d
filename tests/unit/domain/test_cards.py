"""Tests for ``service.domain.cards``: brands, Luhn, parsing, secrecy of card data, expiry, pan-shaped ids."""

from __future__ import annotations

import copy
import datetime
import hmac
import logging
import pickle
import random
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.domain.cards import (
    BRAND_PREFIXES,
    BRAND_RULES,
    Brand,
    CardError,
    CardExpired,
    CardNumber,
    CardNumberInvalid,
    Cvc,
    CvcInvalid,
    ExpiryInvalid,
    detect_brand,
    expiry_end,
    luhn_check_digit,
    luhn_valid,
    make_pan_shaped,
    parse_card_number,
    parse_cvc,
    validate_expiry,
)

from . import (
    DIGITS,
    TEST_CARDS,
    branded_card_numbers,
    card_numbers,
    digit_strings,
    reference_luhn_valid,
    with_check_digit,
)

VISA = "4242424242424242"
AMEX = "378282246310005"
TODAY = datetime.date(2025, 6, 15)


def error_from(action: Callable[[], object]) -> CardError:
    with pytest.raises(CardError) as caught:
        action()
    return caught.value


def assert_does_not_echo(error: BaseException, secret: str) -> None:
    assert secret not in str(error)
    assert secret not in repr(error)
    assert all(secret not in str(arg) for arg in error.args)
    assert error.__cause__ is None
    assert error.__context__ is None


def scripted_rand(draws: list[int]) -> Callable[[int], int]:
    """A ``rand`` that returns ``draws`` in order and checks each is within the requested bound."""
    remaining = list(draws)

    def rand(bound: int) -> int:
        value = remaining.pop(0)
        assert 0 <= value < bound
        return value

    return rand


class TestCardErrors:
    @pytest.mark.parametrize(
        ("error", "code", "field"),
        [
            (CardNumberInvalid(CardNumberInvalid.LUHN, "m"), "card_number_luhn", "card.number"),
            (CardExpired(), "card_expired", "card.exp_year"),
            (ExpiryInvalid(ExpiryInvalid.MONTH_FIELD, "m"), "card_expiry_invalid", "card.exp_month"),
            (CvcInvalid("m"), "card_cvc_invalid", "card.cvc"),
        ],
    )
    def test_codes_and_fields_are_stable(self, error: CardError, code: str, field: str) -> None:
        """Every error is a CardError and ValueError carrying the documented code and field."""
        assert isinstance(error, ValueError)
        assert (error.code, error.field) == (code, field)

    def test_survive_pickle_and_copy(self) -> None:
        """Errors keep class, code, field and message through pickle and copy (they hold no card data)."""
        error = CardNumberInvalid(CardNumberInvalid.LENGTH, "The card number must have 12 to 19 digits.")
        for clone in (pickle.loads(pickle.dumps(error)), copy.copy(error)):
            assert type(clone) is CardNumberInvalid
            assert (clone.code, clone.field, str(clone)) == (error.code, error.field, str(error))


class TestBrandRules:
    def test_every_brand_has_a_rule(self) -> None:
        """Each Brand member has an entry in BRAND_RULES, and nothing else does."""
        assert set(BRAND_RULES) == set(Brand)

    def test_only_amex_has_a_four_digit_cvc(self) -> None:
        """American Express is the one brand with a four-digit security code."""
        assert {brand: rule.cvc_length for brand, rule in BRAND_RULES.items()} == {
            brand: 4 if brand is Brand.AMEX else 3 for brand in Brand
        }

    def test_lengths_stay_within_twelve_to_nineteen(self) -> None:
        """No brand allows a length outside 12-19 digits."""
        assert all(rule.lengths <= set(range(12, 20)) for rule in BRAND_RULES.values())

    def test_rules_cannot_be_changed_at_run_time(self) -> None:
        """BRAND_RULES is a read-only mapping of frozen rules."""
        with pytest.raises(TypeError):
            BRAND_RULES[Brand.VISA] = BRAND_RULES[Brand.AMEX]  # type: ignore[index]

    def test_equal_width_prefix_ranges_never_overlap(self) -> None:
        """Two ranges of the same width never share a prefix, so "longest match wins" is unambiguous."""
        for index, one in enumerate(BRAND_PREFIXES):
            assert one.first <= one.last
            assert len(one.first) == len(one.last)
            for other in BRAND_PREFIXES[index + 1 :]:
                if one.width == other.width:
                    assert one.last < other.first or other.last < one.first


class TestDetectBrand:
    @pytest.mark.parametrize(("number", "brand"), list(TEST_CARDS.items()))
    def test_detects_every_public_test_card(self, number: str, brand: Brand) -> None:
        """Each published test card number is detected as its brand."""
        assert detect_brand(number) is brand

    @pytest.mark.parametrize(
        ("prefix", "brand"),
        [
            ("4", Brand.VISA),
            ("51", Brand.MASTERCARD),
            ("55", Brand.MASTERCARD),
            ("2221", Brand.MASTERCARD),
            ("2720", Brand.MASTERCARD),
            ("34", Brand.AMEX),
            ("37", Brand.AMEX),
            ("6011", Brand.DISCOVER),
            ("644", Brand.DISCOVER),
            ("649", Brand.DISCOVER),
            ("65", Brand.DISCOVER),
            ("622126", Brand.DISCOVER),
            ("622925", Brand.DISCOVER),
            ("300", Brand.DINERS),
            ("305", Brand.DINERS),
            ("3095", Brand.DINERS),
            ("36", Brand.DINERS),
            ("38", Brand.DINERS),
            ("39", Brand.DINERS),
            ("3528", Brand.JCB),
            ("3589", Brand.JCB),
            ("62", Brand.UNIONPAY),
            ("6221", Brand.UNIONPAY),
            ("622125", Brand.UNIONPAY),
            ("622926", Brand.UNIONPAY),
            ("81", Brand.UNIONPAY),
            ("5018", Brand.MAESTRO),
            ("5020", Brand.MAESTRO),
            ("5038", Brand.MAESTRO),
            ("5893", Brand.MAESTRO),
            ("6304", Brand.MAESTRO),
            ("6759", Brand.MAESTRO),
            ("6761", Brand.MAESTRO),
            ("6762", Brand.MAESTRO),
            ("6763", Brand.MAESTRO),
        ],
    )
    def test_detects_brand_from_partial_prefix(self, prefix: str, brand: Brand) -> None:
        """A prefix typed so far is enough once it falls in one of the brand's ranges."""
        assert detect_brand(prefix) is brand

    @pytest.mark.parametrize(
        "prefix",
        ["", "1", "2", "3", "5", "6", "22", "2220", "2721", "306", "35", "3527", "3590", "6760", "50"],
    )
    def test_returns_none_while_nothing_matches(self, prefix: str) -> None:
        """Prefixes that match no range yet (or ever) give None."""
        assert detect_brand(prefix) is None

    @pytest.mark.parametrize("prefix", ["4a", "４２", "abc", "42.42"])
    def test_returns_none_for_other_characters(self, prefix: str) -> None:
        """Anything but ASCII digits, spaces and dashes gives None rather than an error."""
        assert detect_brand(prefix) is None

    def test_ignores_spaces_and_dashes(self) -> None:
        """Input formatted as the user types it is detected like the bare digits."""
        assert detect_brand("4242 42") is Brand.VISA
        assert detect_brand("3782-822") is Brand.AMEX

    @given(branded_card_numbers(), st.integers(6, 19))
    def test_brand_is_settled_after_six_digits(self, card: tuple[str, Brand], typed: int) -> None:
        """Once six digits are typed, the detected brand is the brand of the whole number."""
        number, brand = card
        assert detect_brand(number[:typed]) is brand


class TestLuhn:
    @pytest.mark.parametrize("number", list(TEST_CARDS))
    def test_public_test_cards_pass(self, number: str) -> None:
        """Every published test card number passes the Luhn check."""
        assert luhn_valid(number)

    @given(digit_strings(1, 40))
    def test_agrees_with_the_textbook_algorithm(self, digits: str) -> None:
        """luhn_valid gives the same answer as a naive reference implementation."""
        assert luhn_valid(digits) is reference_luhn_valid(digits)

    @given(digit_strings(0, 30))
    def test_check_digit_completes_a_valid_number(self, partial: str) -> None:
        """Appending luhn_check_digit(partial) yields the same number as the reference helper."""
        assert partial + luhn_check_digit(partial) == with_check_digit(partial)

    @given(card_numbers(), st.data())
    def test_any_single_digit_change_breaks_the_check(self, number: str, data: st.DataObject) -> None:
        """Changing one digit of a valid number always makes it fail, the typo Luhn exists to catch."""
        position = data.draw(st.integers(0, len(number) - 1))
        digit = data.draw(st.sampled_from([d for d in DIGITS if d != number[position]]))
        assert not luhn_valid(number[:position] + digit + number[position + 1 :])

    @pytest.mark.parametrize("text", ["", "4242 4242 4242 4242", "4242-4242", "٤٢٤٢", "４２４２", "42a2"])
    def test_rejects_anything_but_ascii_digits(self, text: str) -> None:
        """Empty strings, separators and non-ASCII digits are simply not valid."""
        assert not luhn_valid(text)

    def test_check_digit_refuses_non_digits_without_echoing_them(self) -> None:
        """luhn_check_digit raises ValueError for non-digits, with a message that omits the input."""
        with pytest.raises(ValueError) as caught:
            luhn_check_digit("4242x4242")
        assert_does_not_echo(caught.value, "4242x4242")


class TestParseCardNumber:
    @pytest.mark.parametrize(("number", "brand"), list(TEST_CARDS.items()))
    def test_accepts_every_public_test_card(self, number: str, brand: Brand) -> None:
        """Each published test card parses with the right brand, bin, last four and length."""
        card = parse_card_number(number)
        assert card.brand is brand
        assert card.bin == number[:6]
        assert card.last4 == number[-4:]
        assert card.length == len(number)
        assert card.reveal() == number

    @pytest.mark.parametrize(
        "raw",
        ["4242 4242 4242 4242", "4242-4242-4242-4242", " 4242424242424242 ", "4242 - 4242 -- 4242  4242"],
    )
    def test_strips_spaces_and_dashes(self, raw: str) -> None:
        """Spaces and dashes anywhere are ignored."""
        assert parse_card_number(raw).reveal() == VISA

    @given(branded_card_numbers(), st.lists(st.sampled_from([" ", "-"]), min_size=19, max_size=19))
    def test_accepts_generated_numbers_with_separators(self, card: tuple[str, Brand], seps: list[str]) -> None:
        """Any Luhn-valid number of an allowed length parses as its brand, however it is spaced."""
        number, brand = card
        raw = "".join(digit + separator for digit, separator in zip(number, seps, strict=False))
        parsed = parse_card_number(raw)
        assert parsed.brand is brand
        assert parsed.reveal() == number

    @pytest.mark.parametrize(
        ("raw", "code"),
        [
            ("", CardNumberInvalid.FORMAT),
            (" - ", CardNumberInvalid.FORMAT),
            ("4242 4242 4242 424x", CardNumberInvalid.FORMAT),
            ("4242.4242.4242.4242", CardNumberInvalid.FORMAT),
            ("4242_4242_4242_4242", CardNumberInvalid.FORMAT),
            ("٤٢٤٢٤٢٤٢٤٢٤٢٤٢٤٢", CardNumberInvalid.FORMAT),
            ("４２４２４２４２４２４２４２４２", CardNumberInvalid.FORMAT),
            ("42424242424", CardNumberInvalid.LENGTH),
            ("42424242424242424242", CardNumberInvalid.LENGTH),
            ("4242424242424241", CardNumberInvalid.LUHN),
            ("4242 4242 4242 4243", CardNumberInvalid.LUHN),
        ],
    )
    def test_rejects_with_a_stable_code(self, raw: str, code: str) -> None:
        """Each kind of bad input has its own machine-readable code on field card.number."""
        error = error_from(lambda: parse_card_number(raw))
        assert isinstance(error, CardNumberInvalid)
        assert (error.code, error.field) == (code, "card.number")

    def test_rejects_unknown_brands(self) -> None:
        """A Luhn-valid number that matches no brand is card_brand_unsupported."""
        error = error_from(lambda: parse_card_number(with_check_digit("1" + "0" * 14)))
        assert error.code == CardNumberInvalid.BRAND_UNSUPPORTED

    @pytest.mark.parametrize(("prefix", "length"), [("4", 14), ("4", 15), ("34", 16), ("51", 19), ("36", 13)])
    def test_rejects_lengths_the_brand_does_not_allow(self, prefix: str, length: int) -> None:
        """A valid 12-19 digit number of the wrong length for its brand is card_number_length."""
        number = with_check_digit(prefix + "0" * (length - len(prefix) - 1))
        assert error_from(lambda: parse_card_number(number)).code == CardNumberInvalid.LENGTH

    @pytest.mark.parametrize(
        ("raw", "code"),
        [
            ("42x", CardNumberInvalid.FORMAT),  # short and not digits: format first
            ("42424242420", CardNumberInvalid.LENGTH),  # short and Luhn-invalid: length first
            ("1000000000000001", CardNumberInvalid.LUHN),  # no brand and Luhn-invalid: Luhn first
        ],
    )
    def test_checks_in_order_format_length_luhn_brand(self, raw: str, code: str) -> None:
        """When several checks fail, the first in the order format, length, Luhn, brand is reported."""
        assert error_from(lambda: parse_card_number(raw)).code == code

    @pytest.mark.parametrize(
        "raw",
        [
            "4242 4242 4242 424x",
            "42424242424",
            "42424242424242424242",
            "4242424242424241",
            "4242-4242-4242-4243",
        ],
    )
    def test_errors_never_contain_the_input(self, raw: str) -> None:
        """Neither the raw input nor its digits appear in the message, args or chained exceptions."""
        error = error_from(lambda: parse_card_number(raw))
        assert_does_not_echo(error, raw)
        assert_does_not_echo(error, raw.replace(" ", "").replace("-", ""))

    @given(st.text(alphabet=DIGITS + " -x.٣", min_size=4, max_size=25))
    def test_any_text_parses_or_raises_card_number_invalid(self, raw: str) -> None:
        """Arbitrary input either parses or raises CardNumberInvalid whose message omits the digits."""
        try:
            parse_card_number(raw)
        except CardNumberInvalid as error:
            stripped = raw.replace(" ", "").replace("-", "")
            if len(stripped) >= 4:
                assert_does_not_echo(error, stripped)

    def test_cannot_be_built_directly(self) -> None:
        """CardNumber(...) without parse_card_number is refused, so every instance is validated."""
        with pytest.raises(TypeError):
            CardNumber(object(), VISA, Brand.VISA)


class TestCardNumberSecrecy:
    @pytest.fixture
    def card(self) -> CardNumber:
        return parse_card_number(VISA)

    def test_masked_shows_only_the_last_four(self, card: CardNumber) -> None:
        """masked() stars every digit but the last four, the bin included."""
        assert card.masked() == "************4242"
        assert parse_card_number(AMEX).masked() == "***********0005"

    def test_repr_str_and_format_are_masked(self, card: CardNumber) -> None:
        """Every ordinary way of turning the card into text shows brand and last four only."""
        masked = "CardNumber(visa ****4242)"
        assert repr(card) == masked
        assert str(card) == masked
        assert format(card) == masked
        assert f"{card}" == masked
        assert f"{card!r}" == masked
        assert f"{card!s}" == masked
        assert "{}".format(card) == masked  # noqa: UP032 - str.format is what is tested
        assert "%s %r" % (card, card) == f"{masked} {masked}"  # noqa: UP031 - %-formatting is what is tested
        assert f"{card:>30}" == masked.rjust(30)

    @pytest.mark.parametrize("number", list(TEST_CARDS))
    def test_no_text_form_contains_the_number(self, number: str) -> None:
        """The digits appear in no repr/str/format, not even inside containers or exception messages."""
        card = parse_card_number(number)
        renderings = [
            repr(card),
            str(card),
            f"{card}",
            f"{card:^40}",
            card.masked(),
            repr([card]),
            repr({"card": card}),
            repr((card,)),
            str(ValueError(card)),
        ]
        assert all(number not in text and number[:-4] not in text for text in renderings)

    def test_logging_shows_the_masked_form(self, card: CardNumber, caplog: pytest.LogCaptureFixture) -> None:
        """Passing the card to a logger as an argument logs the masked form."""
        with caplog.at_level(logging.INFO):
            logging.getLogger("cardvault.test").info("charging %s", card)
        assert caplog.messages == ["charging CardNumber(visa ****4242)"]

    @pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
    def test_cannot_be_pickled(self, card: CardNumber, protocol: int) -> None:
        """Pickling raises TypeError under every protocol, so the digits cannot be serialised by accident."""
        with pytest.raises(TypeError):
            pickle.dumps(card, protocol=protocol)

    def test_has_no_instance_dict(self, card: CardNumber) -> None:
        """vars() fails and there is no __dict__ to dump, because state lives in slots."""
        with pytest.raises(TypeError):
            vars(card)
        assert not hasattr(card, "__dict__")

    def test_is_immutable(self, card: CardNumber) -> None:
        """Attributes can be neither set nor deleted."""
        with pytest.raises(AttributeError):
            card.extra = 1
        with pytest.raises(AttributeError):
            del card._brand

    def test_copies_are_the_same_object(self, card: CardNumber) -> None:
        """copy and deepcopy work (immutable value) and return the card itself."""
        assert copy.copy(card) is card
        assert copy.deepcopy({"card": card})["card"] is card

    def test_is_unhashable(self, card: CardNumber) -> None:
        """hash() raises TypeError so card numbers cannot become dict keys or set members."""
        with pytest.raises(TypeError):
            hash(card)
        with pytest.raises(TypeError):
            _ = {card: "value"}

    def test_equal_when_digits_are_equal(self, card: CardNumber) -> None:
        """Two cards with the same digits are equal whatever their formatting; others are not."""
        assert card == parse_card_number("4242 4242 4242 4242")
        assert card != parse_card_number("4000056655665556")
        assert card != VISA
        assert card != parse_cvc("424", Brand.VISA)

    def test_equality_is_constant_time(self, card: CardNumber, monkeypatch: pytest.MonkeyPatch) -> None:
        """Comparing two cards goes through hmac.compare_digest."""
        calls: list[tuple[str, str]] = []
        real = hmac.compare_digest

        def spy(a: str, b: str) -> bool:
            calls.append((a, b))
            return real(a, b)

        monkeypatch.setattr(hmac, "compare_digest", spy)
        assert card == parse_card_number(VISA)
        assert calls == [(VISA, VISA)]

    def test_reveal_returns_the_digits(self, card: CardNumber) -> None:
        """reveal() is the way to the plaintext digits."""
        assert card.reveal() == VISA


class TestParseCvc:
    @pytest.mark.parametrize("brand", list(Brand))
    def test_accepts_the_brand_length(self, brand: Brand) -> None:
        """A code of exactly the brand's CVC length is accepted."""
        digits = "7" * BRAND_RULES[brand].cvc_length
        assert parse_cvc(digits, brand).reveal() == digits

    @pytest.mark.parametrize("brand", list(Brand))
    def test_rejects_other_lengths(self, brand: Brand) -> None:
        """Codes one digit shorter or longer than the brand's CVC length are card_cvc_invalid."""
        length = BRAND_RULES[brand].cvc_length
        for wrong in ("7" * (length - 1), "7" * (length + 1)):
            with pytest.raises(CvcInvalid) as caught:
                parse_cvc(wrong, brand)
            assert (caught.value.code, caught.value.field) == ("card_cvc_invalid", "card.cvc")

    def test_amex_takes_four_digits_and_others_three(self) -> None:
        """1234 is an Amex code but not a Visa one; 123 is the reverse."""
        assert parse_cvc("1234", Brand.AMEX).reveal() == "1234"
        assert parse_cvc("123", Brand.VISA).reveal() == "123"
        with pytest.raises(CvcInvalid):
            parse_cvc("123", Brand.AMEX)
        with pytest.raises(CvcInvalid):
            parse_cvc("1234", Brand.VISA)

    @pytest.mark.parametrize("raw", ["", "   ", "12a", "1 3", "１２３", "٣٣٣", "-12"])
    def test_rejects_non_digits_without_echoing(self, raw: str) -> None:
        """Anything but ASCII digits is card_cvc_invalid and the message omits the input."""
        error = error_from(lambda: parse_cvc(raw, Brand.VISA))
        assert isinstance(error, CvcInvalid)
        assert error.code == "card_cvc_invalid"
        if raw.strip():
            assert_does_not_echo(error, raw)

    def test_ignores_surrounding_whitespace(self) -> None:
        """A code pasted with spaces or a newline around it is accepted."""
        assert parse_cvc(" 123\n", Brand.VISA).reveal() == "123"

    def test_is_masked_unpicklable_and_unhashable(self) -> None:
        """A Cvc prints as Cvc(***) whatever its length, and cannot be pickled, hashed or vars()-ed."""
        cvc = parse_cvc("1234", Brand.AMEX)
        assert repr(cvc) == str(cvc) == f"{cvc}" == repr(parse_cvc("123", Brand.VISA)) == "Cvc(***)"
        with pytest.raises(TypeError):
            pickle.dumps(cvc)
        with pytest.raises(TypeError):
            hash(cvc)
        with pytest.raises(TypeError):
            vars(cvc)

    def test_equal_when_digits_are_equal(self) -> None:
        """Two codes with the same digits are equal, others are not, and a code never equals a str."""
        assert parse_cvc("123", Brand.VISA) == parse_cvc(" 123", Brand.JCB)
        assert parse_cvc("123", Brand.VISA) != parse_cvc("124", Brand.VISA)
        assert parse_cvc("123", Brand.VISA) != "123"

    def test_cannot_be_built_directly(self) -> None:
        """Cvc(...) without parse_cvc is refused."""
        with pytest.raises(TypeError):
            Cvc(object(), "123")


class TestValidateExpiry:
    def test_this_month_is_valid(self) -> None:
        """A card expiring this month is valid through the month's last day."""
        assert validate_expiry(6, 2025, today=TODAY) == (6, 2025)
        assert validate_expiry(6, 2025, today=datetime.date(2025, 6, 30)) == (6, 2025)

    def test_last_month_is_expired(self) -> None:
        """A card whose expiry month is before today's is card_expired on card.exp_year."""
        error = error_from(lambda: validate_expiry(5, 2025, today=TODAY))
        assert isinstance(error, CardExpired)
        assert (error.code, error.field) == ("card_expired", "card.exp_year")

    def test_december_expires_at_new_year(self) -> None:
        """12/2025 is valid on 31 December 2025 and expired on 1 January 2026."""
        assert validate_expiry(12, 2025, today=datetime.date(2025, 12, 31)) == (12, 2025)
        with pytest.raises(CardExpired):
            validate_expiry(12, 2025, today=datetime.date(2026, 1, 1))

    def test_earlier_years_are_expired(self) -> None:
        """Any month of a past year (2000 or later) is card_expired, not card_expiry_invalid."""
        with pytest.raises(CardExpired):
            validate_expiry(12, 2024, today=TODAY)
        with pytest.raises(CardExpired):
            validate_expiry(1, 2000, today=TODAY)

    @pytest.mark.parametrize(("year", "full_year"), [(25, 2025), (26, 2026), (50, 2050), (2030, 2030)])
    def test_two_digit_years_mean_this_century(self, year: int, full_year: int) -> None:
        """A year 0-99 is read as 2000 + year; four-digit years pass through."""
        assert validate_expiry(12, year, today=TODAY) == (12, full_year)

    def test_two_digit_past_years_are_expired(self) -> None:
        """05/25 on 15 June 2025 and 12/00 are expired."""
        with pytest.raises(CardExpired):
            validate_expiry(5, 25, today=TODAY)
        with pytest.raises(CardExpired):
            validate_expiry(12, 0, today=TODAY)

    @pytest.mark.parametrize("month", [0, 13, -1, 99])
    def test_rejects_months_outside_one_to_twelve(self, month: int) -> None:
        """Months outside 1..12 are card_expiry_invalid on card.exp_month."""
        error = error_from(lambda: validate_expiry(month, 2026, today=TODAY))
        assert isinstance(error, ExpiryInvalid)
        assert (error.code, error.field) == ("card_expiry_invalid", "card.exp_month")

    @pytest.mark.parametrize("year", [2051, 51, 9999, 100, 999, 1999, -1])
    def test_rejects_years_outside_the_window(self, year: int) -> None:
        """Years more than 25 ahead, before 2000 or neither two- nor four-digit are card_expiry_invalid."""
        error = error_from(lambda: validate_expiry(1, year, today=TODAY))
        assert isinstance(error, ExpiryInvalid)
        assert (error.code, error.field) == ("card_expiry_invalid", "card.exp_year")

    def test_accepts_exactly_twenty_five_years_ahead(self) -> None:
        """December of today's year + 25 is still inside the window."""
        assert validate_expiry(12, 2050, today=TODAY) == (12, 2050)

    def test_month_is_checked_before_year(self) -> None:
        """With both month and year wrong, the month is reported."""
        assert error_from(lambda: validate_expiry(13, 1999, today=TODAY)).field == "card.exp_month"

    def test_today_is_keyword_only(self) -> None:
        """today must be named, so call sites cannot swap it with year."""
        with pytest.raises(TypeError):
            validate_expiry(6, 2025, TODAY)  # type: ignore[call-arg]

    @given(st.integers(1, 12), st.integers(2000, 2050), st.dates(datetime.date(2000, 1, 1), TODAY))
    def test_valid_exactly_until_the_month_has_passed(self, month: int, year: int, today: datetime.date) -> None:
        """Inside the year window, a card is valid if and only if its month is not before today's."""
        if year > today.year + 25:
            return
        if (year, month) >= (today.year, today.month):
            assert validate_expiry(month, year, today=today) == (month, year)
        else:
            with pytest.raises(CardExpired):
                validate_expiry(month, year, today=today)


class TestExpiryEnd:
    @pytest.mark.parametrize(
        ("month", "year", "last_day"),
        [(2, 2024, datetime.date(2024, 2, 29)), (2, 2025, datetime.date(2025, 2, 28)), (12, 2025, None)],
    )
    def test_is_the_last_second_of_the_month_in_utc(
        self, month: int, year: int, last_day: datetime.date | None
    ) -> None:
        """expiry_end is 23:59:59 UTC on the month's last day, leap years included."""
        day = last_day or datetime.date(2025, 12, 31)
        end = expiry_end(month, year)
        assert end == datetime.datetime(day.year, day.month, day.day, 23, 59, 59, tzinfo=datetime.UTC)
        assert end.utcoffset() == datetime.timedelta(0)

    def test_next_second_is_the_next_month(self) -> None:
        """One second after expiry_end is midnight UTC on the first of the following month."""
        assert expiry_end(12, 2025) + datetime.timedelta(seconds=1) == datetime.datetime(
            2026, 1, 1, tzinfo=datetime.UTC
        )

    def test_reads_two_digit_years_like_validate_expiry(self) -> None:
        """expiry_end(4, 30) is the end of April 2030."""
        assert expiry_end(4, 30) == expiry_end(4, 2030)

    @pytest.mark.parametrize(("month", "year", "field"), [(0, 2025, "card.exp_month"), (1, 10000, "card.exp_year")])
    def test_rejects_impossible_dates(self, month: int, year: int, field: str) -> None:
        """Month 0 or a year beyond datetime's range is ExpiryInvalid, not a bare ValueError."""
        error = error_from(lambda: expiry_end(month, year))
        assert isinstance(error, ExpiryInvalid)
        assert error.field == field


class TestMakePanShaped:
    @given(card_numbers(), st.randoms(use_true_random=False))
    def test_has_the_shape_of_the_card_but_fails_luhn(self, number: str, rng: random.Random) -> None:
        """Digits only, same length, same last four, first digit not 0, and never Luhn-valid."""
        card = parse_card_number(number)
        shaped = make_pan_shaped(card, rng.randrange)
        assert shaped.isascii()
        assert shaped.isdigit()
        assert len(shaped) == len(number)
        assert shaped[-4:] == number[-4:]
        assert shaped[0] != "0"
        assert not luhn_valid(shaped)
        assert not reference_luhn_valid(shaped)

    @given(card_numbers(), st.integers(0, 2**32))
    def test_does_not_depend_on_the_hidden_digits(self, number: str, seed: int) -> None:
        """Two cards sharing only length and last four get the same id from the same random draws."""
        other = _maestro_with_shape(len(number), number[-4:])
        shaped = make_pan_shaped(parse_card_number(number), random.Random(seed).randrange)
        assert make_pan_shaped(other, random.Random(seed).randrange) == shaped

    def test_fixes_a_random_draw_that_passes_luhn(self) -> None:
        """When the random digits happen to pass Luhn, one random non-last-four digit is changed."""
        head = next(
            head for head in ("1" + "0" * 10 + digit for digit in DIGITS) if reference_luhn_valid(head + VISA[-4:])
        )
        draws = [0] + [int(digit) for digit in head[1:]] + [5, 3]  # then: change position 5, to choice 3
        shaped = make_pan_shaped(parse_card_number(VISA), scripted_rand(draws))
        assert not luhn_valid(shaped)
        changed = [index for index, (a, b) in enumerate(zip(shaped, head + VISA[-4:], strict=True)) if a != b]
        assert changed == [5]

    @pytest.mark.parametrize("choice", range(8))
    def test_fixing_the_first_digit_never_makes_it_zero(self, choice: int) -> None:
        """When the digit changed is the first one, its replacement is neither 0 nor the old digit."""
        head = next(
            head for head in ("1" + "0" * 10 + digit for digit in DIGITS) if reference_luhn_valid(head + VISA[-4:])
        )
        draws = [0] + [int(digit) for digit in head[1:]] + [0, choice]
        shaped = make_pan_shaped(parse_card_number(VISA), scripted_rand(draws))
        assert shaped[0] not in {"0", "1"}
        assert not luhn_valid(shaped)

    @pytest.mark.parametrize("extreme", ["lowest", "highest"])
    def test_degenerate_random_sources_still_fail_luhn(self, extreme: str) -> None:
        """A rand that always returns 0 or always the top of its range still yields a Luhn-invalid id."""

        def rand(bound: int) -> int:
            return 0 if extreme == "lowest" else bound - 1

        for number in TEST_CARDS:
            shaped = make_pan_shaped(parse_card_number(number), rand)
            assert not luhn_valid(shaped)
            assert shaped[0] != "0"

    def test_default_randomness_is_secrets(self) -> None:
        """Without a rand argument the id is still well-formed and not a card number."""
        shaped = make_pan_shaped(parse_card_number(AMEX))
        assert len(shaped) == 15
        assert shaped.endswith("0005")
        assert error_from(lambda: parse_card_number(shaped)).code == CardNumberInvalid.LUHN


def _maestro_with_shape(length: int, last4: str) -> CardNumber:
    """A Maestro card (any length 12-19 allowed) with the given length and last four digits."""
    filler = "0" * (length - 4 - 4 - 1)  # 6759 + filler + one digit chosen for Luhn + last4
    return parse_card_number(
        next(
            candidate
            for candidate in ("6759" + filler + digit + last4 for digit in DIGITS)
            if reference_luhn_valid(candidate)
        )
    )
