"""The forward proxy's rules, as pure functions: which URLs, which addresses, which headers, what comes back.

Kept apart from the adapter that does the I/O so each rule can be read and
tested on its own:

* ``allowed_destination``: the URL is first held to a strict shape (printable
  ASCII, https, no credentials, fragment, backslash, dot segments or encoded
  dots and slashes, which some servers decode into ``..``), and only then
  matched against the agency's allowlist; the longest matching path prefix
  wins, and its ``allow_private`` decides the address rule.
* ``address_refusal``: why an address may not be connected to.  Loopback,
  private, link-local, shared (CGNAT) and every other non-global address are
  refused unless the allowlist entry has ``allow_private``; IPv4 embedded in
  IPv6 (mapped, NAT64, 6to4, Teredo) is judged as the IPv4 address it reaches.
  Unspecified, multicast and reserved addresses and the cloud metadata
  endpoints are refused even with ``allow_private``: no payment endpoint lives
  there, and ``0.0.0.0`` reaches the local host.
* ``outbound_headers``: the agency's headers minus hop-by-hop headers and the
  ones the client library must own (Host, Content-Length, Expect,
  Accept-Encoding).
* ``passed_back_headers`` and ``mask_response``: what of the destination's
  answer goes back to the agency: a few safe headers, and text with every card
  number redacted and every CVC the forward inserted masked.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from typing import Final
from urllib.parse import urlsplit

from service.domain.processing import Destination
from service.domain.redaction import redact_card_numbers

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_URL_LENGTH: Final = 2048
_URL_CHARACTERS: Final = re.compile(r"\A[\x21-\x7e]+\Z")
_ENCODED_DOT_OR_SLASH: Final = re.compile(r"%(?:2e|2f|5c)", re.IGNORECASE)

# --- destinations ---------------------------------------------------------------


def allowed_destination(url: str, destinations: Iterable[Destination]) -> Destination | None:
    """The allowlist entry ``url`` falls under (longest path prefix), or None when it is not allowed."""
    if not _well_formed(url):
        return None
    matching = [d for d in destinations if d.matches(url)]
    return max(matching, key=lambda d: len(d.path_prefix), default=None)


def _well_formed(url: str) -> bool:
    if len(url) > MAX_URL_LENGTH or not _URL_CHARACTERS.match(url) or "\\" in url:
        return False
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number or out of range
    except ValueError:
        return False
    if parts.scheme != "https" or "@" in parts.netloc or parts.fragment or "#" in url or not parts.hostname:
        return False
    path = parts.path or "/"
    if not path.startswith("/") or _ENCODED_DOT_OR_SLASH.search(path):
        return False
    return not any(segment in (".", "..") for segment in path.split("/"))


# --- addresses --------------------------------------------------------------------

#: Cloud instance-metadata services: never a payment endpoint, always a prize.
METADATA_ADDRESSES: Final = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "169.254.170.2", "100.100.100.200", "fd00:ec2::254")
)
_NAT64: Final = ipaddress.ip_network("64:ff9b::/96")


def embedded_ipv4(address: IpAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address reaches: IPv4-mapped, NAT64 (64:ff9b::/96), 6to4 or Teredo."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    return None


def address_refusal(address: IpAddress, *, allow_private: bool) -> str | None:
    """Why the forward may not connect to ``address`` (a short reason), or None when it may."""
    inner = embedded_ipv4(address)
    if inner is not None:  # judged entirely by the IPv4 address it reaches
        reason = address_refusal(inner, allow_private=allow_private)
        return None if reason is None else f"{reason} (IPv4 inside IPv6)"
    if address.is_unspecified:
        return "unspecified"
    if address.is_multicast:
        return "multicast"
    if address in METADATA_ADDRESSES:
        return "cloud metadata"
    if address.is_loopback:  # before "reserved": IPv6's reserved ::/8 holds ::1
        return None if allow_private else "loopback"
    if address.is_reserved:
        return "reserved"
    if allow_private:
        return None
    if address.is_link_local:
        return "link-local"
    if isinstance(address, ipaddress.IPv6Address) and address.is_site_local:
        return "site-local"
    if address.is_private:
        return "private"
    if not address.is_global:
        return "not globally routable"
    return None


def parse_address(text: str) -> IpAddress:
    """An address as getaddrinfo prints it (an IPv6 zone such as ``%eth0`` kept); ValueError if it is not one."""
    return ipaddress.ip_address(text)


# --- headers ------------------------------------------------------------------------

# \A…\Z, not ^…$: "$" would also match before a trailing newline.
HEADER_NAME: Final = re.compile(r"\A[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,128}\Z")
HEADER_VALUE: Final = re.compile(r"\A[\x20-\x7e\t]{0,4096}\Z")

#: Connection-level headers (RFC 9110 7.6.1 and the usual extras) and the ones the client must own.
STRIPPED_HEADERS: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "expect",
        "accept-encoding",
    }
)

#: Headers of the destination's answer the agency gets back (values redacted); nothing else.
PASSED_BACK_HEADERS: Final = (
    "content-type",
    "location",
    "retry-after",
    "x-request-id",
    "request-id",
    "x-correlation-id",
    "correlation-id",
    "x-trace-id",
)
MAX_PASSED_BACK_VALUE: Final = 1024


def outbound_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The agency's headers to send on: hop-by-hop headers, those a Connection header names, and
    Host, Content-Length, Expect and Accept-Encoding removed (names compared case-insensitively)."""
    named_by_connection = {
        token.strip().lower()
        for name, value in headers.items()
        if name.lower() == "connection"
        for token in value.split(",")
    }
    dropped = STRIPPED_HEADERS | named_by_connection
    return {name: value for name, value in headers.items() if name.lower() not in dropped}


def header_value(headers: Mapping[str, str], name: str) -> str | None:
    wanted = name.lower()
    return next((v for k, v in headers.items() if k.lower() == wanted), None)


def passed_back_headers(headers: Iterable[tuple[str, str]], cvcs: Iterable[str] = ()) -> dict[str, str]:
    """The safe subset of the destination's headers, lower-cased names, first value of each, masked."""
    kept: dict[str, str] = {}
    secrets = tuple(cvcs)
    for name, value in headers:
        key = name.lower()
        if key in PASSED_BACK_HEADERS and key not in kept:
            kept[key] = mask_response(value[:MAX_PASSED_BACK_VALUE], secrets)
    return kept


# --- the answer's text -------------------------------------------------------------------

CVC_MASK: Final = "[REDACTED CVC]"


def mask_response(text: str, cvcs: Iterable[str] = ()) -> str:
    """``text`` with every card number redacted and each inserted CVC masked where it stands alone as digits.

    "Stands alone" means no ASCII digit directly before or after it: a CVC of
    ``737`` is masked in ``"cvc":"737"`` but not inside ``17370``.  The price is
    some over-masking (an amount of 737 is masked too), which is the safe side.
    """
    masked = redact_card_numbers(text)
    for cvc in sorted(set(cvcs), key=len, reverse=True):
        if cvc.isascii() and cvc.isdigit():
            masked = re.sub(rf"(?<![0-9]){cvc}(?![0-9])", CVC_MASK, masked)
    return masked
