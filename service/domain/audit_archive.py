"""The audit archive's format: records moved out of the hot stream, kept verbatim, compressed by month.

After ``audit.queryable_days`` records leave the stream that the staff pages
search and go into archive *segments*: one zlib-compressed JSON-lines blob per
chain, per UTC month and per archiving run, named ``<YYYY-MM>/<first entry
id>`` so names sort in chain order within a month and tell an operator what
is inside.  Records are kept exactly as stored (every field string, the
stream entry id), so the hash chain verifies across the archive just as it
did in the stream.

A segment is read with a cap on its decompressed size: a blob planted in
Redis cannot make ``audit verify`` exhaust memory.
"""

from __future__ import annotations

import datetime as dt
import json
import zlib
from collections.abc import Iterable, Sequence
from typing import Final

from service.domain.audit_chain import ChainEntry

MAX_SEGMENT_RECORDS: Final = 5000
MAX_SEGMENT_BYTES: Final = 64 * 1024 * 1024  # decompressed; far above 5000 bounded records
DAY_SECONDS: Final = 86400


class SegmentUnreadable(ValueError):
    """An archive segment that does not decompress or parse: damaged or tampered."""


def month_of(at: float) -> str:
    return dt.datetime.fromtimestamp(at, tz=dt.UTC).strftime("%Y-%m")


def segment_name(month: str, first_entry_id: str) -> str:
    return f"{month}/{first_entry_id}"


def entry_order(entry_id: str) -> tuple[int, int]:
    """Stream ids (``<ms>-<n>``) in numeric order; anything else sorts first, where it is noticed."""
    ms, _, n = entry_id.partition("-")
    return (int(ms), int(n)) if ms.isdigit() and n.isdigit() else (-1, -1)


def segment_order(name: str) -> tuple[int, int]:
    return entry_order(name.partition("/")[2])


def segment_month(name: str) -> str:
    return name.partition("/")[0]


def encode_segment(entries: Iterable[ChainEntry]) -> bytes:
    lines = (
        json.dumps({"entry": e.entry_id, "fields": dict(e.fields)}, sort_keys=True, separators=(",", ":"))
        for e in entries
    )
    return zlib.compress("\n".join(lines).encode("utf-8"), 9)


def decode_segment(blob: bytes) -> list[ChainEntry]:
    inflater = zlib.decompressobj()
    try:
        data = inflater.decompress(blob, MAX_SEGMENT_BYTES)
    except zlib.error:
        raise SegmentUnreadable("does not decompress") from None
    if inflater.unconsumed_tail:
        raise SegmentUnreadable("larger than any segment the vault writes")
    entries = []
    for line in data.decode("utf-8", "replace").splitlines():
        try:
            item = json.loads(line)
            fields = item["fields"]
            entry_id = item["entry"]
        except (ValueError, KeyError, TypeError):
            raise SegmentUnreadable("a line is not a record") from None
        if not isinstance(fields, dict) or not isinstance(entry_id, str):
            raise SegmentUnreadable("a line is not a record")
        entries.append(ChainEntry(entry_id, {str(k): str(v) for k, v in fields.items()}))
    return entries


def split_by_month(entries: Sequence[ChainEntry]) -> list[tuple[str, list[ChainEntry]]]:
    """Consecutive runs of one UTC month each (a record without a readable time stays with its neighbours)."""
    runs: list[tuple[str, list[ChainEntry]]] = []
    for entry in entries:
        at = entry.at
        month = month_of(at) if at is not None else (runs[-1][0] if runs else "0000-00")
        if runs and runs[-1][0] == month:
            runs[-1][1].append(entry)
        else:
            runs.append((month, [entry]))
    return runs
