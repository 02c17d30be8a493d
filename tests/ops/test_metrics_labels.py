"""What becomes a label: the route's pattern and a known method, never what the client sent; metrics settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client import REGISTRY, generate_latest

from service.adapters.keyring import MasterKeys
from service.app import create_app
from service.errors import ConfigError
from service.settings_loader import load_settings
from tests.conftest import AgencyKeys, create_agency, make_settings
from tests.support.redis_server import RedisServer


def requests_counted(route: str, method: str, status: str) -> float:
    labels = {"route": route, "method": method, "status": status}
    return REGISTRY.get_sample_value("cardvault_http_request_duration_seconds_count", labels) or 0.0


class TestRouteLabels:
    async def test_a_token_id_in_the_path_is_counted_under_the_pattern(
        self, client: TestClient[Any, Any], agency: AgencyKeys
    ) -> None:
        """GET /v1/tokens/<an id> counts under /v1/tokens/{token_id}; the id is in no series."""
        before = requests_counted("/v1/tokens/{token_id}", "GET", "404")
        answer = await client.get("/v1/tokens/tok_LabelProbe00000000000", headers=agency.auth)
        assert answer.status == 404
        assert requests_counted("/v1/tokens/{token_id}", "GET", "404") == before + 1
        assert "tok_LabelProbe" not in _exposition()

    async def test_unknown_paths_and_methods_fold_into_fixed_values(self, client: TestClient[Any, Any]) -> None:
        """A scanner's paths and invented methods add to "unmatched" and "other" instead of new series."""
        unmatched = requests_counted("unmatched", "GET", "404")
        other = requests_counted("unmatched", "other", "405")
        for probe in ("/wp-admin/setup.php", "/.env", "/v1/tokens/x/y/z"):
            assert (await client.get(probe)).status == 404
        assert (await client.request("PROPFIND", "/v1/tokens")).status == 405
        assert requests_counted("unmatched", "GET", "404") == unmatched + 3
        assert requests_counted("unmatched", "other", "405") == other + 1
        text = _exposition()
        assert "wp-admin" not in text
        assert "PROPFIND" not in text


class TestRateLimitTrips:
    async def test_a_velocity_trip_counts_under_the_limit_name(
        self,
        aiohttp_client: Any,
        redis_server: RedisServer,
        master_keys: MasterKeys,
        tmp_path: Path,
        card_body: dict[str, Any],
    ) -> None:
        """The request that a per-card limit refuses adds one to rate_limit_trips{kind="tokens.card"}."""
        settings = make_settings(redis_server.url, tmp_path / "var", velocity={"enabled": True})
        client = await aiohttp_client(create_app(settings, master_keys, redis_url=redis_server.url, tls=False))
        agency = await create_agency(client)
        trips = {"kind": "tokens.card"}
        before = REGISTRY.get_sample_value("cardvault_rate_limit_trips_total", trips) or 0.0
        statuses = [(await client.post("/v1/tokens", json=card_body, headers=agency.auth)).status for _ in range(6)]
        assert statuses == [201] * 5 + [429]
        assert REGISTRY.get_sample_value("cardvault_rate_limit_trips_total", trips) == before + 1


def _exposition() -> str:
    return generate_latest(REGISTRY).decode()


class TestMetricsSettings:
    @pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
    def test_loopback_hosts_are_accepted(self, host: str) -> None:
        """Any loopback address (or localhost) is fine for the metrics listener."""
        settings = load_settings(environ={"CARDVAULT_METRICS__HOST": host})
        assert settings.metrics.host == host
        assert settings.metrics.enabled is False

    @pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "metrics.example.gov"])
    def test_other_hosts_are_refused_naming_the_override(self, host: str) -> None:
        """Anything else is refused, naming metrics.host and the setting that allows it."""
        with pytest.raises(ConfigError) as refused:
            load_settings(environ={"CARDVAULT_METRICS__HOST": host})
        message = str(refused.value)
        assert message.startswith("metrics.host:")
        assert "metrics.allow_non_loopback" in message
        assert "CARDVAULT_METRICS__HOST" in message

    def test_allow_non_loopback_accepts_them(self) -> None:
        """metrics.allow_non_loopback: true is the operator's explicit decision to expose metrics further."""
        env = {"CARDVAULT_METRICS__HOST": "0.0.0.0", "CARDVAULT_METRICS__ALLOW_NON_LOOPBACK": "true"}
        assert load_settings(environ=env).metrics.host == "0.0.0.0"

    def test_workers_and_grace_period_defaults(self) -> None:
        """One process by default; the grace period outlasts a processor call (processors.timeout_seconds)."""
        settings = load_settings(environ={})
        assert settings.server.workers == 1
        assert settings.server.shutdown_timeout > settings.processors.timeout_seconds
        with pytest.raises(ConfigError, match=r"server\.workers"):
            load_settings(environ={"CARDVAULT_SERVER__WORKERS": "0"})
