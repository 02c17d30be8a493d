"""The `cardvault` command: serve, config, agency and keys subcommands.

Every subcommand reads the same settings (``--config``, ``--data-dir``,
``CARDVAULT_*``) and so works against the same embedded data directory or
external Redis as a running ``cardvault serve``.  Known failures print one
``Error: ...`` line and exit 1; nothing prints a key or card it should not.
"""

from __future__ import annotations

from typing import Any

import click
import structlog

from service import __version__
from service.cli import processing  # noqa: F401 - registers agency set-processor and friends
from service.cli.agency import agency
from service.cli.audit import audit
from service.cli.config import config
from service.cli.health import health
from service.cli.keys import keys
from service.cli.redact import redact
from service.cli.serve import serve
from service.cli.staff import staff
from service.cli.velocity import set_velocity  # noqa: F401 - registers agency velocity, set-velocity
from service.domain.redaction import redact_card_numbers
from service.errors import CardvaultError
from service.logs import configure_logging
from service.tls import TlsConfigError


class CardvaultGroup(click.Group):
    """Turns the service's own errors into one clear line instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (CardvaultError, TlsConfigError) as exc:
            raise click.ClickException(redact_card_numbers(str(exc))) from None
        except OSError as exc:
            # Files, sockets, permissions: the operator's environment, not a bug; say what and where.
            raise click.ClickException(redact_card_numbers(_os_error_line(exc))) from None
        except ValueError as exc:
            # Domain validation of operator input (slugs, origins) raises ValueError subclasses.
            if type(exc).__module__.startswith("service."):
                raise click.ClickException(redact_card_numbers(str(exc))) from None
            raise


def _os_error_line(exc: OSError) -> str:
    reason = exc.strerror or str(exc) or type(exc).__name__
    return f"{exc.filename}: {reason}" if exc.filename else reason


@click.group(cls=CardvaultGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cardvault")
def cli() -> None:
    """cardvault: payment-card tokenization for state agencies."""
    if not structlog.is_configured():
        # Log lines (an audit record's witness line among them) go to stderr, never into the JSON a
        # command prints on stdout; `serve` configures its own logging when it starts.
        configure_logging("warning")


cli.add_command(serve)
cli.add_command(config)
cli.add_command(agency)
cli.add_command(keys)
cli.add_command(health)
cli.add_command(staff)
cli.add_command(redact)
cli.add_command(audit)


def main() -> None:
    cli(prog_name="cardvault")
