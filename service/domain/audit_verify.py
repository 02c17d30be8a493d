"""Walking an audit chain: which records were edited, removed, inserted, reordered or truncated.

:class:`ChainWalker` reads a chain's records in stored order (archive
segments, then the queryable stream) and reports each break precisely:
*edited* (content no longer matches its hash), *removed* (a gap in ``seq``),
*inserted* (a record the vault did not write, or a copy), *reordered* (a
genuine record found out of place), *truncated* (records missing at the end,
against the signed head), and problems of the head or anchor themselves.  A
record whose hash does not match is held until the next genuine record shows
whether it replaced the real one (the links still fit: edited) or sits beside
it (inserted).  Only open gaps are kept in memory, never the chain, so a year
of records verifies in one pass.
"""

from __future__ import annotations

import enum
import hmac
from dataclasses import dataclass, field
from typing import Any

from service.domain.audit_chain import HASH_PATTERN, RELINKED, Anchor, ChainEntry, Head, Mac, genuine_record


class ProblemKind(enum.StrEnum):
    EDITED = "edited"
    REMOVED = "removed"
    INSERTED = "inserted"
    REORDERED = "reordered"
    TRUNCATED = "truncated"
    HEAD = "head"
    ANCHOR = "anchor"


@dataclass(frozen=True)
class Problem:
    kind: ProblemKind
    message: str
    seq: int | None = None
    entry: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"kind": str(self.kind), "seq": self.seq, "entry": self.entry, "message": self.message}


@dataclass
class ChainReport:
    """What a walk found: counts, where the chain starts and ends, and every break."""

    chain: str
    records: int = 0
    archived: int = 0
    queryable: int = 0
    first_seq: int | None = None
    last_seq: int = 0
    start_seq: int = 1
    dropped: int = 0
    dropped_before: float = 0.0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {
            "chain": self.chain,
            "ok": self.ok,
            "records": self.records,
            "archived": self.archived,
            "queryable": self.queryable,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "dropped_by_retention": self.dropped,
            "retention_cut": self.dropped_before or None,
            "problems": [p.to_json() for p in self.problems],
        }


@dataclass
class _Gap:
    first: int
    last: int
    after: str  # the entry before the gap ("" at the start)
    before: str  # the entry after it

    def describe(self) -> str:
        span = f"seq {self.first}" if self.first == self.last else f"seq {self.first}..{self.last}"
        verb = "is" if self.first == self.last else "are"
        where = f"between entries {self.after} and {self.before}" if self.after else f"before entry {self.before}"
        return f"{span} {verb} missing ({where}): removed"


@dataclass(frozen=True)
class _Unverified:
    """A record whose hash does not match, held until the next genuine record says what it was."""

    entry: str
    seq: int
    prev: str
    hash: str


