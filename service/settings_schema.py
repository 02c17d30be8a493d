"""The settings schemas: what the service accepts as settings, validated, loaded into ``service.settings``.

Each section of the settings is a marshmallow schema whose defaults are the
dataclass defaults of ``service.settings`` (mirrored in
``config/default.yaml``) and whose ``post_load`` builds the frozen dataclass,
so a value is checked once, here, and everything else reads typed
attributes.  ``service.settings_loader`` feeds these schemas from the file,
the environment and the command line.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any, ClassVar

from marshmallow import RAISE, Schema, ValidationError, fields, post_load, validate, validates_schema

from service.domain.velocity import InvalidVelocityInput, parse_limit
from service.settings import (
    AuditSettings,
    AuthSettings,
    CheckoutSettings,
    ForwardSettings,
    KeySettings,
    LogSettings,
    MetricsSettings,
    ProcessorSettings,
    ProxySettings,
    RedactionSettings,
    RedisSettings,
    ServerSettings,
    Settings,
    StaffSettings,
    TlsSettings,
    TokenSettings,
    VelocitySettings,
)


class _Section(Schema):
    """A settings section: loads into ``settings_class``, its ``path_fields`` as ``Path`` (``None`` when unset).

    A section whose dataclass needs more than that overrides ``make``.
    """

    class Meta:
        unknown = RAISE

    settings_class: ClassVar[type]
    path_fields: ClassVar[frozenset[str]] = frozenset()

    @post_load
    def make(self, data: dict[str, Any], **_: Any) -> Any:
        paths = {name: Path(data[name]) if data[name] else None for name in self.path_fields}
        return self.settings_class(**{**data, **paths})


class ServerSchema(_Section):
    settings_class = ServerSettings
    host = fields.String(load_default=ServerSettings.host, validate=validate.Length(min=1, max=255))
    port = fields.Integer(load_default=ServerSettings.port, validate=validate.Range(1, 65535))
    plain_http = fields.Boolean(load_default=ServerSettings.plain_http)
    max_body_bytes = fields.Integer(
        load_default=ServerSettings.max_body_bytes, validate=validate.Range(1024, 1024 * 1024)
    )
    keepalive_timeout = fields.Float(load_default=ServerSettings.keepalive_timeout, validate=validate.Range(1, 3600))
    request_read_timeout = fields.Float(
        load_default=ServerSettings.request_read_timeout, validate=validate.Range(1, 300)
    )
    shutdown_timeout = fields.Float(load_default=ServerSettings.shutdown_timeout, validate=validate.Range(0, 300))
    workers = fields.Integer(load_default=ServerSettings.workers, validate=validate.Range(1, 64))


class TlsSchema(_Section):
    settings_class = TlsSettings
    path_fields = frozenset(
        (
            "cert_file",
            "key_file",
            "client_ca_file",
        )
    )
    cert_file = fields.String(load_default=None, allow_none=True)
    key_file = fields.String(load_default=None, allow_none=True)
    client_ca_file = fields.String(load_default=None, allow_none=True)
    session_cache_size = fields.Integer(
        load_default=TlsSettings.session_cache_size, validate=validate.Range(0, 1_000_000)
    )

    @validates_schema
    def both_or_neither(self, data: dict[str, Any], **_: Any) -> None:
        if bool(data.get("cert_file")) != bool(data.get("key_file")):
            raise ValidationError("give both cert_file and key_file, or neither", "cert_file")


class RedisSchema(_Section):
    settings_class = RedisSettings
    url = fields.String(
        load_default=None,
        allow_none=True,
        validate=validate.Regexp(
            r"^(redis|rediss|unix|redis\+sentinel|redis\+cluster|rediss\+cluster)://",
            error="must start with redis://, rediss://, unix://, redis+sentinel://, redis+cluster:// or rediss+cluster://",
        ),
    )
    socket_timeout = fields.Float(load_default=RedisSettings.socket_timeout, validate=validate.Range(0.1, 60))
    connect_timeout = fields.Float(load_default=RedisSettings.connect_timeout, validate=validate.Range(0.1, 60))
    max_connections = fields.Integer(load_default=RedisSettings.max_connections, validate=validate.Range(1, 10000))
    assume_durable = fields.Boolean(load_default=RedisSettings.assume_durable)
    durability = fields.String(
        load_default=RedisSettings.durability, validate=validate.OneOf(["fsync", "replicas", "fsync+replicas"])
    )
    replicas = fields.Integer(load_default=RedisSettings.replicas, validate=validate.Range(1, 16))
    wait_timeout_ms = fields.Integer(load_default=None, allow_none=True, validate=validate.Range(1, 60000))

    @validates_schema
    def wait_within_socket_timeout(self, data: dict[str, Any], **_: Any) -> None:
        """A confirmation that outlasts the socket timeout would be cut off as an unreachable Redis."""
        socket_ms = data.get("socket_timeout", RedisSettings.socket_timeout) * 1000
        wait_ms = data.get("wait_timeout_ms")
        if wait_ms is not None and wait_ms >= socket_ms:
            raise ValidationError(f"must be below redis.socket_timeout ({socket_ms:.0f} ms)", "wait_timeout_ms")


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
    settings_class = TokenSettings
    cvc_ttl_seconds = fields.Integer(
        load_default=TokenSettings.cvc_ttl_seconds,
        validate=validate.Range(60, 3600, error="must be between 60 and 3600 seconds (PCI: at most an hour)"),
    )
    default_ttl_days = fields.Integer(load_default=None, allow_none=True, validate=validate.Range(1, 3660))


class ProcessorsSchema(_Section):
    settings_class = ProcessorSettings
    path_fields = frozenset(("ca_file",))
    timeout_seconds = fields.Float(load_default=ProcessorSettings.timeout_seconds, validate=validate.Range(0.1, 120))
    breaker_failures = fields.Integer(load_default=ProcessorSettings.breaker_failures, validate=validate.Range(1, 1000))
    breaker_reset_seconds = fields.Float(
        load_default=ProcessorSettings.breaker_reset_seconds, validate=validate.Range(0.1, 3600)
    )
    sandbox_slow_seconds = fields.Float(
        load_default=ProcessorSettings.sandbox_slow_seconds, validate=validate.Range(0, 600)
    )
    sandbox_settlement_cutoff = fields.String(
        load_default=ProcessorSettings.sandbox_settlement_cutoff,
        validate=validate.Regexp(r"^([01][0-9]|2[0-3]):[0-5][0-9]$", error="must be HH:MM (UTC, 24-hour)"),
    )
    ca_file = fields.String(load_default=None, allow_none=True)


class ForwardSchema(_Section):
    settings_class = ForwardSettings
    path_fields = frozenset(("ca_file",))
    timeout_seconds = fields.Float(load_default=ForwardSettings.timeout_seconds, validate=validate.Range(0.1, 120))
    max_response_bytes = fields.Integer(
        load_default=ForwardSettings.max_response_bytes, validate=validate.Range(1024, 16 * 1024 * 1024)
    )
    ca_file = fields.String(load_default=None, allow_none=True)


class RedactionSchema(_Section):
    settings_class = RedactionSettings
    max_body_bytes = fields.Integer(
        load_default=RedactionSettings.max_body_bytes, validate=validate.Range(1024, 16 * 1024 * 1024)
    )
    max_tokens = fields.Integer(load_default=RedactionSettings.max_tokens, validate=validate.Range(1, 1000))
    token_ttl_days = fields.Integer(load_default=RedactionSettings.token_ttl_days, validate=validate.Range(1, 365))


class CheckoutSchema(_Section):
    settings_class = CheckoutSettings
    session_ttl_seconds = fields.Integer(
        load_default=CheckoutSettings.session_ttl_seconds, validate=validate.Range(60, 86400)
    )


class StaffSchema(_Section):
    settings_class = StaffSettings
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


class AuthSchema(_Section):
    settings_class = AuthSettings
    cache_seconds = fields.Float(load_default=AuthSettings.cache_seconds, validate=validate.Range(0, 60))


def _check_cidr(value: str) -> None:
    """``10.0.0.0/8``, ``2001:db8::/32`` or one address; host bits set is a typo, not a network."""
    try:
        ipaddress.ip_network(value.strip(), strict=True)
        return
    except ValueError:
        pass
    try:
        network = ipaddress.ip_network(value.strip(), strict=False)
    except ValueError:
        raise ValidationError(f"{value!r} is not an IP address or CIDR network") from None
    raise ValidationError(f"{value!r} has host bits set; did you mean {network}?")


class ProxySchema(_Section):
    trusted = fields.List(fields.String(validate=_check_cidr), load_default=list)
    headers = fields.String(load_default=ProxySettings.headers, validate=validate.OneOf(["x-forwarded", "forwarded"]))
    proxy_protocol_port = fields.Integer(load_default=None, allow_none=True, validate=validate.Range(1, 65535))
    proxy_protocol_trusted = fields.List(fields.String(validate=_check_cidr), load_default=list)

    @validates_schema
    def proxy_protocol_needs_its_proxies(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("proxy_protocol_port") is not None and not data.get("proxy_protocol_trusted"):
            raise ValidationError("name the stream proxies allowed to connect there", "proxy_protocol_trusted")

    @post_load
    def make(self, data: dict[str, Any], **_: Any) -> ProxySettings:
        def networks(values: list[str]) -> tuple[str, ...]:
            return tuple(str(ipaddress.ip_network(v.strip())) for v in values)

        return ProxySettings(
            trusted=networks(data["trusted"]),
            headers=data["headers"],
            proxy_protocol_port=data["proxy_protocol_port"],
            proxy_protocol_trusted=networks(data["proxy_protocol_trusted"]),
        )


def _velocity_limit(default: str) -> fields.String:
    def valid(value: str) -> None:
        try:
            parse_limit(value)
        except InvalidVelocityInput as exc:
            raise ValidationError(str(exc)) from None

    return fields.String(load_default=default, validate=valid)


class VelocitySchema(_Section):
    settings_class = VelocitySettings
    enabled = fields.Boolean(load_default=VelocitySettings.enabled)
    tokens_per_address = _velocity_limit(VelocitySettings.tokens_per_address)
    tokens_per_key = _velocity_limit(VelocitySettings.tokens_per_key)
    tokens_per_staff = _velocity_limit(VelocitySettings.tokens_per_staff)
    tokens_per_card = _velocity_limit(VelocitySettings.tokens_per_card)
    tokens_per_agency = _velocity_limit(VelocitySettings.tokens_per_agency)
    charges_per_address = _velocity_limit(VelocitySettings.charges_per_address)
    charges_per_key = _velocity_limit(VelocitySettings.charges_per_key)
    charges_per_staff = _velocity_limit(VelocitySettings.charges_per_staff)
    charges_per_card = _velocity_limit(VelocitySettings.charges_per_card)
    charges_per_agency = _velocity_limit(VelocitySettings.charges_per_agency)
    decline_window_seconds = fields.Integer(
        load_default=VelocitySettings.decline_window_seconds, validate=validate.Range(10, 86400)
    )
    decline_ratio = fields.Float(load_default=VelocitySettings.decline_ratio, validate=validate.Range(0.01, 1.0))
    decline_min_attempts_agency = fields.Integer(
        load_default=VelocitySettings.decline_min_attempts_agency, validate=validate.Range(1, 1_000_000)
    )
    decline_min_attempts_address = fields.Integer(
        load_default=VelocitySettings.decline_min_attempts_address, validate=validate.Range(1, 1_000_000)
    )
    tighten_factor = fields.Integer(load_default=VelocitySettings.tighten_factor, validate=validate.Range(1, 1000))
    tighten_seconds = fields.Integer(load_default=VelocitySettings.tighten_seconds, validate=validate.Range(1, 86400))
    retry_after_seconds = fields.Integer(
        load_default=VelocitySettings.retry_after_seconds, validate=validate.Range(1, 3600)
    )


class AuditSchema(_Section):
    settings_class = AuditSettings
    queryable_days = fields.Integer(load_default=AuditSettings.queryable_days, validate=validate.Range(1, 3660))
    retention_days = fields.Integer(load_default=AuditSettings.retention_days, validate=validate.Range(1, 3660))

    @validates_schema
    def queryable_within_retention(self, data: dict[str, Any], **_: Any) -> None:
        if data["queryable_days"] > data["retention_days"]:
            raise ValidationError("must not be more than retention_days", "queryable_days")


class LogSchema(_Section):
    settings_class = LogSettings
    level = fields.String(
        load_default=LogSettings.level, validate=validate.OneOf(["debug", "info", "warning", "error"])
    )


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class MetricsSchema(_Section):
    settings_class = MetricsSettings
    enabled = fields.Boolean(load_default=MetricsSettings.enabled)
    host = fields.String(load_default=MetricsSettings.host, validate=validate.Length(min=1, max=255))
    port = fields.Integer(load_default=MetricsSettings.port, validate=validate.Range(1, 65535))
    allow_non_loopback = fields.Boolean(load_default=MetricsSettings.allow_non_loopback)

    @validates_schema
    def loopback_unless_allowed(self, data: dict[str, Any], **_: Any) -> None:
        host = data.get("host", MetricsSettings.host)
        if not data.get("allow_non_loopback") and not is_loopback_host(host):
            raise ValidationError(
                f"{host!r} is not a loopback address; metrics are for the local monitoring agent "
                "(set metrics.allow_non_loopback: true to expose them further)",
                "host",
            )


class SettingsSchema(_Section):
    settings_class = Settings
    path_fields = frozenset(("data_dir",))
    mode = fields.String(load_default="development", validate=validate.OneOf(["development", "production"]))
    data_dir = fields.String(load_default="var", validate=validate.Length(min=1))
    server = fields.Nested(ServerSchema, load_default=lambda: ServerSchema().load({}))
    tls = fields.Nested(TlsSchema, load_default=lambda: TlsSchema().load({}))
    redis = fields.Nested(RedisSchema, load_default=lambda: RedisSchema().load({}))
    keys = fields.Nested(KeysSchema, load_default=lambda: KeysSchema().load({}))
    tokens = fields.Nested(TokensSchema, load_default=lambda: TokensSchema().load({}))
    processors = fields.Nested(ProcessorsSchema, load_default=lambda: ProcessorsSchema().load({}))
    forward = fields.Nested(ForwardSchema, load_default=lambda: ForwardSchema().load({}))
    redaction = fields.Nested(RedactionSchema, load_default=lambda: RedactionSchema().load({}))
    checkout = fields.Nested(CheckoutSchema, load_default=lambda: CheckoutSchema().load({}))
    auth = fields.Nested(AuthSchema, load_default=lambda: AuthSchema().load({}))
    staff = fields.Nested(StaffSchema, load_default=lambda: StaffSchema().load({}))
    proxy = fields.Nested(ProxySchema, load_default=lambda: ProxySchema().load({}))
    velocity = fields.Nested(VelocitySchema, load_default=lambda: VelocitySchema().load({}))
    log = fields.Nested(LogSchema, load_default=lambda: LogSchema().load({}))
    audit = fields.Nested(AuditSchema, load_default=lambda: AuditSchema().load({}))
    metrics = fields.Nested(MetricsSchema, load_default=lambda: MetricsSchema().load({}))

    @validates_schema
    def client_certificates_need_tls(self, data: dict[str, Any], **_: Any) -> None:
        server, tls = data.get("server"), data.get("tls")
        if not (isinstance(server, ServerSettings) and isinstance(tls, TlsSettings)):
            return
        if server.plain_http and tls.client_ca_file is not None:
            problem = "needs the HTTPS listener, but server.plain_http is true"
            raise ValidationError({"client_ca_file": [problem]}, "tls")

    @validates_schema
    def proxy_protocol_port_of_its_own(self, data: dict[str, Any], **_: Any) -> None:
        server, proxy = data.get("server"), data.get("proxy")
        if not (isinstance(server, ServerSettings) and isinstance(proxy, ProxySettings)):
            return
        if proxy.proxy_protocol_port is None:
            return
        if proxy.proxy_protocol_port == server.port:
            raise ValidationError({"proxy_protocol_port": ["must differ from server.port"]}, "proxy")
        if server.workers > 1:
            problem = "is served by a single process for now; set server.workers: 1"
            raise ValidationError({"proxy_protocol_port": [problem]}, "proxy")
