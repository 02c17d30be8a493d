"""Handshake tests proving that ``server_context`` negotiates exactly Mozilla's intermediate profile."""

from __future__ import annotations

import _ssl
import ctypes
import importlib.resources
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dh

from service.tls import TlsConfigError
from service.tls.certs import generate_self_signed
from service.tls.mozilla import (
    HSTS_HEADER_VALUE,
    INTERMEDIATE_CIPHERS,
    INTERMEDIATE_GROUPS,
    server_context,
    set_key_exchange_groups,
)

from . import (
    SERVER_KEY_EXCHANGE,
    LoopbackTlsServer,
    client_context,
    connect,
    dhe_prime,
    ecdhe_named_curve,
    permissive_server_context,
    rfc7919_ffdhe2048_prime,
    server_handshake_messages,
)

TLS12 = ssl.TLSVersion.TLSv1_2
TLS13 = ssl.TLSVersion.TLSv1_3
LISTED = INTERMEDIATE_CIPHERS.split(":")
ECDSA_SUITES = [name for name in LISTED if "ECDSA" in name]
RSA_SUITES = [name for name in LISTED if "-RSA-" in name]
TLS13_DEFAULT_SUITES = {"TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256", "TLS_AES_128_GCM_SHA256"}
# IANA TLS Supported Groups ids, as they appear in a TLS 1.2 ServerKeyExchange.
LISTED_GROUP_IDS = {"X25519": 29, "prime256v1": 23, "secp384r1": 24}
UNLISTED_TLS12_GROUPS = ["secp521r1", "X448"]
UNLISTED_TLS13_GROUPS = ["secp521r1", "X448", "ffdhe2048"]

CertPair = tuple[Path, Path]


@pytest.fixture(scope="module")
def ecdsa_pair(tmp_path_factory: pytest.TempPathFactory) -> CertPair:
    directory = tmp_path_factory.mktemp("ecdsa")
    generate_self_signed(directory / "cert.pem", directory / "key.pem")
    return directory / "cert.pem", directory / "key.pem"


@pytest.fixture(scope="module")
def rsa_pair(tmp_path_factory: pytest.TempPathFactory) -> CertPair:
    directory = tmp_path_factory.mktemp("rsa")
    leaf = trustme.CA(key_type=trustme.KeyType.RSA).issue_cert("localhost", key_type=trustme.KeyType.RSA)
    leaf.cert_chain_pems[0].write_to_path(str(directory / "cert.pem"))
    leaf.private_key_pem.write_to_path(str(directory / "key.pem"))
    return directory / "cert.pem", directory / "key.pem"


@pytest.fixture
def ecdsa_server(ecdsa_pair: CertPair) -> Iterator[LoopbackTlsServer]:
    with LoopbackTlsServer(server_context(*ecdsa_pair)) as server:
        yield server


@pytest.fixture
def rsa_server(rsa_pair: CertPair) -> Iterator[LoopbackTlsServer]:
    with LoopbackTlsServer(server_context(*rsa_pair)) as server:
        yield server


@pytest.fixture
def permissive_rsa_server(rsa_pair: CertPair) -> Iterator[LoopbackTlsServer]:
    with LoopbackTlsServer(permissive_server_context(*rsa_pair)) as server:
        yield server


@pytest.fixture
def permissive_ecdsa_server(ecdsa_pair: CertPair) -> Iterator[LoopbackTlsServer]:
    with LoopbackTlsServer(permissive_server_context(*ecdsa_pair)) as server:
        yield server


def assert_refused(server: LoopbackTlsServer, client: ssl.SSLContext, reason: str) -> None:
    """The handshake fails on the client, and the server reports OpenSSL's ``reason`` for refusing it."""
    with pytest.raises(ssl.SSLError):
        connect(server.address, client)
    assert server.next_outcome().reason == reason


class TestProtocolVersions:
    @pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
    def test_legacy_versions_are_refused(self, ecdsa_server: LoopbackTlsServer, version: ssl.TLSVersion) -> None:
        """A client limited to TLS 1.0 or 1.1 is refused with a protocol-version error."""
        assert_refused(ecdsa_server, client_context(version), "UNSUPPORTED_PROTOCOL")

    @pytest.mark.parametrize(("version", "name"), [(TLS12, "TLSv1.2"), (TLS13, "TLSv1.3")])
    def test_current_versions_are_accepted(
        self, ecdsa_server: LoopbackTlsServer, version: ssl.TLSVersion, name: str
    ) -> None:
        """A client limited to TLS 1.2 or 1.3 completes the handshake with that version."""
        assert connect(ecdsa_server.address, client_context(version)).version == name
        assert ecdsa_server.next_outcome().version == name

    def test_context_pins_the_version_range(self, ecdsa_pair: CertPair) -> None:
        """The context itself declares TLS 1.2 as minimum and TLS 1.3 as maximum."""
        context = server_context(*ecdsa_pair)
        assert (context.minimum_version, context.maximum_version) == (TLS12, TLS13)


