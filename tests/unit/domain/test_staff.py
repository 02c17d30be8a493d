"""Staff domain rules: roles, usernames, password rules, TOTP matching, CSV escaping, the order form, the JS brands."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyotp
import pytest

from service.domain.exports import csv_line, safe_cell
from service.domain.order_form import check_order_form, parse_amount
from service.domain.staff import (
    InvalidStaffInput,
    Permission,
    Role,
    allows,
    common_passwords,
    match_totp,
    password_problems,
    validate_username,
)
from service.domain.staff_sessions import StaffSession, parse_cookie, staff_cookie
from tests.support.cards import AMEX, CVC, VISA

REPO = Path(__file__).resolve().parents[3]
TODAY = dt.date(2026, 6, 15)


class TestRoles:
    def test_only_supervisors_void_and_refund(self) -> None:
        """VOID_REFUND belongs to supervisors alone."""
        assert [r for r in Role if allows(r, Permission.VOID_REFUND)] == [Role.SUPERVISOR]

    def test_auditors_read_and_change_nothing(self) -> None:
        """Auditors see team orders and the audit log but may not take orders or manage staff."""
        assert allows(Role.AUDITOR, Permission.VIEW_AUDIT)
        assert allows(Role.AUDITOR, Permission.VIEW_TEAM_ORDERS)
        assert not allows(Role.AUDITOR, Permission.TAKE_ORDERS)
        assert not allows(Role.AUDITOR, Permission.MANAGE_STAFF)

    def test_agents_see_only_their_own_orders(self) -> None:
        """Agents take orders and see their own, never the team's."""
        assert allows(Role.AGENT, Permission.TAKE_ORDERS)
        assert not allows(Role.AGENT, Permission.VIEW_TEAM_ORDERS)

    def test_usernames_are_normalized_and_checked(self) -> None:
        """Usernames are lower-cased; spaces and other symbols are refused."""
        assert validate_username(" Alice.B ") == "alice.b"
        with pytest.raises(InvalidStaffInput):
            validate_username("alice b")


class TestPasswords:
    def test_the_bundled_list_is_loaded_and_has_no_card_numbers(self) -> None:
        """The common-password list ships with the package and holds thousands of entries."""
        passwords = common_passwords()
        assert len(passwords) > 5000
        assert "password123" in passwords
        assert "qwerty" in passwords

    @pytest.mark.parametrize(
        ("password", "problem"),
        [
            ("Short1", "at least 12"),
            ("NoDigitsAtAllHere", "letters and digits"),
            ("123456789012345", "letters and digits"),
            ("Password2024!", "too common"),
            ("alice-is-great-1", "username"),
        ],
    )
    def test_weak_passwords_are_refused(self, password: str, problem: str) -> None:
        """Each rule refuses its kind of weak password."""
        assert any(problem in p for p in password_problems(password, "alice"))

    def test_a_good_password_passes(self) -> None:
        """A long password with letters and digits, not common, is accepted."""
        assert password_problems("Correct7Horse9Battery", "alice") == []


