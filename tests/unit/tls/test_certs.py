"""Tests for the development certificate and the certificate checks in ``service.tls.certs``."""

from __future__ import annotations

import hashlib
import ipaddress
import os
import ssl
import stat
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from service.tls import TlsConfigError
from service.tls.certs import (
    MAX_VALIDITY_DAYS,
    CertificateInfo,
    check_certificate,
    ensure_development_certificate,
    generate_self_signed,
    inspect_certificate,
)
from service.tls.mozilla import server_context

from . import LoopbackTlsServer, client_context, connect

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


@pytest.fixture
def generated(tmp_path: Path) -> tuple[Path, Path, CertificateInfo]:
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    return cert_path, key_path, generate_self_signed(cert_path, key_path, now=NOW)


@pytest.fixture
def current(tmp_path: Path) -> tuple[Path, Path]:
    """A pair generated at the real current time, for handshakes with verifying clients."""
    cert_path, key_path = tmp_path / "current-cert.pem", tmp_path / "current-key.pem"
    generate_self_signed(cert_path, key_path)
    return cert_path, key_path


@pytest.fixture
def umask_zero() -> Iterator[None]:
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def trustme_leaf_file(directory: Path, *, not_before: datetime, not_after: datetime) -> Path:
    """A CA-signed leaf certificate with the given validity, followed by its CA, in one PEM file."""
    ca = trustme.CA()
    leaf = ca.issue_cert("vault.cardvault.test", not_before=not_before, not_after=not_after)
    path = directory / "chain.pem"
    path.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems) + ca.cert_pem.bytes())
    return path


class TestGenerateSelfSigned:
    def test_names_every_hostname_with_the_right_type(self, generated: tuple[Path, Path, CertificateInfo]) -> None:
        """The default hostnames become a DNS name and two IP-address subjectAltNames."""
        cert_path, _, info = generated
        san = load(cert_path).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.DNSName) == ["localhost"]
        assert san.get_values_for_type(x509.IPAddress) == [
            ipaddress.ip_address("127.0.0.1"),
            ipaddress.ip_address("::1"),
        ]
        assert info.hostnames == ("localhost", "127.0.0.1", "::1")

    def test_is_an_ecdsa_p256_server_certificate(self, generated: tuple[Path, Path, CertificateInfo]) -> None:
        """The certificate is ECDSA P-256 over SHA-256, not a CA, for digital signatures and serverAuth."""
        certificate = load(generated[0])
        public_key = certificate.public_key()
        assert isinstance(public_key, ec.EllipticCurvePublicKey)
        assert isinstance(public_key.curve, ec.SECP256R1)
        assert isinstance(certificate.signature_hash_algorithm, hashes.SHA256)
        assert certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == (
            "cardvault development certificate"
        )
        extensions = certificate.extensions
        assert extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
        key_usage = extensions.get_extension_for_class(x509.KeyUsage).value
        assert key_usage.digital_signature
        assert not key_usage.key_cert_sign
        assert not key_usage.key_encipherment
        assert not key_usage.crl_sign
        assert list(extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
            ExtendedKeyUsageOID.SERVER_AUTH
        ]

    @pytest.mark.usefixtures("umask_zero")
    def test_files_are_private_whatever_the_umask(self, tmp_path: Path) -> None:
        """Certificate and key are mode 0600 even with umask 0 and when replacing a 0644 file."""
        cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
        key_path.write_text("old")
        key_path.chmod(0o644)
        generate_self_signed(cert_path, key_path)
        assert (mode(cert_path), mode(key_path)) == (0o600, 0o600)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["cert.pem", "key.pem"]

    def test_key_is_unencrypted_pkcs8(self, generated: tuple[Path, Path, CertificateInfo]) -> None:
        """The key file is unencrypted PKCS#8 PEM matching the certificate."""
        cert_path, key_path, _ = generated
        pem = key_path.read_bytes()
        assert pem.startswith(b"-----BEGIN PRIVATE KEY-----\n")
        key = serialization.load_pem_private_key(pem, password=None)
        spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        assert key.public_key().public_bytes(*spki) == load(cert_path).public_key().public_bytes(*spki)

    def test_validity_starts_now_and_lasts_valid_days(self, generated: tuple[Path, Path, CertificateInfo]) -> None:
        """By default the certificate is valid from ``now`` for 365 days."""
        info = generated[2]
        assert (info.not_before, info.not_after) == (NOW, NOW + timedelta(days=365))
        assert info.validity_days == 365.0

    def test_accepts_mozillas_limit(self, tmp_path: Path) -> None:
        """A 366-day certificate, the maximum, can be generated."""
        info = generate_self_signed(tmp_path / "c.pem", tmp_path / "k.pem", valid_days=MAX_VALIDITY_DAYS)
        assert info.validity_days == 366.0

    @pytest.mark.parametrize("valid_days", [367, 398, 0, -1])
    def test_refuses_validity_outside_the_limit(self, tmp_path: Path, valid_days: int) -> None:
        """A validity over 366 days (or not positive) raises ValueError and writes nothing."""
        with pytest.raises(ValueError, match="valid_days"):
            generate_self_signed(tmp_path / "c.pem", tmp_path / "k.pem", valid_days=valid_days)
        assert list(tmp_path.iterdir()) == []

    def test_refuses_naive_now(self, tmp_path: Path) -> None:
        """A naive ``now`` raises ValueError instead of being guessed to be UTC or local time."""
        with pytest.raises(ValueError, match="timezone-aware"):
            generate_self_signed(tmp_path / "c.pem", tmp_path / "k.pem", now=datetime(2025, 1, 1))

    def test_description_matches_the_file(self, generated: tuple[Path, Path, CertificateInfo]) -> None:
        """The returned description equals inspecting the written file; its fingerprint is SHA-256 of DER."""
        cert_path, _, info = generated
        assert inspect_certificate(cert_path) == info
        der = ssl.PEM_cert_to_DER_cert(cert_path.read_text())
        assert info.sha256_fingerprint == hashlib.sha256(der).digest().hex(":").upper()
        assert info.subject == "CN=cardvault development certificate"
        assert info.self_signed is True

    @pytest.mark.parametrize("hostname", ["localhost", "127.0.0.1", "::1"])
    def test_verifies_as_trust_anchor_for_each_hostname(self, current: tuple[Path, Path], hostname: str) -> None:
        """A verifying client that trusts the certificate accepts it for each of its hostnames."""
        cert_path, key_path = current
        with LoopbackTlsServer(server_context(cert_path, key_path)) as server:
            client = client_context(ssl.TLSVersion.TLSv1_3, cafile=cert_path)
            assert connect(server.address, client, server_hostname=hostname).version == "TLSv1.3"

    def test_fails_verification_for_other_hostnames(self, current: tuple[Path, Path]) -> None:
        """A verifying client refuses the certificate for a hostname it does not name."""
        cert_path, key_path = current
        with LoopbackTlsServer(server_context(cert_path, key_path)) as server:
            client = client_context(ssl.TLSVersion.TLSv1_3, cafile=cert_path)
            with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
                connect(server.address, client, server_hostname="vault.example.org")


