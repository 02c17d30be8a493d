"""The ``proxy`` settings and ``tls.client_ca_file``: what is accepted, and the one line that names what is not."""

from __future__ import annotations

import pytest

from service.errors import ConfigError
from service.settings_loader import load_settings


def refused(environ: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(None, environ=environ)
    return str(caught.value)


class TestTrustedProxies:
    def test_nobody_is_trusted_by_default(self) -> None:
        """Out of the box no peer may set the client address, and there is no PROXY-protocol listener."""
        proxy = load_settings(None, environ={}).proxy
        assert (proxy.trusted, proxy.headers, proxy.proxy_protocol_port, proxy.proxy_protocol_trusted) == (
            (),
            "x-forwarded",
            None,
            (),
        )

    def test_addresses_and_networks_from_one_variable(self) -> None:
        """CARDVAULT_PROXY__TRUSTED is a comma-separated list; single addresses become /32 or /128."""
        proxy = load_settings(None, environ={"CARDVAULT_PROXY__TRUSTED": "10.0.0.0/8, 192.168.1.5,::1"}).proxy
        assert proxy.trusted == ("10.0.0.0/8", "192.168.1.5/32", "::1/128")

    def test_a_network_with_host_bits_is_a_typo(self) -> None:
        """10.0.0.5/8 is refused with the network the operator probably meant."""
        line = refused({"CARDVAULT_PROXY__TRUSTED": "10.0.0.5/8"})
        assert "proxy.trusted" in line
        assert "did you mean 10.0.0.0/8" in line

    def test_a_host_name_is_not_an_address(self) -> None:
        """Names are refused: the check is against the TCP peer's address, which has no name."""
        assert "is not an IP address or CIDR network" in refused({"CARDVAULT_PROXY__TRUSTED": "nginx.internal"})

    def test_only_the_two_header_families(self) -> None:
        """proxy.headers is x-forwarded or forwarded; X-Real-IP is never read."""
        assert "proxy.headers" in refused({"CARDVAULT_PROXY__HEADERS": "x-real-ip"})


class TestProxyProtocolListener:
    def test_port_and_its_proxies(self) -> None:
        """The port comes with the list of stream proxies allowed to connect to it."""
        proxy = load_settings(
            None,
            environ={
                "CARDVAULT_PROXY__PROXY_PROTOCOL_PORT": "9443",
                "CARDVAULT_PROXY__PROXY_PROTOCOL_TRUSTED": "10.0.0.6",
            },
        ).proxy
        assert (proxy.proxy_protocol_port, proxy.proxy_protocol_trusted) == (9443, ("10.0.0.6/32",))

    def test_a_port_without_trusted_proxies_is_refused(self) -> None:
        """A PROXY-protocol port that nobody may use is a mistake, not a listener."""
        assert "proxy.proxy_protocol_trusted" in refused({"CARDVAULT_PROXY__PROXY_PROTOCOL_PORT": "9443"})

    def test_the_port_must_not_be_the_ordinary_one(self) -> None:
        """The ordinary listener never reads PROXY headers; the two cannot share a port."""
        line = refused(
            {"CARDVAULT_PROXY__PROXY_PROTOCOL_PORT": "8443", "CARDVAULT_PROXY__PROXY_PROTOCOL_TRUSTED": "10.0.0.6"}
        )
        assert "must differ from server.port" in line


class TestClientCertificates:
    def test_client_ca_file_is_a_path(self) -> None:
        """tls.client_ca_file turns mutual TLS on; unset by default."""
        assert load_settings(None, environ={}).tls.client_ca_file is None
        tls = load_settings(None, environ={"CARDVAULT_TLS__CLIENT_CA_FILE": "/etc/cardvault/proxy-ca.pem"}).tls
        assert str(tls.client_ca_file) == "/etc/cardvault/proxy-ca.pem"

    def test_needs_the_https_listener(self) -> None:
        """Client certificates with plain HTTP cannot work: refused, naming the key."""
        line = refused({"CARDVAULT_SERVER__PLAIN_HTTP": "true", "CARDVAULT_TLS__CLIENT_CA_FILE": "/x.pem"})
        assert line.startswith("tls.client_ca_file: needs the HTTPS listener")
