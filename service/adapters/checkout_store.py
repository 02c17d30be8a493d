"""Redis records of checkout sessions: created once, then changed only by compare-and-swap.

    cv:{<agency>.<s>}:cs:<session id>   string  session JSON (amount, order reference, status, the client
                                                secret's SHA-256, a summary of its charge: never card data)

A session's key expires ``RETENTION_SECONDS`` after the session itself does,
so a storefront can still read the outcome of a finished purchase for a month.
Every change is a compare-and-swap on the whole record: of two browsers
paying the same session at once, exactly one moves it from ``open`` to
``processing``, and the other is refused without reaching the processor.
"""

from __future__ import annotations

from typing import cast

import redis.asyncio as redis

from service.adapters.redis_base import data_prefix, redis_errors, shard_of

_COMPARE_AND_SWAP = """
-- KEYS: session.  ARGV: expected JSON, new JSON.  1 when replaced (the TTL is kept).
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
  return 1
end
return 0
"""


def session_key(agency_id: str, session_id: str) -> str:
    return f"{data_prefix(agency_id, shard_of(session_id))}cs:{session_id}"


class CheckoutStore:
    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._compare_and_swap = client.register_script(_COMPARE_AND_SWAP)

    async def create(self, agency_id: str, session_id: str, record: bytes, keep_until: int) -> bool:
        """Write a new session that lives until ``keep_until`` (Unix seconds); False if the id is taken."""
        with redis_errors():
            return bool(await self.redis.set(session_key(agency_id, session_id), record, nx=True, exat=keep_until))

    async def get(self, agency_id: str, session_id: str) -> bytes | None:
        with redis_errors():
            return cast(bytes | None, await self.redis.get(session_key(agency_id, session_id)))

    async def replace(self, agency_id: str, session_id: str, expected: bytes, new: bytes) -> bool:
        with redis_errors():
            swapped = await self._compare_and_swap(keys=[session_key(agency_id, session_id)], args=[expected, new])
        return bool(swapped)
