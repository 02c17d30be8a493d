"""Certificates for cardvault's TLS listener: a development certificate, and checks for any certificate.

Why this module exists: cardvault must never serve card data over plain HTTP, not even on a developer's
machine, so it can mint a self-signed development certificate on first start. Operators supply their
own certificates in production; ``inspect_certificate`` and ``check_certificate`` describe and vet
those the same way, and the caller decides whether a problem is fatal (production) or a warning
(development). Validity is capped at 366 days, the limit Mozilla's guidelines and browsers apply.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from service.tls import TlsConfigError

__all__ = [
    "DEFAULT_HOSTNAMES",
    "DEVELOPMENT_COMMON_NAME",
    "MAX_VALIDITY_DAYS",
    "RENEW_WITHIN",
    "CertificateInfo",
    "check_certificate",
    "ensure_development_certificate",
    "generate_self_signed",
    "inspect_certificate",
]

DEVELOPMENT_COMMON_NAME: Final = "cardvault development certificate"
DEFAULT_HOSTNAMES: Final = ("localhost", "127.0.0.1", "::1")
#: Longest certificate lifetime Mozilla's guidelines (and browsers) accept, in days.
MAX_VALIDITY_DAYS: Final = 366
#: ``ensure_development_certificate`` replaces a certificate this close to its expiry.
RENEW_WITHIN: Final = timedelta(days=30)

_CERT_FILE_NAME: Final = "dev-cert.pem"
_KEY_FILE_NAME: Final = "dev-key.pem"
_SECONDS_PER_DAY: Final = 86_400


@dataclass(frozen=True)
class CertificateInfo:
    """What cardvault needs to know about a certificate to log it and to judge it."""

    subject: str
    not_before: datetime
    not_after: datetime
    #: True when the issuer is the subject and the signature verifies with the certificate's own key.
    self_signed: bool
    validity_days: float
    #: SHA-256 of the DER certificate as colon-separated upper-case hex, as ``openssl x509 -fingerprint``.
    sha256_fingerprint: str
    #: DNS names and IP addresses from the subjectAltName extension, in certificate order.
    hostnames: tuple[str, ...]


def generate_self_signed(
    cert_path: Path,
    key_path: Path,
    hostnames: Sequence[str] = DEFAULT_HOSTNAMES,
    *,
    valid_days: int = 365,
    now: datetime | None = None,
) -> CertificateInfo:
    """Write a new ECDSA P-256 key and a self-signed certificate for ``hostnames``, both mode 0600.

    The certificate starts ``now`` and lasts ``valid_days`` (at most ``MAX_VALIDITY_DAYS``, else
    ``ValueError``). The key is written as unencrypted PKCS#8 PEM. Raises ``TlsConfigError`` when a file
    cannot be written.
    """
    if not 0 < valid_days <= MAX_VALIDITY_DAYS:
        raise ValueError(f"valid_days must be between 1 and {MAX_VALIDITY_DAYS}, not {valid_days}")
    if isinstance(hostnames, str) or not hostnames:
        raise ValueError(f"hostnames must be a non-empty sequence of names, not {hostnames!r}")
    not_before = _aware(now).replace(microsecond=0)
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = _build_certificate(key, hostnames, not_before, not_before + timedelta(days=valid_days))
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _write_private_file(key_path, key_pem)
    _write_private_file(cert_path, certificate.public_bytes(serialization.Encoding.PEM))
    return _describe(certificate)


def inspect_certificate(cert_path: Path) -> CertificateInfo:
    """Describe the first certificate in the PEM file ``cert_path`` (the leaf of a chain)."""
    return _describe(_load_first_certificate(cert_path))


def check_certificate(info: CertificateInfo, *, now: datetime) -> list[str]:
    """List human-readable problems with the certificate at ``now``; an empty list means none."""
    now = _aware(now)
    problems = []
    if now > info.not_after:
        problems.append(f"certificate expired on {info.not_after:%Y-%m-%d %H:%M:%S} UTC")
    if now < info.not_before:
        problems.append(f"certificate is not valid before {info.not_before:%Y-%m-%d %H:%M:%S} UTC")
    if info.validity_days > MAX_VALIDITY_DAYS:
        problems.append(
            f"certificate is valid for {info.validity_days:.1f} days, "
            f"more than the {MAX_VALIDITY_DAYS} days Mozilla and browsers accept"
        )
    return problems


def ensure_development_certificate(
    directory: Path, *, now: datetime | None = None
) -> tuple[Path, Path, CertificateInfo]:
    """Return ``directory/tls/dev-cert.pem``, ``dev-key.pem`` and their description, creating them if needed.

    The pair is (re)generated when either file is missing or unreadable, the key does not match the
    certificate, the certificate is not valid at ``now``, or it expires within ``RENEW_WITHIN``.
    The ``tls`` directory is created with mode 0700.
    """
    now = _aware(now)
    tls_directory = _private_directory(directory / "tls")
    cert_path, key_path = tls_directory / _CERT_FILE_NAME, tls_directory / _KEY_FILE_NAME
    try:
        info = _usable_development_certificate(cert_path, key_path, now)
    except TlsConfigError:
        info = generate_self_signed(cert_path, key_path, now=now)
    return cert_path, key_path, info


def _usable_development_certificate(cert_path: Path, key_path: Path, now: datetime) -> CertificateInfo:
    """Describe the existing pair, or raise ``TlsConfigError`` saying why it must be replaced."""
    certificate = _load_first_certificate(cert_path)
    _require_matching_key(certificate, key_path, cert_path)
    info = _describe(certificate)
    problems = check_certificate(info, now=now)
    if problems:
        raise TlsConfigError(f"TLS certificate {cert_path}: {'; '.join(problems)}")
    if info.not_after - now < RENEW_WITHIN:
        raise TlsConfigError(f"TLS certificate {cert_path}: expires within {RENEW_WITHIN.days} days")
    return info


def _build_certificate(
    key: ec.EllipticCurvePrivateKey, hostnames: Sequence[str], not_before: datetime, not_after: datetime
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, DEVELOPMENT_COMMON_NAME)])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName(_general_names(hostnames)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_digital_signature_only(), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )


def _general_names(hostnames: Sequence[str]) -> list[x509.GeneralName]:
    """An ``IPAddress`` for each hostname that parses as an IP address, a ``DNSName`` otherwise."""
    names: list[x509.GeneralName] = []
    for hostname in hostnames:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(hostname)))
        except ValueError:
            names.append(x509.DNSName(hostname))
    return names


def _digital_signature_only() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def _describe(certificate: x509.Certificate) -> CertificateInfo:
    not_before, not_after = certificate.not_valid_before_utc, certificate.not_valid_after_utc
    return CertificateInfo(
        subject=certificate.subject.rfc4514_string(),
        not_before=not_before,
        not_after=not_after,
        self_signed=_is_self_signed(certificate),
        validity_days=(not_after - not_before).total_seconds() / _SECONDS_PER_DAY,
        sha256_fingerprint=certificate.fingerprint(hashes.SHA256()).hex(":").upper(),
        hostnames=_hostnames(certificate),
    )


def _is_self_signed(certificate: x509.Certificate) -> bool:
    if certificate.issuer != certificate.subject:
        return False
    try:
        certificate.verify_directly_issued_by(certificate)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _hostnames(certificate: x509.Certificate) -> tuple[str, ...]:
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    hostnames: list[str] = []
    for name in san:
        if isinstance(name, x509.DNSName):
            hostnames.append(name.value)
        elif isinstance(name, x509.IPAddress):
            hostnames.append(str(name.value))
    return tuple(hostnames)


def _load_first_certificate(cert_path: Path) -> x509.Certificate:
    data = _read(cert_path, "certificate")
    try:
        return x509.load_pem_x509_certificates(data)[0]
    except ValueError as exc:
        raise TlsConfigError(f"TLS certificate {cert_path} is not a PEM certificate: {exc}") from exc


def _require_matching_key(certificate: x509.Certificate, key_path: Path, cert_path: Path) -> None:
    key = _load_private_key(key_path)
    encoding, public_format = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(encoding, public_format) != certificate.public_key().public_bytes(
        encoding, public_format
    ):
        raise TlsConfigError(f"TLS private key {key_path} does not match certificate {cert_path}")


def _load_private_key(key_path: Path) -> PrivateKeyTypes:
    data = _read(key_path, "private key")
    try:
        return serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise TlsConfigError(f"TLS private key {key_path} cannot be loaded: {exc}") from exc


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TlsConfigError(f"cannot read TLS {what} {path}: {exc.strerror or exc}") from exc


def _private_directory(path: Path) -> Path:
    """Create ``path`` with mode 0700, or tighten it to 0700 if it already exists."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.chmod(0o700)
    except OSError as exc:
        raise TlsConfigError(f"cannot create private TLS directory {path}: {exc.strerror or exc}") from exc
    return path


def _write_private_file(path: Path, data: bytes) -> None:
    """Atomically replace ``path`` with ``data``; the file is mode 0600 from the moment it exists."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        descriptor = os.open(temporary, flags, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise TlsConfigError(f"cannot write TLS file {path}: {exc.strerror or exc}") from exc


def _aware(moment: datetime | None) -> datetime:
    """``moment`` (default: the current time) in UTC; naive datetimes are refused as ambiguous."""
    if moment is None:
        return datetime.now(UTC)
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("datetimes given to service.tls.certs must be timezone-aware")
    return moment.astimezone(UTC)
