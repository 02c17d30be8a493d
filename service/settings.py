"""Settings: the shape of everything the service can be told, with its defaults.

Everything lives here as marshmallow schemas that load into frozen
dataclasses, so the rest of the code reads typed attributes; reading files
and variables into them is ``service.settings_loader``'s job.

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
from typing import Any, Literal

from marshmallow import RAISE, Schema, ValidationError, fields, post_load, validate, validates_schema

ENV_PREFIX = "CARDVAULT_"
#: Variables that are read elsewhere and are not settings keys.
ENV_NOT_SETTINGS = frozenset({"CARDVAULT_CONFIG", "CARDVAULT_MASTER_KEY", "CARDVAULT_TEST_CLOCK"})
ENV_ALIASES: Mapping[str, tuple[str, ...]] = {"REDIS_URL": ("redis", "url")}

Mode = Literal["development", "production"]


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8443
    plain_http: bool = False
    max_body_bytes: int = 32 * 1024
    shutdown_timeout: float = 15.0


@dataclass(frozen=True)
class TlsSettings:
    cert_file: Path | None = None
    key_file: Path | None = None


@dataclass(frozen=True)
class RedisSettings:
    url: str | None = None
    socket_timeout: float = 5.0
    connect_timeout: float = 2.0
    max_connections: int = 64
    assume_durable: bool = False


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
    ca_file: Path | None = None


@dataclass(frozen=True)
class ForwardSettings:
    timeout_seconds: float = 25.0
    max_response_bytes: int = 1024 * 1024
    ca_file: Path | None = None


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


@dataclass(frozen=True)
class LogSettings:
    level: str = "info"


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
    checkout: CheckoutSettings = field(default_factory=CheckoutSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    staff: StaffSettings = field(default_factory=StaffSettings)
    log: LogSettings = field(default_factory=LogSettings)

    @property
    def production(self) -> bool:
        return self.mode == "production"

    @property
    def embedded_redis(self) -> bool:
        """No Redis URL given: `serve` runs a private redis-server under data_dir."""
        return self.redis.url is None


class _Section(Schema):
    class Meta:
        unknown = RAISE


class ServerSchema(_Section):
    host = fields.String(load_default=ServerSettings.host, validate=validate.Length(min=1, max=255))
    port = fields.Integer(load_default=ServerSettings.port, validate=validate.Range(1, 65535))
    plain_http = fields.Boolean(load_default=ServerSettings.plain_http)
    max_body_bytes = fields.Integer(
        load_default=ServerSettings.max_body_bytes, validate=validate.Range(1024, 1024 * 1024)
    )
    shutdown_timeout = fields.Float(load_default=ServerSettings.shutdown_timeout, validate=validate.Range(0, 300))

    @post_load
    def make(self, data: dict[str, Any], **_: Any) -> ServerSettings:
        return ServerSettings(**data)


class TlsSchema(_Section):
    cert_file = fields.String(load_default=None, allow_none=True)
    key_file = fields.String(load_default=None, allow_none=True)

    @validates_schema
    def both_or_neither(self, data: dict[str, Any], **_: Any) -> None:
        if bool(data.get("cert_file")) != bool(data.get("key_file")):
            raise ValidationError("give both cert_file and key_file, or neither", "cert_file")

    @post_load
    def make(self, data: dict[str, Any], **_: Any) -> TlsSettings:
        return TlsSettings(**{k: Path(v) if v else None for k, v in data.items()})


class RedisSchema(_Section):
    url = fields.String(
        load_default=None,
        allow_none=True,
        validate=validate.Regexp(r"^(redis|rediss|unix)://", error="must start with redis://, rediss:// or unix://"),
    )
    socket_timeout = fields.Float(load_default=RedisSettings.socket_timeout, validate=validate.Range(0.1, 60))
    connect_timeout = fields.Float(load_default=RedisSettings.connect_timeout, validate=validate.Range(0.1, 60))
    max_connections = fields.Integer(load_default=RedisSettings.max_connections, validate=validate.Range(1, 10000))
    assume_durable = fields.Boolean(load_default=RedisSettings.assume_durable)

    @post_load
    def make(self, data: dict[str, Any], **_: Any) -> RedisSettings:
        return RedisSettings(**data)


class KeysSchema(_Section):
    master_key_file = fields.String(load_default=None, allow_none=True)
    previous_master_key_files = fields.List(fields.String(), load_default=list)

    @post_load
    def make(self, data: dict[str, Any], **_: Any) -> KeySettings:
        master = data["master_key_file"]
        return KeySettings(
            master_key_file=Path(master) if master else None,
            previous_master_key_files=tuple(Path(p) for p in data["previous_master_key_files"]),
        )


class TokensSchema(_Section):
    cvc_ttl_seconds = fields.Integer(
        load_default=TokenSettings.cvc_ttl_seconds,
        validate=validate.Range(60, 3600, error="must be between 60 and 3600 seconds (PCI: at most an hour)"),
    )
    default_ttl_days = fields.Integer(load_default=None, allow_none=True, validate=validate.Range(1, 3660))

    @post_load
    def make(self, data: dict[str, Any], **_: Any) -> TokenSettings:
        return TokenSettings(**data)


class ProcessorsSchema(_Section):
    timeout_seconds = fields.Float(load_default=ProcessorSettings.timeout_seconds, validate=validate.Range(0.1, 120))
    breaker_failures = fields.Integer(load_default=ProcessorSettings.breaker_failures, validate=validate.Range(1, 1000))
    breaker_reset_seconds = fields.Float(
        load_default=ProcessorSettings.breaker_reset_seconds, validate=validate.Range(0.1, 3600)
    )
    sandbox_slow_seconds = fields.Float(
        load_default=ProcessorSettings.sandbox_slow_seconds, validate=validate.Range(0, 600)
    )
    ca_file = fields.String(load_default=None, allow_none=True)

    @post_load
    def make(self, data: dict[str, Any], **_: Any) -> ProcessorSettings:
        return ProcessorSettings(**{**data, "ca_file": Path(data["ca_file"]) if data["ca_file"] else None})


class ForwardSchema(_Section):
    timeout_seconds = fields.Float(load_default=ForwardSettings.timeout_seconds, validate=validate.Range(0.1, 120))
    max_response_bytes = fields.Integer(
        load_default=ForwardSettings.max_response_bytes, validate=validate.Range(1024, 16 * 1024 * 1024)
    )
    ca_file = fields.String(load_default=None, allow_none=True)

    @post_load
    def make(self, data: dict[str, Any], **_: Any) -> ForwardSettings:
        return ForwardSettings(**{**data, "ca_file": Path(data["ca_file"]) if data["ca_file"] else None})


class CheckoutSchema(_Section):
    session_ttl_seconds = fields.Integer(
        load_default=CheckoutSettings.session_ttl_seconds, validate=validate.Range(60, 86400)
    )

    @post_load
    def make(self, data: dict[str, Any], **_: Any) -> CheckoutSettings:
        return CheckoutSettings(**data)


class StaffSchema(_Section):
    public_url = fields.String(
        load_default=None,
        allow_none=True,
        validate=validate.Regexp(r"^https://[^/?#]+$", error="must be https://host[:port] with no path"),
    )
    idle_timeout_seconds = fields.Integer(
        load_default=StaffSettings.idle_timeout_seconds,
        validate=validate.Range(60, 900, error="must be between 60 and 900 seconds (PCI: at most 15 minutes)"),
    )
    absolute_timeout_seconds = fields.Integer(
        load_default=StaffSettings.absolute_timeout_seconds, validate=validate.Range(300, 86400)
    )

    @post_load
    def make(self, data: dict[str, Any], **_: Any) -> StaffSettings:
        return StaffSettings(**data)


class AuthSchema(_Section):
    cache_seconds = fields.Float(load_default=AuthSettings.cache_seconds, validate=validate.Range(0, 60))

    @post_load
    def make(self, data: dict[str, Any], **_: Any) -> AuthSettings:
        return AuthSettings(**data)


class LogSchema(_Section):
    level = fields.String(
        load_default=LogSettings.level, validate=validate.OneOf(["debug", "info", "warning", "error"])
    )

    @post_load
    def make(self, data: dict[str, Any], **_: Any) -> LogSettings:
        return LogSettings(**data)


class SettingsSchema(_Section):
    mode = fields.String(load_default="development", validate=validate.OneOf(["development", "production"]))
    data_dir = fields.String(load_default="var", validate=validate.Length(min=1))
    server = fields.Nested(ServerSchema, load_default=lambda: ServerSchema().load({}))
    tls = fields.Nested(TlsSchema, load_default=lambda: TlsSchema().load({}))
    redis = fields.Nested(RedisSchema, load_default=lambda: RedisSchema().load({}))
    keys = fields.Nested(KeysSchema, load_default=lambda: KeysSchema().load({}))
    tokens = fields.Nested(TokensSchema, load_default=lambda: TokensSchema().load({}))
    processors = fields.Nested(ProcessorsSchema, load_default=lambda: ProcessorsSchema().load({}))
    forward = fields.Nested(ForwardSchema, load_default=lambda: ForwardSchema().load({}))
    checkout = fields.Nested(CheckoutSchema, load_default=lambda: CheckoutSchema().load({}))
    auth = fields.Nested(AuthSchema, load_default=lambda: AuthSchema().load({}))
    staff = fields.Nested(StaffSchema, load_default=lambda: StaffSchema().load({}))
    log = fields.Nested(LogSchema, load_default=lambda: LogSchema().load({}))

    @post_load
    def make(self, data: dict[str, Any], **_: Any) -> Settings:
        return Settings(**{**data, "data_dir": Path(data["data_dir"])})
