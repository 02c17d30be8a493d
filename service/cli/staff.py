"""`cardvault staff ...`: add staff accounts (printing a one-time enrollment link), disable, reset, list.

The link is the only secret printed, once; it works for 24 hours and only
until the account enrolls or is reset again.  Every change is written to the
agency's audit trail as done by the operator.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import click

from service.adapters.audit_log import AuditLog
from service.adapters.staff_sessions import StaffSessionStore
from service.adapters.staff_store import StaffStore
from service.audit import Actor, Auditor
from service.cli.asyncrun import run
from service.cli.options import settings_from, settings_options
from service.cli.runtime import open_runtime
from service.clock import system_clock
from service.domain.staff import Role, StaffMember, parse_role
from service.settings import Settings
from service.staff import StaffService


def enrollment_link(settings: Settings, token: str) -> str:
    base = settings.staff.public_url or f"https://{settings.server.host}:{settings.server.port}"
    return f"{base}/staff/enroll?token={token}"


@contextlib.asynccontextmanager
async def _service(config_file: Path | None, data_dir: Path | None) -> AsyncIterator[tuple[Settings, StaffService]]:
    settings = settings_from(config_file, data_dir)
    async with open_runtime(settings) as rt:
        client = rt.store.redis
        sessions = StaffSessionStore(
            client,
            idle_seconds=settings.staff.idle_timeout_seconds,
            absolute_seconds=settings.staff.absolute_timeout_seconds,
        )
        auditor = Auditor(AuditLog(client, rt.keyring), system_clock)
        yield settings, StaffService(StaffStore(client), sessions, rt.agencies, auditor, system_clock)


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2))


@click.group()
def staff() -> None:
    """Manage staff accounts of the virtual terminal (/staff/)."""


@staff.command("add")
@click.argument("username")
@click.option("--agency", "slug", required=True, help="The agency the account belongs to.")
@click.option("--role", type=click.Choice([r.value for r in Role]), required=True, help="What the account may do.")
@settings_options
def add(username: str, slug: str, role: str, config_file: Path | None, data_dir: Path | None) -> None:
    """Add USERNAME to an agency and print its one-time enrollment link (valid 24 hours)."""

    async def go() -> tuple[StaffMember, str]:
        async with _service(config_file, data_dir) as (settings, service):
            member, token = await service.add(slug, username, parse_role(role), Actor.operator(""))
            return member, enrollment_link(settings, token)

    member, link = run(go())
    _echo_json({"staff": member.public(), "agency": slug, "enrollment_link": link, "expires_in_hours": 24})


@staff.command("disable")
@click.argument("username")
@click.option("--agency", "slug", required=True)
@settings_options
def disable(username: str, slug: str, config_file: Path | None, data_dir: Path | None) -> None:
    """Disable USERNAME: it cannot sign in, and its sessions end now."""

    async def go() -> StaffMember:
        async with _service(config_file, data_dir) as (_, service):
            return await service.disable(slug, username, Actor.operator(""))

    _echo_json({"staff": run(go()).public()})


@staff.command("reset")
@click.argument("username")
@click.option("--agency", "slug", required=True)
@settings_options
def reset(username: str, slug: str, config_file: Path | None, data_dir: Path | None) -> None:
    """Forget USERNAME's password and authenticator, end its sessions, print a new enrollment link."""

    async def go() -> tuple[StaffMember, str]:
        async with _service(config_file, data_dir) as (settings, service):
            member, token = await service.reset(slug, username, Actor.operator(""))
            return member, enrollment_link(settings, token)

    member, link = run(go())
    _echo_json({"staff": member.public(), "agency": slug, "enrollment_link": link, "expires_in_hours": 24})


@staff.command("list")
@click.option("--agency", "slug", required=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@settings_options
def list_(slug: str, as_json: bool, config_file: Path | None, data_dir: Path | None) -> None:
    """List the agency's staff with role and status."""

    async def go() -> list[StaffMember]:
        async with _service(config_file, data_dir) as (_, service):
            return await service.list(slug)

    members = run(go())
    if as_json:
        _echo_json({"agency": slug, "staff": [m.public() for m in members]})
        return
    if not members:
        click.echo(f"no staff yet: cardvault staff add USERNAME --agency {slug} --role agent")
        return
    click.echo(f"{'USERNAME':<24} {'ROLE':<11} {'STATUS':<9} CREATED")
    for m in members:
        created = dt.datetime.fromtimestamp(m.created, tz=dt.UTC).strftime("%Y-%m-%d %H:%M")
        click.echo(f"{m.username:<24} {m.role:<11} {m.status:<9} {created}")
