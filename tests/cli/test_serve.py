"""`cardvault serve` as a real process: the embedded default, TLS, flags, production refusals."""

from __future__ import annotations

import datetime as dt
import os
import signal
import socket
import ssl
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import trustme
import yaml
from cryptography import x509

from service.adapters.keyring import ensure_development_master_key
from service.adapters.redis_base import token_key
from service.tls.certs import generate_self_signed
from tests.conftest import master_key_text
from tests.support.cards import VISA
from tests.support.redis_server import RedisServer, free_port
from tests.support.serve import (
    ServeFactory,
    ServeProcess,
    handshake,
    non_json_lines,
    pid_alive,
    redis_config,
    run_cli,
    tls_client,
    wait_until,
)

pytestmark = pytest.mark.slow

TLS11 = ssl.TLSVersion.TLSv1_1
TLS12 = ssl.TLSVersion.TLSv1_2
TLS13 = ssl.TLSVersion.TLSv1_3


@pytest.fixture
def serve(tmp_path: Path, leak_sources: Any) -> Iterator[ServeFactory]:
    with ServeFactory(tmp_path, leak_sources) as factory:
        yield factory


@pytest.fixture
def lossy_redis(tmp_path: Path, leak_sources: Any) -> Iterator[RedisServer]:
    """A Redis that acknowledges writes before fsyncing them (appendfsync everysec)."""
    server = RedisServer(tmp_path / "lossy-redis", "--appendfsync", "everysec").start()
    leak_sources.redis_servers.append(server)
    assert redis_config(server.client(), "appendfsync") == "everysec"
    yield server
    server.stop()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def warning_problems(process: ServeProcess) -> list[str]:
    return [r.get("problem", "") for r in process.log_records() if r.get("level") == "warning"]


