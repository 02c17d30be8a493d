"""Start-up checks: what production refuses and development only warns about.

Production refuses the generated development master key (see the keyring),
a self-signed or over-long-lived TLS certificate, and a Redis whose
persistence could lose an acknowledged write.  Development logs the same
findings as warnings and carries on.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

from service.errors import ConfigError
from service.settings import Settings
from service.tls.certs import check_certificate, inspect_certificate


@dataclass
class Findings:
    """Problems found; fatal ones stop production, everything is a warning in development."""

    fatal: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def add(self, message: str, *, production: bool) -> None:
        (self.fatal if production else self.warnings).append(message)

    def raise_if_fatal(self) -> None:
        if self.fatal:
            raise ConfigError(self.fatal[0])


def check_certificate_file(settings: Settings, cert_file: Path, findings: Findings, *, now: dt.datetime) -> None:
    info = inspect_certificate(cert_file)
    if info.self_signed:
        findings.add(f"tls.cert_file {cert_file}: self-signed certificate", production=settings.production)
    for problem in check_certificate(info, now=now):
        findings.add(f"tls.cert_file {cert_file}: {problem}", production=settings.production)


def check_redis_persistence(settings: Settings, config: dict[str, str], findings: Findings) -> None:
    """Acknowledged writes must survive a crash: AOF with fsync on every write."""
    if settings.redis.assume_durable:
        return
    if not config:
        findings.add(
            "redis.url: cannot read the server's persistence settings (CONFIG is disabled); "
            "set redis.assume_durable: true if you have checked them yourself",
            production=settings.production,
        )
        return
    if config.get("appendonly") != "yes" or config.get("appendfsync") != "always":
        findings.add(
            f"redis.url: the server runs appendonly={config.get('appendonly')} "
            f"appendfsync={config.get('appendfsync')}; an acknowledged write could be lost "
            "(needs appendonly yes and appendfsync always)",
            production=settings.production,
        )
