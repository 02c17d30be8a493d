"""Reading whole audit chains: verifying them (`cardvault audit verify`) and exporting their records.

A chain is read in its stored order: archive segments (oldest first), then
the queryable stream.  Verification reads the head and the anchor first and
walks everything once (``service.domain.audit_verify``); if the archiver
moved records while the walk ran, the walk is repeated, so a concurrent
``audit maintain`` never looks like tampering.  ``verify_all`` also checks
the chains against each other: the system chain notes the start of every
agency chain, so a chain deleted outright, or deleted and begun again, shows.

Exports stream records in chain order with every stored field, so an
exported JSON-lines file verifies on its own (``verify_file``: every hash
and every link inside the file; what came before and after it cannot be
judged from the file).
"""

from __future__ import annotations

import collections
import json
from collections.abc import AsyncIterator, Callable, Iterable

from service.adapters.audit_log import AuditLog
from service.domain.audit import SYSTEM_CHAIN, Action
from service.domain.audit_archive import SegmentUnreadable, month_of, segment_month
from service.domain.audit_chain import Anchor, ChainEntry, Mac
from service.domain.audit_verify import ChainReport, ChainWalker, Problem, ProblemKind

VERIFY_ATTEMPTS = 3
#: Keys an export line adds to the stored fields (they are not part of what the hash covers).
EXPORT_KEYS = ("chain", "entry")

Observer = Callable[[ChainEntry], None]


async def _walk(log: AuditLog, chain: str, observe: Observer | None) -> tuple[ChainReport, Anchor | None]:
    anchor = await log.anchor(chain)
    walker = ChainWalker(chain, log.mac, anchor, head=await log.head(chain))
    for name in await log.segment_names(chain):
        try:
            entries = await log.segment(chain, name)
        except SegmentUnreadable as exc:
            walker.unreadable(name, str(exc))
            continue
        for entry in entries:
            walker.feed(entry, archived=True)
            if observe is not None:
                observe(entry)
    async for batch in log.hot_batches(chain):
        for entry in batch:
            walker.feed(entry)
            if observe is not None:
                observe(entry)
    return walker.finish(), anchor


async def verify_chain(log: AuditLog, chain: str, observe: Observer | None = None) -> ChainReport:
    """Walk one chain; walked again (up to three times) when the archiver ran meanwhile."""
    for _ in range(VERIFY_ATTEMPTS):
        report, anchor = await _walk(log, chain, observe)
        if report.ok or await log.anchor(chain) == anchor:
            return report
    return report


async def verify_all(log: AuditLog) -> dict[str, ChainReport]:
    """Every chain in Redis, the system chain first, checked against the system chain's start notes."""
    starts: collections.Counter[str] = collections.Counter()

    def note_start(entry: ChainEntry) -> None:
        if entry.fields.get("action") == Action.AUDIT_CHAIN_START:
            starts[entry.fields.get("object", "")] += 1

    reports = {SYSTEM_CHAIN: await verify_chain(log, SYSTEM_CHAIN, note_start)}
    for chain in sorted(await log.chains() - {SYSTEM_CHAIN}):
        reports[chain] = await verify_chain(log, chain)
    for chain, count in sorted(starts.items()):
        report = reports.get(chain)
        if report is None:
            reports[chain] = ChainReport(
                chain,
                problems=[
                    Problem(
                        ProblemKind.REMOVED,
                        "the system chain records this chain's start, but nothing of it is left: deleted",
                    )
                ],
            )
        elif count > 1:
            report.problems.append(
                Problem(
                    ProblemKind.REMOVED,
                    f"the system chain records {count} starts of this chain: it was deleted and begun again",
                )
            )
    return reports


async def save_statuses(log: AuditLog, reports: Iterable[ChainReport], now: float) -> None:
    """Remember each result for the staff page's "chain verified" line."""
    for report in reports:
        await log.save_status(report.chain, now, report.ok, report.records, len(report.problems))


# -- exporting ----------------------------------------------------------------------------
def _within(entry: ChainEntry, since: float, until: float | None) -> bool:
    at = entry.at
    return at is not None and at >= since and (until is None or at < until)


async def chain_records(
    log: AuditLog, chain: str, since: float, until: float | None, on_unreadable: Callable[[str], None]
) -> AsyncIterator[ChainEntry]:
    """The chain's records with ``since <= at < until``, in chain order, archive included."""
    first_month = month_of(since)
    last_month = month_of(until) if until is not None else None
    for name in await log.segment_names(chain):
        month = segment_month(name)
        if month < first_month or (last_month is not None and month > last_month):
            continue
        try:
            entries = await log.segment(chain, name)
        except SegmentUnreadable as exc:
            on_unreadable(f"archive segment {name} of chain {chain} cannot be read ({exc})")
            continue
        for entry in entries:
            if _within(entry, since, until):
                yield entry
    async for batch in log.hot_batches(chain):
        for entry in batch:
            if _within(entry, since, until):
                yield entry


def export_line(chain: str, entry: ChainEntry) -> dict[str, str]:
    """One export record: the stored fields exactly, plus which chain and stream entry it is."""
    return {**entry.fields, "chain": chain, "entry": entry.entry_id}


# -- verifying an exported file -----------------------------------------------------------
def verify_lines(lines: Iterable[str], mac: Mac) -> dict[str, ChainReport]:
    """Check an exported JSON-lines file: per chain, every hash and every link between its records."""
    walkers: dict[str, ChainWalker] = {}
    malformed: list[int] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            chain = str(item["chain"])
            entry = ChainEntry(str(item["entry"]), {str(k): str(v) for k, v in item.items() if k not in EXPORT_KEYS})
        except (ValueError, KeyError, TypeError, AttributeError):
            malformed.append(number)
            continue
        if chain not in walkers:
            start = Anchor(start_seq=entry.seq or 1, start_prev=entry.fields.get("prev", ""))
            walkers[chain] = ChainWalker(chain, mac, start, head=None, partial=True)
        walkers[chain].feed(entry)
    reports = {chain: walker.finish() for chain, walker in walkers.items()}
    if malformed:
        shown = ", ".join(str(n) for n in malformed[:10])
        reports.setdefault("(file)", ChainReport("(file)")).problems.append(
            Problem(ProblemKind.INSERTED, f"lines that are not export records: {shown}")
        )
    return reports