def trustme_pair(directory: Path, *, days: int = 90) -> tuple[Path, Path, Path]:
    """A CA-signed certificate for 127.0.0.1/localhost valid ``days`` days: (cert, key, CA cert)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    now = dt.datetime.now(dt.UTC)
    leaf = ca.issue_cert(
        "127.0.0.1", "localhost", not_before=now - dt.timedelta(hours=1), not_after=now + dt.timedelta(days=days)
    )
    cert, key, ca_file = directory / "cert.pem", directory / "key.pem", directory / "ca.pem"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(ca_file))
    key.chmod(0o600)
    return cert, key, ca_file


def production_master_key(tmp_path: Path) -> Path:
    path = tmp_path / "keys" / "master.key"
    run_cli("keys", "generate-master", "--output", path, cwd=tmp_path).assert_ok()
    return path


class TestEmbeddedDefault:
    def test_first_start_generates_everything_and_serves_https(self, serve: ServeFactory, tmp_path: Path) -> None:
        """An empty data dir gets its own durable Redis, key, certificate and demo agency, and serves HTTPS."""
        data_dir = tmp_path / "var"
        assert not data_dir.exists()
        process = serve(data_dir=data_dir).start()

        assert process.printed_url == process.url
        assert process.keys is not None
        assert process.keys.publishable.startswith("pk_")
        assert process.keys.secret.startswith("sk_")
        for path in (data_dir / "master.key", data_dir / "tls" / "dev-cert.pem", data_dir / "tls" / "dev-key.pem"):
            assert mode(path) == 0o600, path

        socket_path = data_dir / "redis" / "redis.sock"
        assert process.embedded.socket_path == socket_path.resolve()
        client = redis.Redis(unix_socket_path=str(socket_path))
        assert redis_config(client, "appendonly") == "yes"
        assert redis_config(client, "appendfsync") == "always"
        assert redis_config(client, "port") == "0"
        client.close()
        assert process.redis_pid is not None
        assert pid_alive(process.redis_pid)

        token = process.create_token(process.keys.secret)
        read = process.request("GET", f"/v1/tokens/{token['id']}", key=process.keys.secret)
        assert read.status == 200
        assert read.json()["card"]["last4"] == "4242"
        assert VISA not in read.body.decode()

        redis_pid = process.redis_pid
        assert process.stop() == 0
        assert not pid_alive(redis_pid)
        assert not socket_path.exists()
        records = process.log_records()
        assert records, "serve logged nothing on stderr"
        assert not non_json_lines(process.stderr)
        assert {"embedded redis started", "embedded redis stopped"} <= {r.get("event") for r in records}

    def test_second_start_reuses_key_certificate_demo_agency_and_tokens(self, serve: ServeFactory) -> None:
        """A restart on the same data dir keeps the key, certificate, demo keys and the tokens written before."""
        first = serve(name="first").start()
        assert first.keys is not None
        token = first.create_token(first.keys.secret)
        key_bytes = (first.data_dir / "master.key").read_bytes()
        cert_bytes = first.cert_file.read_bytes()
        first.stop()

        second = serve(name="second").start()
        assert second.keys == first.keys
        assert (second.data_dir / "master.key").read_bytes() == key_bytes
        assert second.cert_file.read_bytes() == cert_bytes
        again = second.request("GET", f"/v1/tokens/{token['id']}", key=second.keys.secret)
        assert again.status == 200, again.body
        assert again.json()["card"]["fingerprint"] == token["card"]["fingerprint"]
        listed = run_cli("agency", "list", "--json", "--data-dir", second.data_dir, cwd=second.workdir).assert_ok()
        assert [a["slug"] for a in listed.json()["agencies"]] == ["demo"]
        second.stop()

    def test_python_dash_m_service_serves(self, serve: ServeFactory) -> None:
        """`python -m service serve` starts the same service as the console script."""
        process = serve(module=True).start()
        assert process.keys is not None
        assert process.request("GET", "/readyz").status == 200
        process.stop()

    def test_default_data_dir_is_var_under_the_working_directory(self, serve: ServeFactory, tmp_path: Path) -> None:
        """Without --data-dir or CARDVAULT_DATA_DIR the vault lives in ./var."""
        process = serve(data_dir=tmp_path / "serve" / "var", data_dir_flag=False).start()
        assert (process.workdir / "var" / "master.key").is_file()
        assert (process.workdir / "var" / "redis" / "appendonly.aof").is_file()
        process.stop()

    def test_sigkill_leaves_no_redis_behind_and_a_restart_works(self, serve: ServeFactory) -> None:
        """A serve killed with SIGKILL takes its Redis down too, so the next start is not blocked."""
        first = serve(name="first").start()
        assert first.keys is not None
        token = first.create_token(first.keys.secret)
        redis_pid = first.redis_pid
        assert redis_pid is not None
        assert first.process is not None
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(10)
        assert wait_until(lambda: not pid_alive(redis_pid), 10), "the embedded Redis outlived a killed serve"

        second = serve(name="second").start()
        assert second.token_status(second.keys.secret if second.keys else "", token["id"]) == 200
        second.stop()


class TestStartFailures:
    def test_port_in_use_is_one_error_line_and_stops_redis(self, serve: ServeFactory) -> None:
        """A taken port fails with one Error line (no traceback, no 'listening' banner) and no Redis left."""
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            process = serve(port=port)
            process.spawn()
            assert process.wait_exit() != 0
        assert "Traceback" not in process.stderr
        errors = [line for line in process.stderr.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1, process.describe()
        assert str(port) in errors[0]
        assert "listening" not in process.stdout
        assert not process.embedded.socket_path.exists()

    def test_unreadable_certificate_is_one_error_line(self, serve: ServeFactory, tmp_path: Path) -> None:
        """A --tls-cert that is not a certificate is reported in one line naming the file."""
        bogus = tmp_path / "bogus.pem"
        bogus.write_text("not a certificate\n")
        process = serve("--tls-cert", bogus, "--tls-key", bogus)
        process.spawn()
        assert process.wait_exit() != 0
        assert "Traceback" not in process.stderr, process.describe()
        errors = [line for line in process.stderr.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1, process.describe()
        assert str(bogus) in errors[0]

    def test_cert_without_key_is_refused(self, serve: ServeFactory, tmp_path: Path) -> None:
        """--tls-cert without --tls-key is refused before anything starts."""
        cert, _, _ = trustme_pair(tmp_path / "tls")
        process = serve("--tls-cert", cert)
        process.spawn()
        assert process.wait_exit() != 0
        assert "--tls-key" in process.stderr
        assert not (process.data_dir / "redis").exists()

    def test_wrong_master_key_refuses_to_start(self, serve: ServeFactory, tmp_path: Path) -> None:
        """A master key that did not wrap the stored data stops start-up with a clear message."""
        first = serve(name="first").start()
        first.stop()
        other = production_master_key(tmp_path)
        process = serve(name="second", env={"CARDVAULT_KEYS__MASTER_KEY_FILE": other})
        process.spawn()
        assert process.wait_exit() != 0
        errors = [line for line in process.stderr.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1, process.describe()
        assert "master key" in errors[0]
        assert "previous_master_key_files" in errors[0]
        assert "Traceback" not in process.stderr
        assert not process.embedded.socket_path.exists()


#: How a handshake the server refuses ends on the client: an alert, or the server just closing.
SERVER_REFUSALS = {
    "TLSV1_ALERT_PROTOCOL_VERSION",
    "SSLV3_ALERT_HANDSHAKE_FAILURE",
    "TLSV1_ALERT_INSUFFICIENT_SECURITY",
    "UNEXPECTED_EOF_WHILE_READING",
}


def refused(process: ServeProcess, context: ssl.SSLContext) -> None:
    """The handshake fails because of the server: not because the client could offer nothing."""
    with pytest.raises((ssl.SSLError, ConnectionResetError)) as failure:
        handshake(process.host, process.port, context)
    reason = getattr(failure.value, "reason", "connection reset")
    assert reason in SERVER_REFUSALS | {"connection reset"}, failure.value


@pytest.fixture(scope="class")
def tls_serve(tmp_path_factory: pytest.TempPathFactory, leak_sources: Any) -> Iterator[ServeProcess]:
    """One development serve shared by the handshake tests."""
    directory = tmp_path_factory.mktemp("tls-serve")
    with ServeFactory(directory, leak_sources) as factory:
        process = factory().start()
        yield process
        process.stop()


class TestTlsListener:
    @pytest.mark.parametrize("version", [TLS12, TLS13])
    def test_tls_12_and_13_are_accepted(self, tls_serve: ServeProcess, version: ssl.TLSVersion) -> None:
        """TLS 1.2 and 1.3 clients that verify the generated certificate connect."""
        done = handshake(tls_serve.host, tls_serve.port, tls_client(version, cafile=tls_serve.cert_file), "127.0.0.1")
        assert done.version == {TLS12: "TLSv1.2", TLS13: "TLSv1.3"}[version]

    def test_tls_11_is_refused(self, tls_serve: ServeProcess) -> None:
        """A TLS 1.1 client (one that can offer TLS 1.1 at all) is refused by the server."""
        refused(tls_serve, tls_client(TLS11))

    def test_cipher_outside_mozilla_intermediate_is_refused(self, tls_serve: ServeProcess) -> None:
        """A TLS 1.2 client offering only a CBC suite is refused, while a listed GCM suite is accepted."""
        refused(tls_serve, tls_client(TLS12, ciphers="ECDHE-ECDSA-AES128-SHA256"))
        accepted = handshake(tls_serve.host, tls_serve.port, tls_client(TLS12, ciphers="ECDHE-ECDSA-AES128-GCM-SHA256"))
        assert accepted.cipher == "ECDHE-ECDSA-AES128-GCM-SHA256"

    @pytest.mark.parametrize(("version", "listed"), [(TLS12, "prime256v1"), (TLS13, "X25519")])
    def test_curve_outside_the_list_is_refused(
        self, tls_serve: ServeProcess, version: ssl.TLSVersion, listed: str
    ) -> None:
        """A client restricted to secp521r1 is refused; one restricted to a listed group is accepted."""
        refused(tls_serve, tls_client(version, group="secp521r1"))
        handshake(tls_serve.host, tls_serve.port, tls_client(version, group=listed))

    def test_hsts_on_https_responses(self, tls_serve: ServeProcess) -> None:
        """HTTPS answers, errors included, carry Strict-Transport-Security."""
        for path in ("/healthz", "/v1/tokens/tok_nope"):
            answer = tls_serve.request("GET", path)
            assert answer.headers["Strict-Transport-Security"].startswith("max-age="), path
            assert int(answer.headers["Strict-Transport-Security"].split("=")[1].split(";")[0]) >= 31536000

    def test_generated_certificate_lasts_at_most_366_days(self, tls_serve: ServeProcess) -> None:
        """The certificate on the wire is the generated one, valid for no more than 366 days."""
        served = handshake(tls_serve.host, tls_serve.port, tls_client(TLS13))
        certificate = x509.load_der_x509_certificate(served.peer_der)
        assert certificate == x509.load_pem_x509_certificate(tls_serve.cert_file.read_bytes())
        lifetime = certificate.not_valid_after_utc - certificate.not_valid_before_utc
        assert lifetime <= dt.timedelta(days=366)
        assert certificate.not_valid_before_utc <= dt.datetime.now(dt.UTC) < certificate.not_valid_after_utc


class TestOwnCertificate:
    def test_tls_cert_and_key_flags_serve_that_certificate(self, serve: ServeFactory, tmp_path: Path) -> None:
        """--tls-cert/--tls-key serve a CA-signed certificate, and no development certificate is made."""
        cert, key, ca_file = trustme_pair(tmp_path / "tls")
        process = serve("--tls-cert", cert, "--tls-key", key, ca_file=ca_file).start()
        served = handshake(process.host, process.port, tls_client(TLS13, cafile=ca_file), "127.0.0.1")
        assert x509.load_der_x509_certificate(served.peer_der) == x509.load_pem_x509_certificate(cert.read_bytes())
        assert process.request("GET", "/healthz").status == 200
        with pytest.raises(ssl.SSLCertVerificationError):
            process.request("GET", "/healthz", context=ssl.create_default_context())
        assert not process.cert_file.exists()
        assert not any("self-signed" in p for p in warning_problems(process))
        process.stop()


class TestFlagsAndEnvironment:
    def test_host_flag_binds_only_that_address(self, serve: ServeFactory) -> None:
        """--host 127.0.0.2 listens there and not on 127.0.0.1."""
        process = serve("--host", "127.0.0.2", host="127.0.0.2")
        process.start()
        assert process.printed_url == f"https://127.0.0.2:{process.port}"
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", process.port), timeout=2).close()
        context = ssl.create_default_context(cafile=str(process.cert_file))
        context.check_hostname = False  # the development certificate names 127.0.0.1, not .2
        assert process.request("GET", "/healthz", context=context).status == 200
        process.stop()

    def test_ipv6_host_prints_a_usable_url(self, serve: ServeFactory) -> None:
        """--host ::1 prints https://[::1]:PORT, a URL clients can use, and serves there."""
        process = serve("--host", "::1", host="::1").start()
        assert process.printed_url == f"https://[::1]:{process.port}"
        assert process.request("GET", "/healthz").status == 200
        process.stop()

    def test_data_dir_from_environment(self, serve: ServeFactory, tmp_path: Path) -> None:
        """CARDVAULT_DATA_DIR puts the key, certificate and Redis in that directory."""
        data_dir = tmp_path / "from-env"
        process = serve(data_dir=data_dir, data_dir_flag=False, env={"CARDVAULT_DATA_DIR": data_dir}).start()
        assert (data_dir / "master.key").is_file()
        assert process.cert_file.is_file()
        assert process.redis_pid is not None
        assert not (process.workdir / "var").exists()
        process.stop()

    def test_redis_url_uses_that_redis_and_starts_none(
        self, serve: ServeFactory, redis_server: RedisServer, master_keys: Any
    ) -> None:
        """CARDVAULT_REDIS_URL sends tokens to that Redis and no embedded redis-server is started."""
        process = serve(
            env={"CARDVAULT_REDIS_URL": redis_server.url, "CARDVAULT_MASTER_KEY": master_key_text(master_keys)}
        )
        process.start()
        assert not (process.data_dir / "redis").exists()
        assert process.redis_pid is None
        slug = f"ext-{os.getpid()}-{free_port()}"
        created = (
            run_cli(
                "agency",
                "create",
                slug,
                "--origin",
                "https://shop.example.gov",
                "--data-dir",
                process.data_dir,
                env=process.env,
                cwd=process.workdir,
            )
            .assert_ok()
            .json()
        )
        assert not (process.data_dir / "redis").exists()
        secret = created["secret_key"]
        deadline_ok = wait_until(lambda: process.request("GET", "/v1/tokens/tok_x", key=secret).status == 404, 10)
        assert deadline_ok
        token = process.create_token(secret)
        raw = redis_server.client().get(token_key(created["agency"]["id"], token["id"]))
        assert raw is not None
        assert raw[:1] == b"C"
        process.stop()

    def test_config_file_sets_port_and_data_dir_and_flags_win(self, serve: ServeFactory, tmp_path: Path) -> None:
        """--config FILE supplies data_dir and server.port; a --port flag overrides the file."""
        data_dir = tmp_path / "cfg-data"
        file_port = free_port()
        config = tmp_path / "cardvault.yaml"
        config.write_text(yaml.safe_dump({"data_dir": str(data_dir), "server": {"port": file_port}}))
        from_file = serve(
            "--config", config, name="file", data_dir=data_dir, data_dir_flag=False, port=file_port, port_flag=False
        ).start()
        assert from_file.printed_url == f"https://127.0.0.1:{file_port}"
        assert (data_dir / "master.key").is_file()
        from_file.stop()

        flag_port = free_port()
        with_flag = serve("--config", config, name="flag", data_dir=data_dir, data_dir_flag=False, port=flag_port)
        with_flag.start()
        assert with_flag.printed_url == f"https://127.0.0.1:{flag_port}"
        with_flag.stop()


