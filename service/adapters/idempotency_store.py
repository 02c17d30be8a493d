"""Redis records of Idempotency-Keys: claimed, completed, released.

Keys are ``cv:{<agency>.<s>}:idem:<sha256 of the Idempotency-Key>`` (in the data
shard of that hash, see ``redis_base``): scoped to the
agency, and the client's key itself is never stored.
"""

from __future__ import annotations

from typing import cast

import redis.asyncio as redis

from service.adapters.durability import unconfirmed
from service.adapters.redis_base import data_prefix, redis_errors, shard_of

_CLAIM_LUA = """
-- KEYS: record.  ARGV: in-flight record, ttl seconds.  Returns {1} when claimed, else {0, existing}.
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then return {1} end
return {0, redis.call('GET', KEYS[1])}
"""


def record_key(agency_id: str, key_hash: str) -> str:
    return f"{data_prefix(agency_id, shard_of(key_hash))}idem:{key_hash}"


class IdempotencyStore:
    def __init__(self, client: redis.Redis) -> None:
        self.redis = unconfirmed(client)  # the durable writes of the request confirm these (durability.unconfirmed)
        self._claim = self.redis.register_script(_CLAIM_LUA)

    async def claim(self, agency_id: str, key_hash: str, in_flight: str, ttl: int) -> tuple[bool, str | None]:
        """Claim the key (one round trip); otherwise return what is stored under it."""
        with redis_errors():
            reply = await self._claim(keys=[record_key(agency_id, key_hash)], args=[in_flight, ttl])
        if int(reply[0]) == 1:
            return True, None
        existing = cast(bytes | None, reply[1] if len(reply) > 1 else None)
        return False, existing.decode() if existing else None

    async def complete(self, agency_id: str, key_hash: str, record: str, ttl: int) -> None:
        with redis_errors():
            await self.redis.set(record_key(agency_id, key_hash), record, ex=ttl)

    async def release(self, agency_id: str, key_hash: str) -> None:
        """Forget a claim whose request changed nothing; best effort (it expires anyway)."""
        try:
            with redis_errors():
                await self.redis.delete(record_key(agency_id, key_hash))
        except Exception:  # noqa: S110 - the claim expires by itself; the original error matters more
            pass
