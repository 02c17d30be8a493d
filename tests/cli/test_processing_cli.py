"""`cardvault agency set-processor | set-limits | allow-destination`: the operator's payment settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.adapters.keyring import MasterKeys
from tests.conftest import master_key_text
from tests.support.cards import VISA
from tests.support.redis_server import RedisServer
from tests.support.serve import run_cli

TRANSACTION_KEY = "7aXq9Z2bK4mP3wQe"


@pytest.fixture
def env(redis_server: RedisServer, tmp_path: Path) -> dict[str, str | Path]:
    """The commands against the session's Redis (the master key comes from ``master_key_env``)."""
    return {"CARDVAULT_REDIS_URL": redis_server.url, "CARDVAULT_DATA_DIR": tmp_path / "var"}


@pytest.fixture
def slug(env: dict[str, str | Path], master_key_env: dict[str, str]) -> str:
    name = f"cli-pay-{Path(str(env['CARDVAULT_DATA_DIR'])).parent.name[-12:].lower().replace('_', '-')}"
    run_cli("agency", "create", name, "--origin", "https://shop.example.gov", env={**env, **master_key_env}).assert_ok()
    return name


@pytest.fixture
def master_key_env(master_keys: MasterKeys) -> dict[str, str]:
    """The session's master key: the session's Redis holds a pepper wrapped under it."""
    return {"CARDVAULT_MASTER_KEY": master_key_text(master_keys)}


class TestSetProcessor:
    def test_credentials_are_sealed_and_never_printed(
        self, env: dict[str, str | Path], master_key_env: dict[str, str], slug: str, redis_server: RedisServer
    ) -> None:
        """The transaction key is stored only encrypted, and no command output shows it."""
        full_env = {**env, **master_key_env}
        result = run_cli(
            "agency",
            "set-processor",
            slug,
            "authorize_net",
            "--login-id",
            "5KP3u95bQpv",
            "--transaction-key",
            TRANSACTION_KEY,
            "--endpoint",
            "https://gateway.example.gov/xml/v1/request.api",
            env=full_env,
        ).assert_ok()
        shown = result.json()["agency"]["processor"]
        assert shown == {
            "name": "authorize_net",
            "endpoint": "https://gateway.example.gov/xml/v1/request.api",
            "login_id": "5KP3u95bQpv",
        }
        listed = run_cli("agency", "list", "--json", env=full_env).assert_ok()
        assert TRANSACTION_KEY not in result.stdout + result.stderr + listed.stdout + listed.stderr
        client = redis_server.client()
        for key in client.scan_iter(count=1000):
            if client.type(key) == b"hash":
                assert not any(TRANSACTION_KEY.encode() in v for v in client.hgetall(key).values())
            elif client.type(key) == b"string":
                assert TRANSACTION_KEY.encode() not in (client.get(key) or b"")

    def test_key_is_prompted_for_when_omitted(
        self, env: dict[str, str | Path], master_key_env: dict[str, str], slug: str
    ) -> None:
        """Without --transaction-key the key is read from the prompt, not the command line."""
        result = run_cli(
            "agency",
            "set-processor",
            slug,
            "authorize_net",
            "--login-id",
            "5KP3u95bQpv",
            env={**env, **master_key_env},
            input=TRANSACTION_KEY + "\n",
        ).assert_ok()
        assert TRANSACTION_KEY not in result.stdout + result.stderr
        assert result.json()["agency"]["processor"]["endpoint"].startswith("https://apitest.authorize.net")

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (["authorize_net", "--transaction-key", "x"], "--login-id"),
            (["sandbox", "--login-id", "x"], "takes no credentials"),
            (["authorize_net", "--login-id", "x", "--transaction-key", "y", "--endpoint", "http://plain"], "https"),
            (["paypal"], "Invalid value"),
        ],
    )
    def test_bad_settings_are_one_line(
        self, env: dict[str, str | Path], master_key_env: dict[str, str], slug: str, args: list[str], message: str
    ) -> None:
        """A processor setting that cannot work is refused with one clear line and nothing changes."""
        result = run_cli("agency", "set-processor", slug, *args, env={**env, **master_key_env})
        assert result.returncode != 0
        assert message in result.stderr
        assert "Traceback" not in result.stderr
        shown = run_cli("agency", "list", "--json", env={**env, **master_key_env}).assert_ok().json()
        mine = next(a for a in shown["agencies"] if a["slug"] == slug)
        assert mine["processor"] == {"name": "sandbox"}


class TestLimitsAndDestinations:
    def test_max_amount(self, env: dict[str, str | Path], master_key_env: dict[str, str], slug: str) -> None:
        """set-limits stores the agency's own ceiling and --no-max-amount removes it."""
        full_env = {**env, **master_key_env}
        shown = run_cli("agency", "set-limits", slug, "--max-amount", "50000", env=full_env).assert_ok().json()
        assert shown["agency"]["max_amount"] == 50000
        cleared = run_cli("agency", "set-limits", slug, "--no-max-amount", env=full_env).assert_ok().json()
        assert cleared["agency"]["max_amount"] is None
        assert run_cli("agency", "set-limits", slug, "--max-amount", "0", env=full_env).returncode != 0

    def test_allow_and_remove_destination(
        self, env: dict[str, str | Path], master_key_env: dict[str, str], slug: str
    ) -> None:
        """Destinations are https with an exact host; private addresses need --allow-private."""
        full_env = {**env, **master_key_env}
        added = (
            run_cli("agency", "allow-destination", slug, "https://api.payments.example.com/v2", env=full_env)
            .assert_ok()
            .json()
        )
        assert added["agency"]["destinations"] == [
            {"url_prefix": "https://api.payments.example.com/v2", "allow_private": False}
        ]
        for url in ("http://api.payments.example.com/v2", "https://10.0.0.5/v2", f"https://x.example.com/?q={VISA}"):
            refused = run_cli("agency", "allow-destination", slug, url, env=full_env)
            assert refused.returncode != 0, url
            assert VISA not in refused.stderr
        private = run_cli(
            "agency", "allow-destination", slug, "https://10.0.0.5/v2", "--allow-private", env=full_env
        ).assert_ok()
        assert private.json()["agency"]["destinations"][-1]["allow_private"] is True
        removed = (
            run_cli("agency", "remove-destination", slug, "https://api.payments.example.com/v2", env=full_env)
            .assert_ok()
            .json()
        )
        assert [d["url_prefix"] for d in removed["agency"]["destinations"]] == ["https://10.0.0.5/v2"]
