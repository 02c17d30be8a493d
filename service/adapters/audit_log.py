"""The audit log in Redis: one hash-chained stream per chain (each agency, and the system), its archive.

    cv:audit:{<chain>}:log       stream  the queryable records, oldest first: record fields + seq, prev, hash
    cv:audit:{<chain>}:head      hash    seq, hash, mac (and the stream id) of the newest record
    cv:audit:{<chain>}:anchor    hash    retention cut and archive mark (``audit_chain.Anchor``), MAC'd
    cv:audit:{<chain>}:archive   hash    "<YYYY-MM>/<first entry id>" -> zlib JSON lines of archived records
    cv:audit:{<chain>}:status    hash    the last `audit verify` result, MAC'd (shown on /staff/audit)

``<chain>`` is the agency id, or ``system`` for events of no agency.  These
keys are outside the ``cv:{<agency>}:*`` family on purpose: shredding an
agency destroys its card data, never its audit trail.

**Appending** is one Lua script: it adds a batch of linked entries and moves
the head only if the head still holds the hash the batch was linked to, so appends from
any number of processes stay one ordered chain; a process that lost the race
gets the current head back and links again.  A loser also takes the *turn*
(for at most 100 ms): the next append must be its own, so a process with a
steady stream of records, whose next append always reaches Redis first,
cannot starve the others.  Nothing in the service edits or
deletes an entry except the archiver, which moves old entries into the
archive in one MULTI/EXEC together with the new anchor.

**The MAC key** is the system pepper (``Keyring.mac`` with a purpose of its
own per document): a random 256-bit key stored only wrapped by the master key
(``cv:system``).  ``keys rotate`` never touches it, and ``keys rewrap``
re-wraps it under a new master key without changing it, so every chain stays
verifiable across both; no per-agency key is used, because shredding an
agency must leave its audit trail verifiable for the whole retention period.
Whoever holds the master key could forge records; the chain is evidence
against everyone else with access to Redis, its files or its backups.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import cast

import redis.asyncio as redis
import redis.exceptions as redis_exc

from service.adapters.keyring import Keyring
from service.adapters.redis_base import redis_errors, text_of
from service.domain.audit import AuditRecord, chain_of
from service.domain.audit_archive import decode_segment, segment_order
from service.domain.audit_chain import STATUS_PERSON, Anchor, ChainEntry, Head, Mac, canonical

READ_LIMIT = 5000
HOT_BATCH = 1000

_APPEND_LUA = """
-- KEYS: stream, head.  ARGV: the head hash the batch links to ('' = no head yet), the new head's
-- seq, hash and mac, writer id, then per entry: its number of fields, then its field/value pairs.
local head = redis.call('HMGET', KEYS[2], 'seq', 'hash', 'mac', 'turn', 'turn_until')
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local turn_free = (not head[4]) or head[4] == ARGV[5] or (tonumber(head[5]) or 0) < now
local current = head[2] or ''
if current ~= ARGV[1] or not turn_free then
  if turn_free then
    -- the next append is this writer's: a busy writer cannot win every race
    redis.call('HSET', KEYS[2], 'turn', ARGV[5], 'turn_until', now + TURN_MS)
  end
  return {0, head[1] or '', current, head[3] or '', turn_free and 1 or 0}
