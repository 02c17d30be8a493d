"""The audit hash chain and its walk: each kind of tampering is named precisely, an intact chain passes."""

from __future__ import annotations

import dataclasses

import pytest

from service.adapters import crypto
from service.domain.audit import AuditRecord
from service.domain.audit_chain import GENESIS, RELINKED, Anchor, ChainEntry, Head, canonical, link, record_message
from service.domain.audit_verify import ChainReport, ChainWalker, ProblemKind
from service.domain.cards import luhn_valid
from tests.support.cards import VISA

KEY = crypto.random_key()
OTHER_KEY = crypto.random_key()
CHAIN = "agy_test"


def mac(message: bytes, *, person: bytes) -> str:
    """The vault's real MAC construction (keyed BLAKE2b), under a key of the test's own."""
    return crypto.keyed_hash(KEY, message, person=person)


def forger_mac(message: bytes, *, person: bytes) -> str:
    """What someone without the vault's key can compute: the same construction under another key."""
    return crypto.keyed_hash(OTHER_KEY, message, person=person)


def record(n: int) -> dict[str, str]:
    return AuditRecord(1_700_000_000.0 + n, CHAIN, "ann", "stf_1", "agent", "order.create", "success", "10.0.0.1",
                       f"ch_{n}", f"detail {n}").to_fields()  # fmt: skip


def build(count: int, *, start: int = 1, prev: str = GENESIS) -> list[ChainEntry]:
    entries = []
    for seq in range(start, start + count):
        fields = link(CHAIN, record(seq), seq, prev, mac)
        entries.append(ChainEntry(f"{1000 + seq}-0", fields))
        prev = fields["hash"]
    return entries


def head_of(entries: list[ChainEntry]) -> Head:
    last = entries[-1]
    return Head.signed(CHAIN, int(last.fields["seq"]), last.fields["hash"], mac)


def walk(
    entries: list[ChainEntry], head: Head | None, anchor: Anchor | None = None, *, partial: bool = False
) -> ChainReport:
    walker = ChainWalker(CHAIN, mac, anchor, head=head, partial=partial)
    for entry in entries:
        walker.feed(entry)
    return walker.finish()


def kinds(report: ChainReport) -> list[ProblemKind]:
    return [p.kind for p in report.problems]


def moved(entry: ChainEntry, new_id: str, **changes: str) -> ChainEntry:
    return ChainEntry(new_id, {**entry.fields, **changes})


class TestIntactChains:
    def test_an_intact_chain_verifies_with_its_counts(self) -> None:
        """Ten linked records and their head: OK, seq 1..10, all queryable."""
        entries = build(10)
        report = walk(entries, head_of(entries))
        assert report.ok, report.problems
        assert (report.records, report.first_seq, report.last_seq, report.queryable) == (10, 1, 10, 10)

    def test_records_appended_during_the_walk_are_not_a_problem(self) -> None:
        """The head is read before the walk; genuine records after it (written meanwhile) are fine."""
        entries = build(10)
        report = walk(entries, head_of(entries[:7]))
        assert report.ok, report.problems

    def test_a_chain_after_a_retention_cut_verifies_from_its_anchor(self) -> None:
        """Records 1..4 dropped: a signed anchor naming seq 5 and the hash it links to makes 5.. verify."""
        full = build(9)
        kept = full[4:]
        anchor = Anchor(start_seq=5, start_prev=full[3].fields["hash"], dropped=4, dropped_before=1.0).signed(
            CHAIN, mac
        )
        report = walk(kept, head_of(kept), anchor)
        assert report.ok, report.problems
        assert (report.first_seq, report.dropped, report.start_seq) == (5, 4, 5)

    def test_the_hash_covers_the_chain_name(self) -> None:
        """A genuine record copied into another agency's chain does not verify there."""
        entries = build(3)
        walker = ChainWalker("agy_other", mac, head=None, partial=True)
        walker.feed(entries[0])
        assert kinds(walker.finish()) == [ProblemKind.INSERTED]

    def test_canonical_encoding_is_one_per_record(self) -> None:
        """Key order does not change the bytes; moving a separator between fields does."""
        assert canonical({"a": "1", "b": "2"}) == canonical({"b": "2", "a": "1"})
        assert record_message(CHAIN, {"a": "x,y", "b": ""}) != record_message(CHAIN, {"a": "x", "b": "y"})
        assert record_message(CHAIN, {"a": '","b":"'}) != record_message(CHAIN, {"a": "", "b": ""})

    def test_card_numbers_never_reach_a_stored_record(self) -> None:
        """Free text is redacted, and so is the object of a refusal (an id from a URL that names nothing)."""
        fields = AuditRecord(1.0, CHAIN, VISA, "-", "-", "token.delete", "refused", "-", VISA, VISA).to_fields()
        assert VISA not in canonical(fields).decode()

    def test_times_addresses_and_acted_on_ids_are_kept_verbatim(self) -> None:
        """Digit groups that the card redactor would take for card numbers: a time, an IPv4 address, and a
        charge id whose digits happen to pass Luhn (an object that was acted on is the vault's own id)."""
        millis = next(m for m in range(1_777_967_698_000, 1_777_967_699_000) if luhn_valid(str(m)))
        at, source, charge = millis / 1000, "192.168.109.200", f"ch_{millis}"  # found at run time, never committed
        fields = AuditRecord(at, CHAIN, "ann", "-", "-", "charge.refund", "success", source, charge, "").to_fields()
        assert (fields["at"], fields["source"], fields["object"]) == (str(at), source, charge)


