"""`cardvault agency ...`: create agencies, issue and rotate their keys, disable, shred."""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

import click

from service.cli.asyncrun import run
from service.cli.operator_audit import audited
from service.cli.options import settings_from, settings_options
from service.cli.runtime import open_runtime
from service.domain.agencies import Agency, AgencyStatus
from service.domain.audit import Action


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2))


@click.group()
def agency() -> None:
    """Manage agencies (tenants) and their API keys."""


@agency.command("create")
@click.argument("slug")
@click.option(
    "--origin",
    "origins",
    multiple=True,
    help="A storefront origin, e.g. https://shop.example.gov (repeatable).",
)
@settings_options
def create(slug: str, origins: tuple[str, ...], config_file: Path | None, data_dir: Path | None) -> None:
    """Create agency SLUG and print its publishable and secret keys (shown only this once)."""

    async def go() -> tuple[Agency, dict[str, str]]:
        async with (
            open_runtime(settings_from(config_file, data_dir)) as rt,
            audited(rt, Action.AGENCY_CREATE, f"slug {slug}") as event,
        ):
            created, issued = await rt.agencies.create(slug, origins)
            event.agency_id = event.obj = created.id
            event.detail = f"slug {slug}; origins {' '.join(created.origins) or '-'}"
            return created, {"publishable_key": issued.publishable_key, "secret_key": issued.secret_key}

    created, issued = run(go())
    _echo_json({"agency": created.public(), **issued})


@agency.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@settings_options
def list_(as_json: bool, config_file: Path | None, data_dir: Path | None) -> None:
    """List agencies with their status and origins."""

    async def go() -> list[Agency]:
        async with open_runtime(settings_from(config_file, data_dir)) as rt:
            return await rt.agencies.list()

    agencies = run(go())
    if as_json:
        _echo_json({"agencies": [a.public() for a in agencies]})
        return
    if not agencies:
        click.echo("no agencies yet: cardvault agency create SLUG --origin https://...")
        return
    click.echo(f"{'SLUG':<24} {'ID':<22} {'STATUS':<9} {'CREATED':<20} ORIGINS")
    for a in agencies:
        created = dt.datetime.fromtimestamp(a.created, tz=dt.UTC).strftime("%Y-%m-%d %H:%M")
        click.echo(f"{a.slug:<24} {a.id:<22} {a.status:<9} {created:<20} {' '.join(a.origins) or '-'}")


@agency.command("rotate-keys")
@click.argument("slug")
@click.option(
    "--grace-hours",
    type=click.IntRange(0, 72),
    default=0,
    show_default=True,
    help="Keep the old keys working this long so the agency can deploy the new ones (0: revoke now).",
)
@settings_options
def rotate_keys(slug: str, grace_hours: int, config_file: Path | None, data_dir: Path | None) -> None:
    """Issue a new key pair for SLUG and revoke the old one."""

    async def go() -> dict[str, str]:
        detail = f"new API key pair; old keys valid {grace_hours} more hours"
        async with (
            open_runtime(settings_from(config_file, data_dir)) as rt,
            audited(rt, Action.AGENCY_API_KEYS, detail) as event,
        ):
            await event.for_slug(rt, slug)
            issued = await rt.agencies.rotate_api_keys(slug, grace_seconds=grace_hours * 3600)
            return {"publishable_key": issued.publishable_key, "secret_key": issued.secret_key}

    _echo_json({"agency": slug, **run(go()), "old_keys_valid_for_hours": grace_hours})


def _set_status(slug: str, status: AgencyStatus, config_file: Path | None, data_dir: Path | None) -> None:
    async def go() -> Agency:
        async with (
            open_runtime(settings_from(config_file, data_dir)) as rt,
            audited(rt, Action.AGENCY_STATUS, f"status {status}") as event,
        ):
            await event.for_slug(rt, slug)
            return await rt.agencies.set_status(slug, status)

    _echo_json({"agency": run(go()).public()})


@agency.command("disable")
@click.argument("slug")
@settings_options
def disable(slug: str, config_file: Path | None, data_dir: Path | None) -> None:
    """Refuse every API key of SLUG (its tokens stay stored; `enable` undoes it)."""
    _set_status(slug, AgencyStatus.DISABLED, config_file, data_dir)


@agency.command("enable")
@click.argument("slug")
@settings_options
def enable(slug: str, config_file: Path | None, data_dir: Path | None) -> None:
    """Accept SLUG's API keys again after `disable`."""
    _set_status(slug, AgencyStatus.ACTIVE, config_file, data_dir)


@agency.command("set-origins")
@click.argument("slug")
@click.option("--origin", "origins", multiple=True, required=True, help="The full new list of origins (repeatable).")
@settings_options
def set_origins(slug: str, origins: tuple[str, ...], config_file: Path | None, data_dir: Path | None) -> None:
    """Replace the storefront origins allowed to use SLUG's publishable key."""

    async def go() -> Agency:
        async with (
            open_runtime(settings_from(config_file, data_dir)) as rt,
            audited(rt, Action.AGENCY_ORIGINS) as event,
        ):
            await event.for_slug(rt, slug)
            changed = await rt.agencies.set_origins(slug, origins)
            event.detail = f"origins {' '.join(changed.origins) or '-'}"
            return changed

    _echo_json({"agency": run(go()).public()})


@agency.command("shred")
@click.argument("slug")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@settings_options
def shred(slug: str, yes: bool, config_file: Path | None, data_dir: Path | None) -> None:
    """Destroy SLUG's keys and with them every token it holds. Irreversible."""
    if not yes:
        click.echo(f"This destroys agency {slug!r}'s keys: all of its tokens become unrecoverable.", err=True)
        typed = click.prompt("Type the agency slug to confirm", err=True, default="", show_default=False)
        if not sys.stdin.isatty():
            click.echo(err=True)  # piped answers are not echoed: end the prompt's line
        if typed != slug:
            raise click.ClickException("not confirmed; nothing was changed")

    async def go() -> int:
        async with (
            open_runtime(settings_from(config_file, data_dir)) as rt,
            audited(rt, Action.AGENCY_SHRED) as event,
        ):
            await event.for_slug(rt, slug)
            removed = await rt.agencies.shred(slug)
            event.detail = f"keys destroyed; {removed} records removed"
            return removed

    removed = run(go())
    _echo_json({"agency": slug, "status": "shredded", "records_removed": removed})
