"""`cardvault config check`: validate settings, keys and certificates without starting."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import click

from service.adapters.keyring import ENV_MASTER_KEY
from service.cli.options import settings_from, settings_options
from service.cli.runtime import master_keys_for
from service.preflight import Findings, check_certificate_file
from service.settings_loader import defaults_as_dict
from service.tls.mozilla import server_context


@click.group()
def config() -> None:
    """Inspect and validate configuration."""


@config.command("check")
@settings_options
def check(config_file: Path | None, data_dir: Path | None) -> None:
    """Validate settings (file + CARDVAULT_* variables) and the keys and certificate they name."""
    settings = settings_from(config_file, data_dir)
    findings = Findings()
    if settings.keys.master_key_file is not None or settings.production or os.environ.get(ENV_MASTER_KEY):
        _, warnings = master_keys_for(settings)
        findings.warnings += warnings
    cert, key = settings.tls.cert_file, settings.tls.key_file
    if not settings.server.plain_http:
        if cert is None or key is None:
            if settings.production:
                findings.add(
                    "tls.cert_file: production mode needs a real certificate (tls.cert_file, tls.key_file)",
                    production=True,
                )
        else:
            server_context(cert, key)  # readable, a certificate, and the key belongs to it
            check_certificate_file(settings, cert, findings, now=dt.datetime.now(dt.UTC))
    for warning in findings.warnings:
        click.echo(f"warning: {warning}", err=True)
    findings.raise_if_fatal()
    click.echo(f"ok: {settings.mode} settings are valid")


@config.command("defaults")
def defaults() -> None:
    """Print every setting with its default value, as YAML-compatible JSON."""
    click.echo(json.dumps(defaults_as_dict(), indent=2))
