"""How an agency is set up to take payments: its processor, its limits, its forward destinations.

Processor credentials are not here in clear: ``sealed_credentials`` is a
ciphertext under the agency's data key, opened only when a processor is built.
"""

from __future__ import annotations

import enum
import ipaddress
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

AUTHORIZE_NET_PRODUCTION = "https://api.authorize.net/xml/v1/request.api"
AUTHORIZE_NET_SANDBOX = "https://apitest.authorize.net/xml/v1/request.api"


class ProcessorName(enum.StrEnum):
    SANDBOX = "sandbox"
    AUTHORIZE_NET = "authorize_net"


class InvalidProcessingInput(ValueError):
    """An operator's processor, limit or destination setting that cannot be used."""


@dataclass(frozen=True)
class ProcessorConfig:
    name: ProcessorName = ProcessorName.SANDBOX
    endpoint: str | None = None
    login_id: str | None = None
    sealed_credentials: bytes | None = None

    def public(self) -> dict[str, Any]:
        shown: dict[str, Any] = {"name": str(self.name)}
        if self.endpoint:
            shown["endpoint"] = self.endpoint
        if self.login_id:
            shown["login_id"] = self.login_id
        return shown

    def to_json(self) -> str:
        return json.dumps(
            {
                "name": str(self.name),
                "endpoint": self.endpoint,
                "login_id": self.login_id,
                "sealed": self.sealed_credentials.hex() if self.sealed_credentials else None,
            }
        )

    @classmethod
    def from_json(cls, text: str | bytes | None) -> ProcessorConfig:
        if not text:
            return cls()
        raw = json.loads(text)
        return cls(
            name=ProcessorName(raw["name"]),
            endpoint=raw.get("endpoint"),
            login_id=raw.get("login_id"),
            sealed_credentials=bytes.fromhex(raw["sealed"]) if raw.get("sealed") else None,
        )


def validate_endpoint(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise InvalidProcessingInput(f"endpoint {url!r}: must be an https URL")
    return url


@dataclass(frozen=True)
class Destination:
    """An allowlisted forward destination: https, exact host (and port), path prefix."""

    host: str
    port: int
    path_prefix: str
    allow_private: bool = False

    @property
    def url_prefix(self) -> str:
        port = "" if self.port == 443 else f":{self.port}"
        return f"https://{self.host}{port}{self.path_prefix}"

    def matches(self, url: str) -> bool:
        parts = urlsplit(url)
        if parts.scheme != "https" or parts.username or parts.password or parts.fragment:
            return False
        host = (parts.hostname or "").lower()
        return (
            host == self.host and (parts.port or 443) == self.port and _path_within(parts.path or "/", self.path_prefix)
        )

    def public(self) -> dict[str, Any]:
        return {"url_prefix": self.url_prefix, "allow_private": self.allow_private}

    def to_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "port": self.port,
            "path_prefix": self.path_prefix,
            "allow_private": self.allow_private,
        }


def _path_within(path: str, prefix: str) -> bool:
    if ".." in path.split("/"):
        return False
    if prefix.endswith("/"):
        return path.startswith(prefix)
    return path == prefix or path.startswith(prefix + "/")


def parse_destination(url: str, *, allow_private: bool = False) -> Destination:
    parts = urlsplit(url.strip())
    if parts.scheme != "https" or not parts.hostname:
        raise InvalidProcessingInput(f"destination {url!r}: must be an https URL with a host")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise InvalidProcessingInput(f"destination {url!r}: no query, fragment or credentials")
    host = parts.hostname.lower()
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        if not allow_private and not ipaddress.ip_address(host).is_global:
            raise InvalidProcessingInput(f"destination {url!r}: a private address needs --allow-private")
    return Destination(host=host, port=parts.port or 443, path_prefix=parts.path or "/", allow_private=allow_private)


def destinations_from_json(text: str | bytes | None) -> tuple[Destination, ...]:
    if not text:
        return ()
    return tuple(Destination(**d) for d in json.loads(text))


def destinations_to_json(destinations: tuple[Destination, ...]) -> str:
    return json.dumps([d.to_dict() for d in destinations])
