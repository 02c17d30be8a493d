"""The forward proxy's rules: destination shape and allowlist, address classes, headers, masking the answer."""

from __future__ import annotations

import ipaddress

import pytest

from service.domain.forwarding import (
    CVC_MASK,
    address_refusal,
    allowed_destination,
    embedded_ipv4,
    mask_response,
    outbound_headers,
    passed_back_headers,
)
from service.domain.processing import parse_destination
from tests.support.cards import MASTERCARD, VISA

PAY = parse_destination("https://pay.example.com/api/")
GATEWAY = parse_destination("https://pay.example.com/api/v2/", allow_private=True)


class TestAllowedDestination:
    @pytest.mark.parametrize(
        "url",
        [
            "https://pay.example.com/api/charge",
            "https://PAY.example.com/api/charge?mode=test",
            "https://pay.example.com:443/api/",
        ],
    )
    def test_urls_under_an_entry_are_allowed(self, url: str) -> None:
        """Exact host (any case), default port, under the path prefix."""
        assert allowed_destination(url, [PAY]) == PAY

    @pytest.mark.parametrize(
        "url",
        [
            "http://pay.example.com/api/charge",
            "https://pay.example.com.evil.test/api/charge",
            "https://evil.test/api/charge",
            "https://pay.example.com:8443/api/charge",
            "https://pay.example.com/apix",
            "https://pay.example.com/api/../admin",
            "https://pay.example.com/api/./charge",
            "https://pay.example.com/api/%2e%2e/admin",
            "https://pay.example.com/api/%2E./admin",
            "https://pay.example.com/api%2f..%2fadmin",
            "https://pay.example.com/api/%5c..%5cadmin",
            "https://pay.example.com@evil.test/api/charge",
            "https://user:pw@pay.example.com/api/charge",
            "https://pay.example.com\\@evil.test/api/",
            "https://pay.example.com/api/charge#x",
            "https://pay.example.com/api/ charge",
            "https://pay.example.com/api/\ncharge",
            "https://pay.example.com/api/chärge",
            "https://pay.example.com:99999/api/",
            "https://pay.example.com:x/api/",
            "https:///api/",
            "",
        ],
    )
    def test_everything_else_is_refused(self, url: str) -> None:
        """Other scheme, host, port or path, traversal plain or encoded, credentials, odd characters: None."""
        assert allowed_destination(url, [PAY]) is None

    def test_the_longest_prefix_wins(self) -> None:
        """A URL under two entries takes the more specific one, and its allow_private."""
        assert allowed_destination("https://pay.example.com/api/v2/x", [PAY, GATEWAY]) == GATEWAY
        assert allowed_destination("https://pay.example.com/api/v1/x", [PAY, GATEWAY]) == PAY

    def test_nothing_is_allowed_without_entries(self) -> None:
        """An empty allowlist allows nothing."""
        assert allowed_destination("https://pay.example.com/api/x", []) is None

    def test_a_too_long_url_is_refused(self) -> None:
        """URLs are bounded."""
        assert allowed_destination("https://pay.example.com/api/" + "a" * 3000, [PAY]) is None


