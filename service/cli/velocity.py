"""`cardvault agency velocity | set-velocity`: see and change an agency's card-testing limits.

`set-limits` sets the largest single charge; these two handle the velocity
limits (how many tokens and charges per address, key, card, staff member and
agency in a period), the adaptive tightening in force and the trip counts.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from service.adapters.velocity_store import VelocityStore
from service.agency_settings import AgencySettingsService
from service.cli.agency import agency
from service.cli.asyncrun import run
from service.cli.options import settings_from, settings_options
from service.cli.runtime import open_runtime
from service.clock import system_clock
from service.domain.velocity import Action, Dimension, Limit, format_limit, limit_name, parse_limit
from service.velocity import Velocity, VelocityState

DEFAULT = "default"


def _option_name(action: Action, dimension: Dimension) -> str:
    return f"--{'token' if action is Action.TOKENS else 'charge'}-{dimension}"


def _limit_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """One option per limit: --token-address, --token-key, ..., --charge-agency."""
    for action in reversed(Action):
        for dimension in reversed(Dimension):
            name = limit_name(action, dimension)
            command = click.option(
                _option_name(action, dimension),
                name.replace(".", "_"),
                metavar="N/PERIOD|off|default",
                help=f"{name}: e.g. 10/10m, 600/60, 5/1h; off; default (drop the agency's own).",
            )(command)
    return command


def _state_json(slug: str, state: VelocityState) -> dict[str, Any]:
    until = state.tightened_until_ms
    return {
        "agency": slug,
        "limits": {name: format_limit(limit) for name, limit in state.limits.items()},
        "overrides": state.overrides.public(),
        "tightened_until": dt.datetime.fromtimestamp(until / 1000, tz=dt.UTC).isoformat() if until else None,
        "tightened_addresses": state.tightened_addresses,
        "trips": dict(sorted(state.trips.items())),
    }


def _show(slug: str, state: VelocityState) -> None:
    shown = _state_json(slug, state)
    click.echo(f"velocity limits of {slug} (COUNT/PERIOD; * = the agency's own, else the default)")
    for name, limit in shown["limits"].items():
        own = "*" if name in shown["overrides"] else " "
        click.echo(f"  {name:<18} {limit:<12}{own}")
    click.echo(f"tightened until: {shown['tightened_until'] or 'not tightened'}")
    click.echo(f"addresses tightened now: {shown['tightened_addresses']}")
    trips = shown["trips"]
    click.echo("trips: " + (", ".join(f"{k} {v}" for k, v in trips.items()) if trips else "none"))


async def _state(settings_file: Path | None, data_dir: Path | None, slug: str, lift: bool) -> VelocityState:
    settings = settings_from(settings_file, data_dir)
    async with open_runtime(settings) as rt:
        row = await rt.agencies.row(slug)
        store = VelocityStore(rt.store.redis)
        if lift:
            await store.lift_tightening(row.agency.id)
        return await Velocity(store, settings.velocity, system_clock, rt.keyring).state(row.agency)


@agency.command("velocity")
@click.argument("slug")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--lift-tightening", is_flag=True, help="End the agency's and its addresses' tightening now.")
@settings_options
def velocity(slug: str, as_json: bool, lift_tightening: bool, config_file: Path | None, data_dir: Path | None) -> None:
    """Show SLUG's velocity limits in force, its adaptive tightening and how often each limit refused."""
    state = run(_state(config_file, data_dir, slug, lift_tightening))
    if as_json:
        click.echo(json.dumps(_state_json(slug, state), indent=2))
    else:
        _show(slug, state)


@agency.command("set-velocity")
@click.argument("slug")
@_limit_options
@click.option("--reset", is_flag=True, help="Drop all of the agency's own limits first (back to the defaults).")
@settings_options
def set_velocity(slug: str, reset: bool, config_file: Path | None, data_dir: Path | None, **limits: str | None) -> None:
    """Set SLUG's own velocity limits (each option overrides one default); prints the limits in force."""
    changes: dict[str, Limit | None] = {}
    back_to_default: list[str] = []
    for option, value in limits.items():
        if value is None:
            continue
        name = option.replace("_", ".", 1)
        if value.strip().lower() == DEFAULT:
            back_to_default.append(name)
        else:
            changes[name] = parse_limit(value)
    if not changes and not back_to_default and not reset:
        raise click.UsageError("give at least one limit option (e.g. --token-address 10/10m) or --reset")

    async def go() -> VelocityState:
        settings = settings_from(config_file, data_dir)
        async with open_runtime(settings) as rt:
            changed = await AgencySettingsService(rt.agencies).set_velocity(
                slug, changes, back_to_default=back_to_default, reset=reset
            )
            velocity = Velocity(VelocityStore(rt.store.redis), settings.velocity, system_clock, rt.keyring)
            return await velocity.state(changed)

    click.echo(json.dumps(_state_json(slug, run(go())), indent=2))
