"""Trusted firewall proxies: who may tell the service the client's address and scheme.

Why this module exists: behind the firewall proxy every TCP connection comes from the proxy,
so the access log, the staff audit trail (PCI DSS 10.2: where an event came from) and the
velocity limits would all see the proxy's address.  The proxy passes the real one along in
``X-Forwarded-For``/``X-Forwarded-Proto`` or in ``Forwarded`` (RFC 7239), but anybody can send
those headers, so they are believed only from a TCP peer in ``proxy.trusted``:

- **untrusted peer** (anyone, when nothing is configured): the headers are ignored, the peer's
  own address and the connection's scheme stand, and the attempt is logged (header names,
  never values; at most one line per ``LOG_INTERVAL_SECONDS`` with a count of the rest);
- **trusted peer**: only the header family the proxy is configured to set
  (``proxy.headers``) is read, and of it only the right-most entry, the one the proxy itself
  wrote.  Anything to its left came from the client (nginx's ``$proxy_add_x_forwarded_for``
  appends to what the client sent) and is dropped and logged.  That entry must be one IP
  address and the scheme ``http`` or ``https``; anything else is a broken proxy and gets a
  400 ``malformed_request`` problem.  ``X-Forwarded-Host`` and ``Forwarded: host=`` are never
  honoured: the Host header stands.  A trusted peer that sends no forwarding header (a health
  check, or TLS passed through) keeps its own address.

The final check and the rewrite of ``request.remote``/``request.scheme`` are aiohttp-remotes'
strict middlewares (``XForwardedStrict``/``ForwardedStrict`` with exactly one trusted hop).
They are not used bare because they answer 400 to every untrusted peer and to any request
without the headers, and because they count every entry the client prepended; this module
gates and trims first, then lets them verify and clone the request.

This middleware runs just inside ``errors`` (so its 400 is a problem document with the request
id and security headers), before every other middleware and handler, which therefore see the
client's ``request.remote``, ``request.scheme`` and ``request.secure``.  The outer middlewares
and aiohttp's access logger hold the original request object, on which the resolved values are
recorded: they read them through ``client_address`` and ``client_scheme``.
"""

from __future__ import annotations

import functools
import ipaddress
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import structlog
from aiohttp import hdrs, web
from aiohttp_remotes import ForwardedStrict, XForwardedStrict
from multidict import CIMultiDict

from service.errors import MalformedRequest
from service.settings import ProxySettings

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Headers that claim to describe the client; their presence from an untrusted peer is logged.
FORWARDING_HEADERS = (
    hdrs.FORWARDED,
    hdrs.X_FORWARDED_FOR,
    hdrs.X_FORWARDED_PROTO,
    hdrs.X_FORWARDED_HOST,
    "X-Real-IP",
)
SCHEMES = frozenset({"http", "https"})
#: ``get_extra_info`` name under which a PROXY-protocol connection carries the client's address.
PROXIED_CLIENT = "cardvault_proxied_client"
LOG_INTERVAL_SECONDS = 10.0
MALFORMED = "The forwarding headers from the proxy are malformed"

log = structlog.get_logger("cardvault.proxy")


@dataclass(frozen=True)
class ForwardedClient:
    """The client as the trusted proxy reported it."""

    remote: str
    scheme: str


FORWARDED_CLIENT = web.RequestKey("forwarded_client", ForwardedClient)


def proxied_client(request: web.BaseRequest) -> str | None:
    """The client a PROXY-protocol header named for this connection (``service.http.proxy_protocol``), or None."""
    transport = request.transport
    value = transport.get_extra_info(PROXIED_CLIENT) if transport is not None else None
    return value if isinstance(value, str) else None


def client_address(request: web.BaseRequest) -> str | None:
    """The client's address, also from outer middlewares and the access logger."""
    forwarded = request.get(FORWARDED_CLIENT)
    return forwarded.remote if forwarded is not None else request.remote


def client_scheme(request: web.BaseRequest) -> str:
    """``https`` when the client's own connection was TLS (to us or to the trusted proxy)."""
    forwarded = request.get(FORWARDED_CLIENT)
    return forwarded.scheme if forwarded is not None else request.scheme


def peer_address(request: web.BaseRequest) -> IPAddress | None:
    """The TCP peer's IP address (IPv4-mapped IPv6 read as IPv4); None for a unix socket or a gone one."""
    transport = request.transport
    peername = transport.get_extra_info("peername") if transport is not None else None
    if not isinstance(peername, tuple) or not peername:
        return None
    return _parse_peer(peername[0])


@functools.lru_cache(maxsize=4096)
def _parse_peer(host: str) -> IPAddress | None:
    """Parsed once per distinct peer: every request asks, and parsing is a few microseconds of pure Python."""
    try:
        return unmapped(ipaddress.ip_address(host))
    except ValueError:
        return None


