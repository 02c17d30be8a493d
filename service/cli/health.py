"""`cardvault health`: the container HEALTHCHECK probe of a local serve's /healthz (or /readyz with --ready).

With ``--ready`` a 503 prints the reason /readyz gives (Redis unreachable, a
wrong password, a read-only replica, too few replicas for the durability
contract...), so an operator sees at once why the service will not serve.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from pathlib import Path

import click

from service.cli.options import settings_from, settings_options


@click.command()
@click.option("--url", help="Probe this URL instead of the configured listener's /healthz.")
@click.option("--ready", is_flag=True, help="Probe /readyz: can the service work (Redis, durability, keys)?")
@click.option("--timeout", type=float, default=3.0, show_default=True)
@settings_options
def health(url: str | None, ready: bool, timeout: float, config_file: Path | None, data_dir: Path | None) -> None:
    """Exit 0 when the local service answers /healthz (or /readyz with --ready), 1 otherwise."""
    settings = settings_from(config_file, data_dir)
    scheme = "http" if settings.server.plain_http else "https"
    host = "127.0.0.1" if settings.server.host in ("0.0.0.0", "::", "") else settings.server.host  # noqa: S104
    target = url or f"{scheme}://{host}:{settings.server.port}/{'readyz' if ready else 'healthz'}"
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
    except urllib.error.HTTPError as exc:
        raise click.ClickException(f"{target} answered {exc.code}{_reason(exc.read())}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise click.ClickException(f"{target} unreachable: {exc}") from None


def _reason(body: bytes) -> str:
    """The problem's ``detail`` (why /readyz is not ready), when the answer has one."""
    try:
        detail = json.loads(body).get("detail")
    except (ValueError, AttributeError):
        return ""
    return f": {detail}" if isinstance(detail, str) else ""
