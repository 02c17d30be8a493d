"""sslyze against a real ``cardvault serve`` HTTPS listener: Mozilla's intermediate configuration, nothing weak.

sslyze (a scanner we did not write) connects with its own OpenSSL build (nassl,
which still speaks SSL 2.0 to TLS 1.1 and every legacy cipher) and tries
everything.  Its ``MozillaTlsConfigurationChecker`` then compares the results with
Mozilla's intermediate profile (version 5.7, shipped inside sslyze): protocol
versions, TLS 1.2 ciphers and TLS 1.3 suites, key-exchange groups and their sizes,
the certificate's key type, curve, signature and lifespan, and the vulnerability
checks (compression, Heartbleed, CCS injection, ROBOT, insecure renegotiation,
fallback SCSV, extended master secret).  The test then asserts the parts that
matter here on their own as well, so a failure says what is wrong.

Certificates: the serve runs on a test chain (``chain.py``: a root CA and a
leaf for ``localhost`` and 127.0.0.1, valid 90 days, built as a public CA's
would be) and sslyze is given that root as ``custom_ca_file``.  A test
certificate can never chain to a public CA; trusting the test root in addition
to sslyze's public stores is the one narrow substitution, and with it the
checker's ``certificate_path_validation`` passes: nothing is scoped out.  Both key types the profile
allows are scanned: ECDSA P-256 and RSA 2048 (the RSA one exercises the DHE and
ECDHE-RSA suites and the ffdhe2048 group).

``python -m pytest tests/scanners/test_sslyze.py`` runs it alone; each scan takes
a few seconds.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sslyze import (
    CertificateInfoExtraArgument,
    ScanCommand,
    ScanCommandAttemptStatusEnum,
    ScanCommandsExtraArguments,
    Scanner,
    ServerNetworkLocation,
    ServerScanRequest,
    ServerScanResult,
    ServerScanStatusEnum,
)
from sslyze.mozilla_tls_profile.tls_config_checker import (
    SCAN_COMMANDS_NEEDED_BY_MOZILLA_CHECKER,
    MozillaTlsConfiguration,
    ServerNotCompliantWithTlsConfiguration,
    TlsConfigurationEnum,
    check_server_against_tls_configuration,
)

from service.tls.mozilla import HSTS_HEADER_VALUE
from tests.scanners.chain import issue_chain
from tests.support.serve import ServeFactory, ServeProcess

pytestmark = [
    pytest.mark.slow,
    # sslyze's bundled public trust stores hold an old root with a non-positive serial number.
    pytest.mark.filterwarnings("ignore:Parsed a serial number:cryptography.utils.CryptographyDeprecationWarning"),
]

INTERMEDIATE = MozillaTlsConfiguration.get(TlsConfigurationEnum.MOZILLA_INTERMEDIATE)
LEGACY_VERSIONS = ("ssl_2_0_cipher_suites", "ssl_3_0_cipher_suites", "tls_1_0_cipher_suites", "tls_1_1_cipher_suites")
#: Parts of a cipher suite's IANA name (split at "_") that mark it weak; none may be accepted.
WEAK = {
    "NULL",
    "EXPORT",
    "anon",
    "RC4",
    "DES",
    "3DES",
    "DES40",
    "MD5",
    "CBC",
    "SHA",
    "PSK",
    "SRP",
    "CAMELLIA",
    "ARIA",
    "SEED",
}


@pytest.fixture(scope="module", params=["ecdsa", "rsa"])
def tls_serve(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, leak_sources: Any
) -> Iterator[tuple[ServeProcess, Path]]:
    """`cardvault serve` on a test chain of the given key type; yields the process and the CA file to trust."""
    directory = tmp_path_factory.mktemp(f"sslyze-{request.param}")
    chain = issue_chain(directory, request.param)
    with ServeFactory(directory, leak_sources) as factory:
        process = factory("--tls-cert", chain.cert_file, "--tls-key", chain.key_file, ca_file=chain.ca_file).start()
        yield process, chain.ca_file
        process.stop()


@pytest.fixture(scope="module")
def scan(tls_serve: tuple[ServeProcess, Path]) -> ServerScanResult:
    process, ca_file = tls_serve
    location = ServerNetworkLocation(hostname="localhost", port=process.port, ip_address="127.0.0.1")
    request = ServerScanRequest(
        server_location=location,
        scan_commands={*SCAN_COMMANDS_NEEDED_BY_MOZILLA_CHECKER, ScanCommand.HTTP_HEADERS},
        scan_commands_extra_arguments=ScanCommandsExtraArguments(
            certificate_info=CertificateInfoExtraArgument(custom_ca_file=ca_file)
        ),
    )
    scanner = Scanner(per_server_concurrent_connections_limit=4)
    scanner.queue_scans([request])
    (result,) = list(scanner.get_results())
    assert result.scan_status == ServerScanStatusEnum.COMPLETED, result.connectivity_error_trace
    assert result.scan_result is not None
    for command in request.scan_commands:
        attempt = getattr(result.scan_result, command.value)
        assert attempt.status == ScanCommandAttemptStatusEnum.COMPLETED, (command, attempt.error_trace)
    return result


def test_the_listener_complies_with_mozilla_intermediate(scan: ServerScanResult) -> None:
    try:
        check_server_against_tls_configuration(scan, INTERMEDIATE)
    except ServerNotCompliantWithTlsConfiguration as refusal:
        pytest.fail(f"not Mozilla intermediate: {refusal.issues}")


def test_no_ssl_and_no_tls_1_0_or_1_1(scan: ServerScanResult) -> None:
    assert scan.scan_result is not None
    for field in LEGACY_VERSIONS:
        result = getattr(scan.scan_result, field).result
        assert not result.is_tls_version_supported, field
        assert not result.accepted_cipher_suites, field


def test_tls_1_2_offers_only_intermediate_ciphers_and_nothing_weak(scan: ServerScanResult) -> None:
    assert scan.scan_result is not None
    result = scan.scan_result.tls_1_2_cipher_suites.result
    assert result is not None
    assert result.is_tls_version_supported
    accepted = {suite.cipher_suite.name for suite in result.accepted_cipher_suites}
    assert accepted, "TLS 1.2 accepted no cipher suite"
    assert accepted <= INTERMEDIATE.ciphers.iana, accepted - INTERMEDIATE.ciphers.iana
    assert not [name for name in accepted if WEAK & set(name.split("_"))]
    assert not [name for name in accepted if name.startswith("TLS_RSA_")], "key exchange without forward secrecy"
    for suite in result.accepted_cipher_suites:  # forward secrecy with groups of the profile's sizes
        key = suite.ephemeral_key
        assert key is not None, suite.cipher_suite.name
        assert key.size >= 253, (suite.cipher_suite.name, key.size)  # X25519 reports 253 bits
    assert not result.rejected_cipher_suites or len(result.rejected_cipher_suites) > len(accepted)


def test_tls_1_3_is_accepted_with_the_profile_suites(scan: ServerScanResult) -> None:
    assert scan.scan_result is not None
    result = scan.scan_result.tls_1_3_cipher_suites.result
    assert result is not None
    assert result.is_tls_version_supported
    accepted = {suite.cipher_suite.name for suite in result.accepted_cipher_suites}
    assert accepted
    assert accepted <= INTERMEDIATE.ciphersuites, accepted


def test_groups_vulnerabilities_and_hsts(scan: ServerScanResult) -> None:
    assert scan.scan_result is not None
    curves = scan.scan_result.elliptic_curves.result
    assert curves is not None
    assert curves.supported_curves
    assert {curve.name for curve in curves.supported_curves} <= INTERMEDIATE.tls_curves
    assert not scan.scan_result.tls_compression.result.supports_compression  # type: ignore[union-attr]
    assert scan.scan_result.session_renegotiation.result.supports_secure_renegotiation  # type: ignore[union-attr]
    assert not scan.scan_result.session_renegotiation.result.is_vulnerable_to_client_renegotiation_dos  # type: ignore[union-attr]
    assert not scan.scan_result.heartbleed.result.is_vulnerable_to_heartbleed  # type: ignore[union-attr]
    headers = scan.scan_result.http_headers.result
    assert headers is not None
    assert headers.strict_transport_security_header is not None
    assert headers.strict_transport_security_header.max_age == INTERMEDIATE.hsts_min_age
    assert f"max-age={headers.strict_transport_security_header.max_age}" == HSTS_HEADER_VALUE