class TestCipherSuites:
    def test_tls12_cipher_list_is_exactly_mozillas(self, ecdsa_pair: CertPair) -> None:
        """The enabled TLS 1.2 suites are Mozilla's nine, in order, and TLS 1.3 keeps OpenSSL's three."""
        ciphers = server_context(*ecdsa_pair).get_ciphers()
        assert [c["name"] for c in ciphers if c["protocol"] == "TLSv1.2"] == LISTED
        assert {c["name"] for c in ciphers if c["protocol"] == "TLSv1.3"} == TLS13_DEFAULT_SUITES
        assert len(ciphers) == len(LISTED) + len(TLS13_DEFAULT_SUITES)

    @pytest.mark.parametrize("cipher", ECDSA_SUITES)
    def test_listed_ecdsa_suites_negotiate(self, ecdsa_server: LoopbackTlsServer, cipher: str) -> None:
        """Each listed ECDHE-ECDSA suite is negotiated with a client offering only that suite."""
        assert connect(ecdsa_server.address, client_context(TLS12, ciphers=cipher)).cipher == cipher

    @pytest.mark.parametrize("cipher", RSA_SUITES)
    def test_listed_rsa_suites_negotiate(self, rsa_server: LoopbackTlsServer, cipher: str) -> None:
        """Each listed ECDHE-RSA and DHE-RSA suite is negotiated with an RSA certificate."""
        assert connect(rsa_server.address, client_context(TLS12, ciphers=cipher)).cipher == cipher

    @pytest.mark.parametrize(
        "cipher", ["AES128-SHA", "ECDHE-RSA-AES128-SHA256", "ECDHE-RSA-AES128-SHA", "DHE-RSA-AES128-SHA256"]
    )
    def test_unlisted_rsa_suites_are_refused(
        self, rsa_server: LoopbackTlsServer, permissive_rsa_server: LoopbackTlsServer, cipher: str
    ) -> None:
        """A TLS 1.2 client offering only an unlisted suite is refused; a permissive server takes it."""
        client = client_context(TLS12, ciphers=cipher)
        assert connect(permissive_rsa_server.address, client).cipher == cipher
        assert_refused(rsa_server, client, "NO_SHARED_CIPHER")

    @pytest.mark.parametrize("cipher", ["ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA384"])
    def test_unlisted_ecdsa_suites_are_refused(
        self, ecdsa_server: LoopbackTlsServer, permissive_ecdsa_server: LoopbackTlsServer, cipher: str
    ) -> None:
        """A TLS 1.2 client offering only an unlisted ECDSA suite is refused by the ECDSA server."""
        client = client_context(TLS12, ciphers=cipher)
        assert connect(permissive_ecdsa_server.address, client).cipher == cipher
        assert_refused(ecdsa_server, client, "NO_SHARED_CIPHER")

    def test_tls13_uses_openssl_default_suites(self, ecdsa_server: LoopbackTlsServer) -> None:
        """A TLS 1.3 handshake uses one of OpenSSL's default TLS 1.3 suites."""
        assert connect(ecdsa_server.address, client_context(TLS13)).cipher in TLS13_DEFAULT_SUITES

    @pytest.mark.parametrize(
        "preferred",
        ["ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-ECDSA-AES256-GCM-SHA384"],
        ids=["chacha", "aes256"],
    )
    def test_client_cipher_order_wins(self, ecdsa_server: LoopbackTlsServer, preferred: str) -> None:
        """The server honours the client's preferred suite rather than its own first choice."""
        client = client_context(TLS12, ciphers=f"{preferred}:ECDHE-ECDSA-AES128-GCM-SHA256")
        assert connect(ecdsa_server.address, client).cipher == preferred


