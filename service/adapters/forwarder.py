"""The forward proxy's outbound HTTPS client: resolve, check, pin, verify, send, bounded read.

A forward carries real card data to a URL an agency chose, so the client is
built to go exactly where the allowlist and the address rules said, and
nowhere else:

* ``resolve`` parses the URL with yarl (what aiohttp will send) and refuses it
  when yarl and ``urllib`` (what the allowlist matched) disagree about host,
  port, path or query; it then resolves the host with the event loop's
  ``getaddrinfo`` and refuses the destination if *any* address is forbidden
  (``service.domain.forwarding.address_refusal``).
* ``send`` connects only to the addresses ``resolve`` validated: its
  connector's resolver (``PinnedResolver``) answers with those and nothing
  else, so a DNS answer that changes between check and connect (rebinding)
  is never used.  The destination's certificate is verified for its host
  name against the system CAs plus ``forward.ca_file``, TLS 1.2 at least.
  Redirects are not followed (3xx comes back as the answer), proxies from
  the environment are ignored, cookies are not kept, nothing is pooled
  between forwards, the answer must arrive uncompressed and within
  ``forward.max_response_bytes``, and the whole forward — lookup, connect,
  send, read — within ``forward.timeout_seconds``.

Failures are ``ForwardFailure`` subclasses with a stable ``code``; their
messages say what went wrong, never what was sent.  Nothing here logs.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from service.domain.forwarding import address_refusal, outbound_headers, parse_address
from service.settings import ForwardSettings

USER_AGENT: Final = "cardvault-forward/1"
READ_CHUNK: Final = 64 * 1024

AddrInfo = tuple[int, int, int, str, tuple[Any, ...]]
GetAddrInfo = Callable[[str, int], Awaitable[Sequence[AddrInfo]]]


class ForwardFailure(Exception):
    """The forward could not be made or gave no usable answer."""

    code = "destination_unreachable"


class DestinationNotAllowed(ForwardFailure):
    code = "destination_not_allowed"


class AddressForbidden(ForwardFailure):
    code = "destination_address_forbidden"


class DestinationUnreachable(ForwardFailure):
    code = "destination_unreachable"


class DestinationTimeout(ForwardFailure):
    code = "destination_timeout"


class ResponseTooLarge(ForwardFailure):
    code = "destination_response_too_large"


class ResponseUnreadable(ForwardFailure):
    code = "destination_response_unreadable"


@dataclass(frozen=True)
class Target:
    """A destination whose addresses have been checked: where ``send`` may connect, and only there."""

    url: URL
    host: str
    port: int
    addresses: tuple[tuple[int, str], ...]  # (address family, numeric host) in getaddrinfo's order


@dataclass(frozen=True, repr=False)
class Answer:
    """The destination's answer as received (the body may hold card data: prints without it)."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    charset: str | None

    def __repr__(self) -> str:
        return f"<Answer {self.status}, {len(self.body)} bytes>"


class PinnedResolver(AbstractResolver):
    """Answers for the target's host with the validated addresses, and for nothing else."""

    def __init__(self, target: Target) -> None:
        self.target = target

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if host.lower().rstrip(".") != self.target.host.rstrip("."):
            raise OSError("the forward may only connect to its destination's host")
        found: list[ResolveResult] = [
            {
                "hostname": host,
                "host": address,
                "port": port,
                "family": address_family,
                "proto": socket.IPPROTO_TCP,
                "flags": socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
            }
            for address_family, address in self.target.addresses
            if family in (socket.AF_UNSPEC, address_family)
        ]
        if not found:
            raise OSError("no validated address of that family")
        return found

    async def close(self) -> None:
        return None


@functools.lru_cache(maxsize=8)
def tls_context(ca_file: Path | None) -> ssl.SSLContext:
    """Verify certificate and host name against the system CAs, plus ``ca_file``; TLS 1.2 or later."""
    context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca_file is not None:
        context.load_verify_locations(cafile=str(ca_file))
    return context


