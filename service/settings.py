"""Settings: the shape of everything the service can be told, with its defaults.

Everything lives here as frozen dataclasses, so the rest of the code reads
typed attributes; ``service.settings_schema`` holds the marshmallow schemas
that validate input and load into them, and reading files and variables into
those is ``service.settings_loader``'s job.

Precedence, lowest first: the schema defaults (mirrored in
``config/default.yaml``), the file given by ``--config`` or
``CARDVAULT_CONFIG``, ``CARDVAULT_*`` environment variables, command-line
flags.  Environment names map to keys by lower-casing and splitting on a
double underscore: ``CARDVAULT_SERVER__PORT`` is ``server.port``; the
top-level keys have plain names (``CARDVAULT_MODE``, ``CARDVAULT_DATA_DIR``)
and ``CARDVAULT_REDIS_URL`` is kept as the familiar name of ``redis.url``.

The master key itself is never a setting that a file can hold: it comes from
``keys.master_key_file`` or the ``CARDVAULT_MASTER_KEY`` variable.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from service.tls.mozilla import DEFAULT_SESSION_CACHE_SIZE

ENV_PREFIX = "CARDVAULT_"
#: Variables that are read elsewhere and are not settings keys.
ENV_NOT_SETTINGS = frozenset({"CARDVAULT_CONFIG", "CARDVAULT_MASTER_KEY", "CARDVAULT_TEST_CLOCK"})
ENV_ALIASES: Mapping[str, tuple[str, ...]] = {"REDIS_URL": ("redis", "url")}

Mode = Literal["development", "production"]
Durability = Literal["fsync", "replicas", "fsync+replicas"]


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8443
    plain_http: bool = False
    max_body_bytes: int = 32 * 1024
    keepalive_timeout: float = 75.0
    request_read_timeout: float = 15.0
    shutdown_timeout: float = 30.0
    workers: int = 1


@dataclass(frozen=True)
class TlsSettings:
    cert_file: Path | None = None
    key_file: Path | None = None
    client_ca_file: Path | None = None
    #: TLS sessions each serving process keeps for resumption (``service.tls.mozilla.set_session_cache_size``).
    session_cache_size: int = DEFAULT_SESSION_CACHE_SIZE


@dataclass(frozen=True)
class RedisSettings:
    url: str | None = None
    socket_timeout: float = 5.0
    connect_timeout: float = 2.0
    max_connections: int = 64
    assume_durable: bool = False
    #: What a 2xx for a write promises (``service.adapters.durability``): "fsync" (on the master's
    #: disk), "replicas" (on ``replicas`` replicas), or "fsync+replicas" (both).
    durability: Durability = "fsync"
    replicas: int = 1
    wait_timeout_ms: int | None = None  # None: half of socket_timeout, at most 1000 ms


@dataclass(frozen=True)
class KeySettings:
    master_key_file: Path | None = None
    previous_master_key_files: tuple[Path, ...] = ()


@dataclass(frozen=True)
class TokenSettings:
    cvc_ttl_seconds: int = 900
    default_ttl_days: int | None = None


@dataclass(frozen=True)
class ProcessorSettings:
    timeout_seconds: float = 25.0
    breaker_failures: int = 5
    breaker_reset_seconds: float = 30.0
    sandbox_slow_seconds: float = 30.0
    sandbox_settlement_cutoff: str = "22:00"
    ca_file: Path | None = None


@dataclass(frozen=True)
class ForwardSettings:
    timeout_seconds: float = 25.0
    max_response_bytes: int = 1024 * 1024
    ca_file: Path | None = None


@dataclass(frozen=True)
class RedactionSettings:
    """``POST /v1/redact``: how much text one request may carry, and what tokenize mode may create."""

    max_body_bytes: int = 1024 * 1024
    max_tokens: int = 100
    token_ttl_days: int = 30


@dataclass(frozen=True)
class CheckoutSettings:
    session_ttl_seconds: int = 1800


@dataclass(frozen=True)
class StaffSettings:
    public_url: str | None = None
    idle_timeout_seconds: int = 900
    absolute_timeout_seconds: int = 43200


@dataclass(frozen=True)
class AuthSettings:
    cache_seconds: float = 5.0


ForwardingHeaders = Literal["x-forwarded", "forwarded"]


@dataclass(frozen=True)
class ProxySettings:
    """The firewall proxies whose forwarding headers are believed (``service.http.proxy``)."""

    trusted: tuple[str, ...] = ()
    headers: ForwardingHeaders = "x-forwarded"
    #: A second HTTPS listener for TLS passed through a stream proxy (``service.http.proxy_protocol``).
    proxy_protocol_port: int | None = None
    proxy_protocol_trusted: tuple[str, ...] = ()


@dataclass(frozen=True)
class VelocitySettings:
    """Card-testing defence: default limits (COUNT/PERIOD or off) and the adaptive rule (README)."""

    enabled: bool = True
    tokens_per_address: str = "10/10m"
    tokens_per_key: str = "600/1m"
    tokens_per_staff: str = "20/10m"
    tokens_per_card: str = "5/10m"
    tokens_per_agency: str = "3000/1m"
    charges_per_address: str = "5/10m"
    charges_per_key: str = "300/1m"
    charges_per_staff: str = "20/10m"
    charges_per_card: str = "5/1h"
    charges_per_agency: str = "1200/1m"
    decline_window_seconds: int = 600
    decline_ratio: float = 0.5
    decline_min_attempts_agency: int = 20
    decline_min_attempts_address: int = 4
    tighten_factor: int = 4
    tighten_seconds: int = 1800
    retry_after_seconds: int = 60


@dataclass(frozen=True)
class AuditSettings:
    """The audit log's retention (``service.audit_retention``): queryable in the stream, then archived."""

    queryable_days: int = 90
    retention_days: int = 365


@dataclass(frozen=True)
class LogSettings:
    level: str = "info"


@dataclass(frozen=True)
class MetricsSettings:
    """The Prometheus listener (``service.http.metrics_listener``), apart from the public one."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 9464
    allow_non_loopback: bool = False


@dataclass(frozen=True)
class Settings:
    mode: Mode = "development"
    data_dir: Path = Path("var")
    server: ServerSettings = field(default_factory=ServerSettings)
    tls: TlsSettings = field(default_factory=TlsSettings)
    redis: RedisSettings = field(default_factory=RedisSettings)
    keys: KeySettings = field(default_factory=KeySettings)
    tokens: TokenSettings = field(default_factory=TokenSettings)
    processors: ProcessorSettings = field(default_factory=ProcessorSettings)
    forward: ForwardSettings = field(default_factory=ForwardSettings)
    redaction: RedactionSettings = field(default_factory=RedactionSettings)
    checkout: CheckoutSettings = field(default_factory=CheckoutSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    staff: StaffSettings = field(default_factory=StaffSettings)
    proxy: ProxySettings = field(default_factory=ProxySettings)
    velocity: VelocitySettings = field(default_factory=VelocitySettings)
    log: LogSettings = field(default_factory=LogSettings)
    audit: AuditSettings = field(default_factory=AuditSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)

    @property
    def production(self) -> bool:
        return self.mode == "production"

    @property
    def embedded_redis(self) -> bool:
        """No Redis URL given: `serve` runs a private redis-server under data_dir."""
        return self.redis.url is None
