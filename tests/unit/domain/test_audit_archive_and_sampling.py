"""The audit archive's segment format, and the sampler that keeps a flood of bad keys from filling the log."""

from __future__ import annotations

import datetime as dt
import zlib

import pytest

from service.domain.audit_archive import (
    SegmentUnreadable,
    decode_segment,
    encode_segment,
    segment_name,
    segment_order,
    split_by_month,
)
from service.domain.audit_chain import ChainEntry
from service.domain.audit_sampling import MANY_SOURCES, FloodKey, FloodSampler


def at(year: int, month: int, day: int) -> str:
    return str(dt.datetime(year, month, day, 12, tzinfo=dt.UTC).timestamp())


class TestSegments:
    def test_records_come_back_exactly_as_stored(self) -> None:
        """Every field string and the entry id survive, unicode and separators included."""
        entries = [
            ChainEntry("1700000000000-0", {"at": "1.5", "detail": 'a "quoted", \n line', "hash": "ab" * 32}),
            ChainEntry("1700000000000-1", {"at": "2.0", "actor": "zoë"}),
        ]
        assert decode_segment(encode_segment(entries)) == entries

    def test_segments_sort_in_chain_order_by_their_first_entry(self) -> None:
        names = [segment_name("2026-02", "1770000000000-0"), segment_name("2026-01", "999-3"), "2026-01/999-10"]
        assert sorted(names, key=segment_order) == ["2026-01/999-3", "2026-01/999-10", "2026-02/1770000000000-0"]

    def test_a_batch_splits_into_one_run_per_month(self) -> None:
        """January, January, February, a record with no readable time (stays with February), March."""
        entries = [
            ChainEntry("1-0", {"at": at(2026, 1, 30)}),
            ChainEntry("2-0", {"at": at(2026, 1, 31)}),
            ChainEntry("3-0", {"at": at(2026, 2, 1)}),
            ChainEntry("4-0", {"at": "garbled"}),
            ChainEntry("5-0", {"at": at(2026, 3, 1)}),
        ]
        runs = split_by_month(entries)
        assert [(month, [e.entry_id for e in run]) for month, run in runs] == [
            ("2026-01", ["1-0", "2-0"]),
            ("2026-02", ["3-0", "4-0"]),
            ("2026-03", ["5-0"]),
        ]

    @pytest.mark.parametrize(
        "blob",
        [b"not zlib at all", zlib.compress(b"{not json}"), zlib.compress(b'{"entry": 1, "fields": []}')],
    )
    def test_a_damaged_segment_is_unreadable_not_a_crash(self, blob: bytes) -> None:
        with pytest.raises(SegmentUnreadable):
            decode_segment(blob)

    def test_a_planted_decompression_bomb_is_refused(self) -> None:
        """A blob that inflates past 64 MiB is refused without inflating it all."""
        bomb = zlib.compress(b"\n" * (80 * 1024 * 1024), 9)
        assert len(bomb) < 200_000
        with pytest.raises(SegmentUnreadable, match="larger"):
            decode_segment(bomb)


class TestFloodSampler:
    def test_thresholds_then_an_exact_summary_after_the_minute(self) -> None:
        """1,000 bad keys from one address in a minute: records at 1, 10, 100, 1000; the next minute
        opens with nothing owed (1000 was recorded exactly); 37 more give 1, 10 and a summary of 37."""
        sampler = FloodSampler()
        key = FloodKey("", "203.0.113.9", "api.auth", "invalid_api_key")
        counts = [s.count for i in range(1000) for s in sampler.note(key, 60.0 + i * 0.01)]
        assert counts == [1, 10, 100, 1000]
        later = [s for i in range(37) for s in sampler.note(key, 120.0 + i)]
        assert [s.count for s in later] == [1, 10]
        rolled = sampler.note(key, 200.0)
        assert [(s.count, s.summary, s.window_start) for s in rolled] == [(37, True, 120.0), (1, False, 180.0)]

    def test_many_addresses_cannot_flood_the_log(self) -> None:
        """10,000 addresses in one minute: at most max_sources records of their own, the rest one bucket."""
        sampler = FloodSampler(max_sources=100)
        samples = [
            s for i in range(10_000) for s in sampler.note(FloodKey("", f"198.51.100.{i}", "api.auth", "x"), 0.0)
        ]
        own = [s for s in samples if s.key.source != MANY_SOURCES]
        bucket = [s.count for s in samples if s.key.source == MANY_SOURCES]
        assert len(own) == 100
        assert bucket == [1, 10, 100, 1000]
        assert "many addresses" in samples[-1].describe()

    def test_kinds_are_counted_apart(self) -> None:
        """Another code, chain or action from the same address starts its own count."""
        sampler = FloodSampler()
        a = FloodKey("", "192.0.2.1", "api.auth", "invalid_api_key")
        b = FloodKey("", "192.0.2.1", "api.auth", "missing_api_key")
        c = FloodKey("agy_1", "192.0.2.1", "api.authorization", "origin_not_allowed")
        assert [len(sampler.note(k, 0.0)) for k in (a, b, c, a)] == [1, 1, 1, 0]
