"""`cardvault serve` behind a real nginx: TLS terminated at nginx (with and without mutual TLS) and passed through.

Addresses are told apart on the loopback network: test clients connect from
127.0.0.5 (and 127.0.0.9 when they go around the proxy), nginx connects to the
vault from 127.0.0.2 (``proxy_bind``; the HTTP proxy the vault trusts) or
127.0.0.3 (a second HTTP proxy that sends ``Forwarded``).  The TLS-passthrough
stream proxy binds 127.0.0.4 towards the vault's ordinary port, which does not
trust it (nginx cannot vouch for headers inside TLS it never opened), and 127.0.0.6
towards the vault's PROXY-protocol port (``proxy_protocol on``), which trusts it
to name the client.  What the vault saw is read from its own access log and
warnings (JSON lines on stderr).

Two vaults: "mtls" demands a client certificate (the proxy's) and trusts
127.0.0.2 for X-Forwarded-*; "open" has no mutual TLS, trusts 127.0.0.3 for
``Forwarded``, and has the PROXY-protocol listener for 127.0.0.6.  Certificates
come from four trustme CAs: the vault's, nginx's public edge, the proxy's client
CA, and a stranger's.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import http.client
import os
import secrets
import socket
import ssl
import string
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme

from tests.conftest import master_key_text
from tests.support.nginx import Nginx, nginx_binary, stream_module
from tests.support.redis_server import RedisServer, free_port
from tests.support.serve import IO_TIMEOUT, ServeFactory, ServeProcess, wait_until

pytestmark = pytest.mark.slow

CLIENT = "127.0.0.5"
DIRECT_CLIENT = "127.0.0.9"
X_FORWARDED_PROXY = "127.0.0.2"
FORWARDED_PROXY = "127.0.0.3"
PASSTHROUGH_PROXY = "127.0.0.4"
PROXY_PROTOCOL_PROXY = "127.0.0.6"
REFUSED = "PROXY-protocol connection refused"
INVENTED = "198.51.100.66"
IGNORED = "forwarding headers ignored: peer is not a trusted proxy"
DROPPED = "client-supplied forwarding entries dropped"


def _require(what: str, present: bool) -> None:
    """Skip only on a developer machine without the package; under CI (scripts/test installs it) fail."""
    if present:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} is missing under CI; scripts/test installs it")
    pytest.skip(f"{what} is not installed (scripts/test installs it)")


@dataclass(frozen=True)
class Pair:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Certificates:
    vault_ca: Path
    vault: Pair
    edge_ca: Path
    edge: Pair
    proxy_client_ca: Path
    proxy_client: Pair
    stranger: Pair  # a client certificate from a CA the vault does not know


def _leaf(ca: trustme.CA, directory: Path, name: str, *identities: str) -> Pair:
    now = dt.datetime.now(dt.UTC)
    leaf = ca.issue_cert(*identities, not_before=now - dt.timedelta(hours=1), not_after=now + dt.timedelta(days=30))
    pair = Pair(directory / f"{name}-cert.pem", directory / f"{name}-key.pem")
    leaf.cert_chain_pems[0].write_to_path(str(pair.cert))
    leaf.private_key_pem.write_to_path(str(pair.key))
    pair.key.chmod(0o600)
    return pair


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    directory = tmp_path_factory.mktemp("proxy-certs")
    cas = {name: trustme.CA() for name in ("vault", "edge", "proxy-client", "stranger")}
    for name, ca in cas.items():
        ca.cert_pem.write_to_path(str(directory / f"{name}-ca.pem"))
    return Certificates(
        vault_ca=directory / "vault-ca.pem",
        vault=_leaf(cas["vault"], directory, "vault", "localhost", "127.0.0.1"),
        edge_ca=directory / "edge-ca.pem",
        edge=_leaf(cas["edge"], directory, "edge", "localhost", "127.0.0.1"),
        proxy_client_ca=directory / "proxy-client-ca.pem",
        proxy_client=_leaf(cas["proxy-client"], directory, "proxy-client", "proxy.cardvault.internal"),
        stranger=_leaf(cas["stranger"], directory, "stranger", "stranger.example"),
    )


def client_context(ca: Path, client: Pair | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca))
    if client is not None:
        context.load_cert_chain(str(client.cert), str(client.key))
    return context


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes
    peer_der: bytes | None


def fetch(
    port: int,
    path: str,
    *,
    context: ssl.SSLContext | None,
    source: str = CLIENT,
    headers: Mapping[str, str] | None = None,
    method: str = "GET",
) -> Answer:
    """One request from ``source`` to 127.0.0.1:``port`` (HTTPS when ``context`` is given)."""
    if context is None:
        connection: http.client.HTTPConnection = http.client.HTTPConnection(
            "127.0.0.1", port, timeout=IO_TIMEOUT, source_address=(source, 0)
        )
    else:
        connection = http.client.HTTPSConnection(
            "127.0.0.1", port, context=context, timeout=IO_TIMEOUT, source_address=(source, 0)
        )
    try:
        connection.request(method, path, headers=dict(headers or {}))
        answer = connection.getresponse()
        sock = connection.sock
        der = sock.getpeercert(binary_form=True) if isinstance(sock, ssl.SSLSocket) else None
        return Answer(answer.status, answer.headers, answer.read(), der)
    finally:
        connection.close()


def request_id() -> str:
    """A well-formed X-Request-Id that the vault keeps (letters only: never a card-number lookalike)."""
    return "proxytest-" + "".join(secrets.choice(string.ascii_lowercase) for _ in range(20))


def access_line(vault: ServeProcess, rid: str) -> dict[str, Any]:
    """The vault's access-log line for the request with id ``rid`` (written just after the answer)."""
    found: list[dict[str, Any]] = []

    def logged() -> bool:
        found[:] = [r for r in vault.log_records() if r.get("event") == "request" and r.get("request_id") == rid]
        return bool(found)

    assert wait_until(logged, 5), f"no access-log line for {rid}\n{vault.describe()}"
    return found[0]


