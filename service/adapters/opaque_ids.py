"""Opaque token ids kept sorted by data shard, so a token gets one in its card's shard without a search.

A token lives in its card's shard (``card_shard``), and an id's shard is
``shard_of(id)``, a CRC of the id: drawing ids until one lands in the right
shard threw fifteen of every sixteen away (11 µs of a token request's
~300 µs).  :class:`ShardedOpaqueIds` draws a few hundred ids at once (one read
of the system's random source, one base64 encode, the CRCs in a list), files
each under its shard and hands them out from there: the ids a shard gives are
still uniform over that shard's ids and each is given once.  A shard keeps at
most ``per_shard`` ids waiting, so when every token goes to one shard (one
card, as in a benchmark) the rest of a draw is dropped, not hoarded.

The ids waiting in memory are not secrets (an id is useless without the
agency's key) but they must never be handed out twice, so a process forked
from one that has drawn ids starts with an empty pool (``os.register_at_fork``).
``serve --workers N`` starts its workers as fresh interpreters, which start
empty anyway; the hook is for anything that forks a serving process.
"""

from __future__ import annotations

import base64
import os
import zlib
from collections.abc import Callable

from service.adapters.redis_base import SHARDS
from service.domain.ids import card_free
from service.domain.tokens import OPAQUE_PREFIX, OPAQUE_RANDOM_BYTES

_ID_CHARS = OPAQUE_RANDOM_BYTES * 4 // 3  # 18 bytes are exactly 24 URL-safe base64 characters, no padding
_PREFIX_BYTES = OPAQUE_PREFIX.encode()
_PREFIX_CRC = zlib.crc32(_PREFIX_BYTES)  # crc32(id) == crc32(id without the prefix, _PREFIX_CRC)


class ShardedOpaqueIds:
    """Fresh opaque ids by shard: ``take(shard)`` is ``OPAQUE_PREFIX`` + 24 random URL-safe characters, card-free,
    whose ``shard_of`` is ``shard``."""

    def __init__(self, draw_size: int = 256, per_shard: int = 16, urandom: Callable[[int], bytes] = os.urandom) -> None:
        self.draw_size = draw_size
        self.per_shard = per_shard
        self._urandom = urandom
        self._waiting: list[list[bytes]] = [[] for _ in range(SHARDS)]

    def take(self, shard: int) -> str:
        return card_free(lambda: self._take_any(shard))

    def forget(self) -> None:
        """Drop every waiting id (a forked child must not hand out its parent's)."""
        for waiting in self._waiting:
            waiting.clear()

    def _take_any(self, shard: int) -> str:
        waiting = self._waiting[shard]
        while not waiting:
            self._draw()
        return OPAQUE_PREFIX + waiting.pop().decode()

    def _draw(self) -> None:
        text = base64.urlsafe_b64encode(self._urandom(OPAQUE_RANDOM_BYTES * self.draw_size))
        crc32, prefix_crc, shards, cap, waiting = zlib.crc32, _PREFIX_CRC, SHARDS, self.per_shard, self._waiting
        for start in range(0, len(text), _ID_CHARS):
            body = text[start : start + _ID_CHARS]
            bucket = waiting[crc32(body, prefix_crc) % shards]
            if len(bucket) < cap:
                bucket.append(body)


#: The process's pool (``VaultStore.new_opaque_token_id``).
OPAQUE_IDS = ShardedOpaqueIds()
os.register_at_fork(after_in_child=OPAQUE_IDS.forget)
