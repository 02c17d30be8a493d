"""`cardvault config check` and the one-line errors of every command, run as real processes."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import trustme
import yaml

from service.adapters.keyring import ensure_development_master_key
from service.tls.certs import generate_self_signed
from tests.support.serve import run_cli

pytestmark = pytest.mark.slow


def write_config(directory: Path, data: Any, name: str = "cardvault.yaml") -> Path:
    path = directory / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data), encoding="utf-8")
    return path


def ca_signed_pair(directory: Path) -> tuple[Path, Path]:
    now = dt.datetime.now(dt.UTC)
    leaf = trustme.CA().issue_cert(
        "localhost", not_before=now - dt.timedelta(hours=1), not_after=now + dt.timedelta(days=90)
    )
    cert, key = directory / "cert.pem", directory / "key.pem"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    return cert, key


def master_key_file(directory: Path) -> Path:
    path = directory / "master.key"
    run_cli("keys", "generate-master", "--output", path, cwd=directory).assert_ok()
    return path


class TestConfigCheckAccepts:
    def test_good_file_is_ok(self, tmp_path: Path) -> None:
        """A valid development file passes with exit 0 and 'ok', and creates nothing."""
        config = write_config(
            tmp_path,
            {
                "server": {"port": 9443, "host": "127.0.0.1"},
                "tokens": {"cvc_ttl_seconds": 600},
                "log": {"level": "debug"},
            },
        )
        done = run_cli("config", "check", "--config", config, cwd=tmp_path).assert_ok()
        assert done.stdout.startswith("ok")
        assert "development" in done.stdout
        assert not (tmp_path / "var").exists()

    def test_shipped_config_files_are_ok(self, tmp_path: Path) -> None:
        """config/default.yaml checks clean; so does the production example given its key and certificate."""
        repository = Path(__file__).resolve().parents[2]
        run_cli("config", "check", "--config", repository / "config" / "default.yaml", cwd=tmp_path).assert_ok()
        cert, key = ca_signed_pair(tmp_path)
        env: dict[str, str | Path] = {
            "CARDVAULT_TLS__CERT_FILE": cert,
            "CARDVAULT_TLS__KEY_FILE": key,
            "CARDVAULT_KEYS__MASTER_KEY_FILE": master_key_file(tmp_path),
        }
        production = repository / "config" / "production.example.yaml"
        done = run_cli("config", "check", "--config", production, env=env, cwd=tmp_path).assert_ok()
        assert done.stdout.startswith("ok: production")

    def test_config_file_from_environment(self, tmp_path: Path) -> None:
        """CARDVAULT_CONFIG names the file when --config is not given."""
        config = write_config(tmp_path, {"server": {"port": "x"}})
        run_cli("config", "check", env={"CARDVAULT_CONFIG": config}, cwd=tmp_path).assert_one_error("server.port")

    def test_no_file_is_ok(self, tmp_path: Path) -> None:
        """Without a file the defaults are valid."""
        assert run_cli("config", "check", cwd=tmp_path).assert_ok().stdout.startswith("ok")

    def test_printed_defaults_are_a_valid_config_file(self, tmp_path: Path) -> None:
        """`config defaults` prints every setting as JSON, and that document passes `config check` as a file."""
        printed = run_cli("config", "defaults", cwd=tmp_path).assert_ok().json()
        assert printed["mode"] == "development"
        assert printed["server"]["port"] == 8443
        assert printed["keys"]["master_key_file"] is None
        config = write_config(tmp_path, printed, name="defaults.yaml")
        run_cli("config", "check", "--config", config, cwd=tmp_path).assert_ok()


class TestConfigCheckRefuses:
    @pytest.mark.parametrize(
        ("data", "key"),
        [
            ({"server": {"port": "x"}}, "server.port"),
            ({"server": {"prot": 8443}}, "server.prot"),
            ({"surver": {"port": 8443}}, "surver"),
            ({"mode": "staging"}, "mode"),
            ({"tokens": {"cvc_ttl_seconds": 7200}}, "tokens.cvc_ttl_seconds"),
            ({"keys": {"master_key": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTMyYg=="}}, "keys.master_key"),
            ({"redis": {"url": "http://localhost:6379"}}, "redis.url"),
            ({"tls": {"cert_file": "/etc/cert.pem"}}, "cert_file"),
        ],
        ids=["port-x", "unknown-key", "unknown-section", "mode", "cvc-ttl", "master-key", "redis-url", "cert-alone"],
    )
    def test_bad_value_is_one_error_line_naming_the_key(self, tmp_path: Path, data: Any, key: str) -> None:
        """A bad value exits non-zero with exactly one Error line that names the key and the file."""
        config = write_config(tmp_path, data)
        done = run_cli("config", "check", "--config", config, cwd=tmp_path)
        line = done.assert_one_error(key, str(config))
        assert done.stderr.strip() == line, done.describe()
        assert done.stdout == ""

    def test_master_key_in_file_is_not_echoed(self, tmp_path: Path) -> None:
        """The refusal of a master key in a config file does not repeat the key."""
        secret = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTMyYg=="
        config = write_config(tmp_path, {"keys": {"master_key": secret}})
        done = run_cli("config", "check", "--config", config, cwd=tmp_path)
        done.assert_one_error("keys.master_key")
        assert secret not in done.stderr + done.stdout

    def test_environment_variable_is_named(self, tmp_path: Path) -> None:
        """A bad CARDVAULT_SERVER__PORT names the key and the variable it came from."""
        done = run_cli("config", "check", env={"CARDVAULT_SERVER__PORT": "abc"}, cwd=tmp_path)
        done.assert_one_error("server.port", "CARDVAULT_SERVER__PORT")

    def test_environment_overrides_a_good_file_value(self, tmp_path: Path) -> None:
        """Environment variables win over the file, so a bad one fails a good file."""
        config = write_config(tmp_path, {"tokens": {"cvc_ttl_seconds": 600}})
        done = run_cli(
            "config", "check", "--config", config, env={"CARDVAULT_TOKENS__CVC_TTL_SECONDS": "5"}, cwd=tmp_path
        )
        done.assert_one_error("tokens.cvc_ttl_seconds", "CARDVAULT_TOKENS__CVC_TTL_SECONDS")

    def test_invalid_yaml_names_the_line(self, tmp_path: Path) -> None:
        """A file that is not YAML is one line with the file and line number."""
        config = write_config(tmp_path, "server:\n  port: [8443\n")
        run_cli("config", "check", "--config", config, cwd=tmp_path).assert_one_error(str(config), "line")

    def test_missing_file_is_one_line(self, tmp_path: Path) -> None:
        """A --config path that does not exist is one line naming it."""
        missing = tmp_path / "nope.yaml"
        run_cli("config", "check", "--config", missing, cwd=tmp_path).assert_one_error(str(missing))

    def test_production_without_certificate(self, tmp_path: Path) -> None:
        """Production settings without a certificate fail the check as they would fail serve."""
        env: dict[str, str | Path] = {
            "CARDVAULT_MODE": "production",
            "CARDVAULT_KEYS__MASTER_KEY_FILE": master_key_file(tmp_path),
        }
        run_cli("config", "check", env=env, cwd=tmp_path).assert_one_error("tls.cert_file")

    def test_production_without_master_key(self, tmp_path: Path) -> None:
        """Production settings without a master key name keys.master_key_file."""
        cert, key = ca_signed_pair(tmp_path)
        env: dict[str, str | Path] = {
            "CARDVAULT_MODE": "production",
            "CARDVAULT_TLS__CERT_FILE": cert,
            "CARDVAULT_TLS__KEY_FILE": key,
        }
        run_cli("config", "check", env=env, cwd=tmp_path).assert_one_error("keys.master_key_file")

    def test_production_with_development_key(self, tmp_path: Path) -> None:
        """A generated development key named by keys.master_key_file fails a production check."""
        cert, key = ca_signed_pair(tmp_path)
        config = write_config(
            tmp_path,
            {
                "mode": "production",
                "keys": {"master_key_file": str(ensure_development_master_key(tmp_path / "dev"))},
                "tls": {"cert_file": str(cert), "key_file": str(key)},
            },
        )
        run_cli("config", "check", "--config", config, cwd=tmp_path).assert_one_error("development key")

    def test_production_with_self_signed_certificate(self, tmp_path: Path) -> None:
        """A self-signed certificate fails a production check, naming tls.cert_file."""
        cert, key = tmp_path / "self.pem", tmp_path / "self-key.pem"
        generate_self_signed(cert, key)
        env: dict[str, str | Path] = {
            "CARDVAULT_MODE": "production",
            "CARDVAULT_KEYS__MASTER_KEY_FILE": master_key_file(tmp_path),
            "CARDVAULT_TLS__CERT_FILE": cert,
            "CARDVAULT_TLS__KEY_FILE": key,
        }
        run_cli("config", "check", env=env, cwd=tmp_path).assert_one_error("tls.cert_file", "self-signed")

    def test_development_only_warns_about_a_self_signed_certificate(self, tmp_path: Path) -> None:
        """The same certificate in development passes with a warning on stderr."""
        cert, key = tmp_path / "self.pem", tmp_path / "self-key.pem"
        generate_self_signed(cert, key)
        env = {"CARDVAULT_TLS__CERT_FILE": cert, "CARDVAULT_TLS__KEY_FILE": key}
        done = run_cli("config", "check", env=env, cwd=tmp_path).assert_ok()
        assert "warning:" in done.stderr
        assert "self-signed" in done.stderr

    def test_missing_certificate_file_is_one_line(self, tmp_path: Path) -> None:
        """A tls.cert_file that does not exist is one line naming it, not a traceback."""
        missing = tmp_path / "missing-cert.pem"
        env = {"CARDVAULT_TLS__CERT_FILE": missing, "CARDVAULT_TLS__KEY_FILE": tmp_path / "missing-key.pem"}
        run_cli("config", "check", env=env, cwd=tmp_path).assert_one_error(str(missing))

    def test_key_that_does_not_belong_to_the_certificate(self, tmp_path: Path) -> None:
        """A private key of another certificate fails the check instead of failing serve later."""
        cert, _ = ca_signed_pair(tmp_path)
        other = tmp_path / "other"
        other.mkdir()
        _, wrong_key = ca_signed_pair(other)
        env = {"CARDVAULT_TLS__CERT_FILE": cert, "CARDVAULT_TLS__KEY_FILE": wrong_key}
        run_cli("config", "check", env=env, cwd=tmp_path).assert_one_error("does not belong")

    def test_unreadable_master_key_file(self, tmp_path: Path) -> None:
        """A master key file that is not a key is one line naming the file, never its content."""
        bad = tmp_path / "bad.key"
        bad.write_text("not-a-key-at-all\n")
        bad.chmod(0o600)
        done = run_cli("config", "check", env={"CARDVAULT_KEYS__MASTER_KEY_FILE": bad}, cwd=tmp_path)
        done.assert_one_error(str(bad))
        assert "not-a-key-at-all" not in done.stderr


class TestCommandErrors:
    def test_unknown_agency_is_one_line(self, tmp_path: Path) -> None:
        """An operator error (no such agency) is one Error line and exit 1."""
        done = run_cli("agency", "rotate-keys", "nobody", "--data-dir", tmp_path / "var", cwd=tmp_path)
        assert done.returncode == 1
        done.assert_one_error("nobody")

    def test_unreachable_redis_is_one_line(self, tmp_path: Path) -> None:
        """A Redis that does not answer is one Error line, not a traceback."""
        done = run_cli("agency", "list", env={"CARDVAULT_REDIS_URL": "redis://127.0.0.1:1/0"}, cwd=tmp_path)
        done.assert_one_error("Redis")

    def test_generate_master_refuses_to_overwrite(self, tmp_path: Path) -> None:
        """keys generate-master never replaces an existing key file."""
        path = master_key_file(tmp_path)
        before = path.read_bytes()
        run_cli("keys", "generate-master", "--output", path, cwd=tmp_path).assert_one_error(str(path))
        assert path.read_bytes() == before

    def test_generate_master_into_an_unwritable_place(self, tmp_path: Path) -> None:
        """An output path whose parent is a file is one line, not a traceback."""
        blocker = tmp_path / "file"
        blocker.write_text("x")
        run_cli("keys", "generate-master", "--output", blocker / "master.key", cwd=tmp_path).assert_one_error()

    def test_generate_master_prints_a_usable_key(self, tmp_path: Path) -> None:
        """Without --output the key is printed as one base64 line that config check accepts as a key."""
        printed = run_cli("keys", "generate-master", cwd=tmp_path).assert_ok().stdout.strip()
        assert len(printed) == 44
        assert not printed.startswith("dev:")
        env = {"CARDVAULT_MASTER_KEY": printed}
        run_cli("config", "check", env=env, cwd=tmp_path).assert_ok()
        env = {"CARDVAULT_MASTER_KEY": printed[:-4]}
        done = run_cli("config", "check", env=env, cwd=tmp_path)
        done.assert_one_error("CARDVAULT_MASTER_KEY")
        assert printed[:-4] not in done.stderr