class ChainWalker:
    """Checks one chain's records, fed oldest first; ``finish`` gives the report.

    ``head`` is the head pointer read *before* the walk, so records appended
    while the walk runs (beyond it) are not mistaken for anything.  A
    ``partial`` walk (an exported file, the records a retention cut drops)
    checks only what it is given: every hash and every link between
    consecutive records, not the head or the archive mark.
    """

    def __init__(
        self, chain: str, mac: Mac, anchor: Anchor | None = None, *, head: Head | None, partial: bool = False
    ) -> None:
        self.chain = chain
        self.mac = mac
        self.anchor = anchor
        self.head = head
        self.partial = partial
        start = anchor or Anchor()
        self.report = ChainReport(
            chain, start_seq=start.start_seq, dropped=start.dropped, dropped_before=start.dropped_before
        )
        self.expected_seq = start.start_seq
        self.expected_prev = start.start_prev
        self.last_entry = ""
        self.head_hash_seen: str | None = None
        self.archived_last: int | None = None
        self.gaps: list[_Gap] = []
        self.pending: list[_Unverified] = []

    # -- feeding -------------------------------------------------------------------
    def feed(self, entry: ChainEntry, *, archived: bool = False) -> None:
        self.report.records += 1
        if archived:
            self.report.archived += 1
        else:
            self.report.queryable += 1
        fields = entry.fields
        seq, claimed = entry.seq, fields.get("hash", "")
        if seq is None or not HASH_PATTERN.match(claimed):
            self._problem(ProblemKind.INSERTED, f"entry {entry.entry_id} is not a chain record: inserted", None, entry)
            return
        if archived:
            self.archived_last = seq
        if not genuine_record(self.chain, fields, self.mac):
            self.pending.append(_Unverified(entry.entry_id, seq, fields.get("prev", ""), claimed))
            return
        self._settle_pending(seq, fields.get("prev", ""))
        if fields.get(RELINKED):
            self._problem(
                ProblemKind.HEAD,
                f"seq {seq} (entry {entry.entry_id}) was written after the chain's head pointer had vanished: "
                "records just before it may have been removed",
                seq,
                entry,
            )
        self._genuine(entry, seq, fields.get("prev", ""), claimed)

    def unreadable(self, segment: str, reason: str) -> None:
        """An archive segment that could not be read: everything in it counts as missing."""
        self._problem(ProblemKind.EDITED, f"archive segment {segment} cannot be read ({reason}): edited", None, None)

    def _genuine(self, entry: ChainEntry, seq: int, prev: str, hash_: str) -> None:
        if self.report.first_seq is None:
            self.report.first_seq = seq
        if seq == self.expected_seq:
            if prev != self.expected_prev:
                self._problem(
                    ProblemKind.EDITED,
                    f"seq {seq} (entry {entry.entry_id}) does not link to the record before it: "
                    "that record was replaced",
                    seq,
                    entry,
                )
            self._advance(seq, hash_, entry.entry_id)
        elif seq > self.expected_seq:
            self.gaps.append(_Gap(self.expected_seq, seq - 1, self.last_entry, entry.entry_id))
            self._advance(seq, hash_, entry.entry_id)
        elif self._fill_gap(seq):
            self._problem(
                ProblemKind.REORDERED,
                f"seq {seq} (entry {entry.entry_id}) was found after seq {self.report.last_seq}: moved out of order",
                seq,
                entry,
            )
        elif seq < self.report.start_seq:
            self._problem(
                ProblemKind.INSERTED,
                f"seq {seq} (entry {entry.entry_id}) is older than the retention cut "
                f"(seq {self.report.start_seq}): put back",
                seq,
                entry,
            )
        else:
            self._problem(
                ProblemKind.INSERTED, f"seq {seq} (entry {entry.entry_id}) appears a second time: copied", seq, entry
            )

    def _settle_pending(self, next_seq: int | None, next_prev: str | None) -> None:
        """Decide what each unverified record was, now that the record after them is known."""
        pending, self.pending = self.pending, []
        for index, bad in enumerate(pending):
            after_seq: int | None = next_seq
            after_prev: str | None = next_prev
            if index + 1 < len(pending):
                after_seq, after_prev = pending[index + 1].seq, pending[index + 1].prev
            entry = ChainEntry(bad.entry, {})
            if bad.seq == self.expected_seq and after_seq == bad.seq + 1 and after_prev == bad.hash:
                self._problem(
                    ProblemKind.EDITED,
                    f"seq {bad.seq} (entry {bad.entry}): its content does not match its hash: edited",
                    bad.seq,
                    entry,
                )
                if self.report.first_seq is None:
                    self.report.first_seq = bad.seq
                self._advance(bad.seq, bad.hash, bad.entry)
            elif self._fill_gap(bad.seq):
                self._problem(
                    ProblemKind.EDITED,
                    f"seq {bad.seq} (entry {bad.entry}) was removed and added again with other content: edited",
                    bad.seq,
                    entry,
                )
            else:
                self._problem(
                    ProblemKind.INSERTED,
                    f"entry {bad.entry} claims seq {bad.seq} but the vault did not write it "
                    "(its hash does not match): inserted",
                    bad.seq,
                    entry,
                )

    def _advance(self, seq: int, hash_: str, entry_id: str) -> None:
        self.expected_seq = seq + 1
        self.expected_prev = hash_
        self.report.last_seq = seq
        self.last_entry = entry_id
        if self.head is not None and seq == self.head.seq:
            self.head_hash_seen = hash_

    def _fill_gap(self, seq: int) -> bool:
        for index, gap in enumerate(self.gaps):
            if gap.first <= seq <= gap.last:
                parts = [
                    _Gap(gap.first, seq - 1, gap.after, gap.before) if seq > gap.first else None,
                    _Gap(seq + 1, gap.last, gap.after, gap.before) if seq < gap.last else None,
                ]
                self.gaps[index : index + 1] = [p for p in parts if p is not None]
                return True
        return False

    def _problem(self, kind: ProblemKind, message: str, seq: int | None, entry: ChainEntry | None) -> None:
        self.report.problems.append(Problem(kind, message, seq, entry.entry_id if entry else ""))

    # -- the end -------------------------------------------------------------------
    def finish(self) -> ChainReport:
        head_ok = self.head is not None and self.head.genuine(self.chain, self.mac)
        if head_ok and self.head is not None:
            self._settle_pending(self.head.seq + 1, self.head.hash)
        else:
            self._settle_pending(None, None)
        if self.report.first_seq is None and self.report.last_seq == 0:
            self.report.last_seq = self.report.start_seq - 1
        for gap in self.gaps:
            self._problem(ProblemKind.REMOVED, gap.describe(), gap.first, None)
        self._check_anchor()
        if not self.partial:
            self._check_head(head_ok)
        return self.report

    def _check_anchor(self) -> None:
        anchor = self.anchor
        if anchor is None or self.partial:
            return
        if not anchor.genuine(self.chain, self.mac):
            self._problem(ProblemKind.ANCHOR, "the chain's anchor (retention cut, archive) was edited", None, None)
            return
        if anchor.archived_seq >= anchor.start_seq and (
            self.archived_last is None or self.archived_last < anchor.archived_seq
        ):
            held = "nothing" if self.archived_last is None else f"up to seq {self.archived_last}"
            self._problem(
                ProblemKind.REMOVED,
                f"the archive holds {held} but the anchor says it holds records up to seq {anchor.archived_seq}: "
                "archived records were removed",
                anchor.archived_seq,
                None,
            )

    def _check_head(self, head_ok: bool) -> None:
        head = self.head
        started = self.report.records > 0 or (self.anchor is not None and self.anchor.start_seq > 1)
        if head is None:
            if started:
                self._problem(
                    ProblemKind.HEAD,
                    "the chain's head pointer is missing: records at the end may have been removed",
                    None,
                    None,
                )
            return
        if not head_ok:
            self._problem(ProblemKind.HEAD, "the chain's head pointer does not match its MAC: edited", head.seq, None)
            return
        last = self.report.last_seq
        if head.seq > last:
            span = f"seq {last + 1}" if head.seq == last + 1 else f"seq {last + 1}..{head.seq}"
            self._problem(
                ProblemKind.TRUNCATED,
                f"{span} missing at the end (the head names seq {head.seq}): truncated",
                last + 1,
                None,
            )
        elif self.head_hash_seen is not None and not hmac.compare_digest(self.head_hash_seen, head.hash):
            self._problem(
                ProblemKind.EDITED,
                f"seq {head.seq} is not the record the head names: replaced",
                head.seq,
                None,
            )