class TestInspectCertificate:
    def test_describes_the_leaf_of_a_ca_signed_chain(self, tmp_path: Path) -> None:
        """For a trustme chain file, the leaf is described and is not self-signed."""
        path = trustme_leaf_file(tmp_path, not_before=NOW, not_after=NOW + timedelta(days=90))
        info = inspect_certificate(path)
        assert info.hostnames == ("vault.cardvault.test",)
        assert info.self_signed is False
        assert info.validity_days == 90.0

    def test_ca_certificate_is_self_signed(self, tmp_path: Path) -> None:
        """A trustme root CA certificate, signed by its own key, is reported as self-signed."""
        path = tmp_path / "ca.pem"
        trustme.CA().cert_pem.write_to_path(str(path))
        assert inspect_certificate(path).self_signed is True

    def test_same_names_but_foreign_signature_is_not_self_signed(self, tmp_path: Path) -> None:
        """A certificate whose issuer equals its subject but that another key signed is not self-signed."""
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "impostor")])
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(ec.generate_private_key(ec.SECP256R1()).public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW)
            .not_valid_after(NOW + timedelta(days=30))
            .sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())
        )
        path = tmp_path / "impostor.pem"
        path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        assert inspect_certificate(path).self_signed is False

    @pytest.mark.parametrize(("content", "problem"), [(None, "cannot read"), (b"garbage", "not a PEM")])
    def test_unusable_file_is_named_on_one_line(self, tmp_path: Path, content: bytes | None, problem: str) -> None:
        """A missing or non-PEM file raises TlsConfigError naming the file and the problem on one line."""
        path = tmp_path / "cert.pem"
        if content is not None:
            path.write_bytes(content)
        with pytest.raises(TlsConfigError, match=problem) as caught:
            inspect_certificate(path)
        assert str(path) in str(caught.value)
        assert "\n" not in str(caught.value)