class TestTotp:
    def test_a_code_matches_its_step_and_its_neighbours_only(self) -> None:
        """A code is accepted one step early or late, and its counter is reported so it can be used once."""
        secret = pyotp.random_base32()
        now = 1_800_000_000.0
        totp = pyotp.TOTP(secret)
        assert match_totp(secret, totp.at(now), now) == int(now // 30)
        assert match_totp(secret, totp.at(now - 30), now) == int(now // 30) - 1
        assert match_totp(secret, totp.at(now - 90), now) is None
        assert match_totp(secret, "12345a", now) is None


class TestSessions:
    def test_cookie_round_trip_and_timeouts(self) -> None:
        """The cookie names the agency; a session ends when idle or past its absolute limit."""
        ref = parse_cookie(staff_cookie("agy_0123456789abcdef", "x" * 43))
        assert ref is not None
        assert ref.agency_id == "agy_0123456789abcdef"
        assert ref.kind == "staff"
        assert parse_cookie("s.agy_0123.short") is None
        session = StaffSession("agy_0123456789abcdef", "stf_1", "a", Role.AGENT, "c", created=0, last_seen=0)
        assert session.end_reason(899, idle_seconds=900, absolute_seconds=43200) is None
        assert session.end_reason(901, idle_seconds=900, absolute_seconds=43200) == "idle"
        assert session.seen(43000).end_reason(43201, idle_seconds=900, absolute_seconds=43200) == "absolute"


class TestCsv:
    @pytest.mark.parametrize("cell", ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx"])
    def test_formula_cells_become_text(self, cell: str) -> None:
        """Cells a spreadsheet would evaluate get a leading apostrophe."""
        assert safe_cell(cell) == "'" + cell

    def test_plain_cells_and_quoting(self) -> None:
        """Ordinary cells are unchanged; commas and quotes are quoted per RFC 4180."""
        assert csv_line(["25.00", 'a "b", c']) == '25.00,"a ""b"", c"\r\n'


class TestOrderForm:
    def form(self, **changes: str) -> dict[str, str]:
        base = {
            "channel": "phone",
            "amount": "$1,234.50",
            "order_reference": "FL-1",
            "description": "Licence",
            "cardholder_name": "A. Caller",
            "card_number": "4242 4242 4242 4242",
            "expiry": "12/31",
            "cvc": CVC,
            "postal_code": "40601",
        }
        return {**base, **changes}

    def test_a_good_form_becomes_an_order(self) -> None:
        """Amounts are read as dollars and cents; the card is parsed; nothing secret is kept for re-display."""
        check = check_order_form(self.form(), TODAY)
        assert check.order is not None
        assert check.order.amount == 123450
        assert check.order.number.last4 == "4242"
        assert "card_number" not in check.keep
        assert "cvc" not in check.keep

    @pytest.mark.parametrize("amount", ["0", "-5", "1.234", "abc", "1e5"])
    def test_bad_amounts(self, amount: str) -> None:
        """Zero, negative, sub-cent and non-numeric amounts are refused."""
        with pytest.raises(ValueError, match="amount"):
            parse_amount(amount)

    def test_card_numbers_in_free_text_fields_are_refused_and_not_kept(self) -> None:
        """A card number in the description is an error on that field, and the field is emptied."""
        check = check_order_form(self.form(description=f"card {AMEX}", order_reference=VISA), TODAY)
        assert check.order is None
        assert set(check.card_in_wrong_field) == {"description", "order_reference"}
        assert check.keep["description"] == ""
        assert check.keep["order_reference"] == ""

    def test_phone_orders_need_a_cvc_and_mail_orders_do_not(self) -> None:
        """The CVC is required on the phone and optional for mail and fax."""
        assert "cvc" in check_order_form(self.form(cvc=""), TODAY).errors
        assert check_order_form(self.form(cvc="", channel="mail"), TODAY).order is not None

    def test_expired_card_and_unknown_channel(self) -> None:
        """An expired card and a web channel are refused by field."""
        errors = check_order_form(self.form(expiry="01/20", channel="web"), TODAY).errors
        assert set(errors) >= {"expiry", "channel"}


class TestAuditRecord:
    def test_fields_are_flat_versioned_and_redacted(self) -> None:
        """A record stores as flat strings with a shape version; a card number in detail is redacted."""
        from service.domain.audit import AuditRecord

        record = AuditRecord(1.5, "agy_1", "ann", "stf_1", "agent", "order.create", "success", "cli", "ch_1", VISA)
        fields = record.to_fields()
        assert fields["v"] == "1"
        assert all(isinstance(v, str) for v in fields.values())
        assert VISA not in fields["detail"]
        assert AuditRecord.from_fields("1-0", fields).action == "order.create"