class TestKeyExchangeGroups:
    @pytest.mark.parametrize("group", sorted(LISTED_GROUP_IDS))
    def test_tls12_listed_group_is_used(self, rsa_server: LoopbackTlsServer, group: str) -> None:
        """A TLS 1.2 ECDHE client restricted to a listed group gets a ServerKeyExchange on that group."""
        client = client_context(TLS12, ciphers="ECDHE-RSA-AES128-GCM-SHA256", group=group)
        messages = server_handshake_messages(rsa_server.address, client)
        assert ecdhe_named_curve(messages[SERVER_KEY_EXCHANGE]) == LISTED_GROUP_IDS[group]

    @pytest.mark.parametrize("group", sorted(LISTED_GROUP_IDS))
    def test_tls13_listed_group_is_accepted(self, ecdsa_server: LoopbackTlsServer, group: str) -> None:
        """A TLS 1.3 client offering a key share on only one listed group completes the handshake."""
        assert connect(ecdsa_server.address, client_context(TLS13, group=group)).version == "TLSv1.3"

    @pytest.mark.parametrize("group", UNLISTED_TLS12_GROUPS)
    def test_tls12_unlisted_group_is_refused(
        self, rsa_server: LoopbackTlsServer, permissive_rsa_server: LoopbackTlsServer, group: str
    ) -> None:
        """A TLS 1.2 ECDHE client limited to an unlisted group is refused; a permissive server takes it."""
        client = client_context(TLS12, ciphers="ECDHE-RSA-AES128-GCM-SHA256", group=group)
        assert connect(permissive_rsa_server.address, client).version == "TLSv1.2"
        assert_refused(rsa_server, client, "NO_SHARED_CIPHER")

    @pytest.mark.parametrize("group", UNLISTED_TLS13_GROUPS)
    def test_tls13_unlisted_group_is_refused(
        self, ecdsa_server: LoopbackTlsServer, permissive_ecdsa_server: LoopbackTlsServer, group: str
    ) -> None:
        """A TLS 1.3 client restricted to an unlisted group is refused; a permissive server takes it."""
        client = client_context(TLS13, group=group)
        assert connect(permissive_ecdsa_server.address, client).version == "TLSv1.3"
        assert_refused(ecdsa_server, client, "NO_SUITABLE_KEY_SHARE")

    def test_ctypes_reach_the_libssl_of_the_ssl_module(self) -> None:
        """The OpenSSL reached through ``_ssl``'s shared object reports the ssl module's own version."""
        version = ctypes.CDLL(_ssl.__file__)["OpenSSL_version"]
        version.argtypes = [ctypes.c_int]
        version.restype = ctypes.c_char_p
        assert version(0) == ssl.OPENSSL_VERSION.encode()

    def test_unknown_group_raises_and_leaves_openssl_clean(self) -> None:
        """An unknown group name raises TlsConfigError and leaves no stale error on OpenSSL's queue."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        with pytest.raises(TlsConfigError, match="P-999"):
            set_key_exchange_groups(context, f"{INTERMEDIATE_GROUPS}:P-999")
        peek = ctypes.CDLL(_ssl.__file__)["ERR_peek_error"]
        peek.restype = ctypes.c_ulong
        assert peek() == 0


class TestDiffieHellman:
    def test_shipped_parameters_are_rfc7919_ffdhe2048(self) -> None:
        """The packaged PEM holds DH parameters whose prime is RFC 7919's ffdhe2048 and generator 2."""
        pem = importlib.resources.files("service.tls").joinpath("ffdhe2048.pem").read_bytes()
        assert pem.startswith(b"-----BEGIN DH PARAMETERS-----\n")
        parameters = serialization.load_pem_parameters(pem)
        assert isinstance(parameters, dh.DHParameters)
        numbers = parameters.parameter_numbers()
        assert (numbers.p, numbers.g) == (rfc7919_ffdhe2048_prime(), 2)

    def test_dhe_handshake_uses_the_ffdhe2048_prime(self, rsa_server: LoopbackTlsServer) -> None:
        """A DHE-RSA-AES128-GCM-SHA256 handshake sends the 2048-bit ffdhe2048 prime in ServerKeyExchange."""
        client = client_context(TLS12, ciphers="DHE-RSA-AES128-GCM-SHA256")
        prime = dhe_prime(server_handshake_messages(rsa_server.address, client)[SERVER_KEY_EXCHANGE])
        assert prime.bit_length() == 2048
        assert prime == rfc7919_ffdhe2048_prime()


