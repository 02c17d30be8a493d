"""`cardvault keys ...`: generate a master key, rotate data keys, rewrap stored data."""

from __future__ import annotations

import json
from pathlib import Path

import click

from service import rekey
from service.adapters import crypto
from service.adapters.keyring import format_master_key, write_secret_file
from service.adapters.store import AgencyRow
from service.cli.asyncrun import run
from service.cli.operator_audit import audited
from service.cli.options import settings_from, settings_options
from service.cli.runtime import Runtime, open_runtime
from service.domain.agencies import AgencyStatus
from service.domain.audit import Action
from service.errors import OperatorError


@click.group()
def keys() -> None:
    """Manage the key hierarchy: master key, per-agency data keys."""


@keys.command("generate-master")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), help="Write to this new file (mode 0600).")
def generate_master(output: Path | None) -> None:
    """Make a new random master key (prints it unless --output is given)."""
    text = format_master_key(crypto.random_key())
    if output is None:
        click.echo(text)
        return
    try:
        write_secret_file(output, text)
    except FileExistsError:
        raise OperatorError(f"{output} already exists; refusing to overwrite a key") from None
    click.echo(f"wrote {output} (mode 0600); point keys.master_key_file at it")


async def _rows(rt: Runtime, slug: str | None) -> list[AgencyRow]:
    if slug is not None:
        return [await rt.agencies.row(slug)]
    return [row for row in await rt.store.agencies() if row.agency.status is not AgencyStatus.SHREDDED]


@keys.command("rotate")
@click.option("--agency", "slug", help="Only this agency (default: every agency).")
@settings_options
def rotate(slug: str | None, config_file: Path | None, data_dir: Path | None) -> None:
    """Start a new data-key version that new writes use; old versions stay readable."""

    async def go() -> dict[str, int]:
        async with open_runtime(settings_from(config_file, data_dir)) as rt:
            rotated = {}
            for row in await _rows(rt, slug):
                async with audited(rt, Action.KEYS_ROTATE) as event:
                    event.agency_id = event.obj = row.agency.id
                    rotated[row.agency.slug] = await rt.agencies.rotate_data_key(row.agency.slug)
                    event.detail = f"data key version {rotated[row.agency.slug]} is now current"
            return rotated

    versions = run(go())
    click.echo(json.dumps({"rotated": versions}, indent=2))
    click.echo("next: `cardvault keys rewrap` re-encrypts stored data under the new versions", err=True)


@keys.command("rewrap")
@click.option("--agency", "slug", help="Only this agency (default: every agency).")
@click.option("--retire", is_flag=True, help="Afterwards delete data-key versions no ciphertext uses any more.")
@click.option("--restart", is_flag=True, help="Ignore saved progress and scan from the beginning.")
@settings_options
def rewrap(slug: str | None, retire: bool, restart: bool, config_file: Path | None, data_dir: Path | None) -> None:
    """Re-encrypt stored data under the newest data key and master key. Resumable."""

    async def go() -> list[rekey.RewrapReport]:
        async with open_runtime(settings_from(config_file, data_dir)) as rt:
            master_id = rt.keyring.master.current.key_id.hex()
            async with audited(rt, Action.KEYS_REWRAP) as master_event:
                changed = await rekey.rewrap_master(rt.store, rt.keyring)
                master_event.detail = (
                    f"system pepper {'re-wrapped' if changed else 'already wrapped'} under master key {master_id}"
                )
                if changed:
                    click.echo("re-wrapped the API-key pepper under the current master key", err=True)
            reports = []
            for row in await _rows(rt, slug):
                total = await rekey.count_ciphertexts(rt.store, row.agency.id)
                with click.progressbar(
                    length=total, label=f"{row.agency.slug:<20}", file=click.get_text_stream("stderr")
                ) as bar:
                    async with audited(rt, Action.KEYS_REWRAP) as event:
                        event.agency_id = event.obj = row.agency.id
                        report = await rekey.rewrap_agency(
                            rt.store, rt.keyring, row, progress=bar.update, restart=restart
                        )
                        event.detail = (
                            f"{report.rewrapped} of {report.scanned} ciphertexts re-sealed, "
                            f"{report.keys_rewrapped} keys re-wrapped under master key {master_id}"
                        )
                if retire:
                    fresh = await rt.agencies.row(row.agency.slug)
                    settle = rt.settings.auth.cache_seconds
                    async with audited(rt, Action.KEYS_REWRAP) as event:
                        event.agency_id = event.obj = row.agency.id
                        await rekey.retire_old_versions(rt.store, rt.keyring, fresh, report, settle_seconds=settle)
                        event.detail = f"retired data-key versions {report.retired_versions or 'none'}"
                    if report.retire_deferred_seconds:
                        click.echo(
                            f"{row.agency.slug}: old data-key versions kept: servers may write them for "
                            f"{report.retire_deferred_seconds}s more (auth.cache_seconds); "
                            "run `cardvault keys rewrap --retire` again after that",
                            err=True,
                        )
                reports.append(report)
            return reports

    for report in run(go()):
        click.echo(json.dumps(report.__dict__, default=sorted))


def _wrapped_by(row: AgencyRow) -> list[str]:
    """Ids of the master keys wrapping any of the agency's keys (none once shredded)."""
    blobs = [*row.keys.data_keys.values(), row.keys.fingerprint_key]
    return sorted({crypto.wrapped_by(blob).hex() for blob in blobs if blob})


@keys.command("status")
@settings_options
def status(config_file: Path | None, data_dir: Path | None) -> None:
    """Show the master key id, what it wraps, and each agency's data-key versions."""

    async def go() -> dict[str, object]:
        async with open_runtime(settings_from(config_file, data_dir)) as rt:
            rows = await rt.store.agencies()
            pepper = await rt.store.system_pepper(rt.keyring.new_wrapped_pepper())
            return {
                "master_key_id": rt.keyring.master.current.key_id.hex(),
                "previous_master_key_ids": [key.key_id.hex() for key in rt.keyring.master.previous],
                "pepper_wrapped_by": crypto.wrapped_by(pepper).hex(),
                "agencies": {
                    row.agency.slug: {
                        "status": str(row.agency.status),
                        "current_version": row.keys.current_version,
                        "versions": sorted(row.keys.data_keys),
                        "wrapped_by": _wrapped_by(row),
                    }
                    for row in rows
                },
            }

    click.echo(json.dumps(run(go()), indent=2))
