"""`cardvault audit verify | export | maintain`: check the hash chains, take records out, apply retention.

``verify`` exits 0 only when every chain it checked is intact, 1 when
anything was edited, removed, inserted, reordered or truncated (each break is
listed).  ``export`` streams records as JSON lines (every stored field, so
``verify --file`` can check the file later) or as formula-safe CSV for a
spreadsheet.  ``maintain`` archives and drops by the ``audit`` settings and
then verifies; run it daily (README: Audit log).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import click

from service.audit import Actor
from service.audit_chains import chain_records, export_line, save_statuses, verify_all, verify_chain, verify_lines
from service.audit_retention import AuditMaintenance, MaintenanceReport
from service.cli.asyncrun import run
from service.cli.options import settings_from, settings_options
from service.cli.runtime import Runtime, open_runtime
from service.clock import system_clock
from service.domain.audit import FIELDS, SYSTEM_CHAIN, Action, Outcome, chain_of, utc_text
from service.domain.audit_chain import RELINKED
from service.domain.audit_verify import ChainReport
from service.domain.exports import csv_line
from service.errors import OperatorError

CSV_COLUMNS = ("chain", "entry", "when_utc", *FIELDS, "v", "seq", "prev", "hash", RELINKED)
DATE_FORMATS = ["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%d %H:%M:%S"]


@click.group()
def audit() -> None:
    """Check, export and maintain the hash-chained audit log."""


async def _labels(rt: Runtime) -> dict[str, str]:
    labels = {SYSTEM_CHAIN: SYSTEM_CHAIN}
    for row in await rt.store.agencies():
        labels[row.agency.id] = f"{row.agency.slug} ({row.agency.id})"
    return labels


async def _chain_for(rt: Runtime, slug: str | None, system: bool) -> str | None:
    """The one chain asked for, or None for all of them."""
    if slug is not None and system:
        raise click.UsageError("give --agency SLUG or --system, not both")
    if system:
        return SYSTEM_CHAIN
    if slug is None:
        return None
    agency_id = await rt.store.agency_id_for_slug(slug)
    if agency_id is None:
        raise OperatorError(f"no agency {slug!r} (see `cardvault agency list`)")
    return chain_of(agency_id)


def _summary(report: ChainReport) -> str:
    span = f"seq {report.first_seq}..{report.last_seq}" if report.first_seq is not None else "no records"
    text = f"{report.records} records ({span}; {report.archived} archived, {report.queryable} queryable)"
    if report.dropped:
        text += f"; {report.dropped} dropped by retention before {utc_text(report.dropped_before)}"
    return text


def _print_reports(reports: dict[str, ChainReport], labels: dict[str, str], as_json: bool) -> None:
    if as_json:
        click.echo(
            json.dumps(
                {
                    "ok": all(r.ok for r in reports.values()),
                    "chains": [{**r.to_json(), "label": labels.get(chain, chain)} for chain, r in reports.items()],
                },
                indent=2,
            )
        )
        return
    width = max((len(labels.get(c, c)) for c in reports), default=10)
    for chain, report in reports.items():
        state = "OK" if report.ok else "BROKEN"
        click.echo(f"{labels.get(chain, chain):<{width}}  {state:<6}  {_summary(report)}")
        for problem in report.problems:
            click.echo(f"    {problem.kind:<10} {problem.message}")


@audit.command("verify")
@click.option("--agency", "slug", help="Only this agency's chain.")
@click.option("--system", is_flag=True, help="Only the system chain (events of no agency).")
@click.option("--all", "all_chains", is_flag=True, help="Every chain (the default).")
@click.option(
    "--file",
    "export_file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Check an exported JSON-lines file instead of Redis (the vault's key is still needed).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@settings_options
def verify(
    slug: str | None,
    system: bool,
    all_chains: bool,
    export_file: Path | None,
    as_json: bool,
    config_file: Path | None,
    data_dir: Path | None,
) -> None:
    """Walk the hash chains; exit 1 if any record was edited, removed, inserted, reordered or truncated."""
    if all_chains and (slug or system):
        raise click.UsageError("--all checks every chain; leave out --agency and --system")

    async def go() -> tuple[dict[str, ChainReport], dict[str, str]]:
        async with open_runtime(settings_from(config_file, data_dir)) as rt:
            log = rt.auditor.log
            labels = await _labels(rt)
            if export_file is not None:
                with export_file.open(encoding="utf-8") as lines:
                    return verify_lines(lines, log.mac), labels
            chain = await _chain_for(rt, slug, system)
            reports = {chain: await verify_chain(log, chain)} if chain else await verify_all(log)
            await save_statuses(log, reports.values(), system_clock())
            return reports, labels

    reports, labels = run(go())
    _print_reports(reports, labels, as_json)
    if not all(r.ok for r in reports.values()):
        sys.exit(1)


def _utc(value: dt.datetime | None) -> float | None:
    return None if value is None else value.replace(tzinfo=dt.UTC).timestamp()


@contextlib.contextmanager
def _output(path: Path | None) -> Iterator[IO[str]]:
    if path is None:
        yield sys.stdout
        return
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
        yield handle


@audit.command("export")
@click.option("--since", type=click.DateTime(DATE_FORMATS), required=True, help="From this UTC date or time.")
@click.option("--until", type=click.DateTime(DATE_FORMATS), help="Before this UTC date or time (default: now).")
@click.option("--agency", "slug", help="Only this agency's chain (default: every chain).")
@click.option("--system", is_flag=True, help="Only the system chain.")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), default="jsonl", show_default=True)
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), help="Write here (mode 0600), not stdout.")
@settings_options
def export(
    since: dt.datetime,
    until: dt.datetime | None,
    slug: str | None,
    system: bool,
    fmt: str,
    output: Path | None,
    config_file: Path | None,
    data_dir: Path | None,
) -> None:
    """Write the records from --since (archived ones included) in chain order, chain by chain."""
    start, end = _utc(since), _utc(until)
    assert start is not None

    async def go() -> None:
        async with open_runtime(settings_from(config_file, data_dir)) as rt:
            log = rt.auditor.log
            only = await _chain_for(rt, slug, system)
            chains = [only] if only else [SYSTEM_CHAIN, *sorted(await log.chains() - {SYSTEM_CHAIN})]
            counts: dict[str, int] = {}

            def warn(message: str) -> None:
                click.echo(f"warning: {message}", err=True)

            with _output(output) as out:
                if fmt == "csv":
                    out.write(csv_line(CSV_COLUMNS))
                for chain in chains:
                    counts[chain] = 0
                    async for entry in chain_records(log, chain, start, end, warn):
                        line = export_line(chain, entry)
                        if fmt == "csv":
                            line["when_utc"] = utc_text(entry.at or 0.0)
                            out.write(csv_line([line.get(column, "") for column in CSV_COLUMNS]))
                        else:
                            out.write(json.dumps(line, sort_keys=True, separators=(",", ":")) + "\n")
                        counts[chain] += 1
            window = f"{utc_text(start)} to {utc_text(end) if end is not None else 'now'}"
            for chain, count in counts.items():
                agency_id = "" if chain == SYSTEM_CHAIN else chain
                await rt.auditor.record(
                    Actor.operator(agency_id),
                    Action.AUDIT_EXPORT,
                    Outcome.SUCCESS,
                    "-",
                    f"{count} records from {window} as {fmt}",
                    agency_id=agency_id,
                )
            click.echo(f"exported {sum(counts.values())} records from {len(counts)} chains", err=True)

    run(go())


@audit.command("maintain")
@click.option("--agency", "slug", help="Only this agency's chain (default: every chain).")
@click.option("--system", is_flag=True, help="Only the system chain.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@settings_options
def maintain(slug: str | None, system: bool, as_json: bool, config_file: Path | None, data_dir: Path | None) -> None:
    """Archive records past audit.queryable_days, drop those past audit.retention_days, then verify."""

    async def go() -> tuple[list[MaintenanceReport], dict[str, str]]:
        settings = settings_from(config_file, data_dir)
        async with open_runtime(settings) as rt:
            only = await _chain_for(rt, slug, system)
            work = AuditMaintenance(rt.auditor, settings.audit, Actor.operator(""))
            return await work.run(system_clock(), [only] if only else None), await _labels(rt)

    done, labels = run(go())
    verified = {r.chain: r.verified for r in done if r.verified is not None}
    if as_json:
        click.echo(json.dumps({"chains": [r.to_json() for r in done]}, indent=2))
    else:
        for report in done:
            click.echo(
                f"{labels.get(report.chain, report.chain)}: archived {report.archived} "
                f"in {report.segments} segments, dropped {report.dropped}"
            )
            for problem in report.problems:
                click.echo(f"    {problem}")
        _print_reports(verified, labels, False)
    if any(r.problems for r in done) or not all(r.ok for r in verified.values()):
        sys.exit(1)
