"""Checkout sessions and hosted-fields values: the session's status machine, style options, the frame proof."""

from __future__ import annotations

import hashlib

import pytest

from service.domain.checkout import (
    STALE_ATTEMPT_SECONDS,
    ChargeSummary,
    CheckoutSession,
    PaymentError,
    PaymentStatus,
    SessionStatus,
    attempt_key,
    new_client_secret,
    new_session_id,
    secret_hash,
    session_id_of_secret,
)
from service.domain.elements import FrameClaims, issue_frame_proof, read_frame_proof, style_properties

NOW = 1_800_000_000


def mac(message: bytes) -> str:
    return hashlib.blake2b(message, key=b"k" * 32, digest_size=32).hexdigest()


def other_mac(message: bytes) -> str:
    return hashlib.blake2b(message, key=b"o" * 32, digest_size=32).hexdigest()


def session(**changes: object) -> CheckoutSession:
    session_id = new_session_id()
    fields: dict[str, object] = {
        "id": session_id,
        "secret_hash": secret_hash(new_client_secret(session_id)),
        "amount": 2500,
        "currency": "usd",
        "order_reference": "FL-1",
        "success_url": "https://shop.example.gov/done",
        "cancel_url": "https://shop.example.gov/",
        "created": NOW,
        "expires_at": NOW + 1800,
        **changes,
    }
    return CheckoutSession(**fields)  # type: ignore[arg-type]


class TestCheckoutSession:
    def test_an_open_session_expires_at_its_deadline(self) -> None:
        """An open session shows expired from expires_at on; a paid one stays complete."""
        s = session()
        assert s.status_at(NOW + 1799) is SessionStatus.OPEN
        assert s.status_at(NOW + 1800) is SessionStatus.EXPIRED
        paid = s.begin_attempt(NOW).paid(ChargeSummary("ch_x", "succeeded", "visa", "4242"), NOW)
        assert paid.status_at(NOW + 10_000) is SessionStatus.COMPLETE

    def test_the_client_secret_names_its_session_and_is_checked_in_constant_time(self) -> None:
        """The client secret starts with its session id; only the exact secret matches the stored hash."""
        session_id = new_session_id()
        secret = new_client_secret(session_id)
        s = session(id=session_id, secret_hash=secret_hash(secret))
        assert session_id_of_secret(secret) == session_id
        assert s.secret_matches(secret)
        assert not s.secret_matches(secret[:-1] + ("A" if secret[-1] != "A" else "B"))
        assert session_id_of_secret("cs_nothex_secret_x") is None

    def test_each_attempt_has_its_own_idempotency_key(self) -> None:
        """Attempts are numbered, and the key of an attempt names the session and the number."""
        s = session().begin_attempt(NOW)
        assert (s.status, s.attempts, s.current_attempt_key) == (SessionStatus.PROCESSING, 1, attempt_key(s.id, 1))
        again = s.refused(None, PaymentError("card_declined", "Declined.")).begin_attempt(NOW)
        assert again.current_attempt_key == attempt_key(s.id, 2)

    def test_an_unknown_outcome_is_never_stale(self) -> None:
        """Only an unconfirmed in-flight attempt goes stale; an unknown outcome stays processing for good."""
        started = session().begin_attempt(NOW)
        assert not started.stale_attempt(NOW + STALE_ATTEMPT_SECONDS)
        assert started.stale_attempt(NOW + STALE_ATTEMPT_SECONDS + 1)
        unknown = started.outcome_unknown(ChargeSummary("ch_x", "unknown", "visa", "4242"))
        assert unknown.payment_status is PaymentStatus.UNKNOWN
        assert not unknown.stale_attempt(NOW + 10 * STALE_ATTEMPT_SECONDS)

    def test_the_record_round_trips_without_card_data(self) -> None:
        """A session's JSON reads back equal, and holds no client secret."""
        secret = new_client_secret(new_session_id())
        s = session(secret_hash=secret_hash(secret)).begin_attempt(NOW)
        s = s.refused(ChargeSummary("ch_x", "declined", "visa", "4242", "generic_decline"), PaymentError("c", "m"))
        assert CheckoutSession.from_json(s.to_json()) == s
        assert secret.encode() not in s.to_json()


class TestStyleOptions:
    @pytest.mark.parametrize(
        ("options", "expected"),
        [
            ({"color": "#ABC"}, {"--cv-color": "#abc"}),
            ({"font_family": "Times New Roman"}, {"--cv-font-family": '"Times New Roman"'}),
            ({"font_size": "24px", "border_radius": "0px"}, {"--cv-font-size": "24px", "--cv-border-radius": "0px"}),
        ],
    )
    def test_allowed_values_pass(self, options: dict[str, str], expected: dict[str, str]) -> None:
        """Allowlisted values become the matching custom properties."""
        assert style_properties(options) == (expected, [])

    @pytest.mark.parametrize(
        ("name", "value"),
        [
            ("color", "#12345g"),
            ("color", "#123;x:y"),
            ("font_size", "25px"),
            ("font_size", "12em"),
            ("font_family", "serif;}body{display:none"),
            ("border_radius", "17px"),
            ("margin", "0px"),
        ],
    )
    def test_anything_else_is_dropped_with_a_warning(self, name: str, value: str) -> None:
        """Values off the allowlist, and unknown options, give no property and one warning."""
        properties, warnings = style_properties({name: value})
        assert properties == {}
        assert len(warnings) == 1


class TestFrameProof:
    def test_a_proof_reads_back_its_claims(self) -> None:
        """A proof the vault issued gives back the agency, parent origin and expiry."""
        claims = FrameClaims("agy_1", "https://shop.example.gov", NOW + 60)
        assert read_frame_proof(issue_frame_proof(claims, mac), mac, now=NOW) == claims

    def test_forged_expired_and_altered_proofs_are_refused(self) -> None:
        """Another key's MAC, a past expiry, or a changed parent origin or agency all read as None."""
        claims = FrameClaims("agy_1", "https://shop.example.gov", NOW + 60)
        proof = issue_frame_proof(claims, mac)
        assert read_frame_proof(issue_frame_proof(claims, other_mac), mac, now=NOW) is None
        assert read_frame_proof(proof, mac, now=NOW + 61) is None
        forged_origin = issue_frame_proof(FrameClaims("agy_1", "https://evil.example.com", NOW + 60), other_mac)
        parts = proof.split(".")
        assert read_frame_proof(".".join([*parts[:3], forged_origin.split(".")[3], parts[4]]), mac, now=NOW) is None
        assert read_frame_proof(proof.replace("agy_1", "agy_2"), mac, now=NOW) is None
        assert read_frame_proof("v1.garbage", mac, now=NOW) is None
