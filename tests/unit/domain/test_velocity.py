"""Velocity limits as values: COUNT/PERIOD limits, per-agency overrides, the defaults' names."""

from __future__ import annotations

import pytest

from service.domain.velocity import (
    LIMIT_NAMES,
    InvalidVelocityInput,
    Limit,
    VelocityOverrides,
    format_limit,
    parse_limit,
)
from service.settings import VelocitySettings
from service.velocity import default_limits, effective_limits


class TestLimits:
    @pytest.mark.parametrize(
        ("text", "limit"),
        [
            ("10/600", Limit(10, 600)),
            ("10/10m", Limit(10, 600)),
            (" 5 / 1h ", Limit(5, 3600)),
            ("3000/1m", Limit(3000, 60)),
            ("2/1d", Limit(2, 86400)),
            ("7/45s", Limit(7, 45)),
            ("off", None),
            ("OFF", None),
        ],
    )
    def test_limits_parse(self, text: str, limit: Limit | None) -> None:
        """COUNT/PERIOD with an optional unit, or off."""
        assert parse_limit(text) == limit

    @pytest.mark.parametrize("text", ["", "10", "10/", "/60", "0/60", "10/0", "10/8d", "ten/1m", "10/1w", "-1/60"])
    def test_nonsense_is_refused(self, text: str) -> None:
        """Anything else is an operator error with a message saying how to write it."""
        with pytest.raises(InvalidVelocityInput, match=r"COUNT/PERIOD|between"):
            parse_limit(text)

    def test_limits_print_in_the_largest_whole_unit(self) -> None:
        """What the CLI shows reads back to the same limit."""
        for limit in (Limit(10, 600), Limit(5, 3600), Limit(7, 45), Limit(1, 86400 * 2)):
            assert parse_limit(format_limit(limit)) == limit
        assert format_limit(Limit(10, 600)) == "10/10m"
        assert format_limit(None) == "off"

    def test_tightening_divides_the_count_but_never_below_one(self) -> None:
        assert Limit(10, 600).tightened(4) == Limit(2, 600)
        assert Limit(3, 600).tightened(4) == Limit(1, 600)


class TestOverrides:
    def test_overrides_round_trip_through_json(self) -> None:
        """Stored in the agency's record as JSON; off survives as off."""
        overrides = VelocityOverrides().changed({"tokens.address": Limit(3, 60), "charges.card": None})
        again = VelocityOverrides.from_json(overrides.to_json())
        assert again == overrides
        assert again.get("tokens.address") == (True, Limit(3, 60))
        assert again.get("charges.card") == (True, None)
        assert again.get("tokens.card") == (False, None)

    def test_removing_an_override_goes_back_to_the_default(self) -> None:
        overrides = VelocityOverrides().changed({"tokens.address": Limit(3, 60), "tokens.key": Limit(9, 60)})
        assert overrides.changed({}, removed=["tokens.address"]).public() == {"tokens.key": "9/1m"}

    def test_unknown_names_are_refused(self) -> None:
        with pytest.raises(InvalidVelocityInput, match=r"no limit 'tokens\.ip'"):
            VelocityOverrides.from_json('{"tokens.ip": "1/1m"}')

    def test_every_limit_has_a_default_setting(self) -> None:
        """config/default.yaml names each of the ten limits; the overrides use the same names."""
        defaults = default_limits(VelocitySettings())
        assert set(defaults) == set(LIMIT_NAMES)
        assert defaults["tokens.address"] == Limit(10, 600)
        assert defaults["charges.card"] == Limit(5, 3600)

    def test_an_agency_override_beats_the_default(self) -> None:
        defaults = default_limits(VelocitySettings())
        overrides = VelocityOverrides().changed({"tokens.address": Limit(2, 60), "tokens.agency": None})
        limits = effective_limits(defaults, overrides)
        assert limits["tokens.address"] == Limit(2, 60)
        assert limits["tokens.agency"] is None
        assert limits["tokens.key"] == defaults["tokens.key"]
