"""Settings: defaults, YAML, CARDVAULT_* variables, and one clear line per mistake."""

from pathlib import Path

import pytest
import yaml

from service.errors import ConfigError
from service.settings_loader import defaults_as_dict, load_settings

REPO = Path(__file__).resolve().parents[2]


class TestDefaults:
    def test_config_default_yaml_matches_the_schema(self) -> None:
        """config/default.yaml documents exactly the defaults the service embeds."""
        documented = yaml.safe_load((REPO / "config" / "default.yaml").read_text())
        assert documented == defaults_as_dict()

    def test_production_example_is_valid_production_settings(self) -> None:
        """The production example loads and is in production mode."""
        settings = load_settings(REPO / "config" / "production.example.yaml", environ={})
        assert settings.production
        assert settings.tls.cert_file is not None

    def test_no_configuration_means_embedded_development(self) -> None:
        """With nothing configured the service runs on its embedded Redis in development mode."""
        settings = load_settings(None, environ={})
        assert settings.embedded_redis
        assert settings.mode == "development"
        assert (settings.server.host, settings.server.port) == ("127.0.0.1", 8443)


class TestPrecedence:
    def test_environment_overrides_file_and_flags_override_environment(self, tmp_path: Path) -> None:
        """Flags beat CARDVAULT_* variables, which beat the file."""
        config = tmp_path / "c.yaml"
        config.write_text("server:\n  port: 9000\n  host: 0.0.0.0\n")
        settings = load_settings(config, environ={"CARDVAULT_SERVER__PORT": "9100"})
        assert (settings.server.host, settings.server.port) == ("0.0.0.0", 9100)
        settings = load_settings(
            config, environ={"CARDVAULT_SERVER__PORT": "9100"}, overrides={"server": {"port": 9200}}
        )
        assert settings.server.port == 9200

    def test_redis_url_alias_and_config_variable(self, tmp_path: Path) -> None:
        """CARDVAULT_REDIS_URL sets redis.url and CARDVAULT_CONFIG names the file."""
        config = tmp_path / "c.yaml"
        config.write_text("mode: production\n")
        settings = load_settings(
            None, environ={"CARDVAULT_CONFIG": str(config), "CARDVAULT_REDIS_URL": "redis://10.0.0.5:6379/2"}
        )
        assert settings.redis.url == "redis://10.0.0.5:6379/2"
        assert settings.production

    def test_list_from_environment(self) -> None:
        """Comma-separated variables fill list settings."""
        settings = load_settings(None, environ={"CARDVAULT_KEYS__PREVIOUS_MASTER_KEY_FILES": "/a, /b"})
        assert [str(p) for p in settings.keys.previous_master_key_files] == ["/a", "/b"]


class TestErrors:
    @pytest.mark.parametrize(
        ("yaml_text", "expected"),
        [
            ("server:\n  port: x\n", "server.port: Not a valid integer."),
            ("server:\n  port: 70000\n", "server.port:"),
            ("servr:\n  port: 1\n", "servr: Unknown field."),
            ("mode: staging\n", "mode: Must be one of"),
            ("tokens:\n  cvc_ttl_seconds: 7200\n", "tokens.cvc_ttl_seconds: must be between 60 and 3600"),
            ("tls:\n  cert_file: /a.pem\n", "tls.cert_file: give both cert_file and key_file"),
            ("tls:\n  session_cache_size: -1\n", "tls.session_cache_size: Must be greater than or equal to 0"),
            ("redis:\n  url: http://x\n", "redis.url: must start with"),
            ("keys:\n  master_key: abc\n", "keys.master_key: a master key never goes in a config file"),
            ("- a\n- b\n", "the top level must be a mapping"),
            ("server: [\n", "not valid YAML at line"),
        ],
    )
    def test_one_line_names_the_key(self, tmp_path: Path, yaml_text: str, expected: str) -> None:
        """A bad value stops loading with one line that names the key and the problem."""
        config = tmp_path / "c.yaml"
        config.write_text(yaml_text)
        with pytest.raises(ConfigError) as caught:
            load_settings(config, environ={})
        message = str(caught.value)
        assert expected in message
        assert "\n" not in message

    def test_the_session_cache_size_comes_from_the_environment(self) -> None:
        settings = load_settings(None, environ={"CARDVAULT_TLS__SESSION_CACHE_SIZE": "64"})
        assert settings.tls.session_cache_size == 64
        assert load_settings(None, environ={}).tls.session_cache_size == 20_480

    def test_bad_variable_is_named(self) -> None:
        """A bad CARDVAULT_* value names the variable it came from."""
        with pytest.raises(ConfigError, match=r"server\.port: Not a valid integer\. \(from CARDVAULT_SERVER__PORT\)"):
            load_settings(None, environ={"CARDVAULT_SERVER__PORT": "abc"})

    def test_unknown_variable_is_refused(self) -> None:
        """A misspelt CARDVAULT_* variable is an error, not silently ignored."""
        with pytest.raises(ConfigError, match="CARDVAULT_SERVR__PORT"):
            load_settings(None, environ={"CARDVAULT_SERVR__PORT": "1"})

    def test_missing_file(self, tmp_path: Path) -> None:
        """A config file that cannot be read is named."""
        with pytest.raises(ConfigError, match="cannot read it"):
            load_settings(tmp_path / "nope.yaml", environ={})


class TestOddShapes:
    @pytest.mark.parametrize("yaml_text", ["keys: 5\n", "keys: 'master_key here'\n"])
    def test_keys_section_of_the_wrong_type(self, tmp_path: Path, yaml_text: str) -> None:
        """A keys section that is not a mapping is one clear line, not a traceback or a wrong message."""
        config = tmp_path / "c.yaml"
        config.write_text(yaml_text)
        with pytest.raises(ConfigError) as caught:
            load_settings(config, environ={})
        assert str(caught.value).startswith("keys:")
