"""redis+sentinel:// URLs: what each part means, and a clear ConfigError for what is malformed."""

from __future__ import annotations

import pytest

from service.adapters.sentinel import parse_sentinel_url
from service.errors import ConfigError
from service.settings_loader import load_settings


class TestParse:
    def test_every_part(self) -> None:
        """Sentinels with and without ports (IPv6 bracketed), user, password, service name, db, Sentinel password."""
        target = parse_sentinel_url(
            "redis+sentinel://vault:s%40cret@10.0.0.1:26380,sentinel-b,[::1]:26381/payments/3?sentinel_password=x"
        )
        assert target.sentinels == (("10.0.0.1", 26380), ("sentinel-b", 26379), ("::1", 26381))
        assert (target.service_name, target.db) == ("payments", 3)
        assert (target.username, target.password, target.sentinel_password) == ("vault", "s@cret", "x")

    def test_defaults_and_a_password_alone(self) -> None:
        """No credentials: none sent; ':password@' is a password without a user name; db 0."""
        bare = parse_sentinel_url("redis+sentinel://127.0.0.1:26379/cardvault")
        assert (bare.username, bare.password, bare.sentinel_password, bare.db) == (None, None, None, 0)
        secret = parse_sentinel_url("redis+sentinel://:pw@127.0.0.1/cardvault")
        assert (secret.username, secret.password) == (None, "pw")

    def test_passwords_never_show_in_repr(self) -> None:
        """A SentinelTarget printed in a log line shows no password."""
        target = parse_sentinel_url("redis+sentinel://:hunter2@h/s?sentinel_password=swordfish")
        assert "hunter2" not in repr(target)
        assert "swordfish" not in repr(target)

    @pytest.mark.parametrize(
        ("url", "says"),
        [
            ("redis+sentinel:///cardvault", "at least one Sentinel"),
            ("redis+sentinel://h:26379", "/service_name"),
            ("redis+sentinel://h:26379/a/b/c", "/service_name"),
            ("redis+sentinel://h:26379/cardvault/x", "not a number"),
            ("redis+sentinel://h:port/cardvault", "no valid port"),
            ("redis+sentinel://h:99999/cardvault", "no valid port"),
            ("redis+sentinel://[::1/cardvault", "host[:port]"),
            ("redis+sentinel://h/cardvault?ssl=true", "unknown Sentinel URL option"),
        ],
    )
    def test_malformed_urls_say_what_is_wrong(self, url: str, says: str) -> None:
        """Each mistake is one ConfigError naming redis.url and the part at fault."""
        with pytest.raises(ConfigError, match=r"redis\.url") as caught:
            parse_sentinel_url(url)
        assert says in str(caught.value)

    def test_the_settings_accept_the_scheme(self) -> None:
        """redis.url takes redis+sentinel:// alongside redis://, rediss:// and unix://."""
        settings = load_settings(None, environ={"CARDVAULT_REDIS_URL": "redis+sentinel://h/cardvault"}, overrides={})
        assert settings.redis.url == "redis+sentinel://h/cardvault"
