"""`cardvault agency velocity | set-velocity`: an operator sees and changes an agency's card-testing limits.

The commands run as real processes against the session's Redis; the refusals
they report are made by the in-process app on the same Redis and master key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from service.adapters.keyring import MasterKeys
from service.adapters.velocity_store import tight_key
from service.http.state import SERVICES
from tests.conftest import AgencyKeys, master_key_text
from tests.http.velocity_fixtures import StartApp, public, start_app, token_body
from tests.support.cards import MASTERCARD, VISA
from tests.support.redis_server import RedisServer
from tests.support.serve import run_cli

pytestmark = pytest.mark.slow

DEFAULTS = {
    "tokens.address": "10/10m",
    "tokens.key": "600/1m",
    "tokens.staff": "20/10m",
    "tokens.card": "5/10m",
    "tokens.agency": "3000/1m",
    "charges.address": "5/10m",
    "charges.key": "300/1m",
    "charges.staff": "20/10m",
    "charges.card": "5/1h",
    "charges.agency": "1200/1m",
}


@pytest.fixture
def env(redis_server: RedisServer, tmp_path: Path, master_keys: MasterKeys) -> dict[str, str | Path]:
    return {
        "CARDVAULT_REDIS_URL": redis_server.url,
        "CARDVAULT_DATA_DIR": tmp_path / "var",
        "CARDVAULT_MASTER_KEY": master_key_text(master_keys),
    }


@pytest.fixture
def agency(env: dict[str, str | Path], tmp_path: Path) -> AgencyKeys:
    slug = f"cli-vel-{tmp_path.name[-12:].lower().replace('_', '-')}"
    created = run_cli("agency", "create", slug, "--origin", "https://shop.example.gov", env=env).assert_ok().json()
    return AgencyKeys(slug, created["agency"]["id"], created["publishable_key"], created["secret_key"])


class TestVelocityCommands:
    def test_an_agency_starts_with_the_defaults(self, env: dict[str, str | Path], agency: AgencyKeys) -> None:
        shown = run_cli("agency", "velocity", agency.slug, "--json", env=env).assert_ok().json()
        assert shown == {
            "agency": agency.slug,
            "limits": DEFAULTS,
            "overrides": {},
            "tightened_until": None,
            "tightened_addresses": 0,
            "trips": {},
        }
        table = run_cli("agency", "velocity", agency.slug, env=env).assert_ok().stdout
        assert "tokens.address     10/10m" in table
        assert "not tightened" in table

    async def test_limits_set_from_the_command_line_apply_and_their_trips_show(
        self, env: dict[str, str | Path], agency: AgencyKeys, start_app: StartApp
    ) -> None:
        """Override two limits, turn one off; the app refuses by them; the refusals are counted for the operator."""
        changed = run_cli(
            "agency", "set-velocity", agency.slug,
            "--token-address", "1/1h", "--charge-card", "off", "--token-agency", "100/60",
            env=env,
        ).assert_ok().json()  # fmt: skip
        assert changed["overrides"] == {"charges.card": "off", "tokens.address": "1/1h", "tokens.agency": "100/1m"}
        assert changed["limits"] == {**DEFAULTS, **changed["overrides"]}

        client = await start_app()
        statuses = [
            (await client.post("/v1/tokens", json=token_body(n), headers=public(agency, "203.0.113.9"))).status
            for n in (VISA, MASTERCARD)
        ]
        assert statuses == [201, 429]

        shown = run_cli("agency", "velocity", agency.slug, "--json", env=env).assert_ok().json()
        assert shown["trips"] == {"tokens.address": 1}
        back = run_cli("agency", "set-velocity", agency.slug, "--token-address", "default", env=env).assert_ok().json()
        assert back["overrides"] == {"charges.card": "off", "tokens.agency": "100/1m"}
        reset = run_cli("agency", "set-velocity", agency.slug, "--reset", env=env).assert_ok().json()
        assert reset["overrides"] == {}
        assert reset["limits"] == DEFAULTS

    async def test_an_operator_can_see_and_lift_a_tightening(
        self, env: dict[str, str | Path], agency: AgencyKeys, start_app: StartApp
    ) -> None:
        client = await start_app()
        redis: Any = client.app[SERVICES].store.redis
        until_ms = int(client.app[SERVICES].clock() * 1000) + 3_600_000
        await redis.set(tight_key(agency.id), until_ms)
        await redis.set(tight_key(agency.id, "0123456789abcdef0123456789abcdef"), until_ms)
        shown = run_cli("agency", "velocity", agency.slug, "--json", env=env).assert_ok().json()
        assert shown["tightened_until"] is not None
        assert shown["tightened_addresses"] == 1
        lifted = run_cli("agency", "velocity", agency.slug, "--lift-tightening", "--json", env=env).assert_ok().json()
        assert lifted["tightened_until"] is None
        assert lifted["tightened_addresses"] == 0

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (["--token-address", "ten/1m"], "write COUNT/PERIOD such as 10/10m"),
            (["--token-card", "5/9d"], "the period must be between 1 second and 7 days"),
            ([], "give at least one limit option"),
        ],
    )
    def test_nonsense_is_one_clear_line(
        self, env: dict[str, str | Path], agency: AgencyKeys, args: list[str], message: str
    ) -> None:
        result = run_cli("agency", "set-velocity", agency.slug, *args, env=env)
        assert result.returncode != 0
        assert message in result.stderr
        assert "Traceback" not in result.stderr

    def test_an_unknown_agency_is_named(self, env: dict[str, str | Path]) -> None:
        result = run_cli("agency", "velocity", "no-such-agency", env=env)
        assert result.returncode == 1
        assert "no agency 'no-such-agency'" in result.stderr


__all__ = ["start_app"]  # the fixture, imported for pytest
