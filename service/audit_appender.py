"""Linking records into their chain and storing them, in order, from any number of processes.

Every record is linked here: its hash (a keyed MAC in this process, never in
Redis) covers the previous record's hash, so the writer must know the head
before it writes.  The append script (``service.adapters.audit_log``) stores
a linked batch only if the head has not moved; otherwise the writer gets the
current head back and links again.

Within a process, records of one chain are *group-committed*: callers queue
their record and await it, one flusher task per chain links everything
queued (up to ``MAX_BATCH``) after the head and stores it in one script call,
then takes the next batch.  So a busy process pays one round trip per batch,
not per record, and a caller whose request is cancelled still gets its record
written.  Across processes, collisions are settled by the script's
turn-taking: a writer refused while another has the turn waits a moment
(jittered) before linking again, one that now has the turn goes at once.
"""

from __future__ import annotations

import asyncio
import random
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

import structlog

from service.adapters.audit_log import AuditLog
from service.domain.audit_chain import GENESIS, Head, link
from service.errors import StoreUnavailable

log = structlog.get_logger("cardvault.audit")

MAX_BATCH = 100
MAX_ATTEMPTS = 200
MAX_BACKOFF = 0.005  # seconds: a turn lasts about one round trip, so a longer wait only adds latency
HEAD_MISSING = "head-missing"
HEAD_EDITED = "head-edited"


@dataclass(frozen=True)
class Stored:
    chain: str
    entry_id: str
    seq: int
    hash: str


@dataclass(frozen=True)
class _Queued:
    fields: Mapping[str, str]
    done: asyncio.Future[Stored]


def _fail(waiting: Sequence[_Queued], exc: BaseException) -> None:
    for q in waiting:
        if not q.done.done():
            q.done.set_exception(exc)


class ChainAppender:
    def __init__(self, log: AuditLog, on_chain_start: Callable[[str], Awaitable[None]]) -> None:
        self.log = log
        self.on_chain_start = on_chain_start
        self.writer = secrets.token_hex(8)  # this process's name in the append script's turn-taking
        self._heads: dict[str, Head] = {}
        self._queues: dict[str, list[_Queued]] = {}
        self._flushers: dict[str, asyncio.Task[None]] = {}

    async def append(self, chain: str, fields: Mapping[str, str]) -> Stored:
        """Queue ``fields`` for ``chain`` and wait until it is stored (linked after everything before it)."""
        queued = _Queued(fields, asyncio.get_running_loop().create_future())
        self._queues.setdefault(chain, []).append(queued)
        if chain not in self._flushers:
            self._flushers[chain] = asyncio.create_task(self._flush(chain))
        return await queued.done

    async def _flush(self, chain: str) -> None:
        queue = self._queues[chain]
        try:
            while queue:
                batch = queue[:MAX_BATCH]
                del queue[: len(batch)]
                try:
                    stored = await self._store(chain, [q.fields for q in batch])
                except asyncio.CancelledError:
                    _fail(batch, StoreUnavailable("the audit log is shutting down"))
                    raise
                except Exception as exc:  # every waiting caller learns why; the next batch tries afresh
                    _fail(batch, exc)
                    continue
                if stored[0].seq == 1:  # noted before anyone hears the chain exists
                    try:
                        await self.on_chain_start(chain)
                    except StoreUnavailable:
                        log.error("audit record lost", action="audit.chain_start", object=chain)
                for q, result in zip(batch, stored, strict=True):
                    if not q.done.done():
                        q.done.set_result(result)
        finally:
            del self._flushers[chain]
            _fail(queue, StoreUnavailable("the audit log is shutting down"))  # left only when cancelled
            queue.clear()

    async def _store(self, chain: str, batch: Sequence[Mapping[str, str]]) -> list[Stored]:
        head = self._heads.pop(chain, None) or await self.log.head(chain)
        for attempt in range(MAX_ATTEMPTS):
            seq, prev, links_to, relinked = await self._next_link(chain, head)
            linked = []
            for index, fields in enumerate(batch):
                entry = link(chain, fields, seq + index, prev, self.log.mac, relinked=relinked if index == 0 else "")
                linked.append(entry)
                prev = entry["hash"]
            new_head = Head.signed(chain, seq + len(batch) - 1, prev, self.log.mac)
            appended = await self.log.append(chain, linked, links_to, new_head, self.writer)
            if appended.stored:
                self._heads[chain] = new_head
                return [
                    Stored(chain, entry_id, seq + index, entry["hash"])
                    for index, (entry_id, entry) in enumerate(zip(appended.entry_ids, linked, strict=True))
                ]
            head = appended.head
            if not appended.my_turn:  # another writer goes next: relinking before it has is wasted work
                await asyncio.sleep(random.uniform(0, min(MAX_BACKOFF, 0.001 * (attempt + 1))))  # noqa: S311
        raise StoreUnavailable(f"the audit chain {chain} is too busy to append to")

    async def _next_link(self, chain: str, head: Head | None) -> tuple[int, str, str, str]:
        """(seq, prev, the head hash the script must find, relinked marker) for the next record."""
        if head is not None and head.seq >= 0 and head.genuine(chain, self.log.mac):
            return head.seq + 1, head.hash, head.hash, ""
        # No head, or one that is not the vault's: continue after the newest stored record, and say
        # so in the record itself (its MAC covers the marker), so `audit verify` reports it for good.
        links_to = head.hash if head is not None else ""
        marker = HEAD_EDITED if head is not None else HEAD_MISSING
        last = await self.log.last_entry(chain)
        if last is not None and last.seq is not None:
            return last.seq + 1, last.fields.get("hash", ""), links_to, marker
        anchor = await self.log.anchor(chain)
        if anchor is not None and anchor.archived_seq >= anchor.start_seq:
            return anchor.archived_seq + 1, anchor.archived_hash, links_to, marker
        if anchor is not None and anchor.start_seq > 1:
            return anchor.start_seq, anchor.start_prev, links_to, marker
        return 1, GENESIS, links_to, marker if head is not None else ""
