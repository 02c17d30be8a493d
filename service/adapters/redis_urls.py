"""Reading the credentials and ``host[:port]`` lists of the multi-host Redis URLs (``redis+sentinel://``, ``redis+cluster://``).

redis-py parses single-server URLs itself; the Sentinel and cluster URLs name
several hosts, which these do, IPv6 in brackets included.
"""

from __future__ import annotations

from urllib.parse import unquote

from service.errors import ConfigError


def host_port(text: str, default_port: int) -> tuple[str, int]:
    """``host[:port]`` (IPv6 in brackets), with ``default_port`` when the port is left out; ConfigError if malformed."""
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        port_text = rest.removeprefix(":") if rest.startswith(":") else ("" if not rest else None)
        if not bracket:
            port_text = None
    else:
        host, _, port_text = text.partition(":")
    if not host or port_text is None:
        raise ConfigError(f"redis.url: {text!r} is not host[:port] (IPv6 in brackets)")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ConfigError(f"redis.url: {text!r} has no valid port")
    return host, int(port_text)


def host_ports(netloc: str, default_port: int) -> tuple[tuple[str, int], ...]:
    """Every ``host[:port]`` of a comma-separated list."""
    return tuple(host_port(part, default_port) for part in netloc.split(",") if part)


def userinfo(netloc: str) -> tuple[str | None, str | None, str]:
    """(username, password, the rest) of ``[[username]:password@]rest``, percent-decoded; None when absent."""
    if "@" not in netloc:
        return None, None, netloc
    info, _, rest = netloc.rpartition("@")
    user, colon, secret = info.partition(":")
    return unquote(user) or None, unquote(secret) if colon else None, rest