class TestSessionsAndOptions:
    def test_tls12_sessions_carry_no_ticket(
        self, ecdsa_server: LoopbackTlsServer, permissive_ecdsa_server: LoopbackTlsServer
    ) -> None:
        """A TLS 1.2 client gets no session ticket, though the same client gets one from a default server."""
        sessions = [connect(s.address, client_context(TLS12)).session for s in (permissive_ecdsa_server, ecdsa_server)]
        assert [session.has_ticket if session else None for session in sessions] == [True, False]

    def test_no_compression(self, ecdsa_server: LoopbackTlsServer) -> None:
        """Handshakes never negotiate TLS compression."""
        assert connect(ecdsa_server.address, client_context(TLS12)).compression is None

    def test_options_follow_mozilla(self, ecdsa_pair: CertPair) -> None:
        """Server cipher preference is off; tickets, compression and renegotiation are disabled."""
        options = server_context(*ecdsa_pair).options
        assert not options & ssl.OP_CIPHER_SERVER_PREFERENCE
        assert options & ssl.OP_NO_TICKET
        assert options & ssl.OP_NO_COMPRESSION
        assert options & ssl.OP_NO_RENEGOTIATION

    def test_hsts_lasts_two_years(self) -> None:
        """The HSTS header value is Mozilla's two years, in seconds."""
        two_years = 2 * 365 * 24 * 60 * 60
        assert HSTS_HEADER_VALUE.split("=") == ["max-age", str(two_years)]


class TestClientCertificates:
    @pytest.fixture
    def client_ca(self) -> trustme.CA:
        return trustme.CA()

    @pytest.fixture
    def mutual_server(self, ecdsa_pair: CertPair, client_ca: trustme.CA, tmp_path: Path) -> Iterator[LoopbackTlsServer]:
        client_ca.cert_pem.write_to_path(str(tmp_path / "client-ca.pem"))
        context = server_context(*ecdsa_pair, client_ca_file=tmp_path / "client-ca.pem")
        with LoopbackTlsServer(context) as server:
            yield server

    @pytest.mark.parametrize("version", [TLS12, TLS13])
    def test_client_signed_by_the_ca_is_accepted(
        self, mutual_server: LoopbackTlsServer, client_ca: trustme.CA, version: ssl.TLSVersion
    ) -> None:
        """A client presenting a certificate issued by the configured CA completes the handshake."""
        client = client_context(version)
        client_ca.issue_cert("proxy.cardvault.test").configure_cert(client)
        connect(mutual_server.address, client)
        assert mutual_server.next_outcome().error is None

    @pytest.mark.parametrize("version", [TLS12, TLS13])
    def test_client_without_certificate_is_refused(
        self, mutual_server: LoopbackTlsServer, version: ssl.TLSVersion
    ) -> None:
        """A client presenting no certificate is refused."""
        assert_refused(mutual_server, client_context(version), "PEER_DID_NOT_RETURN_A_CERTIFICATE")

    @pytest.mark.parametrize("version", [TLS12, TLS13])
    def test_client_signed_by_another_ca_is_refused(
        self, mutual_server: LoopbackTlsServer, version: ssl.TLSVersion
    ) -> None:
        """A client presenting a certificate from a different CA is refused."""
        client = client_context(version)
        trustme.CA().issue_cert("proxy.cardvault.test").configure_cert(client)
        assert_refused(mutual_server, client, "CERTIFICATE_VERIFY_FAILED")


class TestConfigurationErrors:
    def test_missing_certificate_is_named(self, ecdsa_pair: CertPair, tmp_path: Path) -> None:
        """A missing certificate file raises TlsConfigError naming that file on one line."""
        missing = tmp_path / "missing.pem"
        with pytest.raises(TlsConfigError) as caught:
            server_context(missing, ecdsa_pair[1])
        assert str(missing) in str(caught.value)
        assert "\n" not in str(caught.value)

    @pytest.mark.parametrize("other_key", ["ecdsa", "rsa"], ids=["same-type", "other-type"])
    def test_mismatched_key_is_named(
        self, ecdsa_pair: CertPair, rsa_pair: CertPair, tmp_path: Path, other_key: str
    ) -> None:
        """A key that does not belong to the certificate raises TlsConfigError naming both files."""
        key_file = rsa_pair[1]
        if other_key == "ecdsa":
            generate_self_signed(tmp_path / "other-cert.pem", tmp_path / "other-key.pem")
            key_file = tmp_path / "other-key.pem"
        with pytest.raises(TlsConfigError, match="does not belong to the certificate") as caught:
            server_context(ecdsa_pair[0], key_file)
        assert str(ecdsa_pair[0]) in str(caught.value)
        assert str(key_file) in str(caught.value)

    def test_missing_client_ca_is_named(self, ecdsa_pair: CertPair, tmp_path: Path) -> None:
        """A missing client CA file raises TlsConfigError naming that file."""
        missing = tmp_path / "ca.pem"
        with pytest.raises(TlsConfigError, match="client CA") as caught:
            server_context(*ecdsa_pair, client_ca_file=missing)
        assert str(missing) in str(caught.value)