end
local ids = {1}
local i = 6
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  ids[#ids + 1] = redis.call('XADD', KEYS[1], '*', unpack(ARGV, i + 1, i + 2 * n))
  i = i + 2 * n + 1
end
redis.call('HSET', KEYS[2], 'seq', ARGV[2], 'hash', ARGV[3], 'mac', ARGV[4], 'id', ids[#ids])
redis.call('HDEL', KEYS[2], 'turn', 'turn_until')
return ids
""".replace("TURN_MS", "100")


def _key(chain: str, part: str) -> str:
    return f"cv:audit:{{{chain}}}:{part}"


def stream_key(chain: str) -> str:
    return _key(chain, "log")


def head_key(chain: str) -> str:
    return _key(chain, "head")


def anchor_key(chain: str) -> str:
    return _key(chain, "anchor")


def archive_key(chain: str) -> str:
    return _key(chain, "archive")


def status_key(chain: str) -> str:
    return _key(chain, "status")


def audit_key(agency_id: str) -> str:
    """The stream an agency's (or, for "", the system's) queryable records are in."""
    return stream_key(chain_of(agency_id))


@dataclass(frozen=True)
class Appended:
    """The outcome of one append: stored (with the entry ids), or the head that moved first."""

    stored: bool
    entry_ids: tuple[str, ...] = ()
    head: Head | None = None
    my_turn: bool = False  # refused, but the next append is this writer's


def _entries(raw: object) -> list[ChainEntry]:
    return [
        ChainEntry(text_of(entry_id), {text_of(k): text_of(v) for k, v in fields.items()})
        for entry_id, fields in cast(list[tuple[bytes, dict[bytes, bytes]]], raw)
    ]


class AuditLog:
    def __init__(self, client: redis.Redis, keyring: Keyring) -> None:
        self.redis = client
        self.mac: Mac = keyring.mac
        self._append = client.register_script(_APPEND_LUA)

    # -- writing -------------------------------------------------------------------
    async def append(
        self, chain: str, batch: Sequence[Mapping[str, str]], links_to: str, head: Head, writer: str
    ) -> Appended:
        """Add the linked entries if the head still holds ``links_to`` ("" when the chain has no head) and
        no other ``writer`` has the turn; ``head`` is the new head (the batch's last record)."""
        args: list[str | int] = [links_to, head.seq, head.hash, head.mac, writer]
        for fields in batch:
            args.append(len(fields))
            for name, value in fields.items():
                args += [name, value]
        with redis_errors():
            result = cast(list[bytes | int], await self._append(keys=[stream_key(chain), head_key(chain)], args=args))
        if result[0] == 1:
            return Appended(True, tuple(text_of(cast(bytes, v)) for v in result[1:]))
        seq, hash_, mac = (text_of(cast(bytes, v)) for v in result[1:4])
        head_now = Head(int(seq), hash_, mac) if seq.isdigit() else None
        return Appended(False, head=head_now, my_turn=result[4] == 1)

    # -- reading the chain -----------------------------------------------------------
    async def head(self, chain: str) -> Head | None:
        with redis_errors():
            seq, hash_, mac = await self.redis.hmget(head_key(chain), ["seq", "hash", "mac"])
        if seq is None:
            return None
        seq_text = text_of(seq)
        return Head(int(seq_text) if seq_text.isdigit() else -1, text_of(hash_ or b""), text_of(mac or b""))

    async def last_entry(self, chain: str) -> ChainEntry | None:
        with redis_errors():
            raw = await self.redis.xrevrange(stream_key(chain), count=1)
        found = _entries(raw)
        return found[0] if found else None

    async def anchor(self, chain: str) -> Anchor | None:
        with redis_errors():
            raw = await self.redis.hgetall(anchor_key(chain))
        if not raw:
            return None
        return Anchor.from_fields({text_of(k): text_of(v) for k, v in raw.items()})

    async def hot_batches(self, chain: str, batch: int = HOT_BATCH) -> AsyncIterator[list[ChainEntry]]:
        """The stream, oldest first, ``batch`` entries at a time."""
        start = "-"
        while True:
            with redis_errors():
                raw = await self.redis.xrange(stream_key(chain), min=start, count=batch)
            entries = _entries(raw)
            if entries:
                yield entries
            if len(entries) < batch:
                return
            start = "(" + entries[-1].entry_id

    async def oldest(self, chain: str, count: int) -> list[ChainEntry]:
        with redis_errors():
            return _entries(await self.redis.xrange(stream_key(chain), count=count))

    async def segment_names(self, chain: str) -> list[str]:
        """Archive segments in chain order."""
        with redis_errors():
            names = await self.redis.hkeys(archive_key(chain))
        return sorted((text_of(n) for n in names), key=segment_order)

    async def segment(self, chain: str, name: str) -> list[ChainEntry]:
        """One archive segment's records (SegmentUnreadable when damaged, [] when gone)."""
        with redis_errors():
            blob = await self.redis.hget(archive_key(chain), name)
        return decode_segment(cast(bytes, blob)) if blob is not None else []

    async def chains(self) -> set[str]:
        """Every chain with any audit key (so a chain whose head was deleted is still found)."""
        found: set[str] = set()
        with redis_errors():
            async for key in self.redis.scan_iter(match="cv:audit:{*}:*", count=1000):
                name = text_of(key)
                found.add(name[len("cv:audit:{") : name.index("}:")])
        return found

    async def newest(self, agency_id: str, limit: int = READ_LIMIT) -> list[AuditRecord]:
        """Up to ``limit`` queryable records of an agency ("" for the system chain), newest first."""
        with redis_errors():
            raw = await self.redis.xrevrange(audit_key(agency_id), count=limit)
        return [AuditRecord.from_fields(e.entry_id, dict(e.fields)) for e in _entries(raw)]

    # -- archiving -------------------------------------------------------------------
    async def move_to_archive(
        self,
        chain: str,
        segments: Sequence[tuple[str, bytes]],
        entry_ids: Sequence[str],
        anchor_was: Anchor | None,
        anchor: Anchor,
    ) -> bool:
        """Write the segments and the new anchor and remove the entries, all or nothing.

        False (nothing written) when the anchor changed since it was read: another archiver ran.
        """
        return await self._replace(chain, anchor_was, anchor, put=segments, delete_entries=entry_ids)

    async def replace_segments(
        self,
        chain: str,
        delete: Sequence[str],
        put: Sequence[tuple[str, bytes]],
        anchor_was: Anchor | None,
        anchor: Anchor,
    ) -> bool:
        """Retention: drop and rewrite archive segments together with the new anchor, all or nothing."""
        return await self._replace(chain, anchor_was, anchor, put=put, delete_segments=delete)

    async def _replace(
        self,
        chain: str,
        anchor_was: Anchor | None,
        anchor: Anchor,
        *,
        put: Sequence[tuple[str, bytes]] = (),
        delete_segments: Sequence[str] = (),
        delete_entries: Sequence[str] = (),
    ) -> bool:
        key = anchor_key(chain)
        with redis_errors():
            async with self.redis.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(key)
                    stored = await pipe.hget(key, "mac")
                    if text_of(stored or b"") != (anchor_was.mac if anchor_was else ""):
                        return False
                    pipe.multi()  # type: ignore[no-untyped-call]
                    if delete_segments:
                        pipe.hdel(archive_key(chain), *delete_segments)
                    if put:
                        pipe.hset(archive_key(chain), mapping=dict(put))
                    pipe.hset(key, mapping=dict(anchor.to_fields()))  # type: ignore[arg-type]
                    if delete_entries:
                        pipe.xdel(stream_key(chain), *delete_entries)
                    await pipe.execute()
                except redis_exc.WatchError:
                    return False
        return True

    # -- the last verification, for the staff page ------------------------------------
    def _status_mac(self, chain: str, status: Mapping[str, str]) -> str:
        body = {k: v for k, v in status.items() if k != "mac"}
        return self.mac(canonical({"chain": chain, "status": body}), person=STATUS_PERSON)

    async def save_status(self, chain: str, at: float, ok: bool, records: int, problems: int) -> None:
        status = {"at": f"{at:.3f}", "ok": "1" if ok else "0", "records": str(records), "problems": str(problems)}
        status["mac"] = self._status_mac(chain, status)
        with redis_errors():
            await self.redis.hset(status_key(chain), mapping=dict(status))  # type: ignore[arg-type]

    async def status(self, chain: str) -> dict[str, str] | None:
        """The last saved verification, or None when there is none or it does not match its MAC."""
        with redis_errors():
            raw = await self.redis.hgetall(status_key(chain))
        status = {text_of(k): text_of(v) for k, v in raw.items()}
        if not status or not hmac.compare_digest(status.get("mac", ""), self._status_mac(chain, status)):
            return None
        return status
