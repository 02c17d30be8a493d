"""`cardvault agency set-processor | set-limits | allow-destination | remove-destination`."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import click

from service.agency_settings import AgencySettingsService
from service.cli.agency import agency
from service.cli.asyncrun import run
from service.cli.operator_audit import audited
from service.cli.options import settings_from, settings_options
from service.cli.runtime import open_runtime
from service.domain.agencies import Agency
from service.domain.audit import Action
from service.domain.processing import ProcessorName


def _apply(
    config_file: Path | None,
    data_dir: Path | None,
    change: Callable[[AgencySettingsService, bool], Awaitable[Agency]],
    audit: tuple[str, str, str],
) -> None:
    """Run ``change``; ``audit`` is (action, slug, detail) for the audit log (never a credential)."""
    action, slug, detail = audit

    async def go() -> Agency:
        settings = settings_from(config_file, data_dir)
        async with open_runtime(settings) as rt, audited(rt, action, detail) as event:
            await event.for_slug(rt, slug)
            return await change(AgencySettingsService(rt.agencies), settings.production)

    click.echo(json.dumps({"agency": run(go()).public()}, indent=2))


@agency.command("set-processor")
@click.argument("slug")
@click.argument("processor", type=click.Choice([p.value for p in ProcessorName]))
@click.option("--login-id", help="Authorize.Net API login id.")
@click.option(
    "--transaction-key",
    help="Authorize.Net transaction key (prompted for, hidden, when omitted). Stored encrypted; never printed.",
)
@click.option("--endpoint", help="Processor API URL [Authorize.Net: its sandbox in development, production otherwise].")
@settings_options
def set_processor(
    slug: str,
    processor: str,
    login_id: str | None,
    transaction_key: str | None,
    endpoint: str | None,
    config_file: Path | None,
    data_dir: Path | None,
) -> None:
    """Choose the processor SLUG's charges go to: sandbox (the default) or authorize_net."""
    name = ProcessorName(processor)
    if name is ProcessorName.AUTHORIZE_NET and transaction_key is None:
        transaction_key = click.prompt("Authorize.Net transaction key", hide_input=True, err=True)
    _apply(
        config_file,
        data_dir,
        lambda svc, production: svc.set_processor(
            slug, name, login_id=login_id, transaction_key=transaction_key, endpoint=endpoint, production=production
        ),
        (Action.AGENCY_PROCESSOR, slug, f"processor {name}" + (f"; endpoint {endpoint}" if endpoint else "")),
    )


@agency.command("set-limits")
@click.argument("slug")
@click.option("--max-amount", type=int, help="Largest single charge in minor units (cents).")
@click.option("--no-max-amount", is_flag=True, help="Remove the agency's own limit.")
@settings_options
def set_limits(
    slug: str, max_amount: int | None, no_max_amount: bool, config_file: Path | None, data_dir: Path | None
) -> None:
    """Set SLUG's per-charge amount limit."""
    if (max_amount is None) == (not no_max_amount):
        raise click.UsageError("give --max-amount N or --no-max-amount")
    limit = "none" if no_max_amount else str(max_amount)
    _apply(
        config_file,
        data_dir,
        lambda svc, _: svc.set_max_amount(slug, None if no_max_amount else max_amount),
        (Action.AGENCY_LIMITS, slug, f"max amount {limit}"),
    )


@agency.command("allow-destination")
@click.argument("slug")
@click.argument("url")
@click.option(
    "--allow-private",
    is_flag=True,
    help="Also permit loopback, private and link-local addresses for this destination (e.g. an internal gateway).",
)
@settings_options
def allow_destination(
    slug: str, url: str, allow_private: bool, config_file: Path | None, data_dir: Path | None
) -> None:
    """Allow POST /v1/forward to https://host[:port]/path-prefix (exact host, path prefix)."""
    _apply(
        config_file,
        data_dir,
        lambda svc, _: svc.allow_destination(slug, url, allow_private=allow_private),
        (Action.AGENCY_DESTINATIONS, slug, f"allow {url}" + (" (private addresses too)" if allow_private else "")),
    )


@agency.command("remove-destination")
@click.argument("slug")
@click.argument("url")
@settings_options
def remove_destination(slug: str, url: str, config_file: Path | None, data_dir: Path | None) -> None:
    """Take URL off SLUG's forward allowlist."""
    _apply(
        config_file,
        data_dir,
        lambda svc, _: svc.remove_destination(slug, url),
        (Action.AGENCY_DESTINATIONS, slug, f"remove {url}"),
    )
