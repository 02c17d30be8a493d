"""Audit retention (`cardvault audit maintain`): archive what is no longer queryable, drop what is past retention.

PCI DSS 10.5.1 asks for a year of audit history with the last three months
immediately available.  Records older than ``audit.queryable_days`` move
from each chain's stream (which ``/staff/audit`` searches) into compressed
archive segments in the same Redis (``service.domain.audit_archive``),
verbatim, so the chain still verifies across the cut; the anchor notes the
last archived record so a removed segment shows.  Records older than
``audit.retention_days`` are dropped from the archive; the anchor then says
where the chain starts now (``start_seq`` and the hash it links to), how
many records were dropped and before which time, so `audit verify` still
passes and reports the cut.  Before dropping, the records about to go are
verified: if any were tampered with, the fact is recorded in the chain
itself, so the evidence outlives the records.

Every move and drop runs in one MULTI/EXEC guarded by the anchor (WATCH), so
two maintainers at once never both move the same records; appends go on
meanwhile untouched.  Each run records what it did in the chain it did it
to, then verifies every chain and saves the result for the staff page.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from dataclasses import dataclass, field

from service.audit import Actor, Auditor
from service.audit_chains import save_statuses, verify_all, verify_chain
from service.domain.audit import SYSTEM_CHAIN, Action, Outcome, utc_text
from service.domain.audit_archive import (
    DAY_SECONDS,
    MAX_SEGMENT_RECORDS,
    SegmentUnreadable,
    encode_segment,
    month_of,
    segment_month,
    segment_name,
    split_by_month,
)
from service.domain.audit_chain import Anchor, ChainEntry
from service.domain.audit_verify import ChainReport, ChainWalker
from service.settings import AuditSettings


@dataclass
class MaintenanceReport:
    chain: str
    archived: int = 0
    segments: int = 0
    dropped: int = 0
    problems: list[str] = field(default_factory=list)
    verified: ChainReport | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "chain": self.chain,
            "archived": self.archived,
            "segments_written": self.segments,
            "dropped": self.dropped,
            "problems": self.problems,
            "verified": self.verified.to_json() if self.verified is not None else None,
        }


def _due(entries: list[ChainEntry], cutoff: float) -> list[ChainEntry]:
    """The leading records older than ``cutoff`` (one without a readable time goes with the ones before it)."""
    due = []
    for entry in entries:
        at = entry.at
        if at is not None and at >= cutoff:
            break
        due.append(entry)
    return due


class AuditMaintenance:
    def __init__(self, auditor: Auditor, settings: AuditSettings, actor: Actor) -> None:
        self.auditor = auditor
        self.log = auditor.log
        self.settings = settings
        self.actor = actor

    async def run(self, now: float, chains: Collection[str] | None = None) -> list[MaintenanceReport]:
        """Archive, drop and verify every chain (or only ``chains``); ``now`` is explicit for tests."""
        archive_before = now - self.settings.queryable_days * DAY_SECONDS
        drop_before = now - self.settings.retention_days * DAY_SECONDS
        reports = []
        for chain in sorted(chains if chains is not None else await self.log.chains() | {SYSTEM_CHAIN}):
            report = MaintenanceReport(chain)
            await self.archive(chain, archive_before, report)
            await self.drop(chain, drop_before, report)
            await self._record(chain, report, archive_before, drop_before)
            reports.append(report)
        if chains is None:
            verified = await verify_all(self.log)
        else:
            verified = {chain: await verify_chain(self.log, chain) for chain in chains}
        await save_statuses(self.log, verified.values(), now)
        for report in reports:
            report.verified = verified.get(report.chain)
        return reports

    async def archive(self, chain: str, before: float, report: MaintenanceReport) -> None:
        """Move the stream's records older than ``before`` into archive segments, a batch at a time."""
        while True:
            anchor = await self.log.anchor(chain)
            batch = await self.log.oldest(chain, MAX_SEGMENT_RECORDS)
            due = _due(batch, before)
            if not due:
                return
            segments = [
                (segment_name(month, run[0].entry_id), encode_segment(run)) for month, run in split_by_month(due)
            ]
            last = due[-1]
            base = anchor or Anchor()
            moved = dataclasses.replace(
                base,
                archived_seq=last.seq if last.seq is not None else base.archived_seq,
                archived_hash=last.fields.get("hash", ""),
            ).signed(chain, self.log.mac)
            if not await self.log.move_to_archive(chain, segments, [e.entry_id for e in due], anchor, moved):
                report.problems.append("another `audit maintain` was archiving this chain; left to it")
                return
            report.archived += len(due)
            report.segments += len(segments)
            if len(due) < len(batch) or len(batch) < MAX_SEGMENT_RECORDS:
                return

    async def drop(self, chain: str, before: float, report: MaintenanceReport) -> None:
        """Drop archived records older than ``before``; the anchor moves to the first record kept."""
        anchor = await self.log.anchor(chain)
        if anchor is None:
            return  # nothing was ever archived, so nothing is old enough
        dropped: list[ChainEntry] = []
        delete: list[str] = []
        put: list[tuple[str, bytes]] = []
        for name in await self.log.segment_names(chain):
            if segment_month(name) > month_of(before):
                break
            try:
                entries = await self.log.segment(chain, name)
            except SegmentUnreadable as exc:
                report.problems.append(f"archive segment {name} cannot be read ({exc}); retention stopped there")
                break
            due = _due(entries, before)
            if not due:
                break
            delete.append(name)
            dropped += due
            if len(due) < len(entries):
                rest = entries[len(due) :]
                put.append((segment_name(segment_month(name), rest[0].entry_id), encode_segment(rest)))
                break
        if not dropped:
            return
        report.problems += self._check_dropped(chain, anchor, dropped)
        last = dropped[-1]
        cut = dataclasses.replace(
            anchor,
            start_seq=(last.seq if last.seq is not None else anchor.start_seq - 1) + 1,
            start_prev=last.fields.get("hash", ""),
            dropped=anchor.dropped + len(dropped),
            dropped_before=before,
        ).signed(chain, self.log.mac)
        if not await self.log.replace_segments(chain, delete, put, anchor, cut):
            report.problems.append("another `audit maintain` was cutting this chain; left to it")
            return
        report.dropped += len(dropped)

    def _check_dropped(self, chain: str, anchor: Anchor, dropped: list[ChainEntry]) -> list[str]:
        walker = ChainWalker(chain, self.log.mac, anchor, head=None, partial=True)
        for entry in dropped:
            walker.feed(entry, archived=True)
        return [f"dropped by retention although it did not verify: {p.message}" for p in walker.finish().problems]

    async def _record(
        self, chain: str, report: MaintenanceReport, archived_before: float, dropped_before: float
    ) -> None:
        agency_id = "" if chain == SYSTEM_CHAIN else chain
        if report.archived:
            await self.auditor.record(
                self.actor,
                Action.AUDIT_ARCHIVE,
                Outcome.SUCCESS,
                "-",
                f"{report.archived} records older than {utc_text(archived_before)} moved to the archive",
                agency_id=agency_id,
            )
        if report.dropped or report.problems:
            problems = "; ".join(report.problems)[:300]
            await self.auditor.record(
                self.actor,
                Action.AUDIT_RETENTION,
                Outcome.FAILURE if report.problems else Outcome.SUCCESS,
                "-",
                f"{report.dropped} records older than {utc_text(dropped_before)} dropped"
                + (f"; {problems}" if problems else ""),
                agency_id=agency_id,
            )