class TestCheckCertificate:
    def test_current_certificate_has_no_problems(self, generated: tuple[Path, Path, CertificateInfo]) -> None:
        """A freshly generated certificate has no problems."""
        assert check_certificate(generated[2], now=NOW + timedelta(days=1)) == []

    def test_flags_a_400_day_certificate(self, tmp_path: Path) -> None:
        """A certificate valid for 400 days is flagged for exceeding 366 days."""
        path = trustme_leaf_file(tmp_path, not_before=NOW, not_after=NOW + timedelta(days=400))
        assert check_certificate(inspect_certificate(path), now=NOW + timedelta(days=1)) == [
            "certificate is valid for 400.0 days, more than the 366 days Mozilla and browsers accept"
        ]

    def test_flags_an_expired_certificate(self, generated: tuple[Path, Path, CertificateInfo]) -> None:
        """A certificate past its notAfter is flagged as expired, with the date."""
        problems = check_certificate(generated[2], now=NOW + timedelta(days=366))
        assert problems == ["certificate expired on 2026-03-01 12:00:00 UTC"]

    def test_flags_a_certificate_not_yet_valid(self, generated: tuple[Path, Path, CertificateInfo]) -> None:
        """A certificate before its notBefore is flagged as not yet valid."""
        problems = check_certificate(generated[2], now=NOW - timedelta(minutes=1))
        assert problems == ["certificate is not valid before 2025-03-01 12:00:00 UTC"]


class TestEnsureDevelopmentCertificate:
    def test_creates_a_private_pair_on_first_use(self, tmp_path: Path) -> None:
        """The first call creates tls/dev-cert.pem and dev-key.pem (0600) in a 0700 directory."""
        cert_path, key_path, info = ensure_development_certificate(tmp_path / "state", now=NOW)
        assert (cert_path, key_path) == (
            tmp_path / "state/tls/dev-cert.pem",
            tmp_path / "state/tls/dev-key.pem",
        )
        assert mode(cert_path.parent) == 0o700
        assert (mode(cert_path), mode(key_path)) == (0o600, 0o600)
        assert info == inspect_certificate(cert_path)
        assert info.self_signed

    def test_tightens_an_existing_directory(self, tmp_path: Path) -> None:
        """An existing world-readable tls directory is narrowed to mode 0700."""
        (tmp_path / "tls").mkdir(mode=0o755)
        (tmp_path / "tls").chmod(0o755)
        cert_path, _, _ = ensure_development_certificate(tmp_path, now=NOW)
        assert mode(cert_path.parent) == 0o700

    def test_reuses_a_good_certificate(self, tmp_path: Path) -> None:
        """A certificate with more than 30 days left is reused unchanged."""
        first = ensure_development_certificate(tmp_path, now=NOW)
        key_bytes = first[1].read_bytes()
        second = ensure_development_certificate(tmp_path, now=NOW + timedelta(days=330))
        assert second == first
        assert second[1].read_bytes() == key_bytes

    def test_regenerates_a_certificate_expiring_within_30_days(self, tmp_path: Path) -> None:
        """A certificate with fewer than 30 days left is replaced by a new one valid from ``now``."""
        _, _, old = ensure_development_certificate(tmp_path, now=NOW)
        later = NOW + timedelta(days=340)
        _, _, new = ensure_development_certificate(tmp_path, now=later)
        assert new.sha256_fingerprint != old.sha256_fingerprint
        assert new.not_before == later
        assert check_certificate(new, now=later) == []

    def test_regenerates_an_expired_certificate(self, tmp_path: Path) -> None:
        """An expired certificate is replaced."""
        _, _, old = ensure_development_certificate(tmp_path, now=NOW)
        _, _, new = ensure_development_certificate(tmp_path, now=NOW + timedelta(days=400))
        assert new.sha256_fingerprint != old.sha256_fingerprint

    @pytest.mark.parametrize("damage", ["delete-cert", "delete-key", "garble-cert", "garble-key", "other-key"])
    def test_regenerates_a_damaged_pair(self, tmp_path: Path, damage: str) -> None:
        """A missing or unparsable file, or a key belonging to another certificate, triggers a new pair."""
        cert_path, key_path, old = ensure_development_certificate(tmp_path, now=NOW)
        target = cert_path if damage.endswith("cert") else key_path
        if damage.startswith("delete"):
            target.unlink()
        elif damage.startswith("garble"):
            target.write_bytes(b"-----BEGIN NOTHING-----\n")
        else:
            generate_self_signed(tmp_path / "other-cert.pem", key_path, now=NOW)
        _, _, new = ensure_development_certificate(tmp_path, now=NOW)
        assert new.sha256_fingerprint != old.sha256_fingerprint
        with LoopbackTlsServer(server_context(cert_path, key_path)) as server:
            assert connect(server.address, client_context(ssl.TLSVersion.TLSv1_2)).version == "TLSv1.2"