def unmapped(address: IPAddress) -> IPAddress:
    """``::ffff:10.0.0.1`` is 10.0.0.1 (a listener on ``::`` sees IPv4 clients that way)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _with_mapped_forms(networks: Iterable[IPNetwork]) -> list[IPNetwork]:
    """Each IPv4 network also as IPv4-mapped IPv6, for a listener on ``::`` that sees ``::ffff:a.b.c.d``."""
    result: list[IPNetwork] = []
    for network in networks:
        result.append(network)
        if isinstance(network, ipaddress.IPv4Network):
            mapped = f"::ffff:{network.network_address}/{96 + network.prefixlen}"
            result.append(ipaddress.IPv6Network(mapped))
    return result


def _forwarded_for_address(value: str) -> str:
    """RFC 7239 ``for=`` as a bare address: ``192.0.2.60``, ``192.0.2.60:80``, ``[2001:db8::1]:80``."""
    text = value.strip()
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    return _address(text, "Forwarded for=")


def _address(text: str, where: str) -> str:
    try:
        return str(unmapped(ipaddress.ip_address(text.strip())))
    except ValueError:
        raise MalformedRequest(f"{MALFORMED}: {where} is not one IP address") from None


def _scheme(value: str | None, where: str) -> str | None:
    if value is None:
        return None
    scheme = value.strip().lower()
    if scheme not in SCHEMES:
        raise MalformedRequest(f"{MALFORMED}: {where} is neither http nor https")
    return scheme


class _Refusing:
    """The strict middlewares answer a bare 400; ours is a problem document that says why."""

    async def raise_error(self, request: web.Request) -> NoReturn:
        raise MalformedRequest(f"{MALFORMED}: the proxy chain does not match the trusted proxies")


class _XForwardedStrict(_Refusing, XForwardedStrict):
    pass


class _ForwardedStrict(_Refusing, ForwardedStrict):
    pass


class ThrottledWarning:
    """One warning line per interval for an event that an attacker can repeat at will."""

    def __init__(self, event: str, interval: float = LOG_INTERVAL_SECONDS) -> None:
        self.event = event
        self.interval = interval
        self._last: float | None = None
        self._suppressed = 0

    def __call__(self, **fields: Any) -> None:
        now = time.monotonic()
        if self._last is not None and now - self._last < self.interval:
            self._suppressed += 1
            return
        log.warning(self.event, suppressed=self._suppressed, **fields)
        self._last = now
        self._suppressed = 0


class TrustedProxies:
    """The middleware; one per application, built from ``proxy`` settings."""

    def __init__(self, settings: ProxySettings) -> None:
        self.family = settings.headers
        self.networks: tuple[IPNetwork, ...] = tuple(ipaddress.ip_network(cidr) for cidr in settings.trusted)
        hop = [_with_mapped_forms(self.networks)]
        self._strict = _ForwardedStrict(hop) if self.family == "forwarded" else _XForwardedStrict(hop)
        self._untrusted = ThrottledWarning("forwarding headers ignored: peer is not a trusted proxy")
        self._prepended = ThrottledWarning("client-supplied forwarding entries dropped")

    def trusts(self, address: IPAddress | None) -> bool:
        return address is not None and any(address in network for network in self.networks)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        peer = peer_address(request)
        # Inside TLS passed through a stream proxy, forwarding headers are the client's own words.
        if proxied_client(request) is not None or not self.trusts(peer):
            present = [name for name in FORWARDING_HEADERS if name in request.headers]
            if present:
                self._untrusted(peer=str(peer) if peer else None, headers=present, path=request.path)
            return await handler(request)
        headers = self._one_hop(request)
        if headers is None:
            return await handler(request)

        async def record(resolved: web.Request) -> web.StreamResponse:
            request[FORWARDED_CLIENT] = ForwardedClient(resolved.remote or str(peer), resolved.scheme)
            return await handler(resolved)

        return await self._strict.middleware(request.clone(headers=headers), record)

    def _one_hop(self, request: web.Request) -> CIMultiDict[str] | None:
        """The request's headers with only what the trusted proxy itself wrote; None when it wrote nothing."""
        if self.family == "forwarded":
            entry, dropped = self._forwarded_entry(request)
        else:
            entry, dropped = self._x_forwarded_entry(request)
        if entry is None:
            return None
        if dropped:
            self._prepended(peer=str(peer_address(request)), dropped=dropped, path=request.path)
        headers = CIMultiDict(request.headers)
        for name in FORWARDING_HEADERS:
            headers.popall(name, None)
        headers.update(entry)
        return headers

    @staticmethod
    def _x_forwarded_entry(request: web.Request) -> tuple[dict[str, str] | None, int]:
        addresses = _list_header(request.headers.getall(hdrs.X_FORWARDED_FOR, ()))
        schemes = _list_header(request.headers.getall(hdrs.X_FORWARDED_PROTO, ()))
        if not addresses:
            if schemes:
                raise MalformedRequest(f"{MALFORMED}: X-Forwarded-Proto without X-Forwarded-For")
            return None, 0
        entry = {str(hdrs.X_FORWARDED_FOR): _address(addresses[-1], "the last X-Forwarded-For entry")}
        scheme = _scheme(schemes[-1] if schemes else None, "X-Forwarded-Proto")
        if scheme is not None:
            entry[str(hdrs.X_FORWARDED_PROTO)] = scheme
        return entry, len(addresses) - 1

    @staticmethod
    def _forwarded_entry(request: web.Request) -> tuple[dict[str, str] | None, int]:
        elements = request.forwarded
        if not elements:
            return None, 0
        last = elements[-1]
        if not last.get("for"):
            raise MalformedRequest(f"{MALFORMED}: the last Forwarded element has no for=")
        address = _forwarded_for_address(last["for"])
        value = f'for="{address}"'
        scheme = _scheme(last.get("proto"), "Forwarded proto=")
        if scheme is not None:
            value += f";proto={scheme}"
        return {str(hdrs.FORWARDED): value}, len(elements) - 1


def _list_header(values: Sequence[str]) -> list[str]:
    """Repeated list headers read as one comma-separated list (RFC 9110 5.3); empty items dropped."""
    return [item.strip() for value in values for item in value.split(",") if item.strip()]
