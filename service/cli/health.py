"""`cardvault health`: the container HEALTHCHECK probe of a local serve's /healthz."""

from __future__ import annotations

import ssl
import urllib.error
import urllib.request
from pathlib import Path

import click

from service.cli.options import settings_from, settings_options


@click.command()
@click.option("--url", help="Probe this URL instead of the configured listener's /healthz.")
@click.option("--timeout", type=float, default=3.0, show_default=True)
@settings_options
def health(url: str | None, timeout: float, config_file: Path | None, data_dir: Path | None) -> None:
    """Exit 0 when the local service answers /healthz, 1 otherwise."""
    settings = settings_from(config_file, data_dir)
    scheme = "http" if settings.server.plain_http else "https"
    host = "127.0.0.1" if settings.server.host in ("0.0.0.0", "::", "") else settings.server.host  # noqa: S104
    target = url or f"{scheme}://{host}:{settings.server.port}/healthz"
    # A liveness probe of our own process on this machine: it proves the listener answers,
    # not who holds the certificate (which may be issued for the public name only).
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(target, timeout=timeout, context=context) as response:  # noqa: S310
            if response.status == 200:
                click.echo("ok")
                return
            raise click.ClickException(f"{target} answered {response.status}")
    except (urllib.error.URLError, OSError) as exc:
        raise click.ClickException(f"{target} unreachable: {exc}") from None
