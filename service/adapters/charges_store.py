"""Redis records of charges: created once, updated by compare-and-swap, indexed by order reference.

    cv:{<agency>}:ch:<charge id>        string  charge JSON (no card number: brand, last four, processor ids)
    cv:{<agency>}:order:<reference>     set     charge ids with that order reference

Starting a charge is one script and one round trip: it creates the charge
record only if that id is new (so a retried request can never reach the
processor twice), reads the token's ciphertext and takes (reads and deletes)
its CVC, because a CVC dies at the first authorization that uses it.

A start that Redis applied but could not confirm durable (``NotDurable``: the
processor is not called) is undone before the 503, so a retry with the same
Idempotency-Key charges normally instead of finding a charge stuck ``unknown``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import redis.asyncio as redis

from service.adapters.durability import NotDurable
from service.adapters.redis_base import cvc_key, redis_errors, token_key
from service.adapters.velocity_store import GatedScript
from service.domain.velocity import GatePlan
from service.errors import StoreUnavailable

_START_CHARGE_LUA = """
-- KEYS: charge, token, cvc, order index (or '').  ARGV: charge JSON, charge id.
-- Returns {'exists', charge} | {'no_token'} | {'started', token blob, cvc blob or false}
local existing = redis.call('GET', KEYS[1])
if existing then return {'exists', existing} end
local card = redis.call('GET', KEYS[2])
if not card then return {'no_token'} end
local cvc = redis.call('GET', KEYS[3])
if cvc then redis.call('DEL', KEYS[3]) end
redis.call('SET', KEYS[1], ARGV[1])
if KEYS[4] ~= '' then redis.call('SADD', KEYS[4], ARGV[2]) end
return {'started', card, cvc}
"""

_REPLACE_LUA = """
-- KEYS: charge.  ARGV: expected JSON, new JSON.  1 when replaced.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

_FORGET_START_LUA = """
-- KEYS: charge, order index (or '').  ARGV: the record start wrote, charge id.  Only that record goes.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  if KEYS[2] ~= '' then redis.call('SREM', KEYS[2], ARGV[2]) end
  return 1
end
return 0
"""

ORDER_READ_LIMIT = 1000  # the API shows the oldest 100 of these


def charge_key(agency_id: str, charge_id: str) -> str:
    return f"cv:{{{agency_id}}}:ch:{charge_id}"


def order_key(agency_id: str, reference: str) -> str:
    return f"cv:{{{agency_id}}}:order:{reference}"


@dataclass(frozen=True)
class StartedCharge:
    outcome: str  # started | exists | no_token
    existing: bytes | None = None
    card_blob: bytes | None = None
    cvc_blob: bytes | None = None


class ChargeStore:
    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._start = GatedScript(client, _START_CHARGE_LUA)  # the velocity gate rides in the same round trip
        self._replace = client.register_script(_REPLACE_LUA)
        self._forget_start = client.register_script(_FORGET_START_LUA)

    async def start(
        self,
        agency_id: str,
        charge_id: str,
        token_id: str,
        record: bytes,
        order_reference: str | None,
        gate: GatePlan | None = None,
    ) -> StartedCharge:
        """With a ``gate`` the velocity limits are checked first (LimitExceeded: nothing written, CVC kept)."""
        try:
            with redis_errors():
                reply = await self._start(
                    gate,
                    keys=[
                        charge_key(agency_id, charge_id),
                        token_key(agency_id, token_id),
                        cvc_key(agency_id, token_id),
                        order_key(agency_id, order_reference) if order_reference else "",
                    ],
                    args=[record, charge_id],
                )
        except NotDurable:
            await self._undo_start(agency_id, charge_id, record, order_reference)
            raise
        outcome = reply[0].decode() if isinstance(reply[0], bytes) else str(reply[0])
        if outcome == "exists":
            return StartedCharge("exists", existing=reply[1])
        if outcome == "no_token":
            return StartedCharge("no_token")
        return StartedCharge("started", card_blob=reply[1], cvc_blob=reply[2] or None)

    async def token_blob(self, agency_id: str, token_id: str) -> bytes | None:
        """The token's card ciphertext, or None: what a charge's per-card velocity limit reads first."""
        with redis_errors():
            return cast(bytes | None, await self.redis.get(token_key(agency_id, token_id)))

    async def _undo_start(self, agency_id: str, charge_id: str, record: bytes, order_reference: str | None) -> None:
        """Best effort: refused or unconfirmed for the same reason as the start, it is still applied on the master."""
        order = order_key(agency_id, order_reference) if order_reference else ""
        try:
            with redis_errors():
                await self._forget_start(keys=[charge_key(agency_id, charge_id), order], args=[record, charge_id])
        except StoreUnavailable:
            pass

    async def get(self, agency_id: str, charge_id: str) -> bytes | None:
        with redis_errors():
            return cast(bytes | None, await self.redis.get(charge_key(agency_id, charge_id)))

    async def replace(self, agency_id: str, charge_id: str, expected: bytes, new: bytes) -> bool:
        with redis_errors():
            return bool(await self._replace(keys=[charge_key(agency_id, charge_id)], args=[expected, new]))

    async def by_order_reference(self, agency_id: str, reference: str) -> list[bytes]:
        """Up to ORDER_READ_LIMIT charges with that reference (two round trips: the index, then the records)."""
        with redis_errors():
            ids = list(cast(set[bytes], await self.redis.smembers(order_key(agency_id, reference))))[:ORDER_READ_LIMIT]
            if not ids:
                return []
            values = await self.redis.mget([charge_key(agency_id, i.decode()) for i in ids])
        return [v for v in cast(list[bytes | None], values) if v is not None]

    async def lock(self, agency_id: str, charge_id: str, ttl: int) -> bool:
        """One capture/void/refund at a time per charge."""
        with redis_errors():
            return bool(await self.redis.set(f"cv:{{{agency_id}}}:chlock:{charge_id}", "1", nx=True, ex=ttl))

    async def unlock(self, agency_id: str, charge_id: str) -> None:
        with redis_errors():
            await self.redis.delete(f"cv:{{{agency_id}}}:chlock:{charge_id}")
