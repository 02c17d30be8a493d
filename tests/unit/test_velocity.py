"""Which velocity limits a request meets: by key kind, staff, overrides; buckets are keyed hashes (no Redis)."""

from __future__ import annotations

import pytest
import redis.asyncio as redis

from service.adapters import crypto
from service.adapters.keyring import Keyring, MasterKey, MasterKeys
from service.adapters.velocity_store import VelocityStore
from service.audit import Actor
from service.domain.agencies import Agency, AgencyStatus
from service.domain.velocity import Action, Scope, VelocityOverrides
from service.settings import VelocitySettings
from service.velocity import Subject, Velocity


def keyring() -> Keyring:
    ring = Keyring(MasterKeys(MasterKey(crypto.random_key(), source="tests")))
    ring.load_pepper(ring.new_wrapped_pepper())
    return ring


AGENCY = Agency("agy_0123456789abcdef", "fishing", AgencyStatus.ACTIVE, ("https://shop.example.gov",), 0)


@pytest.fixture
def velocity() -> Velocity:
    # plan() never reaches the store: a client with nothing behind it proves it.
    return Velocity(VelocityStore(redis.Redis(port=1)), VelocitySettings(), lambda: 1_000.0, keyring())


class TestWhichLimitsApply:
    def test_publishable_key_traffic_is_counted_per_address_key_card_and_agency(self, velocity: Velocity) -> None:
        subject = Subject(source="203.0.113.7", address="203.0.113.7", key="pk_" + "a" * 40)
        plan = velocity.plan(Action.TOKENS, AGENCY, subject, "f" * 32)
        assert plan is not None
        assert [c.name for c in plan.checks] == ["tokens.address", "tokens.key", "tokens.card", "tokens.agency"]
        assert [c.scope for c in plan.checks] == [Scope.ADDRESS, Scope.AGENCY, Scope.NONE, Scope.AGENCY]
        assert plan.address is not None
        assert plan.now_ms == 1_000_000
        assert not plan.count_attempt  # tokens do not feed the decline ratio

    def test_secret_key_traffic_is_counted_per_card_and_agency(self, velocity: Velocity) -> None:
        plan = velocity.plan(Action.CHARGES, AGENCY, Subject(source="198.51.100.2"), "f" * 32)
        assert plan is not None
        assert [c.name for c in plan.checks] == ["charges.card", "charges.agency"]
        assert plan.address is None
        assert plan.count_attempt

    def test_staff_orders_are_counted_per_staff_member(self, velocity: Velocity) -> None:
        actor = Actor(AGENCY.id, "stf_1", "ann", "agent", "10.0.0.8")
        plan = velocity.plan(Action.CHARGES, AGENCY, Subject(source="10.0.0.8", staff="stf_1", actor=actor), "f" * 32)
        assert plan is not None
        assert [c.name for c in plan.checks] == ["charges.staff", "charges.card", "charges.agency"]

    def test_buckets_are_keyed_hashes_never_the_values(self, velocity: Velocity) -> None:
        """No address, key or fingerprint reaches Redis, and an address hashes differently per agency."""
        subject = Subject(source="203.0.113.7", address="203.0.113.7", key="pk_" + "a" * 40)
        plan = velocity.plan(Action.TOKENS, AGENCY, subject, "f" * 32)
        parks = Agency("agy_ffffffffffffffff", "parks", AgencyStatus.ACTIVE, (), 0)
        other = velocity.plan(Action.TOKENS, parks, subject)
        assert plan is not None
        assert other is not None
        for check in plan.checks:
            for clear in ("203.0.113.7", "pk_", "f" * 32):
                assert clear not in check.bucket
        assert plan.checks[0].bucket != other.checks[0].bucket

    def test_limits_turned_off_are_not_checked(self, velocity: Velocity) -> None:
        agency = Agency(
            AGENCY.id, AGENCY.slug, AGENCY.status, AGENCY.origins, 0,
            velocity=VelocityOverrides().changed({"tokens.card": None, "tokens.key": None}),
        )  # fmt: skip
        subject = Subject(source="203.0.113.7", address="203.0.113.7", key="pk_" + "a" * 40)
        plan = velocity.plan(Action.TOKENS, agency, subject, "f" * 32)
        assert plan is not None
        assert [c.name for c in plan.checks] == ["tokens.address", "tokens.agency"]
        assert not velocity.counts_cards(Action.TOKENS, agency, subject)
        assert velocity.counts_cards(Action.CHARGES, agency, subject)

    def test_no_subject_or_disabled_means_no_gate(self, velocity: Velocity) -> None:
        """Internal calls carry no subject; `velocity.enabled: false` turns the whole defence off."""
        assert velocity.plan(Action.TOKENS, AGENCY, None, "f" * 32) is None
        off = Velocity(velocity.store, VelocitySettings(enabled=False), velocity.clock, velocity.keyring)
        assert off.plan(Action.TOKENS, AGENCY, Subject(source="x", address="x"), "f" * 32) is None

    def test_a_subject_never_shows_its_key(self) -> None:
        subject = Subject(source="203.0.113.7", address="203.0.113.7", key="pk_secretish")
        assert "pk_secretish" not in repr(subject)