def warnings_named(vault: ServeProcess, event: str) -> list[dict[str, Any]]:
    return [r for r in vault.log_records() if r.get("event") == event]


def der_of(pem: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(pem.read_text())


@pytest.fixture(scope="module")
def vaults(
    tmp_path_factory: pytest.TempPathFactory,
    certs: Certificates,
    redis_server: RedisServer,
    master_keys: Any,
    leak_sources: Any,
) -> Iterator[dict[str, ServeProcess]]:
    """ "mtls" and "open" (see the module docstring); "open" listens for PROXY protocol on ``proxy_protocol_port``."""
    _require("nginx (Debian package nginx)", nginx_binary() is not None)
    workdir = tmp_path_factory.mktemp("proxy-vaults")
    common = {"CARDVAULT_REDIS_URL": redis_server.url, "CARDVAULT_MASTER_KEY": master_key_text(master_keys)}
    tls_flags = ("--tls-cert", certs.vault.cert, "--tls-key", certs.vault.key)
    with ServeFactory(workdir, leak_sources) as factory:
        mtls = factory(
            *tls_flags,
            name="mtls",
            data_dir=workdir / "mtls-var",
            ca_file=certs.vault_ca,
            env={
                **common,
                "CARDVAULT_PROXY__TRUSTED": X_FORWARDED_PROXY,
                "CARDVAULT_TLS__CLIENT_CA_FILE": certs.proxy_client_ca,
            },
            health_context=client_context(certs.vault_ca, certs.proxy_client),
        )
        open_ = factory(
            *tls_flags,
            name="open",
            data_dir=workdir / "open-var",
            ca_file=certs.vault_ca,
            env={
                **common,
                "CARDVAULT_PROXY__TRUSTED": FORWARDED_PROXY,
                "CARDVAULT_PROXY__HEADERS": "forwarded",
                "CARDVAULT_PROXY__PROXY_PROTOCOL_PORT": str(free_port()),
                "CARDVAULT_PROXY__PROXY_PROTOCOL_TRUSTED": PROXY_PROTOCOL_PROXY,
            },
        )
        with ThreadPoolExecutor(2) as pool:  # two starts (and stops) side by side: half the wait
            list(pool.map(ServeProcess.start, (mtls, open_)))
            yield {"mtls": mtls, "open": open_}
            list(pool.map(ServeProcess.stop, (mtls, open_)))


def proxy_protocol_port(vaults: dict[str, ServeProcess]) -> int:
    return int(vaults["open"].env["CARDVAULT_PROXY__PROXY_PROTOCOL_PORT"])


@dataclass(frozen=True)
class Fronts:
    tls: int  # TLS terminated here, to the mTLS vault (X-Forwarded-*), nginx presenting its client certificate
    plain: int  # plain HTTP here, to the same vault
    no_client_cert: int  # TLS terminated here, to the mTLS vault without a client certificate
    forwarded: int  # TLS terminated here, to the open vault with Forwarded
    passthrough: int  # the stream module: TLS goes through untouched to the open vault
    proxy_protocol: int  # the same, prefixed with a PROXY protocol header, to the open vault's PROXY port


def _proxy_to(port: int, *, bind: str, certs: Certificates, client_cert: bool, headers: str) -> str:
    lines = [
        f"proxy_pass https://127.0.0.1:{port};",
        f"proxy_bind {bind};",
        "proxy_ssl_verify on;",
        f"proxy_ssl_trusted_certificate {certs.vault_ca};",
        "proxy_ssl_name localhost;",
        "proxy_ssl_server_name on;",
        "proxy_set_header Host $host;",
        headers,
    ]
    if not client_cert:
        # nginx shares one TLS session cache per upstream address: without this it would resume the session the
        # other server blocks authenticated with the client certificate (legitimately: it holds that session).
        lines.append("proxy_ssl_session_reuse off;")
    if client_cert:
        lines += [
            f"proxy_ssl_certificate {certs.proxy_client.cert};",
            f"proxy_ssl_certificate_key {certs.proxy_client.key};",
        ]
    return "location / { " + " ".join(lines) + " }"


X_FORWARDED = "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; proxy_set_header X-Forwarded-Proto $scheme;"
FORWARDED = 'proxy_set_header Forwarded "for=\\"$remote_addr\\";proto=$scheme";'


@pytest.fixture(scope="module")
def fronts(
    tmp_path_factory: pytest.TempPathFactory, certs: Certificates, vaults: dict[str, ServeProcess], leak_sources: Any
) -> Iterator[Fronts]:
    _require("the nginx stream module (Debian package libnginx-mod-stream)", stream_module() is not None)
    mtls, open_ = vaults["mtls"].port, vaults["open"].port
    edge = f"ssl_certificate {certs.edge.cert}; ssl_certificate_key {certs.edge.key};"
    for attempt in range(3):
        ports = Fronts(*(free_port() for _ in range(6)))
        http_block = "\n".join(
            [
                f"server {{ listen 127.0.0.1:{ports.tls} ssl; {edge} "
                + _proxy_to(mtls, bind=X_FORWARDED_PROXY, certs=certs, client_cert=True, headers=X_FORWARDED)
                + " }",
                f"server {{ listen 127.0.0.1:{ports.plain}; "
                + _proxy_to(mtls, bind=X_FORWARDED_PROXY, certs=certs, client_cert=True, headers=X_FORWARDED)
                + " }",
                f"server {{ listen 127.0.0.1:{ports.no_client_cert} ssl; {edge} "
                + _proxy_to(mtls, bind=X_FORWARDED_PROXY, certs=certs, client_cert=False, headers=X_FORWARDED)
                + " }",
                f"server {{ listen 127.0.0.1:{ports.forwarded} ssl; {edge} "
                + _proxy_to(open_, bind=FORWARDED_PROXY, certs=certs, client_cert=False, headers=FORWARDED)
                + " }",
            ]
        )
        stream_block = (
            f"server {{ listen 127.0.0.1:{ports.passthrough}; proxy_pass 127.0.0.1:{open_}; "
            f"proxy_bind {PASSTHROUGH_PROXY}; }}\n"
            f"server {{ listen 127.0.0.1:{ports.proxy_protocol}; proxy_pass 127.0.0.1:{proxy_protocol_port(vaults)}; "
            f"proxy_bind {PROXY_PROTOCOL_PROXY}; proxy_protocol on; }}"
        )
        listens = [("127.0.0.1", port) for port in vars(ports).values()]
        nginx = Nginx(
            tmp_path_factory.mktemp("nginx"), http_block=http_block, stream_block=stream_block, listens=listens
        )
        try:
            nginx.start()
        except AssertionError:
            if attempt < 2 and "Address already in use" in nginx.errors():
                continue
            raise
        leak_sources.log_files += [nginx.access_log, nginx.error_log]  # scanned for card data at the end
        try:
            yield ports
        finally:
            nginx.stop()
        return


class TestTlsTerminatedAtNginx:
    def test_the_vault_sees_the_client_address_and_https(
        self, fronts: Fronts, vaults: dict[str, ServeProcess], certs: Certificates
    ) -> None:
        """Through nginx (TLS, mTLS upstream) the access log shows the client's address and https."""
        rid = request_id()
        answer = fetch(fronts.tls, "/healthz", context=client_context(certs.edge_ca), headers={"X-Request-Id": rid})
        assert answer.status == 200
        assert answer.peer_der == der_of(certs.edge.cert)  # the client's TLS ended at nginx
        line = access_line(vaults["mtls"], rid)
        assert (line["remote"], line["scheme"]) == (CLIENT, "https")

    def test_the_scheme_is_the_clients_not_the_upstream_connections(
        self, fronts: Fronts, vaults: dict[str, ServeProcess]
    ) -> None:
        """Plain HTTP to nginx is logged as http although nginx reached the vault over TLS."""
        rid = request_id()
        assert fetch(fronts.plain, "/healthz", context=None, headers={"X-Request-Id": rid}).status == 200
        line = access_line(vaults["mtls"], rid)
        assert (line["remote"], line["scheme"]) == (CLIENT, "http")

    def test_a_spoofed_chain_yields_the_address_nginx_saw(
        self, fronts: Fronts, vaults: dict[str, ServeProcess], certs: Certificates
    ) -> None:
        """The client's own X-Forwarded-For (appended to by nginx) is dropped and logged, never believed."""
        rid = request_id()
        spoof = {"X-Request-Id": rid, "X-Forwarded-For": INVENTED, "X-Forwarded-Proto": "http"}
        assert fetch(fronts.tls, "/healthz", context=client_context(certs.edge_ca), headers=spoof).status == 200
        line = access_line(vaults["mtls"], rid)
        assert (line["remote"], line["scheme"]) == (CLIENT, "https")
        [dropped] = [w for w in warnings_named(vaults["mtls"], DROPPED) if w.get("request_id") == rid]
        assert (dropped["peer"], dropped["dropped"]) == (X_FORWARDED_PROXY, 1)
        assert INVENTED not in vaults["mtls"].stderr

    def test_forwarded_header_from_nginx(
        self, fronts: Fronts, vaults: dict[str, ServeProcess], certs: Certificates
    ) -> None:
        """nginx can send RFC 7239 Forwarded instead: the vault configured for it reads the client from it."""
        rid = request_id()
        answer = fetch(
            fronts.forwarded, "/healthz", context=client_context(certs.edge_ca), headers={"X-Request-Id": rid}
        )
        assert answer.status == 200
        line = access_line(vaults["open"], rid)
        assert (line["remote"], line["scheme"]) == (CLIENT, "https")


class TestMutualTls:
    def test_nginx_without_its_client_certificate_is_refused_at_the_handshake(
        self, fronts: Fronts, vaults: dict[str, ServeProcess], certs: Certificates
    ) -> None:
        """An upstream without a client certificate never gets a request through: nginx answers 502."""
        rid = request_id()
        answer = fetch(
            fronts.no_client_cert, "/healthz", context=client_context(certs.edge_ca), headers={"X-Request-Id": rid}
        )
        assert answer.status == 502
        assert not [r for r in vaults["mtls"].log_records() if r.get("request_id") == rid]

    @pytest.mark.parametrize("client", [None, "stranger"])
    def test_a_direct_connection_without_the_proxys_certificate_fails_the_handshake(
        self, vaults: dict[str, ServeProcess], certs: Certificates, client: str | None
    ) -> None:
        """No certificate, or one from another CA: the TLS handshake itself fails, before any HTTP."""
        context = client_context(certs.vault_ca, certs.stranger if client else None)
        rid = request_id()
        with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
            fetch(vaults["mtls"].port, "/healthz", context=context, source=DIRECT_CLIENT, headers={"X-Request-Id": rid})
        assert not [r for r in vaults["mtls"].log_records() if r.get("request_id") == rid]

    def test_spoofed_headers_straight_to_the_vault_are_ignored_and_logged(
        self, vaults: dict[str, ServeProcess], certs: Certificates
    ) -> None:
        """Even holding the proxy's certificate, a peer outside proxy.trusted cannot set the client address."""
        vault = vaults["mtls"]
        rid = request_id()
        spoof = {
            "X-Request-Id": rid,
            "X-Forwarded-For": INVENTED,
            "X-Forwarded-Proto": "http",
            "Forwarded": f"for={INVENTED}",
        }
        context = client_context(certs.vault_ca, certs.proxy_client)
        assert fetch(vault.port, "/healthz", context=context, source=DIRECT_CLIENT, headers=spoof).status == 200
        line = access_line(vault, rid)
        assert (line["remote"], line["scheme"]) == (DIRECT_CLIENT, "https")
        ignored = warnings_named(vault, IGNORED)
        assert any(w["peer"] == DIRECT_CLIENT for w in ignored), vault.describe()
        assert INVENTED not in vault.stderr


class TestTlsPassedThrough:
    def test_the_handshake_is_the_vaults_own(
        self, fronts: Fronts, vaults: dict[str, ServeProcess], certs: Certificates
    ) -> None:
        """Through the stream proxy the client verifies the vault's certificate; nginx's edge one is not involved."""
        rid = request_id()
        answer = fetch(
            fronts.passthrough, "/healthz", context=client_context(certs.vault_ca), headers={"X-Request-Id": rid}
        )
        assert answer.status == 200
        assert answer.peer_der == der_of(certs.vault.cert)
        assert answer.peer_der != der_of(certs.edge.cert)

    def test_without_proxy_protocol_the_vault_sees_the_stream_proxys_address(
        self, fronts: Fronts, vaults: dict[str, ServeProcess], certs: Certificates
    ) -> None:
        """API answers come back intact; on the ordinary port the vault sees nginx's address (README says why)."""
        rid = request_id()
        answer = fetch(
            fronts.passthrough,
            "/v1/tokens/tok_missing",
            context=client_context(certs.vault_ca),
            headers={"X-Request-Id": rid, "X-Forwarded-For": INVENTED},
        )
        assert answer.status == 401
        assert answer.headers["Content-Type"].startswith("application/problem+json")
        line = access_line(vaults["open"], rid)
        assert (line["remote"], line["scheme"]) == (PASSTHROUGH_PROXY, "https")
        assert any(w["peer"] == PASSTHROUGH_PROXY for w in warnings_named(vaults["open"], IGNORED))

    def test_a_wrong_sni_name_still_reaches_only_the_vaults_certificate(
        self, fronts: Fronts, certs: Certificates
    ) -> None:
        """The stream proxy does not terminate anything: a client trusting only the edge CA fails to verify."""
        with pytest.raises(ssl.SSLCertVerificationError):
            fetch(fronts.passthrough, "/healthz", context=client_context(certs.edge_ca))


class TestPassedThroughWithProxyProtocol:
    def test_the_vault_sees_the_client_over_its_own_tls(
        self, fronts: Fronts, vaults: dict[str, ServeProcess], certs: Certificates
    ) -> None:
        """nginx's PROXY header names the client: the access log has it, and the certificate is the vault's."""
        rid = request_id()
        answer = fetch(
            fronts.proxy_protocol, "/healthz", context=client_context(certs.vault_ca), headers={"X-Request-Id": rid}
        )
        assert answer.status == 200
        assert answer.peer_der == der_of(certs.vault.cert)
        line = access_line(vaults["open"], rid)
        assert (line["remote"], line["scheme"]) == (CLIENT, "https")

    def test_forwarding_headers_inside_are_ignored(
        self, fronts: Fronts, vaults: dict[str, ServeProcess], certs: Certificates
    ) -> None:
        """A client's own X-Forwarded-For inside passed-through TLS changes nothing; it is logged with its address."""
        rid = request_id()
        answer = fetch(
            fronts.proxy_protocol,
            "/v1/tokens/tok_missing",
            context=client_context(certs.vault_ca),
            headers={"X-Request-Id": rid, "X-Forwarded-For": INVENTED, "Forwarded": f"for={INVENTED}"},
        )
        assert answer.status == 401
        line = access_line(vaults["open"], rid)
        assert line["remote"] == CLIENT
        assert INVENTED not in vaults["open"].stderr

    def test_a_forged_header_from_anyone_else_is_refused(
        self, vaults: dict[str, ServeProcess], certs: Certificates
    ) -> None:
        """Straight to the PROXY port from a peer not in proxy_protocol_trusted: disconnected, logged."""
        vault = vaults["open"]
        with socket.create_connection(
            ("127.0.0.1", proxy_protocol_port(vaults)), timeout=IO_TIMEOUT, source_address=(DIRECT_CLIENT, 0)
        ) as raw:
            raw.sendall(f"PROXY TCP4 {INVENTED} 127.0.0.1 4000 443\r\n".encode())
            with contextlib.suppress(ConnectionResetError):
                assert raw.recv(1) == b""

        def refused() -> bool:
            return any(w.get("peer") == DIRECT_CLIENT for w in warnings_named(vault, REFUSED))

        assert wait_until(refused, 5), vault.describe()


def test_a_taken_proxy_protocol_port_is_one_error_line(
    tmp_path: Path, redis_server: RedisServer, master_keys: Any, leak_sources: Any
) -> None:
    """serve stops with one line naming proxy.proxy_protocol_port when that port is taken."""
    with socket.socket() as taken, ServeFactory(tmp_path, leak_sources) as factory:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = factory(
            env={
                "CARDVAULT_REDIS_URL": redis_server.url,
                "CARDVAULT_MASTER_KEY": master_key_text(master_keys),
                "CARDVAULT_PROXY__PROXY_PROTOCOL_PORT": str(port),
                "CARDVAULT_PROXY__PROXY_PROTOCOL_TRUSTED": PROXY_PROTOCOL_PROXY,
            }
        )
        process.spawn()
        assert process.wait_exit() == 1, process.describe()
        errors = [line for line in process.stderr.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1, process.describe()
        assert f"port {port}" in errors[0]
        assert "(proxy.proxy_protocol_port)" in errors[0]
        assert "Traceback" not in process.stderr