class TestAddressRules:
    @pytest.mark.parametrize(
        ("address", "reason"),
        [
            ("127.0.0.1", "loopback"),
            ("127.8.9.10", "loopback"),
            ("::1", "loopback"),
            ("10.0.0.7", "private"),
            ("172.16.5.4", "private"),
            ("192.168.1.1", "private"),
            ("fc00::1", "private"),
            ("169.254.1.1", "link-local"),
            ("fe80::1", "link-local"),
            ("fe80::1%2", "link-local"),
            ("100.64.0.1", "not globally routable"),
            ("::ffff:127.0.0.1", "loopback (IPv4 inside IPv6)"),
            ("::ffff:10.0.0.1", "private (IPv4 inside IPv6)"),
            ("64:ff9b::a00:1", "private (IPv4 inside IPv6)"),
            ("2002:7f00:1::1", "loopback (IPv4 inside IPv6)"),
        ],
    )
    def test_private_addresses_are_refused_unless_allowed(self, address: str, reason: str) -> None:
        """Loopback, private, link-local and other non-global addresses need allow_private."""
        ip = ipaddress.ip_address(address)
        assert address_refusal(ip, allow_private=False) == reason
        assert address_refusal(ip, allow_private=True) is None

    @pytest.mark.parametrize(
        ("address", "reason"),
        [
            ("169.254.169.254", "cloud metadata"),
            ("fd00:ec2::254", "cloud metadata"),
            ("::ffff:169.254.169.254", "cloud metadata (IPv4 inside IPv6)"),
            ("0.0.0.0", "unspecified"),
            ("::", "unspecified"),
            ("224.0.0.251", "multicast"),
            ("ff02::1", "multicast"),
            ("240.0.0.1", "reserved"),
            ("255.255.255.255", "reserved"),
        ],
    )
    def test_some_addresses_are_refused_even_when_private_is_allowed(self, address: str, reason: str) -> None:
        """Metadata endpoints, unspecified, multicast and reserved addresses are never a payment endpoint."""
        ip = ipaddress.ip_address(address)
        assert address_refusal(ip, allow_private=True) == reason
        assert address_refusal(ip, allow_private=False) == reason

    @pytest.mark.parametrize("address", ["8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8", "93.184.216.34"])
    def test_global_addresses_are_allowed(self, address: str) -> None:
        """Public unicast addresses pass."""
        assert address_refusal(ipaddress.ip_address(address), allow_private=False) is None

    def test_embedded_ipv4_is_found(self) -> None:
        """Mapped, NAT64, 6to4 and Teredo addresses reveal the IPv4 address they reach."""
        v4 = ipaddress.IPv4Address("10.0.0.1")
        for text in ("::ffff:10.0.0.1", "64:ff9b::a00:1", "2002:a00:1::"):
            assert embedded_ipv4(ipaddress.IPv6Address(text)) == v4
        teredo = ipaddress.IPv6Address("2001:0:4136:e378:8000:63bf:f5ff:fffe")
        assert embedded_ipv4(teredo) == ipaddress.IPv4Address("10.0.0.1")
        assert embedded_ipv4(ipaddress.IPv6Address("2606:4700::1")) is None


class TestHeaders:
    def test_hop_by_hop_and_client_owned_headers_are_dropped(self) -> None:
        """Connection-level headers, the ones Connection names, Host, Content-Length, Expect, Accept-Encoding go."""
        sent = outbound_headers(
            {
                "Content-Type": "application/json",
                "authorization": "Bearer x",
                "Connection": "keep-alive, X-Secret-Hop",
                "x-secret-hop": "1",
                "Keep-Alive": "5",
                "Transfer-Encoding": "chunked",
                "TE": "trailers",
                "Trailer": "X",
                "Upgrade": "websocket",
                "Proxy-Authorization": "Basic x",
                "Proxy-Connection": "keep-alive",
                "HOST": "evil.test",
                "content-length": "0",
                "Expect": "100-continue",
                "Accept-Encoding": "gzip",
            }
        )
        assert sent == {"Content-Type": "application/json", "authorization": "Bearer x"}

    def test_only_safe_headers_come_back_masked(self) -> None:
        """Content-Type, Location and correlation ids come back, lower-cased, card numbers and CVCs masked."""
        kept = passed_back_headers(
            [
                ("Content-Type", "application/json"),
                ("Set-Cookie", "a=b"),
                ("X-Request-Id", f"r-{VISA}"),
                ("x-request-id", "second"),
                ("Location", "https://x.test/?cvc=737"),
                ("X-Powered-By", "thing"),
            ],
            ["737"],
        )
        assert kept == {
            "content-type": "application/json",
            "x-request-id": "r-[REDACTED CARD ****4242]",
            "location": f"https://x.test/?cvc={CVC_MASK}",
        }


class TestMasking:
    def test_card_numbers_are_redacted(self) -> None:
        """Plain or grouped, every card number goes."""
        text = f"a {VISA} b {' '.join(MASTERCARD[i : i + 4] for i in range(0, 16, 4))}"
        assert mask_response(text) == "a [REDACTED CARD ****4242] b [REDACTED CARD ****4444]"

    def test_a_cvc_is_masked_only_as_a_standalone_digit_run(self) -> None:
        """The inserted CVC is masked where no digit touches it, and left inside longer numbers."""
        text = '{"cvc":"737","id":17370,"note":"code 737.","amt":737}'
        assert mask_response(text, ["737"]) == (
            f'{{"cvc":"{CVC_MASK}","id":17370,"note":"code {CVC_MASK}.","amt":{CVC_MASK}}}'
        )

    def test_nothing_is_masked_without_cvcs(self) -> None:
        """Without an inserted CVC, three-digit runs stay."""
        assert mask_response("737 and 123") == "737 and 123"
