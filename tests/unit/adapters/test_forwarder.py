"""The forward client: address checks on what DNS answers, connections pinned to checked addresses, TLS names.

Literal addresses resolve without the network, so every forbidden class is
checked through the real ``getaddrinfo``.  Where a test needs DNS to say
something particular (a name that does not exist, an answer that changes
after the check), the forwarder is given a small ``getaddrinfo`` of the
test's own; the HTTPS server it then talks to is real.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from service.adapters.forwarder import (
    AddressForbidden,
    AddrInfo,
    DestinationNotAllowed,
    DestinationUnreachable,
    Forwarder,
    PinnedResolver,
    Target,
)
from service.settings import ForwardSettings
from tests.support.destination_server import DestinationServer

PINNED_NAME = "pinned.invalid"  # .invalid never resolves in real DNS (RFC 6761)


class FakeDns:
    """A getaddrinfo that answers from a table, and can change its answers, like a rebinding DNS server."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> Sequence[AddrInfo]:
        self.asked.append(host)
        if host not in self.answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        infos: list[AddrInfo] = []
        for address in self.answers[host]:
            if ":" in address:
                infos.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, port, 0, 0)))
            else:
                infos.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port)))
        return infos


@pytest.fixture
async def destination(tmp_path: Path) -> AsyncIterator[DestinationServer]:
    async with DestinationServer(tmp_path, names=("localhost", "127.0.0.1", PINNED_NAME)) as server:
        yield server


def forwarder(destination: DestinationServer | None = None, **kwargs: Any) -> Forwarder:
    settings = ForwardSettings(timeout_seconds=5.0, ca_file=destination.ca_pem if destination else None)
    return Forwarder(settings, **kwargs)


class TestAddressChecks:
    @pytest.mark.parametrize(
        ("host", "reason"),
        [
            ("127.0.0.1", "loopback"),
            ("10.20.30.40", "private"),
            ("192.168.0.10", "private"),
            ("169.254.169.254", "cloud metadata"),
            ("[::1]", "loopback"),
            ("[::ffff:127.0.0.1]", "loopback"),
            ("[fe80::1]", "link-local"),
            ("0.0.0.0", "unspecified"),
        ],
    )
    async def test_forbidden_literal_addresses_are_refused(self, host: str, reason: str) -> None:
        """An IP-literal destination in a forbidden class is refused before any connection."""
        client = forwarder()
        with pytest.raises(AddressForbidden, match=reason):
            await client.resolve(f"https://{host}/pay", allow_private=False, deadline=client.deadline())

    async def test_localhost_is_refused_without_allow_private(self) -> None:
        """A name that resolves to loopback is refused like the literal."""
        client = forwarder()
        with pytest.raises(AddressForbidden, match="loopback"):
            await client.resolve("https://localhost:8443/pay", allow_private=False, deadline=client.deadline())

    async def test_allow_private_admits_loopback(self) -> None:
        """With allow_private, localhost resolves to its loopback addresses only."""
        client = forwarder()
        target = await client.resolve("https://localhost:8443/pay", allow_private=True, deadline=client.deadline())
        assert target.host == "localhost"
        assert target.port == 8443
        assert target.addresses
        assert all(address in ("127.0.0.1", "::1") for _, address in target.addresses)

    async def test_one_forbidden_answer_among_public_ones_refuses_the_host(self) -> None:
        """A host whose answers mix public and private addresses is refused outright."""
        dns = FakeDns({"mixed.invalid": ["93.184.216.34", "10.0.0.5"]})
        client = forwarder(getaddrinfo=dns)
        with pytest.raises(AddressForbidden, match="private"):
            await client.resolve("https://mixed.invalid/pay", allow_private=False, deadline=client.deadline())

    async def test_metadata_is_refused_even_with_allow_private(self) -> None:
        """A name pointing at the cloud metadata service is refused whatever the entry allows."""
        dns = FakeDns({"meta.invalid": ["169.254.169.254"]})
        client = forwarder(getaddrinfo=dns)
        with pytest.raises(AddressForbidden, match="metadata"):
            await client.resolve("https://meta.invalid/", allow_private=True, deadline=client.deadline())

    async def test_a_name_that_does_not_resolve_is_unreachable(self) -> None:
        """No DNS answer is a 502-class failure, not a crash."""
        client = forwarder(getaddrinfo=FakeDns({}))
        with pytest.raises(DestinationUnreachable, match="resolve"):
            await client.resolve("https://nowhere.invalid/", allow_private=False, deadline=client.deadline())

    async def test_urls_that_parsers_read_differently_are_refused(self) -> None:
        """When yarl would send another path than the allowlist matched, the URL is refused."""
        client = forwarder()
        with pytest.raises(DestinationNotAllowed):
            await client.resolve("https://localhost/pay/%7euser", allow_private=True, deadline=client.deadline())


class TestPinning:
    async def test_the_connection_uses_the_checked_address_even_after_dns_changes(
        self, destination: DestinationServer
    ) -> None:
        """After the check DNS says 10.x; the request still goes to the checked 127.0.0.1, and DNS was asked once."""
        dns = FakeDns({PINNED_NAME: ["127.0.0.1"]})
        client = forwarder(destination, getaddrinfo=dns)
        deadline = client.deadline()
        target = await client.resolve(destination.url("/pay", host=PINNED_NAME), allow_private=True, deadline=deadline)
        dns.answers[PINNED_NAME] = ["10.255.255.1"]
        answer = await client.send(target, "POST", {"Content-Type": "application/json"}, b"{}", deadline=deadline)
        assert answer.status == 200
        assert destination.calls == 1
        assert destination.last.headers["Host"] == f"{PINNED_NAME}:{destination.port}"
        assert dns.asked == [PINNED_NAME]

    async def test_the_certificate_must_name_the_host(self, destination: DestinationServer) -> None:
        """A certificate that does not name the destination's host fails TLS, though the address is right."""
        dns = FakeDns({"unnamed.invalid": ["127.0.0.1"]})
        client = forwarder(destination, getaddrinfo=dns)
        deadline = client.deadline()
        target = await client.resolve(
            destination.url("/pay", host="unnamed.invalid"), allow_private=True, deadline=deadline
        )
        with pytest.raises(DestinationUnreachable, match="TLS"):
            await client.send(target, "POST", {}, b"{}", deadline=deadline)
        assert destination.calls == 0

    async def test_the_resolver_answers_only_for_its_host(self) -> None:
        """PinnedResolver gives the checked addresses for the destination's host and refuses any other name."""
        from yarl import URL

        target = Target(URL("https://pay.example.com/"), "pay.example.com", 443, ((socket.AF_INET, "93.184.216.34"),))
        resolver = PinnedResolver(target)
        found = await resolver.resolve("PAY.example.com", 443, socket.AF_UNSPEC)
        assert [(r["host"], r["port"]) for r in found] == [("93.184.216.34", 443)]
        with pytest.raises(OSError, match="only"):
            await resolver.resolve("evil.example", 443, socket.AF_UNSPEC)
        with pytest.raises(OSError, match="family"):
            await resolver.resolve("pay.example.com", 443, socket.AF_INET6)