class TestTampering:
    def test_an_edit_in_place_is_edited(self) -> None:
        """Record 4's detail changed where it stands (the chain rewritten around it): edited, nothing else."""
        entries = build(8)
        entries[3] = moved(entries[3], entries[3].entry_id, detail="nothing to see")
        report = walk(entries, head_of(entries))
        assert kinds(report) == [ProblemKind.EDITED]
        assert report.problems[0].seq == 4
        assert "edited" in report.problems[0].message

    def test_a_removed_record_is_named_with_its_neighbours(self) -> None:
        """XDEL of record 4: seq 4 missing between the entries of 3 and 5."""
        entries = build(8)
        del entries[3]
        report = walk(entries, head_of(entries))
        assert kinds(report) == [ProblemKind.REMOVED]
        assert "seq 4 is missing (between entries 1003-0 and 1005-0)" in report.problems[0].message

    def test_deleted_and_added_again_changed_is_edited(self) -> None:
        """The way to edit a stream entry: delete it and add a changed copy (at the end). Edited, not removed."""
        entries = build(8)
        victim = entries.pop(3)
        entries.append(moved(victim, "2000-0", outcome="success", detail="approved"))
        report = walk(entries, head_of(entries[:-1]))
        assert kinds(report) == [ProblemKind.EDITED]
        assert "removed and added again" in report.problems[0].message

    def test_a_genuine_record_moved_is_reordered(self) -> None:
        """Record 4 deleted and re-added unchanged at the end: reordered, and no gap is left over."""
        entries = build(8)
        victim = entries.pop(3)
        entries.append(moved(victim, "2000-0"))
        report = walk(entries, head_of(entries[:-1]))
        assert kinds(report) == [ProblemKind.REORDERED]
        assert report.problems[0].seq == 4

    def test_a_forged_insertion_is_inserted(self) -> None:
        """A record computed without the vault's key, put between 3 and 4 claiming seq 4: inserted."""
        entries = build(8)
        forged = link(CHAIN, record(99), 4, entries[2].fields["hash"], forger_mac)
        entries.insert(3, ChainEntry("1003-1", forged))
        report = walk(entries, head_of(entries))
        assert kinds(report) == [ProblemKind.INSERTED]
        assert report.problems[0].entry == "1003-1"

    def test_a_forged_record_at_the_end_is_inserted(self) -> None:
        """A forged seq 9 after the head's seq 8: inserted."""
        entries = build(8)
        forged = link(CHAIN, record(9), 9, entries[-1].fields["hash"], forger_mac)
        report = walk([*entries, ChainEntry("3000-0", forged)], head_of(entries))
        assert kinds(report) == [ProblemKind.INSERTED]

    def test_a_record_without_chain_fields_is_inserted(self) -> None:
        """A plain XADD with no seq or hash at all: inserted."""
        entries = build(4)
        entries.insert(2, ChainEntry("1002-5", record(50)))
        assert kinds(walk(entries, head_of(entries))) == [ProblemKind.INSERTED]

    def test_a_copy_of_a_genuine_record_is_inserted(self) -> None:
        """Record 2 added a second time: its hash is genuine but it appears twice."""
        entries = build(6)
        report = walk([*entries, moved(entries[1], "2000-0")], head_of(entries))
        assert kinds(report) == [ProblemKind.INSERTED]
        assert "second time" in report.problems[0].message

    def test_a_truncated_end_shows_against_the_head(self) -> None:
        """The last two records deleted: seq 7..8 missing at the end (the head names 8)."""
        entries = build(8)
        report = walk(entries[:6], head_of(entries))
        assert kinds(report) == [ProblemKind.TRUNCATED]
        assert "seq 7..8 missing at the end" in report.problems[0].message

    def test_an_edited_last_record_is_edited(self) -> None:
        """The newest record changed: the head still names its hash, so it is an edit, not an insertion."""
        entries = build(5)
        head = head_of(entries)
        entries[-1] = moved(entries[-1], entries[-1].entry_id, detail="changed")
        assert kinds(walk(entries, head)) == [ProblemKind.EDITED]

    def test_a_head_moved_back_without_the_key_is_refused(self) -> None:
        """Truncating and rewriting the head to the new last record needs the key: the head's MAC fails."""
        entries = build(8)
        fake = Head(6, entries[5].fields["hash"], "0" * 64)
        assert kinds(walk(entries[:6], fake)) == [ProblemKind.HEAD]

    def test_a_missing_head_is_reported(self) -> None:
        entries = build(3)
        assert kinds(walk(entries, None)) == [ProblemKind.HEAD]

    def test_a_record_written_after_the_head_vanished_says_so_for_good(self) -> None:
        """The appender's relinked marker is covered by the MAC: the walk reports it every time."""
        entries = build(3)
        fields = link(CHAIN, record(4), 4, entries[-1].fields["hash"], mac, relinked="head-missing")
        assert fields[RELINKED] == "head-missing"
        entries.append(ChainEntry("1004-0", fields))
        assert kinds(walk(entries, head_of(entries))) == [ProblemKind.HEAD]

    def test_an_edited_anchor_is_reported(self) -> None:
        """Moving the retention cut forward to hide removed records breaks the anchor's MAC."""
        full = build(9)
        anchor = Anchor(start_seq=5, start_prev=full[3].fields["hash"]).signed(CHAIN, mac)
        hidden = dataclasses.replace(anchor, start_seq=7, start_prev=full[5].fields["hash"])
        report = walk(full[6:], head_of(full), hidden)
        assert ProblemKind.ANCHOR in kinds(report)

    def test_a_deleted_anchor_shows_the_dropped_records_as_removed(self) -> None:
        full = build(9)
        report = walk(full[4:], head_of(full))
        assert kinds(report) == [ProblemKind.REMOVED]
        assert "seq 1..4 are missing" in report.problems[0].message

    def test_a_removed_archive_segment_shows_against_the_anchor(self) -> None:
        """The anchor says records up to seq 4 were archived; the archive holds none."""
        entries = build(8)
        anchor = Anchor(archived_seq=4, archived_hash=entries[3].fields["hash"]).signed(CHAIN, mac)
        walker = ChainWalker(CHAIN, mac, anchor, head=head_of(entries))
        for entry in entries[4:]:
            walker.feed(entry)
        found = kinds(walker.finish())
        assert found.count(ProblemKind.REMOVED) == 2  # the gap 1..4 and the archive mark


class TestPartialWalks:
    @pytest.mark.parametrize("tamper", ["none", "edit"])
    def test_a_slice_checks_its_own_links(self, tamper: str) -> None:
        """An exported slice (seq 3..6) verifies on its own; an edit inside it is found."""
        entries = build(8)[2:6]
        if tamper == "edit":
            entries[1] = moved(entries[1], entries[1].entry_id, actor="someone-else")
        start = Anchor(start_seq=3, start_prev=entries[0].fields["prev"])
        report = walk(entries, None, start, partial=True)
        assert kinds(report) == ([] if tamper == "none" else [ProblemKind.EDITED])