class Forwarder:
    def __init__(self, settings: ForwardSettings, *, getaddrinfo: GetAddrInfo | None = None) -> None:
        self.settings = settings
        self._getaddrinfo = getaddrinfo or _loop_getaddrinfo

    def deadline(self) -> float:
        """The event-loop time by which the whole forward must be done."""
        return asyncio.get_running_loop().time() + self.settings.timeout_seconds

    async def resolve(self, url: str, *, allow_private: bool, deadline: float) -> Target:
        """Parse and resolve ``url``; every address must pass the address rules."""
        parsed = _consistent_url(url)
        host = parsed.host or ""
        port = parsed.port or 443
        try:
            async with asyncio.timeout_at(deadline):
                infos = await self._getaddrinfo(host, port)
        except TimeoutError:
            raise DestinationTimeout("the destination's host name did not resolve in time") from None
        except OSError:
            raise DestinationUnreachable("the destination's host name does not resolve") from None
        addresses: list[tuple[int, str]] = []
        for family, _, _, _, sockaddr in infos:
            text = _numeric_host(family, sockaddr)
            try:
                address = parse_address(text)
            except ValueError:
                raise DestinationUnreachable("the destination's host resolved to something unusable") from None
            reason = address_refusal(address, allow_private=allow_private)
            if reason is not None:
                raise AddressForbidden(f"the destination's host resolves to a {reason} address")
            if (family, text) not in addresses:
                addresses.append((family, text))
        if not addresses:
            raise DestinationUnreachable("the destination's host name has no address")
        return Target(url=parsed, host=host.lower(), port=port, addresses=tuple(addresses))

    async def send(
        self, target: Target, method: str, headers: Mapping[str, str], body: bytes, *, deadline: float
    ) -> Answer:
        """One request to the pinned addresses; the answer, whatever its status, or a ForwardFailure."""
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            raise DestinationTimeout("no time was left to send the request")
        context = tls_context(self.settings.ca_file)
        sent = {"User-Agent": USER_AGENT, **outbound_headers(headers), "Accept-Encoding": "identity"}
        connector = aiohttp.TCPConnector(
            resolver=PinnedResolver(target), use_dns_cache=False, ssl=context, force_close=True, limit=1
        )
        try:
            async with (
                aiohttp.ClientSession(
                    connector=connector,
                    timeout=aiohttp.ClientTimeout(total=remaining),
                    auto_decompress=False,
                    trust_env=False,
                    cookie_jar=aiohttp.DummyCookieJar(),
                ) as session,
                session.request(
                    method, target.url, data=body, headers=sent, allow_redirects=False, ssl=context
                ) as response,
            ):
                return await self._answer(response)
        except ForwardFailure:
            raise
        except TimeoutError:
            raise DestinationTimeout("the destination did not answer in time") from None
        except (aiohttp.ClientConnectorCertificateError, aiohttp.ClientSSLError, ssl.SSLError):
            raise DestinationUnreachable(
                "TLS with the destination failed (certificate not trusted or not for this host)"
            ) from None
        except aiohttp.ClientConnectorError:
            raise DestinationUnreachable("the destination refused or dropped the connection") from None
        except (aiohttp.ClientError, OSError):
            raise DestinationUnreachable("the destination broke off the exchange") from None

    async def _answer(self, response: aiohttp.ClientResponse) -> Answer:
        limit = self.settings.max_response_bytes
        if response.content_length is not None and response.content_length > limit:
            raise ResponseTooLarge(f"the destination's answer is larger than {limit} bytes")
        encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise ResponseUnreadable("the destination answered compressed although asked not to")
        body = bytearray()
        async for chunk in response.content.iter_chunked(READ_CHUNK):
            body += chunk
            if len(body) > limit:
                raise ResponseTooLarge(f"the destination's answer is larger than {limit} bytes")
        return Answer(
            status=response.status,
            headers=tuple(response.headers.items()),
            body=bytes(body),
            charset=response.charset,
        )


def _consistent_url(url: str) -> URL:
    """yarl's reading of ``url``, refused unless it agrees with the reading the allowlist matched."""
    split = urlsplit(url)
    try:
        parsed = URL(url)
    except ValueError:
        raise DestinationNotAllowed("the destination URL cannot be parsed unambiguously") from None
    agrees = (
        parsed.scheme == "https"
        and parsed.host is not None
        and _same_host(parsed.host, (split.hostname or "").lower())
        and (parsed.port or 443) == (split.port or 443)
        and parsed.raw_path == (split.path or "/")
        and parsed.raw_query_string == split.query
        and not parsed.user
        and not parsed.password
    )
    if not agrees:
        raise DestinationNotAllowed("the destination URL cannot be parsed unambiguously")
    return URL(url, encoded=True)


def _same_host(a: str, b: str) -> bool:
    """Equal names, or equal addresses however written (yarl compresses IPv6 literals)."""
    if a == b:
        return True
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return False


def _numeric_host(family: int, sockaddr: tuple[Any, ...]) -> str:
    host = str(sockaddr[0])
    if family == socket.AF_INET6 and len(sockaddr) >= 4 and sockaddr[3] and "%" not in host:
        host = f"{host}%{sockaddr[3]}"
    return host


async def _loop_getaddrinfo(host: str, port: int) -> Sequence[AddrInfo]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return [(int(f), int(t), p, c, tuple(s)) for f, t, p, c, s in infos]