class TestProductionMode:
    @staticmethod
    def refused(process: ServeProcess) -> str:
        process.spawn()
        assert process.wait_exit() != 0, process.describe()
        assert "Traceback" not in process.stderr, process.describe()
        errors = [line for line in process.stderr.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1, process.describe()
        assert "listening" not in process.stdout
        return errors[0]

    def test_refuses_without_a_master_key(self, serve: ServeFactory, tmp_path: Path) -> None:
        """Production generates no key: without one it names keys.master_key_file and stops."""
        cert, key, _ = trustme_pair(tmp_path / "tls")
        line = self.refused(serve("--tls-cert", cert, "--tls-key", key, env={"CARDVAULT_MODE": "production"}))
        assert "keys.master_key_file" in line
        assert not (tmp_path / "var" / "master.key").exists()

    def test_refuses_the_generated_development_key(self, serve: ServeFactory, tmp_path: Path) -> None:
        """A generated development key is refused even when keys.master_key_file points at it."""
        dev_key = ensure_development_master_key(tmp_path / "old-dev")
        cert, key, _ = trustme_pair(tmp_path / "tls")
        env = {"CARDVAULT_MODE": "production", "CARDVAULT_KEYS__MASTER_KEY_FILE": dev_key}
        line = self.refused(serve("--tls-cert", cert, "--tls-key", key, env=env))
        assert "development key" in line
        assert str(dev_key) in line

    def test_refuses_a_self_signed_certificate(self, serve: ServeFactory, tmp_path: Path) -> None:
        """A self-signed certificate is refused, naming tls.cert_file."""
        cert, key = tmp_path / "self.pem", tmp_path / "self-key.pem"
        generate_self_signed(cert, key)
        env = {"CARDVAULT_MODE": "production", "CARDVAULT_KEYS__MASTER_KEY_FILE": production_master_key(tmp_path)}
        line = self.refused(serve("--tls-cert", cert, "--tls-key", key, env=env))
        assert "tls.cert_file" in line
        assert "self-signed" in line

    def test_refuses_without_any_certificate(self, serve: ServeFactory, tmp_path: Path) -> None:
        """Production never generates a certificate: it names tls.cert_file and stops."""
        env = {"CARDVAULT_MODE": "production", "CARDVAULT_KEYS__MASTER_KEY_FILE": production_master_key(tmp_path)}
        line = self.refused(serve(env=env))
        assert "tls.cert_file" in line
        assert not (tmp_path / "var" / "tls").exists()

    def test_refuses_a_redis_that_can_lose_writes(
        self, serve: ServeFactory, tmp_path: Path, lossy_redis: RedisServer
    ) -> None:
        """A Redis with appendfsync everysec is refused, naming redis.url and the setting."""
        cert, key, _ = trustme_pair(tmp_path / "tls")
        env = {
            "CARDVAULT_MODE": "production",
            "CARDVAULT_KEYS__MASTER_KEY_FILE": production_master_key(tmp_path),
            "CARDVAULT_REDIS_URL": lossy_redis.url,
        }
        line = self.refused(serve("--tls-cert", cert, "--tls-key", key, env=env))
        assert "redis.url" in line
        assert "appendfsync=everysec" in line

    def test_refuses_a_lossy_redis_that_appears_after_start(
        self, serve: ServeFactory, tmp_path: Path, lossy_redis: RedisServer
    ) -> None:
        """A Redis that was down at start and comes back lossy stops the process, as at start."""
        port = lossy_redis.port
        lossy_redis.stop()
        cert, key, _ = trustme_pair(tmp_path / "tls")
        env = {
            "CARDVAULT_MODE": "production",
            "CARDVAULT_KEYS__MASTER_KEY_FILE": production_master_key(tmp_path),
            "CARDVAULT_REDIS_URL": f"redis://127.0.0.1:{port}/0",
        }
        process = serve("--tls-cert", cert, "--tls-key", key, env=env)
        process.spawn()
        time.sleep(2)
        assert process.process is not None
        assert process.process.poll() is None, process.describe()
        lossy_redis.restart_same_port()
        assert process.wait_exit() != 0, process.describe()
        errors = [line for line in process.stderr.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1, process.describe()
        assert "appendfsync=everysec" in errors[0]

    def test_assume_durable_accepts_that_redis(
        self, serve: ServeFactory, tmp_path: Path, lossy_redis: RedisServer
    ) -> None:
        """redis.assume_durable: true is the operator's explicit override of the persistence check."""
        cert, key, ca_file = trustme_pair(tmp_path / "tls")
        env = {
            "CARDVAULT_MODE": "production",
            "CARDVAULT_KEYS__MASTER_KEY_FILE": production_master_key(tmp_path),
            "CARDVAULT_REDIS_URL": lossy_redis.url,
            "CARDVAULT_REDIS__ASSUME_DURABLE": "true",
        }
        process = serve("--tls-cert", cert, "--tls-key", key, env=env, ca_file=ca_file).start()
        assert process.request("GET", "/readyz").status == 200
        process.stop()

    def test_starts_with_real_key_ca_signed_certificate_and_durable_redis(
        self, serve: ServeFactory, tmp_path: Path, fresh_redis: RedisServer
    ) -> None:
        """With a generated master key, a CA-signed certificate and a durable Redis, production serves."""
        cert, key, ca_file = trustme_pair(tmp_path / "tls")
        master = production_master_key(tmp_path)
        assert mode(master) == 0o600
        env: dict[str, str | Path] = {
            "CARDVAULT_MODE": "production",
            "CARDVAULT_KEYS__MASTER_KEY_FILE": master,
            "CARDVAULT_REDIS_URL": fresh_redis.url,
        }
        process = serve("--tls-cert", cert, "--tls-key", key, env=env, ca_file=ca_file).start()
        assert process.printed_url == process.url
        assert process.keys is None, "production must not create a demo agency"
        assert "production" in process.stdout
        assert process.request("GET", "/readyz").status == 200
        assert not warning_problems(process)
        created = (
            run_cli("agency", "create", "parks", "--origin", "https://parks.example.gov", env=env, cwd=process.workdir)
            .assert_ok()
            .json()
        )
        token = process.create_token(created["secret_key"])
        assert wait_until(lambda: process.token_status(created["secret_key"], token["id"]) == 200, 10)
        process.stop()


class TestDevelopmentWarnings:
    def test_development_only_warns_about_key_certificate_and_redis(
        self, serve: ServeFactory, lossy_redis: RedisServer
    ) -> None:
        """Development starts anyway and logs one JSON warning per production-only problem."""
        process = serve(env={"CARDVAULT_REDIS_URL": lossy_redis.url}).start()
        problems = warning_problems(process)
        assert any("development master key" in p for p in problems), problems
        assert any("self-signed" in p for p in problems), problems
        assert any("appendfsync=everysec" in p for p in problems), problems
        assert process.keys is not None
        process.create_token(process.keys.secret)
        process.stop()
        assert not non_json_lines(process.stderr)

    def test_development_warns_about_a_long_lived_certificate(self, serve: ServeFactory, tmp_path: Path) -> None:
        """A certificate valid for more than 366 days is a warning in development."""
        ca = trustme.CA()
        leaf = ca.issue_cert("127.0.0.1", "localhost")  # trustme's default: valid for centuries
        cert, key, ca_file = tmp_path / "c.pem", tmp_path / "k.pem", tmp_path / "ca.pem"
        leaf.cert_chain_pems[0].write_to_path(str(cert))
        leaf.private_key_pem.write_to_path(str(key))
        ca.cert_pem.write_to_path(str(ca_file))
        process = serve("--tls-cert", cert, "--tls-key", key, ca_file=ca_file).start()
        assert any("366 days" in p for p in warning_problems(process)), process.stderr
        process.stop()
